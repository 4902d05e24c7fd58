"""Throwaway local servers for the tests and the demo: MariaDB, MySQL 9.7 and two MongoDB stand-ins.

No Docker engine runs on our machines, so the real servers run as plain child processes
(recipes in ../shared/FIELD-NOTES.md): MariaDB from Debian's package, MySQL 9.7 LTS inside a
cached debootstrap chroot (``scripts/ensure_mysql_chroot.sh``), ``nx-27017``, a fast MongoDB
wire-protocol server backed by SQLite, and ``mongoeco``, a slower wire server much closer to
MongoDB (memory engine, from its own Python >= 3.13 venv, ``scripts/ensure_mongoeco.sh``).

Invariants:
    * every server is a child process started here, bound to 127.0.0.1 on a free port, with its
      data in a folder created here whose path contains ``TEMP_PREFIX`` (CI greps for leftovers);
    * ``kill9``, ``stop`` and ``cleanup`` only ever signal the PID this object started;
    * ``restart`` brings the same server back on the same port and the same data, so tests can
      kill -9 a server mid-stream and watch the pipeline recover (``keeps_data_on_restart``:
      not ``mongoeco``, whose memory engine dies with its process);
    * by default a server dies with the process that started it (``PR_SET_PDEATHSIG``), so a
      crashed test run cannot leave servers behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import ClassVar

import pymysql

TEMP_PREFIX = "cdc_pipeline_test_servers-"
DEFAULT_MYSQL_CHROOT = Path.home() / ".cache" / "cdc_pipeline" / "mysql-9.7-root"

# Statements each source server runs at start-up (--init-file), outside the binlog, so that
# root can connect over TCP from 127.0.0.1 with no password whatever name resolution says.
_ROOT_OVER_TCP_SQL = (
    "SET sql_log_bin = 0;\n"
    "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1';\n"
    "GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;\n"
)


class ServerStartError(RuntimeError):
    """A local server did not come up; the message carries the tail of its log."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """preexec_fn: ask the kernel to SIGKILL the child when its parent thread dies."""
    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def stop_process_group(process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """SIGTERM the session a process leads (started with ``start_new_session``: it and its
    children), SIGKILL it after ``timeout`` seconds, and reap the leader."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class LocalServer:
    """One server process on 127.0.0.1:port with its own data folder."""

    name: ClassVar[str] = "server"
    start_timeout: ClassVar[float] = 60.0
    keeps_data_on_restart: ClassVar[bool] = True

    def __init__(self, data_dir: Path, port: int | None = None, die_with_parent: bool = True):
        self.data_dir = data_dir
        self.port = port or free_port()
        self.die_with_parent = die_with_parent
        self.log_path = data_dir / f"{self.name}.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._prepared = False

    # -- what subclasses provide -------------------------------------------------------------
    def _prepare(self) -> None:
        """Create the data folder's initial content (runs once, before the first start)."""

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _is_ready(self) -> bool:
        raise NotImplementedError

    # -- life cycle --------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the server (preparing its data on first use) and wait until it answers."""
        if self.is_running():
            return
        if not self._prepared:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self._prepare()
            self._prepared = True
        with self.log_path.open("ab") as log:
            self._process = self._spawn(self._command(), log)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if not self.is_running():
                raise ServerStartError(
                    f"{self.name} exited while starting on port {self.port}; its log ends with:\n"
                    f"{self._log_tail()}"
                )
            if self._is_ready():
                return
            time.sleep(0.1)
        self.kill9()
        raise ServerStartError(
            f"{self.name} did not answer on 127.0.0.1:{self.port} within"
            f" {self.start_timeout:.0f} s; its log ends with:\n{self._log_tail()}"
        )

    def _spawn(self, command: list[str], log: object) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            command,
            stdout=log,  # type: ignore[arg-type]
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent if self.die_with_parent else None,
        )

    def kill9(self) -> None:
        """SIGKILL the server this object started and reap it; its data stays for restart()."""
        if self._process is None:
            return
        if self._process.poll() is None:
            os.kill(self._process.pid, signal.SIGKILL)
        self._process.wait()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop gracefully (SIGTERM), escalating to SIGKILL after ``timeout`` seconds."""
        if self._process is None or self._process.poll() is not None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill9()

    def restart(self) -> None:
        """Start again on the same port and data (after kill9() or stop())."""
        self.stop()
        self.start()

    def cleanup(self) -> None:
        """Stop the server and delete its data folder."""
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def _log_tail(self) -> str:
        return _tail(self.log_path)


class SourceServer(LocalServer):
    """A MySQL-protocol source server reachable as root over TCP with no password."""

    flavor: ClassVar[str] = "mysql"
    extra_args: list[str]
    """Options added to the server's command line (``devtools.tls``: certificates)."""

    def __init__(self, data_dir: Path, port: int | None = None, die_with_parent: bool = True):
        super().__init__(data_dir, port, die_with_parent)
        self.extra_args = []

    @property
    def url(self) -> str:
        return f"mysql://root@127.0.0.1:{self.port}"

    def connect(self, **kwargs: object) -> pymysql.connections.Connection:  # type: ignore[type-arg]
        """A new autocommit connection as root (kwargs go to pymysql.connect)."""
        options: dict[str, object] = {
            "host": "127.0.0.1",
            "port": self.port,
            "user": "root",
            "password": "",
            "autocommit": True,
            "connect_timeout": 5,
        }
        options.update(kwargs)
        return pymysql.connect(**options)  # type: ignore[arg-type]

    def execute(self, *statements: str) -> list[tuple[object, ...]]:
        """Run statements on a fresh connection; return the rows of the last one."""
        with contextlib.closing(self.connect()) as connection, connection.cursor() as cursor:
            rows: list[tuple[object, ...]] = []
            for statement in statements:
                cursor.execute(statement)
                rows = list(cursor.fetchall())
            return rows

    def purge_binlogs(self, timeout: float = 30.0) -> str:
        """Rotate the binlog and purge every older file; return the one file that remains.

        MariaDB refuses (with only a warning) to purge a file its binlog checkpoint still needs
        for crash recovery, until InnoDB has flushed; so this retries until the purge happened.
        """
        self.execute("FLUSH BINARY LOGS")
        newest = str(self.execute("SHOW BINARY LOGS")[-1][0])
        deadline = time.monotonic() + timeout
        while True:
            self.execute(f"PURGE BINARY LOGS TO '{newest}'")
            if str(self.execute("SHOW BINARY LOGS")[0][0]) == newest:
                return newest
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} kept binlogs older than {newest} for {timeout} s")
            time.sleep(0.2)

    def _is_ready(self) -> bool:
        try:
            self.execute("SELECT 1")
        except pymysql.err.MySQLError:
            return False
        return True


