"""The package's import structure, read from its source: no circles, nothing imports upward,
``core`` never imports dagster, and capture and load meet only in ``wal``/``mysql``.

The layers, bottom up (docs/architecture.md): the shared vocabulary in ``core/`` itself; ``mysql/``
and ``wal/``; ``capture/`` and ``load/``; ``audit/``; ``defs/``; ``definitions.py`` and ``cli.py``.
A module may import its own layer or a lower one, except that the packages of one layer never
import each other.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "cdc_pipeline"
LAYERS: tuple[tuple[str, ...], ...] = (
    ("core",),
    ("core.mysql", "core.wal"),
    ("core.capture", "core.load"),
    ("core.audit",),
    ("defs",),
    ("definitions", "cli", "wal"),
)
"""Each layer's groups: a module belongs to the longest group its dotted name starts with."""


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
    return ".".join(parts)


def read_imports(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Every ``cdc_pipeline`` module and the ``cdc_pipeline`` modules and outside packages it
    imports (anywhere in the file: top level, TYPE_CHECKING blocks and functions alike)."""
    modules = {module_name(path): path for path in package.rglob("*.py")}
    imports: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    submodule = f"{node.module}.{alias.name}"
                    found.add(submodule if submodule in modules else node.module)
        imports[name] = found
    return imports


def group_of(module: str) -> tuple[int, str] | None:
    """(layer index, group) of a ``cdc_pipeline`` module, None for anything else."""
    if not module.startswith("cdc_pipeline."):
        return None
    inner = module.removeprefix("cdc_pipeline.")
    best: tuple[int, str] | None = None
    for index, groups in enumerate(LAYERS):
        for group in groups:
            if (inner == group or inner.startswith(group + ".")) and (
                best is None or len(group) > len(best[1])
            ):
                best = (index, group)
    return best


def layer_violations(imports: Mapping[str, Iterable[str]]) -> list[str]:
    """Imports that go up a layer, across the groups of one layer, or into dagster from core."""
    problems = []
    for module, targets in sorted(imports.items()):
        own = group_of(module)
        for target in sorted(targets):
            if own is not None and own[1].startswith("core") and target.split(".")[0] == "dagster":
                problems.append(f"{module} imports dagster")
            other = group_of(target)
            if own is None or other is None or other[1] == own[1]:
                continue
            if other[0] > own[0]:
                problems.append(f"{module} imports {target}, a higher layer")
            elif other[0] == own[0] and own[1] != "core":
                problems.append(f"{module} imports {target}, a sibling of its layer")
    return problems


def circles(imports: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Import cycles among the modules (each reported once, from its smallest module)."""
    graph = {
        module: sorted(t for t in targets if t in imports) for module, targets in imports.items()
    }
    found: list[list[str]] = []
    seen: set[tuple[str, ...]] = set()

    def walk(path: list[str]) -> None:
        for target in graph[path[-1]]:
            if target == path[0]:
                cycle = tuple(path)
                key = tuple(sorted(cycle))
                if key not in seen:
                    seen.add(key)
                    found.append(list(cycle))
            elif target not in path and target > path[0]:
                walk([*path, target])

    for start in sorted(graph):
        walk([start])
    return found


def test_the_package_has_no_import_circles() -> None:
    assert circles(read_imports()) == []


def test_nothing_imports_upward_or_across_a_layer_and_core_never_imports_dagster() -> None:
    assert layer_violations(read_imports()) == []


def test_every_module_belongs_to_a_layer() -> None:
    modules = [module for module in read_imports() if module != "cdc_pipeline"]
    assert [module for module in modules if group_of(module) is None] == []


def test_the_checks_report_each_kind_of_breakage() -> None:
    """The rules fail on the states they exist to catch (a synthetic import graph)."""
    broken = {
        "cdc_pipeline.core.wal.segment": {"cdc_pipeline.core.load.sink", "dagster"},
        "cdc_pipeline.core.load.sink": {"cdc_pipeline.core.capture.tick"},
        "cdc_pipeline.core.capture.tick": {"cdc_pipeline.core.wal.segment"},
        "cdc_pipeline.core.mysql.source": {"cdc_pipeline.core.wal.staging"},
        "cdc_pipeline.core.wal.staging": set(),
        "cdc_pipeline.defs.load": {"cdc_pipeline.core.load.sink", "dagster"},
    }
    assert layer_violations(broken) == [
        "cdc_pipeline.core.load.sink imports cdc_pipeline.core.capture.tick, a sibling of its"
        " layer",
        "cdc_pipeline.core.mysql.source imports cdc_pipeline.core.wal.staging, a sibling of its"
        " layer",
        "cdc_pipeline.core.wal.segment imports cdc_pipeline.core.load.sink, a higher layer",
        "cdc_pipeline.core.wal.segment imports dagster",
    ]
    assert circles(broken) == [
        [
            "cdc_pipeline.core.capture.tick",
            "cdc_pipeline.core.wal.segment",
            "cdc_pipeline.core.load.sink",
        ]
    ]
