"""Unit tests of core/load/raw_documents.py: what the loader assembles from the WAL's BSON
images as bytes is, byte for byte, what the decoded path builds and pymongo would encode; the
sink gives the same writes on both paths."""

from __future__ import annotations

import dataclasses
from datetime import UTC, timedelta
from typing import Any

import bson
import pytest
from bson.decimal128 import Decimal128
from bson.errors import InvalidBSON
from bson.objectid import ObjectId
from bson.raw_bson import RawBSONDocument
from hypothesis import assume, example, given
from hypothesis import strategies as st
from pymongo import DeleteOne, InsertOne, ReplaceOne
from pymongo.write_concern import WriteConcern

from cdc_pipeline.core.images import decode_image, encode_image, is_bson_image
from cdc_pipeline.core.load import sink as sink_module
from cdc_pipeline.core.load.documents import (
    change_document,
    id_filter,
    key_identity,
    mirror_document,
    mirror_id,
    mirror_meta,
)
from cdc_pipeline.core.load.raw_documents import (
    CdcElements,
    ChangeLogDocuments,
    RawDocument,
    RawMirror,
    element_of,
    server_image,
)
from cdc_pipeline.core.load.sink import MongoSink
from cdc_pipeline.core.wal.segment import Manifest
from cdc_pipeline_tests.core.load.segment_rows import START, segment_row
from cdc_pipeline_tests.core.test_images import documents, keys, scalars


def _stored(document: dict[str, Any]) -> bytes:
    """The BSON pymongo sends for a document, keys in its order (``encode_image``)."""
    image = encode_image(document)
    assert image is not None and is_bson_image(image)
    return image


@given(documents)
@example({"amount": Decimal128("-12.50"), "id": 19, "nested": {"d": Decimal128("1")}})
@example({"n": [{"d": [Decimal128("1E+3")]}, 19], "t": "\x13"})
@example({"a": Decimal128("NaN"), "b": Decimal128("-0E-6176"), "c": b"\x13", "d": "x\x13"})
def test_a_server_image_is_the_decoded_image_encoded_again(document: dict[str, Any]) -> None:
    """Nested documents and arrays included: every image ``values`` can make is rewritten
    without decoding."""
    image = encode_image(document)
    assume(image is not None and is_bson_image(image))
    assert image is not None
    assert server_image(image, False) is image
    stored = server_image(image, True)
    decoded = decode_image(image, decimals_as_strings=True)
    assert decoded is not None and stored is not None
    assert stored == _stored(decoded)


def test_damaged_bytes_are_left_to_the_decoder() -> None:
    image = _stored({"a": Decimal128("1.5"), "b": "text"})
    assert server_image(image[:-3] + b"\x00", True) is None  # a length that does not add up
    assert server_image(image.replace(b"\x02b", b"\x7fb"), True) is None  # an unknown type
    assert element_of(image[:-5], b"b") is None


@given(st.dictionaries(keys, scalars, min_size=1, max_size=6), st.data())
def test_an_element_is_found_by_name_as_its_type_and_value_bytes(
    document: dict[str, Any], data: Any
) -> None:
    image = encode_image(document)
    assume(image is not None and is_bson_image(image))
    assert image is not None
    name = data.draw(st.sampled_from(sorted(document)))
    single = _stored({name: document[name]})
    encoded = name.encode()
    assert element_of(image, encoded) == single[4:5] + single[6 + len(encoded) : -1]
    assert element_of(image, b"\x01not a key") is None


_KEYS = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.text(max_size=12),
    st.sampled_from([0, 19, 2**31, "1", Decimal128("10.50"), 1.5, b"\x13key", True]),
    st.datetimes(timezones=st.just(UTC)).map(lambda v: v.replace(microsecond=0)),
)


