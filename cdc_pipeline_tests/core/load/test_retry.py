"""``core.retry``: which MongoDB errors are transient, backoff delays, the budget, the message."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymongo.errors import (
    AutoReconnect,
    BulkWriteError,
    ConfigurationError,
    DuplicateKeyError,
    ExecutionTimeout,
    NetworkTimeout,
    NotPrimaryError,
    OperationFailure,
    ServerSelectionTimeoutError,
    WaitQueueTimeoutError,
    WTimeoutError,
)

from cdc_pipeline.core.errors import CdcError, SinkUnavailableError
from cdc_pipeline.core.load.retry import (
    RETRYABLE_CODES,
    RetryPolicy,
    call_with_retries,
    is_transient,
)

SECRET_URI = "mongodb://user:pw@host.internal:27017"


class FakeTime:
    """A monotonic clock that only moves when ``sleep`` is called (or ``cost`` per attempt)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def failing(errors: list[BaseException], result: str = "done") -> Callable[[], str]:
    """A function raising ``errors`` in turn, then returning ``result``."""
    remaining = list(errors)

    def fn() -> str:
        if remaining:
            raise remaining.pop(0)
        return result

    return fn


def bulk_error(write_codes: list[int], concern_codes: list[int] | None = None) -> BulkWriteError:
    return BulkWriteError(
        {
            "writeErrors": [
                {"index": i, "code": code, "errmsg": SECRET_URI}
                for i, code in enumerate(write_codes)
            ],
            "writeConcernErrors": [{"code": code, "errmsg": "x"} for code in concern_codes or []],
            "nInserted": 0,
        }
    )


TRANSIENT = [
    AutoReconnect(f"connection closed {SECRET_URI}"),
    NetworkTimeout("timed out"),
    ServerSelectionTimeoutError("host:27017: [Errno 111] Connection refused"),
    NotPrimaryError("not primary", {"code": 10107}),
    WaitQueueTimeoutError("pool exhausted"),
    OperationFailure("shutting down", code=91),
    OperationFailure("stepped down", code=189),
    OperationFailure("labelled", code=2, details={"errorLabels": ["RetryableWriteError"]}),
    WTimeoutError("waiting for replication timed out", code=64),
    bulk_error([91, 189]),
    bulk_error([], concern_codes=[64]),
]

NOT_TRANSIENT = [
    DuplicateKeyError("E11000 duplicate key", code=11000),
    OperationFailure("bad value", code=2),
    OperationFailure("auth failed", code=18),
    OperationFailure("no code"),
    ExecutionTimeout("operation exceeded time limit", code=50),
    ConfigurationError("bad URI"),
    ValueError("not a pymongo error"),
    KeyboardInterrupt(),
    bulk_error([11000]),
    bulk_error([91, 121]),
    bulk_error([], concern_codes=[100]),
]


@pytest.mark.parametrize("error", TRANSIENT, ids=lambda e: type(e).__name__)
def test_transient_errors(error: BaseException) -> None:
    assert is_transient(error)


@pytest.mark.parametrize("error", NOT_TRANSIENT, ids=lambda e: type(e).__name__)
def test_not_transient_errors(error: BaseException) -> None:
    assert not is_transient(error)


def test_retryable_codes_cover_pymongos_own_set() -> None:
    helpers = pytest.importorskip("pymongo.helpers_shared")
    assert getattr(helpers, "_RETRYABLE_ERROR_CODES", frozenset()) <= RETRYABLE_CODES


def test_delays_grow_are_capped_and_jittered() -> None:
    policy = RetryPolicy(initial_delay=0.5, max_delay=8.0, multiplier=2.0, deadline=1e9)
    rng = random.Random(7)
    delays = [d for _, d in zip(range(200), policy.delays(rng), strict=False)]
    caps = [min(8.0, 0.5 * 2.0**n) for n in range(200)]
    assert len(delays) == 200
    assert all(0.0 <= d <= cap for d, cap in zip(delays, caps, strict=True))
    assert max(delays) > 6.0  # reaches near the cap, not stuck at the start
    assert len(set(delays)) == len(delays)  # jittered, not a fixed ladder
    late = delays[10:]
    assert sum(late) / len(late) == pytest.approx(4.0, rel=0.2)  # uniform(0, 8) has mean 4


def test_same_seed_same_delays() -> None:
    policy = RetryPolicy()
    assert list(policy.delays(random.Random(3))) == list(policy.delays(random.Random(3)))


