"""Unit tests of core/values.py: each CONTRACT type rule."""

from __future__ import annotations

import copy
import datetime as dt
import decimal
import pickle
import struct
from typing import Any

import pytest
from bson import decode as bson_decode
from bson import encode as bson_encode
from bson.decimal128 import Decimal128
from hypothesis import example, given
from hypothesis import strategies as st
from pymysqlreplication.constants import FIELD_TYPE

from cdc_pipeline.core.errors import SourceSettingError, ValueConversionError
from cdc_pipeline.core.images import encode_document
from cdc_pipeline.core.schema import ColumnSpec, TableSchema
from cdc_pipeline.core.values import convert_row, single_precision, time_text, to_bson_value

UTC = dt.UTC


def col(type_code: int, type_name: str = "t", **details: Any) -> ColumnSpec:
    return ColumnSpec(name="c", type_name=type_name, type_code=type_code, **details)


# --- decoder fixes --------------------------------------------------------------------------


# --- numbers --------------------------------------------------------------------------------


def _kind(value: Any) -> type:
    """The type a reader sees: a ``TextedDecimal128`` is a ``Decimal128``."""
    return Decimal128 if isinstance(value, Decimal128) else type(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (-128, -128),
        (2**31 - 1, 2**31 - 1),
        (-(2**63), -(2**63)),
        (2**63 - 1, 2**63 - 1),
        (2**63, Decimal128("9223372036854775808")),
        (2**64 - 1, Decimal128("18446744073709551615")),
    ],
)
def test_integers_stay_int_and_unsigned_bigint_above_int64_is_decimal128(
    value: int, expected: Any
) -> None:
    result = to_bson_value(value, col(FIELD_TYPE.LONGLONG, "bigint unsigned", unsigned=True))
    assert result == expected and _kind(result) is _kind(expected)
    assert str(result) == str(expected)


def test_an_integer_column_refuses_a_non_integer() -> None:
    with pytest.raises(ValueConversionError, match="column c"):
        to_bson_value(True, col(FIELD_TYPE.TINY))
    with pytest.raises(ValueConversionError):
        to_bson_value("5", col(FIELD_TYPE.LONG))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("-1234.56", Decimal128("-1234.56")),
        ("1.500000000000000000000000000000", Decimal128("1.500000000000000000000000000000")),
        # 35 digits: exact with one trailing zero fewer (still the same value).
        ("12345.500000000000000000000000000000", Decimal128("12345.50000000000000000000000000000")),
        ("0E-30", Decimal128("0E-30")),
        ("-0.000000000000000000000000000001", Decimal128("-1E-30")),
        # Too many significant digits for Decimal128: the exact decimal string.
        (
            "12345678901234567890.123456789012345678901234567890",
            "12345678901234567890.123456789012345678901234567890",
        ),
        ("-99999999999999999999999999999999999", "-99999999999999999999999999999999999"),
    ],
)
def test_decimal_is_exact(text: str, expected: Any) -> None:
    result = to_bson_value(decimal.Decimal(text), col(FIELD_TYPE.NEWDECIMAL, "decimal(65,30)"))
    assert result == expected and _kind(result) is _kind(expected)
    assert str(result) == str(expected)
    number = result.to_decimal() if isinstance(result, Decimal128) else decimal.Decimal(result)
    assert number == decimal.Decimal(text)


def _widened(value: float) -> float:
    """What the library returns for a FLOAT column: the float32 widened to a double."""
    return float(struct.unpack("<f", struct.pack("<f", value))[0])


@pytest.mark.parametrize(
    ("stored", "expected"),
    [(1.1, 1.1), (0.1, 0.1), (-3.40282e38, -3.40282e38), (16777216.0, 16777216.0), (0.0, 0.0)],
)
def test_float_gives_the_shortest_decimal_of_the_float32(stored: float, expected: float) -> None:
    assert _widened(1.1) == 1.100000023841858
    assert to_bson_value(_widened(stored), col(FIELD_TYPE.FLOAT, "float")) == expected


@given(st.floats(width=32, allow_nan=False, allow_infinity=False))
def test_float_rounding_never_changes_the_float32(value: float) -> None:
    shortest = single_precision(value)
    assert _widened(shortest) == value
    assert len(repr(shortest)) <= len(repr(value))


