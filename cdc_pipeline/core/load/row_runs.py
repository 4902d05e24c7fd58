"""Runs of row changes whose writes are assembled by Arrow's kernels from a segment's columns.

Most of a segment's rows come in runs: consecutive inserts (or updates, or deletes) of one
table at one schema version. ``load.raw_documents`` assembles each row's change-log document
and mirror write from its images' bytes, one Python call after another; for a run, the same
bytes are joined column by column (``pyarrow.compute.binary_join_element_wise`` and its kin),
so the Python left per row is the writes' objects and the coalescing of the mirror's keys.

Invariants:
    * ``change_log_documents`` gives, row for row, the bytes of ``ChangeLogDocuments``, and
      ``mirror_writes`` those of ``RawMirror`` (``key_of_pk``, ``identity``, ``insert``,
      ``upsert``, ``delete``): property tested over the columns' values, and the sink's
      writes compared with the row path's;
    * a run holds only rows ``split_batch`` found to be of one op, source, table and schema
      version, with BSON images where the op has them (``wal.segment.IMAGES_OF_OP``) and none
      where it has not; anything the kernels cannot assemble exactly (a ``pk`` that is not the key's
      one element) makes the caller apply the run row by row instead;
    * lengths are packed as little-endian int32 from Arrow's buffers, which are in the
      machine's order: on a big-endian machine there are no runs (``split_batch``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from itertools import pairwise, repeat
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from cdc_pipeline.core.load.documents import CHANGE_POSITION_FIELDS, CHANGE_TABLE_FIELDS
from cdc_pipeline.core.load.large_values import may_not_fit
from cdc_pipeline.core.load.raw_documents import server_image
from cdc_pipeline.core.wal.segment import COLUMNS, IMAGE_COLUMNS, IMAGES_OF_OP, batch_rows

MIN_RUN = 32
"""A run shorter than this is applied row by row: the kernels' fixed cost per run (tens of
microseconds) would outweigh what they save (about a microsecond per row)."""

_LITTLE_ENDIAN = sys.byteorder == "little"
_RUN_COLUMNS = ("source", "schema", "table", "schema_version")
_ZERO_LENGTH = b"\x00\x00\x00\x00"  # how a format-2 image kept as text starts


RUN_OPS = ("insert", "update", "delete")
"""The ops a run can hold (a snapshot's rows are applied by the snapshot path)."""


@dataclass(frozen=True)
class RowRun:
    """Consecutive rows of one segment batch, all of ``op`` on one table at one version."""

    batch: pa.RecordBatch
    op: str

    def rows(self) -> list[dict[str, Any]]:
        """The run's rows as the row path reads them."""
        return batch_rows(self.batch)

    @cached_property
    def first_row(self) -> dict[str, Any]:
        """The run's first row as the row path reads it (its table, version and fields that
        every row of the run shares), read once."""
        return batch_rows(self.batch.slice(0, 1))[0]

    def last_row(self) -> dict[str, Any]:
        return batch_rows(self.batch.slice(self.batch.num_rows - 1, 1))[0]


@dataclass(frozen=True)
class Images:
    """A run's ``pk`` images and, where its op has them, ``before`` and ``after`` (the run's own
    bytes, or as the server stores them)."""

    pk: pa.Array
    before: pa.Array | None
    after: pa.Array | None

    def may_not_fit(self) -> bool:
        """``large_values.may_not_fit`` of some row's ``before`` and ``after``, as the row
        path asks it."""
        befores = repeat(None) if self.before is None else self.before.to_pylist()
        afters = repeat(None) if self.after is None else self.after.to_pylist()
        return any(map(may_not_fit, befores, afters))

    def as_stored(self) -> Images | None:
        """The images as a server without Decimal128 stores them (``server_image``); None when
        one of them cannot be read so."""
        stored: list[pa.Array | None] = []
        for images in (self.pk, self.before, self.after):
            if images is None:
                stored.append(None)
                continue
            rewritten = [server_image(image, True) for image in images.to_pylist()]
            if None in rewritten:
                return None
            stored.append(pa.array(rewritten, pa.binary()))
        pk, before, after = stored
        assert pk is not None
        return Images(pk, before, after)

    @staticmethod
    def of(run: RowRun) -> Images:
        carried = IMAGES_OF_OP[run.op]
        column = run.batch.column
        return Images(
            column("pk"),
            column("before") if carried[0] else None,
            column("after") if carried[1] else None,
        )


def split_batch(batch: pa.RecordBatch) -> Iterator[dict[str, Any] | RowRun]:
    """The batch's rows in order: each run of at least ``MIN_RUN`` rows of one op of
    ``RUN_OPS``, source, table and schema version, whose images are BSON where the op has
    them and absent where not, as a ``RowRun``; every other row as its dict (``batch_rows``)."""
    count = batch.num_rows
    if count < MIN_RUN or not _LITTLE_ENDIAN or not _bson_columns(batch.schema):
        yield from batch_rows(batch)
        return
    column = batch.column
    op = column("op")
    eligible = pa.repeat(pa.scalar(False), count)
    for name in RUN_OPS:
        before, after = IMAGES_OF_OP[name]
        these = pc.and_(
            pc.and_(pc.equal(op, name), _is_bson(column("pk"))),
            pc.and_(
                _is_bson(column("before")) if before else pc.is_null(column("before")),
                _is_bson(column("after")) if after else pc.is_null(column("after")),
            ),
        )
        eligible = pc.or_(eligible, pc.fill_null(these, False))
    # a run ends where eligibility, the op or any of the run's columns changes (a null: always)
    starts, _ = _runs_of([eligible, op, *(column(name) for name in _RUN_COLUMNS)])
    starts.append(count)
    flags, ops = eligible.to_pylist(), op.to_pylist()
    for start, end in pairwise(starts):
        if flags[start] and end - start >= MIN_RUN:
            yield RowRun(batch.slice(start, end - start), ops[start])
        else:
            yield from batch_rows(batch.slice(start, end - start))


def runs_and_rows(batches: Iterable[pa.RecordBatch]) -> Iterator[dict[str, Any] | RowRun]:
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
    run: RowRun,
    images: Images,
    table_fields: Callable[[tuple[Any, ...]], bytes],
    position_fields: Callable[[tuple[Any, ...]], bytes],
) -> list[bytes]:
    """The run's change-log documents, as ``ChangeLogDocuments`` assembles them, with these
    images.

    ``table_fields`` and ``position_fields`` encode the fields of ``CHANGE_TABLE_FIELDS`` and
    of ``CHANGE_POSITION_FIELDS`` (the assembler's, so the bytes are its bytes): once for the
    run and once per rows event."""
    batch = run.batch
    count = batch.num_rows
    column = batch.column
    first = run.first_row
    middle = table_fields(tuple(first[name] for name in CHANGE_TABLE_FIELDS))
    positions = [column(name) for name in CHANGE_POSITION_FIELDS]
    starts, ids = _runs_of(positions)
    tails = pa.array(
        [position_fields(tuple(values[start].as_py() for values in positions)) for start in starts],
        pa.binary(),
    ).take(ids)
    body = pc.binary_join_element_wise(
        *_text_element(b"\x02_id\x00", column("event_id")),
        *_text_element(b"\x02gtid\x00", column("gtid")),
        _constant(b"\x10row_index\x00", count),
        _le32(column("row_index")),
        _constant(middle + b"\x03pk\x00", count),
        images.pk,
        *_image_element(b"before", images.before, count),
        *_image_element(b"after", images.after, count),
        tails,
        b"",
    )
    return _documents(body)


