"""Excluded and masked columns (CDC_EXCLUDE_COLUMNS, CDC_MASK_COLUMNS): what never leaves the
source side as it is.

Applied wherever a row is read from the source, before anything is written: the binlog's row
images and the schema version they name (capture), the snapshot, mirror rebuilds and
reconciliation, so every path writes and compares the same documents. An excluded column is
absent from the row and from its schema version; a masked column holds the HMAC-SHA256 of the
value (hex, keyed by CDC_MASK_KEY) or a fixed mask, and its schema version says so
(``type_name`` ``… masked:hash``), so a change of the rules is a new schema version.

Invariants: a primary-key column is never excluded (refused: the mirror's ``_id`` is the key;
it may be hashed); NULL stays NULL; the hash of a value depends only on the key, the value and
its type (``images.encode_document``), so equal values join across tables and runs; the key
itself is never written anywhere (``record`` holds a fingerprint of it).
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from cdc_pipeline.core.errors import ConfigError
from cdc_pipeline.core.images import encode_document
from cdc_pipeline.core.schema import TableSchema
from cdc_pipeline.core.settings import GovernanceSettings, split_column_pattern, table_label

EXCLUDE = "exclude"
FIXED_MASK = "****"
MASKED_TYPE = " masked:"


class Governance:
    """The column rules of one pipeline, with the actions per table cached."""

    def __init__(self, settings: GovernanceSettings | None = None):
        self.settings = settings or GovernanceSettings()
        self._rules = [
            (split_column_pattern(pattern), EXCLUDE) for pattern in self.settings.exclude_columns
        ] + [(split_column_pattern(pattern), mode) for pattern, mode in self.settings.mask_columns]
        self._key = self.settings.mask_key.encode()
        self._actions: dict[tuple[str, str, tuple[str, ...]], dict[str, str]] = {}

    @property
    def active(self) -> bool:
        return bool(self._rules)

    def actions(self, schema: str, table: str, columns: tuple[str, ...]) -> dict[str, str]:
        """``column -> exclude | hash | fixed`` for the columns a rule names (an exclusion wins
        over a mask; of two masks the first listed)."""
        cached = self._actions.get((schema, table, columns))
        if cached is not None:
            return cached
        actions: dict[str, str] = {}
        for column in columns:
            for (schema_glob, table_glob, column_glob), action in self._rules:
                matches = (
                    fnmatch.fnmatchcase(schema, schema_glob)
                    and fnmatch.fnmatchcase(table, table_glob)
                    and fnmatch.fnmatchcase(column, column_glob)
                )
                if matches and (action == EXCLUDE or column not in actions):
                    actions[column] = action
        self._actions[(schema, table, columns)] = actions
        return actions

    def table_schema(self, table_schema: TableSchema) -> TableSchema:
        """The schema version rows are written under: excluded columns gone, masked ones
        marked. ConfigError when a key column is excluded."""
        actions = self.actions(table_schema.schema, table_schema.table, table_schema.column_names)
        if not actions:
            return table_schema
        label = table_label(table_schema.schema, table_schema.table)
        for name in table_schema.primary_key:
            if actions.get(name) == EXCLUDE:
                raise ConfigError(
                    f"CDC_EXCLUDE_COLUMNS excludes {label}.{name}, a primary-key column (the"
                    " mirror's _id); hash it with CDC_MASK_COLUMNS instead, or exclude the whole"
                    " table with CDC_EXCLUDE_TABLES."
                )
            if actions.get(name) == "fixed":
                raise ConfigError(
                    f"CDC_MASK_COLUMNS gives {label}.{name}, a primary-key column, a fixed mask,"
                    " which would make every key the same; hash it instead (drop ':fixed')."
                )
        columns = tuple(
            replace(column, type_name=f"{column.type_name}{MASKED_TYPE}{actions[column.name]}")
            if column.name in actions
            else column
            for column in table_schema.columns
            if actions.get(column.name) != EXCLUDE
        )
        key = table_schema.primary_key
        return TableSchema(table_schema.schema, table_schema.table, columns, key)

    def key_masked(
        self, schema: str, table: str, columns: tuple[str, ...], key: tuple[str, ...]
    ) -> bool:
        """Whether a key column is hashed: its raw values may then not be kept anywhere, so a
        read of the table cannot resume after a key (it starts over)."""
        actions = self.actions(schema, table, columns)
        return any(name in actions for name in key)

    def document(
        self, schema: str, table: str, document: Mapping[str, Any] | None
    ) -> dict[str, Any] | None:
        """A row as it may leave the source side: excluded columns dropped, masked ones masked."""
        if document is None:
            return None
        actions = self.actions(schema, table, tuple(document))
        if not actions:
            return dict(document)
        return {
            name: self.mask(value, actions[name]) if name in actions else value
            for name, value in document.items()
            if actions.get(name) != EXCLUDE
        }

    def mask(self, value: Any, mode: str) -> Any:
        """The masked form of one value (NULL stays NULL)."""
        if value is None:
            return None
        if mode == "fixed":
            return FIXED_MASK
        canonical = (encode_document({"v": value}) or "").encode()
        return hmac.new(self._key, canonical, hashlib.sha256).hexdigest()

    def key_id(self) -> str:
        """A fingerprint of CDC_MASK_KEY (not the key): tells whether two runs hashed alike."""
        if not self._key:
            return ""
        return hmac.new(self._key, b"cdc_pipeline mask key id", hashlib.sha256).hexdigest()[:16]

    def record(self) -> dict[str, Any] | None:
        """The rules as a segment's manifest records them (None when there are none)."""
        settings = self.settings
        if not (self.active or settings.exclude_tables):
            return None
        return {
            "exclude_tables": list(settings.exclude_tables),
            "exclude_columns": list(settings.exclude_columns),
            "mask_columns": [[pattern, mode] for pattern, mode in settings.mask_columns],
            "mask_key_id": self.key_id(),
        }


