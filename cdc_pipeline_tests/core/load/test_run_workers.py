"""Unit tests of core/load/run_workers.py: a run's worker is gone when its pid is free, or taken
by a process that started after the run (a reused pid); a live worker is never reported gone."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from cdc_pipeline.core.load.run_workers import process_started_at, worker_gone


def fake_proc(tmp_path: Path, pid: int, started_ticks: int, state: str = "S") -> Path:
    """A /proc with one process (its comm holds a space and a parenthesis, as comms may) and a
    boot time of 1,000,000 s."""
    proc = tmp_path / "proc"
    (proc / str(pid)).mkdir(parents=True)
    fields = [state, *["0"] * 18, str(started_ticks), *["0"] * 10]
    (proc / str(pid) / "stat").write_text(f"{pid} (python -c (x)) {' '.join(fields)}\n")
    (proc / "stat").write_text("cpu  1 2 3\nbtime 1000000\nprocesses 5\n")
    return proc


def test_a_live_worker_is_not_gone_and_a_dead_one_is() -> None:
    child = subprocess.Popen(["sleep", "30"])
    run_started = time.time()
    try:
        time.sleep(0.2)
        assert not worker_gone(child.pid, run_started)
        assert process_started_at(child.pid) is not None
    finally:
        child.kill()
        child.wait()
    assert worker_gone(child.pid, run_started)


def test_a_pid_taken_by_a_later_process_means_the_worker_is_gone(tmp_path: Path) -> None:
    ticks = os.sysconf("SC_CLK_TCK")
    proc = fake_proc(tmp_path, 4242, started_ticks=500 * ticks)  # started at 1,000,500
    assert process_started_at(4242, proc) == 1_000_500.0
    assert not worker_gone(4242, 1_000_500.0, proc)  # the run's own worker
    assert not worker_gone(4242, 1_000_499.0, proc)  # within the slack of the start event
    assert worker_gone(4242, 1_000_400.0, proc)  # a process that began 100 s after the run
    assert worker_gone(4243, 1_000_400.0, proc)  # nobody has the pid


def test_a_zombie_is_gone(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, 77, started_ticks=0, state="Z")
    assert process_started_at(77, proc) is None
    assert worker_gone(77, 1_000_000.0, proc)
