"""``python -m bench.profile``: where capture and load spend their time, under cProfile.

Starts the same local servers as ``bench.run`` (``bench.servers``: MariaDB or MySQL, and the
MongoDB stand-in nx-27017 unless ``--mongo-uri``), writes the same backlog (``bench.workload``,
1,000-row transactions), then, in this process and each under the stdlib ``cProfile``:

    * capture: ``bench.capture_bench.measure_product_capture``, i.e. ``capture_once`` called
      until it reports ``caught_up`` (binlog -> Extended JSON -> zstd Parquet WAL segments);
    * load: ``cdc_pipeline.core.load.loader.run_load`` of exactly those segments into a fresh
      database (validate, register schema versions, ``MongoSink.apply``, checkpoint).

For each it prints the wall seconds and rows/s (under the profiler: cProfile makes
Python-heavy code slower, so shares matter more than rates), the CPU seconds this process and
each server process used meanwhile (a server's work shows in the profile only as socket
waits), the top entries by cumulative time (restricted to frames of interest) and by own time,
and every function's own time grouped by what it does (library decoding, value conversion,
Extended JSON, Parquet, digests, BSON/pymongo, socket waits, the sink's coalescing...). Own
time of generic frames (the interpreter, the stdlib, builtins such as ``isinstance``) is
charged to the group of their callers, in proportion to the time each caller spent in them.

Raw ``.pstats`` files and the printed report go to ``bench/results/`` (git-ignored); open a
``.pstats`` with ``python -m pstats FILE`` or snakeviz. Servers are stopped by their PID and
their data deleted at the end (``bench.servers``).

    python -m bench.profile                      # 50,000 mixed rows on MariaDB
    python -m bench.profile --rows 10000 --unprofiled
"""

from __future__ import annotations

import argparse
import ast
import cProfile
import functools
import os
import pstats
import random
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pymongo

from bench.capture_bench import SOURCE_NAME, checked, measure_product_capture
from bench.machine import _cpu_model
from bench.servers import BenchServers, started_servers
from bench.workload import TRANSACTION_ROWS, VARIANTS, Backlog, drop_backlog, write_backlog

RESULTS = Path(__file__).resolve().parent / "results"
TOP = 20

Func = tuple[str, int, str]  # pstats' (filename, line, function name)

# -- grouping ------------------------------------------------------------------------------------
SOCKET = "socket I/O + waiting for the server (directly or for the bulk-write thread)"
CONNECT = "connection setup (TLS context per connection, connect)"
LIBRARY = "binlog decoding (pymysqlreplication)"
WIRE = "MySQL packets (pymysql)"
VALUES = "value conversion (core.values, decoder_fixes)"
ENCODE = "Extended JSON encoding (encode_document -> bson.json_util)"
DECODE = "image decoding (decode_image, document_keys; format 1: Extended JSON)"
IMAGE_ENCODE = "image encoding (encode_image, TextedDecimal128.bid; BSON itself is bson C)"
ROW_DECODER = "our row decoder (mysql.row_decoder, mysql.json_binary)"
DIGESTS = "digests + read_verified (its to_pylist, digest_line JSON, sha256)"
PARQUET = "pyarrow (Parquet write, from_pylist; VerifiedSegment.rows' to_pylist)"
FILES = "fsync + file I/O"
BSON = "BSON encoding/decoding (bson C)"
PYMONGO = "pymongo (bulk ops, commands, pool)"
COALESCE = "sink coalescing (_Phase.set, key_text)"
COMPAT = "sink nx-27017 compat (_decimals_to_strings)"
SINK = "sink documents (apply, change_document, _stage_mirror, mirror_document)"
VALIDATION = "validate_segment + _check_row (incl. its to_pylist)"
PLUMBING = "our binlog/segment plumbing (mysql.binlog, schema, segment_builder, capture.tick)"
OURS = "other cdc_pipeline (loader, gtid, settings...)"
UNATTRIBUTED = "interpreter/stdlib, no attributable caller"

