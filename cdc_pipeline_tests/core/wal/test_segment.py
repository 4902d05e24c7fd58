"""``core.wal``: atomic segments, manifests in the footer, verification, the staging lock."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest import mock

import pandas as pd
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from cdc_pipeline.core.errors import CaptureLockedError, CorruptSegmentError, StagingError
from cdc_pipeline.core.images import encode_image
from cdc_pipeline.core.wal.segment import Manifest, read_manifest, read_rows, verify_segment
from cdc_pipeline.core.wal.staging import WalPaths, capture_lock, list_segments, partition_keys
from cdc_pipeline.core.wal.writer import SegmentWriter


def row(index: int) -> dict[str, object]:
    return {
        "event_id": f"0-1-{index}#0",
        "gtid": f"0-1-{index}",
        "row_index": 0,
        "source": "default",
        "schema": "shop",
        "table": "orders",
        "op": "insert",
        "pk": encode_image({"id": index}),
        "before": None,
        "after": encode_image({"id": index}),
        "schema_version": "vabc",
        "binlog_file": "bin.000001",
        "binlog_pos": 100 + index,
        "committed_at": datetime(2026, 1, 1, tzinfo=UTC),
        "statement": None,
    }


def manifest(sequence: int, rows: int) -> Manifest:
    return Manifest(
        source="default",
        sequence=sequence,
        flavor="mariadb",
        start_gtid="0-1-0" if sequence == 1 else "0-1-5",
        end_gtid=f"0-1-{rows}",
        start_binlog_file="bin.000001",
        start_binlog_pos=4,
        end_binlog_file="bin.000001",
        end_binlog_pos=900,
        row_count=rows,
    )


def write_segment(paths: WalPaths, sequence: int = 1, rows: int = 25) -> Path:
    writer = SegmentWriter(paths, sequence, row_group_size=10)
    writer.append([row(i) for i in range(1, rows + 1)])
    return writer.commit(manifest(sequence, rows))


def test_a_committed_segment_is_plain_parquet_with_its_manifest(tmp_path: Path) -> None:
    paths = WalPaths(tmp_path, "default")
    paths.ensure()
    path = write_segment(paths)
    assert path.name == "seg-000000000001.parquet"
    frame = pd.read_parquet(path)  # plain Parquet: pandas reads it
    assert len(frame) == 25 and list(frame["gtid"][:2]) == ["0-1-1", "0-1-2"]
    assert read_manifest(path).end_gtid == "0-1-25"
    assert verify_segment(path).row_count == 25
    assert partition_keys(paths) == ["default-000000000001"]
    assert read_rows(path)[0]["committed_at"] == datetime(2026, 1, 1, tzinfo=UTC)


def test_abort_leaves_no_trace(tmp_path: Path) -> None:
    paths = WalPaths(tmp_path, "default")
    paths.ensure()
    writer = SegmentWriter(paths, 1, row_group_size=5)
    writer.append([row(i) for i in range(1, 12)])
    writer.abort()
    assert list(paths.segments.iterdir()) == []


def test_every_flipped_byte_is_detected(tmp_path: Path) -> None:
    paths = WalPaths(tmp_path, "default")
    paths.ensure()
    path = write_segment(paths, rows=50)
    original = path.read_bytes()
    for offset in [*range(0, 8), *range(8, len(original), 29), len(original) - 1]:
        damaged = bytearray(original)
        damaged[offset] ^= 0x01
        path.write_bytes(bytes(damaged))
        with pytest.raises(CorruptSegmentError):
            verify_segment(path)
    path.write_bytes(original)
    assert verify_segment(path).row_count == 50


@pytest.mark.parametrize("damage", ["flip_byte", "truncate", "rewrite_rows", "lose_digest"])
def test_verification_refuses_a_damaged_segment(tmp_path: Path, damage: str) -> None:
    paths = WalPaths(tmp_path, "default")
    paths.ensure()
    path = write_segment(paths)
    data = bytearray(path.read_bytes())
    if damage == "flip_byte":
        data[len(data) // 3] ^= 0xFF
        path.write_bytes(bytes(data))
    elif damage == "lose_digest":
        path.with_suffix(".sha256").unlink()
    elif damage == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    else:
        # A well-formed file whose rows differ from what the manifest's checksum covers.
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        frame = table.to_pandas()
        frame.loc[3, "after"] = '{"id": {"$numberInt": "999"}}'
        import pyarrow as pa

        rewritten = pa.Table.from_pandas(frame, schema=table.schema, preserve_index=False)
        pq.write_table(rewritten, path)
        # Even with a matching byte digest, the rows no longer match the manifest.
        from cdc_pipeline.core.wal.segment import file_sha256

        path.with_suffix(".sha256").write_text(file_sha256(path))
    with pytest.raises(CorruptSegmentError) as raised:
        verify_segment(path)
    assert path.name in str(raised.value)


def test_disk_full_while_writing_is_a_clear_staging_error(tmp_path: Path) -> None:
    paths = WalPaths(tmp_path, "default")
    paths.ensure()
    writer = SegmentWriter(paths, 1, row_group_size=5)
    full = OSError(errno.ENOSPC, "No space left on device")
    with (
        mock.patch("pyarrow.parquet.ParquetWriter.write_table", side_effect=full),
        pytest.raises(StagingError) as raised,
    ):
        writer.append([row(i) for i in range(1, 8)])
    assert "disk is full" in str(raised.value) and "nothing is lost" in str(raised.value)
    assert list_segments(paths) == [] and not list(paths.segments.glob(".tmp-*"))


def test_the_staging_lock_refuses_a_second_process_and_dies_with_its_holder(tmp_path: Path) -> None:
    paths = WalPaths(tmp_path, "default")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path;"
            "from cdc_pipeline.core.wal.staging import WalPaths, capture_lock;"
            f"ctx = capture_lock(WalPaths(Path({str(tmp_path)!r}), 'default')); ctx.__enter__();"
            "print('locked', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(CaptureLockedError) as raised, capture_lock(paths):
            pass
        assert f"pid {holder.pid}" in str(raised.value)
    finally:
        os.kill(holder.pid, 9)
        holder.wait()
    with capture_lock(paths):  # the kernel released the dead holder's lock
        pass


def test_rowdigest_line_is_the_format_every_existing_segment_was_written_with() -> None:
    """Segments on disk carry checksums over this exact text: it must never change silently.
    The expected line is the format as first written (``json.dumps`` with these options)."""
    import json
    from datetime import UTC, datetime

    from cdc_pipeline.core.wal.segment import COLUMNS, digest_line

    row: dict[str, object] = {name: f'{name} ü ✓ "q"' for name in COLUMNS}
    row["row_index"] = 7
    row["before"] = None
    row["committed_at"] = datetime(2026, 11, 28, 12, 0, 0, 123456, tzinfo=UTC)
    values = [row[name] for name in COLUMNS]
    values[COLUMNS.index("committed_at")] = 1795867200123456
    expected = json.dumps(values, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
    assert digest_line(row, 1) == expected


def test_the_format_2_row_digest_is_pinned() -> None:
    """Format 2's line: the same JSON with each image's length in its place, then the images'
    bytes in column order. Pinned, like format 1's: segments on disk carry checksums over it."""
    from datetime import UTC, datetime

    from cdc_pipeline.core.wal.segment import digest_line

    row: dict[str, object] = {
        "event_id": "0-1-7#0",
        "gtid": "0-1-7",
        "row_index": 0,
        "source": "s",
        "schema": "ü",
        "table": "t",
        "op": "update",
        "pk": b"\x01",
        "before": None,
        "after": b"\x02\x03",
        "schema_version": "v1",
        "binlog_file": "b.1",
        "binlog_pos": 9,
        "committed_at": datetime(2026, 11, 28, 12, 0, 0, 123456, tzinfo=UTC),
        "statement": None,
    }
    assert (
        digest_line(row, 2)
        == (
            '["0-1-7#0","0-1-7",0,"s","ü","t","update",1,null,2,"v1","b.1",9,1795867200123456,null]'
            "\n"
        ).encode()
        + b"\x01\x02\x03"
    )