@given(
    seed=st.integers(0, 2**32),
    deadline=st.floats(0.0, 120.0),
    initial=st.floats(0.01, 5.0),
    cap=st.floats(0.01, 20.0),
)
def test_delays_never_sum_past_the_deadline(
    seed: int, deadline: float, initial: float, cap: float
) -> None:
    policy = RetryPolicy(initial_delay=initial, max_delay=cap, deadline=deadline)
    delays = list(policy.delays(random.Random(seed)))
    assert sum(delays) <= deadline + 1e-9
    assert all(0.0 <= d <= cap for d in delays)


@pytest.mark.parametrize("error", NOT_TRANSIENT, ids=lambda e: type(e).__name__)
def test_non_transient_errors_raise_at_once_unchanged(error: BaseException) -> None:
    fake = FakeTime()
    calls = []

    def fn() -> None:
        calls.append(1)
        raise error

    with pytest.raises(type(error)) as raised:
        call_with_retries(fn, RetryPolicy(), sleep=fake.sleep, rng=random.Random(1))
    assert raised.value is error
    assert calls == [1]
    assert fake.sleeps == []


@pytest.mark.parametrize("error", TRANSIENT, ids=lambda e: type(e).__name__)
def test_transient_errors_are_retried_until_success(error: BaseException) -> None:
    fake = FakeTime()
    seen: list[tuple[int, str, float]] = []
    result = call_with_retries(
        failing([error, error, error]),
        RetryPolicy(),
        sleep=fake.sleep,
        clock=fake.clock,
        rng=random.Random(1),
        on_retry=lambda n, e, d: seen.append((n, type(e).__name__, d)),
    )
    assert result == "done"
    assert [n for n, _, _ in seen] == [1, 2, 3]
    assert [d for _, _, d in seen] == fake.sleeps
    assert all(name == type(error).__name__ for _, name, _ in seen)


def test_budget_spent_raises_sink_unavailable_within_the_deadline() -> None:
    fake = FakeTime()
    policy = RetryPolicy(initial_delay=0.5, max_delay=8.0, deadline=30.0)
    with pytest.raises(SinkUnavailableError) as raised:
        call_with_retries(
            failing([AutoReconnect("down")] * 1000),
            policy,
            sleep=fake.sleep,
            clock=fake.clock,
            rng=random.Random(5),
        )
    assert sum(fake.sleeps) <= 30.0
    assert raised.value.attempts == len(fake.sleeps) + 1
    assert isinstance(raised.value, CdcError)
    assert raised.value.__suppress_context__


def test_time_spent_inside_attempts_counts_against_the_deadline() -> None:
    fake = FakeTime()

    def slow_failure() -> None:
        fake.now += 12.0  # each attempt blocks like a server selection timeout
        raise ServerSelectionTimeoutError("no servers")

    with pytest.raises(SinkUnavailableError) as raised:
        call_with_retries(
            slow_failure, RetryPolicy(deadline=30.0), sleep=fake.sleep, clock=fake.clock
        )
    assert raised.value.attempts <= 3
    assert fake.now <= 30.0 + 12.0


def test_zero_deadline_means_one_attempt() -> None:
    fake = FakeTime()
    with pytest.raises(SinkUnavailableError, match=r"after 1 attempt over"):
        call_with_retries(
            failing([AutoReconnect("down")]),
            RetryPolicy(deadline=0.0, initial_delay=0.5),
            sleep=fake.sleep,
            clock=fake.clock,
            rng=random.Random(0),
        )
    assert fake.sleeps == []


def test_message_names_the_class_but_never_the_uri_or_hosts() -> None:
    fake = FakeTime()
    error = ServerSelectionTimeoutError(f"{SECRET_URI}: host.internal:27017 refused")
    with pytest.raises(SinkUnavailableError) as raised:
        call_with_retries(
            failing([error] * 1000),
            RetryPolicy(deadline=5.0),
            sleep=fake.sleep,
            clock=fake.clock,
            rng=random.Random(2),
        )
    message = str(raised.value)
    assert message.startswith("MongoDB is unreachable (ServerSelectionTimeoutError) after ")
    assert message.endswith(" s; the segment stays in the WAL and will be loaded when it returns.")
    for secret in ("mongodb://", "user", "pw", "host", "27017", "refused"):
        assert secret not in message


def test_a_busy_server_is_not_called_unreachable() -> None:
    from cdc_pipeline.core.errors import SinkUnavailableError

    busy = str(SinkUnavailableError("_OperationCancelled", 4, 36.3))
    assert busy.startswith("MongoDB did not answer in time (_OperationCancelled) after 4 attempts")
    down = str(SinkUnavailableError("ServerSelectionTimeoutError", 1, 5.0))
    assert down.startswith("MongoDB is unreachable (ServerSelectionTimeoutError) after 1 attempt ")