def test_double_is_kept() -> None:
    assert to_bson_value(0.1, col(FIELD_TYPE.DOUBLE, "double")) == 0.1
    assert to_bson_value(2.2250738585072014e-308, col(FIELD_TYPE.DOUBLE)) == 2.2250738585072014e-308


# --- strings and bytes ----------------------------------------------------------------------


def test_text_is_str_and_undecodable_text_raises() -> None:
    text_column = col(FIELD_TYPE.VARCHAR, "varchar", charset="latin1", max_length=10)
    assert to_bson_value("caf\u00e9\x81", text_column) == "caf\u00e9\x81"
    with pytest.raises(ValueConversionError, match="character set"):
        to_bson_value(b"\x81", col(FIELD_TYPE.VARCHAR, "varchar", charset="swe7"))


def test_binary_n_gets_its_trailing_zero_bytes_back() -> None:
    binary4 = col(FIELD_TYPE.STRING, "binary(4)", max_length=4)
    assert to_bson_value(b"\xab", binary4) == b"\xab\x00\x00\x00"
    assert to_bson_value(b"\x00\xab", binary4) == b"\x00\xab\x00\x00"
    assert to_bson_value(b"", binary4) == b"\x00\x00\x00\x00"
    # An empty binary value reaches us as "" (bytes.decode skips the unknown codec when empty).
    assert to_bson_value("", binary4) == b"\x00\x00\x00\x00"
    assert to_bson_value("", col(FIELD_TYPE.BLOB, "blob")) == b""


def test_varbinary_and_blob_are_bytes_as_sent() -> None:
    assert to_bson_value(b"\x00\x01", col(FIELD_TYPE.VARCHAR, "varbinary(8)", max_length=8)) == (
        b"\x00\x01"
    )
    assert to_bson_value(b"\xde\xad\x00", col(FIELD_TYPE.BLOB, "blob")) == b"\xde\xad\x00"
    with pytest.raises(ValueConversionError):
        to_bson_value("text", col(FIELD_TYPE.BLOB, "blob"))


def test_char_text_is_not_padded() -> None:
    assert to_bson_value(
        "ab", col(FIELD_TYPE.STRING, "char", charset="utf8mb4", max_length=40)
    ) == ("ab")


# --- dates and times ------------------------------------------------------------------------


def test_date_is_utc_midnight() -> None:
    result = to_bson_value(dt.date(2024, 2, 29), col(FIELD_TYPE.DATE, "date"))
    assert result == dt.datetime(2024, 2, 29, tzinfo=UTC) and result.tzinfo is not None


@pytest.mark.parametrize("type_code", [FIELD_TYPE.DATETIME2, FIELD_TYPE.TIMESTAMP2])
def test_datetime_fsp_up_to_3_is_a_utc_datetime(type_code: int) -> None:
    value = dt.datetime(2024, 2, 29, 23, 59, 59, 123000)
    assert to_bson_value(value, col(type_code, fsp=3)) == dt.datetime(
        2024, 2, 29, 23, 59, 59, 123000, tzinfo=UTC
    )
    assert to_bson_value(value.replace(microsecond=0), col(type_code, fsp=0)) == dt.datetime(
        2024, 2, 29, 23, 59, 59, tzinfo=UTC
    )
    with pytest.raises(ValueConversionError, match="milliseconds"):
        to_bson_value(value.replace(microsecond=123400), col(type_code, fsp=3))


@pytest.mark.parametrize("type_code", [FIELD_TYPE.DATETIME2, FIELD_TYPE.TIMESTAMP2])
def test_datetime_fsp_4_to_6_is_an_iso_string_with_microseconds(type_code: int) -> None:
    value = dt.datetime(2024, 2, 29, 23, 59, 59, 123456)
    assert to_bson_value(value, col(type_code, fsp=6)) == "2024-02-29T23:59:59.123456"
    assert to_bson_value(value.replace(microsecond=0), col(type_code, fsp=4)) == (
        "2024-02-29T23:59:59.000000"
    )
    assert to_bson_value(dt.datetime(1, 1, 1, 0, 0, 0, 1), col(type_code, fsp=6)) == (
        "0001-01-01T00:00:00.000001"
    )