@given(st.lists(st.datetimes(timezones=st.just(UTC)), min_size=1, max_size=5), st.data())
def test_commit_times_in_digest_lines_are_each_rows_own(moments: list[datetime], data: Any) -> None:
    """The digest remembers the last commit time it converted (a transaction's rows share one);
    rows in any order, the same objects again included, get their own time's microseconds."""
    from cdc_pipeline.core.wal.segment import _commit_micros

    for _ in range(3 * len(moments)):
        moment = data.draw(st.sampled_from(moments))
        assert _commit_micros(moment) == int(moment.timestamp() * 1_000_000)


@given(
    st.lists(st.one_of(st.none(), st.integers(), st.text(), st.booleans()), max_size=20).map(tuple)
)
def test_the_digest_encoder_writes_what_json_dumps_writes(values: tuple[object, ...]) -> None:
    """The digest lines' encoder (the C encoder built once) gives json.dumps' text for every flat
    row, lone surrogates, control characters and big integers included."""
    import json

    from cdc_pipeline.core.wal.segment import _encode_flat

    assert _encode_flat(values) == json.dumps(values, separators=(",", ":"), ensure_ascii=False)


@given(
    st.lists(
        st.tuples(
            st.none() | st.integers(-(2**62), 2**62),  # microseconds, or a null
            st.none() | st.text(max_size=3),
            st.none() | st.binary(max_size=3),
        ),
        max_size=30,
    ),
    st.sampled_from(["UTC", None, "Europe/Paris"]),
)
def test_batch_rows_equals_arrows_to_pylist(
    values: list[tuple[int | None, str | None, bytes | None]], timezone: str | None
) -> None:
    """Timestamps converted once per distinct value are the values Arrow converts one by one
    (type, time zone and nulls included); every other column and the key order are unchanged."""
    import pyarrow as pa

    from cdc_pipeline.core.wal.segment import batch_rows

    span = 315_000_000_000 * 10**6  # years 6 to 9986, in microseconds from 1970
    micros = [None if m is None else m % span - 62_000_000_000 * 10**6 for m, _, _ in values]
    texts = [text for _, text, _ in values]
    blobs = [blob for _, _, blob in values]
    micros += micros[:5]  # repeated values, as a transaction's rows have
    texts += texts[:5]
    blobs += blobs[:5]
    batch = pa.RecordBatch.from_arrays(
        [
            pa.array(texts, pa.string()),
            pa.array(micros, pa.timestamp("us", tz=timezone)),
            pa.array(blobs, pa.binary()),
        ],
        names=["text", "committed_at", "blob"],
    )
    expected = batch.to_pylist()
    got = batch_rows(batch)
    assert got == expected
    assert [list(row) for row in got] == [list(row) for row in expected]
    assert [repr(row["committed_at"]) for row in got] == [
        repr(row["committed_at"]) for row in expected
    ]


