"""A throwaway PostgreSQL server for Dagster's storage in tests: Debian's ``postgresql`` package,
our own cluster (``initdb``) in a temporary folder, our own ``postgres`` process on a free
127.0.0.1 port, stopped by its PID like the other local servers.

PostgreSQL refuses to run as root: when the tests run as root, the server runs as the
``postgres`` system user the Debian package creates (its data folder is handed to that user).
"""

from __future__ import annotations

import ctypes
import os
import pwd
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from devtools.local_servers import LocalServer

PASSWORD = "cdc-test-pg"
"""The cluster's superuser password (a throwaway server on 127.0.0.1 only)."""


def postgres_bin_dir() -> Path:
    """The newest ``/usr/lib/postgresql/<version>/bin`` holding ``initdb`` and ``postgres``."""
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda path: int(path.parent.parent.name) if path.parent.parent.name.isdigit() else 0,
    )
    if not versions:
        raise FileNotFoundError(
            "PostgreSQL is not installed; run 'make system-deps' (Debian's postgresql package)."
        )
    return versions[-1].parent


def _run_as(user: pwd.struct_passwd | None, die_with_parent: bool) -> Callable[[], None]:
    """preexec_fn: become ``user`` (when given), then ask to die with the parent (the kernel
    clears that request on a change of user, so it comes second)."""

    def preexec() -> None:
        if user is not None:
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
        if die_with_parent:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)

    return preexec


class PostgresServer(LocalServer):
    """PostgreSQL with password authentication on 127.0.0.1:port; ``url(db)`` connects to it."""

    name: ClassVar[str] = "postgres"
    user = "postgres"

    def __init__(self, data_dir: Path, port: int | None = None, die_with_parent: bool = True):
        super().__init__(data_dir, port, die_with_parent)
        self._as = pwd.getpwnam("postgres") if os.geteuid() == 0 else None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def _prepare(self) -> None:
        (self.data_dir / "pwfile").write_text(PASSWORD + "\n")
        (self.data_dir / "socket").mkdir(exist_ok=True)
        if self._as is not None:
            for path in [self.data_dir, *self.data_dir.rglob("*")]:
                os.chown(path, self._as.pw_uid, self._as.pw_gid)
        with self.log_path.open("ab") as log:
            subprocess.run(
                [
                    str(postgres_bin_dir() / "initdb"),
                    f"--pgdata={self.data_dir / 'data'}",
                    f"--username={self.user}",
                    f"--pwfile={self.data_dir / 'pwfile'}",
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                check=True,
                preexec_fn=_run_as(self._as, die_with_parent=False),
            )

    def start(self) -> None:
        if self._as is not None and self.log_path.exists():
            os.chown(self.log_path, self._as.pw_uid, self._as.pw_gid)
        super().start()

    def _spawn(self, command: list[str], log: object) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            command,
            stdout=log,  # type: ignore[arg-type]
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_run_as(self._as, self.die_with_parent),
        )

    def _command(self) -> list[str]:
        return [
            str(postgres_bin_dir() / "postgres"),
            "-D",
            str(self.data_dir / "data"),
            "-p",
            str(self.port),
            "-k",
            str(self.data_dir / "socket"),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "max_connections=300",
            # A process kill -9 keeps the OS page cache; the tests never kill this server.
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
        ]

    def _is_ready(self) -> bool:
        ready = subprocess.run(
            [
                str(postgres_bin_dir() / "pg_isready"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-q",
            ],
            check=False,
        )
        return ready.returncode == 0

    def dagster_env(self, database: str) -> dict[str, str]:
        """The ``DAGSTER_PG_*`` variables ``dagster.postgres.yaml`` reads, for ``database``."""
        return {
            "DAGSTER_PG_HOST": "127.0.0.1",
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_DB": database,
            "DAGSTER_PG_USERNAME": self.user,
            "DAGSTER_PG_PASSWORD": PASSWORD,
        }

    def create_database(self, name: str) -> str:
        """Create database ``name``; return its URL."""
        import psycopg2

        connection = psycopg2.connect(self.url())
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            connection.close()
        return self.url(name)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)