class MariaDBServer(SourceServer):
    """Debian's MariaDB with ROW binlog, FULL row image and metadata, strict GTIDs."""

    name = "mariadb"
    flavor = "mariadb"

    def _prepare(self) -> None:
        (self.data_dir / "init.sql").write_text(_ROOT_OVER_TCP_SQL)
        with self.log_path.open("ab") as log:
            subprocess.run(
                [
                    "mariadb-install-db",
                    "--no-defaults",
                    f"--datadir={self.data_dir / 'data'}",
                    "--auth-root-authentication-method=normal",
                    "--skip-test-db",
                    "--user=root",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                check=True,
            )

    def _command(self) -> list[str]:
        data = self.data_dir / "data"
        return [
            shutil.which("mariadbd") or "/usr/sbin/mariadbd",
            "--no-defaults",
            f"--datadir={data}",
            f"--socket={self.data_dir / 's.sock'}",
            f"--pid-file={self.data_dir / 'mariadbd.pid'}",
            # Its own temporary folder: information_schema's temporary files of servers sharing
            # /tmp collided (error 6, once a crash) when several sessions ran at once.
            f"--tmpdir={self.data_dir}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            "--user=root",
            "--skip-name-resolve",
            f"--init-file={self.data_dir / 'init.sql'}",
            f"--log-bin={data / 'bin'}",
            "--binlog-format=ROW",
            "--binlog-row-image=FULL",
            "--binlog-row-metadata=FULL",
            "--server-id=1",
            "--gtid-strict-mode=ON",
            "--log-slave-updates=ON",
            "--innodb-buffer-pool-size=128M",
            # A process kill -9 keeps the OS page cache, so these lose nothing in our tests.
            "--innodb-flush-log-at-trx-commit=2",
            "--sync-binlog=0",
            *self.extra_args,
        ]


class MySQLServer(SourceServer):
    """MySQL 9.7 LTS run inside the cached debootstrap chroot, GTID mode on."""

    name = "mysql"
    flavor = "mysql"
    start_timeout = 120.0
    _TEMPLATE = "/var/lib/cdc_pipeline_mysql_template"

    def __init__(
        self,
        chroot: Path | None = None,
        port: int | None = None,
        die_with_parent: bool = True,
    ):
        self.chroot = chroot or Path(os.environ.get("CDC_MYSQL_CHROOT", DEFAULT_MYSQL_CHROOT))
        if not (self.chroot / "usr/sbin/mysqld").exists():
            raise ServerStartError(
                f"no MySQL 9.7 chroot at {self.chroot}; build it with 'make mysql-chroot'"
                " (or set CDC_TEST_SOURCES=mariadb to test against MariaDB only)."
            )
        self.inner = f"/var/lib/{TEMP_PREFIX}{uuid.uuid4().hex[:10]}"
        super().__init__(self.chroot / self.inner.lstrip("/"), port, die_with_parent)

    def _chroot_mysqld(self, *args: str) -> list[str]:
        return [
            "chroot",
            str(self.chroot),
            "/usr/sbin/mysqld",
            "--no-defaults",
            "--user=root",
            *args,
        ]

    def _prepare(self) -> None:
        # Initialising a data folder takes seconds; do it once per chroot and copy it after.
        template = self.chroot / self._TEMPLATE.lstrip("/")
        if not (template / "ready").exists():
            partial = template.with_name(template.name + f".partial{os.getpid()}")
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
            inner_partial = "/" + str(partial.relative_to(self.chroot))
            with self.log_path.open("ab") as log:
                subprocess.run(
                    self._chroot_mysqld("--initialize-insecure", f"--datadir={inner_partial}/data"),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    check=True,
                )
            (partial / "ready").touch()
            shutil.rmtree(template, ignore_errors=True)
            partial.rename(template)
        shutil.copytree(template / "data", self.data_dir / "data", symlinks=True)
        # A fresh server_uuid per instance: MySQL writes a new auto.cnf when it is missing.
        (self.data_dir / "data" / "auto.cnf").unlink(missing_ok=True)
        (self.data_dir / "init.sql").write_text(_ROOT_OVER_TCP_SQL)

    def _command(self) -> list[str]:
        inner = self.inner
        return self._chroot_mysqld(
            f"--datadir={inner}/data",
            f"--socket={inner}/s.sock",
            f"--pid-file={inner}/mysqld.pid",
            f"--log-error={inner}/error.log",
            f"--init-file={inner}/init.sql",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            "--skip-name-resolve",
            "--mysqlx=OFF",
            "--secure-file-priv=",
            "--server-id=1",
            "--log-bin=binlog",
            "--gtid-mode=ON",
            "--enforce-gtid-consistency=ON",
            "--binlog-format=ROW",
            "--binlog-row-image=FULL",
            "--binlog-row-metadata=FULL",
            "--performance-schema=OFF",
            "--innodb-buffer-pool-size=128M",
            # A process kill -9 keeps the OS page cache, so these lose nothing in our tests.
            "--innodb-flush-log-at-trx-commit=2",
            "--sync-binlog=0",
            *self.extra_args,
        )

    def _log_tail(self) -> str:
        return _tail(self.data_dir / "error.log") + "\n" + _tail(self.log_path)


class NxMongoServer(LocalServer):
    """``nx-27017``: the MongoDB wire protocol over SQLite, durable under kill -9."""

    name = "nx-27017"

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    def _command(self) -> list[str]:
        return [
            sys.executable,
            "-c",
            "import sys; from nx_27017.nx_27017 import main; sys.exit(main())",
            "--host",
            "127.0.0.1",
            "-p",
            str(self.port),
            "--data-dir",
            str(self.data_dir / "dbs"),
            "--log-file",
            str(self.data_dir / "nx.log"),
            "--pid-file",
            str(self.data_dir / "nx.pid"),
        ]

    def _prepare(self) -> None:
        (self.data_dir / "dbs").mkdir(exist_ok=True)

    def _is_ready(self) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def _log_tail(self) -> str:
        return _tail(self.data_dir / "nx.log") + "\n" + _tail(self.log_path)


REPO = Path(__file__).resolve().parents[1]
ENSURE_MONGOECO = REPO / "scripts" / "ensure_mongoeco.sh"

# mongoeco 4.11.0 has no console script for its wire server: this is the documented start
# command (scripts/ensure_mongoeco.sh), with host and port as arguments.
_MONGOECO_SERVER_CODE = """\
import asyncio, sys
from mongoeco.engines.memory import MemoryEngine
from mongoeco.wire.proxy import AsyncMongoEcoProxyServer
async def main(host, port):
    proxy = AsyncMongoEcoProxyServer(engine=MemoryEngine(), host=host, port=int(port))
    await proxy.start()
    print(proxy.address.uri, flush=True)
    await asyncio.Event().wait()
asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


class MongoecoUnavailable(RuntimeError):
    """No mongoeco venv here (no Python >= 3.13, or its build failed); the message says why."""


def mongoeco_python() -> Path:
    """The Python of the mongoeco venv, built first if needed by ``scripts/ensure_mongoeco.sh``
    (CDC_MONGOECO_VENV, CDC_MONGOECO_PYTHON); ``MongoecoUnavailable`` when there is none."""
    try:
        result = subprocess.run(
            [str(ENSURE_MONGOECO)], capture_output=True, text=True, timeout=600, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise MongoecoUnavailable(f"{ENSURE_MONGOECO.name} could not run ({error})") from None
    venv = Path(
        os.environ.get("CDC_MONGOECO_VENV")
        or Path.home() / ".cache" / "cdc_pipeline" / "mongoeco-venv"
    )
    notice = result.stderr.strip().splitlines()[-1:] or ["no output"]
    if result.returncode != 0:
        raise MongoecoUnavailable(f"{ENSURE_MONGOECO.name} failed: {notice[0]}")
    python = venv / "bin" / "python"
    if not (python.exists() and (venv / ".cdc_ready").exists()):
        raise MongoecoUnavailable(f"no venv at {venv} ({notice[0]})")
    return python


class MongoecoServer(LocalServer):
    """The ``mongoeco`` wire server, memory engine, run by the Python of its own venv.

    Its data lives in the process only: after ``kill9``/``restart`` it answers again, empty
    (``keeps_data_on_restart`` is False), so no test kills it to watch a recovery.
    """

    name = "mongoeco"
    keeps_data_on_restart = False

    def __init__(self, python: Path, data_dir: Path, port: int | None = None):
        self.python = python
        super().__init__(data_dir, port)

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    def _command(self) -> list[str]:
        return [str(self.python), "-c", _MONGOECO_SERVER_CODE, "127.0.0.1", str(self.port)]

    def _is_ready(self) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            return sock.connect_ex(("127.0.0.1", self.port)) == 0


def new_data_dir(kind: str) -> Path:
    """A fresh folder for one server's data, named so leftovers are easy to find."""
    return Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{kind}-"))