def governance_of(record: Mapping[str, Any] | None, mask_key: str, where: str) -> Governance:
    """The rules a segment's manifest records (``Governance.record``), with this process's
    CDC_MASK_KEY. ConfigError when the segment hashed columns with another key (or this
    process has none): what it would hash (a mirror rebuild) would not join with the WAL."""
    if not record:
        return Governance()
    settings = GovernanceSettings(
        exclude_tables=tuple(record.get("exclude_tables") or ()),
        exclude_columns=tuple(record.get("exclude_columns") or ()),
        mask_columns=tuple((str(p), str(m)) for p, m in record.get("mask_columns") or ()),
        mask_key=mask_key,
    )
    rules = Governance(settings)
    wanted = record.get("mask_key_id") or ""
    if wanted and rules.key_id() != wanted:
        state = "has no CDC_MASK_KEY" if not mask_key else "has another CDC_MASK_KEY"
        raise ConfigError(
            f"{where} hashed columns with a CDC_MASK_KEY (fingerprint {wanted}) but this loader"
            f" {state}; give it the capture's key (mirror rebuilds hash with it)."
        )
    return rules


def rules_differ_for(
    old: Mapping[str, Any] | None, new: Mapping[str, Any] | None
) -> list[tuple[str, str]]:
    """The ``(schema glob, table glob)`` of every column rule one record has and the other has
    not: the tables whose stored documents a change from ``old`` to ``new`` may make wrong."""

    def rules(record: Mapping[str, Any] | None) -> set[tuple[str, str]]:
        if not record:
            return set()
        found = {(str(p), EXCLUDE) for p in record.get("exclude_columns") or ()}
        found |= {(str(p), str(m)) for p, m in record.get("mask_columns") or ()}
        return found

    changed = rules(old) ^ rules(new)
    if (old or {}).get("mask_key_id") != (new or {}).get("mask_key_id"):
        changed |= {rule for rule in rules(new) if rule[1] == "hash"}
    return sorted({split_column_pattern(pattern)[:2] for pattern, _ in changed})


class RulesInForce:
    """The rules of the segment being loaded, for what reads the source meanwhile (a mirror
    rebuild): its manifest's record with this loader's CDC_MASK_KEY (``governance_of``)."""

    def __init__(self, mask_key: str = ""):
        self.mask_key = mask_key
        self.current = Governance()
        self._record: Mapping[str, Any] | None = None
        self._entered = False

    def enter(self, record: Mapping[str, Any] | None, where: str) -> Governance:
        """The rules of the segment at ``where`` (checked once per distinct record)."""
        if not self._entered or record != self._record:
            self.current = governance_of(record, self.mask_key, where)
            self._record, self._entered = record, True
        return self.current