def test_zero_timestamp_is_null_but_the_first_valid_second_is_kept() -> None:
    timestamp = col(FIELD_TYPE.TIMESTAMP2, "timestamp", fsp=0)
    assert to_bson_value(dt.datetime(1970, 1, 1), timestamp) is None
    assert to_bson_value(dt.datetime(1970, 1, 1), col(FIELD_TYPE.TIMESTAMP2, fsp=6)) is None
    assert to_bson_value(dt.datetime(1970, 1, 1, 0, 0, 1), timestamp) == dt.datetime(
        1970, 1, 1, 0, 0, 1, tzinfo=UTC
    )


@pytest.mark.parametrize(
    ("none_source", "type_code"),
    [
        ("out of date range", FIELD_TYPE.DATE),
        ("out of datetime2 range", FIELD_TYPE.DATETIME2),
        ("out of datetime range", FIELD_TYPE.DATETIME),
    ],
)
def test_zero_dates_are_null(none_source: str, type_code: int) -> None:
    assert to_bson_value(None, col(type_code), none_source) is None


@pytest.mark.parametrize(
    ("library_value", "fsp", "expected"),
    [
        (dt.timedelta(0), 0, "00:00:00"),
        (dt.timedelta(hours=838, minutes=59, seconds=59), 0, "838:59:59"),
        (-dt.timedelta(hours=838, minutes=59, seconds=59), 0, "-838:59:59"),
        (dt.timedelta(hours=1, microseconds=500000), 6, "01:00:00.500000"),
        (-dt.timedelta(seconds=5), 6, "-00:00:05.000000"),
        # The library's negative-fraction bug: -W.F arrives as -(W + 1 - F).
        (-dt.timedelta(microseconds=990000), 2, "-00:00:00.010000"),
        (-dt.timedelta(seconds=1, microseconds=900000), 2, "-00:00:01.100000"),
        (-dt.timedelta(microseconds=999999), 6, "-00:00:00.000001"),
        (dt.timedelta(days=-1, seconds=41103, microseconds=1), 6, "-12:34:56.000001"),
        (-dt.timedelta(hours=838, minutes=59, seconds=58, microseconds=1), 6, "-838:59:58.999999"),
    ],
)
def test_time_text_undoes_the_negative_fraction_bug(
    library_value: dt.timedelta, fsp: int, expected: str
) -> None:
    assert time_text(library_value, fsp) == expected


def _library_time(sign: int, seconds: int, micros: int) -> dt.timedelta:
    """Model of the library's TIME2 decoding (report §4, checked against real servers)."""
    if sign > 0 or micros == 0:
        return sign * dt.timedelta(seconds=seconds, microseconds=micros)
    return -dt.timedelta(seconds=seconds + 1, microseconds=-micros)


@given(
    st.sampled_from([1, -1]),
    st.integers(0, 838 * 3600 + 59 * 60 + 58),
    st.integers(0, 999_999),
)
def test_time_text_inverts_the_library_for_every_time6(
    sign: int, seconds: int, micros: int
) -> None:
    hours, rest = divmod(seconds, 3600)
    expected = ("-" if sign < 0 and (seconds or micros) else "") + (
        f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}.{micros:06d}"
    )
    assert time_text(_library_time(sign, seconds, micros), 6) == expected


def test_time_column_reports_out_of_range_values() -> None:
    with pytest.raises(ValueConversionError, match="outside"):
        to_bson_value(dt.timedelta(hours=839), col(FIELD_TYPE.TIME2, "time", fsp=0))
    assert to_bson_value(-dt.timedelta(microseconds=990000), col(FIELD_TYPE.TIME2, fsp=2)) == (
        "-00:00:00.010000"
    )


def test_year_0000_arrives_as_1900_and_becomes_0() -> None:
    year = col(FIELD_TYPE.YEAR, "year", unsigned=True)
    assert [to_bson_value(y, year) for y in (1900, 1901, 2155)] == [0, 1901, 2155]


# --- JSON, ENUM, SET, BIT, spatial ----------------------------------------------------------


def test_mysql_json_bytes_become_text_and_numbers_stay_exact() -> None:
    library_value = {
        b"name": b"Zo\xc3\xab \xf0\x9f\x98\x80",
        b"tags": [b"a", 1, 2.5, None, True, False],
        b"big": 2**64 - 1,
        b"dec": decimal.Decimal("1.50"),
        b"when": dt.datetime(2020, 1, 2, 3, 4, 5, 500000),
        b"$date": 1,
    }
    assert to_bson_value(library_value, col(FIELD_TYPE.JSON, "json")) == {
        "name": "Zo\u00eb \U0001f600",
        "tags": ["a", 1, 2.5, None, True, False],
        "big": Decimal128("18446744073709551615"),
        "dec": Decimal128("1.50"),
        "when": "2020-01-02 03:04:05.500000",
        "$date": 1,
    }
    assert to_bson_value(b"just text", col(FIELD_TYPE.JSON, "json")) == "just text"
    assert to_bson_value(7, col(FIELD_TYPE.JSON, "json")) == 7


