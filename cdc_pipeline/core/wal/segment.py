"""The WAL's segment format: one Parquet file per captured slice of the binlog, with its manifest.

Where the files live is ``wal.staging``; how one is written, ``wal.writer``.

Invariants:
    * the manifest lives in the Parquet footer, so it commits atomically with the rows;
    * the manifest's checksum covers every row (``digest_line``), and the ``.sha256`` file
      beside the segment covers every byte of it, so any change to the content or the file is
      detected; ``read_verified`` checks both in one read of the file;
    * segment N+1 starts exactly where segment N ended (its ``start_gtid`` is N's ``end_gtid``);
    * a snapshot row's ``gtid`` is ``snapshot_tag(id, table)``, never a GTID.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cdc_pipeline.core.errors import CorruptSegmentError, WalFormatError
from cdc_pipeline.core.gtid import GtidSet, as_flavor
from cdc_pipeline.core.wal.staging import (
    file_digest_path,
    partition_key,
)

MANIFEST_KEY = b"cdc_manifest"
FORMAT_VERSION = 2
"""The WAL format capture writes. 1: row images as canonical Extended JSON text (``string``
columns); 2: row images as BSON (``binary`` columns, ``images.encode_image``). Loads, checks,
``wal show`` and ``read_changes`` read both; a segment of a newer format is refused."""

IMAGE_COLUMNS = ("pk", "before", "after")

IMAGES_OF_OP = {
    "insert": (False, True),
    "update": (True, True),
    "delete": (True, False),
    "snapshot": (False, True),
}
"""Which images (before, after) a row of each op carries; a DDL row carries none, and every
row of a keyed table has a ``pk``."""

ROW_SCHEMA_V1 = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("gtid", pa.string(), nullable=False),
        pa.field("row_index", pa.int32(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("schema", pa.string(), nullable=False),
        pa.field("table", pa.string()),
        pa.field("op", pa.string(), nullable=False),
        pa.field("pk", pa.string()),
        pa.field("before", pa.string()),
        pa.field("after", pa.string()),
        pa.field("schema_version", pa.string()),
        pa.field("binlog_file", pa.string(), nullable=False),
        pa.field("binlog_pos", pa.int64(), nullable=False),
        pa.field("committed_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("statement", pa.string()),
    ]
)
ROW_SCHEMA = pa.schema(
    [
        field.with_type(pa.binary()) if field.name in IMAGE_COLUMNS else field
        for field in ROW_SCHEMA_V1
    ]
)
"""Format 2 (``FORMAT_VERSION``): the columns of format 1, with the images in BSON."""
COLUMNS = tuple(ROW_SCHEMA.names)


_DIGEST_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
"""``json.dumps`` with these options builds a new encoder per call; the text is the same."""


def _flat_json_encoder() -> Callable[[Any], str]:
    """``_DIGEST_ENCODER.encode`` for flat lists and tuples (of str, int, None), with the C
    encoder built once instead of per call (what ``JSONEncoder.iterencode`` does); the text
    is the same (pinned digests), without the circular-reference check a flat row needs not."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - CPython always has the C accelerator
        return _DIGEST_ENCODER.encode
    encode = make(
        None,
        _DIGEST_ENCODER.default,
        json.encoder.encode_basestring,
        None,
        ":",
        ",",
        False,
        False,
        True,
    )

    def encode_flat(values: Any) -> str:
        return "".join(encode(values, 0))

    return encode_flat


_encode_flat = _flat_json_encoder()


def digest_line(row: dict[str, Any], format_version: int) -> bytes:
    """What the manifest's checksum hashes for one row of a segment of ``format_version``.

    Format 1: the JSON line of the columns' values (``committed_at`` in microseconds). Format
    2: the JSON line of the same values in column order, in which each image (``pk``,
    ``before``, ``after``, BSON bytes) is written as its length (null when absent), followed by
    the images' bytes in that order; the lengths make the framing unambiguous.
    """
    if format_version >= 2:
        return _digest_line_v2(row)
    values = []
    for name in COLUMNS:
        value = row.get(name)
        if isinstance(value, datetime):
            value = int(value.astimezone(UTC).timestamp() * 1_000_000)
        values.append(value)
    return _encode_flat(values).encode() + b"\n"


