"""A capped list of problems, for reports whose findings go into metadata and messages.

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
