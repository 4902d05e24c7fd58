"""What ``reconcile`` found, per mirrored table: for the CLI, the asset check and JSON.

Invariant: a report holds counts, key texts, field names, GTID sets and reasons; never a value
of a row (table data can be sensitive, and this goes to the UI).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from cdc_pipeline.core.audit.reconcile.compare import Comparison
from cdc_pipeline.core.problems import CappedProblems

State = Literal["equal", "different", "skipped", "stale"]


@dataclass(kw_only=True)
class TableResult(Comparison):
    """One mirrored table: ``equal``, ``different``, ``stale`` (marked by the loader) or
    ``skipped`` (no moment found where the checkpoint covers the source state; ``reason``);
    for a compared table, the ``Comparison`` it came from."""

    name: str
    state: State
    reason: str = ""
    checkpoint_gtid: str = ""
    source_gtid: str = ""
    seconds: float = 0.0
    set_aside: list[str] = field(default_factory=list)
    """Keys set aside in ``cdc_dead_letters``: known to differ, left out of the comparison."""

    @classmethod
    def compared(cls, name: str, comparison: Comparison, **details: Any) -> TableResult:
        counts = {
            item.name: copy.copy(getattr(comparison, item.name)) for item in fields(Comparison)
        }
        state: State = "equal" if comparison.equal else "different"
        return cls(name=name, state=state, **counts, **details)

    @property
    def rows_per_second(self) -> float:
        rows = self.source_rows + self.mirror_rows
        return rows / self.seconds if self.seconds > 0 else 0.0

    def keys_text(self) -> str:
        parts = []
        if self.missing_keys:
            parts.append("missing " + ", ".join(self.missing_keys))
        if self.extra_keys:
            parts.append("extra " + ", ".join(self.extra_keys))
        if self.differing_keys:
            shown = (f"{key} ({', '.join(fields)})" for key, fields in self.differing_keys)
            parts.append("differing " + ", ".join(shown))
        return "; ".join(parts)

    def line(self) -> str:
        if self.set_aside and self.state in ("equal", "different"):
            keys = ", ".join(self.set_aside[:10])
            return (
                self._line() + f"; {len(self.set_aside):,} key(s) set aside in cdc_dead_letters"
                f" and known to differ: {keys}"
            )
        return self._line()

    def _line(self) -> str:
        if self.state == "equal":
            return f"{self.name}: equal {self.source_rows:,} rows"
        if self.state == "different":
            return (
                f"{self.name}: DIFFERENT missing {self.missing:,} extra {self.extra:,}"
                f" differing {self.differing:,} (source {self.source_rows:,} rows, mirror"
                f" {self.mirror_rows:,}): keys {self.keys_text()}"
            )
        if self.state == "stale":
            return f"{self.name}: STALE {self.reason}"
        return f"{self.name}: skipped, {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "table": self.name,
            "state": self.state,
            "source_rows": self.source_rows,
            "mirror_rows": self.mirror_rows,
            "missing": self.missing,
            "extra": self.extra,
            "differing": self.differing,
            "missing_keys": self.missing_keys,
            "extra_keys": self.extra_keys,
            "differing_keys": [
                {"key": key, "fields": fields} for key, fields in self.differing_keys
            ],
            "reason": self.reason,
            "set_aside_keys": self.set_aside,
            "checkpoint_gtid": self.checkpoint_gtid,
            "source_gtid": self.source_gtid,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class StrayMirror:
    """A non-empty mirror collection whose source table does not exist (or has no key)."""

    collection: str
    schema: str
    table: str
    documents: int

    def line(self) -> str:
        return (
            f"stray mirror {self.collection}: {self.documents:,} documents, but the source has"
            f" no table {self.schema}.{self.table} with a primary key"
        )


@dataclass
class ReconcileReport(CappedProblems):
    """Every mirrored table's result, stray mirrors, and the positions compared."""

    tables: list[TableResult] = field(default_factory=list)
    strays: list[StrayMirror] = field(default_factory=list)
    unmirrored: list[str] = field(default_factory=list)
    """Tables in scope without a primary key: kept in ``row_changes`` only, nothing to compare."""
    checkpoint_gtid: str = ""
    source_gtid: str = ""
    seconds: float = 0.0
    unrelated_problems: int = 0
    """Problems outside any table (e.g. a checkpoint the source never executed)."""

    @property
    def passed(self) -> bool:
        """No table differs, no mirror is stale, no stray mirror, nothing else wrong."""
        bad = any(
            result.state in ("different", "stale") or result.set_aside for result in self.tables
        )
        return not bad and not self.strays and not self.unrelated_problems

    @property
    def complete(self) -> bool:
        """Every table in scope was compared (none skipped)."""
        return all(result.state != "skipped" for result in self.tables)

    def add_table(self, result: TableResult) -> None:
        self.tables.append(result)
        if result.state != "equal":
            self.add(result.line())

    def add_stray(self, stray: StrayMirror) -> None:
        self.strays.append(stray)
        self.add(stray.line())

    def count(self, state: State) -> int:
        return sum(result.state == state for result in self.tables)

    def summary(self) -> str:
        parts = [f"{self.count('equal')} equal"]
        states: tuple[State, ...] = ("different", "stale", "skipped")
        parts += [f"{self.count(state)} {state}" for state in states if self.count(state)]
        if self.strays:
            parts.append(f"{len(self.strays)} stray mirror{'s' if len(self.strays) > 1 else ''}")
        return f"{len(self.tables)} mirrored tables: " + ", ".join(parts)

    def findings(self) -> str:
        """What failed, in one line for the operator ("" when the report passed, complete)."""
        if self.passed and self.complete:
            return ""
        findings = []
        for state, verb in (("different", "differ"), ("stale", "are stale")):
            names = [result.name for result in self.tables if result.state == state]
            if names:
                findings.append(f"{len(names)} {verb} ({', '.join(names)})")
        held = [result.name for result in self.tables if result.set_aside]
        if held:
            findings.append(
                f"{len(held)} with rows set aside in cdc_dead_letters ({', '.join(held)}:"
                " cdc-pipeline dead-letters list)"
            )
        if self.strays:
            strays = [stray.collection for stray in self.strays]
            findings.append(f"{len(strays)} stray mirror collections ({', '.join(strays)})")
        skipped = [result for result in self.tables if result.state == "skipped"]
        if skipped:
            findings.append(f"{len(skipped)} skipped ({skipped[0].name}: {skipped[0].reason})")
        if not findings:
            findings = self.problems[:1]
        return "; ".join(findings)

    def lines(self) -> list[str]:
        lines = [result.line() for result in self.tables]
        lines += [stray.line() for stray in self.strays]
        if self.unmirrored:
            lines.append(
                f"not mirrored (no primary key, change log only): {', '.join(self.unmirrored)}"
            )
        rows = sum(result.source_rows + result.mirror_rows for result in self.tables)
        lines.append(f"{self.summary()}; {rows:,} rows read in {self.seconds:.1f} s")
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "complete": self.complete,
            "summary": self.summary(),
            "checkpoint_gtid": self.checkpoint_gtid,
            "source_gtid": self.source_gtid,
            "tables": [result.to_dict() for result in self.tables],
            "strays": [stray.__dict__ for stray in self.strays],
            "unmirrored": self.unmirrored,
            "problems": self.problems,
            "problem_count": self.problem_count,
            "seconds": round(self.seconds, 3),
        }