@given(_KEYS, _KEYS, st.dictionaries(st.sampled_from(["name", "qty", "at"]), scalars))
def test_a_one_column_key_mirror_write_is_the_decoded_paths(
    key: Any, other: Any, values: dict[str, Any]
) -> None:
    after = {"id": key, **values}
    columns = list(after)
    mirror = RawMirror.of("shop.items", columns, ("id",))
    assert mirror is not None
    new = mirror.key_of_pk(_stored({"id": key}))
    assert new is not None
    assert mirror.key_of_image(_stored(after)) == new
    assert RawMirror.identity(new) == key_identity(key)
    assert (RawMirror.identity(new) == key_identity(other)) == (
        key_identity(key) == key_identity(other)
    )
    meta = mirror_meta("0-1-9", "batch-1", "v1", START + timedelta(seconds=9))
    document, write = mirror.upsert(new, _stored(after), CdcElements("batch-1")(segment_row(9)))
    decoded_after = decode_image(_stored(after))
    assert decoded_after is not None
    expected = mirror_document(mirror_id({"id": key}), decoded_after, meta)
    assert document.raw == bson.encode(expected)
    assert isinstance(write, ReplaceOne) and write._upsert is True
    assert write._filter.raw == bson.encode(id_filter(key))
    assert write._doc is document
    delete = mirror.delete(new)
    assert isinstance(delete, DeleteOne) and delete._filter.raw == bson.encode(id_filter(key))


def test_tables_the_bytes_cannot_serve_take_the_decoded_path() -> None:
    assert RawMirror.of("m", ["a", "b"], ("a", "b")) is None  # a composite key
    assert RawMirror.of("m", ["id", "a.b"], ("id",)) is None  # an escaped column
    assert RawMirror.of("m", ["_id", "x"], ("_id",)) is None
    assert RawMirror.of("m", ["id"], ()) is None
    mirror = RawMirror.of("m", ["id", "name"], ("id",))
    assert mirror is not None
    assert mirror.key_of_pk(_stored({"name": 1})) is None  # a pk image of another column
    assert mirror.key_of_pk(_stored({"idx": 1})) is None
    assert mirror.key_of_pk(_stored({"ix": 1})) is None  # as long as the key's name


def test_the_cdc_element_is_the_mirror_metas_and_made_once_per_transaction() -> None:
    elements = CdcElements("batch-1")
    first = elements(segment_row(9))
    meta = mirror_meta("0-1-9", "batch-1", "v1", START + timedelta(seconds=9))
    assert first == b"\x03_cdc\x00" + bson.encode(meta)
    assert elements(segment_row(9, 1)) is first
    assert elements(segment_row(9, 2, schema_version="v2")) != first
    assert elements(segment_row(10)) == b"\x03_cdc\x00" + bson.encode(
        mirror_meta("0-1-10", "batch-1", "v1", START + timedelta(seconds=10))
    )


_TEXT = st.sampled_from(["shop", "a", "ü", 'q"\\']) | st.text(
    st.characters(exclude_categories=("Cs",)), max_size=5
)
_ROW_FIELDS = st.fixed_dictionaries(
    {
        "event_id": _TEXT,
        "gtid": _TEXT,
        "row_index": st.integers(0, 3)
        | st.sampled_from([-(2**31) - 1, -(2**31), 2**31 - 1, 2**31, -(2**63), 2**63 - 1])
        | st.integers(-(2**63), 2**63 - 1),
        "source": st.just("default") | _TEXT,
        "schema": st.just("shop") | _TEXT,
        "table": st.just("items") | st.none() | _TEXT,
        "op": st.sampled_from(["insert", "update", "delete"]),
        "schema_version": st.just("v1") | st.none() | _TEXT,
        "binlog_file": st.just("bin.000001") | _TEXT,
        "binlog_pos": st.sampled_from([4, 2**31, 2**40]) | st.integers(-(2**63), 2**63 - 1),
        "committed_at": st.sampled_from([START, START + timedelta(milliseconds=1)])
        | st.datetimes(timezones=st.just(UTC)),
    }
)