@pytest.mark.parametrize("lossy", ["opaque text", dt.time(1, 2, 3), {b"k": [dt.time(0)]}])
def test_mysql_json_values_the_library_decodes_lossily_raise(lossy: Any) -> None:
    with pytest.raises(ValueConversionError, match="lossily"):
        to_bson_value(lossy, col(FIELD_TYPE.JSON, "json"))


def test_mariadb_json_is_parsed_only_when_marked() -> None:
    text = (
        '{"a": [1, 2.5, null, true, {"low": -9223372036854775809, "max": 9223372036854775807}],'
        ' "big": 18446744073709551615, "u": "\u00fc"}'
    )
    marked = col(FIELD_TYPE.BLOB, "json", charset="utf8mb4")
    value = to_bson_value(text, marked)
    assert value == {
        "a": [
            1,
            2.5,
            None,
            True,
            {"low": Decimal128("-9223372036854775809"), "max": 9223372036854775807},
        ],
        "big": Decimal128("18446744073709551615"),
        "u": "\u00fc",
    }
    assert value["a"][3] is True
    assert to_bson_value(text, col(FIELD_TYPE.BLOB, "longtext", charset="utf8mb4")) == text


def test_enum_is_its_label() -> None:
    enum = col(FIELD_TYPE.ENUM, "enum('a','b')", charset="latin1", members=("a", "b"))
    assert to_bson_value("b", enum) == "b"
    assert to_bson_value("", enum) == ""  # MySQL's invalid-value index 0


def test_set_keeps_definition_order_and_the_empty_set_is_an_empty_list() -> None:
    colours = col(
        FIELD_TYPE.SET,
        "set('red','green','blue')",
        charset="utf8mb4",
        members=("red", "green", "blue"),
    )
    assert to_bson_value({"blue", "red"}, colours) == ["red", "blue"]
    assert to_bson_value(None, colours, "empty set") == []
    assert to_bson_value(None, colours, "null") is None
    with pytest.raises(ValueConversionError, match="not in the column"):
        to_bson_value({"pink"}, colours)


def test_bit_is_an_int() -> None:
    assert to_bson_value("1000000101", col(FIELD_TYPE.BIT, "bit(10)")) == 517
    assert to_bson_value("0000000000", col(FIELD_TYPE.BIT, "bit(10)")) == 0
    # BIT(64) with the top bit set does not fit BSON's int64: Decimal128, like BIGINT UNSIGNED.
    assert to_bson_value("1" * 64, col(FIELD_TYPE.BIT, "bit(64)")) == Decimal128(str(2**64 - 1))


POINT_1_2_WKB = bytes.fromhex("0101000000000000000000F03F0000000000000040")


def test_spatial_srid_0_is_plain_wkb() -> None:
    stored = bytes.fromhex("00000000") + POINT_1_2_WKB
    assert to_bson_value(stored, col(FIELD_TYPE.GEOMETRY, "geometry")) == POINT_1_2_WKB


def test_spatial_with_an_srid_is_ewkb() -> None:
    stored = bytes.fromhex("E6100000") + POINT_1_2_WKB
    assert to_bson_value(stored, col(FIELD_TYPE.GEOMETRY, "geometry")) == bytes.fromhex(
        "0101000020E6100000000000000000F03F0000000000000040"
    )
    big_endian = bytes.fromhex("E6100000") + bytes.fromhex("0000000001") + bytes(16)
    assert to_bson_value(big_endian, col(FIELD_TYPE.GEOMETRY)) == bytes.fromhex(
        "002000000100" + "0010E6"
    ) + bytes(16)
    with pytest.raises(ValueConversionError, match="WKB"):
        to_bson_value(b"\x00\x00", col(FIELD_TYPE.GEOMETRY))


# --- None, unknown types, rows --------------------------------------------------------------


