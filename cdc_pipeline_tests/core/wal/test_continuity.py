"""``core.continuity``: the WAL chain and the checkpoint, healthy and each way they can break."""

from __future__ import annotations

from cdc_pipeline.core.wal.continuity import Link, check_chain

UUID = "3e11fa47-71ca-11e1-9e33-c80aa9429562"


def chain(*ranges: tuple[int, int]) -> list[Link]:
    """MySQL links: segment i covers transactions start+1..end."""
    links = []
    for sequence, (start, end) in enumerate(ranges, start=1):
        links.append(Link(sequence, f"{UUID}:1-{start}", f"{UUID}:1-{end}"))
    return links


def test_a_healthy_chain_and_checkpoint_pass() -> None:
    report = check_chain(
        chain((10, 20), (20, 35), (35, 36)), "mysql", f"{UUID}:1-10", 2, f"{UUID}:1-35"
    )
    assert report.ok and report.links == 3


def test_a_hole_between_segments_is_named() -> None:
    report = check_chain(chain((10, 20), (25, 30)), "mysql", f"{UUID}:1-10")
    assert not report.ok
    assert report.missing == [f"{UUID}:21-25"]


def test_an_overlap_is_named() -> None:
    report = check_chain(chain((10, 20), (15, 30)), "mysql", f"{UUID}:1-10")
    assert report.overlapping == [f"{UUID}:16-20"]


def test_a_missing_segment_and_a_wrong_origin_are_reported() -> None:
    links = chain((10, 20), (20, 30), (30, 40))
    del links[1]
    report = check_chain(links, "mysql", f"{UUID}:1-5")
    assert any("segments 2..2 are missing" in problem for problem in report.problems)
    assert report.missing[0] == f"{UUID}:6-10"


def test_a_checkpoint_that_does_not_match_its_segment_fails() -> None:
    links = chain((10, 20), (20, 30))
    ahead = check_chain(links, "mysql", f"{UUID}:1-10", 1, f"{UUID}:1-25")
    assert not ahead.ok and "ends at" in ahead.problems[0]
    unknown = check_chain(links, "mysql", f"{UUID}:1-10", 7, f"{UUID}:1-30")
    assert not unknown.ok and "lacks" in unknown.problems[0]


def test_mariadb_positions_chain_per_domain() -> None:
    links = [Link(1, "0-1-5", "0-1-9,1-2-3"), Link(2, "0-1-9,1-2-3", "0-1-12,1-2-3")]
    assert check_chain(links, "mariadb", "0-1-5").ok
    broken = [links[0], Link(2, "0-1-10,1-2-3", "0-1-12,1-2-3")]
    report = check_chain(broken, "mariadb", "0-1-5")
    assert not report.ok and "0-1-10" in report.missing[0]