def _commit_micros(moment: datetime) -> int:
    """A commit time in the digest: microseconds since the epoch, as the float ``timestamp``
    gives them (the format's definition). The rows of a transaction share one datetime
    object, so the last one is remembered (the pair is replaced at once: thread-safe)."""
    global _LAST_COMMIT
    last = _LAST_COMMIT
    if last[0] is moment:
        return last[1]
    micros = int(moment.astimezone(UTC).timestamp() * 1_000_000)
    _LAST_COMMIT = (moment, micros)
    return micros


_LAST_COMMIT: tuple[datetime | None, int] = (None, 0)


def _digest_line_v2(row: dict[str, Any], _encode: Any = _encode_flat) -> bytes:
    pk, before, after = row["pk"], row["before"], row["after"]
    head = _encode(
        (
            row["event_id"],
            row["gtid"],
            row["row_index"],
            row["source"],
            row["schema"],
            row["table"],
            row["op"],
            None if pk is None else len(pk),
            None if before is None else len(before),
            None if after is None else len(after),
            row["schema_version"],
            row["binlog_file"],
            row["binlog_pos"],
            _commit_micros(row["committed_at"]),
            row["statement"],
        )
    )
    return b"".join((head.encode(), b"\n", pk or b"", before or b"", after or b""))


_NEEDS_ESCAPE = r'[\x00-\x1f"\\]'
"""What ``json.encoder.encode_basestring`` (``ensure_ascii=False``) writes other than as is."""
_TEXT_COLUMNS = ("event_id", "gtid", "source", "schema", "table", "op")
_TEXT_COLUMNS_AFTER = ("schema_version", "binlog_file")


def batch_digest_input(batch: pa.RecordBatch) -> pa.Buffer | bytes:
    """What the checksum hashes for the rows of a format-2 batch, in order: the bytes of
    ``digest_line(row, 2)`` for each row, joined, computed column by column by Arrow instead
    of row by row (equal, property-tested). A row whose text needs a JSON escape (a quote,
    a backslash, a control character: a DDL statement, an odd table name) gets its line from
    ``_digest_line_v2``."""
    if batch.num_rows == 0:
        return b""
    column = batch.column
    texts = [_json_text(column(name)) for name in _TEXT_COLUMNS]
    after = [_json_text(column(name)) for name in _TEXT_COLUMNS_AFTER]
    lengths = [
        pc.fill_null(pc.cast(pc.binary_length(column(name)), pa.string()), "null")
        for name in IMAGE_COLUMNS
    ]
    head = pc.binary_join_element_wise(
        *texts[:2],
        pc.cast(column("row_index"), pa.string()),
        *texts[2:],
        *lengths,
        *after,
        pc.cast(column("binlog_pos"), pa.string()),
        _micros_texts(column("committed_at")),
        _json_text(column("statement")),
        ",",
    )
    images = [pc.fill_null(column(name).cast(pa.large_binary()), b"") for name in IMAGE_COLUMNS]
    lines = pc.binary_join_element_wise(
        pa.scalar(b"[", pa.large_binary()),
        head.cast(pa.large_binary()),
        pa.scalar(b"]\n", pa.large_binary()),
        *images,
        pa.scalar(b"", pa.large_binary()),
    )
    escaped = _needs_escape(
        [column(name) for name in (*_TEXT_COLUMNS, *_TEXT_COLUMNS_AFTER, "statement")]
    )
    if escaped:  # rare (a DDL statement, an odd name): those rows' lines the slow way
        text_lines = lines.to_pylist()
        for index in escaped:
            text_lines[index] = _digest_line_v2(batch_rows(batch.slice(index, 1))[0])
        return b"".join(text_lines)
    start = _OFFSET.unpack_from(lines.buffers()[1], 8 * lines.offset)[0]
    end = _OFFSET.unpack_from(lines.buffers()[1], 8 * (lines.offset + len(lines)))[0]
    return lines.buffers()[2][start:end]


