"""``WritePipeline``: order, failure handling and shutdown (pure logic, no servers)."""

from __future__ import annotations

import threading
import time

import pytest

from cdc_pipeline.core.load.write_pipeline import WritePipeline


def test_calls_run_in_submission_order_off_the_caller_thread() -> None:
    ran: list[tuple[int, str]] = []
    with WritePipeline(depth=2) as writes:
        for n in range(50):
            writes.submit(lambda n=n: ran.append((n, threading.current_thread().name)))
    assert [n for n, _ in ran] == list(range(50))
    assert {name for _, name in ran} == {"cdc-mongo-writes"}


def test_the_caller_overlaps_with_a_slow_call() -> None:
    started = time.monotonic()
    with WritePipeline() as writes:
        writes.submit(lambda: time.sleep(0.3))
        submitted_after = time.monotonic() - started
    assert submitted_after < 0.1  # submit does not wait for the call
    assert time.monotonic() - started >= 0.3  # leaving the block waited for it


def test_a_failure_stops_every_later_call_and_reaches_the_caller() -> None:
    ran: list[int] = []

    def fail() -> None:
        raise RuntimeError("write refused")

    with pytest.raises(RuntimeError, match="write refused"), WritePipeline(depth=1) as writes:
        writes.submit(lambda: ran.append(1))
        writes.submit(fail)
        for n in range(2, 10):
            writes.submit(lambda n=n: ran.append(n))  # raises once the failure is seen
        writes.drain()
    assert ran == [1]


def test_drain_waits_for_everything_submitted() -> None:
    ran: list[int] = []
    with WritePipeline() as writes:
        writes.submit(lambda: (time.sleep(0.1), ran.append(1)))
        writes.drain()
        assert ran == [1]


def test_an_exception_in_the_caller_discards_calls_not_yet_started() -> None:
    ran: list[int] = []
    gate = threading.Event()
    threading.Timer(0.2, gate.set).start()  # released after the block has been left
    with pytest.raises(KeyError), WritePipeline(depth=4) as writes:
        writes.submit(gate.wait)  # running when the caller fails
        writes.submit(lambda: ran.append(1))  # queued: must never run
        raise KeyError("caller failed")
    assert ran == []