@dataclass(frozen=True)
class MirrorWrites:
    """The bytes of a run's mirror writes, row by row, as ``RawMirror`` assembles them."""

    identities: list[bytes]
    """Each row's key identity (``RawMirror.identity``): how the sink coalesces keys."""
    keys: list[bytes] | None
    """Each row's key element (type and value), as ``key_of_pk`` gives it; updates only (to
    see whether the key moved)."""
    selectors: list[bytes] | None
    """Each row's ``{_id: key}``: the filter of an update's replacement, a delete's; not
    made for inserts."""
    documents: list[bytes] | None
    """Each row's mirror document; not made for deletes."""


def mirror_writes(
    run: RowRun,
    key: bytes,
    images: Images,
    cdc: Callable[[dict[str, Any]], bytes],
) -> MirrorWrites | None:
    """The run's mirror writes for a table whose key is the one column ``key`` (UTF-8); None
    when a ``pk`` image is not that key's one element (``RawMirror.key_of_pk``).

    ``cdc`` gives the ``_cdc`` element of a row (``CdcElements``), asked once per transaction."""
    batch = run.batch
    count = batch.num_rows
    pk = images.pk
    head = 5 + len(key)
    named = pc.and_(
        pc.greater_equal(pc.binary_length(pk), head + 2),
        pc.equal(pc.binary_slice(pk, 5, head + 1), pa.scalar(key + b"\x00", pa.binary())),
    )
    if not pc.all(pc.fill_null(named, False)).as_py():
        return None
    kind, value = pc.binary_slice(pk, 4, 5), pc.binary_slice(pk, head + 1, -1)
    id_element = (kind, _constant(b"_id\x00", count), value)
    documents = None
    if images.after is not None:
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
        documents = _documents(
            pc.binary_join_element_wise(
                *id_element, pc.binary_slice(images.after, 4, -1), elements, b""
            )
        )
    identities = pc.binary_join_element_wise(kind, _constant(b"\x00", count), value, b"")
    keys: list[bytes] | None = None
    if run.op == "update":
        keys = pc.binary_join_element_wise(kind, value, b"").to_pylist()
    selectors = None
    if run.op != "insert":
        selectors = _documents(pc.binary_join_element_wise(*id_element, b""))
    return MirrorWrites(_documents(identities), keys, selectors, documents)


def _image_element(name: bytes, images: pa.Array | None, count: int) -> tuple[pa.Array, ...]:
    """The parts of an image's element per row: the image as a document, or a null."""
    if images is None:
        return (_constant(b"\x0a" + name + b"\x00", count),)
    return _constant(b"\x03" + name + b"\x00", count), images


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
