"""``load.large_values``: a document that would pass MongoDB's 16 MiB or 100-level limits is made
to fit by moving values out of line, and reads back exactly (pure logic: files kept in memory)."""

from __future__ import annotations

import copy
from typing import Any

import bson
from hypothesis import given
from hypothesis import strategies as st

from cdc_pipeline.core.images import TEXT_IMAGE_PREFIX
from cdc_pipeline.core.load.large_values import (
    MAX_DEPTH,
    MAX_DOCUMENT_BYTES,
    LargeValues,
    depth,
    may_not_fit,
    may_not_fit_values,
)

MIB = 1024 * 1024


class InMemory(LargeValues):
    """``LargeValues`` with its files in a dict instead of GridFS."""

    def __init__(self) -> None:  # no database
        self.stored: dict[str, bytes] = {}
        self.retry = lambda action: action()

    def _store(self, file_id: str, content: bytes) -> None:
        self.stored[file_id] = content

    def read_back(self, document: dict[str, Any], listing: list[str]) -> dict[str, Any]:
        document = copy.deepcopy(document)
        for path in listing:
            holder: Any = document
            *parents, column = path.split(".", 1) if "." in path else [path]
            for parent in parents:
                holder = holder[parent]
            holder[column] = bson.decode(self.stored[holder[column]["gridfs"]])["v"]
        return document


def nested(levels: int, key: str | None = None, innermost: Any = 1) -> Any:
    """``innermost`` inside ``levels`` arrays, or documents of the one field ``key``."""
    value = innermost
    for _ in range(levels):
        value = [value] if key is None else {key: value}
    return value


def fits(document: dict[str, Any]) -> bool:
    return len(bson.encode(document)) <= MAX_DOCUMENT_BYTES and depth(document) <= MAX_DEPTH


def test_a_document_that_fits_is_not_changed() -> None:
    store, listing = InMemory(), []
    document = {"_id": 1, "a": b"x" * MIB, "j": nested(90), "_cdc": {"gtid": "g"}}
    original = copy.deepcopy(document)
    store.fit(document, (), listing)
    assert document == original and listing == [] and store.stored == {}


def test_a_mirror_over_16_mib_moves_its_largest_values_out_and_reads_back() -> None:
    store, listing = InMemory(), []
    document = {"_id": 1, "big": b"x" * 17 * MIB, "small": "s", "_cdc": {"gtid": "g"}}
    original = copy.deepcopy(document)
    assert not fits(document)
    store.fit(document, (), listing)
    assert listing == ["big"] and fits(document)
    assert document["small"] == "s" and document["_cdc"] == {"gtid": "g"}
    assert store.read_back(document, listing) == original


def test_an_update_whose_two_images_pass_16_mib_fits_and_the_mirror_image_is_untouched() -> None:
    store, listing = InMemory(), []
    after = {"id": 1, "blob": b"b" * 9 * MIB}
    change = {"_id": "g#0", "before": {"id": 1, "blob": b"a" * 9 * MIB}, "after": after}
    original = copy.deepcopy(change)
    store.fit(change, ("before", "after"), listing)
    assert fits(change) and len(listing) == 1
    assert after["blob"] == b"b" * 9 * MIB  # the mirror is built from the same image
    assert store.read_back(change, listing) == original


def test_json_at_mysqls_depth_limit_is_moved_out_of_line() -> None:
    """MySQL allows JSON 100 levels deep; inside a mirror (1 level) or a change (2) it passes
    MongoDB's 100."""
    for images, document in (
        ((), {"_id": 1, "j": nested(100), "_cdc": {}}),
        (("after",), {"_id": "g#0", "after": {"id": 1, "j": nested(99)}}),
    ):
        store, listing = InMemory(), []
        original = copy.deepcopy(document)
        assert not fits(document)
        store.fit(document, images, listing)
        assert fits(document) and listing in (["j"], ["after.j"])
        assert store.read_back(document, listing) == original