@given(
    st.lists(
        st.tuples(
            st.sampled_from([None, {"id": 7}]),
            st.none() | documents,
            st.none() | documents,
            # fields that differ from the row before: none (same event), or drawn ones
            st.none() | _ROW_FIELDS,
        ),
        min_size=1,
        max_size=6,
    )
)
@example(
    [(None, None, {"a": 1}, None), (None, None, {"a": 2}, segment_row(3, 1, committed_at=START))]
)
@example([(None, None, {"a": 1}, None), (None, {"a": 1}, {"a": 2}, segment_row(3, 1, op="update"))])
@example(  # fields of other types than the WAL's go to the codec (1 == True, not alike)
    [
        (None, None, {"a": 1}, segment_row(3, gtid=None)),
        (None, None, {"a": 1}, segment_row(4, True)),
        (None, None, {"a": 1}, segment_row(5, gtid=1)),
        (None, None, {"a": 1}, segment_row(6, gtid=True)),
    ]
)
def test_change_log_documents_are_the_decoded_paths(
    draws: list[tuple[Any, dict[str, Any] | None, dict[str, Any] | None, dict[str, Any] | None]],
) -> None:
    """Over a sequence of rows, as a segment gives them: rows that share their table, position
    and time with the row before and rows that do not, each document is what pymongo encodes
    for the decoded path's document (int32 and int64 positions and indexes on both sides of
    each limit, null table and version, a GTID that is not text, a boolean index)."""
    assemble = ChangeLogDocuments("batch-7")
    row = segment_row(3)
    for pk, before, after, fields in draws:
        images = [encode_image(image) for image in (pk, before, after)]
        assume(all(image is None or is_bson_image(image) for image in images))
        row = row | (fields or {"event_id": row["event_id"] + "+", "row_index": 1})
        decoded = [decode_image(image) for image in images]
        expected = bson.encode(change_document(row, *decoded, "batch-7"))
        assert assemble(row, *images).raw == expected


@pytest.mark.parametrize("index", [2**63, -(2**63) - 1])
def test_an_index_beyond_int64_is_refused_as_the_codec_refuses_it(index: int) -> None:
    row = segment_row(3, index)
    with pytest.raises(OverflowError):
        bson.encode(change_document(row, None, None, {"a": 1}, "batch-7"))
    with pytest.raises(OverflowError):
        ChangeLogDocuments("batch-7")(row, None, None, bson.encode({"a": 1}))


def test_a_raw_document_is_true_without_decoding_its_fields() -> None:
    """pymongo tests ``if replacement``; a ``RawBSONDocument`` answers by decoding it."""
    damaged = bson.encode({"a": "text"}).replace(b"text", b"t\xffxt")
    assert bool(RawDocument(damaged)) is True
    with pytest.raises(InvalidBSON):
        len(RawDocument(damaged))  # what the base class's truth value would have done
    assert bool(RawDocument(bson.encode({}))) is False


@given(documents)
def test_a_raw_document_is_the_base_classs_document_of_the_same_bytes(
    document: dict[str, Any],
) -> None:
    """``RawDocument`` sets the base class's private fields itself: the same bytes, fields,
    equality, options and BSON as ``RawBSONDocument`` makes of them (a field pymongo renamed
    fails here)."""
    image = _stored(document)
    ours, theirs = RawDocument(image), RawBSONDocument(image)
    assert ours.raw is image
    assert ours == theirs and list(ours) == list(theirs) == list(document)
    assert bson.encode(dict(ours)) == bson.encode(dict(theirs))  # each field read back (NaN too)
    assert repr(ours).partition("(")[2] == repr(theirs).partition("(")[2]  # the options too
    assert bson.encode(ours) == image == bson.encode({"d": ours})[7:-1]


# -- the sink on both paths ------------------------------------------------------------------


