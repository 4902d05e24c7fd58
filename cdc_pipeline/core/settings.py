"""Configuration: every setting's variable name, default and check (../shared/CONTRACT.md).

This is the only module that reads the environment (the Dagster resources and the CLI pass
``os.environ`` or their own values through the ``from_env`` functions here); everything else
takes the plain objects built here. Read at run time, never at import time.

Invariants: a ``SourceUrl`` never shows its password in ``repr``/``str``/error messages; every
malformed value raises ``ConfigError`` naming the variable.
"""

from __future__ import annotations

import fnmatch
import math
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from cdc_pipeline.core.errors import (
    ConfigError,
)
from cdc_pipeline.core.sources_file import MONGO_URI_FROM, URL_FROM, secret_holders
from cdc_pipeline.core.tls import SourceTls

DEFAULT_SERVER_ID = 4_270_001
"""Replica server id of the capture reader (CDC_SERVER_ID); unique per reader on a source."""

SYSTEM_SCHEMAS = frozenset({"mysql", "sys", "information_schema", "performance_schema"})
PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class SourceUrl:
    """``mysql://user:password@host:port[/?ssl-mode=…&ssl-ca=…]`` split into parts; the
    password stays out of repr. ``tls``: the ``ssl-*`` parameters (``core.tls``)."""

    host: str
    port: int
    user: str
    password: str = field(repr=False, default="")
    tls: SourceTls = field(default_factory=SourceTls)

    @classmethod
    def parse(cls, text: str, variable: str = "CDC_MYSQL_URL") -> SourceUrl:
        try:
            parts = urlsplit(text.strip())
            port = parts.port or 3306
        except ValueError:
            raise ConfigError(
                f"{variable} is not a valid URL; write it as mysql://user:password@host:port."
            ) from None
        if parts.scheme not in {"mysql", "mariadb"} or not parts.hostname:
            raise ConfigError(
                f"{variable} must look like mysql://user:password@host:port"
                f" (got scheme '{parts.scheme or '?'}' and host '{parts.hostname or '?'}')."
            )
        if not parts.username:
            raise ConfigError(
                f"{variable} has no user; write it as mysql://user:password@host:port."
            )
        if parts.path not in ("", "/") or parts.fragment:
            raise ConfigError(
                f"{variable} has a path or fragment after the port, which this tool does not"
                " use (the tables come from CDC_INCLUDE_TABLES); remove it."
            )
        try:
            pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=True)
        except ValueError:
            pairs = [] if not parts.query else [(parts.query, "")]
        return cls(
            host=parts.hostname,
            port=port,
            user=unquote(parts.username),
            password=unquote(parts.password or ""),
            tls=SourceTls.parse(pairs, variable),
        )

    def redacted(self) -> str:
        """The URL with the password replaced, safe for logs and messages."""
        secret = ":***" if self.password else ""
        return f"mysql://{self.user}{secret}@{self.host}:{self.port}{self.tls.query()}"

    def __str__(self) -> str:
        return self.redacted()

    def connect_kwargs(self) -> dict[str, object]:
        """Keyword arguments for ``pymysql.connect``, TLS options included."""
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            **self.tls.connect_kwargs(),
        }


def split_table_pattern(pattern: str) -> tuple[str, str]:
    """The schema and table sides of a ``schema.table`` pattern, each an ``fnmatch`` pattern.

    The schema side ends at the first dot; the table side is the rest. Either may use ``*``
    (any run of characters) and ``?`` (one character); ``[`` is a literal character, as in a
    MySQL name (``fnmatch``'s classes are not offered). A side in backquotes (``` `` ``` for a
    backquote inside) is a literal name, which may hold dots, ``*`` and ``?``: ```shop.eu`.*``.
    The sides are matched separately, so ``*`` never crosses the dot: ``shop.*`` does not
    include the tables of a schema named ``shop.x``. ValueError when the pattern has no two
    sides.
    """
    schema, table = _two_sides(pattern.strip())
    return _glob(*schema), _glob(*table)


