"""Retrying MongoDB calls through short outages: exponential backoff with full jitter.

Invariants:
    * only errors that MongoDB or pymongo mark as transient are retried, decided from exception
      classes, server error codes and error labels, never from message text;
    * anything else (duplicate key, validation, auth, a bug) propagates unchanged at once;
    * the total time, sleeps and attempts together, stays within ``RetryPolicy.deadline``
      (give or take the last attempt's own duration);
    * a spent budget ends in ``SinkUnavailableError``, whose message names the exception class
      only: never the URI nor pymongo's message text, which can carry the host list.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    OperationFailure,
    PyMongoError,
    WriteConcernError,
)

from cdc_pipeline.core.errors import SinkUnavailableError

T = TypeVar("T")

# MongoDB's retryable-writes set (pymongo ``helpers_shared._RETRYABLE_ERROR_CODES``): the server
# is shutting down, stepping down, unreachable from a router, or briefly not primary.
RETRYABLE_CODES: frozenset[int] = frozenset(
    {
        6,  # HostUnreachable
        7,  # HostNotFound
        89,  # NetworkTimeout
        91,  # ShutdownInProgress
        134,  # ReadConcernMajorityNotAvailableYet
        189,  # PrimarySteppedDown
        262,  # ExceededTimeLimit
        9001,  # SocketException
        10058,  # LegacyNotPrimary
        10107,  # NotWritablePrimary
        11600,  # InterruptedAtShutdown
        11602,  # InterruptedDueToReplStateChange
        13435,  # NotPrimaryNoSecondaryOk
        13436,  # NotPrimaryOrSecondary
    }
)

# Write-concern failures only: the write reached the primary but not enough replicas in time
# (wtimeout). Our writes are idempotent, so writing again once replication catches up is safe.
WRITE_CONCERN_RETRYABLE_CODES: frozenset[int] = RETRYABLE_CODES | {
    50,  # MaxTimeMSExpired, as reported with errInfo.wtimeout
    64,  # WriteConcernFailed
}

RETRYABLE_LABELS: tuple[str, ...] = ("RetryableWriteError", "TransientTransactionError")


def _has_retryable_label(error: PyMongoError) -> bool:
    return any(error.has_error_label(label) for label in RETRYABLE_LABELS)


def _code_of(document: Any) -> int | None:
    code = document.get("code") if isinstance(document, Mapping) else None
    return code if isinstance(code, int) else None


def _bulk_is_transient(error: BulkWriteError) -> bool:
    """Transient only if every write error is, or there are none and the write concern failed so.

    One duplicate key or validation failure among the write errors makes the batch non-transient:
    writing it again would fail the same way.
    """
    details = error.details if isinstance(error.details, Mapping) else {}
    write_errors: Sequence[Any] = details.get("writeErrors") or []
    if write_errors:
        return all(_code_of(item) in RETRYABLE_CODES for item in write_errors)
    if _has_retryable_label(error):
        return True
    concern_errors: Sequence[Any] = details.get("writeConcernErrors") or []
    return bool(concern_errors) and _code_of(concern_errors[-1]) in WRITE_CONCERN_RETRYABLE_CODES


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` is a MongoDB failure worth retrying after a pause.

    True for connection-level failures (``ConnectionFailure`` and its subclasses
    ``AutoReconnect``, ``NetworkTimeout``, ``NotPrimaryError``, ``ServerSelectionTimeoutError``,
    ``WaitQueueTimeoutError``), for ``OperationFailure`` whose code is in ``RETRYABLE_CODES``
    or that carries a retryable error label, for write-concern timeouts, and for a
    ``BulkWriteError`` whose write errors are all retryable. False for everything else,
    including ``ExecutionTimeout`` (code 50: our own ``maxTimeMS``, which a retry hits again).
    """
    if isinstance(error, ConnectionFailure):
        return True
    if isinstance(error, BulkWriteError):
        return _bulk_is_transient(error)
    if not isinstance(error, OperationFailure):
        return False
    if _has_retryable_label(error):
        return True
    if isinstance(error, WriteConcernError):
        return error.code in WRITE_CONCERN_RETRYABLE_CODES
    return error.code in RETRYABLE_CODES


@dataclass(frozen=True)
class RetryPolicy:
    """How long to keep trying: delays grow by ``multiplier`` up to ``max_delay``.

    Attributes:
        initial_delay: cap of the first pause, in seconds.
        max_delay: cap of any single pause.
        multiplier: growth of the cap between attempts.
        deadline: total budget in seconds for sleeps and attempts together.
    """

    initial_delay: float = 0.5
    max_delay: float = 8.0
    multiplier: float = 2.0
    deadline: float = 30.0

    def delays(self, rng: random.Random) -> Iterator[float]:
        """Pauses between attempts, full jitter: the n-th is uniform in [0, cap_n].

        ``cap_n = min(max_delay, initial_delay * multiplier**n)``. The iterator ends before the
        pause that would take the cumulative sleep past ``deadline``, so the sum of what it
        yields never exceeds ``deadline``.
        """
        slept = 0.0
        cap = min(self.max_delay, self.initial_delay)
        while True:
            delay = rng.uniform(0.0, cap)
            if slept + delay > self.deadline:
                return
            slept += delay
            yield delay
            cap = min(self.max_delay, cap * self.multiplier)


def call_with_retries(
    fn: Callable[[], T],
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
    on_retry: Callable[[int, BaseException, float], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Calls ``fn`` until it returns, retrying transient MongoDB errors within the policy.

    Args:
        fn: the operation; must be safe to repeat (idempotent writes).
        policy: backoff and total budget.
        sleep: how to pause (tests pass a fake).
        rng: jitter source; a fresh ``random.Random()`` if omitted.
        on_retry: called as ``on_retry(failed_attempt_number, error, delay)`` before each pause.
        clock: monotonic seconds; the budget also counts time spent inside ``fn`` (an attempt
            can block for ``serverSelectionTimeoutMS``).

    Raises:
        SinkUnavailableError: the budget ran out while errors stayed transient (raised from
            ``None``: neither its message nor its traceback repeats pymongo's text).
        BaseException: any non-transient error from ``fn``, unchanged and without a pause.
    """
    started = clock()
    delays = policy.delays(rng if rng is not None else random.Random())
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except Exception as error:
            if not is_transient(error):
                raise
            delay = next(delays, None)
            if delay is None or clock() - started + delay > policy.deadline:
                raise SinkUnavailableError(
                    type(error).__name__, attempt, clock() - started
                ) from None
            if on_retry is not None:
                on_retry(attempt, error, delay)
            sleep(delay)
