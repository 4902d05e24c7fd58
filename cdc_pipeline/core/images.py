"""Row images in the WAL: converted documents as BSON (WAL format 2, ``encode_image``) or as
canonical Extended JSON text (format 1, and the text forms kept elsewhere, ``encode_document``),
and ``TextedDecimal128``, the DECIMAL value conversion makes so that writing it is cheap.

``values`` converts binlog values to BSON-ready ones; this module writes those documents into
the WAL's ``pk``/``before``/``after`` columns and reads them back. ``decode_document`` and
``document_keys`` read both forms: ``bytes`` is an image of format 2, ``str`` one of format 1.

Invariants:
    * ``decode_document(encode_image(d)) == decode_document(encode_document(d)) == d`` for
      every document ``values`` builds: key order, int32 vs int64, tz-aware datetimes,
      ``Decimal128`` and binary are kept exactly (property-tested);
    * a BSON image is the BSON of ``d`` from pymongo's C codec, keys in ``d``'s order (unlike
      ``bson.encode(d)``, which moves ``_id`` first: a source column may be called ``_id``);
      a document BSON
      cannot hold (a key with a NUL byte, a lone surrogate) is stored as its format-1 text
      behind ``TEXT_IMAGE_PREFIX``, four zero bytes no BSON document starts with (its length);
    * in the text form, object keys starting with ``$`` or ``~`` get a ``~`` prefix (so a JSON
      value like ``{"$date": 1}`` is not read back as a BSON date); decoding removes it.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import bson
from bson import json_util
from bson.codec_options import CodecOptions, TypeDecoder, TypeRegistry
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.json_util import CANONICAL_JSON_OPTIONS
from bson.raw_bson import RawBSONDocument

_BID = struct.Struct("<QQ")


class TextedDecimal128(Decimal128):
    """A ``Decimal128`` made from a ``Decimal`` it holds digit for digit, keeping that
    ``Decimal``; its 128 bits (``bid``) and its text (``text``, ``str``) are computed only when
    asked for.

    Capture builds one per DECIMAL value and needs only the bits, for the row image's BSON;
    ``Decimal128(value)`` and ``str(Decimal128)`` each take the long way through the digits.
    Everywhere else it behaves as the ``Decimal128`` of the same value: equality, ``str``,
    ``to_decimal``, BSON encoding and pickling (property-tested against ``Decimal128``).
    Only ``exact_decimal`` makes these, and only for values that need no rounding.
    """

    __slots__ = ("_value",)
    _value: decimal.Decimal

    def __init__(self, value: decimal.Decimal) -> None:  # the bits are left to ``bid``
        self._value = value

    @property
    def text(self) -> str:
        return str(self._value)

    @property
    def bid(self) -> bytes:
        """The IEEE 754-2008 BID bits, computed from the value (``Decimal128(value).bid``
        exactly, property-tested; ``exact_decimal`` guarantees at most 34 digits and an
        exponent in range, so the coefficient is below 2**113 and takes the plain form)."""
        value = self._value
        sign, _digits, exponent = value.as_tuple()
        # The coefficient as an integer: exact, the context holds far more than 34 digits.
        coefficient = int(_WIDE.scaleb(value.copy_abs(), -int(exponent)))
        high = (sign << 63) | ((int(exponent) + 6176) << 49) | (coefficient >> 64)
        return _BID.pack(coefficient & 0xFFFF_FFFF_FFFF_FFFF, high)

    def to_decimal(self) -> decimal.Decimal:
        return self._value

    def __str__(self) -> str:
        return str(self._value)

    def __reduce__(self) -> tuple[Any, ...]:
        return (TextedDecimal128, (self._value,))


_WIDE = decimal.Context(prec=100, Emax=10_000, Emin=-10_000)


_DECODE_OPTIONS = CANONICAL_JSON_OPTIONS.with_options(tz_aware=True, tzinfo=dt.UTC)


def _escape_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            ("~" + key if key[:1] in ("$", "~") else key): _escape_keys(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_escape_keys(item) for item in value]
    return value


def _unescape_pairs(pairs: list[tuple[str, Any]]) -> Any:
    document = json_util.object_pairs_hook(pairs, _DECODE_OPTIONS)
    if isinstance(document, dict):
        return {(key[1:] if key[:1] == "~" else key): item for key, item in document.items()}
    return document


_CANONICAL_ENCODERS: dict[type, Callable[[Any, Any], Any]] = {
    int: json_util._encode_int,
    float: json_util._encode_float,
    Decimal128: json_util._encode_decimal128,
    TextedDecimal128: lambda value, _options: {"$numberDecimal": value.text},
    dt.datetime: json_util._encode_datetime,
    bytes: json_util._encode_bytes,
    Int64: json_util._encode_int64,
}
"""The library's own canonical encoders for the leaf types conversion produces, by exact type
(``_canonical_json`` skips ``json_util``'s generic dispatch, the profile's top capture cost)."""


def _canonical_json(value: Any) -> Any:
    """``json_util._json_convert(_escape_keys(value), CANONICAL_JSON_OPTIONS)``, faster: equal
    output for every value (property-tested against it); other types go to ``json_util``."""
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return value
    if kind is dict:
        return {
            ("~" + key if key[:1] in ("$", "~") else key): _canonical_json(item)
            for key, item in value.items()
        }
    if kind is list:
        return [_canonical_json(item) for item in value]
    encoder = _CANONICAL_ENCODERS.get(kind)
    if encoder is not None:
        return encoder(value, CANONICAL_JSON_OPTIONS)
    return json_util._json_convert(_escape_keys(value), CANONICAL_JSON_OPTIONS)


def encode_document(document: Mapping[str, Any] | None) -> str | None:
    """Canonical Extended JSON text of a converted document (None stays None).

    Keeps key order, int32 vs int64, tz-aware datetimes, ``Decimal128`` and binary exactly; the
    text is ``json_util.dumps`` of the key-escaped document in canonical mode, character for
    character.
    """
    if document is None:
        return None
    return json.dumps(_canonical_json(dict(document)))


def _unescape_pairs_decimal_text(pairs: list[tuple[str, Any]]) -> Any:
    if len(pairs) == 1 and pairs[0][0] == "$numberDecimal" and type(pairs[0][1]) is str:
        return pairs[0][1]  # the encoder wrote str(Decimal128): already the exact string
    return _unescape_pairs(pairs)


def decode_document(
    text: str | bytes | None, *, decimals_as_strings: bool = False
) -> dict[str, Any] | None:
    """The exact inverse of ``encode_document`` and of ``encode_image`` (``bytes``): datetimes
    come back tz-aware UTC.

    ``decimals_as_strings`` gives every ``Decimal128`` as its exact string instead, the form
    stored on servers without Decimal128 (``CDC_MONGO_COMPAT=nx-27017``): the same result as
    converting the decoded document afterwards (property-tested), without building the
    ``Decimal128`` values first.
    """
    if text is None:
        return None
    if isinstance(text, bytes):
        return decode_image(text, decimals_as_strings=decimals_as_strings)
    hook = _unescape_pairs_decimal_text if decimals_as_strings else _unescape_pairs
    document = json.loads(text, object_pairs_hook=hook)
    if not isinstance(document, dict):
        raise ValueError("a WAL document must be a JSON object")
    return document


def document_keys(text: str | bytes | None) -> list[str] | None:
    """The top-level keys (column names) of a WAL document, in order, without decoding its
    values (None stays None); ValueError if the text is not a JSON object."""
    if text is None:
        return None
    if isinstance(text, bytes):
        if text[:4] == TEXT_IMAGE_PREFIX:
            return document_keys(text[4:].decode("utf-8"))
        return _bson_keys(text) or list(_raw_image(text).keys())
    document = json.loads(text)
    if not isinstance(document, dict):
        raise ValueError("a WAL document must be a JSON object")
    return [key[1:] if key[:1] == "~" else key for key in document]


FIXED_VALUE_SIZES = {0x01: 8, 0x08: 1, 0x09: 8, 0x0A: 0, 0x10: 4, 0x12: 8, 0x13: 16}
"""Bytes of each fixed-size BSON value ``values`` makes (double, bool, date, null, int32,
int64, decimal), by element type; any other type is left to the library."""
_VALUE_SIZES = FIXED_VALUE_SIZES
_INT32 = struct.Struct("<i").unpack_from


def _bson_keys(image: bytes) -> list[str] | None:
    """The top-level keys of a BSON document, read by skipping over each value instead of
    decoding it (the C decoder builds every value, ``Decimal128`` and ``datetime`` included,
    which made this check the largest part of validating a segment). None when the bytes hold
    a type the walk does not know or do not add up: the caller then asks the library, which
    also gives the error."""
    try:
        if _INT32(image, 0)[0] != len(image) or image[-1] != 0:
            return None
        keys = []
        end = len(image) - 1
        position = 4
        while position < end:
            kind = image[position]
            stop = image.index(b"\x00", position + 1)
            keys.append(image[position + 1 : stop].decode())
            position = stop + 1
            size = _VALUE_SIZES.get(kind)
            if size is None:
                if kind in (0x03, 0x04):  # a document or an array: its length includes itself
                    size = _INT32(image, position)[0]
                elif kind == 0x02:  # text: its length, the UTF-8 bytes, a NUL
                    size = 4 + _INT32(image, position)[0]
                    if size >= 5 and image[position + size - 1] == 0:
                        image[position + 4 : position + size - 1].decode()
                    else:
                        return None
                elif kind == 0x05:  # binary: its length, the subtype, the bytes
                    size = 5 + _INT32(image, position)[0]
                else:
                    return None
                if size < 5:
                    return None
            position += size
        return keys if position == end else None  # (only a damaged image ends elsewhere)
    except (ValueError, IndexError, struct.error):  # UnicodeDecodeError is a ValueError
        return None


def has_columns(image: bytes | None, names: tuple[bytes, ...]) -> bool:
    """Whether a BSON image's top-level keys are exactly ``names`` (UTF-8), in order, and its
    values are what ``_bson_keys`` accepts (its text values valid UTF-8), compared byte for
    byte without decoding the keys: validation's check of every row image. False for text
    images and for anything else: the caller then asks ``document_keys`` what is there."""
    if type(image) is not bytes or len(image) < 5:
        return False
    try:
        if _INT32(image, 0)[0] != len(image) or image[-1] != 0:
            return False
        end = len(image) - 1
        position = 4
        for name in names:
            value = position + 2 + len(name)  # the type byte, the key, its NUL
            if value > end or image[value - 1] != 0 or image[position + 1 : value - 1] != name:
                return False
            kind = image[position]
            size = _VALUE_SIZES.get(kind)
            if size is None:
                if kind == 0x02:
                    size = 4 + _INT32(image, value)[0]
                    if size < 5 or image[value + size - 1] != 0:
                        return False
                    image[value + 4 : value + size - 1].decode()
                elif kind in (0x03, 0x04):
                    size = _INT32(image, value)[0]
                elif kind == 0x05:
                    size = 5 + _INT32(image, value)[0]
                else:
                    return False
                if size < 5:
                    return False
            position = value + size
        return position == end
    except (ValueError, IndexError, struct.error):  # UnicodeDecodeError is a ValueError
        return False


_WRAPPER_HEAD = 6
"""Bytes before the document in ``bson.encode({"": document})``: length (4), type 3, key ``""``."""
TEXT_IMAGE_PREFIX = b"\x00\x00\x00\x00"
"""Marks a format-2 image held as format-1 text: a BSON document starts with its own length."""


def decimal128_text(value: Decimal128) -> str:
    """``str(value)`` computed straight from the BID bits: the same text (property-tested
    over arbitrary bits), without the ``Decimal`` that ``Decimal128.__str__`` builds digit by
    digit, which was a fifth of the load's CPU under ``CDC_MONGO_COMPAT=nx-27017``.

    The layout is IEEE 754-2008's BID as ``bson.decimal128`` reads it, and the text is
    ``decimal``'s scientific form (``Decimal.__str__``), which both use.
    """
    if type(value) is TextedDecimal128:
        return value.text
    return bid_text(value.bid)


def bid_text(bid: bytes) -> str:
    """``decimal128_text`` of the 16 bytes of a ``Decimal128`` (its ``bid``, as BSON holds it)."""
    low, high = _BID.unpack(bid)
    sign = "-" if high >> 63 else ""
    if (high & _NAN) == _NAN:
        return "NaN"  # any NaN, as ``Decimal128.__str__`` gives it (the drivers' spec)
    if (high & _INF) == _INF:
        return sign + "Infinity"
    if (high & _STEERED) == _STEERED:  # the form whose coefficient is always over 34 digits
        exponent = ((high >> 47) & 0x3FFF) - 6176
        digits = "0"
    else:
        exponent = ((high >> 49) & 0x3FFF) - 6176
        coefficient = ((high & 0x1_FFFF_FFFF_FFFF) << 64) | low
        digits = "0" if coefficient > _MAX_COEFFICIENT else str(coefficient)
    left = exponent + len(digits)  # the digits left of the point, in plain notation
    dot = left if exponent <= 0 and left > -6 else 1
    if dot <= 0:
        text = "0." + "0" * -dot + digits
    elif dot >= len(digits):
        text = digits + "0" * (dot - len(digits))
    else:
        text = digits[:dot] + "." + digits[dot:]
    return sign + (text if left == dot else f"{text}E{left - dot:+d}")


_NAN = 0x7C00_0000_0000_0000
_INF = 0x7800_0000_0000_0000
_STEERED = 0x6000_0000_0000_0000
_MAX_COEFFICIENT = 10**34 - 1


class _DecimalAsText(TypeDecoder):
    bson_type = Decimal128

    def transform_bson(self, value: Any) -> Any:
        return decimal128_text(value)


_IMAGE_OPTIONS: CodecOptions[dict[str, Any]] = CodecOptions(tz_aware=True, tzinfo=dt.UTC)
_IMAGE_OPTIONS_DECIMAL_TEXT: CodecOptions[dict[str, Any]] = _IMAGE_OPTIONS.with_options(
    type_registry=TypeRegistry([_DecimalAsText()])
)
_RAW_OPTIONS: CodecOptions[RawBSONDocument] = CodecOptions(
    document_class=RawBSONDocument, tz_aware=True, tzinfo=dt.UTC
)
RAW_OPTIONS = _RAW_OPTIONS
"""How raw images read back: ``RawBSONDocument``s whose datetimes are tz-aware UTC."""


def encode_image(document: Mapping[str, Any] | None) -> bytes | None:
    """A converted document as a WAL image of format 2: its BSON bytes (None stays None).

    The few documents BSON cannot hold (a key with a NUL byte, text with a lone surrogate)
    keep their format-1 text behind ``TEXT_IMAGE_PREFIX``, so nothing a source can send is
    refused here; MongoDB decides about them at load, as before.
    """
    if document is None:
        return None
    try:
        if "_id" not in document:
            return bson.encode(document)
        # Encoded as the value of a wrapper's empty key and cut out of it: the top level of
        # ``bson.encode`` moves an ``_id`` key first, a nested document keeps its key order.
        return bson.encode({"": document})[_WRAPPER_HEAD:-1]
    except (bson.errors.InvalidDocument, UnicodeEncodeError):
        text = encode_document(document)
        assert text is not None
        return TEXT_IMAGE_PREFIX + text.encode("utf-8")


def encode_images(documents: Sequence[Mapping[str, Any] | None]) -> list[bytes | None]:
    """``[encode_image(document) for document in documents]`` with one call into the BSON
    encoder. A call costs about a microsecond whatever the document's size (measured: 1.0 µs
    for a one-key dict alone, 0.13 µs per document in one call of 200), most of a small
    row's image. The documents are encoded as one array
    and cut out of it: a nested document keeps its key order, as in ``encode_image``. The same
    bytes (property-tested); if one of them cannot be BSON, each is encoded alone."""
    present = [document for document in documents if document is not None]
    if not present:
        return [None] * len(documents)
    try:
        data = bson.encode({"": present})
    except (bson.errors.InvalidDocument, UnicodeEncodeError):
        return [encode_image(document) for document in documents]
    # The wrapper's length, the array element's type byte and empty key, the array's length;
    # then per document its element: type byte, key (its index) and NUL, the document.
    position = 10
    images: list[bytes | None] = []
    for document in documents:
        if document is None:
            images.append(None)
            continue
        position = data.index(0, position + 1) + 1
        end = position + _INT32(data, position)[0]
        images.append(data[position:end])
        position = end
    return images


def raw_document(image: bytes | None) -> RawBSONDocument | None:
    """A BSON image as a ``RawBSONDocument`` (None stays None), unchecked and undecoded: pymongo
    copies its bytes into a command as they are. Only for images ``is_bson_image`` accepts."""
    return None if image is None else RawBSONDocument(image, _RAW_OPTIONS)


def is_bson_image(image: object) -> bool:
    """Whether a WAL image is BSON (format 2, not kept as text behind ``TEXT_IMAGE_PREFIX``)."""
    return type(image) is bytes and image[:4] != TEXT_IMAGE_PREFIX


def _raw_image(image: bytes) -> RawBSONDocument:
    try:
        return bson.decode(image, codec_options=_RAW_OPTIONS)
    except bson.errors.InvalidBSON as error:
        raise ValueError(f"a WAL image is not a BSON document ({error})") from None


def decode_image(
    image: bytes | None, *, decimals_as_strings: bool = False
) -> dict[str, Any] | None:
    """The document of a format-2 image (``decode_document`` for ``bytes``); ValueError if the
    bytes are not one."""
    if image is None:
        return None
    if image[:4] == TEXT_IMAGE_PREFIX:
        return decode_document(image[4:].decode("utf-8"), decimals_as_strings=decimals_as_strings)
    options = _IMAGE_OPTIONS_DECIMAL_TEXT if decimals_as_strings else _IMAGE_OPTIONS
    try:
        return bson.decode(image, codec_options=options)
    except bson.errors.InvalidBSON as error:
        raise ValueError(f"a WAL image is not a BSON document ({error})") from None
