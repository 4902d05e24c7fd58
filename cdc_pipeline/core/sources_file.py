"""Several sources in one deployment: the YAML file named by CDC_SOURCES_FILE.

Without the file, one source is configured by the process's CDC_* variables, as before. With
it, each entry of ``sources:`` is one source, and every per-source setting of that source comes
from the file (its ``defaults:`` first, then the entry), never from the process's CDC_*
variables, so one source's setting cannot leak into another. Secrets stay in the environment:
the file names the variable that holds each one (``url_env``, ``mongo_uri_env``,
``mask_key_env``) and refuses the values themselves.

``SourceEntry.environ()`` turns an entry into the mapping the ``from_env`` functions of
``core.settings`` read, so everything below the wiring runs unchanged, once per source.

Refused with one sentence naming the file (and the source): an unknown key, a secret written in
the file, a name that is not a valid Dagster name part, two sources with the same name, two
sources reading one server with the same server id, two sources writing one MongoDB database
(their change logs would collide: two MariaDB servers with the same server id and domain write
the same GTIDs, so one source's ``row_changes`` ids would be the other's; and mirrors of equal
table names would be one collection), two sources sharing a staging folder and name.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from cdc_pipeline.core.errors import ConfigError

FILE_VARIABLE = "CDC_SOURCES_FILE"

SETTING_KEYS: dict[str, str] = {
    "server_id": "CDC_SERVER_ID",
    "include_tables": "CDC_INCLUDE_TABLES",
    "exclude_tables": "CDC_EXCLUDE_TABLES",
    "exclude_columns": "CDC_EXCLUDE_COLUMNS",
    "mask_columns": "CDC_MASK_COLUMNS",
    "start_position": "CDC_START_POSITION",
    "staging_dir": "CDC_STAGING_DIR",
    "segment_max_events": "CDC_SEGMENT_MAX_EVENTS",
    "tick_max_seconds": "CDC_TICK_MAX_SECONDS",
    "retention_hours": "CDC_RETENTION_HOURS",
    "mongo_db": "CDC_MONGO_DB",
    "mongo_compat": "CDC_MONGO_COMPAT",
    "mongo_retry_seconds": "CDC_MONGO_RETRY_SECONDS",
    "breaker_probe_seconds": "CDC_BREAKER_PROBE_SECONDS",
    "on_unloadable": "CDC_ON_UNLOADABLE",
    "lag_warn_seconds": "CDC_LAG_WARN_SECONDS",
    "lag_error_seconds": "CDC_LAG_ERROR_SECONDS",
    "lag_warn_transactions": "CDC_LAG_WARN_TRANSACTIONS",
    "retention_warn_seconds": "CDC_RETENTION_WARN_SECONDS",
    "reconcile_wait_seconds": "CDC_RECONCILE_WAIT_SECONDS",
}
"""A key of a source entry (or of ``defaults:``) -> the variable it sets for that source."""

SECRET_KEYS: dict[str, str] = {
    "url_env": "CDC_MYSQL_URL",
    "mongo_uri_env": "CDC_MONGO_URI",
    "mask_key_env": "CDC_MASK_KEY",
}
"""A key naming the variable that holds a secret -> the variable it stands for."""

SECRET_DEFAULTS = {"mongo_uri_env": "CDC_MONGO_URI", "mask_key_env": "CDC_MASK_KEY"}
"""Where a secret is read when the file does not say (the source URL has no default)."""

OTHER_KEYS = ("name", "mongo_pool")
REFUSED_SECRETS = ("url", "mongo_uri", "mask_key", "password")
PER_SOURCE_VARIABLES = frozenset([*SETTING_KEYS.values(), *SECRET_KEYS.values(), "CDC_SOURCE_NAME"])
"""Variables a sources file sets for each source: the process's own values are not used."""

URL_FROM = "_CDC_MYSQL_URL_FROM"
MONGO_URI_FROM = "_CDC_MONGO_URI_FROM"
"""Set in a source's environment: the variable its URL / URI came from, for error messages."""

NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,39}$")