def split_column_pattern(pattern: str) -> tuple[str, str, str]:
    """The schema, table and column sides of a ``schema.table.column`` pattern, each an
    ``fnmatch`` pattern as in ``split_table_pattern`` (the schema and table sides end at a dot,
    the column side is the rest; any side may be a literal name in backquotes). ValueError when
    the pattern has no three sides."""
    schema, rest = _pattern_side(pattern.strip(), schema_side=True)
    if not rest.startswith("."):
        raise ValueError("it needs the form schema.table.column")
    table, rest = _pattern_side(rest[1:], schema_side=True)
    if not rest.startswith("."):
        raise ValueError("it needs the form schema.table.column")
    column, rest = _pattern_side(rest[1:], schema_side=False)
    if rest or not schema[0] or not table[0] or not column[0]:
        raise ValueError("it needs the form schema.table.column")
    return _glob(*schema), _glob(*table), _glob(*column)


def _glob(side: str, quoted: bool) -> str:
    """A pattern side as ``fnmatch`` reads it: ``[`` always literal, ``*``/``?`` too if quoted."""
    literal = "*?[" if quoted else "["
    return "".join(f"[{c}]" if c in literal else c for c in side)


def parse_table_label(label: str) -> tuple[str, str]:
    """``(schema, table)`` of a ``table_label`` (and of ``schema.table`` written plainly);
    ValueError when it has no two sides."""
    (schema, _), (table, _) = _two_sides(label)
    return schema, table


def exact_table(pattern: str) -> tuple[str, str] | None:
    """``(schema, table)`` when the pattern names one table (no wildcard outside backquotes),
    else None."""
    sides = _two_sides(pattern.strip())
    if any(not quoted and ("*" in text or "?" in text) for text, quoted in sides):
        return None
    (schema, _), (table, _) = sides
    return schema, table


def _two_sides(text: str) -> tuple[tuple[str, bool], tuple[str, bool]]:
    schema, rest = _pattern_side(text, schema_side=True)
    if not rest.startswith("."):
        raise ValueError("it needs the form schema.table")
    table, rest = _pattern_side(rest[1:], schema_side=False)
    if rest or not schema[0] or not table[0]:
        raise ValueError("it needs the form schema.table")
    return schema, table


def _pattern_side(text: str, *, schema_side: bool) -> tuple[tuple[str, bool], str]:
    """One side (its text, and whether it was in backquotes) and what follows it."""
    if not text.startswith("`"):
        if not schema_side:
            return (text, False), ""
        side, dot, rest = text.partition(".")
        return (side, False), dot + rest
    literal, position = [], 1
    while True:
        close = text.find("`", position)
        if close < 0:
            raise ValueError("a backquote is not closed")
        literal.append(text[position:close])
        if not text.startswith("``", close):
            break
        literal.append("`")
        position = close + 2
    return ("".join(literal), True), text[close + 1 :]


def table_label(schema: str, table: str) -> str:
    """A table's name for people and reports: ``schema.table``, with a side in backquotes when
    it holds a dot, a backquote or a wildcard character or starts with a space, so the label
    names one table (and, as a pattern, matches exactly it): ``shop.orders``,
    ```shop.eu`.orders``."""

    def side(name: str) -> str:
        if name != name.strip() or any(char in name for char in ".`*?["):
            return "`" + name.replace("`", "``") + "`"
        return name

    return f"{side(schema)}.{side(table)}"


def table_included(schema: str, table: str, patterns: tuple[str, ...]) -> bool:
    """Whether ``schema.table`` is captured: it matches a pattern (``split_table_pattern``), or
    there are no patterns and it is not a system schema."""
    if not patterns:
        return schema.lower() not in SYSTEM_SCHEMAS
    return any(_matches(schema, table, pattern) for pattern in patterns)


def schema_included(schema: str, patterns: tuple[str, ...]) -> bool:
    """Whether some table of ``schema`` may be captured: a pattern's schema side matches it
    (for a statement on the whole schema, such as ``DROP DATABASE``)."""
    if not patterns:
        return schema.lower() not in SYSTEM_SCHEMAS
    return any(fnmatch.fnmatchcase(schema, split_table_pattern(p)[0]) for p in patterns)


