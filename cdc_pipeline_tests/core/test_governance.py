"""``core.governance`` and its settings: which columns a rule names, how values are masked,
and what is refused in one sentence (pure logic; the pipeline is tested in
``integration/test_governance.py``)."""

from __future__ import annotations

import pytest

from cdc_pipeline.core.errors import ConfigError
from cdc_pipeline.core.governance import FIXED_MASK, Governance, governance_of, rules_differ_for
from cdc_pipeline.core.schema import ColumnSpec, TableSchema
from cdc_pipeline.core.settings import CaptureSettings, GovernanceSettings

KEY = "k" * 32
ENV = {
    "CDC_MYSQL_URL": "mysql://cdc@127.0.0.1:3306",
    "CDC_EXCLUDE_TABLES": "shop.audit_*",
    "CDC_EXCLUDE_COLUMNS": "shop.users.password_hash, `a.b`.t.secret",
    "CDC_MASK_COLUMNS": "shop.*.email, shop.users.card:fixed, shop.users.ssn:hash",
    "CDC_MASK_KEY": KEY,
}


def test_settings_from_the_environment() -> None:
    settings = CaptureSettings.from_env(ENV)
    governance = settings.governance
    assert governance.exclude_tables == ("shop.audit_*",)
    assert governance.exclude_columns == ("shop.users.password_hash", "`a.b`.t.secret")
    assert governance.mask_columns == (
        ("shop.*.email", "hash"),
        ("shop.users.card", "fixed"),
        ("shop.users.ssn", "hash"),
    )
    assert KEY not in repr(governance)
    assert settings.includes("shop", "orders") and not settings.includes("shop", "audit_log")


@pytest.mark.parametrize(
    ("changes", "sentence"),
    [
        ({"CDC_MASK_KEY": ""}, "CDC_MASK_KEY is not set"),
        ({"CDC_MASK_KEY": "short"}, "CDC_MASK_KEY is too short"),
        ({"CDC_EXCLUDE_COLUMNS": "shop.users"}, "needs the form schema.table.column"),
        ({"CDC_MASK_COLUMNS": "shop.users"}, "needs the form schema.table.column"),
        ({"CDC_EXCLUDE_TABLES": "shop"}, "needs the form schema.table"),
    ],
)
def test_what_cannot_be_applied_is_refused(changes: dict[str, str], sentence: str) -> None:
    with pytest.raises(ConfigError, match=sentence) as refused:
        CaptureSettings.from_env({**ENV, **changes})
    assert KEY not in str(refused.value)


def test_a_fixed_mask_alone_needs_no_key() -> None:
    settings = GovernanceSettings.from_env({"CDC_MASK_COLUMNS": "s.t.c:fixed"})
    assert Governance(settings).document("s", "t", {"c": "x", "d": 1}) == {"c": FIXED_MASK, "d": 1}


def test_masking_keeps_joins_types_and_nulls() -> None:
    governance = Governance(GovernanceSettings.from_env(ENV))
    users = governance.document(
        "shop",
        "users",
        {"id": 1, "email": "a@x", "password_hash": "h", "card": "4111", "ssn": None},
    )
    orders = governance.document("shop", "orders", {"id": 9, "email": "a@x"})
    assert users is not None and orders is not None
    assert "password_hash" not in users
    assert users["card"] == FIXED_MASK and users["ssn"] is None
    assert users["email"] == orders["email"] != "a@x" and len(users["email"]) == 64
    assert governance.mask(5, "hash") != governance.mask("5", "hash")  # the type counts
    other = Governance(GovernanceSettings.from_env({**ENV, "CDC_MASK_KEY": "z" * 32}))
    assert other.mask("a@x", "hash") != users["email"]  # the key counts


def test_the_schema_version_says_what_was_done_and_a_key_is_never_excluded() -> None:
    governance = Governance(GovernanceSettings.from_env(ENV))
    table = TableSchema(
        "shop",
        "users",
        (
            ColumnSpec("id", "int", 3),
            ColumnSpec("email", "varchar(64)", 15),
            ColumnSpec("password_hash", "char(60)", 254),
        ),
        ("id",),
    )
    written = governance.table_schema(table)
    assert written.column_names == ("id", "email")
    assert written.column("email").type_name == "varchar(64) masked:hash"
    assert written.version != table.version
    keyed = TableSchema("shop", "users", table.columns, ("password_hash",))
    with pytest.raises(ConfigError, match="primary-key column"):
        governance.table_schema(keyed)
    fixed_key = TableSchema("shop", "users", (ColumnSpec("card", "varchar(19)", 15),), ("card",))
    with pytest.raises(ConfigError, match="fixed mask"):
        governance.table_schema(fixed_key)


def test_the_record_holds_no_key_and_a_loader_with_another_key_is_refused() -> None:
    governance = Governance(GovernanceSettings.from_env(ENV))
    record = governance.record()
    assert record is not None and KEY not in str(record) and record["mask_key_id"]
    assert governance_of(record, KEY, "seg 1").mask("x", "hash") == governance.mask("x", "hash")
    with pytest.raises(ConfigError, match="has no CDC_MASK_KEY"):
        governance_of(record, "", "seg 1")
    with pytest.raises(ConfigError, match="has another CDC_MASK_KEY"):
        governance_of(record, "y" * 32, "seg 1")


def test_a_change_of_rules_names_the_tables_it_touches() -> None:
    old = Governance(GovernanceSettings.from_env(ENV)).record()
    new_env = {**ENV, "CDC_MASK_COLUMNS": "shop.*.email, shop.users.ssn:hash"}
    new = Governance(GovernanceSettings.from_env(new_env)).record()
    assert rules_differ_for(old, old) == []
    assert rules_differ_for(old, new) == [("shop", "users")]  # the card rule went
    assert rules_differ_for(None, new) == [("a.b", "t"), ("shop", "*"), ("shop", "users")]