@dataclass(frozen=True)
class SourceEntry:
    """One source of the file: its name, settings by variable, and where its secrets are."""

    name: str
    settings: dict[str, str]
    """Variable -> value, for every key the file gave (defaults merged)."""
    secret_variables: dict[str, str]
    """``CDC_MYSQL_URL`` / ``CDC_MONGO_URI`` / ``CDC_MASK_KEY`` -> the variable holding it."""
    mongo_pool: str | None = None
    """A Dagster pool every load of this source runs in (caps loads into one MongoDB)."""
    file: Path = field(default=Path("?"))

    @property
    def url_variable(self) -> str:
        return self.secret_variables["CDC_MYSQL_URL"]

    def environ(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """``base`` (the process environment) without any per-source variable of its own, with
        this source's settings and secrets: what ``core.settings``' ``from_env`` reads."""
        base = os.environ if base is None else base
        env = {name: value for name, value in base.items() if name not in PER_SOURCE_VARIABLES}
        env.update(self.settings)
        env["CDC_SOURCE_NAME"] = self.name
        for variable, holder in self.secret_variables.items():
            value = base.get(holder, "")
            if value.strip():
                env[variable] = value
        env[URL_FROM] = self.url_variable
        env[MONGO_URI_FROM] = self.secret_variables["CDC_MONGO_URI"]
        return env


def sources_file(environ: Mapping[str, str] | None = None) -> Path | None:
    """The file CDC_SOURCES_FILE names, or None when the variable is not set."""
    text = (os.environ if environ is None else environ).get(FILE_VARIABLE, "").strip()
    return Path(text).expanduser() if text else None


def read_sources(environ: Mapping[str, str] | None = None) -> list[SourceEntry] | None:
    """The sources of CDC_SOURCES_FILE, or None when it is not set (single-source mode)."""
    path = sources_file(environ)
    if path is None:
        return None
    try:
        stamp = path.stat().st_mtime_ns
    except OSError as error:
        raise ConfigError(
            f"{FILE_VARIABLE} names {path}, which cannot be read ({error.strerror});"
            " point it at the YAML file of your sources."
        ) from None
    return list(_parse_cached(str(path), stamp))


def find_source(name: str, environ: Mapping[str, str] | None = None) -> SourceEntry:
    """The source called ``name`` in CDC_SOURCES_FILE."""
    entries = read_sources(environ) or []
    for entry in entries:
        if entry.name == name:
            return entry
    names = ", ".join(entry.name for entry in entries) or "none"
    raise ConfigError(f"{FILE_VARIABLE} has no source named '{name}' (it has: {names}).")


def secret_holders(environ: Mapping[str, str] | None = None) -> set[str]:
    """Every variable the sources file names as holding a secret (empty without a file, or
    when the file cannot be read: its own error is reported where it is used)."""
    try:
        entries = read_sources(environ) or []
    except ConfigError:
        return set()
    return {holder for entry in entries for holder in entry.secret_variables.values()}


@lru_cache(maxsize=8)
def _parse_cached(path: str, stamp: int) -> tuple[SourceEntry, ...]:
    del stamp  # part of the cache key: an edited file is read again
    return tuple(parse_sources(Path(path).read_text(encoding="utf-8"), Path(path)))


def parse_sources(text: str, path: Path) -> list[SourceEntry]:
    """The entries of a sources file's text (``path`` names it in errors)."""
    import yaml  # PyYAML, a Dagster dependency

    where = f"{FILE_VARIABLE} ({path})"
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{where} is not valid YAML{line}; fix the file.") from None
    if not isinstance(document, dict) or not isinstance(document.get("sources"), list):
        raise ConfigError(f"{where} needs a 'sources:' list, one entry per source.")
    unknown = sorted(set(document) - {"sources", "defaults"})
    if unknown:
        raise ConfigError(f"{where} has unknown top-level keys {unknown}; use sources, defaults.")
    defaults = document.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ConfigError(f"{where}: 'defaults:' must be a mapping of settings.")
    _check_keys(defaults, f"{where} defaults", allow_name=False)
    entries = []
    for number, raw in enumerate(document["sources"], start=1):
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: source {number} must be a mapping with at least a name.")
        entries.append(_entry(raw, defaults, where, number, path))
    if not entries:
        raise ConfigError(f"{where} lists no sources; add one, or unset {FILE_VARIABLE}.")
    _check_together(entries, where)
    return entries


def _check_keys(values: Mapping[str, Any], where: str, allow_name: bool) -> None:
    for key in values:
        if key in REFUSED_SECRETS:
            raise ConfigError(
                f"{where} writes '{key}' in the file; secrets stay in the environment: name the"
                f" variable that holds it ({key}_env: SOME_VARIABLE, url_env for the source URL)."
            )
        known = key in SETTING_KEYS or key in SECRET_KEYS or key in OTHER_KEYS
        if not known or (key == "name" and not allow_name):
            raise ConfigError(
                f"{where} has an unknown key '{key}'; the keys are: name,"
                f" {', '.join([*SECRET_KEYS, *SETTING_KEYS, 'mongo_pool'])}."
            )


def _text(value: Any, key: str, where: str) -> str:
    if isinstance(value, list):
        if not all(isinstance(item, str) for item in value):
            raise ConfigError(f"{where}: '{key}' must be a list of strings.")
        return ",".join(value)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ConfigError(f"{where}: '{key}' must be a string or a number.")
    return str(value)


def _entry(
    raw: Mapping[str, Any], defaults: Mapping[str, Any], where: str, number: int, path: Path
) -> SourceEntry:
    name = raw.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise ConfigError(
            f"{where}: source {number} needs a name of a letter then letters, digits or '_'"
            f" (at most 40; it prefixes Dagster names), got {name!r}."
        )
    here = f"{where} source '{name}'"
    _check_keys(raw, here, allow_name=True)
    merged = {**defaults, **raw}
    settings = {
        variable: _text(merged[key], key, here)
        for key, variable in SETTING_KEYS.items()
        if key in merged and merged[key] is not None
    }
    settings.setdefault("CDC_MONGO_DB", f"cdc_{name}")
    secrets: dict[str, str] = {}
    for key, variable in SECRET_KEYS.items():
        holder = merged.get(key, SECRET_DEFAULTS.get(key))
        if holder is None:
            raise ConfigError(
                f"{here} has no url_env; name the variable that holds its mysql:// URL."
            )
        if not isinstance(holder, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", holder):
            raise ConfigError(f"{here}: '{key}' must name an environment variable.")
        secrets[variable] = holder
    pool = merged.get("mongo_pool")
    if pool is not None and (not isinstance(pool, str) or not NAME.match(pool)):
        raise ConfigError(f"{here}: 'mongo_pool' must be a name of letters, digits and '_'.")
    return SourceEntry(name, settings, secrets, pool, path)


def _check_together(entries: list[SourceEntry], where: str) -> None:
    seen: dict[tuple[str, ...], str] = {}

    def once(key: tuple[str, ...], entry: SourceEntry, sentence: str) -> None:
        other = seen.setdefault(key, entry.name)
        if other != entry.name:
            raise ConfigError(f"{where}: sources '{other}' and '{entry.name}' {sentence}")

    names: set[str] = set()
    for entry in entries:
        if entry.name in names:
            raise ConfigError(f"{where}: two sources are named '{entry.name}'; names are unique.")
        names.add(entry.name)
        server_id = entry.settings.get("CDC_SERVER_ID", "")
        once(
            ("reader", entry.url_variable, server_id),
            entry,
            f"read the server of {entry.url_variable} with the same server id; give each its"
            " own server_id (a server drops a replica connection when another takes its id).",
        )
        once(
            ("database", entry.secret_variables["CDC_MONGO_URI"], entry.settings["CDC_MONGO_DB"]),
            entry,
            f"write the same MongoDB database '{entry.settings['CDC_MONGO_DB']}'; give each its"
            " own mongo_db (their change logs and mirrors would collide).",
        )
