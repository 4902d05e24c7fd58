"""Keep Python's garbage collector off the objects a process held before a load or a capture.

A full collection (generation 2) walks every container object in the process, and nearly all
of them were imported before the first row (Dagster, pandas, pyarrow, pymongo). None of them
becomes garbage because rows are being read or written, yet a 100,000-row load or capture
set off five or six full collections, each walking them all again (figures and the
alternatives weighed: docs/decisions.md, "Garbage collections skip the objects held before a
tick or a load").

``gc.freeze()`` moves every object the collector tracks into a permanent generation that no
collection walks; ``gc.unfreeze()`` moves them back into the oldest generation. Inside
``young_objects_only()`` collections walk only the objects made since it began, so the cycles a
load or capture makes are still found and freed.

Invariants:
    * outside every ``young_objects_only()`` the process's freeze state is as it was: the
      objects it froze are unfrozen when the last one ends;
    * a process that froze objects itself (``gc.get_freeze_count()`` above zero on entry, as a
      pre-fork server may) is left alone: this neither freezes nor unfreezes anything then;
    * nested and concurrent uses (threads) freeze once and unfreeze once, on the last exit.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

_lock = threading.Lock()
_depth = 0
_froze = False


@contextlib.contextmanager
def young_objects_only() -> Iterator[None]:
    """Collections inside this block skip the objects that existed when it began."""
    global _depth, _froze
    with _lock:
        if _depth == 0:
            _froze = gc.get_freeze_count() == 0
            if _froze:
                gc.freeze()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _froze:
                gc.unfreeze()
                _froze = False
