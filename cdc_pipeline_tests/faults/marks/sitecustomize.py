"""Phase marks inside the real Dagster processes of the fault suite (test instrumentation only).

The real-daemon scenarios put this folder on ``PYTHONPATH`` of the code server, the daemon and
(by inheritance) every run worker, so Python imports this file at start-up. When
``CDC_FAULT_MARKS`` names a folder, it wraps a few product functions as they are imported, to
write the process's phase to ``<folder>/<role>.json`` (``{"phase", "pid", "at"}``), where a test
polls it to aim its kills. Nothing of the product is changed on disk; without the variable this
file does nothing.

* ``capture.json`` (the code server, where the sensor captures): ``capture`` while a capture tick
  runs, ``commit`` while ``SegmentWriter.commit`` writes a segment's footer, digest and rename;
* ``load.json`` (a run worker): ``load`` while ``load_pending`` runs, ``writing`` from its first
  change-log write until its checkpoint write succeeded, then ``checkpointed``; ``idle`` after.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

FOLDER = os.environ.get("CDC_FAULT_MARKS")
_phase = {"load": ""}


def note(role: str, phase: str) -> None:
    """Replace the role's phase file atomically (no fsync: microseconds, not a disk flush)."""
    assert FOLDER is not None
    _phase[role] = phase
    path = Path(FOLDER) / f"{role}.json"
    # per thread too: the daemon evaluates several sources' sensors at once in one code server
    temp = path.with_name(f".tmp-{role}-{os.getpid()}-{threading.get_ident()}")
    temp.write_text(json.dumps({"phase": phase, "pid": os.getpid(), "at": time.time()}))
    os.replace(temp, path)


def _marked(role: str, phase: str, after: str, function: Any) -> Any:
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        note(role, phase)
        try:
            return function(*args, **kwargs)
        finally:
            note(role, after)

    return wrapper


def _listener() -> Any:
    from pymongo import monitoring

    class LoadWriteMarks(monitoring.CommandListener):  # type: ignore[misc]
        def __init__(self) -> None:
            self.checkpoints: set[int] = set()

        def started(self, event: Any) -> None:
            name, target = event.command_name, event.command.get(event.command_name)
            if name in {"insert", "update", "delete"} and target == "row_changes":
                if _phase["load"] in {"load", "checkpointed"}:
                    note("load", "writing")
            elif _phase["load"] == "writing" and (name, target) == ("update", "cdc_checkpoints"):
                self.checkpoints.add(event.request_id)

        def succeeded(self, event: Any) -> None:
            if event.request_id in self.checkpoints:
                self.checkpoints.discard(event.request_id)
                note("load", "checkpointed")

        def failed(self, event: Any) -> None:
            self.checkpoints.discard(event.request_id)

    return LoadWriteMarks()


def _patch(name: str, module: Any) -> None:
    if name == "cdc_pipeline.core.wal.writer":
        writer = module.SegmentWriter
        writer.commit = _marked("capture", "commit", "capture", writer.commit)
    elif name == "cdc_pipeline.core.capture.tick":
        module.capture_once = _marked("capture", "capture", "idle", module.capture_once)
    elif name == "cdc_pipeline.core.load.loader":
        module.load_pending = _marked("load", "load", "idle", module.load_pending)
    elif name == "pymongo.monitoring":
        module.register(_listener())


class _Finder(importlib.abc.MetaPathFinder):
    """Patches the modules above right after they are first executed."""

    NAMES = frozenset(
        {
            "cdc_pipeline.core.wal.writer",
            "cdc_pipeline.core.capture.tick",
            "cdc_pipeline.core.load.loader",
            "pymongo.monitoring",
        }
    )

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name not in self.NAMES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        original = loader.exec_module

        def exec_module(module: Any) -> None:
            original(module)
            _patch(name, module)

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


if FOLDER:
    sys.meta_path.insert(0, _Finder())
