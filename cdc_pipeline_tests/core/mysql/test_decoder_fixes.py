"""Unit tests of core/mysql/decoder_fixes.py: text and ENUM/SET labels decoded as MySQL does."""

from __future__ import annotations

from types import SimpleNamespace

from pymysqlreplication.constants import CHARSET
from pymysqlreplication.row_event import TableMapEvent, find_charset

from cdc_pipeline.core.mysql.decoder_fixes import (
    _sync_column_info_with_labels,
    install_decoder_fixes,
)


def test_latin1_fix_decodes_every_byte_as_mysql_does() -> None:
    install_decoder_fixes()
    install_decoder_fixes()  # idempotent
    codec = find_charset("8", dbms="mysql")[0]
    assert codec == find_charset("8", dbms="mariadb")[0] == "mysql_latin1"
    text = bytes(range(256)).decode(codec)
    assert text[0x80] == "\u20ac" and text[0xE9] == "\u00e9" and text[0x9F] == "\u0178"
    for undefined in (0x81, 0x8D, 0x8F, 0x90, 0x9D):
        assert text[undefined] == chr(undefined)
    assert text.encode(codec) == bytes(range(256))
    assert CHARSET.charset_by_name("latin1").encoding == "mysql_latin1"
    assert CHARSET.charset_by_name("utf8mb4").encoding == "utf8"


def test_latin1_fix_keeps_every_latin1_collation_of_the_table() -> None:
    install_decoder_fixes()
    for dbms in ("mysql", "mariadb"):
        for collation_id in (5, 8, 15, 31, 47, 48, 49, 94):
            codec, collation, name = find_charset(str(collation_id), dbms=dbms)
            assert (codec, name) == ("mysql_latin1", "latin1")
            assert collation.startswith("latin1_")


def test_enum_labels_are_decoded_in_the_column_charset() -> None:
    install_decoder_fixes()
    # One ENUM with labels 'a' and latin1 'é' (0xE9), as the table map sends them.
    payload = bytes([2, 1]) + b"a" + bytes([1, 0xE9])
    event = SimpleNamespace(packet=_FakePacket(payload))
    labels = TableMapEvent._read_type_values(event, len(payload))
    assert labels == [["a", "\udce9"]]  # raw bytes kept, not "" as the library makes them

    enum = SimpleNamespace(enum_values=["", "a", "\udce9"], set_values=None)
    enum.character_set_name = "mysql_latin1"
    utf8_set = SimpleNamespace(enum_values=None, set_values=["\u00e9"], character_set_name="utf8")
    table_map = SimpleNamespace(columns=[enum, utf8_set])
    sync = _sync_column_info_with_labels(lambda self: None)
    sync(table_map)
    assert enum.enum_values == ["", "a", "\u00e9"]
    assert utf8_set.set_values == ["\u00e9"]


class _FakePacket:
    """Just enough of BinLogPacketWrapper for the table map's ENUM/SET label list."""

    def __init__(self, data: bytes):
        self.data, self.read_bytes = data, 0

    def _take(self, size: int) -> bytes:
        chunk = self.data[self.read_bytes : self.read_bytes + size]
        self.read_bytes += size
        return chunk

    def read_length_coded_binary(self) -> int:
        return self._take(1)[0]

    def read_variable_length_string(self) -> bytes:
        return self._take(self._take(1)[0])
