"""Reading the WAL as people and their tools do: one segment's changes as a table, and the
text ``cdc-pipeline wal show`` prints.

The public entry point is ``cdc_pipeline.wal.read_changes`` (README "Reading the WAL"). It reads
both WAL formats (``segment.FORMAT_VERSION``): whatever the format, a caller sees the same
decoded images.

Invariants: by default a segment is read only after its bytes and every row were verified
against its ``.sha256`` and manifest (``read_verified``), so what a person reads is what the
loader would apply; nothing here writes to the WAL.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import pyarrow.parquet as pq
from bson import json_util
from bson.json_util import RELAXED_JSON_OPTIONS

from cdc_pipeline.core.errors import ConfigError
from cdc_pipeline.core.images import decode_document
from cdc_pipeline.core.wal.segment import (
    COLUMNS,
    IMAGE_COLUMNS,
    Manifest,
    read_manifest,
    read_verified,
    refuse_newer_format,
)
from cdc_pipeline.core.wal.staging import WalPaths, partition_key, sequence_from_text

Images = Literal["dict", "json", "raw"]


def _image_decoder(images: Images) -> Any:
    if images == "raw":
        return lambda image: image
    if images == "dict":
        return decode_document
    return lambda image: (
        None
        if image is None
        else json_util.dumps(decode_document(image), json_options=RELAXED_JSON_OPTIONS)
    )


def iter_changes(
    path: Path | str, *, verify: bool = True, images: Images = "dict"
) -> Iterator[dict[str, Any]]:
    """The rows of one segment in order, as dicts, images decoded (see ``read_changes``); one
    Parquet batch in memory at a time."""
    path = Path(path)
    if images not in ("dict", "json", "raw"):
        raise ValueError(f"images must be 'dict', 'json' or 'raw', not {images!r}")
    decode = _image_decoder(images)
    if verify:
        rows = read_verified(path).rows()
    else:
        refuse_newer_format(path, read_manifest(path))
        rows = (
            row
            for batch in pq.ParquetFile(path).iter_batches(batch_size=5_000)
            for row in batch.to_pylist()
        )
    for row in rows:
        for name in IMAGE_COLUMNS:
            row[name] = decode(row[name])
        yield row


def read_changes(path: Path | str, *, verify: bool = True, images: Images = "dict") -> pd.DataFrame:
    """One WAL segment's changes as a pandas DataFrame, one row per change in binlog order.

    Columns are the segment's (``event_id``, ``gtid``, ``row_index``, ``source``, ``schema``,
    ``table``, ``op``, ``pk``, ``before``, ``after``, ``schema_version``, ``binlog_file``,
    ``binlog_pos``, ``committed_at``, ``statement``), the same for both WAL formats.

    ``images`` says what ``pk``/``before``/``after`` hold: ``"dict"`` (default) the decoded
    documents, typed as the loader writes them to MongoDB (``int``/``Int64``, ``Decimal128``,
    ``bytes``, tz-aware UTC ``datetime``, nested dicts and lists); ``"json"`` relaxed Extended
    JSON text, for tools that read JSON (DuckDB's ``json_extract``, ``jq``); ``"raw"`` the
    stored bytes (BSON in format 2, Extended JSON text in format 1). A DDL row's ``after`` is
    the session it ran in, not a row image.

    ``verify`` (default) first checks the file's bytes and every row against the ``.sha256``
    and the manifest, raising ``CorruptSegmentError`` if they differ; ``verify=False`` reads a
    file without its ``.sha256`` (a copy, or a quarantined segment).
    """
    rows = list(iter_changes(path, verify=verify, images=images))
    return pd.DataFrame(rows, columns=list(COLUMNS))


def find_segment(paths: WalPaths, partition: str) -> tuple[Path, str]:
    """The segment file of a partition key (or a segment number) and where it lies: ``""`` in
    the WAL, ``"quarantined"`` in the quarantine folder. ``ConfigError`` (one sentence) when it
    is in neither."""
    try:
        sequence = sequence_from_text(partition)
    except ValueError:
        raise ConfigError(
            f"{partition.strip()!r} is not a partition key; give one like"
            f" {partition_key(paths.source, 42)} or a segment number (see 'cdc-pipeline status')."
        ) from None
    path = paths.segment(sequence)
    if path.exists():
        return path, ""
    quarantined = paths.quarantine / path.name
    if quarantined.exists():
        return quarantined, "quarantined"
    raise ConfigError(
        f"partition {partition_key(paths.source, sequence)} has no segment in {paths.segments}:"
        " it was never captured, or it was loaded and retired after CDC_RETENTION_HOURS"
        " (the change log in MongoDB, row_changes, keeps its rows)."
    )


def _manifest_summary(manifest: Manifest, where: str) -> dict[str, Any]:
    return {
        "partition": manifest.partition_key,
        "where": where or "wal",
        "format_version": manifest.format_version,
        "kind": manifest.kind,
        "flavor": manifest.flavor,
        "start_gtid": manifest.start_gtid,
        "end_gtid": manifest.end_gtid,
        "binlog": f"{manifest.start_binlog_file}:{manifest.start_binlog_pos} .."
        f" {manifest.end_binlog_file}:{manifest.end_binlog_pos}",
        "transactions": manifest.transaction_count,
        "rows": manifest.row_count,
        "ddl": manifest.ddl_count,
        "counts": manifest.counts,
        "first_committed_at": manifest.first_committed_at,
        "last_committed_at": manifest.last_committed_at,
        "created_at": manifest.created_at,
        "governance": manifest.governance,
        "snapshot": manifest.snapshot,
    }


def show(
    paths: WalPaths, partition: str, *, limit: int | None = None
) -> tuple[dict[str, Any], Iterator[dict[str, Any]]]:
    """What ``cdc-pipeline wal show`` reports: the manifest's summary and the changes (images
    as relaxed Extended JSON documents), the segment verified first unless quarantined."""
    path, where = find_segment(paths, partition)
    manifest = read_manifest(path)
    rows = iter_changes(path, verify=not where, images="json")

    def changes() -> Iterator[dict[str, Any]]:
        for index, row in enumerate(rows):
            if limit is not None and index >= limit:
                return
            for name in IMAGE_COLUMNS:
                if row[name] is not None:
                    row[name] = json.loads(row[name])
            yield row

    return _manifest_summary(manifest, where), changes()


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def change_line(row: dict[str, Any]) -> str:
    """One change as one line of text: where, what, and the image that says it."""
    table = f"{row['schema']}.{row['table']}" if row.get("table") else row["schema"]
    head = f"{row['gtid']} #{row['row_index']}  {row['op']:<8} {table}"
    if row["op"] == "ddl":
        return f"{head}  {row['statement']}"
    parts = [f"key={_compact(row['pk'])}"] if row["pk"] is not None else []
    if row["before"] is not None:
        parts.append(f"before={_compact(row['before'])}")
    if row["after"] is not None:
        parts.append(f"after={_compact(row['after'])}")
    return f"{head}  {'  '.join(parts)}"


def summary_text(summary: dict[str, Any]) -> str:
    where = "" if summary["where"] == "wal" else f" ({summary['where']}: not verified)"
    return "\n".join(
        [
            f"partition {summary['partition']}{where}: {summary['kind']} segment, WAL format"
            f" {summary['format_version']}, {summary['flavor']}",
            f"  transactions {summary['start_gtid'] or '(none)'} .. {summary['end_gtid']}",
            f"  binlog {summary['binlog']}",
            f"  {summary['rows']} row changes, {summary['ddl']} DDL, {summary['transactions']}"
            f" transactions, committed {summary['first_committed_at']} .."
            f" {summary['last_committed_at']}",
        ]
    )
