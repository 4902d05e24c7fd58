"""Fixes for what mysql-replication 1.0.17 decodes wrongly, installed before reading the stream.

Invariant: ``install_decoder_fixes`` is idempotent and changes only how text and ENUM/SET labels
are decoded (never positions, types or which events are read).
"""

from __future__ import annotations

import codecs
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pymysqlreplication.constants import CHARSET
from pymysqlreplication.row_event import TableMapEvent

if TYPE_CHECKING:
    from typing_extensions import Buffer

MYSQL_LATIN1 = "mysql_latin1"


def _mysql_latin1_table() -> str:
    characters = []
    for byte in range(256):
        try:
            characters.append(bytes([byte]).decode("cp1252"))
        except UnicodeDecodeError:
            characters.append(chr(byte))
    return "".join(characters)


_LATIN1_DECODING = _mysql_latin1_table()
_LATIN1_ENCODING = codecs.charmap_build(_LATIN1_DECODING)


def _latin1_encode(text: str, errors: str = "strict") -> tuple[bytes, int]:
    return codecs.charmap_encode(text, errors, _LATIN1_ENCODING)


def _latin1_decode(data: Buffer, errors: str = "strict") -> tuple[str, int]:
    return codecs.charmap_decode(data, errors, _LATIN1_DECODING)


def _search_codec(name: str) -> codecs.CodecInfo | None:
    if name != MYSQL_LATIN1:
        return None
    return codecs.CodecInfo(_latin1_encode, _latin1_decode, name=MYSQL_LATIN1)


class _MysqlLatin1Charset(CHARSET.Charset):  # type: ignore[misc]
    """A latin1 entry of the library's charset table that names our codec."""

    @property
    def encoding(self) -> str:
        return MYSQL_LATIN1


def _read_labels(self: Any, length: int) -> list[list[str]] | None:
    """ENUM/SET labels as sent; bytes that are not UTF-8 kept as surrogates (re-decoded later)."""
    end = self.packet.read_bytes + length
    if self.packet.read_bytes >= end:
        return None
    labels = []
    while self.packet.read_bytes < end:
        count = self.packet.read_length_coded_binary()
        raw = [self.packet.read_variable_length_string() for _ in range(count)]
        labels.append([label.decode("utf-8", "surrogateescape") for label in raw])
    return labels


def _label_in_column_charset(label: str, codec: str | None) -> str:
    raw = label.encode("utf-8", "surrogateescape")
    try:
        return raw.decode(codec or "utf-8")
    except (LookupError, UnicodeDecodeError):
        return label


def _sync_column_info_with_labels(original: Callable[[Any], None]) -> Callable[[Any], None]:
    def sync(self: Any) -> None:
        original(self)
        for column in self.columns:
            codec = column.character_set_name
            if column.enum_values:
                column.enum_values = [
                    _label_in_column_charset(v, codec) for v in column.enum_values
                ]
            if column.set_values:
                column.set_values = [_label_in_column_charset(v, codec) for v in column.set_values]

    sync.cdc_pipeline_fix = True  # type: ignore[attr-defined]
    return sync


def install_decoder_fixes() -> None:
    """Fix, before any row is decoded, what the library decodes wrongly; idempotent.

    1. latin1 text. MySQL's latin1 is Windows cp1252 plus the five bytes cp1252 leaves
       undefined (0x81, 0x8D, 0x8F, 0x90, 0x9D), which MySQL maps to U+0081, U+008D, U+008F,
       U+0090, U+009D. The library decodes latin1 with Python's strict ``cp1252`` (the
       ``encoding`` property of ``pymysqlreplication.constants.CHARSET.Charset``) and raises
       UnicodeDecodeError on those bytes. We register the codec ``mysql_latin1`` and replace the
       latin1 entries of the library's charset table (data, not code) with entries naming it.
    2. ENUM/SET labels. The table map sends labels in the column's character set, but the
       library decodes them as UTF-8 and turns any label that is not valid UTF-8 into ``""``
       (a latin1 ``'é'`` member reads as the empty string). No data switch exists, so two
       methods of ``TableMapEvent`` are replaced: ``_read_type_values`` keeps the raw bytes and
       ``_sync_column_info`` decodes them with the column's codec.

    Only table maps parsed after the call are affected: call it before reading the stream.
    """
    if not getattr(install_decoder_fixes, "installed", False):
        codecs.register(_search_codec)
        install_decoder_fixes.installed = True  # type: ignore[attr-defined]
    for by_id in CHARSET.charsets._by_id.values():
        for charset_id, charset in list(by_id.items()):
            if charset.name == "latin1" and not isinstance(charset, _MysqlLatin1Charset):
                fixed = _MysqlLatin1Charset(
                    charset.id, charset.name, charset.collation, charset.is_default, charset.dbms
                )
                by_id[charset_id] = fixed
                if fixed.is_default:
                    CHARSET.charsets._by_name[fixed.dbms][fixed.name] = fixed
    TableMapEvent._read_type_values = _read_labels
    if not getattr(TableMapEvent._sync_column_info, "cdc_pipeline_fix", False):
        original = TableMapEvent._sync_column_info
        TableMapEvent._sync_column_info = _sync_column_info_with_labels(original)
