"""WAL formats 1 (text images) and 2 (BSON images): a segment of either verifies, reads and
shows the same; a segment of a newer format, or whose images are not its format's, is refused.
The load of either format is compared in ``contract/test_mongo_sink_contract.py``."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from bson.decimal128 import Decimal128

from cdc_pipeline.cli import main
from cdc_pipeline.core.errors import CorruptSegmentError, WalFormatError
from cdc_pipeline.core.images import encode_document, encode_image
from cdc_pipeline.core.load.loader import _validated
from cdc_pipeline.core.wal.segment import Manifest, read_manifest, verify_segment
from cdc_pipeline.core.wal.staging import WalPaths, is_quarantined, quarantine
from cdc_pipeline.core.wal.writer import SegmentWriter
from cdc_pipeline.wal import read_changes

UTC = dt.UTC
WHEN = dt.datetime(2026, 1, 1, tzinfo=UTC)


def _document(index: int) -> dict[str, Any]:
    return {
        "id": index,
        "big": 2**40 + index,
        "price": Decimal128(f"{index}.10"),
        "at": dt.datetime(2024, 2, 29, 12, 0, 0, 123000, tzinfo=UTC),
        "micro": "2024-02-29T12:00:00.123456",
        "raw": bytes([0, index, 255]),
        "doc": {"$date": index, "list": [1.5, None, True, "Zoë"]},
    }


def _row(index: int, encode: Any) -> dict[str, Any]:
    before = _document(index) if index % 3 == 0 else None
    return {
        "event_id": f"0-1-{index}#0",
        "gtid": f"0-1-{index}",
        "row_index": 0,
        "source": "default",
        "schema": "shop",
        "table": "orders",
        "op": "update" if before else "insert",
        "pk": encode({"id": index}),
        "before": encode(before),
        "after": encode(_document(index) | {"note": f"n{index}"}),
        "schema_version": "vabc",
        "binlog_file": "bin.000001",
        "binlog_pos": 100 + index,
        "committed_at": WHEN,
        "statement": None,
    }


def _manifest(rows: int) -> Manifest:
    return Manifest(
        source="default",
        sequence=1,
        flavor="mariadb",
        start_gtid="0-1-0",
        end_gtid=f"0-1-{rows}",
        start_binlog_file="bin.000001",
        start_binlog_pos=4,
        end_binlog_file="bin.000001",
        end_binlog_pos=900,
        row_count=rows,
        transaction_count=rows,
    )


def _write(root: Path, version: int, rows: int = 12, claim: int | None = None) -> Path:
    """A segment of WAL format ``version``; ``claim`` makes its manifest say another."""
    paths = WalPaths(root, "default")
    paths.ensure()
    encode = encode_document if version == 1 else encode_image
    writer = SegmentWriter(paths, 1, row_group_size=5, format_version=version)
    writer.append([_row(index, encode) for index in range(1, rows + 1)])
    if claim is not None:
        writer.format_version = claim
    return writer.commit(_manifest(rows))


def test_both_formats_verify_and_read_to_the_same_changes(tmp_path: Path) -> None:
    old = _write(tmp_path / "v1", 1)
    new = _write(tmp_path / "v2", 2)
    assert (read_manifest(old).format_version, read_manifest(new).format_version) == (1, 2)
    assert verify_segment(old).row_count == verify_segment(new).row_count == 12
    assert pd.read_parquet(new)["after"].map(type).eq(bytes).all()  # BSON in the file

    for images in ("dict", "json"):
        previous, current = read_changes(old, images=images), read_changes(new, images=images)
        pd.testing.assert_frame_equal(previous, current)
    changes = read_changes(new)
    assert list(changes.columns)[:8] == [
        "event_id",
        "gtid",
        "row_index",
        "source",
        "schema",
        "table",
        "op",
        "pk",
    ]
    after = changes["after"][0]
    assert after["price"] == Decimal128("1.10") and after["raw"] == b"\x00\x01\xff"
    assert after["at"].tzinfo is not None and list(after)[-1] == "note"
    assert changes["before"][0] is None and changes["before"][2]["id"] == 3
    as_json = json.loads(read_changes(new, images="json")["after"][0])
    assert as_json["price"] == {"$numberDecimal": "1.10"} and as_json["doc"]["$date"] == 1
    assert read_changes(new, images="raw")["after"][0] == encode_image(
        _document(1) | {"note": "n1"}
    )


def test_a_segment_of_a_newer_format_is_refused_and_not_quarantined(tmp_path: Path) -> None:
    path = _write(tmp_path, 2, claim=3)
    paths = WalPaths(tmp_path, "default")
    with pytest.raises(WalFormatError, match="WAL format 3, written by a newer cdc_pipeline"):
        _validated(paths, path, None)
    assert path.exists() and not is_quarantined(paths, 1)
    with pytest.raises(WalFormatError):
        read_changes(path, verify=False)


@pytest.mark.parametrize(("version", "claim"), [(2, 1), (1, 2)], ids=["bson-as-1", "text-as-2"])
def test_images_not_of_the_declared_format_are_refused(
    tmp_path: Path, version: int, claim: int
) -> None:
    path = _write(tmp_path, version, claim=claim)
    with pytest.raises(CorruptSegmentError, match=f"not of WAL format {claim}"):
        verify_segment(path)


def test_the_writer_refuses_images_of_another_format(tmp_path: Path) -> None:
    paths = WalPaths(tmp_path, "default")
    paths.ensure()
    with pytest.raises(TypeError, match="holds pk as bytes, not str"):
        SegmentWriter(paths, 1).append([_row(1, encode_document)])
    with pytest.raises(TypeError, match="holds pk as str, not bytes"):
        SegmentWriter(paths, 2, format_version=1).append([_row(1, encode_image)])


def _cli(monkeypatch: pytest.MonkeyPatch, root: Path, *argv: str) -> None:
    monkeypatch.setenv("CDC_STAGING_DIR", str(root))
    monkeypatch.setenv("CDC_SOURCE_NAME", "default")
    monkeypatch.delenv("CDC_SOURCES_FILE", raising=False)
    assert main(list(argv)) == 0


@pytest.mark.parametrize("version", [1, 2])
def test_wal_show_prints_the_manifest_and_every_change(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    version: int,
) -> None:
    _write(tmp_path, version)
    _cli(monkeypatch, tmp_path, "wal", "show", "default-000000000001")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        f"partition default-000000000001: stream segment, WAL format {version}, mariadb"
    )
    changes = [line for line in lines if line.startswith("0-1-")]
    assert len(changes) == 12
    assert changes[0].startswith('0-1-1 #0  insert   shop.orders  key={"id":1}  after={"id":1,')
    assert '"price":{"$numberDecimal":"1.10"}' in changes[0]
    assert "before={" in changes[2]

    _cli(monkeypatch, tmp_path, "wal", "show", "1", "--json", "--limit", "2")
    shown = json.loads(capsys.readouterr().out)
    assert shown["format_version"] == version and shown["rows"] == 12
    assert [change["gtid"] for change in shown["changes"]] == ["0-1-1", "0-1-2"]
    assert shown["changes"][0]["after"]["raw"] == {"$binary": {"base64": "AAH/", "subType": "00"}}


def test_wal_show_refuses_what_it_cannot_show_in_one_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, 2)
    monkeypatch.setenv("CDC_STAGING_DIR", str(tmp_path))
    monkeypatch.setenv("CDC_SOURCE_NAME", "default")
    assert main(["wal", "show", "default-000000000009"]) == 2
    assert "has no segment in" in capsys.readouterr().err
    assert main(["wal", "show", "nine"]) == 2
    assert "'nine' is not a partition key" in capsys.readouterr().err

    original = path.read_bytes()
    data = bytearray(original)
    data[100] ^= 0xFF  # in the row data: the footer still reads, the digest does not match
    path.write_bytes(bytes(data))
    assert main(["wal", "show", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is damaged" in err

    path.write_bytes(original)
    quarantine(WalPaths(tmp_path, "default"), path, "set aside in a test")
    assert main(["wal", "show", "1", "--limit", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "(quarantined: not verified)" in lines[0] and lines[-1].startswith("0-1-1 #0")
