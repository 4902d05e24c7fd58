"""Writing one WAL segment: rows streamed to a temp file, committed whole or not at all.

Invariants: a segment appears under its final name only complete: written to a temp file,
fsynced, its ``.sha256`` written and fsynced, renamed, and the folder fsynced; a crash at any
instant leaves either no segment or a whole one, never a torn one (a leftover temp file or
digest is removed by ``staging.remove_stale_temp_files`` under the capture lock).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from cdc_pipeline.core.errors import StagingError
from cdc_pipeline.core.wal.segment import (
    COLUMNS,
    FORMAT_VERSION,
    IMAGE_COLUMNS,
    MANIFEST_KEY,
    ROW_SCHEMA,
    ROW_SCHEMA_V1,
    Manifest,
    batch_digest_input,
    digest_line,
    file_sha256,
)
from cdc_pipeline.core.wal.staging import WalPaths, file_digest_path, fsync_dir, open_private
from cdc_pipeline.core.wal.tables import note_tables

DICTIONARY_COLUMNS = ("gtid", "source", "schema", "table", "op", "schema_version", "binlog_file")
"""The columns Parquet stores dictionary-encoded: few distinct values per row group. The
others (event ids, images, positions) are nearly all distinct, where a dictionary only costs:
measured on 20,000 narrow rows, files half the size and the write a third faster."""


def row_values(row: Mapping[str, Any]) -> tuple[Any, ...]:
    """A WAL row given as a dict, as the tuple of its values in ``COLUMNS`` order (a column
    it lacks is null): the form ``SegmentWriter.append_values`` takes."""
    return tuple(map(row.get, COLUMNS))


def values_table(rows: list[tuple[Any, ...]], schema: pa.Schema) -> pa.Table:
    """The Arrow table of rows given as ``row_values`` tuples: each column built from the
    transposed rows, each distinct ``committed_at`` object (a transaction's rows share one)
    converted once (Arrow converts a datetime per value, a sixth of ``from_pylist``). The same
    table as ``pa.Table.from_pylist`` of the rows as dicts (property-tested)."""
    if not rows:
        return schema.empty_table()
    arrays = []
    for field, values in zip(schema, zip(*rows, strict=True), strict=True):
        if field.name == "committed_at":
            arrays.append(_timestamps(values, field.type))
        else:
            arrays.append(pa.array(values, field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _timestamps(values: Sequence[Any], type_: pa.DataType) -> pa.Array:
    distinct: dict[int, int] = {}
    indexes = []
    objects: list[Any] = []
    for value in values:
        index = distinct.get(id(value))
        if index is None:
            index = distinct[id(value)] = len(objects)
            objects.append(value)
        indexes.append(index)
    return pa.array(objects, type_).take(pa.array(indexes, pa.int32()))


_IMAGE_INDEXES = [(COLUMNS.index(name), name) for name in IMAGE_COLUMNS]


class SegmentWriter:
    """Streams rows into a temp Parquet file; ``commit`` makes it a segment, ``abort`` drops it.

    Memory holds at most ``row_group_size`` rows (plus one open transaction up to the caller's
    spill limit); everything else is already in the file.
    """

    def __init__(
        self,
        paths: WalPaths,
        sequence: int,
        row_group_size: int = 5_000,
        format_version: int = FORMAT_VERSION,
    ):
        """``format_version`` 1 writes the previous format (text images), for tests of the
        readers' backward compatibility; capture always writes ``FORMAT_VERSION``."""
        if format_version not in (1, FORMAT_VERSION):
            raise ValueError(f"WAL format {format_version} cannot be written")
        self.format_version = format_version
        self.schema = ROW_SCHEMA_V1 if format_version == 1 else ROW_SCHEMA
        self._image_type = str if format_version == 1 else bytes
        self.paths = paths
        self.sequence = sequence
        self.row_group_size = row_group_size
        self.temp_path = paths.temp_segment(sequence)
        self._pending: list[tuple[Any, ...]] = []
        self._digest = hashlib.sha256()
        self._writer: pq.ParquetWriter | None = None
        self.rows_written = 0

    def append(self, rows: list[dict[str, Any]]) -> None:
        """Queue rows given as dicts (in order); they reach the file in row groups."""
        self.append_values([row_values(row) for row in rows])

    def append_values(self, rows: list[tuple[Any, ...]]) -> None:
        """Queue rows given as ``row_values`` tuples (in order): what capture builds, without a
        dict per row."""
        wanted, update, version = self._image_type, self._digest.update, self.format_version
        for row in rows:
            for index, name in _IMAGE_INDEXES:
                image = row[index]
                if image is not None and type(image) is not wanted:
                    raise TypeError(
                        f"WAL format {version} holds {name} as"
                        f" {wanted.__name__}, not {type(image).__name__}"
                    )
            if version < 2:
                update(digest_line(dict(zip(COLUMNS, row, strict=True)), version))
        self._pending.extend(rows)
        if len(self._pending) >= self.row_group_size:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        try:
            if self._writer is None:
                self._writer = self._open()
            table = values_table(self._pending, self.schema)
            if self.format_version >= 2:  # what is written is what is hashed
                for batch in table.to_batches():
                    self._digest.update(batch_digest_input(batch))
            self._writer.write_table(table)
        except OSError as error:
            self.abort()
            raise _staging_error(self.paths, error) from None
        self.rows_written += len(self._pending)
        self._pending = []

    def _open(self) -> pq.ParquetWriter:
        """The Parquet writer, on a temp file created 0600 first (it keeps that mode)."""
        open_private(self.temp_path, "wb").close()
        return pq.ParquetWriter(
            self.temp_path,
            self.schema,
            compression="zstd",
            use_dictionary=list(DICTIONARY_COLUMNS),
        )

    def commit(self, manifest: Manifest) -> Path:
        """Finish the file with ``manifest`` in its footer and rename it into place, durably."""
        self._flush()
        manifest.checksum = self._digest.hexdigest()
        manifest.format_version = self.format_version
        manifest.created_at = datetime.now(UTC).isoformat()
        final = self.paths.segment(self.sequence)
        try:
            if self._writer is None:
                self._writer = self._open()
                self._writer.write_table(self.schema.empty_table())
            self._writer.add_key_value_metadata({MANIFEST_KEY: manifest.to_json().encode()})
            self._writer.close()
            self._writer = None
            with self.temp_path.open("rb+") as handle:
                os.fsync(handle.fileno())
            if final.exists():
                raise StagingError(
                    f"segment {final.name} already exists; another capture wrote it, which the"
                    " staging lock should prevent: check for a second capture process."
                )
            # The byte digest is durable before the segment appears under its name.
            digest_temp = file_digest_path(self.temp_path)
            with open_private(digest_temp) as handle:
                handle.write(file_sha256(self.temp_path) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            digest_temp.rename(file_digest_path(final))
            self.temp_path.rename(final)
            fsync_dir(self.paths.segments)
        except OSError as error:
            self.abort()
            raise _staging_error(self.paths, error) from None
        # Derived bookkeeping after the commit: a failure here must not undo or fail it.
        with contextlib.suppress(OSError):
            note_tables(self.paths, manifest)
        return final

    def abort(self) -> None:
        """Drop everything written so far (the WAL is unchanged)."""
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
            self._writer = None
        self._pending = []
        self.temp_path.unlink(missing_ok=True)


def _staging_error(paths: WalPaths, error: OSError) -> StagingError:
    if error.errno == errno.ENOSPC:
        return StagingError(
            f"the staging disk is full at {paths.root}; free space or move CDC_STAGING_DIR:"
            " capture resumes from the last complete segment, nothing is lost."
        )
    return StagingError(
        f"cannot write to the staging folder {paths.root} ({error.strerror}); check its"
        " permissions and free space."
    )
