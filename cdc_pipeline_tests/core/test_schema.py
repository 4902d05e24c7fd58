"""Unit tests of core/schema.py: column specs from table maps, version ids and schema diffs."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import pytest
from pymysqlreplication.column import Column
from pymysqlreplication.constants import FIELD_TYPE

from cdc_pipeline.core.errors import SourceSettingError
from cdc_pipeline.core.mysql.decoder_fixes import install_decoder_fixes
from cdc_pipeline.core.schema import (
    ColumnSpec,
    TableSchema,
    column_spec_from_library,
    schema_diff,
    table_schema_from_rows_event,
    with_json_columns,
)


def library_column(name: str, type_code: int, **details: Any) -> Column:
    """A table-map column as pymysqlreplication builds it (its kwargs constructor)."""
    data: dict[str, Any] = {
        "type": type_code,
        "name": name,
        "unsigned": False,
        "is_primary": False,
        "charset_id": None,
        "character_set_name": None,
        "collation_name": None,
        "enum_values": None,
        "set_values": None,
        "visibility": False,
    }
    data.update(details)
    return Column(**data)


UTF8 = {"character_set_name": "utf8", "collation_name": "utf8mb4_general_ci"}
LATIN1 = {"character_set_name": "cp1252", "collation_name": "latin1_swedish_ci"}
BINARY = {"character_set_name": "binary", "collation_name": "binary"}


@pytest.mark.parametrize(
    ("column", "type_name", "charset", "max_length"),
    [
        (library_column("a", FIELD_TYPE.TINY), "tinyint", None, None),
        (library_column("a", FIELD_TYPE.INT24, unsigned=True), "mediumint unsigned", None, None),
        (library_column("a", FIELD_TYPE.LONGLONG, unsigned=True), "bigint unsigned", None, None),
        (
            library_column("a", FIELD_TYPE.NEWDECIMAL, precision=65, decimals=30),
            "decimal(65,30)",
            None,
            None,
        ),
        (library_column("a", FIELD_TYPE.FLOAT, size=4), "float", None, None),
        (library_column("a", FIELD_TYPE.DOUBLE, size=8), "double", None, None),
        (library_column("a", FIELD_TYPE.VARCHAR, max_length=80, **UTF8), "varchar", "utf8mb4", 80),
        (library_column("a", FIELD_TYPE.STRING, max_length=5, **LATIN1), "char", "latin1", 5),
        (library_column("a", FIELD_TYPE.STRING, max_length=4, **BINARY), "binary(4)", None, 4),
        (library_column("a", FIELD_TYPE.VARCHAR, max_length=8, **BINARY), "varbinary(8)", None, 8),
        (library_column("a", FIELD_TYPE.BLOB, length_size=2, **BINARY), "blob", None, 65535),
        (
            library_column("a", FIELD_TYPE.BLOB, length_size=3, **LATIN1),
            "mediumtext",
            "latin1",
            2**24 - 1,
        ),
        (
            library_column("a", FIELD_TYPE.BLOB, length_size=4, **UTF8),
            "longtext",
            "utf8mb4",
            2**32 - 1,
        ),
        (library_column("a", FIELD_TYPE.DATE), "date", None, None),
        (library_column("a", FIELD_TYPE.DATETIME2, fsp=0), "datetime", None, None),
        (library_column("a", FIELD_TYPE.DATETIME2, fsp=6), "datetime(6)", None, None),
        (library_column("a", FIELD_TYPE.TIMESTAMP2, fsp=3), "timestamp(3)", None, None),
        (library_column("a", FIELD_TYPE.TIME2, fsp=2), "time(2)", None, None),
        (library_column("a", FIELD_TYPE.YEAR, unsigned=True), "year", None, None),
        (library_column("a", FIELD_TYPE.JSON, length_size=4), "json", None, None),
        (
            library_column("a", FIELD_TYPE.ENUM, size=1, enum_values=["", "a", "it's"], **LATIN1),
            "enum('a','it''s')",
            "latin1",
            None,
        ),
        (
            library_column("a", FIELD_TYPE.SET, size=1, set_values=["x", "y"], **UTF8),
            "set('x','y')",
            "utf8mb4",
            None,
        ),
        (library_column("a", FIELD_TYPE.BIT, bits=10, bytes=2), "bit(10)", None, None),
        (library_column("a", FIELD_TYPE.GEOMETRY, length_size=4, **BINARY), "geometry", None, None),
        (library_column("a", 242), "unknown(242)", None, None),
    ],
)
def test_column_spec_names_the_type(
    column: Column, type_name: str, charset: str | None, max_length: int | None
) -> None:
    spec = column_spec_from_library(column)
    assert (spec.type_name, spec.charset, spec.max_length) == (type_name, charset, max_length)
    assert ColumnSpec.from_dict(spec.to_dict()) == spec


def test_enum_and_set_members_keep_definition_order() -> None:
    enum = column_spec_from_library(
        library_column("e", FIELD_TYPE.ENUM, size=1, enum_values=["", "b", "a"], **UTF8)
    )
    assert enum.members == ("b", "a")
    assert column_spec_from_library(
        library_column("s", FIELD_TYPE.SET, size=1, set_values=["z", "x"], **UTF8)
    ).members == ("z", "x")


def test_charset_is_the_mysql_name_whatever_codec_the_library_uses() -> None:
    before = column_spec_from_library(
        library_column("a", FIELD_TYPE.VARCHAR, max_length=5, **LATIN1)
    )
    install_decoder_fixes()
    fixed = library_column(
        "a",
        FIELD_TYPE.VARCHAR,
        max_length=5,
        character_set_name="mysql_latin1",
        collation_name="latin1_swedish_ci",
    )
    assert column_spec_from_library(fixed) == before
    assert before.charset == "latin1"
    unknown_collation = library_column(
        "a", FIELD_TYPE.VARCHAR, max_length=5, character_set_name="utf8", collation_name=None
    )
    assert column_spec_from_library(unknown_collation).charset == "utf8mb4"


def rows_event(columns: list[Column], primary_key: Any = "id") -> SimpleNamespace:
    return SimpleNamespace(schema="shop", table="items", columns=columns, primary_key=primary_key)


def items_columns() -> list[Column]:
    return [
        library_column("id", FIELD_TYPE.LONG, is_primary=True),
        library_column("name", FIELD_TYPE.VARCHAR, max_length=80, **UTF8),
        library_column("price", FIELD_TYPE.NEWDECIMAL, precision=10, decimals=2),
    ]


# The canonical text the version hashes, written out so that a format change is noticed.
ITEMS_CANONICAL = (
    '{"columns":['
    '{"charset":null,"fsp":null,"max_length":null,"members":[],"name":"id","type_code":3,'
    '"type_name":"int","unsigned":false},'
    '{"charset":"utf8mb4","fsp":null,"max_length":80,"members":[],"name":"name","type_code":15,'
    '"type_name":"varchar","unsigned":false},'
    '{"charset":null,"fsp":null,"max_length":null,"members":[],"name":"price","type_code":246,'
    '"type_name":"decimal(10,2)","unsigned":false}'
    '],"primary_key":["id"]}'
)
ITEMS_VERSION = "v" + hashlib.sha256(ITEMS_CANONICAL.encode()).hexdigest()[:16]


def test_schema_from_a_rows_event() -> None:
    schema = table_schema_from_rows_event(rows_event(items_columns()))
    assert (schema.schema, schema.table) == ("shop", "items")
    assert schema.column_names == ("id", "name", "price")
    assert schema.primary_key == ("id",)
    assert schema.column("price").type_name == "decimal(10,2)"
    with pytest.raises(KeyError):
        schema.column("nope")


@pytest.mark.parametrize(
    ("library_key", "primary_key"), [("", ()), ("id", ("id",)), (("id", "name"), ("id", "name"))]
)
def test_primary_key_shapes(library_key: Any, primary_key: tuple[str, ...]) -> None:
    schema = table_schema_from_rows_event(rows_event(items_columns(), library_key))
    assert schema.primary_key == primary_key


def test_missing_column_names_mean_binlog_row_metadata_is_not_full() -> None:
    columns = [library_column("UNKNOWN_COL0", FIELD_TYPE.LONG)]
    with pytest.raises(SourceSettingError, match="binlog_row_metadata=FULL"):
        table_schema_from_rows_event(rows_event(columns, ""))


def test_version_is_a_fixed_function_of_the_columns() -> None:
    schema = table_schema_from_rows_event(rows_event(items_columns()))
    assert schema.version == ITEMS_VERSION
    assert schema.version == table_schema_from_rows_event(rows_event(items_columns())).version


def test_version_is_the_same_in_another_process() -> None:
    # Guards against anything process-dependent (hash randomisation, dict order) in the id.
    program = (
        "from cdc_pipeline.core.schema import ColumnSpec, TableSchema\n"
        "print(TableSchema('s', 't', (ColumnSpec('id', 'int', 3), ColumnSpec('n', 'varchar', 15,"
        " charset='utf8mb4', max_length=80)), ('id',)).version)\n"
    )
    here = TableSchema(
        "other",
        "names",
        (
            ColumnSpec("id", "int", 3),
            ColumnSpec("n", "varchar", 15, charset="utf8mb4", max_length=80),
        ),
        ("id",),
    )
    result = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345"},
    )
    assert result.stdout.strip() == here.version


def _changed(
    schema: TableSchema, columns: list[ColumnSpec], key: tuple[str, ...] | None = None
) -> str:
    return replace(schema, columns=tuple(columns), primary_key=key or schema.primary_key).version


def test_every_column_change_gives_a_new_version_and_a_table_rename_does_not() -> None:
    schema = table_schema_from_rows_event(rows_event(items_columns()))
    id_, name, price = schema.columns
    extra = ColumnSpec("stock", "int", FIELD_TYPE.LONG)
    versions = {
        "base": schema.version,
        "added": _changed(schema, [id_, name, price, extra]),
        "dropped": _changed(schema, [id_, name]),
        "renamed": _changed(schema, [id_, replace(name, name="title"), price]),
        "retyped": _changed(schema, [id_, name, replace(price, type_name="decimal(12,2)")]),
        "unsigned": _changed(schema, [replace(id_, unsigned=True), name, price]),
        "charset": _changed(schema, [id_, replace(name, charset="latin1"), price]),
        "widened": _changed(schema, [id_, replace(name, max_length=160), price]),
        "reordered": _changed(schema, [id_, price, name]),
        "new key": _changed(schema, [id_, name, price], ("id", "name")),
    }
    assert len(set(versions.values())) == len(versions)
    assert replace(schema, schema="archive", table="old_items").version == schema.version


def test_schema_dict_round_trip_and_corruption_check() -> None:
    schema = table_schema_from_rows_event(rows_event(items_columns()))
    data = schema.to_dict()
    assert data["version"] == schema.version
    assert TableSchema.from_dict(data) == schema
    data["columns"][1]["type_name"] = "text"
    with pytest.raises(ValueError, match="corrupt"):
        TableSchema.from_dict(data)


def test_with_json_columns_marks_mariadb_longtext() -> None:
    columns = [*items_columns(), library_column("doc", FIELD_TYPE.BLOB, length_size=4, **UTF8)]
    schema = table_schema_from_rows_event(rows_event(columns))
    marked = with_json_columns(schema, ["doc"])
    assert marked.column("doc").type_name == "json"
    assert marked.column("doc").type_code == FIELD_TYPE.BLOB
    assert marked.version != schema.version
    assert with_json_columns(schema, []) == schema
    with pytest.raises(ValueError, match="not a MariaDB JSON"):
        with_json_columns(schema, ["name"])
    with pytest.raises(ValueError, match="no columns"):
        with_json_columns(schema, ["ghost"])


# --- schema_diff ----------------------------------------------------------------------------


def _schema(*columns: ColumnSpec, key: tuple[str, ...] = ("id",)) -> TableSchema:
    return TableSchema("shop", "items", tuple(columns), key)


ID = ColumnSpec("id", "int", FIELD_TYPE.LONG)
NAME = ColumnSpec("name", "varchar", FIELD_TYPE.VARCHAR, charset="utf8mb4", max_length=80)
PRICE = ColumnSpec("price", "decimal(10,2)", FIELD_TYPE.NEWDECIMAL)
EMPTY = {
    "added": [],
    "dropped": [],
    "renamed": [],
    "retyped": [],
    "reordered": [],
    "primary_key": [],
}


def test_diff_from_nothing_adds_everything() -> None:
    assert schema_diff(None, _schema(ID, NAME)) == {**EMPTY, "added": ["id", "name"]}


def test_diff_of_equal_schemas_is_empty() -> None:
    assert schema_diff(_schema(ID, NAME), _schema(ID, NAME)) == EMPTY


def test_diff_add_and_drop() -> None:
    assert schema_diff(_schema(ID, NAME), _schema(ID, NAME, PRICE)) == {**EMPTY, "added": ["price"]}
    assert schema_diff(_schema(ID, NAME, PRICE), _schema(ID, PRICE)) == {
        **EMPTY,
        "dropped": ["name"],
    }


def test_diff_rename_is_same_position_same_type() -> None:
    title = replace(NAME, name="title")
    assert schema_diff(_schema(ID, NAME, PRICE), _schema(ID, title, PRICE)) == {
        **EMPTY,
        "renamed": [["name", "title"]],
    }
    moved_title = schema_diff(_schema(ID, NAME, PRICE), _schema(ID, PRICE, title))
    assert (moved_title["dropped"], moved_title["added"]) == (["name"], ["title"])
    retitled = replace(title, type_name="text", type_code=FIELD_TYPE.BLOB)
    changed = schema_diff(_schema(ID, NAME), _schema(ID, retitled))
    assert (changed["dropped"], changed["added"], changed["renamed"]) == (["name"], ["title"], [])


def test_diff_retype_names_old_and_new_types() -> None:
    wider = replace(PRICE, type_name="decimal(12,2)")
    latin1 = replace(NAME, charset="latin1", max_length=20)
    assert schema_diff(_schema(ID, NAME, PRICE), _schema(ID, latin1, wider)) == {
        **EMPTY,
        "retyped": [
            [
                "name",
                "varchar(80 bytes) character set utf8mb4",
                "varchar(20 bytes) character set latin1",
            ],
            ["price", "decimal(10,2)", "decimal(12,2)"],
        ],
    }


def test_diff_reorder_and_key_change() -> None:
    assert schema_diff(_schema(ID, NAME, PRICE), _schema(ID, PRICE, NAME)) == {
        **EMPTY,
        "reordered": ["price", "name"],
    }
    assert schema_diff(_schema(ID, NAME), _schema(ID, NAME, key=("id", "name"))) == {
        **EMPTY,
        "primary_key": [["id"], ["id", "name"]],
    }
