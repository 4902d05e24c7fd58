"""The loader's MongoDB operations, asserted document by document on every available backend.

Backends (``contract_mongo``): nx-27017, the mongoeco wire server, a real MongoDB. Data stays tiny:
mongoeco does tens of writes per second. Documents are compared as canonical Extended JSON, so
key order and BSON types (int32/int64, dates) count. Where a backend genuinely differs, the
comparison says so in one documented place (``_mapping``, ``_fresh_name``).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bson import ObjectId, json_util
from pymongo.database import Database
from pymysqlreplication.constants import FIELD_TYPE

from cdc_pipeline.core.images import decode_document, encode_document, encode_image
from cdc_pipeline.core.load.documents import (
    CATALOG,
    CHECKPOINTS,
    DDL_HISTORY,
    ROW_CHANGES,
    SCHEMA_VERSIONS,
    Checkpoint,
    id_filter,
    mirror_document,
    upsert_by_id,
)
from cdc_pipeline.core.load.rebuild import rename_collection
from cdc_pipeline.core.load.schema_versions import register_schema_versions
from cdc_pipeline.core.load.sink import MongoSink
from cdc_pipeline.core.schema import ColumnSpec, TableSchema
from cdc_pipeline.core.wal.segment import IMAGE_COLUMNS, Manifest
from cdc_pipeline_tests.contract.conftest import ContractBackend

pytestmark = pytest.mark.integration

SOURCE = "default"
START = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
BATCH = "default-000000000007"


def _int(name: str) -> ColumnSpec:
    return ColumnSpec(name, "int", FIELD_TYPE.LONG)


def _text(name: str) -> ColumnSpec:
    return ColumnSpec(name, "varchar(20)", FIELD_TYPE.VARCHAR, charset="utf8mb4", max_length=80)


TABLES = {
    "items": TableSchema("shop", "items", (_int("id"), _text("name"), _int("qty")), ("id",)),
    # Key order differs from column order: the mirror _id follows the key.
    "lines": TableSchema(
        "shop", "lines", (_int("line_no"), _int("order_id"), _text("sku")), ("order_id", "line_no")
    ),
    "audit": TableSchema("shop", "audit", (_text("message"),)),
    "scratch": TableSchema("shop", "scratch", (_int("id"),), ("id",)),
    "old_items": TableSchema("shop", "old_items", (_int("id"), _text("name")), ("id",)),
}


def _change(
    seq: int, index: int, table: str, op: str, before: Any = None, after: Any = None
) -> dict[str, Any]:
    """A WAL row as capture writes it (``wal.ROW_SCHEMA``, ``segment_builder.add_rows``)."""
    schema = TABLES[table]
    image = after if after is not None else before
    pk = {name: image[name] for name in schema.primary_key} if schema.primary_key else None
    return _row(seq, index, table, op, encode_image(pk), schema.version) | {
        "before": encode_image(before),
        "after": encode_image(after),
    }


def _ddl(seq: int, table: str, statement: str) -> dict[str, Any]:
    return _row(seq, 0, table, "ddl", None, None) | {"statement": statement}


def _row(seq: int, index: int, table: str, op: str, pk: Any, version: Any) -> dict[str, Any]:
    gtid = f"0-1-{seq}"
    return {
        "event_id": f"{gtid}#{'ddl' if op == 'ddl' else index}",
        "gtid": gtid,
        "row_index": index,
        "source": SOURCE,
        "schema": "shop",
        "table": table,
        "op": op,
        "pk": pk,
        "before": None,
        "after": None,
        "schema_version": version,
        "binlog_file": "bin.000001",
        "binlog_pos": 1_000 + 10 * seq + index,
        "committed_at": START + timedelta(seconds=seq),
        "statement": None,
    }


def _segment(with_rename: bool, archive: str = "archive") -> list[dict[str, Any]]:
    apple, plum = {"id": 1, "name": "apple", "qty": 0}, {"id": 3, "name": "plum", "qty": 7}
    line_2 = {"line_no": 2, "order_id": 10, "sku": "B"}
    rows = [
        _change(1, 0, "items", "insert", after=apple),
        _change(1, 1, "items", "insert", after={"id": 2, "name": "pear", "qty": 5}),
        _change(1, 2, "items", "insert", after=plum),
        _change(2, 0, "items", "update", apple, apple | {"name": "green apple"}),
        _change(3, 0, "items", "delete", before={"id": 2, "name": "pear", "qty": 5}),
        _change(4, 0, "items", "update", plum, plum | {"id": 30}),  # the key moves
        _change(5, 0, "lines", "insert", after={"line_no": 1, "order_id": 10, "sku": "A"}),
        _change(5, 1, "lines", "insert", after=line_2),
        _change(6, 0, "lines", "update", line_2, line_2 | {"sku": "C"}),
        _change(7, 0, "audit", "insert", after={"message": "hello"}),
        _change(8, 0, "scratch", "insert", after={"id": 1}),
        _change(8, 1, "scratch", "insert", after={"id": 2}),
        _ddl(9, "scratch", "TRUNCATE TABLE `scratch`"),
        _change(10, 0, "scratch", "insert", after={"id": 3}),
    ]
    if with_rename:
        rows.append(_change(11, 0, "old_items", "insert", after={"id": 1, "name": "old"}))
        rows.append(_ddl(12, "old_items", f"RENAME TABLE `old_items` TO `{archive}`"))
    return rows


def _manifest(sequence: int = 7, **changes: Any) -> Manifest:
    manifest = Manifest(
        source=SOURCE,
        sequence=sequence,
        flavor="mariadb",
        start_gtid="0-1-0",
        end_gtid="0-1-12",
        start_binlog_file="bin.000001",
        start_binlog_pos=4,
        end_binlog_file="bin.000001",
        end_binlog_pos=1_200,
        schema_versions={
            f"shop.{name}": {schema.version: schema.to_dict()} for name, schema in TABLES.items()
        },
        last_committed_at=(START + timedelta(seconds=12)).isoformat(),
    )
    return dataclasses.replace(manifest, **changes)


def _canonical(document: Mapping[str, Any]) -> str:
    return json_util.dumps(document, json_options=json_util.CANONICAL_JSON_OPTIONS)


def _texts(documents: Iterable[Mapping[str, Any]]) -> list[str]:
    return sorted(_canonical(document) for document in documents)


def _dump(database: Database[Any]) -> str:
    """Every document of every collection, as sorted canonical Extended JSON."""
    names = sorted(database.list_collection_names())
    return json.dumps({name: _texts(database[name].find()) for name in names})


def _mapping(document: Mapping[str, Any]) -> dict[str, Any]:
    """Top-level fields in name order: MongoDB >= 5.0 (and mongoeco) create the fields of an
    upsert's ``$setOnInsert`` in lexicographic order, nx-27017 in the order given. Used for
    ``cdc_schema_versions`` only, whose documents are made that way."""
    return dict(sorted(document.items()))


def _fresh_name(table: str, database: Database[Any]) -> str:
    """A rename target used once per server: nx-27017 runs every rename in its ``admin``
    database (ignoring the namespaces and ``dropTarget``), so a target name that an earlier
    rename in any database already produced makes the next one fail ("already exists")."""
    return f"{table}_{database.name.rsplit('_', 1)[-1]}"


def _meta(seq: int, table: str) -> dict[str, Any]:
    return {
        "gtid": f"0-1-{seq}",
        "batch": BATCH,
        "schema_version": TABLES[table].version,
        "committed_at": START + timedelta(seconds=seq),
    }


def _expected_change(row: Mapping[str, Any]) -> dict[str, Any]:
    """A ``row_changes`` document as CONTRACT.md lays it out."""
    fields = ("gtid", "row_index", "source", "schema", "table", "op")
    return {
        "_id": row["event_id"],
        **{name: row[name] for name in fields},
        "pk": decode_document(row["pk"]),
        "before": decode_document(row["before"]),
        "after": decode_document(row["after"]),
        **{name: row[name] for name in ("schema_version", "binlog_file", "binlog_pos")},
        "committed_at": row["committed_at"],
        "batch": BATCH,
    }


def _expected_ddl(row: Mapping[str, Any], kind: str) -> dict[str, Any]:
    return {
        "_id": row["gtid"],
        **{name: row[name] for name in ("gtid", "source", "schema", "table")},
        "kind": kind,
        **{name: row[name] for name in ("statement", "committed_at", "binlog_file", "binlog_pos")},
        "batch": BATCH,
    }


def _as_runs(rows: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The rows as the loader gives them to the sink: a segment batch split into runs of rows
    (``load.row_runs``, every run however short) and single rows."""
    import pyarrow as pa

    from cdc_pipeline.core.load import row_runs
    from cdc_pipeline.core.wal.segment import ROW_SCHEMA

    monkeypatch.setattr(row_runs, "MIN_RUN", 1)
    return row_runs.runs_and_rows([pa.RecordBatch.from_pylist(rows, schema=ROW_SCHEMA)])