_OFFSET = struct.Struct("<q")


_ESCAPED_BYTE = re.compile(rb'[\x00-\x1f"\\]')
"""The bytes of the characters ``_NEEDS_ESCAPE`` matches: all ASCII, so in UTF-8 text such a
byte is always that character (every byte of a longer character is 0x80 or above)."""


def _needs_escape(columns: list[pa.Array]) -> list[int]:
    """The indexes of the rows where one of these string columns needs a JSON escape.

    A column whose whole data buffer has no byte of such a character has none: one search
    over the buffer (it may hold bytes outside a slice, which can only send the check to
    the row by row match below, never skip a row that needs it)."""
    if not any(_may_need_escape(column) for column in columns):
        return []
    found = None
    for column in columns:
        matches = pc.match_substring_regex(pc.fill_null(column, ""), _NEEDS_ESCAPE)
        found = matches if found is None else pc.or_(found, matches)
    if found is None or not pc.any(found).as_py():
        return []
    return pc.indices_nonzero(found).to_pylist()  # type: ignore[no-any-return]


def _may_need_escape(column: pa.Array) -> bool:
    data = column.buffers()[2]
    return data is not None and _ESCAPED_BYTE.search(memoryview(data)) is not None


def _json_text(column: pa.Array) -> pa.Array:
    """A string column as JSON texts (quoted; ``null``), for values without escapes."""
    quote = pa.scalar('"')
    return pc.fill_null(pc.binary_join_element_wise(quote, column, quote, ""), "null")


def _micros_texts(column: pa.Array) -> pa.Array:
    """``committed_at`` as the digest writes it (``_commit_micros``), computed once per
    distinct value: a transaction's rows share one."""
    distinct = column.unique()
    texts = pa.array([str(_commit_micros(moment)) for moment in distinct.to_pylist()], pa.string())
    return pc.take(texts, pc.index_in(column, distinct))


@dataclass
class Manifest:
    """What a segment holds and where it sits in the binlog (stored in the Parquet footer)."""

    source: str
    sequence: int
    flavor: str
    start_gtid: str
    end_gtid: str
    start_binlog_file: str
    start_binlog_pos: int
    end_binlog_file: str
    end_binlog_pos: int
    row_count: int = 0
    ddl_count: int = 0
    transaction_count: int = 0
    first_gtid: str | None = None
    last_gtid: str | None = None
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    schema_versions: dict[str, dict[str, Any]] = field(default_factory=dict)
    checksum: str = ""
    first_committed_at: str | None = None
    last_committed_at: str | None = None
    created_at: str = ""
    server_uuid: str = ""
    format_version: int = FORMAT_VERSION
    kind: str = "stream"
    """``stream`` (binlog events) or ``snapshot`` (rows read at one point, ``core.snapshot``)."""
    snapshot: dict[str, Any] | None = None
    """For a snapshot segment: which snapshot, table and key range it holds (``core.snapshot``)."""
    governance: dict[str, Any] | None = None
    """The column and table rules the rows were written under (``Governance.record``: patterns
    and a fingerprint of CDC_MASK_KEY, never the key); None when there were none."""

    @property
    def partition_key(self) -> str:
        return partition_key(self.source, self.sequence)

    def covered(self) -> GtidSet:
        """The transactions this segment covers: ``end_gtid - start_gtid``."""
        flavor = as_flavor(self.flavor)
        return GtidSet.parse(self.end_gtid, flavor) - GtidSet.parse(self.start_gtid, flavor)

    def to_json(self) -> str:
        return json.dumps(self.__dict__)  # insertion order: schema versions as first seen

    @classmethod
    def from_json(cls, text: str | bytes) -> Manifest:
        data = json.loads(text)
        return cls(**{key: data[key] for key in cls.__dataclass_fields__ if key in data})


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _unreadable(path: Path, error: BaseException) -> CorruptSegmentError:
    return CorruptSegmentError(
        f"segment {path.name} cannot be read ({type(error).__name__}); move it to the"
        " quarantine folder and re-capture it from the binlog (see docs/operations.md)."
    )