class _Capture:
    """A database whose collections record every bulk write instead of sending it, in the
    order pymongo sends an unordered bulk (its inserts, its updates, its deletes), and the
    commands of ``load.write_commands`` as the same writes."""

    name = "cdc"
    write_concern = WriteConcern()

    def __init__(self) -> None:
        self.writes: list[tuple[str, bytes]] = []
        self.commands = 0

    def command(self, command: dict[str, Any]) -> dict[str, Any]:
        self.commands += 1
        name = next(iter(command))
        if name == "insert":
            sent = [InsertOne(document) for document in command["documents"]]
        elif name == "update":
            sent = [ReplaceOne(item["q"], item["u"], upsert=True) for item in command["updates"]]
        else:
            sent = [DeleteOne(item["q"]) for item in command["deletes"]]
        for operation in sent:
            self.writes.append((command[name], _operation_bson(operation)))
        return {"n": len(sent), "nModified": 0, "ok": 1}

    def __getitem__(self, collection: str) -> Any:
        capture = self

        class _Collection:
            def bulk_write(self, operations: list[Any], ordered: bool) -> None:
                assert not ordered
                for operation in sorted(operations, key=_kind_order):
                    capture.writes.append((collection, _operation_bson(operation)))

            def replace_one(self, *args: Any, **kwargs: Any) -> None:
                pass

            def estimated_document_count(self) -> int:
                return 0

        return _Collection()

    def list_collection_names(self) -> list[str]:
        return []


def _kind_order(operation: Any) -> int:
    """Where pymongo's unordered bulk sends an operation: its inserts, updates, deletes."""
    return (InsertOne, ReplaceOne, DeleteOne).index(type(operation))


def _operation_bson(operation: Any) -> bytes:
    if isinstance(operation, InsertOne):
        return b"insert" + bson.encode(operation._doc)
    if isinstance(operation, ReplaceOne):
        return b"replace" + bson.encode({"q": operation._filter, "u": operation._doc})
    assert isinstance(operation, DeleteOne)
    return b"delete" + bson.encode({"q": operation._filter})


ITEMS = {"columns": [{"name": "id"}, {"name": "name"}, {"name": "amount"}], "primary_key": ["id"]}
LINES = {"columns": [{"name": "order"}, {"name": "no"}], "primary_key": ["order", "no"]}
ESCAPED = {"columns": [{"name": "id"}, {"name": "a.b"}], "primary_key": ["id"]}
LOG = {"columns": [{"name": "message"}], "primary_key": []}


def _segment(inserts_only: bool = False) -> tuple[list[dict[str, Any]], Manifest]:
    """Rows of four tables, each path's cases; ``inserts_only``: the inserts into ``items``
    alone, every bulk of which is raw inserts."""

    def change(seq: int, index: int, table: str, op: str, pk: Any, before: Any, after: Any):
        return segment_row(
            seq,
            index,
            table=table,
            op=op,
            pk=encode_image(pk),
            before=encode_image(before),
            after=encode_image(after),
        )

    apple = {"id": 1, "name": "apple", "amount": Decimal128("1.50")}
    pear = {"id": Decimal128("2.0"), "name": "pear", "amount": Decimal128("-0.01")}
    rows = [
        change(1, 0, "items", "insert", {"id": 1}, None, apple),
        change(1, 1, "items", "insert", {"id": pear["id"]}, None, pear),
        change(2, 0, "items", "update", {"id": 1}, apple, apple | {"name": "green"}),
        change(3, 0, "items", "update", {"id": 5}, apple, apple | {"id": 5}),  # the key moves
        change(4, 0, "items", "delete", {"id": pear["id"]}, pear, None),
        change(5, 0, "items", "insert", {"id": 6}, None, {"id": 6, "name": {"d": Decimal128("1")}}),
        change(6, 0, "lines", "insert", {"order": 1, "no": 2}, None, {"order": 1, "no": 2}),
        change(7, 0, "escaped", "insert", {"id": 1}, None, {"id": 1, "a.b": 2}),
        change(8, 0, "log", "insert", None, None, {"message": "hello"}),
        change(8, 1, "log", "delete", None, {"message": "hello"}, None),
    ]
    if inserts_only:
        rows = [row for row in rows if row["table"] == "items" and row["op"] == "insert"]
    versions = {"items": ITEMS, "lines": LINES, "escaped": ESCAPED, "log": LOG}
    manifest = Manifest(
        source="default",
        sequence=7,
        flavor="mariadb",
        start_gtid="0-1-0",
        end_gtid="0-1-8",
        start_binlog_file="bin.000001",
        start_binlog_pos=4,
        end_binlog_file="bin.000001",
        end_binlog_pos=99,
        schema_versions={f"shop.{name}": {"v1": schema} for name, schema in versions.items()},
    )
    return rows, manifest


