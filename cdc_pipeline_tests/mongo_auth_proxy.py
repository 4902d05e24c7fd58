"""A password-checking front for a MongoDB server that has no users (the nx-27017 stand-in).

nx-27017 knows no authentication: a URI with a user and password makes pymongo start a SCRAM
conversation (``saslStart``), which the stand-in answers without a ``payload``, so every
connection fails in pymongo (``KeyError: 'payload'``). ``ScramProxy`` listens on a free
127.0.0.1 port, forwards every message to the real server, and answers the SCRAM conversation
itself as mongod does (SCRAM-SHA-256 and SCRAM-SHA-1, 4096 iterations): the client proves it
knows the password and the proxy proves it knows it too, so a client with a wrong password is
refused ("Authentication failed.", code 18) exactly as by MongoDB. The hello fields that ask
for authentication (``speculativeAuthenticate``, ``saslSupportedMechs``) are removed from what
the server sees, so the server never learns there was a user at all.

Only the pymongo wire format is handled: OP_MSG and the OP_QUERY handshake, uncompressed
(no ``compressors`` in the URI). Threads, one pair per connection; ``close()`` ends them.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import socket
import struct
import threading
from typing import Any

import bson

OP_QUERY = 2004
OP_MSG = 2013
ITERATIONS = 4096
_HELLO = ("hello", "isMaster", "ismaster")
_AUTH_FIELDS = ("speculativeAuthenticate", "saslSupportedMechs")


class ScramProxy:
    """Forward 127.0.0.1:``port`` to ``upstream_port``; authenticate ``user``/``password``."""

    def __init__(self, upstream_port: int, user: str, password: str) -> None:
        self.upstream_port = upstream_port
        self.user, self.password = user, password
        self.salt = os.urandom(16)
        self.logins = 0  # conversations that ended with the right proof
        self.refused = 0  # conversations that ended with a wrong proof or an unknown user
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._closed = False
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def uri(self, user: str, quoted_password: str) -> str:
        return (
            f"mongodb://{user}:{quoted_password}@127.0.0.1:{self.port}/"
            "?directConnection=true&authSource=admin"
        )

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self.listener.close()
        with self._lock:
            sockets, self._open = list(self._open), set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()

    # -- plumbing ----------------------------------------------------------------------------
    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._open.update((client, server))
            send_lock = threading.Lock()
            threading.Thread(
                target=self._from_client, args=(client, server, send_lock), daemon=True
            ).start()
            threading.Thread(
                target=self._from_server, args=(server, client, send_lock), daemon=True
            ).start()

    def _from_server(
        self, server: socket.socket, client: socket.socket, lock: threading.Lock
    ) -> None:
        try:
            while data := server.recv(65536):
                with lock:
                    client.sendall(data)
        except OSError:
            pass
        finally:
            self._drop(client, server)

    def _from_client(
        self, client: socket.socket, server: socket.socket, lock: threading.Lock
    ) -> None:
        conversations: dict[int, _Conversation] = {}
        try:
            while True:
                header = _read_exactly(client, 16)
                if header is None:
                    return
                length, request_id, _, op_code = struct.unpack("<iiii", header)
                body = _read_exactly(client, length - 16)
                if body is None:
                    return
                if op_code == OP_MSG:
                    command = _op_msg_command(body)
                    if command is not None and next(iter(command), "") in (
                        "saslStart",
                        "saslContinue",
                    ):
                        reply = self._sasl(command, conversations)
                        with lock:
                            client.sendall(_op_msg_reply(request_id, reply))
                        continue
                    if command is not None and _asks_for_auth(command):
                        body = _op_msg_body(_without_auth(command))
                elif op_code == OP_QUERY:
                    body = _strip_query_auth(body)
                server.sendall(struct.pack("<iiii", 16 + len(body), request_id, 0, op_code) + body)
        except OSError:
            pass
        finally:
            self._drop(client, server)

    def _drop(self, *sockets: socket.socket) -> None:
        for sock in sockets:
            with self._lock:
                self._open.discard(sock)
            with contextlib.suppress(OSError):
                sock.close()

    # -- SCRAM, the server's side --------------------------------------------------------------
    def _sasl(
        self, command: dict[str, Any], conversations: dict[int, _Conversation]
    ) -> dict[str, Any]:
        payload = bytes(command.get("payload", b""))
        if "saslStart" in command:
            mechanism = str(command.get("mechanism", ""))
            if mechanism not in ("SCRAM-SHA-256", "SCRAM-SHA-1"):
                return _refusal(
                    f"Received authentication for mechanism {mechanism} which is not enabled"
                )
            conversation = _Conversation(mechanism)
            conversation_id = len(conversations) + 1
            conversations[conversation_id] = conversation
            return conversation.start(self, payload, conversation_id)
        conversation_id = int(command.get("conversationId", 0))
        found = conversations.get(conversation_id)
        if found is None:
            return _refusal("No SASL session state found")
        return found.finish(self, payload, conversation_id)


class _Conversation:
    def __init__(self, mechanism: str) -> None:
        self.mechanism = mechanism
        self.first_bare = b""
        self.server_first = b""
        self.user = ""
        self.done = False

    @property
    def _digest(self) -> Any:
        return hashlib.sha256 if self.mechanism == "SCRAM-SHA-256" else hashlib.sha1

    def start(self, proxy: ScramProxy, payload: bytes, conversation_id: int) -> dict[str, Any]:
        if not payload.startswith(b"n,,"):
            return _refusal("Invalid SCRAM client-first message")
        self.first_bare = payload[3:]
        fields = _scram_fields(self.first_bare)
        self.user = fields.get(b"n", b"").decode()
        nonce = fields.get(b"r", b"") + base64.b64encode(os.urandom(24))
        self.server_first = b"r=%s,s=%s,i=%d" % (nonce, base64.b64encode(proxy.salt), ITERATIONS)
        return {
            "conversationId": conversation_id,
            "done": False,
            "payload": bson.Binary(self.server_first),
            "ok": 1.0,
        }

    def finish(self, proxy: ScramProxy, payload: bytes, conversation_id: int) -> dict[str, Any]:
        if self.done:  # the empty third message of a client without skipEmptyExchange
            return {
                "conversationId": conversation_id,
                "done": True,
                "payload": bson.Binary(b""),
                "ok": 1.0,
            }
        without_proof, _, proof_field = payload.rpartition(b",")
        proof = base64.b64decode(proof_field.partition(b"=")[2] or b"")
        if self.mechanism == "SCRAM-SHA-256":
            secret = proxy.password.encode()
        else:  # MongoDB's SCRAM-SHA-1 salts the MONGODB-CR digest, not the password
            secret = (
                hashlib.md5(f"{proxy.user}:mongo:{proxy.password}".encode()).hexdigest().encode()
            )
        salted = hashlib.pbkdf2_hmac(self._digest().name, secret, proxy.salt, ITERATIONS)
        client_key = hmac.new(salted, b"Client Key", self._digest).digest()
        server_key = hmac.new(salted, b"Server Key", self._digest).digest()
        auth_message = b",".join((self.first_bare, self.server_first, without_proof))
        signature = hmac.new(self._digest(client_key).digest(), auth_message, self._digest).digest()
        expected = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        if self.user != proxy.user or not hmac.compare_digest(proof, expected):
            with proxy._lock:
                proxy.refused += 1
            return _refusal("Authentication failed.")
        with proxy._lock:
            proxy.logins += 1
        self.done = True
        verifier = base64.b64encode(hmac.new(server_key, auth_message, self._digest).digest())
        return {
            "conversationId": conversation_id,
            "done": True,
            "payload": bson.Binary(b"v=" + verifier),
            "ok": 1.0,
        }


# -- the wire format ------------------------------------------------------------------------------


def _read_exactly(sock: socket.socket, count: int) -> bytes | None:
    chunks, missing = [], count
    while missing:
        chunk = sock.recv(missing)
        if not chunk:
            return None
        chunks.append(chunk)
        missing -= len(chunk)
    return b"".join(chunks)


def _op_msg_command(body: bytes) -> dict[str, Any] | None:
    """The kind-0 document of an OP_MSG without document sequences (what commands use)."""
    flags = struct.unpack_from("<I", body)[0]
    end = len(body) - (4 if flags & 1 else 0)
    if body[4] != 0:
        return None
    size = struct.unpack_from("<i", body, 5)[0]
    if 5 + size != end:  # kind-1 sections follow: not a command we act on
        return None
    return bson.decode(body[5 : 5 + size])


def _op_msg_body(command: dict[str, Any]) -> bytes:
    return struct.pack("<I", 0) + b"\x00" + bson.encode(command)


def _op_msg_reply(response_to: int, document: dict[str, Any]) -> bytes:
    body = _op_msg_body(document)
    return struct.pack("<iiii", 16 + len(body), 0, response_to, OP_MSG) + body


def _asks_for_auth(command: dict[str, Any]) -> bool:
    return next(iter(command), "") in _HELLO and any(field in command for field in _AUTH_FIELDS)


def _without_auth(command: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in command.items() if key not in _AUTH_FIELDS}


def _strip_query_auth(body: bytes) -> bytes:
    """An OP_QUERY (the handshake) with the authentication fields of its hello removed."""
    name_end = body.index(b"\x00", 4) + 1
    start = name_end + 8
    size = struct.unpack_from("<i", body, start)[0]
    query = bson.decode(body[start : start + size])
    inner = query.get("$query", query)
    if not isinstance(inner, dict) or not _asks_for_auth(inner):
        return body
    stripped = (
        {**query, "$query": _without_auth(inner)} if "$query" in query else _without_auth(query)
    )
    return body[:start] + bson.encode(stripped) + body[start + size :]


def _scram_fields(message: bytes) -> dict[bytes, bytes]:
    return {
        part[:1]: part[2:] for part in message.split(b",") if len(part) > 1 and part[1:2] == b"="
    }


def _refusal(message: str) -> dict[str, Any]:
    return {"ok": 0.0, "errmsg": message, "code": 18, "codeName": "AuthenticationFailed"}