def test_nones_that_hide_data_raise() -> None:
    text = col(FIELD_TYPE.VARCHAR, "varchar", charset="utf8mb4")
    assert to_bson_value(None, text) is None
    assert to_bson_value(None, text, "null") is None
    with pytest.raises(SourceSettingError, match="binlog_row_image"):
        to_bson_value(None, text, "cols bitmap")
    with pytest.raises(SourceSettingError, match="binlog_row_value_options"):
        to_bson_value(None, col(FIELD_TYPE.JSON, "json"), "same with before values")
    with pytest.raises(ValueConversionError, match="unknown reason"):
        to_bson_value(None, text, "something new")
    with pytest.raises(ValueConversionError):
        to_bson_value(None, text, "empty set")


@pytest.mark.parametrize("type_code", [FIELD_TYPE.TIME, FIELD_TYPE.DECIMAL, 242, 20])
def test_an_unsupported_type_code_raises(type_code: int) -> None:
    with pytest.raises(ValueConversionError, match=f"type code {type_code}"):
        to_bson_value(1, col(type_code, "unknown"))


def _schema() -> TableSchema:
    return TableSchema(
        schema="shop",
        table="items",
        columns=(
            ColumnSpec("id", "int", FIELD_TYPE.LONG),
            ColumnSpec("code", "binary(2)", FIELD_TYPE.STRING, max_length=2),
            ColumnSpec(
                "tags", "set('a','b')", FIELD_TYPE.SET, charset="utf8mb4", members=("a", "b")
            ),
        ),
        primary_key=("id",),
    )


def test_convert_row_follows_column_order_and_none_sources() -> None:
    row = convert_row({"tags": None, "code": b"x", "id": 7}, {"tags": "empty set"}, _schema())
    assert row == {"id": 7, "code": b"x\x00", "tags": []}
    assert list(row) == ["id", "code", "tags"]
    assert convert_row({"id": 1, "code": None, "tags": None}, None, _schema())["tags"] is None


def test_convert_row_refuses_a_row_that_does_not_match_its_schema() -> None:
    with pytest.raises(ValueConversionError, match="table map"):
        convert_row({"id": 1, "code": None}, {}, _schema())


# --- WAL text -------------------------------------------------------------------------------


# --- the WAL text: the fast encoder against the library's own ----------------------------------


# --- the load path's shortcuts against the full decode ------------------------------------------


_FINITE_DECIMALS = st.one_of(
    st.decimals(allow_nan=False, allow_infinity=False, places=None),
    st.integers(0, 30).flatmap(
        lambda places: st.decimals(allow_nan=False, allow_infinity=False, places=places)
    ),
    st.builds(
        lambda sign, digits, exponent: decimal.Decimal((sign, digits, exponent)),
        st.integers(0, 1),
        st.lists(st.integers(0, 9), min_size=1, max_size=40).map(tuple),
        st.integers(-6200, 6200),
    ),
)


@given(_FINITE_DECIMALS)
@example(decimal.Decimal("1E+6120"))  # Decimal128 clamps: it prints 1.000000000E+6120
@example(decimal.Decimal("-0E+6200"))
@example(decimal.Decimal("1E-6177"))
@example(decimal.Decimal("123456789012345678901234567890123.40"))  # 35 digits, rounded
@example(decimal.Decimal("-1234567890123456789012345678901.234"))  # 34 digits, all kept
def test_exact_decimal_text_is_what_decimal128_prints(value: decimal.Decimal) -> None:
    from bson import json_util
    from bson.json_util import CANONICAL_JSON_OPTIONS

    from cdc_pipeline.core.values import exact_decimal

    try:
        plain = Decimal128(value)
    except decimal.Inexact:
        assert exact_decimal(value) == format(value, "f")
        return
    converted = exact_decimal(value)
    assert isinstance(converted, Decimal128)
    assert converted == plain
    assert str(converted) == str(plain)
    assert plain == converted
    assert converted != Decimal128("-1E+6000")  # __ne__ goes through bid too
    assert converted.bid == plain.bid and converted.to_decimal() == plain.to_decimal()
    assert bson_encode({"v": converted}) == bson_encode({"v": plain})
    assert bson_decode(bson_encode({"v": converted}))["v"] == plain
    assert pickle.loads(pickle.dumps(converted)) == plain
    assert copy.deepcopy(converted) == plain
    expected = json_util.dumps({"v": plain}, json_options=CANONICAL_JSON_OPTIONS)
    assert encode_document({"v": converted}) == expected


# --- the compiled row converter against the per-value one ---------------------------------------