_ENCODERS = {"encode_document", "_escape_keys", "_canonical_json"}
_IMAGE_ENCODERS = {"encode_image", "bid", "__init__", "__str__"}
_DECODERS = {"decode_document", "_unescape_pairs", "_unescape_pairs_decimal_text", "document_keys"}
_DIGEST_FUNCTIONS = {"digest_line", "file_sha256", "read_verified", "verify_segment", "append"}
_PYARROW_CALLERS = {("core/wal/writer.py", "_flush"), ("core/wal/segment.py", "rows")}
_COALESCING = {"set", "key_text"}
SHARED_HELPERS = (
    ("cdc_pipeline/core/values.py", "convert_row"),
    ("cdc_pipeline/core/images.py", "encode_document"),
    ("cdc_pipeline/core/images.py", "decode_document"),
    ("cdc_pipeline/core/wal/segment.py", "digest_line"),
    ("cdc_pipeline/core/load/documents.py", "key_text"),
    ("cdc_pipeline/core/load/sink.py", "_decimals_to_strings"),
)
_PYMONGO_API = {
    "bulk_write",
    "insert_many",
    "replace_one",
    "find_one",
    "find",
    "delete_many",
    "drop_collection",
}


def _builtin_group(name: str) -> str | None:
    """The group of a C function (pstats names it ``<built-in method ...>``/``<method ...>``)."""
    lowered = name.lower()
    if "_hashlib" in lowered or "sha256" in lowered:
        return DIGESTS
    if "pyarrow" in lowered:
        return PARQUET
    if "bson" in lowered or "_cmessage" in lowered:
        return BSON
    if "_ssl" in lowered or "'connect' of '_socket" in lowered:
        return CONNECT
    if any(word in lowered for word in ("_socket", "select.", "poll", "sendall")):
        return SOCKET
    if "'acquire' of '_thread.lock'" in lowered:  # waiting on core.write_pipeline's writer
        return SOCKET
    if "fsync" in lowered or "posix.rename" in lowered or "io.open" in lowered:
        return FILES
    return None


@functools.cache
def _function_spans(filename: str) -> tuple[tuple[int, int, str], ...]:
    """(first line, last line, name) of every def in a source file, outermost first."""
    try:
        tree = ast.parse(Path(filename).read_text())
    except (OSError, SyntaxError, ValueError):
        return ()
    return tuple(
        (node.lineno, node.end_lineno or node.lineno, node.name)
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    )


def enclosing_name(filename: str, line: int, name: str) -> str:
    """A comprehension's or lambda's enclosing function (``<dictcomp>`` in ``_escape_keys``)."""
    if not name.startswith("<"):
        return name
    inside = [span for span in _function_spans(filename) if span[0] <= line <= span[1]]
    return min(inside, key=lambda span: span[1] - span[0])[2] if inside else name


def classify(func: Func) -> str | None:
    """The group whose work a function is, or None for a generic frame (charged to callers)."""
    filename, line, name = func
    path = filename.replace("\\", "/")
    if filename == "~":
        return _builtin_group(name)
    if "/pymysqlreplication/" in path:
        return LIBRARY
    if "/pymysql/" in path:
        return WIRE
    if "/pyarrow/" in path:
        return PARQUET
    if "/bson/json_util" in path or "/bson/decimal128" in path:
        return None  # charged to their callers: conversion, encode/decode, the sink's compat
    if "/bson/" in path:
        return BSON
    if "/pymongo/" in path:
        return PYMONGO
    if "/cdc_pipeline/" not in path:
        return None
    module = path.rsplit("/cdc_pipeline/", 1)[1]
    name = enclosing_name(filename, line, name)
    if (module, name) in _PYARROW_CALLERS:
        return PARQUET  # their own time is pyarrow's Cython from_pylist/to_pylist
    if module == "core/images.py":
        if name in _IMAGE_ENCODERS:
            return IMAGE_ENCODE
        return ENCODE if name in _ENCODERS else DECODE
    if module in {"core/mysql/row_decoder.py", "core/mysql/json_binary.py"}:
        return ROW_DECODER
    if module in {"core/values.py", "core/mysql/decoder_fixes.py"}:
        return VALUES
    if module in {"core/wal/segment.py", "core/wal/writer.py"}:
        return DIGESTS if name in _DIGEST_FUNCTIONS else PLUMBING
    if module in {"core/load/sink.py", "core/load/documents.py"}:
        if name == "_decimals_to_strings":
            return COMPAT
        return COALESCE if name in _COALESCING else SINK
    if module == "core/wal/validation.py":
        return VALIDATION
    if module in {
        "core/mysql/binlog.py",
        "core/schema.py",
        "core/capture/segment_builder.py",
        "core/capture/tick.py",
    }:
        return PLUMBING
    return OURS