def test_batch_rows_of_the_wals_own_columns_equals_arrows_to_pylist() -> None:
    """A batch of exactly the WAL's columns takes the spelled-out row builder: the same values
    under the same names, in the same order, as Arrow's own conversion (and a batch of other
    columns, above, the general one)."""
    import pyarrow as pa

    from cdc_pipeline.core.wal.segment import COLUMNS, ROW_SCHEMA, batch_rows

    rows = [row(1), row(2) | {"op": "ddl", "statement": "DROP TABLE t", "table": None}, row(3)]
    batch = pa.RecordBatch.from_pylist(rows, schema=ROW_SCHEMA)
    got = batch_rows(batch)
    assert got == batch.to_pylist() == rows
    assert [tuple(item) for item in got] == [COLUMNS] * len(rows)


_TEXTS = st.text(max_size=6) | st.sampled_from(
    ['a"b', "a\\b", "line\nbreak", "\x00", "ü\u2028", ""]
)
_IMAGES = st.none() | st.binary(max_size=8)


@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "event_id": _TEXTS,
                "gtid": _TEXTS,
                "row_index": st.integers(-(2**31), 2**31 - 1),
                "source": _TEXTS,
                "schema": _TEXTS,
                "table": st.none() | _TEXTS,
                "op": st.sampled_from(["insert", "update", "delete", "ddl"]) | _TEXTS,
                "pk": _IMAGES,
                "before": _IMAGES,
                "after": _IMAGES,
                "schema_version": st.none() | _TEXTS,
                "binlog_file": _TEXTS,
                "binlog_pos": st.integers(-(2**63), 2**63 - 1),
                "committed_at": st.sampled_from(
                    [
                        datetime(2026, 11, 28, 12, 0, 0, 123456, tzinfo=UTC),
                        datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
                        datetime(2106, 2, 7, 6, 28, 15, 1, tzinfo=UTC),
                        # the float the format goes through gives ...318, not ...319
                        datetime(2005, 4, 17, 8, 29, 2, 646319, tzinfo=UTC),
                    ]
                )
                | st.datetimes(timezones=st.just(UTC)),
                "statement": st.none() | _TEXTS,
            }
        ),
        max_size=25,
    ),
    st.integers(0, 5),
)
@example([row(1) | {"committed_at": datetime(2005, 4, 17, 8, 29, 2, 646319, tzinfo=UTC)}], 0)
@example([row(2) | {"statement": 'ALTER TABLE "t"\n', "op": "ddl"}, row(3)], 1)
def test_a_batchs_digest_input_is_its_rows_digest_lines_joined(
    rows: list[dict[str, Any]], offset: int
) -> None:
    """The checksum is computed column by column by Arrow at capture and at load; it must be
    byte for byte what the format defines row by row (``digest_line``), escapes and nulls
    included, also for a batch that starts inside its arrays (a slice)."""
    import pyarrow as pa

    from cdc_pipeline.core.wal.segment import ROW_SCHEMA, batch_digest_input, digest_line

    table = pa.Table.from_pylist(rows, schema=ROW_SCHEMA)
    batch = table.combine_chunks().to_batches()[0] if rows else ROW_SCHEMA.empty_table()
    expected = b"".join(digest_line(row, 2) for row in table.to_pylist())
    got = batch_digest_input(batch) if rows else b""
    assert bytes(got) == expected
    if len(rows) > offset:
        sliced = batch.slice(offset)
        tail = b"".join(digest_line(row, 2) for row in table.slice(offset).to_pylist())
        assert bytes(batch_digest_input(sliced)) == tail