def _matches(schema: str, table: str, pattern: str) -> bool:
    schema_side, table_side = split_table_pattern(pattern)
    return fnmatch.fnmatchcase(schema, schema_side) and fnmatch.fnmatchcase(table, table_side)


TABLE_SCOPE_VARIABLES = ("CDC_INCLUDE_TABLES",)
"""The settings that choose the captured tables; a staging folder records them, and a capture
with other values is refused (``wal.identity``). A variable added here is read as unset (its
default) from folders recorded before it existed."""


def table_patterns_from_env(env: Mapping[str, str], variable: str) -> tuple[str, ...]:
    """The comma-separated ``schema.table`` patterns of ``variable`` (empty when unset)."""
    patterns = tuple(p.strip() for p in env.get(variable, "").split(",") if p.strip())
    for pattern in patterns:
        try:
            split_table_pattern(pattern)
        except ValueError:
            raise ConfigError(
                f"{variable} entry '{pattern}' needs the form schema.table"
                " (wildcards allowed, e.g. shop.*; a name holding a dot in backquotes)."
            ) from None
    return patterns


def table_scope_from_env(environ: Mapping[str, str] | None = None) -> dict[str, tuple[str, ...]]:
    """The ``TABLE_SCOPE_VARIABLES`` that are set (non-empty) in the environment, parsed: for a
    command that does not capture (``load --pending``) and checks only what it is told."""
    env = _environ(environ)
    return {
        variable: table_patterns_from_env(env, variable)
        for variable in TABLE_SCOPE_VARIABLES
        if env.get(variable, "").strip()
    }


MASK_MODES = ("hash", "fixed")
MIN_MASK_KEY = 16


@dataclass(frozen=True)
class GovernanceSettings:
    """What never leaves the source side as it is (``core.governance`` applies it):
    ``exclude_tables`` (CDC_EXCLUDE_TABLES, ``schema.table`` patterns) are never captured;
    ``exclude_columns`` (CDC_EXCLUDE_COLUMNS, ``schema.table.column`` patterns) never reach the
    WAL; ``mask_columns`` (CDC_MASK_COLUMNS: ``schema.table.column`` patterns, each optionally
    ending ``:hash``, the default, or ``:fixed``) reach it as an HMAC-SHA256 keyed by
    ``mask_key`` (CDC_MASK_KEY; equal values give equal hashes, so they still join) or as a
    fixed mask. ``mask_key`` is a secret: never shown."""

    exclude_tables: tuple[str, ...] = ()
    exclude_columns: tuple[str, ...] = ()
    mask_columns: tuple[tuple[str, str], ...] = ()
    """``(pattern, mode)`` pairs."""
    mask_key: str = field(default="", repr=False)

    @property
    def active(self) -> bool:
        return bool(self.exclude_tables or self.exclude_columns or self.mask_columns)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> GovernanceSettings:
        env = _environ(environ)
        excluded = _entries(env, "CDC_EXCLUDE_COLUMNS")
        masked: list[tuple[str, str]] = []
        for entry in _entries(env, "CDC_MASK_COLUMNS"):
            pattern, colon, mode = entry.rpartition(":")
            if not colon or mode.strip().lower() not in MASK_MODES:
                pattern, mode = entry, "hash"
            masked.append((pattern.strip(), mode.strip().lower()))
        for variable, pattern in [
            *(("CDC_EXCLUDE_COLUMNS", p) for p in excluded),
            *(("CDC_MASK_COLUMNS", p) for p, _ in masked),
        ]:
            try:
                split_column_pattern(pattern)
            except ValueError:
                raise ConfigError(
                    f"{variable} entry '{pattern}' needs the form schema.table.column"
                    " (wildcards allowed, e.g. shop.*.ssn; a name holding a dot in backquotes)."
                ) from None
        key = env.get("CDC_MASK_KEY", "")
        if any(mode == "hash" for _, mode in masked) and len(key) < MIN_MASK_KEY:
            state = "too short" if key else "not set"
            raise ConfigError(
                f"CDC_MASK_COLUMNS hashes columns but CDC_MASK_KEY is {state}; set it to a secret"
                f" of at least {MIN_MASK_KEY} characters (keep it: another key gives other hashes)."
            )
        return cls(
            exclude_tables=table_patterns_from_env(env, "CDC_EXCLUDE_TABLES"),
            exclude_columns=excluded,
            mask_columns=tuple(masked),
            mask_key=key,
        )


