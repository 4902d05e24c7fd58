"""The invariants every load and fault test checks, against real servers.

- every mirror collection equals its source table (computed independently by SQL);
- every row event of the binlog is in ``row_changes`` exactly once;
- the checkpoint equals the source's GTID state;
- a canonical dump of a MongoDB database, to compare states before and after;
- a replay of one table's WAL that finds a change both in a snapshot and the stream, or in
  neither.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

from bson import json_util
from pymongo.database import Database

from cdc_pipeline.core.gtid import GtidSet
from cdc_pipeline.core.images import decode_document
from cdc_pipeline.core.load.documents import (
    CATALOG,
    CHECKPOINTS,
    ROW_CHANGES,
    mirror_field,
    mirror_id,
)
from cdc_pipeline.core.load.large_values import resolve_mirror_document
from cdc_pipeline.core.load.rebaseline import source_rebaseline
from cdc_pipeline.core.load.sink import MongoSink
from cdc_pipeline.core.mysql.catalog import describe_table, list_tables
from cdc_pipeline.core.mysql.source_rows import row_documents
from cdc_pipeline.core.settings import SourceUrl
from cdc_pipeline.core.wal.segment import read_manifest, read_rows
from cdc_pipeline.core.wal.staging import WalPaths, list_segments
from cdc_pipeline_tests.binlog_oracle import executed_gtids
from devtools.local_servers import SourceServer


def _canonical(value: Any, exact_int_width: bool = True) -> str:
    """Canonical Extended JSON; ``exact_int_width=False`` lets int32 equal int64 (relaxed JSON),
    for the nx-27017 stand-in, which stores the integer 0 as int64 (a gap of the stand-in)."""
    options = (
        json_util.CANONICAL_JSON_OPTIONS if exact_int_width else json_util.RELAXED_JSON_OPTIONS
    )
    return json_util.dumps(value, json_options=options)


def _by_field(document: dict[str, Any]) -> dict[str, Any]:
    """The document's top-level fields in name order: a column renamed or added in place sits
    at the end of a mirror document (MongoDB documents are maps; ``verify`` ignores the order
    too), while values, nested documents and ``_id`` keep theirs."""
    return {name: document[name] for name in sorted(document)}


@contextlib.contextmanager
def sink_with_source(
    server: SourceServer, target: Any, database_name: str, **options: Any
) -> Iterator[MongoSink]:
    """A sink on the test's MongoDB database, as ``target`` configures it, that rebuilds
    mirrors after column changes by reading ``server`` (what ``run_load`` gives a load)."""
    url = SourceUrl.parse(server.url)
    with source_rebaseline(url) as rebaseline, target.client(tz_aware=True) as client:
        yield target.sink(client[database_name], rebaseline=rebaseline, **options)


def mirror_differences(
    server: SourceServer, schema: str, sink: MongoSink, exact_int_width: bool | None = None
) -> list[str]:
    """Every difference between the source tables of ``schema`` and their mirrors (capped).

    Type-strict; only the int32/int64 width is ignored on the stand-in (``sink.mirror_style``
    tells which server this is, unless ``exact_int_width`` says so).
    """
    exact = sink.mirror_style == "dotted" if exact_int_width is None else exact_int_width
    database = sink.database
    problems: list[str] = []
    with contextlib.closing(server.connect(charset="utf8mb4")) as connection:
        with connection.cursor() as cursor:
            cursor.execute("SET time_zone = '+00:00'")
        tables = list_tables(connection, (f"`{schema.replace('`', '``')}`.*",))
        for _, table in tables:
            described = describe_table(connection, schema, table)
            collection = database[sink.mirror(schema, table)]
            if not described.primary_key:
                if collection.estimated_document_count():
                    problems.append(f"{table} has no primary key but has a mirror")
                continue
            expected = {}
            for document in row_documents(connection, described):
                identity = mirror_id(described.key_of(document))
                identity = sink.stored(identity)
                mirrored = {"_id": identity}
                mirrored.update((mirror_field(k), v) for k, v in sink.stored(document).items())
                expected[_canonical(identity, exact)] = _canonical(_by_field(mirrored), exact)
            actual = {}
            for document in collection.find():
                resolve_mirror_document(database, document)  # values kept in GridFS
                document.pop("_cdc", None)
                actual[_canonical(document["_id"], exact)] = _canonical(_by_field(document), exact)
            for key in sorted(set(expected) | set(actual)):
                if expected.get(key) != actual.get(key):
                    problems.append(
                        f"{table} {key}: source {expected.get(key)} mirror {actual.get(key)}"
                    )
    # Which table a mirror holds is what cdc_collections says, never parsed from its name.
    listed = set(database.list_collection_names())
    present = {table for _, table in tables}
    for entry in database[CATALOG].find({"schema": schema}):
        name = entry["_id"]
        if entry["table"] not in present and name in listed:
            if database[name].estimated_document_count():
                problems.append(f"mirror {name} exists but its source table does not")
        elif name != sink.mirror(schema, entry["table"]):
            problems.append(f"cdc_collections maps {entry['table']} to {name}, not its mirror")
    for _, table in tables:
        name = sink.mirror(schema, table)
        if name not in listed or not database[name].estimated_document_count():
            continue
        if database[CATALOG].find_one({"_id": name, "schema": schema, "table": table}) is None:
            problems.append(f"mirror {name} of {table} is not in cdc_collections")
    return problems[:20]


def change_log_problems(
    expected: list[tuple[str, str, str]], database: Database[Any], schema: str
) -> list[str]:
    """Compare ``row_changes`` of ``schema`` with the oracle's ``(event_id, table, op)`` list."""
    staged = [
        (document["_id"], document["table"], document["op"])
        for document in database[ROW_CHANGES].find({"schema": schema})
    ]
    problems = []
    if len(staged) != len(set(staged)):
        problems.append("row_changes holds an event twice")  # impossible with _id, kept honest
    missing = set(expected) - set(staged)
    extra = set(staged) - set(expected)
    if missing:
        problems.append(f"{len(missing)} events missing, e.g. {sorted(missing)[:3]}")
    if extra:
        problems.append(f"{len(extra)} events not in the binlog, e.g. {sorted(extra)[:3]}")
    return problems


