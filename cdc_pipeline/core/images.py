"""Row images in the WAL: the text form of converted documents (canonical Extended JSON), and
``TextedDecimal128``, the DECIMAL value conversion makes so that writing it costs nothing.

``values`` converts binlog values to BSON-ready ones; this module writes those documents into
the WAL's ``pk``/``before``/``after`` columns and reads them back.

Invariants:
    * ``decode_document(encode_document(d)) == d`` for every document ``values`` builds: key
      order, int32 vs int64, tz-aware datetimes, ``Decimal128`` and binary are kept exactly;
    * object keys starting with ``$`` or ``~`` get a ``~`` prefix in the text only (so a JSON
      value like ``{"$date": 1}`` is not read back as a BSON date); decoding removes it.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
from collections.abc import Callable, Mapping
from typing import Any

from bson import json_util
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.json_util import CANONICAL_JSON_OPTIONS


class TextedDecimal128(Decimal128):
    """A ``Decimal128`` made from a ``Decimal`` it holds digit for digit, keeping that
    ``Decimal`` and its text; the 128 bits are computed only when BSON or a comparison asks
    for them (``bid``).

    Capture only writes WAL text, so it never needs the bits: building them and then
    ``str(Decimal128)`` (which rebuilds a ``Decimal`` from them) cost a sixth of capture's time.
    Everywhere else it behaves as the ``Decimal128`` of the same value: equality, ``str``,
    ``to_decimal``, BSON encoding and pickling (property-tested against ``Decimal128``).
    Only ``exact_decimal`` makes these, and only for values that need no rounding.
    """

    __slots__ = ("_value", "text")
    text: str
    _value: decimal.Decimal

    def __init__(self, value: decimal.Decimal) -> None:  # the bits are left to ``bid``
        self._value = value
        self.text = str(value)

    @property
    def bid(self) -> bytes:
        return Decimal128(self._value).bid

    def to_decimal(self) -> decimal.Decimal:
        return self._value

    def __str__(self) -> str:
        return self.text

    def __reduce__(self) -> tuple[Any, ...]:
        return (TextedDecimal128, (self._value,))


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
    text: str | None, *, decimals_as_strings: bool = False
) -> dict[str, Any] | None:
    """The exact inverse of ``encode_document``: datetimes come back tz-aware UTC.

    ``decimals_as_strings`` gives every ``Decimal128`` as its exact string instead, the form
    stored on servers without Decimal128 (``CDC_MONGO_COMPAT=nx-27017``): the same result as
    converting the decoded document afterwards (property-tested), without building the
    ``Decimal128`` values first.
    """
    if text is None:
        return None
    hook = _unescape_pairs_decimal_text if decimals_as_strings else _unescape_pairs
    document = json.loads(text, object_pairs_hook=hook)
    if not isinstance(document, dict):
        raise ValueError("a WAL document must be a JSON object")
    return document


def document_keys(text: str | None) -> list[str] | None:
    """The top-level keys (column names) of a WAL document, in order, without decoding its
    values (None stays None); ValueError if the text is not a JSON object."""
    if text is None:
        return None
    document = json.loads(text)
    if not isinstance(document, dict):
        raise ValueError("a WAL document must be a JSON object")
    return [key[1:] if key[:1] == "~" else key for key in document]