def _charged(stats: dict[Func, Any]) -> Callable[[Func], dict[str, float]]:
    """For each function, how its own time splits over groups.

    A classified function is all its group's. A generic one (``classify`` is None) splits like
    its callers, each weighted by the own time it spent when called from there (cProfile's
    caller edges; call counts when those are all zero). Mutual recursion (``bson.json_util``)
    makes this a system of equations, solved by iterating until the splits settle; what never
    reaches a classified function is ``UNATTRIBUTED``.
    """
    fixed: dict[Func, dict[str, float]] = {}
    edges: dict[Func, list[tuple[Func, float]]] = {}
    for func, entry in stats.items():
        group = classify(func)
        if group is not None:
            fixed[func] = {group: 1.0}
            continue
        callers = [(c, e) for c, e in entry[4].items() if c != func and c in stats]
        weights = [(c, float(e[2])) for c, e in callers]
        if sum(w for _c, w in weights) <= 0:
            weights = [(c, float(e[0])) for c, e in callers]
        total = sum(w for _c, w in weights)
        edges[func] = [(c, w / total) for c, w in weights if w > 0] if total > 0 else []
    split: dict[Func, dict[str, float]] = {func: {} for func in edges}
    for _round in range(500):
        change = 0.0
        for func, callers in edges.items():
            result: dict[str, float] = defaultdict(float)
            for caller, weight in callers:
                for name, part in (fixed.get(caller) or split[caller]).items():
                    result[name] += weight * part
            before = split[func]
            for name in set(result) | set(before):
                change = max(change, abs(result.get(name, 0.0) - before.get(name, 0.0)))
            split[func] = dict(result)
        if change < 1e-9:
            break
    for result in split.values():
        missing = 1.0 - sum(result.values())
        if missing > 1e-6:
            result[UNATTRIBUTED] = missing
    return lambda func: fixed.get(func) or split[func]


def grouped_own_time(stats: dict[Func, Any]) -> dict[str, float]:
    """Own seconds per group, summed over every function of the profile."""
    charge = _charged(stats)
    groups: dict[str, float] = defaultdict(float)
    for func, (_cc, _nc, tottime, _ct, _callers) in stats.items():
        if tottime <= 0:
            continue
        for name, part in charge(func).items():
            groups[name] += tottime * part
    return dict(groups)


def _interesting(func: Func) -> bool:
    """Frames worth listing by cumulative time: ours, the decoder, Parquet, the Mongo API."""
    filename, _line, name = func
    path = filename.replace("\\", "/")
    if "/cdc_pipeline/" in path or "/pymysqlreplication/" in path or "/pyarrow/" in path:
        return True
    if "/bson/json_util" in path:
        return name in {"dumps", "loads", "object_pairs_hook"}
    if "/pymongo/" in path:
        return name in _PYMONGO_API
    return filename == "~" and _builtin_group(name) not in (None, SOCKET)


def describe(func: Func) -> str:
    """``package/module.py:line(name)``, or the C function's name."""
    filename, line, name = func
    if filename == "~":
        return name
    path = filename.replace("\\", "/")
    for marker in ("/site-packages/", "/cdc_pipeline/", "/lib/python3"):
        if marker in path:
            tail = path.rsplit(marker, 1)[1]
            if marker == "/cdc_pipeline/":
                tail = "cdc_pipeline/" + tail
            elif marker == "/lib/python3":
                tail = tail.split("/", 1)[-1]
            path = tail
            break
    return f"{path}:{line}({name})"