def checkpoint_matches_source(
    server: SourceServer, database: Database[Any], source: str = "default"
) -> tuple[bool, str, str]:
    checkpoint = database[CHECKPOINTS].find_one({"_id": source})
    have = checkpoint["gtid"] if checkpoint else ""
    want = executed_gtids(server)
    applied = GtidSet.parse(have, server.flavor)  # type: ignore[arg-type]
    return applied == want, str(applied), str(want)


def dump(database: Database[Any], skip: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """Every document of every collection, canonical and sorted (for before/after equality)."""
    return {
        name: sorted(_canonical(document) for document in database[name].find())
        for name in sorted(database.list_collection_names())
        if name not in skip
    }


def replay_problems(paths: WalPaths, table: str) -> list[str]:
    """Replay ``table``'s WAL in order and check every stream event against the state so far.

    The oracle for "no change doubled, none lost" between snapshot and stream: after the
    snapshot rows, an update or delete must find exactly its ``before`` image, and an insert
    must find no row. A change the snapshot already holds shows as a ``before`` that does not
    match (or an insert of a present key); a change in neither shows the same way at the key's
    next event. A key the current snapshot has not reached yet (a resumed snapshot reads the
    rest of the table in a later view) is not checked until its snapshot row arrives.
    """
    state: dict[str, str] = {}
    problems: list[str] = []
    reached: str | None = None  # the last key the snapshot has written so far, None: none
    complete = False
    for path in list_segments(paths):
        manifest = read_manifest(path)
        info = manifest.snapshot or {}
        for row in read_rows(path):
            if row["table"] != table or row["op"] == "ddl":
                continue
            key = row["pk"]
            if row["op"] == "snapshot":
                state[key] = row["after"]
                continue
            ahead = not complete and (reached is None or _key_after(key, reached))
            if row["op"] == "insert":
                if key in state:
                    problems.append(f"{row['event_id']}: insert of {key}, already present")
            elif key not in state:
                if not ahead:
                    problems.append(f"{row['event_id']}: {row['op']} of {key}, which is missing")
            elif decode_document(state[key]) != decode_document(row["before"]):
                problems.append(f"{row['event_id']}: {row['op']} of {key} finds another row")
            if row["op"] == "delete":
                state.pop(key, None)
            else:
                state[key] = row["after"]
        if manifest.kind == "snapshot" and info.get("table", "").endswith(f".{table}"):
            last = decode_document(info.get("last_key"))
            reached = json.dumps(last["key"]) if last else reached
            complete = bool(info.get("table_done"))
    return problems[:10]


def _key_after(pk_text: str, reached: str) -> bool:
    key = decode_document(pk_text) or {}
    return list(key.values()) > json.loads(reached)
