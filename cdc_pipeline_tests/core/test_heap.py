"""``core.heap.young_objects_only``: collections inside it skip the objects held before it and
still free the cycles made inside it; the process's freeze state is restored on the last exit
and left alone when the process froze objects itself."""

from __future__ import annotations

import gc
import threading
import weakref
from collections.abc import Iterator

import pytest

from cdc_pipeline.core.heap import young_objects_only


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


def in_oldest_generation(thing: object) -> bool:
    return any(candidate is thing for candidate in gc.get_objects(generation=2))


def test_a_collection_inside_skips_older_objects_and_they_come_back_after() -> None:
    older = Node()
    gc.collect()
    assert in_oldest_generation(older)
    with young_objects_only():
        gc.collect()
        assert gc.get_freeze_count() > 0
        assert not in_oldest_generation(older)  # frozen: no collection walks it
    assert gc.get_freeze_count() == 0
    assert in_oldest_generation(older)


def test_cycles_made_inside_are_still_freed_inside() -> None:
    with young_objects_only():
        first, second = Node(), Node()
        first.other, second.other = second, first
        gone = weakref.ref(first)
        del first, second
        gc.collect()
        assert gone() is None


def test_a_process_that_froze_objects_itself_keeps_them_frozen() -> None:
    theirs = Node()
    gc.freeze()
    frozen = gc.get_freeze_count()
    with young_objects_only():
        Node()
        assert gc.get_freeze_count() == frozen
    assert gc.get_freeze_count() == frozen
    assert not in_oldest_generation(theirs)


def test_nested_and_concurrent_uses_unfreeze_once_on_the_last_exit() -> None:
    inner_done, outer_may_exit = threading.Event(), threading.Event()
    seen: list[int] = []

    def other_load() -> None:
        with young_objects_only():
            inner_done.set()
            outer_may_exit.wait(5)
        seen.append(gc.get_freeze_count())

    with young_objects_only():
        with young_objects_only():
            pass
        assert gc.get_freeze_count() > 0  # the nested exit did not unfreeze
        worker = threading.Thread(target=other_load)
        worker.start()
        assert inner_done.wait(5)
    assert gc.get_freeze_count() > 0  # the other thread's use is still running
    outer_may_exit.set()
    worker.join(5)
    assert seen == [0]
    assert gc.get_freeze_count() == 0