# -- measuring -----------------------------------------------------------------------------------
def process_cpu_seconds(pid: int | None) -> float | None:
    """user + system CPU seconds of a process (all its threads) from /proc, None if gone."""
    if pid is None:
        return None
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Phase:
    """One profiled path: wall seconds, rows, CPU used by each process, and the profile."""

    name: str
    rows: int
    seconds: float
    cpu: dict[str, float | None]
    stats: pstats.Stats | None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


@contextmanager
def cpu_meter(pids: dict[str, int | None]) -> Iterator[dict[str, float | None]]:
    """CPU seconds used by this process and each server while the block runs."""
    used: dict[str, float | None] = {}
    before_self = time.process_time()
    before = {name: process_cpu_seconds(pid) for name, pid in pids.items()}
    yield used
    used["this process"] = time.process_time() - before_self
    for name, pid in pids.items():
        after = process_cpu_seconds(pid)
        start = before[name]
        used[name] = None if after is None or start is None else after - start


def _server_pids(servers: BenchServers, source: str) -> dict[str, int | None]:
    pids = {source: servers.sources[source].pid}
    if servers.mongo_server is not None:
        pids["nx-27017"] = servers.mongo_server.pid
    return pids


def run_capture(
    servers: BenchServers, source: str, backlog: Backlog, staging: Path, profile: bool
) -> Phase:
    """capture_once until caught up, exactly as the bench's product task, in this process."""
    server = servers.sources[source]
    arguments = {
        "url": server.url,
        "staging": str(staging),
        "server_id": random.randint(10_000, 2**31),
        "include": backlog.include_pattern,
        "start_gtid": backlog.start.gtid,
    }
    profiler = cProfile.Profile() if profile else None
    with cpu_meter(_server_pids(servers, source)) as cpu:
        if profiler is None:
            figures = measure_product_capture(arguments)
        else:
            figures = profiler.runcall(measure_product_capture, arguments)
    checked(figures, backlog, "profiled capture")
    stats = pstats.Stats(profiler) if profiler is not None else None
    extra = {"segments": figures["segments"], "ticks": figures["ticks"]}
    return Phase("capture", figures["rows"], figures["seconds"], cpu, stats, extra)


def run_load(
    servers: BenchServers,
    source: str,
    backlog: Backlog,
    staging: Path,
    database: str,
    profile: bool,
) -> Phase:
    """run_load of the captured segments into a fresh database, in this process."""
    from cdc_pipeline.core.load.loader import run_load as product_load
    from cdc_pipeline.core.settings import MongoSettings
    from cdc_pipeline.core.wal.staging import WalPaths

    settings = MongoSettings(uri=servers.mongo_uri, database=database, compat=servers.mongo_compat)
    paths = WalPaths(staging, SOURCE_NAME)
    (paths.root / "applied.json").unlink(missing_ok=True)
    profiler = cProfile.Profile() if profile else None
    with cpu_meter(_server_pids(servers, source)) as cpu:
        started = time.perf_counter()
        if profiler is None:
            result = product_load(paths, settings)
        else:
            result = profiler.runcall(product_load, paths, settings)
        seconds = time.perf_counter() - started
    rows = sum(item.rows for item in result.loaded)
    checked({"rows": rows, "seconds": seconds}, backlog, "profiled load")
    stats = pstats.Stats(profiler) if profiler is not None else None
    return Phase("load", rows, seconds, cpu, stats, {"segments": len(result.loaded)})