def _entries(env: Mapping[str, str], variable: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in env.get(variable, "").split(",") if p.strip())


@dataclass(frozen=True)
class CaptureSettings:
    """Everything the capture side needs. Bounds keep one tick well inside a sensor's timeout."""

    source_url: SourceUrl
    staging_dir: Path
    source_name: str = "default"
    server_id: int = DEFAULT_SERVER_ID
    include_tables: tuple[str, ...] = ()
    start_position: str = "current"
    max_events_per_segment: int = 50_000
    max_seconds_per_tick: float = 20.0
    heartbeat_seconds: float = 1.0
    row_group_size: int = 5_000
    governance: GovernanceSettings = field(default_factory=GovernanceSettings)

    def includes(self, schema: str, table: str) -> bool:
        """Whether the table is captured: included and not excluded (CDC_EXCLUDE_TABLES)."""
        excluded = self.governance.exclude_tables
        return table_included(schema, table, self.include_tables) and not (
            excluded and table_included(schema, table, excluded)
        )

    def includes_schema(self, schema: str) -> bool:
        return schema_included(schema, self.include_tables)

    @property
    def table_scope(self) -> dict[str, tuple[str, ...]]:
        """The settings that decide which rows reach the WAL, by variable name (every one of
        ``TABLE_SCOPE_VARIABLES``): what the staging folder records (``wal.identity``)."""
        return {"CDC_INCLUDE_TABLES": self.include_tables}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CaptureSettings:
        env = _environ(environ)
        url = env.get("CDC_MYSQL_URL", "").strip()
        variable = env.get(URL_FROM, "CDC_MYSQL_URL")
        if not url:
            raise ConfigError(
                f"{variable} is not set; export it as mysql://user:password@host:port."
            )
        source_name = source_name_from_env(env)
        return cls(
            source_url=SourceUrl.parse(url, variable),
            staging_dir=staging_dir_from_env(env),
            source_name=source_name,
            server_id=int_from_env(env, "CDC_SERVER_ID", DEFAULT_SERVER_ID, low=1, high=2**32 - 1),
            include_tables=table_patterns_from_env(env, "CDC_INCLUDE_TABLES"),
            start_position=env.get("CDC_START_POSITION", "current").strip() or "current",
            max_events_per_segment=int_from_env(env, "CDC_SEGMENT_MAX_EVENTS", 50_000, low=1),
            max_seconds_per_tick=float(int_from_env(env, "CDC_TICK_MAX_SECONDS", 20, low=1)),
            governance=GovernanceSettings.from_env(env),
        )


UNLOADABLE_POLICIES = ("halt", "dead-letter")


