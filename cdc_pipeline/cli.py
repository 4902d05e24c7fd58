"""``cdc-pipeline``: the operator's command line (commands listed in ../shared/CONTRACT.md).

Invariants: exit 0 on success; otherwise a non-zero exit with exactly one line on stderr
(``cdc-pipeline: <reason>``): 2 for an operator mistake (``CdcError``, bad arguments), 1 for a
failed check or an unexpected error (``verify``: 1 when a table differs, is stale or could not be
compared, or a stray mirror exists). No traceback unless ``--debug``; settings are shown only
in their redacted forms, so no secret reaches stdout or stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn
from urllib.parse import unquote, urlsplit

from cdc_pipeline.core.errors import CdcError, ConfigError
from cdc_pipeline.core.wal import WalPaths

PROG = "cdc-pipeline"
EXIT_FAILED = 1
EXIT_OPERATOR = 2


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_OPERATOR, f"{PROG}: {message}; see '{self.prog} --help'\n")


def _fail(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr)


def _scrub(text: str) -> str:
    """``text`` on one line, without the secrets of the CDC_* variables, at most 300 chars."""
    secrets: list[str] = []
    for name in ("CDC_MYSQL_URL", "CDC_MONGO_URI"):
        value = os.environ.get(name, "").strip()
        if value:
            secrets.append(value)
            with contextlib.suppress(ValueError):
                password = urlsplit(value).password
                if password:
                    secrets += [password, unquote(password)]
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    text = " ".join(text.split())
    return text if len(text) <= 300 else text[:297] + "..."


def _doctor(args: argparse.Namespace) -> int:
    from cdc_pipeline.core.doctor import run_doctor
    from cdc_pipeline.core.settings import CaptureSettings, MongoSettings

    capture = CaptureSettings.from_env()
    mongo: MongoSettings | None = None
    mongo_problem: str | None = None
    try:
        mongo = MongoSettings.from_env()
    except ConfigError as error:
        mongo_problem = str(error)
    findings = run_doctor(capture, mongo, mongo_problem)
    if args.json:
        print(json.dumps([finding.to_dict() for finding in findings], indent=2))
    else:
        for finding in findings:
            print(f"{'ok  ' if finding.ok else 'FAIL'} {finding.check}: {finding.detail}")
            if finding.fix:
                print(f"     fix: {finding.fix}")
    failed = sum(not finding.ok for finding in findings)
    if failed:
        _fail(f"{failed} of {len(findings)} checks failed")
        return EXIT_FAILED
    return 0


def _capture(args: argparse.Namespace) -> int:
    from cdc_pipeline.core.settings import CaptureSettings

    if not args.once:
        raise ConfigError(
            "capture needs --once here; continuous capture runs as the Dagster sensor"
            " binlog_capture_sensor."
        )
    settings = CaptureSettings.from_env()
    from cdc_pipeline.core.capture import capture_once

    result = capture_once(settings)
    print(json.dumps(result.to_dict(), indent=2, default=str) if args.json else result.summary())
    return 0


def _wal_paths() -> WalPaths:
    from cdc_pipeline.core.settings import source_name_from_env, staging_dir_from_env

    return WalPaths(staging_dir_from_env(), source_name_from_env())


def _load(args: argparse.Namespace) -> int:
    from cdc_pipeline.core.loader import run_load
    from cdc_pipeline.core.settings import MongoSettings

    if not args.pending:
        raise ConfigError(
            "load needs --pending (load every captured segment after the checkpoint, in order);"
            " single partitions load through the Dagster job load_batch_job."
        )
    from cdc_pipeline.core.settings import SourceUrl

    url = os.environ.get("CDC_MYSQL_URL", "").strip()
    # With the source URL, mirrors are rebuilt after column changes; without, marked stale.
    result = run_load(
        _wal_paths(), MongoSettings.from_env(), source_url=SourceUrl.parse(url) if url else None
    )
    print(json.dumps(result.to_dict(), indent=2, default=str) if args.json else result.summary())
    return 0


def _status(args: argparse.Namespace) -> int:
    from cdc_pipeline.core.settings import MongoSettings, SourceUrl
    from cdc_pipeline.core.status import read_status

    url = os.environ.get("CDC_MYSQL_URL", "").strip()
    mongo = MongoSettings.from_env() if os.environ.get("CDC_MONGO_URI", "").strip() else None
    status = read_status(_wal_paths(), SourceUrl.parse(url) if url else None, mongo)
    if args.json:
        print(json.dumps(status.to_dict(), indent=2, default=str))
    else:
        print("\n".join(status.lines()))
    return 0


def _recapture(args: argparse.Namespace) -> int:
    from cdc_pipeline.core.mongo_sink import open_sink
    from cdc_pipeline.core.recapture import recapture_from
    from cdc_pipeline.core.retry import RetryPolicy
    from cdc_pipeline.core.settings import MongoSettings
    from cdc_pipeline.core.wal import sequence_of_partition

    paths = _wal_paths()
    text = args.from_partition.strip()
    try:
        sequence = int(text) if text.isdigit() else sequence_of_partition(text)
    except (ValueError, IndexError):
        raise ConfigError(
            f"--from takes a partition key like {paths.root.name}-000000000042 or a segment"
            f" number, not {text!r}."
        ) from None
    with open_sink(MongoSettings.from_env(), RetryPolicy(deadline=10.0)) as sink:
        checkpoint = sink.read_checkpoint(paths.root.name)
    result = recapture_from(paths, sequence, checkpoint.last_sequence if checkpoint else 0)
    if args.json:
        print(json.dumps({"moved": result.moved, "folder": str(result.folder or "")}, indent=2))
    else:
        print(result.summary())
    return 0


def _verify(args: argparse.Namespace) -> int:
    from cdc_pipeline.core.reconcile import reconcile
    from cdc_pipeline.core.settings import CaptureSettings, MongoSettings

    capture = CaptureSettings.from_env()
    report = reconcile(
        WalPaths(capture.staging_dir, capture.source_name),
        capture.source_url,
        MongoSettings.from_env(),
        capture.include_tables,
        wait_seconds=args.wait,
    )
    print(json.dumps(report.to_dict(), indent=2) if args.json else "\n".join(report.lines()))
    if report.passed and report.complete:
        return 0
    findings = []
    for state, verb in (("different", "differ"), ("stale", "are stale")):
        names = [result.name for result in report.tables if result.state == state]
        if names:
            findings.append(f"{len(names)} {verb} ({', '.join(names)})")
    if report.strays:
        strays = [stray.collection for stray in report.strays]
        findings.append(f"{len(strays)} stray mirror collections ({', '.join(strays)})")
    skipped = [result for result in report.tables if result.state == "skipped"]
    if skipped:
        findings.append(f"{len(skipped)} skipped ({skipped[0].name}: {skipped[0].reason})")
    if not findings:
        findings = report.problems[:1]
    _fail(_scrub("verify: " + "; ".join(findings)))
    return EXIT_FAILED


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of seconds") from None
    if not 0 <= value <= 86_400:
        raise argparse.ArgumentTypeError("must be between 0 and 86400 seconds")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; each subcommand stores its handler as ``args.handler``."""
    parser = _Parser(
        prog=PROG,
        description="Change-data capture: MySQL/MariaDB binlog -> Parquet WAL -> MongoDB."
        " Configured by the CDC_* environment variables.",
    )
    parser.add_argument(
        "--debug", action="store_true", help="show the full traceback of an unexpected error"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, handler: Callable[[argparse.Namespace], int], text: str) -> _Parser:
        sub: _Parser = commands.add_parser(name, help=text, description=text)
        sub.add_argument(
            "--debug",
            action="store_true",
            default=argparse.SUPPRESS,
            help="show the full traceback of an unexpected error",
        )
        sub.set_defaults(handler=handler)
        return sub

    doctor = command(
        "doctor",
        _doctor,
        "check the source's binlog settings and grants, MongoDB and the staging folder;"
        " print the exact fix for each failure (exit 1 if any check fails)",
    )
    doctor.add_argument("--json", action="store_true", help="print the findings as JSON")

    capture = command(
        "capture",
        _capture,
        "capture one bounded slice of the binlog into one WAL segment (what the sensor runs)",
    )
    capture.add_argument("--once", action="store_true", help="run one capture tick and exit")
    capture.add_argument("--json", action="store_true", help="print the result as JSON")

    load = command(
        "load",
        _load,
        "load every pending WAL segment into MongoDB in order (what load_batch_job runs)",
    )
    load.add_argument("--pending", action="store_true", help="load all pending segments")
    load.add_argument("--json", action="store_true", help="print the result as JSON")

    status = command(
        "status",
        _status,
        "show the source position, the captured end, the applied checkpoint, pending segments,"
        " lag and the MongoDB breaker",
    )
    status.add_argument("--json", action="store_true", help="print the status as JSON")

    recapture = command(
        "recapture",
        _recapture,
        "set a damaged segment and every later one aside (into quarantine/), so the next"
        " capture tick writes them again from the binlog; stop the sensor first",
    )
    recapture.add_argument(
        "--from",
        dest="from_partition",
        required=True,
        metavar="PARTITION",
        help="the first segment to re-capture: its partition key or its number",
    )
    recapture.add_argument("--json", action="store_true", help="print the result as JSON")

    verify = command(
        "verify",
        _verify,
        "compare every mirrored table with its source table (row count and a hash per row) at"
        " a moment the checkpoint covers; exit 1 on any difference, stale or stray mirror, or a"
        " table that could not be compared",
    )
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.add_argument(
        "--wait",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="how long in all to wait for capture and the loader to cover busy tables (default 30)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the process exit status (see the module invariants)."""
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except CdcError as error:
        if args.debug:
            raise
        _fail(str(error))
        return EXIT_OPERATOR
    except KeyboardInterrupt:
        _fail("interrupted")
        return 130
    except Exception as error:
        if args.debug:
            raise
        reason = f"{type(error).__name__}: {_scrub(str(error))}"
        _fail(f"unexpected error {reason}; rerun with --debug for the traceback")
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
