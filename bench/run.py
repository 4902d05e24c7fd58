"""``make bench``: every benchmark on local servers, a JSON report and a PNG chart.

For each source, table shape and backlog size it writes the backlog, then measures capture
(product vs a bare mysql-replication loop, and the C tool as reference) and load (product vs a
bare pymongo ``insert_many``), each ``--runs`` times in fresh processes (which also gives the
peak RSS of each), and fits time against backlog size; then end-to-end latency under a steady
workload. Every figure is a ratio against a baseline measured in the same run on the same data.
Results go to ``bench/results/``.

    python -m bench.run --sizes 10000,100000 --runs 3
    BENCH_SIZES=10000,100000,1000000 make bench
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.capture_bench import bench_capture
from bench.chart import draw_chart, matplotlib_missing
from bench.latency_bench import bench_latency, latency_figures
from bench.load_bench import bench_load
from bench.machine import describe_machine
from bench.report import (
    LATENCY_NOT_MEASURED,
    memory_figures,
    scaling_figures,
    stage_figures,
    summary_table,
)
from bench.servers import BenchServers, started_servers
from bench.workload import (
    ONE_TRANSACTION,
    TRANSACTION_ROWS,
    VARIANTS,
    drop_backlog,
    write_backlog,
)

RESULTS = Path(__file__).resolve().parent / "results"
FORMAT = "cdc_pipeline-bench/1"


def _csv(kind: type, choices: tuple[str, ...] | None = None):  # type: ignore[no-untyped-def]
    def parse(text: str) -> list[Any]:
        parts = [part.strip() for part in text.split(",") if part.strip()]
        items = [kind(part.replace("_", "") if kind is int else part) for part in parts]
        if not items:
            raise argparse.ArgumentTypeError("give at least one value")
        for item in items:
            if choices is not None and item not in choices:
                raise argparse.ArgumentTypeError(f"'{item}' is not one of {', '.join(choices)}")
            if kind is int and item < 1:
                raise argparse.ArgumentTypeError("sizes are row counts of at least 1")
        return items

    return parse


def _row_count(text: str) -> int:
    """A row count of 0 or more (underscores allowed: 200_000)."""
    try:
        count = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a row count") from None
    if count < 0:
        raise argparse.ArgumentTypeError("give 0 (skip) or a row count")
    return count


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--sizes",
        type=_csv(int),
        default=[10_000, 100_000],
        help="backlog sizes in rows, comma-separated (default 10000,100000; the issue's full"
        " run is 10000,100000,1000000)",
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (default 3)")
    parser.add_argument(
        "--one-transaction-rows",
        type=_row_count,
        default=200_000,
        help="also measure one backlog of mixed rows written as a single transaction of this"
        f" many rows, reported as table '{ONE_TRANSACTION}' (default 200000; 0 skips it)",
    )
    parser.add_argument(
        "--variants",
        type=_csv(str, tuple(VARIANTS)),
        default=list(VARIANTS),
        help="table shapes: mixed, narrow (default both)",
    )
    parser.add_argument(
        "--sources",
        type=_csv(str, ("mariadb", "mysql")),
        default=["mariadb"],
        help="source servers: mariadb, mysql (MySQL 9.7 needs 'make mysql-chroot'; default"
        " mariadb)",
    )
    parser.add_argument(
        "--stages",
        type=_csv(str, ("capture", "load", "latency")),
        default=["capture", "load", "latency"],
        help="what to measure: capture, load, latency (default all; load needs capture's WAL,"
        " so it runs capture too)",
    )
    parser.add_argument(
        "--mongo-uri",
        default=os.environ.get("BENCH_MONGO_URI"),
        help="a real MongoDB to load into instead of starting nx-27017 (or BENCH_MONGO_URI)",
    )
    parser.add_argument(
        "--latency-seconds",
        type=float,
        default=20.0,
        help="length of each latency phase under a steady workload (default 20; 0 skips it)",
    )
    parser.add_argument(
        "--latency-rate", type=float, default=20.0, help="transactions per second (default 20)"
    )
    parser.add_argument(
        "--latency-rows", type=int, default=10, help="rows per latency transaction (default 10)"
    )
    parser.add_argument(
        "--latency-interval",
        type=float,
        default=0.0,
        help="pause between the product's capture+load rounds (default 0: back to back)",
    )
    parser.add_argument("--seed", type=int, default=2026, help="workload seed (default 2026)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    arguments = parser.parse_args(argv)
    if arguments.runs < 1:
        parser.error("--runs must be at least 1")
    return arguments


def _say(text: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {text}", flush=True)


def _write_atomically(path: Path, write: Any) -> None:
    temporary = path.with_name(path.name + ".tmp")
    write(temporary)
    temporary.replace(path)


def _bench_backlog(
    arguments: argparse.Namespace, servers: BenchServers, source: str, variant: str, size: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Write one backlog, measure capture and load on it, drop it; return its figures."""
    server = servers.sources[source]
    workdir = arguments.workdir
    _say(f"{source} {variant} {size:,} rows: writing the backlog")
    backlog = write_backlog(server, variant, size, arguments.seed)
    backlog_dict = backlog.to_dict()
    figures: list[dict[str, Any]] = []
    _say(f"  capture: {arguments.runs} runs of product, library, reference")
    capture = bench_capture(server, backlog, arguments.runs, workdir)
    if "capture" in arguments.stages:
        series = {
            "product": capture.product,
            "library": capture.library,
            "reference": capture.reference,
        }
        figures.append(stage_figures("capture", backlog_dict, series))
        figures[-1]["reference_command"] = capture.reference_command
        _say(f"  capture ratio vs library: {figures[-1]['ratio_vs_baseline']}")
    if "load" in arguments.stages:
        _say(f"  load: {arguments.runs} runs of product, insert_many, insert_many_all")
        load = bench_load(
            servers.mongo_uri,
            servers.mongo_compat,
            backlog,
            capture.wal_staging,
            arguments.runs,
            workdir,
        )
        series = {
            "product": load.product,
            "insert_many": load.insert_many,
            "insert_many_all": load.insert_many_all,
        }
        figures.append(stage_figures("load", backlog_dict, series))
        _say(f"  load ratio vs insert_many: {figures[-1]['ratio_vs_baseline']}")
    shutil.rmtree(capture.wal_staging, ignore_errors=True)
    drop_backlog(server, backlog)
    return backlog_dict, figures


