"""Run write calls on one background thread, in order, while the caller prepares the next ones.

Loading a segment alternates between our CPU (decoding rows, building documents) and waiting
for MongoDB; the profile (docs/profile.md) showed the two taking turns. ``WritePipeline`` lets
them overlap: the caller submits each bulk write and goes on; one thread runs them.

Invariants:
    * calls run one at a time, in submission order (one thread, a FIFO queue);
    * after a call fails, no later call runs; the failure is raised in the caller at its next
      ``submit`` or at ``drain``/exit, so a caller that drains before a checkpoint never writes
      the checkpoint over a failed write;
    * at most ``depth`` calls wait in the queue (memory stays bounded);
    * leaving the ``with`` block drains (or, on an exception, discards what has not started)
      and joins the thread: nothing runs after the block.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from types import TracebackType

_STOP = None


class WritePipeline:
    def __init__(self, depth: int = 4):
        self._queue: queue.Queue[Callable[[], object] | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._cancelled = False
        self._thread = threading.Thread(target=self._run, name="cdc-mongo-writes", daemon=True)

    def __enter__(self) -> WritePipeline:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if kind is not None:
            self._cancelled = True
        self._queue.put(_STOP)
        self._thread.join()
        if kind is None:
            self._raise_failure()

    def submit(self, call: Callable[[], object]) -> None:
        """Queue ``call``; raises the failure of an earlier call instead, if there was one."""
        self._raise_failure()
        self._queue.put(call)

    def drain(self) -> None:
        """Wait until every submitted call has run; raise the first failure."""
        self._queue.join()
        self._raise_failure()

    def _raise_failure(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while True:
            call = self._queue.get()
            try:
                if call is _STOP:
                    return
                if self._error is None and not self._cancelled:
                    call()
            except BaseException as error:  # handed to the caller, who re-raises it
                self._error = error
            finally:
                self._queue.task_done()