_COLUMNS = [
    col(FIELD_TYPE.LONG, "int"),
    col(FIELD_TYPE.LONGLONG, "bigint unsigned", unsigned=True),
    col(FIELD_TYPE.DOUBLE, "double"),
    col(FIELD_TYPE.FLOAT, "float"),
    col(FIELD_TYPE.VARCHAR, "varchar", charset="utf8mb4"),
    col(FIELD_TYPE.BLOB, "longtext", charset="utf8mb4"),
    col(FIELD_TYPE.BLOB, "json", charset="utf8mb4"),
    col(FIELD_TYPE.VARCHAR, "varbinary"),
    col(FIELD_TYPE.STRING, "binary", max_length=3),
    col(FIELD_TYPE.ENUM, "enum('a','b')", charset="utf8mb4"),
    col(FIELD_TYPE.YEAR, "year"),
    col(FIELD_TYPE.NEWDECIMAL, "decimal"),
]
_EDGE_VALUES = [
    None,
    True,
    0,
    -(2**63),
    2**63 - 1,
    2**63,
    -(2**63) - 1,
    2**64 - 1,
    1900,
    1.1,
    1.100000023841858,  # FLOAT 1.1 as the library widens it: converted, never kept
    float("inf"),
    "",
    "Zoë",
    '{"a": 1}',
    "[1, 2]",
    b"",
    b"x",
    decimal.Decimal("1.10"),
]


def _outcome(call: Any) -> tuple[str, Any]:
    try:
        value = call()
    except (ValueConversionError, SourceSettingError, ValueError, TypeError) as error:
        return "raised", (type(error), str(error))
    return "value", (_kind(value), encode_document({"v": value}))


def test_the_compiled_row_converter_equals_the_per_value_conversion() -> None:
    """A column kept as is (int64, double, character text) must give exactly what its
    converter gives, and refuse exactly what it refuses (a bool, a str for an int, ...): every
    column type against every edge value and None source."""
    from cdc_pipeline.core.values import row_converter

    for column in _COLUMNS:
        convert = row_converter(TableSchema("s", "t", (column,)))
        for value in _EDGE_VALUES:
            for none_source in (None, "null", "empty set"):
                sources = {column.name: none_source} if none_source else None
                compiled = _outcome(lambda: convert({column.name: value}, sources)["c"])  # noqa: B023
                single = _outcome(lambda: to_bson_value(value, column, none_source))  # noqa: B023
                assert compiled == single, (column.type_name, value, none_source)


def _walked(value: Any) -> Any:
    """The reference: every integer of parsed JSON through big_integer."""
    from cdc_pipeline.core.values import big_integer

    if isinstance(value, dict):
        return {key: _walked(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_walked(item) for item in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return big_integer(value)
    return value


_JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
)


@given(
    st.recursive(
        _JSON_SCALARS,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner),
        max_leaves=12,
    )
)
@example(["9223372036854775807", 9223372036854775807, -9223372036854775808])
@example([9223372036854775808, "a"])
@example({"1234567890123456789": 1})
def test_mariadb_json_text_integers_beyond_int64_become_decimals(document: Any) -> None:
    """MariaDB JSON text parses to what json.loads plus a walk giving every integer to
    big_integer gives (the text is parsed without a per-integer call when no 19-digit run
    can hold an integer beyond int64)."""
    import json

    marked = col(FIELD_TYPE.BLOB, "json", charset="utf8mb4")
    text = json.dumps(document, ensure_ascii=False)
    assert to_bson_value(text, marked) == _walked(json.loads(text))


@given(st.datetimes(), st.sampled_from(["T", " "]), st.booleans())
@example(dt.datetime(999, 12, 31, 23, 59, 59), "T", False)  # a three-digit year, no fraction
def test_iso_micro_is_fixed_width_with_microseconds(
    value: dt.datetime, separator: str, aware: bool
) -> None:
    """DATETIME(4-6) and JSON datetimes as text: the fields written out one by one, as the
    CONTRACT's ``YYYY-MM-DDTHH:MM:SS.ffffff`` reads, whatever the year or fraction."""
    from cdc_pipeline.core.values import _iso_micro

    expected = (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d}{separator}"
        f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}.{value.microsecond:06d}"
    )
    moment = value.replace(tzinfo=dt.UTC) if aware else value
    assert _iso_micro(moment, separator) == expected