@dataclass(frozen=True)
class MongoSettings:
    """Where the sink is. ``uri`` may hold credentials: never print it (``redacted()``)."""

    uri: str = field(repr=False)
    database: str = "cdc"
    compat: str = "standard"
    retry_seconds: float = 30.0
    """How long one load keeps retrying transient MongoDB errors before it gives up (and the
    breaker opens): CDC_MONGO_RETRY_SECONDS."""
    breaker_probe_seconds: float = 60.0
    """While MongoDB is down, the least time between two probe loads: CDC_BREAKER_PROBE_SECONDS."""
    on_unloadable: str = "halt"
    """A row MongoDB refuses as a data error: ``halt`` loading there, or ``dead-letter`` it
    (set it and later changes of its key aside in ``cdc_dead_letters``): CDC_ON_UNLOADABLE."""
    """``standard`` (MongoDB) or ``nx-27017`` (the test stand-in: no dots in collection names,
    no Decimal128; see ``mirror_name_style`` and ``decimals_as_strings``)."""

    @property
    def mirror_name_style(self) -> str:
        return "underscore" if self.compat == "nx-27017" else "dotted"

    @property
    def decimals_as_strings(self) -> bool:
        return self.compat == "nx-27017"

    @property
    def native_rename(self) -> bool:
        """Whether ``renameCollection`` works within the database (nx-27017 renames act on its
        admin database, so mirrors are copied there instead)."""
        return self.compat != "nx-27017"

    def redacted(self) -> str:
        parts = urlsplit(self.uri)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{'***@' if parts.password else ''}{host}{port}/{self.database}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> MongoSettings:
        env = _environ(environ)
        uri = env.get("CDC_MONGO_URI", "").strip()
        if not uri.startswith(("mongodb://", "mongodb+srv://")):
            variable = env.get(MONGO_URI_FROM, "CDC_MONGO_URI")
            raise ConfigError(
                f"{variable} is not set or not a MongoDB URI; export it as mongodb://host:port."
            )
        _check_mongo_uri(uri)
        compat = env.get("CDC_MONGO_COMPAT", "standard").strip() or "standard"
        if compat not in ("standard", "nx-27017"):
            raise ConfigError(
                f"CDC_MONGO_COMPAT must be 'standard' (MongoDB) or 'nx-27017' (the test"
                f" stand-in), got '{compat}'."
            )
        on_unloadable = env.get("CDC_ON_UNLOADABLE", "halt").strip() or "halt"
        if on_unloadable not in UNLOADABLE_POLICIES:
            raise ConfigError(
                f"CDC_ON_UNLOADABLE must be 'halt' (stop loading at a row MongoDB refuses) or"
                f" 'dead-letter' (set it aside and load the rest), got '{on_unloadable}'."
            )
        return cls(
            uri=uri,
            database=env.get("CDC_MONGO_DB", "cdc").strip() or "cdc",
            compat=compat,
            on_unloadable=on_unloadable,
            retry_seconds=float(int_from_env(env, "CDC_MONGO_RETRY_SECONDS", 30, low=1)),
            breaker_probe_seconds=float(int_from_env(env, "CDC_BREAKER_PROBE_SECONDS", 60, low=1)),
        )