def refuse_newer_format(path: Path, manifest: Manifest) -> None:
    """A segment written by a newer cdc_pipeline is never guessed at."""
    if int(manifest.format_version) > FORMAT_VERSION:
        raise WalFormatError(
            f"segment {path.name} is in WAL format {manifest.format_version}, written by a newer"
            f" cdc_pipeline (this one reads formats 1 to {FORMAT_VERSION}); upgrade cdc_pipeline"
            " on every process that loads this WAL, then run the load again."
        )


def read_manifest(path: Path) -> Manifest:
    """The manifest from a segment's footer (reads no rows)."""
    try:
        metadata = pq.read_metadata(path).metadata or {}
        return Manifest.from_json(metadata[MANIFEST_KEY])
    except Exception as error:  # any failure to decode the bytes means they are damaged
        raise _unreadable(path, error) from None


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Every row of a segment, in order, as dicts (for tools and tests; loads use
    ``read_verified``)."""
    try:
        return pq.read_table(path).to_pylist()  # type: ignore[no-any-return]
    except Exception as error:  # any failure to decode the bytes means they are damaged
        raise _unreadable(path, error) from None


def batch_rows(batch: pa.RecordBatch) -> list[dict[str, Any]]:
    """``batch.to_pylist()``, equal value for value, without converting every timestamp: a
    timestamp column (``committed_at``) holds one value per transaction, so each distinct value
    is converted once by Arrow and shared. Arrow's per-value conversion of that one column
    was over half of ``to_pylist``'s time, and a load reads each segment twice."""
    names = batch.schema.names
    columns: list[list[Any]] = []
    for column in batch.columns:
        if pa.types.is_timestamp(column.type):
            distinct = column.unique()
            converted = dict(
                zip(distinct.cast(pa.int64()).to_pylist(), distinct.to_pylist(), strict=True)
            )
            columns.append([converted[value] for value in column.cast(pa.int64()).to_pylist()])
        else:
            columns.append(column.to_pylist())
    if tuple(names) == COLUMNS:
        return list(map(_row_of_columns, zip(*columns, strict=True)))
    return [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]


def _row_of_columns(values: tuple[Any, ...]) -> dict[str, Any]:
    """The values of one row of the WAL's columns (``COLUMNS``, in their order) as a dict. A
    dict display with the names spelled out costs half of ``dict(zip(COLUMNS, values))``,
    which was a microsecond of every row a load applies (docs/profile.md)."""
    (
        event_id,
        gtid,
        row_index,
        source,
        schema,
        table,
        op,
        pk,
        before,
        after,
        schema_version,
        binlog_file,
        binlog_pos,
        committed_at,
        statement,
    ) = values
    return {
        "event_id": event_id,
        "gtid": gtid,
        "row_index": row_index,
        "source": source,
        "schema": schema,
        "table": table,
        "op": op,
        "pk": pk,
        "before": before,
        "after": after,
        "schema_version": schema_version,
        "binlog_file": binlog_file,
        "binlog_pos": binlog_pos,
        "committed_at": committed_at,
        "statement": statement,
    }


@dataclass
class VerifiedSegment:
    """A segment whose bytes were read once and found to match its digest and manifest.

    ``rows()`` decodes the rows again from those same bytes (mapped in memory, not read from
    disk a second time), so what a loader applies is exactly what was verified.
    """

    path: Path
    manifest: Manifest
    _buffer: pa.Buffer

    def rows(self, batch_size: int = 5_000) -> Iterator[dict[str, Any]]:
        """The rows in order, a batch at a time (memory holds one decoded batch)."""
        for batch in self.batches(batch_size):
            yield from batch_rows(batch)

    def batches(self, batch_size: int = 5_000) -> Iterator[pa.RecordBatch]:
        """The rows in order as Arrow batches, one decoded at a time."""
        parquet = pq.ParquetFile(pa.BufferReader(self._buffer))
        yield from parquet.iter_batches(batch_size=batch_size)

    def ddl_rows(self) -> list[dict[str, Any]]:
        """The DDL rows alone, in order (``gtid``, ``schema``, ``statement`` and ``after``, the
        session it ran in): what a loader looks ahead at before applying the rows."""
        if not self.manifest.ddl_count:
            return []
        columns = ["gtid", "schema", "op", "statement", "after"]
        table = pq.read_table(pa.BufferReader(self._buffer), columns=columns)
        return table.filter(pc.equal(table["op"], "ddl")).to_pylist()  # type: ignore[no-any-return]


