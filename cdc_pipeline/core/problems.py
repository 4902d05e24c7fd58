"""Findings for people: a capped list of problems, and durations in words.

Invariant: ``problem_count`` counts every problem added; ``problems`` keeps the first
``MAX_PROBLEMS`` of them, in the order found.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_PROBLEMS = 20


@dataclass
class CappedProblems:
    problems: list[str] = field(default_factory=list)
    problem_count: int = 0

    @property
    def ok(self) -> bool:
        return self.problem_count == 0

    def add(self, problem: str) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(problem)


def duration_text(seconds: float) -> str:
    """A duration for people: ``35 s``, ``4 min``, ``3 h 4 min``, ``2 d 5 h``."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} d {seconds % 86400 // 3600} h"