def _check_mongo_uri(uri: str) -> None:
    """Parse ``uri`` as MongoClient would, without DNS (SRV records are looked up on connect).

    The parser's own message is not shown: it can quote parts of the URI.
    """
    from pymongo.errors import ConfigurationError
    from pymongo.uri_parser import parse_uri

    plain = uri.replace("mongodb+srv://", "mongodb://", 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parse_uri(plain, validate=True, warn=True, normalize=False)
    except (ConfigurationError, ValueError) as error:
        raise ConfigError(
            f"CDC_MONGO_URI is not a valid MongoDB URI ({type(error).__name__}); write it as"
            " mongodb://[user:password@]host:port[/?options], the user and password"
            " percent-encoded."
        ) from None


def staging_dir_from_env(environ: Mapping[str, str] | None = None) -> Path:
    """The WAL root (CDC_STAGING_DIR), default ``.cdc_staging`` under the project."""
    env = _environ(environ)
    return Path(env.get("CDC_STAGING_DIR") or PROJECT_ROOT / ".cdc_staging")


def source_name_from_env(environ: Mapping[str, str] | None = None) -> str:
    """CDC_SOURCE_NAME (default ``default``), checked like ``CaptureSettings.from_env`` does."""
    env = _environ(environ)
    name = env.get("CDC_SOURCE_NAME", "default").strip() or "default"
    if not name.replace("_", "").replace("-", "").isalnum():
        raise ConfigError(f"CDC_SOURCE_NAME '{name}' may only hold letters, digits, '-' and '_'.")
    return name


def _environ(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


SOURCE_VARIABLES = {
    "url": "CDC_MYSQL_URL",
    "source_name": "CDC_SOURCE_NAME",
    "staging_dir": "CDC_STAGING_DIR",
    "server_id": "CDC_SERVER_ID",
    "include_tables": "CDC_INCLUDE_TABLES",
    "start_position": "CDC_START_POSITION",
    "segment_max_events": "CDC_SEGMENT_MAX_EVENTS",
    "tick_max_seconds": "CDC_TICK_MAX_SECONDS",
    "retention_hours": "CDC_RETENTION_HOURS",
    "exclude_tables": "CDC_EXCLUDE_TABLES",
    "exclude_columns": "CDC_EXCLUDE_COLUMNS",
    "mask_columns": "CDC_MASK_COLUMNS",
}
"""The source's settings (``CaptureSettings``, retention): field name -> environment variable."""

MONGO_VARIABLES = {
    "uri": "CDC_MONGO_URI",
    "database": "CDC_MONGO_DB",
    "compat": "CDC_MONGO_COMPAT",
    "retry_seconds": "CDC_MONGO_RETRY_SECONDS",
    "breaker_probe_seconds": "CDC_BREAKER_PROBE_SECONDS",
    "on_unloadable": "CDC_ON_UNLOADABLE",
}
"""The sink's settings (``MongoSettings``): field name -> environment variable."""

AUDIT_VARIABLES = {
    "lag_warn_seconds": "CDC_LAG_WARN_SECONDS",
    "lag_error_seconds": "CDC_LAG_ERROR_SECONDS",
    "lag_warn_transactions": "CDC_LAG_WARN_TRANSACTIONS",
    "retention_warn_seconds": "CDC_RETENTION_WARN_SECONDS",
    "reconcile_wait_seconds": "CDC_RECONCILE_WAIT_SECONDS",
}
"""The checks' thresholds (``AuditSettings``): field name -> environment variable."""


def overlay(
    variables: Mapping[str, str],
    values: Mapping[str, object],
    environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment with the values given for some settings (by field name) in place of
    their variables; None means "not given, keep the environment's". The result goes through
    the same ``from_env`` checks as the environment itself."""
    merged = dict(_environ(environ))
    for name, value in values.items():
        if value is not None:
            merged[variables[name]] = str(value)
    return merged


def int_from_env(
    env: Mapping[str, str], name: str, default: int, low: int, high: int = 2**63
) -> int:
    """A whole number from ``env[name]`` within ``[low, high]``, else ``default``."""
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got '{text}'.") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, got {value}.")
    return value


def seconds_from_env(env: Mapping[str, str], name: str, default: float) -> float:
    """A duration in seconds from ``env[name]`` (a finite number, 0 or more), else ``default``."""
    text = env.get(name, "").strip()
    if not text:
        return float(default)
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name} must be a number of seconds, 0 or more, got '{text}'.")
    return value


RETENTION_VARIABLE = "CDC_RETENTION_HOURS"

DEFAULT_RETENTION_HOURS = 24.0


def retention_from_env(environ: Mapping[str, str] | None = None) -> timedelta:
    """``CDC_RETENTION_HOURS`` (default 24; 0 retires a segment as soon as it is loaded)."""
    env = _environ(environ)
    text = env.get(RETENTION_VARIABLE, "").strip()
    if not text:
        return timedelta(hours=DEFAULT_RETENTION_HOURS)
    try:
        hours = float(text)
    except ValueError:
        hours = -1.0
    if not 0 <= hours < 1_000_000:
        raise ConfigError(
            f"{RETENTION_VARIABLE} must be a number of hours >= 0 (0 deletes a segment as soon"
            f" as it is loaded), got '{text}'."
        )
    return timedelta(hours=hours)


DEFAULT_WARN_SECONDS = 6 * 3600.0

WARN_VARIABLE = "CDC_RETENTION_WARN_SECONDS"


def retention_warn_seconds_from_env(environ: Mapping[str, str] | None = None) -> float:
    """CDC_RETENTION_WARN_SECONDS: warn when the file at risk expires sooner (default 6 h)."""
    env = _environ(environ)
    return seconds_from_env(env, WARN_VARIABLE, DEFAULT_WARN_SECONDS)


@dataclass(frozen=True)
class LagThresholds:
    """``CDC_LAG_WARN_SECONDS`` (300), ``CDC_LAG_ERROR_SECONDS`` (3600) and
    ``CDC_LAG_WARN_TRANSACTIONS`` (100,000)."""

    warn_seconds: float = 300.0
    error_seconds: float = 3600.0
    warn_transactions: int = 100_000

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> LagThresholds:
        warn = seconds_from_env(environ, "CDC_LAG_WARN_SECONDS", cls.warn_seconds)
        error = seconds_from_env(environ, "CDC_LAG_ERROR_SECONDS", cls.error_seconds)
        transactions = int_from_env(
            environ, "CDC_LAG_WARN_TRANSACTIONS", cls.warn_transactions, low=0
        )
        if error < warn:
            raise ConfigError(
                f"CDC_LAG_ERROR_SECONDS ({error:g}) is below CDC_LAG_WARN_SECONDS ({warn:g});"
                " set the error threshold at or above the warning one."
            )
        return cls(warn, error, transactions)


SENSOR_INTERVAL_VARIABLE = "CDC_SENSOR_INTERVAL_SECONDS"
DEFAULT_SENSOR_INTERVAL_SECONDS = 30


def sensor_interval_from_env(environ: Mapping[str, str] | None = None) -> int:
    """``CDC_SENSOR_INTERVAL_SECONDS``: the least time between two capture sensor ticks (default
    30). Read when the code location loads (Dagster fixes a sensor's interval there)."""
    return int_from_env(
        _environ(environ), SENSOR_INTERVAL_VARIABLE, DEFAULT_SENSOR_INTERVAL_SECONDS, low=1
    )


RECONCILE_WAIT_VARIABLE = "CDC_RECONCILE_WAIT_SECONDS"
DEFAULT_RECONCILE_WAIT_SECONDS = 60.0


@dataclass(frozen=True)
class AuditSettings:
    """What the global checks judge against: lag thresholds, binlog retention headroom
    (``CDC_RETENTION_WARN_SECONDS``) and how long reconciliation waits for a busy table
    (``CDC_RECONCILE_WAIT_SECONDS``)."""

    lag: LagThresholds = field(default_factory=LagThresholds)
    retention_warn_seconds: float = DEFAULT_WARN_SECONDS
    reconcile_wait_seconds: float = DEFAULT_RECONCILE_WAIT_SECONDS

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AuditSettings:
        env = _environ(environ)
        return cls(
            lag=LagThresholds.from_env(env),
            retention_warn_seconds=retention_warn_seconds_from_env(env),
            reconcile_wait_seconds=seconds_from_env(
                env, RECONCILE_WAIT_VARIABLE, DEFAULT_RECONCILE_WAIT_SECONDS
            ),
        )


def source_url_if_set(environ: Mapping[str, str] | None = None) -> SourceUrl | None:
    """``CDC_MYSQL_URL`` parsed, or None when it is not set (commands that can do without)."""
    env = _environ(environ)
    text = env.get("CDC_MYSQL_URL", "").strip()
    return SourceUrl.parse(text, env.get(URL_FROM, "CDC_MYSQL_URL")) if text else None


def mongo_settings_if_set(environ: Mapping[str, str] | None = None) -> MongoSettings | None:
    """``MongoSettings.from_env``, or None when ``CDC_MONGO_URI`` is not set."""
    env = _environ(environ)
    return MongoSettings.from_env(env) if env.get("CDC_MONGO_URI", "").strip() else None


def mongo_where(environ: Mapping[str, str] | None = None) -> str:
    """The sink as operators may see it: the redacted URI, or the variable's name."""
    try:
        return MongoSettings.from_env(environ).redacted()
    except (ConfigError, ValueError):
        return "CDC_MONGO_URI"


SECRET_VARIABLES = ("CDC_MYSQL_URL", "CDC_MONGO_URI")


def scrub_secrets(text: str, environ: Mapping[str, str] | None = None, limit: int = 300) -> str:
    """``text`` on one line, without the values of the secret variables (whole, their passwords
    raw and percent-decoded), at most ``limit`` characters: safe to print."""
    env = _environ(environ)
    secrets: list[str] = []
    for name in (*SECRET_VARIABLES, *sorted(secret_holders(env))):
        value = env.get(name, "").strip()
        if value:
            secrets.append(value)
            try:
                password = urlsplit(value).password
            except ValueError:
                password = None
            if password:
                secrets += [password, unquote(password)]
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