def measure(arguments: argparse.Namespace) -> dict[str, Any]:
    """Start the servers, run every benchmark, return the report (without the chart)."""
    started_at = datetime.now(UTC)
    clock = time.monotonic()
    stages: list[dict[str, Any]] = []
    backlogs: list[dict[str, Any]] = []
    latency: dict[str, Any] = {}
    latency_options = {
        "seconds": arguments.latency_seconds,
        "rate": arguments.latency_rate,
        "rows_per_transaction": arguments.latency_rows,
        "interval": arguments.latency_interval,
    }
    with started_servers(arguments.sources, arguments.mongo_uri) as servers:
        machine = describe_machine(servers)
        stages_wanted = set(arguments.stages)
        for source in arguments.sources:
            server = servers.sources[source]
            for variant in arguments.variants:
                for size in sorted(arguments.sizes) if {"capture", "load"} & stages_wanted else []:
                    backlog, figures = _bench_backlog(arguments, servers, source, variant, size)
                    backlogs.append(backlog)
                    stages.extend(figures)
            if {"capture", "load"} & stages_wanted and arguments.one_transaction_rows:
                backlog, figures = _bench_backlog(
                    arguments, servers, source, ONE_TRANSACTION, arguments.one_transaction_rows
                )
                backlogs.append(backlog)
                stages.extend(figures)
            if "latency" in arguments.stages and arguments.latency_seconds > 0:
                _say(f"{source} latency: {arguments.runs} runs of product and stream phases")
                runs = bench_latency(
                    server,
                    servers.mongo_uri,
                    servers.mongo_compat,
                    latency_options,
                    arguments.runs,
                    arguments.workdir,
                    arguments.seed,
                )
                latency[source] = latency_figures(runs, latency_options)
                _say(f"  latency p50 ratio vs stream: {latency[source]['ratio_vs_baseline']}")
    return {
        "format": FORMAT,
        "started_at": started_at.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "seconds": round(time.monotonic() - clock, 1),
        "command": " ".join(["python -m bench.run", *sys.argv[1:]]),
        "options": {
            "sizes": sorted(arguments.sizes),
            "runs": arguments.runs,
            "variants": arguments.variants,
            "sources": arguments.sources,
            "stages": arguments.stages,
            "seed": arguments.seed,
            "transaction_rows": TRANSACTION_ROWS,
            "one_transaction_rows": arguments.one_transaction_rows,
            "mongo": "external (--mongo-uri)" if arguments.mongo_uri else "nx-27017",
        },
        "notes": [
            "ratio_vs_baseline = product median rows/s / baseline median rows/s, same run and"
            " data; capture baseline: bare mysql-replication loop decoding every row; load"
            " baseline: bare pymongo insert_many of the same change-log documents",
            "peak RSS: VmHWM of the fresh process that ran the measured task",
            f"table '{ONE_TRANSACTION}': the mixed table with all its rows in one transaction",
        ]
        + (["fewer than 3 runs: medians are not robust"] if arguments.runs < 3 else []),
        "machine": machine,
        "backlogs": backlogs,
        "stages": stages,
        "memory": memory_figures(stages),
        "scaling": scaling_figures(stages),
        "latency": {"status": "measured", "by_source": latency}
        if latency
        else LATENCY_NOT_MEASURED,
    }


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(sys.argv[1:] if argv is None else argv)
    arguments.out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="cdc_pipeline_bench-"))
    try:
        arguments.workdir = workdir
        report = measure(arguments)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    stamp = report["started_at"][:19].replace(":", "").replace("-", "")
    json_path = arguments.out / f"bench-{stamp}.json"
    png_path = arguments.out / f"bench-{stamp}.png"
    missing = matplotlib_missing() or (None if report["stages"] else "no throughput to draw")
    report["chart"] = None if missing else png_path.name
    if missing:
        report["chart_skipped"] = missing
    else:
        _write_atomically(png_path, lambda path: draw_chart(report, path))
    _write_atomically(json_path, lambda path: path.write_text(json.dumps(report, indent=2) + "\n"))
    print()
    print(summary_table(report))
    print()
    print(f"report: {json_path}")
    print(f"chart:  {png_path if not missing else 'skipped: ' + missing}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
