"""Runs of inserted rows whose writes are assembled by Arrow's kernels from a segment's columns.

Most of a segment's rows come in runs: consecutive inserts into one table at one schema
version. ``load.raw_documents`` assembles each row's change-log document and mirror document
from its images' bytes, one Python call after another; for a run, the same bytes are joined
column by column (``pyarrow.compute.binary_join_element_wise`` and its kin), so the Python left
per row is the write's objects and the coalescing of the mirror's keys.

Invariants:
    * ``change_log_documents`` gives, row for row, the bytes of ``ChangeLogDocuments`` and
      ``mirror_writes`` those of ``RawMirror.key_of_pk``, ``identity`` and ``insert`` (property
      tested over the columns' values, and the sink's writes compared with the row path's);
    * a run holds only rows ``split_batch`` found to be inserts with BSON ``pk`` and ``after``
      images and no ``before``, of one source, table and schema version; anything the
      kernels cannot assemble exactly (a ``pk`` that is not the key's one element) makes the
      caller apply the run row by row instead;
    * lengths are packed as little-endian int32 from Arrow's buffers, which are in the
      machine's order: on a big-endian machine there are no runs (``split_batch``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from cdc_pipeline.core.load.documents import CHANGE_POSITION_FIELDS, CHANGE_TABLE_FIELDS
from cdc_pipeline.core.wal.segment import COLUMNS, IMAGE_COLUMNS, batch_rows

MIN_RUN = 32
"""A run shorter than this is applied row by row: the kernels' fixed cost per run (tens of
microseconds) would outweigh what they save (about a microsecond per row)."""

_LITTLE_ENDIAN = sys.byteorder == "little"
_RUN_COLUMNS = ("source", "schema", "table", "schema_version")
_ZERO_LENGTH = b"\x00\x00\x00\x00"  # how a format-2 image kept as text starts


@dataclass(frozen=True)
class InsertRun:
    """Consecutive rows of one segment batch, all inserts into one table at one version."""

    batch: pa.RecordBatch

    def rows(self) -> list[dict[str, Any]]:
        """The run's rows as the row path reads them."""
        return batch_rows(self.batch)

    def first_row(self) -> dict[str, Any]:
        return batch_rows(self.batch.slice(0, 1))[0]

    def last_row(self) -> dict[str, Any]:
        return batch_rows(self.batch.slice(self.batch.num_rows - 1, 1))[0]

    def first(self, *names: str) -> tuple[Any, ...]:
        """The values of these columns in the run's first row."""
        return tuple(self.batch.column(name)[0].as_py() for name in names)


def split_batch(batch: pa.RecordBatch) -> Iterator[dict[str, Any] | InsertRun]:
    """The batch's rows in order: each run of at least ``MIN_RUN`` inserts into one table at
    one schema version whose ``pk`` and ``after`` images are BSON (and whose ``before`` is
    absent) as an ``InsertRun``; every other row as its dict (``batch_rows``)."""
    count = batch.num_rows
    if count < MIN_RUN or not _LITTLE_ENDIAN or not _bson_columns(batch.schema):
        yield from batch_rows(batch)
        return
    column = batch.column
    eligible = pc.fill_null(
        pc.and_(
            pc.and_(pc.equal(column("op"), "insert"), pc.is_null(column("before"))),
            pc.and_(_is_bson(column("pk")), _is_bson(column("after"))),
        ),
        False,
    )
    # a run ends where eligibility or any of the run's columns changes (a null: always)
    starts, _ = _runs_of([eligible, *(column(name) for name in _RUN_COLUMNS)])
    starts.append(count)
    flags = eligible.to_pylist()
    for start, end in pairwise(starts):
        if flags[start] and end - start >= MIN_RUN:
            yield InsertRun(batch.slice(start, end - start))
        else:
            yield from batch_rows(batch.slice(start, end - start))


def runs_and_rows(batches: Iterable[pa.RecordBatch]) -> Iterator[dict[str, Any] | InsertRun]:
    """``split_batch`` of each batch, in order."""
    for batch in batches:
        yield from split_batch(batch)


def _bson_columns(schema: pa.Schema) -> bool:
    """Whether a batch has the WAL's columns of format 2: its images in binary columns."""
    return tuple(schema.names) == COLUMNS and all(
        schema.field(name).type == pa.binary() for name in IMAGE_COLUMNS
    )


def _is_bson(images: pa.Array) -> pa.Array:
    """Whether each image is present and BSON (format 2, not text behind ``_ZERO_LENGTH``)."""
    return pc.and_(
        pc.is_valid(images),
        pc.not_equal(pc.binary_slice(images, 0, 4), pa.scalar(_ZERO_LENGTH, pa.binary())),
    )