def _load_counting(
    monkeypatch: pytest.MonkeyPatch,
    items: Any,
    manifest: Manifest,
    decimals_as_strings: bool,
    path: str,
) -> tuple[list[tuple[str, bytes]], Any, int, int]:
    """A ``_Capture``'s writes, the report as a dict, the rows that the sink's method ``path``
    (``_apply_raw`` for a row, ``_apply_run`` for a run) applied, and the raw commands sent,
    after the sink applied ``items`` under ``manifest``."""
    database = _Capture()
    sink = MongoSink(
        database,  # type: ignore[arg-type]
        decimals_as_strings=decimals_as_strings,
        large_values=False,
    )
    monkeypatch.setattr(sink, "register", lambda source, schema, table, columns: table)
    taken = 0
    method = getattr(sink, path)

    def counted(item: Any, *args: Any) -> bool:
        nonlocal taken
        done = method(item, *args)
        taken += done * (item.batch.num_rows if path == "_apply_run" else 1)
        return done

    monkeypatch.setattr(sink, path, counted)
    report = sink.apply(items, manifest, [])
    return database.writes, dataclasses.asdict(report), taken, database.commands


@pytest.mark.parametrize("inserts_only", [False, True], ids=["every case", "inserts only"])
@pytest.mark.parametrize("decimals_as_strings", [False, True], ids=["standard", "nx-27017"])
def test_the_sink_writes_the_same_on_the_raw_and_the_decoded_path(
    decimals_as_strings: bool, inserts_only: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows, manifest = _segment(inserts_only)

    def load() -> tuple[list[tuple[str, bytes]], Any, int, int]:
        return _load_counting(monkeypatch, rows, manifest, decimals_as_strings, "_apply_raw")

    writes, report, raw, commands = load()
    monkeypatch.setattr(MongoSink, "_apply_raw", lambda *args: False)
    decoded_writes, decoded_report, none, no_commands = load()
    assert none == 0
    assert writes == decoded_writes
    assert report == decoded_report
    assert no_commands == 0  # a decoded document goes through bulk_write
    if inserts_only:
        assert raw == 3
        assert len(writes) == 6  # the change log, the mirror
        assert commands == 2  # each a bulk of raw inserts, sent as one command
        return
    # the rows of items and of the keyless log take the raw path; the composite key and the
    # escaped column take the decoded one
    assert raw == 8
    assert len(writes) == len(rows) + 6  # change log, and each key's last mirror write
    # the mirror bulk of items went as three commands (its insert, its replacements, its
    # delete); the change log's bulk and the other mirrors' hold decoded documents
    assert commands == 3
    assert sink_module.ROW_CHANGES in {collection for collection, _ in writes}


@pytest.mark.parametrize("small_bulks", [False, True], ids=["bulks of 1,000", "bulks of 2"])
@pytest.mark.parametrize("decimals_as_strings", [False, True], ids=["standard", "nx-27017"])
def test_the_sink_writes_the_same_from_runs_as_row_by_row(
    decimals_as_strings: bool, small_bulks: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows given as a segment's batch, split into runs (``load.row_runs``, every run however
    short), give the writes, in the same order, and the report that the same rows give one by
    one: runs of inserts, updates (a key moved among them) and deletes of a one-column key
    take the kernels, the rest (a composite key, an escaped column, a keyless table) the row
    path. With bulks of two and phases of three keys, the change log's and the mirrors'
    flushes interleave as they do row by row."""
    import pyarrow as pa

    from cdc_pipeline.core.load import row_runs
    from cdc_pipeline.core.wal.segment import ROW_SCHEMA

    rows, manifest = _segment()
    more = [  # a run of two transactions and three rows events, keys seen before
        segment_row(9 + n // 6, n, pk=encode_image({"id": 10 + n % 5}))
        | {"after": encode_image({"id": 10 + n % 5}), "binlog_pos": 40 + n // 4}
        for n in range(9)
    ]
    unread = {"id": 30, "o": ObjectId("65f0c0ffee0000000000abcd"), "d": Decimal128("1")}
    # the decimal rewrite cannot read the row at 30 (nx-27017): its run takes the row path
    rows = [
        *rows[:2],
        *more[:4],
        *rows[2:],
        *more[4:],
        segment_row(11, pk=encode_image({"id": 30}), after=encode_image(unread)),
        # the walk cannot find the key of the before image (an ObjectId before it): the row
        # path decodes it, and finds that the key moved from 32 to 31
        segment_row(12, op="update", pk=encode_image({"id": 31}))
        | {"before": encode_image({"o": unread["o"], "id": 32}), "after": encode_image({"id": 31})},
    ]
    manifest = dataclasses.replace(manifest, end_gtid="0-1-12")
    monkeypatch.setattr(row_runs, "MIN_RUN", 1)
    if small_bulks:
        monkeypatch.setattr(sink_module, "BULK_CHUNK", 2)
        monkeypatch.setattr(sink_module, "PHASE_KEYS", 3)

    def load(items: Any) -> tuple[list[tuple[str, bytes]], Any, int]:
        writes, report, runs, _ = _load_counting(
            monkeypatch, items, manifest, decimals_as_strings, "_apply_run"
        )
        return writes, report, runs

    batch = pa.RecordBatch.from_pylist(rows, schema=ROW_SCHEMA)
    by_run, run_report, in_runs = load(row_runs.runs_and_rows([batch]))
    by_row, row_report, none = load(rows)
    assert none == 0
    # items' rows in runs of 6 inserts, 2 updates (the second moves its key), 1 delete, 1
    # insert and 6 inserts; not lines (two key columns), nor escaped; under nx-27017 not the
    # last run, whose row at 30 the rewrite cannot read
    assert in_runs == (6 + 2 + 1 + 1 + (0 if decimals_as_strings else 6))
    assert by_run == by_row
    assert run_report == row_report


def test_a_run_is_left_to_the_row_path_when_dead_lettering_or_a_value_may_not_fit() -> None:
    """What the row path does for such rows (set a refusal aside, move a value out of line)
    the kernels do not: the run's rows are applied one by one."""
    import pyarrow as pa

    from cdc_pipeline.core.load.row_runs import RowRun
    from cdc_pipeline.core.load.sink import _Phase
    from cdc_pipeline.core.wal.segment import ROW_SCHEMA

    _, manifest = _segment()
    small = segment_row(1, pk=encode_image({"id": 1}), after=encode_image({"id": 1, "name": "a"}))
    large = small | {"after": encode_image({"id": 1, "name": "x" * (9 * 2**20)})}

    def applied(row: dict[str, Any], **changes: Any) -> bool:
        sink = MongoSink(_Capture(), large_values=True)  # type: ignore[arg-type]
        sink.register = lambda source, schema, table, columns: table  # type: ignore[method-assign]
        for name, value in changes.items():
            setattr(sink, name, value)
        run = RowRun(pa.RecordBatch.from_pylist([row], schema=ROW_SCHEMA), row["op"])
        keys = {("shop.items", "v1"): ("id",)}
        assemblers = (CdcElements("b"), ChangeLogDocuments("b"))
        report = sink_module.ApplyReport("b")
        return sink._apply_run(run, manifest, keys, [], _Phase(), assemblers, report, {})

    update = small | {"op": "update", "before": large["after"]}  # large before the change
    assert applied(small)
    assert applied(small | {"op": "update", "before": small["after"]})
    assert not applied(large)
    assert not applied(update)
    assert applied(large, large=None)
    assert applied(update, large=None)
    assert not applied(small, dead=object())