def read_verified(
    path: Path, each_batch: Callable[[Manifest, pa.RecordBatch], None] | None = None
) -> VerifiedSegment:
    """Read a segment's bytes once: check them against the ``.sha256`` beside it, then every
    row against the manifest's checksum and counts.

    ``each_batch(manifest, batch)`` sees every batch of rows during that pass (validation's
    checks), before the checksum comparison: a caller must not act on what it saw unless
    this returns. An exception it raises makes the segment unreadable
    (``CorruptSegmentError``).
    """
    try:
        expected_file_digest = file_digest_path(path).read_text().strip()
        with pa.memory_map(str(path)) as mapped:
            buffer = mapped.read_buffer()
    except OSError as error:
        raise CorruptSegmentError(
            f"segment {path.name} or its .sha256 file cannot be read ({error.strerror});"
            " quarantine it and re-capture it from the binlog (see docs/operations.md)."
        ) from None
    if expected_file_digest != hashlib.sha256(memoryview(buffer)).hexdigest():
        raise CorruptSegmentError(
            f"segment {path.name} is damaged (its bytes no longer match the sha256 written at"
            " capture); quarantine it and re-capture it from the binlog (see docs/operations.md)."
        )
    digest = hashlib.sha256()
    rows = 0
    ddl = 0
    try:
        parquet = pq.ParquetFile(pa.BufferReader(buffer))
        metadata = parquet.metadata.metadata or {}
        manifest = Manifest.from_json(metadata[MANIFEST_KEY])
    except Exception as error:  # any failure to decode the bytes means they are damaged
        raise _unreadable(path, error) from None
    refuse_newer_format(path, manifest)
    image_type = pa.string() if int(manifest.format_version) < 2 else pa.binary()
    if any(parquet.schema_arrow.field(name).type != image_type for name in IMAGE_COLUMNS):
        raise CorruptSegmentError(
            f"segment {path.name} does not match its manifest (its row images are not of WAL"
            f" format {manifest.format_version}); it was changed after capture: quarantine it and"
            " re-capture from the binlog."
        )
    version = int(manifest.format_version)
    try:
        for batch in parquet.iter_batches(batch_size=10_000):
            statements = pc.sum(pc.equal(batch.column("op"), "ddl")).as_py() or 0
            ddl += statements
            rows += batch.num_rows - statements
            if version >= 2:
                digest.update(batch_digest_input(batch))
            else:
                for row in batch_rows(batch):
                    digest.update(digest_line(row, version))
            if each_batch is not None:
                each_batch(manifest, batch)
    except Exception as error:  # any failure to decode the bytes means they are damaged
        raise _unreadable(path, error) from None
    if digest.hexdigest() != manifest.checksum or (rows, ddl) != (
        manifest.row_count,
        manifest.ddl_count,
    ):
        raise CorruptSegmentError(
            f"segment {path.name} does not match its manifest (checksum or row count differs);"
            " it was changed after capture: quarantine it and re-capture from the binlog."
        )
    return VerifiedSegment(path, manifest, buffer)


def verify_segment(path: Path) -> Manifest:
    """``read_verified`` for a caller that needs only the manifest."""
    return read_verified(path).manifest


def snapshot_tag(snapshot_id: object, table: object) -> str:
    """What a snapshot row carries in its ``gtid`` field (``table`` is ``schema.table``): the
    row was read by snapshot ``snapshot_id``, not replicated. The one definition, used by the
    writer, validation and the duplicate check."""
    return f"snapshot:{snapshot_id}:{table}"
