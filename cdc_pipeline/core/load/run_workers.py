"""Is a load run's worker process still alive? For runs whose launcher cannot say.

With Dagster's default run launcher each run is a process on the code server's host, and run
monitoring cannot check its health: a run whose worker was killed with its code server stays
STARTED, and its queue slot with it (measured: docs/decisions.md). The capture sensor asks this
module about each STARTED load run's worker (its pid and start time come from the run's
``RUN_START`` event) and fails the run when the worker is gone.

Invariant: ``worker_gone`` is True only when no process has the pid, or the process that has it
now started after the run did (the pid was reused); a live worker is never reported gone.
"""

from __future__ import annotations

import os
from pathlib import Path

START_SLACK_SECONDS = 2.0
"""A process start time is known to 1/CLK_TCK of a second, and the run's start event is written
a moment after its process began: a worker started up to this much after it still counts."""


def process_started_at(pid: int, proc: Path = Path("/proc")) -> float | None:
    """When process ``pid`` started (Unix time), None if there is no such process. Without
    ``/proc`` (not Linux) an existing process reads as started at 0: it counts as the worker."""
    if not proc.is_dir():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass  # it exists, owned by another user
        return 0.0
    stat = proc / str(pid) / "stat"
    try:
        text = stat.read_text()
        boot = next(
            float(line.split()[1])
            for line in (proc / "stat").read_text().splitlines()
            if line.startswith("btime ")
        )
    except (OSError, StopIteration, ValueError):
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "; comm may hold spaces
    if fields[0] == "Z":  # a zombie has finished: nothing runs under that pid any more
        return None
    ticks = int(fields[19])  # field 22 of stat: start time in clock ticks since boot
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def worker_gone(pid: int, run_started_at: float, proc: Path = Path("/proc")) -> bool:
    """Whether the worker process ``pid`` of a run that started at ``run_started_at`` is gone."""
    started = process_started_at(pid, proc)
    return started is None or started > run_started_at + START_SLACK_SECONDS