@pytest.mark.parametrize("as_runs", [False, True], ids=["rows", "runs"])
@pytest.mark.parametrize("with_rename", [False, True], ids=["no-rename", "with-rename"])
def test_applying_a_segment_gives_exact_documents_and_a_replay_changes_no_byte(
    contract_mongo: ContractBackend,
    contract_db: Database[Any],
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    with_rename: bool,
    as_runs: bool,
) -> None:
    """The documents the CONTRACT lays out, from rows one by one and from runs of rows (the
    loader's way: items' inserts, its update that moves a key, its delete, lines' composite
    key and the keyless audit table each as a run), and the same bytes when applied again."""
    sink = MongoSink(contract_db, mirror_style=contract_mongo.mirror_style)
    archive = _fresh_name("archive", contract_db)
    rows = _segment(with_rename, archive)

    def given() -> Any:
        return _as_runs(rows, monkeypatch) if as_runs else rows

    report = sink.apply(given(), _manifest())

    assert report.tables_without_key == {"shop.audit": 1}
    changes = [row for row in rows if row["op"] != "ddl"]
    assert _texts(contract_db[ROW_CHANGES].find()) == _texts(map(_expected_change, changes))
    items = [
        mirror_document(1, {"id": 1, "name": "green apple", "qty": 0}, _meta(2, "items")),
        mirror_document(30, {"id": 30, "name": "plum", "qty": 7}, _meta(4, "items")),
    ]
    lines = [
        mirror_document(
            {"order_id": 10, "line_no": number},
            {"line_no": number, "order_id": 10, "sku": sku},
            _meta(seq, "lines"),
        )
        for number, sku, seq in ((1, "A", 5), (2, "C", 6))
    ]
    assert list(items[0]) == ["_id", "id", "name", "qty", "_cdc"]  # the CONTRACT's layout
    assert list(lines[0]["_id"]) == ["order_id", "line_no"]  # key order, not column order
    expected: dict[str, list[dict[str, Any]]] = {
        sink.mirror("shop", "items"): items,
        sink.mirror("shop", "lines"): lines,
        sink.mirror("shop", "scratch"): [mirror_document(3, {"id": 3}, _meta(10, "scratch"))],
    }
    ddl = [_expected_ddl(rows[12], "truncate")]
    if with_rename:
        renamed = mirror_document(1, {"id": 1, "name": "old"}, _meta(11, "old_items"))
        expected[sink.mirror("shop", archive)] = [renamed]  # the old_items row, moved
        ddl.append(_expected_ddl(rows[-1], "rename_table"))
    for name, documents in expected.items():
        assert _texts(contract_db[name].find()) == _texts(documents), name
    assert _texts(contract_db[DDL_HISTORY].find()) == _texts(ddl)
    names = set(contract_db.list_collection_names())
    assert sink.mirror("shop", "audit") not in names  # a table without a key: change log only
    assert sink.mirror("shop", "old_items") not in names
    assert names == {*expected, ROW_CHANGES, DDL_HISTORY, CATALOG}
    catalog = {
        entry["_id"]: (entry["schema"], entry["table"]) for entry in contract_db[CATALOG].find()
    }
    tables = {"items", "lines", "scratch", *([archive] if with_rename else [])}
    assert catalog == {sink.mirror("shop", table): ("shop", table) for table in tables}

    first = _dump(contract_db)
    sink.apply(given(), _manifest())
    assert _dump(contract_db) == first


