"""Unit tests of core/images.py: the WAL's row images (BSON, format 2; text, format 1)
round-trip every BSON-ready value, and the two formats decode to the same documents."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import pytest
from bson import encode as bson_encode
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cdc_pipeline.core.images import (
    TEXT_IMAGE_PREFIX,
    decode_document,
    document_keys,
    encode_document,
    encode_image,
    encode_images,
    has_columns,
)

UTC = dt.UTC


def test_encode_keeps_bson_types_exactly() -> None:
    document = {
        "small": 5,
        "large": 2**40,
        "dec": Decimal128("12345.50000000000000000000000000000"),
        "when": dt.datetime(2024, 2, 29, 23, 59, 59, 123000, tzinfo=UTC),
        "raw": b"\x00\xff",
        "float": 1.1,
        "text": "Zo\u00eb \U0001f600",
        "list": [None, True, {"$date": 1, "~x": 2, "plain": 3}],
    }
    text = encode_document(document)
    assert text is not None
    assert '"small": {"$numberInt": "5"}' in text and '"large": {"$numberLong"' in text
    decoded = decode_document(text)
    assert decoded == document
    assert list(decoded) == list(document)  # key order kept
    assert decoded["when"].tzinfo is not None
    assert decoded["list"][2] == {"$date": 1, "~x": 2, "plain": 3}
    assert encode_document(None) is None and decode_document(None) is None


def test_decode_refuses_a_non_object() -> None:
    with pytest.raises(ValueError, match="JSON object"):
        decode_document("[1]")


def _strictly_equal(left: Any, right: Any) -> bool:
    if isinstance(left, dict):
        return (
            isinstance(right, dict)
            and list(left) == list(right)
            and all(_strictly_equal(left[key], right[key]) for key in left)
        )
    if isinstance(left, list):
        return (
            isinstance(right, list)
            and len(left) == len(right)
            and all(_strictly_equal(a, b) for a, b in zip(left, right, strict=True))
        )
    if isinstance(left, float) and isinstance(right, float) and math.isnan(left):
        return math.isnan(right)
    kind = int if type(left) is Int64 else type(left)
    other = int if type(right) is Int64 else type(right)
    return bool(kind is other and left == right)


keys = st.text(
    st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), max_size=6
) | st.sampled_from(["$date", "$numberInt", "$binary", "~", "~$oid", "$", "_id"])

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(),
    st.text(),
    st.binary(max_size=16),
    st.integers(0, 30)
    .flatmap(lambda places: st.decimals(allow_nan=False, allow_infinity=False, places=places))
    .map(lambda number: Decimal128(number) if len(number.as_tuple().digits) <= 34 else str(number)),
    st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31)).map(
        lambda value: value.replace(microsecond=value.microsecond // 1000 * 1000, tzinfo=UTC)
    ),
)

documents = st.dictionaries(
    keys,
    st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4)
        ),
        max_leaves=12,
    ),
    max_size=8,
)


_NOT_BSON = st.sampled_from([{"a\x00b": 1}, {"text": "lone \ud800"}, {"n": {"x\x00": None}}])


@given(st.lists(st.none() | documents | _NOT_BSON, max_size=14))
@example([None, {"_id": 1, "a": {"_id": 2, "b": 3}}, None])
@example([{"n": index} if index % 7 else None for index in range(1, 150)])
@example([{"x": 1}, {"a\x00": 1}, None])
def test_images_encoded_together_are_each_image_encoded_alone(
    documents_: list[dict[str, Any] | None],
) -> None:
    """Capture encodes a rows event's images in one call and cuts them apart: the same bytes
    as one call per image, for nulls, ``_id`` keys at any depth, indexes of several digits
    and a document BSON cannot hold (then each is encoded alone, as text or as BSON)."""
    assert encode_images(documents_) == [encode_image(document) for document in documents_]


@given(documents)
def test_decode_inverts_encode_for_any_bson_ready_document(document: dict[str, Any]) -> None:
    bson_encode(document)  # the generated document is valid BSON
    assert _strictly_equal(decode_document(encode_document(document)), document)


_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.integers(min_value=-(2**31) - 2, max_value=2**31 + 2),
    st.builds(Int64, st.integers(min_value=-(2**63), max_value=2**63 - 1)),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(),
    st.binary(max_size=20),
    st.decimals(allow_nan=False, allow_infinity=False, places=None).map(
        lambda value: Decimal128(str(value)) if len(str(value)) < 30 else Decimal128("1.5")
    ),
    st.datetimes(
        min_value=dt.datetime(1, 1, 1),
        max_value=dt.datetime(9999, 12, 31),
        timezones=st.just(dt.UTC),
    ),
    st.tuples(st.integers(), st.text()),
)

_KEYS = st.one_of(st.text(), st.sampled_from(["$set", "~x", "~", "$", "", "a.b", "_id"]))

_DOCUMENTS = st.recursive(
    _LEAVES,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_KEYS, children, max_size=4),
    max_leaves=12,
)


@given(st.dictionaries(_KEYS, _DOCUMENTS, max_size=6))
def test_encode_document_is_the_libraries_canonical_text_exactly(document: dict[str, Any]) -> None:
    from bson import json_util
    from bson.json_util import CANONICAL_JSON_OPTIONS

    from cdc_pipeline.core.images import _escape_keys

    expected = json_util.dumps(_escape_keys(document), json_options=CANONICAL_JSON_OPTIONS)
    assert encode_document(document) == expected


@given(documents)
def test_decoding_decimals_as_strings_equals_converting_the_decoded_document(
    document: dict[str, Any],
) -> None:
    from cdc_pipeline.core.load.sink import _decimals_to_strings

    text = encode_document(document)
    expected = _decimals_to_strings(decode_document(text))
    assert _strictly_equal(decode_document(text, decimals_as_strings=True), expected)


def test_decoding_decimals_as_strings_keeps_an_escaped_user_key() -> None:
    document = {
        "price": Decimal128("1.10"),
        "doc": {"$numberDecimal": "7"},
        "n": [Decimal128("-0")],
    }
    decoded = decode_document(encode_document(document), decimals_as_strings=True)
    assert decoded == {"price": "1.10", "doc": {"$numberDecimal": "7"}, "n": ["-0"]}


@given(documents)
def test_document_keys_are_the_decoded_documents_keys(document: dict[str, Any]) -> None:
    text = encode_document(document)
    decoded = decode_document(text)
    assert decoded is not None
    assert document_keys(text) == list(decoded)


def test_document_keys_refuses_a_non_object_and_keeps_none() -> None:
    assert document_keys(None) is None
    with pytest.raises(ValueError, match="JSON object"):
        document_keys("[1, 2]")


def _with_texted_decimals(value: Any) -> Any:
    """The document as conversion makes it: exact decimals as ``TextedDecimal128``."""
    from cdc_pipeline.core.values import exact_decimal

    if isinstance(value, dict):
        return {key: _with_texted_decimals(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_with_texted_decimals(item) for item in value]
    if isinstance(value, Decimal128):
        return exact_decimal(value.to_decimal())
    return value


@given(documents)
def test_a_bson_image_decodes_to_what_the_text_image_decoded_to(document: dict[str, Any]) -> None:
    """Format 2 against format 1: the same document, types, key order and all."""
    document = _with_texted_decimals(document)
    image = encode_image(document)
    assert isinstance(image, bytes) and image == bson_encode({"": document})[6:-1]
    from_text = decode_document(encode_document(document))
    assert _strictly_equal(decode_document(image), from_text)
    assert _strictly_equal(
        decode_document(image, decimals_as_strings=True),
        decode_document(encode_document(document), decimals_as_strings=True),
    )
    assert document_keys(image) == document_keys(encode_document(document)) == list(document)


@pytest.mark.parametrize(
    "document",
    [{"k\x00ey": 1, "n": {"a\x00": [1]}}, {"text": "lone \udc80 surrogate"}],
    ids=["nul-in-key", "lone-surrogate"],
)
def test_a_document_bson_cannot_hold_keeps_its_text_image(document: dict[str, Any]) -> None:
    image = encode_image(document)
    assert image is not None and image[:4] == TEXT_IMAGE_PREFIX
    assert _strictly_equal(decode_document(image), document)
    assert document_keys(image) == list(document)


def test_bytes_that_are_not_an_image_are_refused_and_none_stays_none() -> None:
    assert encode_image(None) is None and decode_document(None) is None
    with pytest.raises(ValueError, match="not a BSON document"):
        decode_document(b"\x05\x00\x00\x00\x01")
    with pytest.raises(ValueError, match="not a BSON document"):
        document_keys(b"garbage")


_KEY_VALUES = st.one_of(
    scalars,
    st.builds(Int64, st.integers(-(2**63), 2**63 - 1)),
    st.sampled_from([1, True, 1.0, Int64(1), Decimal128("1"), Decimal128("1.0"), "1", b"1"]),
    st.dictionaries(st.sampled_from(["a", "b", "_id"]), scalars, max_size=3),
)


@given(_KEY_VALUES, _KEY_VALUES)
def test_a_key_identity_tells_keys_apart_exactly_as_the_stored_key_text(
    left: Any, right: Any
) -> None:
    """The sink coalesces mirror changes by ``key_identity`` (BSON bytes); the stored and
    reported form is ``key_text``: the two must agree on which keys are the same."""
    from cdc_pipeline.core.load.documents import key_identity, key_text

    assert (key_identity(left) == key_identity(right)) == (key_text(left) == key_text(right))
    assert key_identity(left) == key_identity(left)


_HIGH_WORDS = st.one_of(
    st.integers(0, 2**64 - 1),  # anything: NaN, infinities, the steered form, oversized
    st.builds(  # the plain form: sign, an exponent near the point, the coefficient's top bits
        lambda sign, exponent, top: (sign << 63) | ((exponent + 6176) << 49) | top,
        st.integers(0, 1),
        st.integers(-6176, 6111),
        st.integers(0, 2**49 - 1) | st.integers(0, 4),
    ),
    st.builds(
        lambda sign, exponent: (sign << 63) | ((exponent + 6176) << 49),
        st.integers(0, 1),
        st.integers(-45, 10),
    ),
)


_TOP = (10**34 - 1) >> 64  # the coefficient's high bits at its largest


@settings(max_examples=400)
@given(st.integers(0, 2**64 - 1) | st.integers(0, 10**6), _HIGH_WORDS)
@example(0, 0xFC00_0000_0000_0000)  # -NaN
@example(0, 0x7E00_0000_0000_0000)  # sNaN
@example(0, 0xF800_0000_0000_0000)  # -Infinity
@example(5, 0x6000_0000_0000_0000 | (6176 - 3) << 47)  # the steered form: a zero, E-3
@example((10**34 - 1) & (2**64 - 1), (6176 << 49) | _TOP)  # the largest coefficient
@example(((10**34) & (2**64 - 1)), (6176 << 49) | ((10**34) >> 64))  # one more: zero
@example(1234, (6176 - 10) << 49)  # 1.234E-7: four digits left of the point at -6
@example(1234, (6176 - 9) << 49)  # 0.000001234
def test_decimal128_text_is_the_libraries_str_for_any_bits(low: int, high: int) -> None:
    from cdc_pipeline.core.images import decimal128_text

    value = Decimal128.from_bid(low.to_bytes(8, "little") + high.to_bytes(8, "little"))
    assert decimal128_text(value) == str(value)


@given(documents, st.data())
def test_the_key_walk_agrees_with_the_library_on_any_damage(document: dict[str, Any], data: Any):
    """``document_keys`` of a BSON image walks over the values; on an image damaged anyhow it
    always ends, and it never names other keys than the library reads. It checks the framing,
    the keys and the text values, not every value (a damaged array or date inside a
    well-framed image): values are what the segment's checksums protect, and the load's
    decoding refuses them."""
    from cdc_pipeline.core.images import _bson_keys, _raw_image

    image = encode_image(_with_texted_decimals(document))
    assert isinstance(image, bytes)
    assert _bson_keys(image) == list(document) or (not document and _bson_keys(image) == [])
    damaged = bytearray(image)
    for _ in range(data.draw(st.integers(1, 3))):
        where = data.draw(st.integers(0, len(damaged) - 1))
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip":
            damaged[where] ^= data.draw(st.integers(1, 255))
        elif action == "cut":
            del damaged[where:]
            damaged += b"\x00" if data.draw(st.booleans()) else b""
        else:
            damaged.insert(where, data.draw(st.integers(0, 255)))
        if not damaged:
            damaged = bytearray(b"\x00")
    keys = _bson_keys(bytes(damaged))
    try:
        expected = list(_raw_image(bytes(damaged)).keys())
    except Exception:  # any refusal of the library's
        expected = None
    if keys is not None and expected is not None:
        assert keys == expected
    names = tuple(key.encode() for key in document)
    assert has_columns(image, names)
    if has_columns(bytes(damaged), names):  # validation's fast check accepts only what the
        assert keys == list(document)  # walk, and so the library, reads as these columns


@given(documents, st.data())
def test_the_column_check_accepts_exactly_the_images_keys(document: dict[str, Any], data: Any):
    """Validation compares each image with its version's column names as bytes
    (``has_columns``): true for exactly the image's keys in order, false for any other list."""
    image = encode_image(_with_texted_decimals(document))
    assert isinstance(image, bytes)
    names = [key.encode() for key in document]
    assert has_columns(image, tuple(names))
    other = data.draw(st.lists(st.sampled_from([*names, b"x", b"_id", b""]), max_size=9))
    assert has_columns(image, tuple(other)) == (other == names)
    assert not has_columns(TEXT_IMAGE_PREFIX + b"{}", ()) and not has_columns(None, ())


def test_the_column_check_refuses_what_the_library_would_not_read() -> None:
    """Damage the fuzzing above rarely hits exactly: each makes the library refuse the image
    or read other keys, so the fast check must say no and leave it to ``document_keys``."""
    text = bson_encode({"a": "text"})
    assert has_columns(text, (b"a",))
    assert not has_columns(text.replace(b"text", b"t\xffxt"), (b"a",))  # not UTF-8
    assert not has_columns(bson_encode({"b": 1}), (b"a",))  # another name of the same length
    # a sub-document that claims 4 bytes (its length field alone), then the image's end
    image = (12).to_bytes(4, "little") + b"\x03a\x00" + b"\x04\x00\x00\x00" + b"\x00"
    assert len(image) == int.from_bytes(image[:4], "little")
    with pytest.raises(Exception):  # noqa: B017 - whatever the library raises
        _raw_image_keys(image)
    assert not has_columns(image, (b"a",))


def _raw_image_keys(image: bytes) -> list[str]:
    from cdc_pipeline.core.images import _raw_image

    return list(_raw_image(image).keys())
