"""GTID state for MySQL and MariaDB behind one dialect-agnostic interface.

A `GtidSet` is an immutable set of transaction ids of one flavor, stored per *source* as
sorted, merged, inclusive ``(first, last)`` intervals, so equality is structural.

Sources:
    * MySQL: ``uuid`` (untagged) or ``uuid:tag`` (MySQL 8.4+ tagged GTIDs). UUIDs and tags
      are case-insensitive and kept in lowercase. Sequence numbers are in ``[1, 2**63)``.
    * MariaDB: the decimal replication domain id. Sequence numbers are in ``[1, 2**64)``;
      domain and server ids in ``[0, 2**32)``. Each domain also carries the server id of its
      highest seq, which is what a position (``D-S-N``) prints. Membership and subset tests
      ignore server ids; equality does not.

Canonical text (``str``), accepted back by `GtidSet.parse` so ``parse(str(x)) == x``:
    * MySQL: sources sorted by uuid, untagged intervals first then tags in order, e.g.
      ``3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:7:tag_a:1-3``; entries joined by ``,``.
    * MariaDB: domains in ascending order, one comma-separated entry per interval. An
      interval ``1..N`` prints as the position entry ``D-S-N``; any other interval ``A..B``
      prints as the extended entry ``D-S-A:B`` (``A:A`` for a lone seq). ``S`` is the
      domain's server id, repeated on every entry of the domain. A state that is one range
      from 1 per domain therefore prints exactly like ``@@gtid_binlog_pos`` does.

When parsing MariaDB text, several entries for one domain are united; the domain keeps the
server id of the entry with the highest last seq (ties: larger server id).
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

Flavor = Literal["mysql", "mariadb"]

_FLAVORS: tuple[Flavor, ...] = ("mysql", "mariadb")
_SEQ_LIMIT: dict[Flavor, int] = {"mysql": 2**63, "mariadb": 2**64}
_U32_LIMIT = 2**32

_UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
_TAG_RE = re.compile(r"[a-z_][a-z0-9_]{0,31}", re.I)
_INTERVAL_RE = re.compile(r"([0-9]+)(?:\s*-\s*([0-9]+))?")
_MARIADB_ENTRY_RE = re.compile(r"([0-9]+)-([0-9]+)-([0-9]+)(?::([0-9]+))?")
_MARIADB_GTID_RE = re.compile(r"([0-9]+)-([0-9]+)-([0-9]+)")

Interval = tuple[int, int]
Intervals = tuple[Interval, ...]


class GtidError(ValueError):
    """Bad GTID text, or an operation mixing flavors; the message names the offending text."""


class _Invalid(Exception):
    """Internal: why a piece of text is invalid; turned into a `GtidError` at the boundary."""


def _shown(text: str) -> str:
    return repr(text if len(text) <= 120 else text[:117] + "...")


def _number(digits: str, what: str, low: int, limit: int) -> int:
    """Parse ASCII digits into an int in ``[low, limit)``."""
    if not (digits.isascii() and digits.isdigit()):
        raise _Invalid(f"{what} {digits!r} is not a decimal number")
    if len(digits.lstrip("0")) > 25:
        raise _Invalid(f"{what} {digits[:30]}... is too large")
    value = int(digits)
    if value < low:
        raise _Invalid(f"{what} {value} is below {low}")
    if value >= limit:
        raise _Invalid(f"{what} {value} is too large")
    return value


def _mysql_source(source: str) -> str:
    """Validate ``uuid`` or ``uuid:tag`` and return it in lowercase."""
    uuid, sep, tag = source.partition(":")
    if not _UUID_RE.fullmatch(uuid):
        raise _Invalid(f"{uuid!r} is not a server UUID")
    if sep and not _TAG_RE.fullmatch(tag):
        raise _Invalid(f"{tag!r} is not a GTID tag")
    return source.lower()


def _source_key(flavor: Flavor, source: str) -> tuple[int, str, str]:
    """Sort key giving canonical source order (untagged uuid before its tags)."""
    if flavor == "mariadb":
        return (int(source), "", "")
    uuid, _, tag = source.partition(":")
    return (0, uuid, tag)


@dataclass(frozen=True)
class Gtid:
    """One transaction id.

    Invariants: ``source`` is canonical (lowercase ``uuid``/``uuid:tag`` for MySQL, decimal
    domain id for MariaDB), ``seq`` is in range, and ``server_id`` is set iff MariaDB.
    """

    flavor: Flavor
    source: str
    seq: int
    server_id: int | None = None

    def __post_init__(self) -> None:
        try:
            if self.flavor == "mysql":
                source = _mysql_source(self.source)
                if self.server_id is not None:
                    raise _Invalid("a MySQL GTID has no server id")
            elif self.flavor == "mariadb":
                source = str(_number(self.source, "domain id", 0, _U32_LIMIT))
                if self.server_id is None or not 0 <= self.server_id < _U32_LIMIT:
                    raise _Invalid("a MariaDB GTID needs a server id in [0, 2**32)")
            else:
                raise _Invalid(f"flavor {self.flavor!r} is unknown")
            if not 1 <= self.seq < _SEQ_LIMIT[self.flavor]:
                raise _Invalid(f"sequence number {self.seq} is out of range")
        except _Invalid as exc:
            raise GtidError(f"Invalid GTID {self!r}: {exc}.") from None
        object.__setattr__(self, "source", source)

    def __str__(self) -> str:
        if self.flavor == "mysql":
            return f"{self.source}:{self.seq}"
        return f"{self.source}-{self.server_id}-{self.seq}"


def parse_gtid(text: str) -> Gtid:
    """Parse one GTID (``uuid:N``, ``uuid:tag:N`` or ``D-S-N``), detecting the flavor."""
    stripped = text.strip()
    try:
        match = _MARIADB_GTID_RE.fullmatch(stripped)
        if match:
            domain = _number(match[1], "domain id", 0, _U32_LIMIT)
            server = _number(match[2], "server id", 0, _U32_LIMIT)
            seq = _number(match[3], "sequence number", 1, _SEQ_LIMIT["mariadb"])
            return Gtid("mariadb", str(domain), seq, server)
        source, sep, digits = stripped.rpartition(":")
        if not sep or not digits.isascii() or not digits.isdigit():
            raise _Invalid("it is neither uuid:N, uuid:tag:N nor domain-server-seq")
        seq = _number(digits, "sequence number", 1, _SEQ_LIMIT["mysql"])
        return Gtid("mysql", _mysql_source(source), seq)
    except _Invalid as exc:
        raise GtidError(f"Invalid GTID {_shown(text)}: {exc}.") from None


def _merge(intervals: Iterable[Interval]) -> Intervals:
    """Sort and merge overlapping or adjacent intervals."""
    merged: list[Interval] = []
    for first, last in sorted(intervals):
        if merged and first <= merged[-1][1] + 1:
            if last > merged[-1][1]:
                merged[-1] = (merged[-1][0], last)
        else:
            merged.append((first, last))
    return tuple(merged)


def _intersect(a: Intervals, b: Intervals) -> Intervals:
    out: list[Interval] = []
    i = j = 0
    while i < len(a) and j < len(b):
        first, last = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if first <= last:
            out.append((first, last))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return tuple(out)


def _subtract(a: Intervals, b: Intervals) -> Intervals:
    out: list[Interval] = []
    j = 0
    for first, last in a:
        start = first
        while j < len(b) and b[j][1] < start:
            j += 1
        k = j
        while k < len(b) and b[k][0] <= last:
            if b[k][0] > start:
                out.append((start, b[k][0] - 1))
            start = max(start, b[k][1] + 1)
            k += 1
        if start <= last:
            out.append((start, last))
    return tuple(out)


class GtidSet:
    """Immutable set of GTIDs of one flavor with value semantics.

    Invariants: sources are in canonical order, each maps to a non-empty tuple of sorted,
    disjoint, non-adjacent intervals; MariaDB sets hold a server id for exactly their
    domains. Operations between different flavors raise `GtidError`. Build instances with
    `parse`, `empty` or `of`; the constructor is internal.
    """

    __slots__ = ("_flavor", "_hash", "_map", "_servers")

    _flavor: Flavor
    _map: dict[str, Intervals]
    _servers: dict[str, int]
    _hash: int

    def __init__(
        self,
        flavor: Flavor,
        entries: Mapping[str, Iterable[Interval]],
        servers: Mapping[str, int] | None = None,
    ) -> None:
        merged = {src: _merge(ivs) for src, ivs in entries.items()}
        order = sorted((s for s in merged if merged[s]), key=lambda s: _source_key(flavor, s))
        servers = servers or {}
        object.__setattr__(self, "_flavor", flavor)
        object.__setattr__(self, "_map", {s: merged[s] for s in order})
        kept = {s: servers[s] for s in order} if flavor == "mariadb" else {}
        object.__setattr__(self, "_servers", kept)
        key = (flavor, tuple(self._map.items()), tuple(kept.items()))
        object.__setattr__(self, "_hash", hash(key))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("GtidSet is immutable")

    @property
    def flavor(self) -> Flavor:
        """The dialect of every GTID in this set."""
        return self._flavor

    @classmethod
    def empty(cls, flavor: Flavor) -> GtidSet:
        """The empty set of the given flavor."""
        return cls(_check_flavor(flavor), {})

    @classmethod
    def parse(cls, text: str, flavor: Flavor) -> GtidSet:
        """Parse server or canonical text; the empty (or blank) string is the empty set."""
        _check_flavor(flavor)
        if not text.strip():
            return cls(flavor, {})
        try:
            if flavor == "mysql":
                return _parse_mysql(text)
            return _parse_mariadb(text)
        except _Invalid as exc:
            raise GtidError(f"Invalid {flavor} GTID set {_shown(text)}: {exc}.") from None

    @classmethod
    def of(cls, gtids: Iterable[Gtid]) -> GtidSet:
        """The set of the given GTIDs; they must share one flavor and not be empty."""
        items = list(gtids)
        if not items:
            raise GtidError("GtidSet.of() got no GTIDs; use GtidSet.empty(flavor) instead.")
        flavor = items[0].flavor
        entries: dict[str, list[Interval]] = {}
        best: dict[str, tuple[int, int]] = {}
        for gtid in items:
            if gtid.flavor != flavor:
                raise GtidError(f"GtidSet.of() got GTID '{gtid}' of another flavor than {flavor}.")
            entries.setdefault(gtid.source, []).append((gtid.seq, gtid.seq))
            if gtid.server_id is not None:
                best[gtid.source] = max(best.get(gtid.source, (0, 0)), (gtid.seq, gtid.server_id))
        return cls(flavor, entries, {d: sid for d, (_, sid) in best.items()})

    def __str__(self) -> str:
        if self._flavor == "mariadb":
            return ",".join(
                f"{dom}-{self._servers[dom]}-{last}"
                if first == 1
                else f"{dom}-{self._servers[dom]}-{first}:{last}"
                for dom, first, last in self.intervals()
            )
        parts: list[str] = []
        last_uuid = ""
        for source, ivs in self._map.items():
            uuid, _, tag = source.partition(":")
            if uuid != last_uuid:
                parts.append(uuid)
                last_uuid = uuid
            text = ":".join(str(a) if a == b else f"{a}-{b}" for a, b in ivs)
            parts[-1] += f":{tag}:{text}" if tag else f":{text}"
        return ",".join(parts)

    def __repr__(self) -> str:
        return f"GtidSet.parse({str(self)!r}, {self._flavor!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, GtidSet):
            return NotImplemented
        return (self._flavor, self._map, self._servers) == (
            other._flavor,
            other._map,
            other._servers,
        )

    def __hash__(self) -> int:
        return self._hash

    def __bool__(self) -> bool:
        return bool(self._map)

    def __contains__(self, gtid: Gtid | str) -> bool:
        gtid = self._own_gtid(gtid)
        ivs = self._map.get(gtid.source, ())
        i = bisect_right(ivs, (gtid.seq, _SEQ_LIMIT["mariadb"]))
        return i > 0 and ivs[i - 1][1] >= gtid.seq

    def add(self, gtid: Gtid | str) -> GtidSet:
        """This set plus one GTID (MariaDB: its server id wins if its seq is the highest)."""
        return self.union(GtidSet.of([self._own_gtid(gtid)]))

    def union(self, other: GtidSet) -> GtidSet:
        """GTIDs in either set; a MariaDB domain keeps the server id of the operand with the
        higher max seq (ties: larger server id), so union is commutative and associative."""
        self._same_flavor(other, "unite")
        entries = {src: list(ivs) for src, ivs in self._map.items()}
        for src, ivs in other._map.items():
            entries.setdefault(src, []).extend(ivs)
        servers = dict(self._servers)
        for dom, sid in other._servers.items():
            mine = servers.get(dom)
            if mine is None or (other._map[dom][-1][1], sid) > (self._map[dom][-1][1], mine):
                servers[dom] = sid
        return GtidSet(self._flavor, entries, servers)

    def intersection(self, other: GtidSet) -> GtidSet:
        """GTIDs in both sets; MariaDB server ids come from ``self``."""
        self._same_flavor(other, "intersect")
        entries = {src: _intersect(ivs, other._map.get(src, ())) for src, ivs in self._map.items()}
        return GtidSet(self._flavor, entries, self._servers)

    def difference(self, other: GtidSet) -> GtidSet:
        """GTIDs in ``self`` but not in ``other``; MariaDB server ids come from ``self``."""
        self._same_flavor(other, "subtract")
        entries = {src: _subtract(ivs, other._map.get(src, ())) for src, ivs in self._map.items()}
        return GtidSet(self._flavor, entries, self._servers)

    def issuperset(self, other: GtidSet) -> bool:
        """True iff every GTID of ``other`` is in ``self`` (server ids are ignored)."""
        self._same_flavor(other, "compare")
        return all(not _subtract(ivs, self._map.get(s, ())) for s, ivs in other._map.items())

    def issubset(self, other: GtidSet) -> bool:
        """True iff every GTID of ``self`` is in ``other`` (server ids are ignored)."""
        return other.issuperset(self)

    def __or__(self, other: object) -> GtidSet:
        return self.union(other) if isinstance(other, GtidSet) else NotImplemented

    def __and__(self, other: object) -> GtidSet:
        return self.intersection(other) if isinstance(other, GtidSet) else NotImplemented

    def __sub__(self, other: object) -> GtidSet:
        return self.difference(other) if isinstance(other, GtidSet) else NotImplemented

    def __ge__(self, other: object) -> bool:
        return self.issuperset(other) if isinstance(other, GtidSet) else NotImplemented

    def __le__(self, other: object) -> bool:
        return self.issubset(other) if isinstance(other, GtidSet) else NotImplemented

    def count(self) -> int:
        """Number of transactions in the set."""
        return sum(last - first + 1 for _, first, last in self.intervals())

    def intervals(self) -> Iterator[tuple[str, int, int]]:
        """Yield ``(source, first, last)`` inclusive ranges in canonical order."""
        for source, ivs in self._map.items():
            for first, last in ivs:
                yield source, first, last

    def position_text(self) -> str:
        """MariaDB: the server position form ``D-S-N,...``; raises `GtidError` unless each
        domain is one range starting at 1. MySQL: the same as ``str()``."""
        for dom, ivs in self._map.items():
            if self._flavor == "mariadb" and (len(ivs) != 1 or ivs[0][0] != 1):
                raise GtidError(
                    f"GTID set {_shown(str(self))} has no MariaDB position form because "
                    f"domain {dom} is not a single range starting at 1."
                )
        return str(self)

    def describe(self, limit: int = 10) -> str:
        """Human-readable ranges for messages: at most ``limit`` ranges, then a count."""
        ranges = [self._range_text(*item) for item in self.intervals()]
        if not ranges:
            return "no GTIDs"
        shown = ranges[: max(limit, 0)]
        rest = len(ranges) - len(shown)
        if not rest:
            return ", ".join(shown)
        more = f"{rest} more range" + ("s" if rest != 1 else "")
        return f"{', '.join(shown)} and {more}" if shown else more

    def _range_text(self, source: str, first: int, last: int) -> str:
        if self._flavor == "mysql":
            return f"{source}:{first}" if first == last else f"{source}:{first}-{last}"
        head = f"{source}-{self._servers[source]}-"
        return f"{head}{first}" if first == last else f"{head}{first}..{head}{last}"

    def _same_flavor(self, other: GtidSet, verb: str) -> None:
        if other._flavor != self._flavor:
            raise GtidError(
                f"Cannot {verb} {self._flavor} GTID set {_shown(str(self))} and "
                f"{other._flavor} GTID set {_shown(str(other))}."
            )

    def _own_gtid(self, gtid: Gtid | str) -> Gtid:
        parsed = parse_gtid(gtid) if isinstance(gtid, str) else gtid
        if parsed.flavor != self._flavor:
            raise GtidError(f"GTID '{parsed}' is {parsed.flavor}, not {self._flavor}.")
        return parsed


def as_flavor(name: str) -> Flavor:
    """The flavor a stored ``flavor`` field names: ``mariadb``, else ``mysql`` (files written by
    this project hold one of the two; anything else is read as MySQL, as it always was)."""
    return "mariadb" if name == "mariadb" else "mysql"


def _check_flavor(flavor: str) -> Flavor:
    for known in _FLAVORS:
        if flavor == known:
            return known
    raise GtidError(f"Unknown GTID flavor {flavor!r}; expected 'mysql' or 'mariadb'.")


def _interval(match: re.Match[str], limit: int) -> Interval:
    first = _number(match[1], "sequence number", 1, limit)
    last = first if match[2] is None else _number(match[2], "sequence number", 1, limit)
    if last < first:
        raise _Invalid(f"interval {first}-{last} ends before it starts")
    return first, last


def _parse_mysql(text: str) -> GtidSet:
    entries: dict[str, list[Interval]] = {}
    for raw in text.split(","):
        parts = [part.strip() for part in raw.split(":")]
        if not parts[0]:
            raise _Invalid("it has an empty entry")
        uuid = _mysql_source(parts[0])
        source, waiting, found = uuid, False, False
        for part in parts[1:]:
            match = _INTERVAL_RE.fullmatch(part)
            if match:
                entries.setdefault(source, []).append(_interval(match, _SEQ_LIMIT["mysql"]))
                waiting, found = False, True
            elif _TAG_RE.fullmatch(part) and not waiting:
                source, waiting = f"{uuid}:{part.lower()}", True
            else:
                raise _Invalid(f"{part!r} after {uuid} is not an interval or a tag with intervals")
        if waiting or not found:
            raise _Invalid(f"entry {raw.strip()!r} lacks intervals")
    return GtidSet("mysql", entries)


def _parse_mariadb(text: str) -> GtidSet:
    entries: dict[str, list[Interval]] = {}
    best: dict[str, tuple[int, int]] = {}
    limit = _SEQ_LIMIT["mariadb"]
    for raw in text.split(","):
        match = _MARIADB_ENTRY_RE.fullmatch(raw.strip())
        if not match:
            raise _Invalid(f"{raw.strip()!r} is not domain-server-seq")
        dom = str(_number(match[1], "domain id", 0, _U32_LIMIT))
        server = _number(match[2], "server id", 0, _U32_LIMIT)
        seq = _number(match[3], "sequence number", 1, limit)
        if match[4] is None:
            first, last = 1, seq
        else:
            first, last = seq, _number(match[4], "sequence number", 1, limit)
            if last < first:
                raise _Invalid(f"interval {first}:{last} ends before it starts")
        entries.setdefault(dom, []).append((first, last))
        best[dom] = max(best.get(dom, (0, 0)), (last, server))
    return GtidSet("mariadb", entries, {d: sid for d, (_, sid) in best.items()})


def gaps(expected: GtidSet, have: GtidSet) -> GtidSet:
    """GTIDs of ``expected`` that ``have`` lacks (``expected - have``); ``gaps(x, x)`` is empty."""
    return expected.difference(have)


def lost_gtids(saved: GtidSet, server_purged: GtidSet) -> GtidSet:
    """GTIDs gone from the server's binlogs that ``saved`` has not applied.

    ``server_purged`` is ``@@gtid_purged`` (MySQL) or ``BINLOG_GTID_POS(<oldest binlog>, 4)``
    (MariaDB). Resuming from ``saved`` is safe iff the result is empty.
    """
    return server_purged.difference(saved)


def unknown_to_server(saved: GtidSet, server_executed: GtidSet) -> GtidSet:
    """GTIDs in ``saved`` the server never executed; non-empty means the server's history is
    not the one we followed (server replaced or reset)."""
    return saved.difference(server_executed)
