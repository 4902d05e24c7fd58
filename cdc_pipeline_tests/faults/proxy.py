"""A slow link between capture and the source, for aiming a dropped connection inside a
transaction.

On loopback the server hands a whole transaction to the kernel in milliseconds and the client's
receive buffer (up to 32 MiB here) holds it, and a closing socket still delivers what the
server had written: a server killed or a dump thread KILLed while capture decodes a 2,000-row
transaction leaves capture reading complete transactions from its buffer, so the drop never
lands inside one. ``SlowLink`` forwards 127.0.0.1 TCP connections to the source, server-to-client
bytes at a fixed rate, so a transaction is in flight for a while, and ``cut()`` resets every
connection at once, losing what was not yet forwarded, as when a link or a host dies. A cut
made while ``bytes_from_server`` grows lands inside the transaction being sent.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time


class SlowLink:
    def __init__(self, upstream_port: int, bytes_per_second: int = 200_000):
        self.upstream_port, self.rate = upstream_port, bytes_per_second
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.bytes_from_server = 0  # all connections, ever: a test watches it grow
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, server_url: str) -> str:
        return server_url.replace(f":{self.upstream_port}", f":{self.port}")

    def close(self) -> None:
        self._closed = True
        self.listener.close()
        with self._lock:
            for sock in list(self._open):
                with contextlib.suppress(OSError):
                    sock.close()

    def full_speed(self) -> None:
        """Stop slowing the link (the faults are over: let the pipeline catch up quickly)."""
        self.rate = 10**12

    def cut(self) -> int:
        """Reset every open connection now (RST both ways); returns how many were open."""
        with self._lock:
            sockets, self._open = list(self._open), set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()
        return len(sockets) // 2

    def wait_for_flow(self, more_than: int, timeout: float) -> bool:
        """True once ``more_than`` bytes more than now came from the server."""
        start, deadline = self.bytes_from_server, time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.bytes_from_server - start > more_than:
                return True
            time.sleep(0.005)
        return False

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            except OSError:
                client.close()  # the source is down: the client sees a refused connection
                continue
            server.settimeout(None)
            with self._lock:
                self._open |= {client, server}
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, from_server: bool) -> None:
        chunk = 4096
        try:
            while True:
                data = source.recv(chunk)
                if not data:
                    break
                target.sendall(data)
                if from_server:
                    self.bytes_from_server += len(data)
                    time.sleep(len(data) / self.rate)
        except OSError:
            pass
        finally:
            for sock in (source, target):  # unforwarded bytes are lost, as on a dead link
                with self._lock:
                    self._open.discard(sock)
                with contextlib.suppress(OSError):
                    sock.close()
