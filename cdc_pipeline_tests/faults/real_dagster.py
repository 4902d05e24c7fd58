"""The real Dagster processes, as ``make ui`` and production start them, for the fault suite.

``RealDagster`` runs a code server (``dagster api grpc``), ``dagster-daemon run`` and
``dagster-webserver``, each its own process, on a ``DAGSTER_HOME`` whose ``dagster.yaml`` is the
project's PostgreSQL configuration (``dagster.postgres.yaml``: run queue limits, run monitoring),
with the default run launcher: every run is a subprocess of the code server. A test kills -9 any
of them, a run worker alone, or all of them together, and starts what it killed again.

The processes load ``faults/marks/sitecustomize.py`` (test instrumentation only), which writes
each process's phase (capture, commit, load, writing, checkpointed) for aiming kills.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from devtools.local_servers import _die_with_parent, free_port

PROJECT_ROOT = Path(__file__).resolve().parents[2]
MARKS = Path(__file__).resolve().parent / "marks"
BIN = Path(sys.executable).parent  # the environment running the tests has the dagster commands
LOCATION = "cdc_pipeline"


def _bin(name: str) -> str:
    candidate = BIN / name
    return str(candidate) if candidate.exists() else (shutil.which(name) or name)


@dataclass
class Process:
    """One Dagster process we started (its own session, so its children die with it)."""

    name: str
    command: list[str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def start(self, env: dict[str, str]) -> None:
        assert not self.alive(), f"{self.name} is already running"
        with self.log.open("ab") as log:
            self.popen = subprocess.Popen(
                self.command,
                env=env,
                cwd=PROJECT_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        self.starts += 1

    def kill9(self, with_children: bool = False) -> None:
        """SIGKILL this process (``with_children``: its whole session, run workers included)."""
        if self.popen is None:
            return
        if with_children:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
        elif self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGKILL)
        self.popen.wait()


@dataclass
class RealDagster:
    """A code server, the daemon and the webserver on one DAGSTER_HOME (see the module doc)."""

    home: Path
    env: dict[str, str]
    processes: dict[str, Process]
    grpc_port: int
    web_port: int
    marks: Path

    @classmethod
    def create(
        cls, folder: Path, postgres: dict[str, str], env: dict[str, str], sensor_seconds: int
    ) -> RealDagster:
        """``postgres``: the ``DAGSTER_PG_*`` variables of an empty database for this home."""
        home = folder / "dagster_home"
        home.mkdir(parents=True)
        shutil.copy(PROJECT_ROOT / "dagster.postgres.yaml", home / "dagster.yaml")
        marks = folder / "marks"
        marks.mkdir()
        grpc_port, web_port = free_port(), free_port()
        (home / "workspace.yaml").write_text(
            "load_from:\n  - grpc_server:\n      host: 127.0.0.1\n"
            f"      port: {grpc_port}\n      location_name: {LOCATION}\n"
        )
        full_env = {
            **os.environ,
            **env,
            "DAGSTER_HOME": str(home),
            **postgres,
            "CDC_SENSOR_INTERVAL_SECONDS": str(sensor_seconds),
            "CDC_FAULT_MARKS": str(marks),
            "PYTHONPATH": os.pathsep.join([str(MARKS), str(PROJECT_ROOT)]),
        }
        workspace = str(home / "workspace.yaml")
        logs = folder / "logs"
        logs.mkdir()
        processes = {
            "code_server": Process(
                "code_server",
                [
                    _bin("dagster"),
                    "api",
                    "grpc",
                    "-m",
                    "cdc_pipeline.definitions",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(grpc_port),
                    "--location-name",
                    LOCATION,
                ],
                logs / "code_server.log",
            ),
            "daemon": Process(
                "daemon", [_bin("dagster-daemon"), "run", "-w", workspace], logs / "daemon.log"
            ),
            "webserver": Process(
                "webserver",
                [
                    _bin("dagster-webserver"),
                    "-w",
                    workspace,
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(web_port),
                ],
                logs / "webserver.log",
            ),
        }
        return cls(home, full_env, processes, grpc_port, web_port, marks)

    # -- processes -----------------------------------------------------------------------
    def start(self, *names: str) -> None:
        """Start the named processes (all three by default) that are not running."""
        for name in names or ("code_server", "daemon", "webserver"):
            process = self.processes[name]
            if not process.alive():
                process.start(self.env)
                if name == "code_server":
                    self.wait_for_port(self.grpc_port, "the code server")

    def wait_for_port(self, port: int, what: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                sock.settimeout(0.2)
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.1)
        raise AssertionError(f"{what} did not listen on {port} within {timeout:.0f} s")

    def kill9(self, name: str) -> None:
        """``daemon``, ``code_server`` or ``webserver`` alone; ``all``: every process we started,
        with every run worker (the code server's session)."""
        if name == "all":
            for process in self.processes.values():
                process.kill9(with_children=True)
            return
        self.processes[name].kill9()

    def stop(self) -> None:
        for process in self.processes.values():
            process.kill9(with_children=True)

    def phase(self, role: str) -> tuple[str, int | None]:
        """A role's phase mark (``capture`` or ``load``) and the pid that wrote it."""
        try:
            data = json.loads((self.marks / f"{role}.json").read_text())
        except (OSError, ValueError):
            return "starting", None
        return str(data["phase"]), int(data["pid"])

    def wait_for_phase(self, role: str, wanted: str, timeout: float = 60.0) -> int | None:
        """Poll every 2 ms until ``role`` is in ``wanted``; the pid in it, or None (timeout)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            phase, pid = self.phase(role)
            if phase == wanted and pid is not None:
                return pid
            time.sleep(0.002)
        return None

    # -- the instance ---------------------------------------------------------------------
    def instance(self) -> dg.DagsterInstance:
        """The same instance, from this process (its storage settings come from the
        ``DAGSTER_PG_*`` variables, set here for the life of the scenario)."""
        os.environ.update({k: v for k, v in self.env.items() if k.startswith("DAGSTER_PG_")})
        return dg.DagsterInstance.from_config(str(self.home))

    def cli(self, *args: str) -> None:
        subprocess.run(
            [_bin("dagster"), *args, "-w", str(self.home / "workspace.yaml")],
            env=self.env,
            cwd=PROJECT_ROOT,
            check=True,
            capture_output=True,
        )

    def start_sensor(self) -> None:
        self.cli("sensor", "start", "binlog_capture_sensor")