@pytest.mark.parametrize("as_runs", [False, True], ids=["rows", "runs"])
def test_a_reload_rewrites_the_change_log_as_the_wal_has_it(
    contract_mongo: ContractBackend,
    contract_db: Database[Any],
    monkeypatch: pytest.MonkeyPatch,
    as_runs: bool,
) -> None:
    """Change-log documents, and the mirror documents of inserted rows, are inserted, and one
    already there is replaced, not kept: a segment loaded again (after a kill, or
    re-captured) leaves them as the WAL holds them, a stale or damaged document included,
    and fills in a missing one. Mirrors of both kinds of key: one column (written from the
    images' bytes) and composite (from decoded images, its ``_id`` a document); loaded again
    row by row, and as the loader gives the rows, in runs."""
    sink = MongoSink(contract_db, mirror_style=contract_mongo.mirror_style)
    rows = _segment(False, _fresh_name("archive", contract_db))
    sink.apply(rows, _manifest())
    first = _dump(contract_db)
    stale, lost = [row["event_id"] for row in rows if row["op"] != "ddl"][1:3]
    contract_db[ROW_CHANGES].update_one({"_id": stale}, {"$set": {"batch": "x", "op": "?"}})
    contract_db[ROW_CHANGES].delete_one({"_id": lost})
    lines, scratch = sink.mirror("shop", "lines"), sink.mirror("shop", "scratch")
    inserted_line = id_filter({"order_id": 10, "line_no": 1})  # inserted, never changed
    assert contract_db[lines].update_one(inserted_line, {"$set": {"sku": "?"}}).modified_count
    assert contract_db[scratch].update_one({"_id": 3}, {"$set": {"_cdc": {}}}).modified_count
    assert _dump(contract_db) != first

    again = _as_runs(rows, monkeypatch) if as_runs else rows  # (its inserts from runs)
    MongoSink(contract_db, mirror_style=contract_mongo.mirror_style).apply(again, _manifest())

    assert _dump(contract_db) == first


