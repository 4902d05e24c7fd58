"""Tests for cdc_pipeline.core.gtid: GTID parsing, canonical text and set algebra."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdc_pipeline.core.gtid import (
    Flavor,
    Gtid,
    GtidError,
    GtidSet,
    gaps,
    lost_gtids,
    parse_gtid,
    unknown_to_server,
)

U1 = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
U2 = "4e11fa47-71ca-11e1-9e33-c80aa9429562"
U3 = "0a11fa47-71ca-11e1-9e33-c80aa9429562"


def my(text: str) -> GtidSet:
    return GtidSet.parse(text, "mysql")


def ma(text: str) -> GtidSet:
    return GtidSet.parse(text, "mariadb")


# --- example-based: MySQL ---------------------------------------------------------------


def test_mysql_server_output_with_newlines_and_upper_case() -> None:
    text = f"{U2.upper()}:1-3,\n{U1.upper()}:1-5:7-9,\n  {U3}:10"
    s = my(text)
    assert str(s) == f"{U3}:10,{U1}:1-5:7-9,{U2}:1-3"
    assert s.count() == 3 + 8 + 1
    assert f"{U1}:8" in s
    assert f"{U1.upper()}:6" not in s
    assert Gtid("mysql", U1.upper(), 9) in s


def test_mysql_intervals_are_merged_and_single_numbers_printed_bare() -> None:
    s = my(f"{U1}:4-5:1-3:9:7:8:20-21,{U1}:22")
    assert str(s) == f"{U1}:1-5:7-9:20-22"
    assert list(s.intervals()) == [(U1, 1, 5), (U1, 7, 9), (U1, 20, 22)]
    assert str(my(f"{U1}:5")) == f"{U1}:5"


def test_mysql_tagged_gtids() -> None:
    s = my(f"{U1}:TAG_B:2,{U1}:1-5:tag_a:1-3:7,{U1}:_x:4")
    assert str(s) == f"{U1}:1-5:_x:4:tag_a:1-3:7:tag_b:2"
    assert f"{U1}:tag_a:7" in s
    assert f"{U1}:Tag_A:2" in s
    assert f"{U1}:tag_a:5" not in s
    assert f"{U1}:tag_b:1" not in s
    assert list(s.intervals())[1] == (f"{U1}:_x", 4, 4)
    only_tagged = my(f"{U2}:t:1-2")
    assert str(only_tagged) == f"{U2}:t:1-2"
    assert f"{U2}:1" not in only_tagged


def test_parse_gtid_shapes() -> None:
    assert parse_gtid(f" {U1.upper()}:42 ") == Gtid("mysql", U1, 42)
    assert str(parse_gtid(f"{U1}:Tag_1:7")) == f"{U1}:tag_1:7"
    assert parse_gtid(f"{U1}:Tag_1:7").source == f"{U1}:tag_1"
    g = parse_gtid("0-1-100")
    assert (g.flavor, g.source, g.server_id, g.seq) == ("mariadb", "0", 1, 100)
    assert str(g) == "0-1-100"
    assert str(parse_gtid("007-2-3")) == "7-2-3"


@pytest.mark.parametrize(
    "text",
    [
        "abc",
        f"{U1}:0",
        f"{U1}:5-3",
        f"{U1}",
        f"{U1}:",
        f"{U1}:1,,{U2}:1",
        f"{U1}:1,",
        "3e11fa47:1",
        f"{U1}:tag",
        f"{U1}:1-5:tag_a",
        f"{U1}:a:b:1",
        f"{U1}:9tag:1",
        f"{U1}:{'t' * 33}:1",
        f"{U1}:{2**63}",
        f"{U1}:1-{2**63}",
        f"{U1}:1.5",
        f"{U1}:-1",
        f"{U1}:+1",
        f"{U1}:1_0",
        f"{U1}:\u0661",
        f"{U1}:{'9' * 5000}",
        "0-1-100",
    ],
)
def test_mysql_junk_is_rejected(text: str) -> None:
    with pytest.raises(GtidError) as info:
        my(text)
    assert "mysql GTID set" in str(info.value)
    assert text[:20] in str(info.value)


@pytest.mark.parametrize(
    "text",
    ["abc", "", "0-1", f"{U1}:0", f"{U1}:1-2", f"{U1}:tag", "0-1-0", "0-1-x", f"{2**32}-1-1"],
)
def test_parse_gtid_junk_is_rejected(text: str) -> None:
    with pytest.raises(GtidError, match="Invalid GTID"):
        parse_gtid(text)


def test_gtid_constructor_validates() -> None:
    for args in [("mysql", "nope", 1, None), ("mysql", U1, 0, None), ("mysql", U1, 1, 5)]:
        with pytest.raises(GtidError):
            Gtid(*args)  # type: ignore[arg-type]
    with pytest.raises(GtidError):
        Gtid("mariadb", "0", 1)
    with pytest.raises(GtidError):
        Gtid("mariadb", "x", 1, 1)
    with pytest.raises(GtidError):
        Gtid("postgres", "0", 1, 1)  # type: ignore[arg-type]


# --- example-based: MariaDB -------------------------------------------------------------


@pytest.mark.parametrize("text", ["0-1-100", "0-1-100,1-2-5", "0-1-7,3-10-1,10-2-99999999999"])
def test_mariadb_server_positions_round_trip_exactly(text: str) -> None:
    s = ma(text)
    assert str(s) == text
    assert s.position_text() == text


def test_mariadb_position_semantics() -> None:
    s = ma(" 1-2-5 ,\n0-1-100")
    assert str(s) == "0-1-100,1-2-5"
    assert "0-1-1" in s and "0-9-100" in s and "0-1-101" not in s
    assert "1-2-6" not in s and "2-1-1" not in s
    assert s.count() == 105
    assert list(s.intervals()) == [("0", 1, 100), ("1", 1, 5)]


def test_mariadb_binlog_state_takes_server_of_highest_seq() -> None:
    # @@gtid_binlog_state lists one entry per (domain, server).
    assert str(ma("0-1-100,0-2-50,0-3-120")) == "0-3-120"


def test_mariadb_union_keeps_server_of_highest_seq() -> None:
    assert str(ma("0-1-10,1-1-3") | ma("0-2-12,1-2-2")) == "0-2-12,1-1-3"
    # Same highest seq from two servers (diverged histories): larger server id, either order.
    assert str(ma("0-1-10") | ma("0-2-10")) == str(ma("0-2-10") | ma("0-1-10")) == "0-2-10"
    assert str(ma("0-3-10") & ma("0-2-20")) == "0-3-10"  # intersection/difference: left wins
    assert str(ma("0-3-20") - ma("0-2-10")) == "0-3-11:20"


def test_mariadb_extended_form() -> None:
    s = ma("0-1-10") - ma("0-1-3") | ma("0-1-15:15")
    assert str(s) == "0-1-4:10,0-1-15:15"
    assert ma(str(s)) == s
    assert ma("0-1-1:10") == ma("0-1-10")
    with pytest.raises(GtidError, match="domain 0"):
        s.position_text()
    assert s.describe() == "0-1-4..0-1-10, 0-1-15"


@pytest.mark.parametrize(
    "text",
    ["0-1", "abc", "0-1-0", "0-1-5:3", "0-1-1,", "0-1-x", "-1-1-1", f"{2**32}-1-1",
     f"0-{2**32}-1", f"0-1-{2**64}", "0:1:1", f"{U1}:1", "0-1-1:2:3", "0 - 1 - 1"],
)  # fmt: skip
def test_mariadb_junk_is_rejected(text: str) -> None:
    with pytest.raises(GtidError) as info:
        ma(text)
    assert "mariadb GTID set" in str(info.value)


# --- example-based: common behaviour ----------------------------------------------------


@pytest.mark.parametrize("flavor", ["mysql", "mariadb"])
def test_empty_set(flavor: Flavor) -> None:
    e = GtidSet.empty(flavor)
    assert GtidSet.parse("", flavor) == e == GtidSet.parse(" \n", flavor)
    assert not e and str(e) == "" and e.count() == 0 and e.position_text() == ""
    assert e.describe() == "no GTIDs"
    assert e.flavor == flavor


def test_of_and_add() -> None:
    s = GtidSet.of([parse_gtid(f"{U1}:3"), parse_gtid(f"{U1}:1"), parse_gtid(f"{U1}:2")])
    assert s == my(f"{U1}:1-3")
    assert s.add(f"{U1}:4") == my(f"{U1}:1-4")
    assert s.add(Gtid("mysql", U1, 2)) is not s and s.add(f"{U1}:2") == s
    m = GtidSet.of([parse_gtid("0-1-1"), parse_gtid("0-2-2")])
    assert str(m) == "0-2-2" and str(m.add("0-5-3")) == "0-5-3"
    with pytest.raises(GtidError, match="empty"):
        GtidSet.of([])
    with pytest.raises(GtidError):
        GtidSet.of([parse_gtid(f"{U1}:1"), parse_gtid("0-1-1")])


def test_operations_across_flavors_raise() -> None:
    a, b = my(f"{U1}:1-3"), ma("0-1-3")
    for op in (
        lambda: a | b, lambda: a & b, lambda: a - b, lambda: a >= b, lambda: b <= a,
        lambda: a.issuperset(b), lambda: "0-1-1" in a, lambda: b.add(f"{U1}:1"),
        lambda: gaps(a, b), lambda: lost_gtids(a, b), lambda: unknown_to_server(b, a),
    ):  # fmt: skip
        with pytest.raises(GtidError, match=r"mysql|mariadb"):
            op()
    assert a != b
    with pytest.raises(GtidError, match="flavor"):
        GtidSet.parse("", "postgres")  # type: ignore[arg-type]


def test_value_semantics_and_immutability() -> None:
    a = my(f"{U1.upper()}:1-3:4")
    b = my(f"{U1}:1-4")
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert repr(a) == f"GtidSet.parse('{U1}:1-4', 'mysql')"
    with pytest.raises(AttributeError):
        a.flavor = "mariadb"  # type: ignore[misc]
    assert ma("0-1-5") != ma("0-2-5")  # server id is part of the state
    assert ma("0-1-5") >= ma("0-2-5")  # ... but not of membership


def test_describe_limits_ranges() -> None:
    s = my(f"{U1}:41-50:60:70:80,{U2}:1")
    assert s.describe() == f"{U1}:41-50, {U1}:60, {U1}:70, {U1}:80, {U2}:1"
    assert s.describe(limit=2) == f"{U1}:41-50, {U1}:60 and 3 more ranges"
    assert s.describe(limit=4) == f"{U1}:41-50, {U1}:60, {U1}:70, {U1}:80 and 1 more range"


def test_lost_gtids_mariadb() -> None:
    purged = ma("0-1-50")
    lost = lost_gtids(ma("0-1-40"), purged)
    assert str(lost) == "0-1-41:50" and lost.count() == 10
    assert lost.describe() == "0-1-41..0-1-50"
    assert not lost_gtids(ma("0-1-50"), purged)
    assert not lost_gtids(ma("0-1-70"), purged)
    assert not lost_gtids(ma("0-1-70"), GtidSet.empty("mariadb"))
    missing_domain = lost_gtids(ma("0-1-70"), ma("0-1-50,1-3-9"))
    assert str(missing_domain) == "1-3-9" and missing_domain.describe() == "1-3-1..1-3-9"


def test_lost_gtids_mysql() -> None:
    purged = my(f"{U1}:1-50,{U2}:1-5")
    assert str(lost_gtids(my(f"{U1}:1-40,{U2}:1-9"), purged)) == f"{U1}:41-50"
    assert str(lost_gtids(my(f"{U1}:1-60"), purged)) == f"{U2}:1-5"
    assert not lost_gtids(my(f"{U1}:1-60,{U2}:1-5"), purged)


def test_unknown_to_server() -> None:
    assert not unknown_to_server(ma("0-1-40"), ma("0-1-50"))
    assert str(unknown_to_server(ma("0-1-60"), ma("0-1-50"))) == "0-1-51:60"
    reset = unknown_to_server(ma("0-1-100,1-1-5"), ma("0-1-3"))
    assert reset.describe() == "0-1-4..0-1-100, 1-1-1..1-1-5"
    assert str(unknown_to_server(my(f"{U1}:1-10"), my(f"{U2}:1-10"))) == f"{U1}:1-10"
    assert not unknown_to_server(my(f"{U1}:1-10"), my(f"{U1}:1-20"))


def test_gaps() -> None:
    expected = my(f"{U1}:1-100")
    have = my(f"{U1}:1-40:51-59:61-100")
    assert str(gaps(expected, have)) == f"{U1}:41-50:60"
    assert gaps(expected, have).describe() == f"{U1}:41-50, {U1}:60"
    assert not gaps(expected, expected)


# --- property tests ---------------------------------------------------------------------

SOURCES = {"mysql": [U1, U2, f"{U1}:tag_a", f"{U1}:b"], "mariadb": ["0", "1", "7"]}
MAX_SEQ = 45


@st.composite
def ranges(draw: st.DrawFn, flavor: Flavor) -> tuple[str, int, int, int]:
    source = draw(st.sampled_from(SOURCES[flavor]))
    first = draw(st.integers(1, MAX_SEQ - 6))
    return source, first, first + draw(st.integers(0, 5)), draw(st.integers(1, 3))


def entry_text(flavor: Flavor, source: str, first: int, last: int, server: int) -> str:
    if flavor == "mysql":
        return f"{source.upper() if server == 1 else source}:{first}-{last}"
    if first == 1:
        return f"{source}-{server}-{last}"
    return f"{source}-{server}-{first}:{last}"


@st.composite
def modelled_sets(draw: st.DrawFn, flavor: Flavor) -> tuple[GtidSet, set[tuple[str, int]]]:
    """A set parsed from random entries, plus the plain-Python model of its members."""
    items = draw(st.lists(ranges(flavor), max_size=6))
    text = ",\n".join(entry_text(flavor, *item) for item in items)
    model = {(src, seq) for src, first, last, _ in items for seq in range(first, last + 1)}
    return GtidSet.parse(text, flavor), model


def sets(flavor: Flavor) -> st.SearchStrategy[GtidSet]:
    return modelled_sets(flavor).map(lambda pair: pair[0])


def probe(flavor: Flavor, source: str, seq: int) -> Gtid:
    return Gtid(flavor, source, seq, 9 if flavor == "mariadb" else None)


PROBES = {
    flavor: [probe(flavor, s, n) for s in SOURCES[flavor] for n in range(1, MAX_SEQ + 2)]
    for flavor in ("mysql", "mariadb")
}
FLAVORS: list[Flavor] = ["mysql", "mariadb"]
flavors = st.sampled_from(FLAVORS)


def members(s: GtidSet) -> set[tuple[str, int]]:
    return {(src, n) for src, first, last in s.intervals() for n in range(first, last + 1)}


@given(st.data())
def test_round_trip_and_model(data: st.DataObject) -> None:
    flavor = data.draw(flavors)
    s, model = data.draw(modelled_sets(flavor))
    assert GtidSet.parse(str(s), flavor) == s
    assert str(GtidSet.parse(str(s), flavor)) == str(s)
    assert members(s) == model and s.count() == len(model) and bool(s) == bool(model)
    assert all((g in s) == ((g.source, g.seq) in model) for g in PROBES[flavor])
    assert all(g in s for g in (probe(flavor, src, n) for src, n in model))
    listed = list(s.intervals())
    assert listed == sorted(listed, key=lambda r: (int(r[0]) if flavor == "mariadb" else 0, r))
    assert all(b[1] > a[2] + 1 for a, b in pairwise(listed) if a[0] == b[0])


@given(st.data())
def test_set_operations_match_model(data: st.DataObject) -> None:
    flavor = data.draw(flavors)
    a, ma_ = data.draw(modelled_sets(flavor))
    b, mb = data.draw(modelled_sets(flavor))
    assert members(a | b) == ma_ | mb
    assert members(a & b) == ma_ & mb
    assert members(a - b) == ma_ - mb
    assert (a >= b) == (ma_ >= mb) and (a <= b) == (ma_ <= mb)
    for g in PROBES[flavor]:
        assert (g in a - b) == (g in a and g not in b)


@settings(max_examples=200)
@given(st.data())
def test_union_laws(data: st.DataObject) -> None:
    flavor = data.draw(flavors)
    a, b, c = (data.draw(sets(flavor)) for _ in range(3))
    empty = GtidSet.empty(flavor)
    assert a | b == b | a
    assert (a | b) | c == a | (b | c)
    assert a | a == a and a | empty == a == empty | a
    assert (a | b).issuperset(a) and a | b >= b
    assert (a | b).count() == a.count() + b.count() - (a & b).count()


@settings(max_examples=200)
@given(st.data())
def test_difference_and_intersection_laws(data: st.DataObject) -> None:
    flavor = data.draw(flavors)
    a, b = data.draw(sets(flavor)), data.draw(sets(flavor))
    assert not (a - b) & b
    assert (a - b) | (a & b) == a
    assert a - a == GtidSet.empty(flavor) and not gaps(a, a)
    assert gaps(a, b) == a - b and a >= a - b and a >= a & b
    assert lost_gtids(a, b) == b - a and unknown_to_server(a, b) == a - b
    assert not lost_gtids(a | b, b) and not unknown_to_server(a, a | b)
    assert members(a & b) == members(b & a)


@given(st.lists(st.tuples(st.integers(0, 20), st.integers(0, 5), st.integers(1, 10**6))))
def test_mariadb_positions_print_like_the_server(items: list[tuple[int, int, int]]) -> None:
    by_domain = {domain: (server, seq) for domain, server, seq in items}
    text = ",".join(f"{d}-{s}-{n}" for d, (s, n) in sorted(by_domain.items()))
    s = ma(text)
    assert str(s) == text == s.position_text()
    assert s.count() == sum(n for _, n in by_domain.values())


@given(st.data())
def test_add_equals_union_with_single(data: st.DataObject) -> None:
    flavor = data.draw(flavors)
    a = data.draw(sets(flavor))
    g = data.draw(st.sampled_from(PROBES[flavor]))
    assert a.add(g) == a | GtidSet.of([g]) == a.add(str(g))
    assert g in a.add(g) and a.add(g).count() == a.count() + (g not in a)