_MOMENTS = [
    datetime(2026, 11, 28, 12, 0, 0, 123456, tzinfo=UTC),
    datetime(2026, 11, 28, 12, 0, 0, 123456, tzinfo=UTC),  # equal, another object
    datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(2026, 11, 28, 12, 0, 0, 123457),  # naive: Arrow's own reading of it
]


@given(
    st.lists(
        st.tuples(
            st.integers(0, len(_MOMENTS) - 1) | st.none(),
            st.sampled_from(["all", "without table", "without committed_at"]),
            st.binary(max_size=4) | st.none(),
        ),
        max_size=30,
    )
)
def test_the_writers_table_is_arrows_table_of_the_same_rows(
    draws: list[tuple[int | None, str, bytes | None]],
) -> None:
    """The writer builds its Arrow table from rows as tuples, column by column, converting
    each distinct commit time object once; it must equal ``Table.from_pylist`` of the same
    rows as dicts: shared and equal datetimes, a missing time, missing keys (null), no rows."""
    import pyarrow as pa

    from cdc_pipeline.core.wal.segment import ROW_SCHEMA
    from cdc_pipeline.core.wal.writer import row_values, values_table

    rows = []
    for index, (moment, shape, image) in enumerate(draws):
        values = dict(row(index)) | {
            "committed_at": None if moment is None else _MOMENTS[moment],
            "after": image,
        }
        if shape == "without table":
            del values["table"]
        elif shape == "without committed_at":
            del values["committed_at"]
        rows.append(values)
    expected = pa.Table.from_pylist(rows, schema=ROW_SCHEMA)
    got = values_table([row_values(values) for values in rows], ROW_SCHEMA)
    assert got.schema == expected.schema
    assert got.to_pylist() == expected.to_pylist()
    assert got.equals(expected)