@given(st.lists(st.integers(min_value=1, max_value=7 * MIB), min_size=1, max_size=5))
def test_any_mix_of_large_values_ends_fitting(sizes: list[int]) -> None:
    store, listing = InMemory(), []
    document: dict[str, Any] = {"_id": 1, **{f"c{i}": b"v" * n for i, n in enumerate(sizes)}}
    document["_cdc"] = {}
    original = copy.deepcopy(document)
    store.fit(document, (), listing)
    assert fits(document)
    assert store.read_back(document, listing) == original
    assert (listing == []) == (len(bson.encode(original)) <= MAX_DOCUMENT_BYTES - 64 * 1024)


def test_the_cheap_tests_let_only_surely_fitting_rows_through() -> None:
    assert not may_not_fit('{"a": 1}', None)
    assert may_not_fit("x" * (2 * MIB + 1))
    assert may_not_fit("[" * 81 + "]" * 81)
    # A format-2 image kept as text counts its brackets however short (no 560-byte exit).
    assert may_not_fit(TEXT_IMAGE_PREFIX + b"[" * 81 + b"]" * 81, bson.encode({"a": 1}))
    # The worst ratio of BSON to the text (an array of one-digit numbers) stays under the limit.
    worst = "[" + ",".join(["1"] * (MIB - 1)) + "]"
    assert not may_not_fit(worst) and len(bson.encode({"after": {"j": [1] * MIB}})) < 12 * MIB
    assert not may_not_fit_values({"a": "x" * MIB, "j": nested(10)})
    assert may_not_fit_values({"a": b"x" * 9 * MIB})
    assert may_not_fit_values({"j": nested(81)})


_NESTING = st.lists(st.sampled_from([b"\x03", b"\x04", b"x", b"\x00"]), max_size=700).map(
    lambda parts: b"\x05" + b"".join(parts)  # (never four NULs first: a text image's marker)
)


@given(st.lists(st.one_of(st.none(), _NESTING), min_size=1, max_size=3))
def test_the_cheap_test_on_bson_images_is_its_definition(images: list[bytes | None]) -> None:
    """``may_not_fit`` on BSON images (its early exits included) is its docstring's rule: over
    8 MiB in all, or over 560 bytes in all holding over 80 bytes of value 3 or 4 (an image
    without a document or array byte has none, however long)."""
    present = [image for image in images if image]
    openings = sum(image.count(3) + image.count(4) for image in present)
    size = sum(len(image) for image in present)
    assert may_not_fit(*images) == (size > 560 and openings > 80)
    assert may_not_fit(*images, b"\x00" * 8 * MIB) == bool(present)
    assert not may_not_fit(None, b"")


@given(
    st.lists(
        st.tuples(st.integers(0, 95), st.sampled_from(["", "k"]), st.booleans()),
        min_size=1,
        max_size=3,
    )
)
def test_bson_images_the_cheap_test_lets_through_nest_at_most_80_levels(
    shapes: list[tuple[int, str, bool]],
) -> None:
    """The bound under the 560-byte exit holds for real BSON: when ``may_not_fit`` says no,
    the images hold at most 80 nested documents and arrays in all, however tightly packed
    (empty keys, empty innermost documents). 80 nested empty documents under empty keys take
    565 bytes, the image's own 5 included, and 81 take 572 (said yes to), so the 560-byte
    exit is safe."""
    images = [
        bson.encode({key: nested(levels, None if array else key, {})})
        for levels, key, array in shapes
    ]
    levels_in_all = sum(depth(bson.decode(image)) - 1 for image in images)
    assert may_not_fit(*images) or levels_in_all <= 80
    at_the_limit, over_it = (bson.encode({"": nested(n, "", {})}) for n in (79, 80))
    assert len(at_the_limit) == 565 and len(over_it) == 572 and may_not_fit(over_it)
