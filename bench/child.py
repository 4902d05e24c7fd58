"""Runs one measured task in a fresh Python process and prints its figures as one JSON line.

Measures nothing by itself: each task (``TASKS``) times only its own work loop with
``time.perf_counter`` (imports, connections made before the loop, and copying input are
outside the timing), and its own process CPU time (``time.process_time``: user and system, all
threads, over the same span; ``cpu_us_per_row`` = that / rows, the client's cost independent of
how fast the server answers) and reports the process's peak resident set size (``VmHWM`` from
``/proc/self/status``, the kernel's high-water mark for the whole life of the process). A fresh
process per task keeps one measurement's memory and imports from leaking into the next, and lets
the baseline tasks import only what a bare loop needs.

Usage (the parent does this): ``python -m bench.child TASK 'JSON ARGUMENTS'``.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[1]

TASKS = {
    "capture_product": "bench.capture_bench:measure_product_capture",
    "capture_library": "bench.capture_bench:measure_library_capture",
    "load_product": "bench.load_bench:measure_product_load",
    "load_insert_many": "bench.load_bench:measure_insert_many",
    "latency_product": "bench.latency_bench:measure_product_latency",
    "latency_stream": "bench.latency_bench:measure_stream_latency",
}


class ChildError(RuntimeError):
    """A measured task failed; the message carries the tail of its stderr."""


def peak_rss_kib() -> int:
    """This process's peak resident set size so far, in KiB (VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def run_child(task: str, arguments: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run ``task`` in a new interpreter; return its figures plus ``peak_rss_mib``."""
    completed = subprocess.run(
        [sys.executable, "-m", "bench.child", task, json.dumps(arguments)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if completed.returncode != 0:
        tail = "\n".join(completed.stderr.strip().splitlines()[-15:])
        raise ChildError(f"benchmark task {task} failed (exit {completed.returncode}):\n{tail}")
    figures: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    figures["peak_rss_mib"] = round(figures.pop("peak_rss_kib") / 1024, 1)
    seconds = figures["seconds"]
    figures["rows_per_second"] = round(figures["rows"] / seconds, 1) if seconds > 0 else None
    if "cpu_seconds" in figures and figures["rows"]:
        figures["cpu_us_per_row"] = round(figures["cpu_seconds"] / figures["rows"] * 1e6, 2)
    return figures


def main(argv: list[str]) -> int:
    task, arguments = argv[0], json.loads(argv[1])
    module_name, function_name = TASKS[task].split(":")
    function = getattr(importlib.import_module(module_name), function_name)
    figures = function(arguments)
    figures["peak_rss_kib"] = peak_rss_kib()
    sys.stdout.write(json.dumps(figures) + os.linesep)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