def test_a_replace_upsert_keeps_the_key_as_id(
    contract_mongo: ContractBackend, contract_db: Database[Any]
) -> None:
    """nx-27017 gives a new ObjectId when a replacement lacks ``_id``: the sink always sets it."""
    sink = MongoSink(contract_db, mirror_style=contract_mongo.mirror_style)
    name = sink.mirror("shop", "lines")
    keys: list[Any] = [7, "k", {"order_id": 10, "line_no": 2}]
    for version in ("first", "second"):  # the first upsert inserts, the second replaces
        documents = [mirror_document(key, {"v": version}, _meta(1, "lines")) for key in keys]
        sink.bulk(name, [upsert_by_id(document) for document in documents])
        stored = list(contract_db[name].find())
        assert _texts(stored) == _texts(documents)
        assert not any(isinstance(document["_id"], ObjectId) for document in stored)


def test_a_checkpoint_reads_back_as_written(contract_db: Database[Any]) -> None:
    """Round trips only: refusing an older manifest after a newer one is the loader's job."""
    sink = MongoSink(contract_db)
    assert sink.read_checkpoint(SOURCE) is None
    first = sink.write_checkpoint(_manifest(end_binlog_pos=2**32 + 5))  # int64 on the wire
    assert _without_time(sink.read_checkpoint(SOURCE)) == _without_time(first)
    before = datetime.now(UTC) - timedelta(milliseconds=1)  # BSON dates keep milliseconds
    written = sink.write_checkpoint(_manifest(sequence=8, end_gtid="0-1-20,1-2-3"))
    after = datetime.now(UTC)

    read = sink.read_checkpoint(SOURCE)

    assert read is not None and read.updated_at is not None
    # write_checkpoint returns one now() as isoformat and stores another as a BSON date, which
    # read_checkpoint gives back as str(datetime): compare the instant, not the two texts.
    assert before <= datetime.fromisoformat(read.updated_at) <= after
    assert _without_time(read) == _without_time(written)
    stored = list(contract_db[CHECKPOINTS].find())
    assert len(stored) == 1
    assert isinstance(stored[0]["updated_at"], datetime) and stored[0]["updated_at"].tzinfo
    assert _canonical({**stored[0], "updated_at": None}) == _canonical(
        {
            "_id": SOURCE,
            "gtid": "0-1-20,1-2-3",
            "flavor": "mariadb",
            "binlog_file": "bin.000001",
            "binlog_pos": 1_200,
            "last_partition": "default-000000000008",
            "last_sequence": 8,
            "last_committed_at": (START + timedelta(seconds=12)).isoformat(),
            "updated_at": None,
        }
    )