def change_log_documents(
    run: InsertRun,
    pk: pa.Array,
    after: pa.Array,
    table_fields: Callable[[tuple[Any, ...]], bytes],
    position_fields: Callable[[tuple[Any, ...]], bytes],
) -> list[bytes]:
    """The run's change-log documents, as ``ChangeLogDocuments`` assembles them, with these
    ``pk`` and ``after`` images (the run's own, or as the server stores them).

    ``table_fields`` and ``position_fields`` encode the fields of ``CHANGE_TABLE_FIELDS`` and
    of ``CHANGE_POSITION_FIELDS`` (the assembler's, so the bytes are its bytes): once for the
    run and once per rows event."""
    batch = run.batch
    column = batch.column
    middle = table_fields(run.first(*CHANGE_TABLE_FIELDS))
    positions = [column(name) for name in CHANGE_POSITION_FIELDS]
    starts, ids = _runs_of(positions)
    tails = pa.array(
        [position_fields(tuple(values[start].as_py() for values in positions)) for start in starts],
        pa.binary(),
    ).take(ids)
    body = pc.binary_join_element_wise(
        *_text_element(b"\x02_id\x00", column("event_id")),
        *_text_element(b"\x02gtid\x00", column("gtid")),
        _constant(b"\x10row_index\x00", batch.num_rows),
        _le32(column("row_index")),
        _constant(middle + b"\x03pk\x00", batch.num_rows),
        pk,
        _constant(b"\x0abefore\x00\x03after\x00", batch.num_rows),
        after,
        tails,
        b"",
    )
    return _documents(body)


def mirror_writes(
    run: InsertRun,
    key: bytes,
    pk: pa.Array,
    after: pa.Array,
    cdc: Callable[[dict[str, Any]], bytes],
) -> tuple[list[bytes], list[bytes]] | None:
    """The run's mirror documents and each one's key identity, as ``RawMirror`` assembles
    them for a table whose key is the one column ``key`` (UTF-8); None when a ``pk`` image is
    not that key's one element (``RawMirror.key_of_pk``).

    ``cdc`` gives the ``_cdc`` element of a row (``CdcElements``), asked once per transaction."""
    batch = run.batch
    count = batch.num_rows
    head = 5 + len(key)
    if not pc.all(
        pc.and_(
            pc.greater_equal(pc.binary_length(pk), head + 2),
            pc.equal(pc.binary_slice(pk, 5, head + 1), pa.scalar(key + b"\x00", pa.binary())),
        )
    ).as_py():
        return None
    kind, value = pc.binary_slice(pk, 4, 5), pc.binary_slice(pk, head + 1, -1)
    gtids = batch.column("gtid")
    starts, ids = _runs_of([gtids])
    version, moments = batch.column("schema_version"), batch.column("committed_at")
    elements = pa.array(
        [
            cdc(
                {
                    "gtid": gtids[start].as_py(),
                    "schema_version": version[start].as_py(),
                    "committed_at": moments[start].as_py(),
                }
            )
            for start in starts
        ],
        pa.binary(),
    ).take(ids)
    documents = pc.binary_join_element_wise(
        kind,
        _constant(b"_id\x00", count),
        value,
        pc.binary_slice(after, 4, -1),
        elements,
        b"",
    )
    identities = pc.binary_join_element_wise(kind, _constant(b"\x00", count), value, b"")
    return _documents(documents), _documents(identities)


def _runs_of(columns: list[pa.Array]) -> tuple[list[int], pa.Array]:
    """Where each run of rows equal in every one of ``columns`` starts, and each row's run
    number (a null differs from everything)."""
    count = len(columns[0])
    if count < 2:
        return [0], pa.array([0] * count, pa.int64())
    tail: pa.Array | None = None
    for values in columns:
        differs = pc.fill_null(pc.not_equal(values.slice(1), values.slice(0, count - 1)), True)
        tail = differs if tail is None else pc.or_(tail, differs)
    changed = pa.concat_arrays([pa.array([False]), tail])
    starts = [0, *pc.indices_nonzero(changed).to_pylist()]
    return starts, pc.cumulative_sum(pc.cast(changed, pa.int64()))


def _le32(values: pa.Array) -> pa.Array:
    """Each int32 value (no nulls) as its four little-endian bytes, as binary."""
    values = pc.cast(values, pa.int32())
    if values.null_count:
        raise ValueError("a length or index to pack is null")
    fixed = pa.Array.from_buffers(
        pa.binary(4), len(values), [None, values.buffers()[1]], offset=values.offset
    )
    return fixed.cast(pa.binary())


def _text_element(head: bytes, texts: pa.Array) -> tuple[pa.Array, pa.Array, pa.Array, pa.Array]:
    """The parts of a BSON text element per row: type and name, length, UTF-8 bytes, NUL."""
    data = pc.cast(texts, pa.binary())
    sizes = pc.add(pc.binary_length(data), 1)
    count = len(texts)
    return _constant(head, count), _le32(sizes), data, _constant(b"\x00", count)


def _documents(body: pa.Array) -> list[bytes]:
    """Each element list as a BSON document: its length, the elements, the final NUL."""
    count = len(body)
    sizes = pc.add(pc.binary_length(body), 5)
    documents: list[bytes] = pc.binary_join_element_wise(
        _le32(sizes), body, _constant(b"\x00", count), b""
    ).to_pylist()
    return documents


def _constant(value: bytes, count: int) -> pa.Array:
    return pa.repeat(pa.scalar(value, pa.binary()), count)