# -- reporting -----------------------------------------------------------------------------------
class Report:
    """Prints lines and keeps them for the text file beside the .pstats files."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, text: str = "") -> None:
        print(text, flush=True)
        self.lines.append(text)


def _share(part: float, whole: float) -> str:
    return f"{100 * part / whole:5.1f}%" if whole > 0 else "   - "


def _cpu_text(phase: Phase) -> str:
    return "; ".join(
        f"{name} {value:.2f} s" if value is not None else f"{name} n/a"
        for name, value in phase.cpu.items()
    )


def report_phase(say: Report, phase: Phase, top: int) -> None:
    assert phase.stats is not None
    raw: dict[Func, Any] = phase.stats.stats  # type: ignore[attr-defined]
    total = float(phase.stats.total_tt)  # type: ignore[attr-defined]
    extras = ", ".join(f"{key} {value}" for key, value in phase.extra.items())
    say(f"== {phase.name}: {phase.rows:,} rows in {phase.seconds:.2f} s under cProfile")
    say(f"   = {phase.rows_per_second:,.0f} rows/s; {extras}; profiled time {total:.2f} s")
    say(f"   CPU used meanwhile: {_cpu_text(phase)}")
    say()
    say(f"-- {phase.name}: own time by group (generic frames charged to their callers)")
    groups = sorted(grouped_own_time(raw).items(), key=lambda item: -item[1])
    say(f"{'own s':>8} {'share':>6}  group")
    for name, seconds in groups:
        say(f"{seconds:8.2f} {_share(seconds, total)}  {name}")
    say()
    say(f"-- {phase.name}: top {top} by own time (tottime)")
    by_own = sorted(raw.items(), key=lambda item: -item[1][2])[:top]
    _table(say, by_own, total, show_group=True)
    say()
    say(f"-- {phase.name}: top {top} by cumulative time (ours, decoder, pyarrow, Mongo API)")
    by_cumulative = sorted(
        (item for item in raw.items() if _interesting(item[0])), key=lambda item: -item[1][3]
    )[:top]
    _table(say, by_cumulative, total, show_group=True)
    say()
    say(f"-- {phase.name}: shared helpers, cumulative time by caller")
    _helpers_by_caller(say, raw, total)
    say()


def _helpers_by_caller(say: Report, raw: dict[Func, Any], total: float) -> None:
    """Cumulative time of the helpers several paths share, split by who called them."""
    for func, (_cc, calls, _tt, cumulative, callers) in raw.items():
        path = func[0].replace("\\", "/")
        if not any(path.endswith(module) and func[2] == name for module, name in SHARED_HELPERS):
            continue
        say(f"{describe(func)}: {calls:,} calls, {cumulative:.2f} s = {_share(cumulative, total)}")
        edges = sorted(
            (
                (caller, edge)
                for caller, edge in callers.items()
                if caller != func  # recursion, also through its own comprehensions:
                and not (caller[0] == func[0] and enclosing_name(*caller) == func[2])
            ),
            key=lambda item: -item[1][3],
        )
        for caller, edge in edges:
            say(f"    {edge[3]:8.2f} s {_share(edge[3], total)} from {describe(caller)}")


def _table(
    say: Report, rows: list[tuple[Func, Any]], total: float, show_group: bool = False
) -> None:
    say(f"{'calls':>10} {'own s':>8} {'own%':>6} {'cum s':>8} {'cum%':>6}  function")
    for func, (_cc, calls, tottime, cumulative, _callers) in rows:
        group = classify(func) if show_group else None
        where = describe(func) + (f"  [{group}]" if group else "")
        say(
            f"{calls:10,d} {tottime:8.2f} {_share(tottime, total)} {cumulative:8.2f}"
            f" {_share(cumulative, total)}  {where}"
        )


def _say(text: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {text}", flush=True)


# -- entry point ---------------------------------------------------------------------------------
def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.profile", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--rows", type=int, default=50_000, help="backlog size in rows (default 50000)"
    )
    parser.add_argument(
        "--source",
        choices=("mariadb", "mysql"),
        default="mariadb",
        help="source server (default mariadb; mysql needs 'make mysql-chroot')",
    )
    parser.add_argument(
        "--variant", choices=tuple(VARIANTS), default="mixed", help="table shape (default mixed)"
    )
    parser.add_argument(
        "--mongo-uri",
        default=os.environ.get("BENCH_MONGO_URI"),
        help="a real MongoDB instead of starting nx-27017 (or BENCH_MONGO_URI)",
    )
    parser.add_argument("--top", type=int, default=TOP, help=f"entries per table (default {TOP})")
    parser.add_argument(
        "--unprofiled",
        action="store_true",
        help="also time one capture and one load without the profiler (its slowdown factor)",
    )
    parser.add_argument("--seed", type=int, default=2026, help="workload seed (default 2026)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    arguments = parser.parse_args(argv)
    if arguments.rows < 1:
        parser.error("--rows must be at least 1")
    return arguments


def _warm_imports() -> None:
    """Import what the measured paths import lazily, so imports stay out of the profiles."""
    import pandas  # noqa: F401  (pyarrow imports it on the first write/read)
    import pyarrow.parquet  # noqa: F401

    import cdc_pipeline.core.capture.tick
    import cdc_pipeline.core.load.loader  # noqa: F401


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(sys.argv[1:] if argv is None else argv)
    arguments.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    say = Report()
    _warm_imports()
    workdir = Path(tempfile.mkdtemp(prefix="cdc_pipeline_profile-"))
    phases: list[Phase] = []
    unprofiled: list[Phase] = []
    try:
        with started_servers([arguments.source], arguments.mongo_uri) as servers:
            server = servers.sources[arguments.source]
            _say(f"{arguments.source} {arguments.variant}: writing {arguments.rows:,} rows")
            backlog = write_backlog(server, arguments.variant, arguments.rows, arguments.seed)
            database = f"bench_profile_{arguments.variant}_{arguments.rows}"
            client: pymongo.MongoClient[Any] = pymongo.MongoClient(
                servers.mongo_uri, serverSelectionTimeoutMS=5_000
            )
            databases = [database, database + "_unprofiled"]
            try:
                for name in databases:
                    client.drop_database(name)
                staging = workdir / "profiled"
                _say("capture under cProfile")
                phases.append(run_capture(servers, arguments.source, backlog, staging, True))
                _say("load under cProfile")
                phases.append(run_load(servers, arguments.source, backlog, staging, database, True))
                if arguments.unprofiled:
                    staging = workdir / "unprofiled"
                    _say("capture and load without the profiler")
                    unprofiled.append(
                        run_capture(servers, arguments.source, backlog, staging, False)
                    )
                    unprofiled.append(
                        run_load(servers, arguments.source, backlog, staging, databases[1], False)
                    )
            finally:
                for name in databases:
                    client.drop_database(name)
                client.close()
                drop_backlog(server, backlog)
            version = str(server.execute("SELECT VERSION()")[0][0])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    say()
    say(
        f"bench.profile {stamp}: {arguments.rows:,} {arguments.variant} rows on {arguments.source}"
        f" {version} in {TRANSACTION_ROWS:,}-row transactions; MongoDB:"
        f" {'--mongo-uri' if arguments.mongo_uri else 'nx-27017'}"
    )
    load_average = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    say(
        f"machine: {os.cpu_count()} CPUs, {_cpu_model()}, load average now {load_average}"
        " (shared machine: absolute rates vary, shares are what matter)"
    )
    say()
    for phase in phases:
        report_phase(say, phase, arguments.top)
    for plain, profiled in zip(unprofiled, phases, strict=False):
        say(
            f"-- {plain.name} without the profiler: {plain.seconds:.2f} s ="
            f" {plain.rows_per_second:,.0f} rows/s (cProfile slowdown"
            f" x{profiled.seconds / plain.seconds:.2f}); CPU used meanwhile: {_cpu_text(plain)}"
        )
    written = []
    for phase in phases:
        assert phase.stats is not None
        path = arguments.out / f"profile-{stamp}-{phase.name}.pstats"
        phase.stats.dump_stats(path)
        written.append(path)
    text_path = arguments.out / f"profile-{stamp}.txt"
    text_path.write_text("\n".join(say.lines) + "\n")
    say()
    for path in [*written, text_path]:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