def _without_time(checkpoint: Checkpoint | None) -> Checkpoint | None:
    return dataclasses.replace(checkpoint, updated_at=None) if checkpoint else None


def test_registering_schema_versions_twice_changes_nothing(contract_db: Database[Any]) -> None:
    manifest = _manifest()
    first_gtids = {(f"shop.{name}", TABLES[name].version): "0-1-1" for name in TABLES}

    created = register_schema_versions(contract_db, manifest, first_gtids)

    assert [entry["table"] for entry in created] == sorted(f"shop.{name}" for name in TABLES)
    diffs = {entry["table"]: entry["diff"] for entry in created}
    stored = {document["_id"]: document for document in contract_db[SCHEMA_VERSIONS].find()}
    lines = TABLES["lines"]
    key = f"{SOURCE}:shop.lines:{lines.version}"
    assert _canonical(_mapping(stored[key])) == _canonical(
        _mapping(
            {
                "_id": key,
                "source": SOURCE,
                "table": "shop.lines",
                "version": lines.version,
                "columns": [
                    {"name": "line_no", "type": "int"},
                    {"name": "order_id", "type": "int"},
                    {"name": "sku", "type": "varchar(20)(80 bytes) character set utf8mb4"},
                ],
                "primary_key": ["order_id", "line_no"],
                "field_escapes": {},
                "schema": lines.to_dict(),
                "first_gtid": "0-1-1",
                "first_sequence": 7,
                "first_batch": BATCH,
                "order": 0,
                "diff_from_previous": diffs["shop.lines"],
            }
        )
    )
    first = _dump(contract_db)

    again = register_schema_versions(contract_db, _manifest(sequence=8), {})

    assert again == []
    assert _dump(contract_db) == first


def test_a_rename_replaces_its_target_and_a_second_one_is_a_no_op(
    contract_mongo: ContractBackend,
    contract_db: Database[Any],
    request: pytest.FixtureRequest,
) -> None:
    sink = MongoSink(contract_db, mirror_style=contract_mongo.mirror_style)
    old, new = (
        sink.mirror("shop", "items"),
        sink.mirror("shop", _fresh_name("archive", contract_db)),
    )
    moved = [{"_id": 1, "v": "old-1"}, {"_id": 2, "v": "old-2"}]
    contract_db[old].insert_many([dict(document) for document in moved])
    contract_db[new].insert_many([{"_id": 1, "v": "replaced"}, {"_id": 9, "v": "dropped"}])

    rename_collection(sink, old, new)

    assert old not in contract_db.list_collection_names()
    assert _texts(contract_db[new].find()) == _texts(moved)
    first = _dump(contract_db)
    rename_collection(sink, old, new)  # a replay: the old name is gone, the rename already happened
    assert _dump(contract_db) == first


def test_a_rename_whose_source_is_gone_changes_nothing(
    contract_mongo: ContractBackend, contract_db: Database[Any]
) -> None:
    sink = MongoSink(contract_db, mirror_style=contract_mongo.mirror_style)
    new = sink.mirror("shop", "archive")
    contract_db[new].insert_one({"_id": 1, "v": "kept"})
    first = _dump(contract_db)

    rename_collection(sink, sink.mirror("shop", "items"), new)

    assert _dump(contract_db) == first


def test_a_segment_of_the_previous_wal_format_loads_to_the_same_bytes(
    contract_mongo: ContractBackend, contract_db: Database[Any]
) -> None:
    """WAL format 1 (Extended JSON text images) and format 2 (BSON images) of one segment give
    the same database, document for document: a WAL captured before the upgrade still loads."""
    current = _segment(with_rename=False)
    previous = [
        row | {name: encode_document(decode_document(row[name])) for name in IMAGE_COLUMNS}
        for row in current
    ]
    assert isinstance(current[0]["after"], bytes) and isinstance(previous[0]["after"], str)
    MongoSink(contract_db, mirror_style=contract_mongo.mirror_style).apply(previous, _manifest())
    loaded_from_text = _dump(contract_db)
    for name in contract_db.list_collection_names():
        contract_db.drop_collection(name)
    assert _dump(contract_db) == "{}"
    MongoSink(contract_db, mirror_style=contract_mongo.mirror_style).apply(current, _manifest())
    assert _dump(contract_db) == loaded_from_text
