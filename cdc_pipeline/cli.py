"""``cdc-pipeline``: the operator's command line (commands listed in ../shared/CONTRACT.md).

Invariants: exit 0 on success; otherwise a non-zero exit with exactly one line on stderr
(``cdc-pipeline: <reason>``, one sentence: what is wrong and what to do): 2 for an operator
mistake or a refusal that needs the operator (``CdcError``, bad arguments, a missing privilege,
a server that cannot be reached), 1 for a failed check or an unexpected error (``doctor``: a
check failed; ``status``: printed, but a part could not be read or a segment is quarantined;
``verify``: a table differs, is stale or could not be compared, or a stray mirror exists). No
traceback unless ``--debug``; settings are shown only in their redacted forms, so no secret
reaches stdout or stderr. Every command takes ``--help``, and ``--json`` for what it reports.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from cdc_pipeline.core.errors import CdcError, ConfigError, CorruptSegmentError
from cdc_pipeline.core.settings import (
    CaptureSettings,
    GovernanceSettings,
    MongoSettings,
    mongo_settings_if_set,
    mongo_where,
    scrub_secrets,
    source_name_from_env,
    source_url_if_set,
    staging_dir_from_env,
    table_label,
    table_scope_from_env,
)
from cdc_pipeline.core.sources_file import find_source, read_sources
from cdc_pipeline.core.wal.staging import WalPaths, check_staging_folder

PROG = "cdc-pipeline"
EXIT_FAILED = 1
EXIT_OPERATOR = 2


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr, exit 2."""

    commands: dict[str, argparse.ArgumentParser]

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_OPERATOR, f"{PROG}: {message}; see '{self.prog} --help'\n")


def _fail(message: str) -> None:
    print(f"{PROG}: {' '.join(message.split())}", file=sys.stderr)


def _print(args: argparse.Namespace, data: object, text: str) -> None:
    print(json.dumps(data, indent=2, default=str) if args.json else text)


def _wal_paths() -> WalPaths:
    return WalPaths(staging_dir_from_env(), source_name_from_env())


# -- the commands ----------------------------------------------------------------------------


def _doctor(args: argparse.Namespace) -> int:
    from cdc_pipeline.core.audit.doctor import run_doctor

    capture: CaptureSettings | None = None
    capture_problem: str | None = None
    try:
        capture = CaptureSettings.from_env()
    except ConfigError as error:  # a finding like any other, so --json stays JSON
        capture_problem = str(error)
    mongo: MongoSettings | None = None
    mongo_problem: str | None = None
    try:
        mongo = MongoSettings.from_env()
    except ConfigError as error:
        mongo_problem = str(error)
    findings = run_doctor(capture, mongo, mongo_problem, capture_problem)
    if args.json:
        print(json.dumps([finding.to_dict() for finding in findings], indent=2))
    else:
        for finding in findings:
            mark = "FAIL" if not finding.ok else "warn" if finding.advice else "ok  "
            print(f"{mark} {finding.check}: {finding.detail}")
            if finding.fix or finding.advice:
                print(f"     {'fix' if finding.fix else 'advice'}: {finding.fix or finding.advice}")
    if capture_problem is not None:  # a setting, not a check, is wrong: the usage exit code
        _fail(capture_problem)
        return EXIT_OPERATOR
    failed = sum(not finding.ok for finding in findings)
    if failed:
        _fail(f"{failed} of {len(findings)} checks failed; apply the fixes printed above.")
        return EXIT_FAILED
    return 0


def _capture(args: argparse.Namespace) -> int:
    if not args.once:
        raise ConfigError(
            "capture needs --once here; continuous capture runs as the Dagster sensor"
            " binlog_capture_sensor."
        )
    settings = CaptureSettings.from_env()
    check_staging_folder(
        WalPaths(settings.staging_dir, settings.source_name), create=True, write=True
    )
    from cdc_pipeline.core.capture.tick import capture_once

    result = capture_once(settings)
    _print(args, result.to_dict(), result.summary())
    return 0


def _snapshot(args: argparse.Namespace) -> int:
    from cdc_pipeline.core.capture.snapshot import run_snapshot
    from cdc_pipeline.core.capture.snapshot_plan import SnapshotProgress

    settings = CaptureSettings.from_env()
    check_staging_folder(
        WalPaths(settings.staging_dir, settings.source_name), create=True, write=True
    )
    patterns = tuple(part.strip() for part in (args.tables or "").split(",") if part.strip())

    def show(progress: SnapshotProgress) -> None:
        if not args.json:
            print(progress.line(), flush=True)

    result = run_snapshot(settings, patterns, on_progress=show)
    _print(
        args,
        result.to_dict(),
        result.summary() + "\nthe sensor loads the new segments (or run 'cdc-pipeline load"
        " --pending'); capture goes on from the snapshot's position.",
    )
    return 0


def _load(args: argparse.Namespace) -> int:
    from cdc_pipeline.core.load.loader import run_load

    if not args.pending:
        raise ConfigError(
            "load needs --pending (load every captured segment after the checkpoint, in order);"
            " single partitions load through the Dagster job load_batch_job."
        )
    source_url = source_url_if_set()
    mongo = MongoSettings.from_env()
    paths = _wal_paths()
    check_staging_folder(paths, create=False, write=True)
    result = run_load(
        paths,
        mongo,
        source_url=source_url,
        table_scope=table_scope_from_env(),
        progress=lambda line: print(line, file=sys.stderr, flush=True),
        mask_key=GovernanceSettings.from_env().mask_key,
    )
    _print(args, result.to_dict(), result.summary())
    return 0


def _catch_up(args: argparse.Namespace) -> int:
    from cdc_pipeline.core.audit.catch_up import catch_up
    from cdc_pipeline.core.settings import AuditSettings

    capture = CaptureSettings.from_env()
    mongo = MongoSettings.from_env()
    check_staging_folder(
        WalPaths(capture.staging_dir, capture.source_name), create=True, write=True
    )
    report = catch_up(
        capture,
        mongo,
        reconcile_wait=AuditSettings.from_env().reconcile_wait_seconds,
        # Progress goes to stdout (stderr keeps the one failure line); none with --json.
        progress=lambda line: None if args.json else print(line, flush=True),
    )
    _print(args, report.to_dict(), "\n".join(report.lines()))
    finding = report.finding()
    if not finding:
        return 0
    _fail(scrub_secrets(f"catch-up: {finding}"))
    return EXIT_FAILED


def _status(args: argparse.Namespace) -> int:
    from cdc_pipeline.core.audit.status import read_status

    source_url = source_url_if_set()
    mongo = mongo_settings_if_set()
    paths = _wal_paths()
    check_staging_folder(paths, create=False, write=False)
    status = read_status(paths, source_url, mongo, table_scope_from_env())
    if source_url is not None and status.source_error is None:
        # Capture cannot go on past transactions the source purged: a stop, named here too.
        from cdc_pipeline.core.audit.headroom import headroom_for

        try:
            headroom = headroom_for(paths, source_url, 0.0)
        except CdcError:
            headroom = None  # the source went away between the two reads
        if headroom is not None and headroom.state == "lost":
            status.problems[:0] = headroom.problems
    _print(args, status.to_dict(), "\n".join(status.lines()))
    unset = [
        name
        for name, value in (("CDC_MYSQL_URL", source_url), ("CDC_MONGO_URI", mongo))
        if value is None
    ]
    if unset and not status.problems:
        _fail(
            f"status is partial: {' and '.join(unset)} {'is' if len(unset) == 1 else 'are'} not"
            " set, so the WAL is compared with nothing there; export them (see the README)."
        )
        return EXIT_OPERATOR
    if not status.problems:
        return 0
    more = len(status.problems) - 1
    _fail(status.problems[0] + (f" ({more} more problem{'s' * (more > 1)} above)" if more else ""))
    return EXIT_FAILED


def _metrics(args: argparse.Namespace) -> int:
    from cdc_pipeline.core.audit.headroom import headroom_for
    from cdc_pipeline.core.audit.metrics import gather
    from cdc_pipeline.core.audit.status import read_status

    source_url = source_url_if_set()
    mongo = mongo_settings_if_set()
    paths = _wal_paths()
    check_staging_folder(paths, create=False, write=False)
    status = read_status(paths, source_url, mongo, table_scope_from_env())
    headroom = None
    if source_url is not None and status.source_error is None:
        try:
            headroom = headroom_for(paths, source_url, 0.0)
        except CdcError:
            headroom = None  # the source went away between the two reads: cdc_up says so
    checks = []
    if not args.no_checks:
        from cdc_pipeline.defs.check_results import latest_check_results

        checks = latest_check_results()
    metrics = gather(paths, status, headroom, checks)
    if args.json:
        print(json.dumps(metrics.samples, indent=2))
    else:
        print(metrics.text(), end="")
    return 0


def _recapture(args: argparse.Namespace) -> int:
    from cdc_pipeline.core.load.sink import read_checkpoint
    from cdc_pipeline.core.wal.recapture import recapture_from
    from cdc_pipeline.core.wal.staging import sequence_from_text

    paths = _wal_paths()
    try:
        sequence = sequence_from_text(args.from_partition)
    except ValueError:
        raise ConfigError(
            f"--from takes a partition key like {paths.source}-000000000042 or a segment"
            f" number, not {args.from_partition.strip()!r}."
        ) from None
    mongo = MongoSettings.from_env()
    check_staging_folder(paths, create=False, write=True)
    checkpoint = read_checkpoint(mongo, paths.source, min(10.0, mongo.retry_seconds))
    result = recapture_from(paths, sequence, checkpoint.last_sequence if checkpoint else 0)
    data = {"moved": result.moved, "folder": str(result.folder or "")}
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(result.summary())
    return 0


def _wal(args: argparse.Namespace) -> int:
    from cdc_pipeline.core.wal.reader import change_line, show, summary_text

    summary, changes = show(_wal_paths(), args.partition, limit=args.limit)
    if args.json:
        print(json.dumps({**summary, "changes": list(changes)}, indent=2, default=str))
        return 0
    print(summary_text(summary))
    for change in changes:
        print(change_line(change))
    return 0


def _verify(args: argparse.Namespace) -> int:
    from cdc_pipeline.core.audit.reconcile.run import reconcile
    from cdc_pipeline.core.mysql.grants import require_select
    from cdc_pipeline.core.wal.ledger import quarantine_halt

    capture = CaptureSettings.from_env()
    mongo = MongoSettings.from_env()
    paths = WalPaths(capture.staging_dir, capture.source_name)
    check_staging_folder(paths, create=False, write=True)
    halted = quarantine_halt(paths)
    if halted:
        raise CorruptSegmentError(halted)
    require_select(capture.source_url, capture.include_tables)
    report = reconcile(
        paths,
        capture.source_url,
        mongo,
        capture.include_tables,
        wait_seconds=args.wait,
        mask_key=capture.governance.mask_key,
    )
    print(json.dumps(report.to_dict(), indent=2) if args.json else "\n".join(report.lines()))
    findings = report.findings()
    if not findings:
        return 0
    _fail(scrub_secrets("verify: " + findings))
    return EXIT_FAILED


def _dead_letters(args: argparse.Namespace) -> int:
    from cdc_pipeline.core.load.dead_letters import DeadLetters
    from cdc_pipeline.core.load.sink import open_sink
    from cdc_pipeline.core.wal.staging import loader_lock

    mongo = MongoSettings.from_env()
    paths = _wal_paths()

    def shown(letter: dict[str, Any], reason: Any) -> dict[str, Any]:
        return {
            "table": table_label(str(letter["schema"]), str(letter["table"])),
            "key": letter.get("key_text"),
            "reason": reason,
            "changes": letter.get("changes"),
            "first_gtid": letter.get("first_gtid"),
            "gtid": letter.get("gtid"),
            "set_aside_at": letter.get("set_aside_at"),
        }

    if args.action == "list":
        with open_sink(mongo) as sink:
            letters = DeadLetters(sink.database, sink.retry, paths.source).listed()
        rows = [shown(letter, letter.get("reason")) for letter in letters]
        text = "\n".join(
            f"{row['table']} {row['key']}: {row['reason']} ({row['changes']} change(s) since"
            f" {row['first_gtid']})"
            for row in rows
        )
        _print(args, {"dead_letters": rows}, text or f"no rows of {paths.source} are set aside")
        return 0
    # Under the loader lock: no load diverts a change of a key while it is being written.
    with loader_lock(paths), open_sink(mongo) as sink:
        letters = DeadLetters(sink.database, sink.retry, paths.source)
        results = [
            (shown(letter, reason), reason) for letter, reason in letters.retry_all(sink.database)
        ]
    still = [row for row, reason in results if reason is not None]
    summary = (
        f"{len(results) - len(still)} of {len(results)} set-aside rows written to their mirrors"
    )
    _print(args, {"written": len(results) - len(still), "still_refused": still}, summary)
    if not still:
        return 0
    first = still[0]
    _fail(
        f"{len(still)} row{'s' * (len(still) > 1)} still refused (the row {first['key']} of"
        f" {first['table']}: {first['reason']}); fix the collection and run"
        " 'cdc-pipeline dead-letters retry' again."
    )
    return EXIT_FAILED


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of seconds") from None
    if not 0 <= value <= 86_400:
        raise argparse.ArgumentTypeError("must be between 0 and 86400 seconds")
    return value


_FLAG = {"action": "store_true"}
_JSON = ("--json", {**_FLAG, "help": "print the {what} as JSON"})
_COMMANDS: tuple[tuple[str, str, str, tuple[tuple[str, dict[str, Any]], ...]], ...] = (
    (
        "doctor",
        "check the source's binlog settings and grants, MongoDB and the staging folder;"
        " print the exact fix for each failure (exit 1 if any check fails)",
        "findings",
        (),
    ),
    (
        "capture",
        "capture one bounded slice of the binlog into one WAL segment (what the sensor runs);"
        " creates CDC_STAGING_DIR if its parent folder exists",
        "result",
        (("--once", {**_FLAG, "help": "run one capture tick and exit"}),),
    ),
    (
        "load",
        "load every pending WAL segment into MongoDB in order (what load_batch_job runs)",
        "result",
        (("--pending", {**_FLAG, "help": "load all pending segments"}),),
    ),
    (
        "catch-up",
        "for CI and cron: capture until caught up with the source, load every pending segment,"
        " then check that the WAL has no gap or duplicate and that every mirror equals its"
        " source table (exit 1 if a check fails, 2 if the operator must act)",
        "report",
        (),
    ),
    (
        "status",
        "show the source position, the captured end, the applied checkpoint, pending segments,"
        " lag, quarantined segments and the MongoDB breaker (exit 1 if a part could not be read"
        " or a segment is quarantined)",
        "status",
        (),
    ),
    (
        "metrics",
        "print the pipeline's state in the Prometheus text format (lag, segments and row events"
        " captured and applied, breaker, halt, dead letters, binlog headroom, and with"
        " DAGSTER_HOME the latest result of each asset check); a part that cannot be read is"
        " cdc_up 0, not an error",
        "samples",
        (
            (
                "--no-checks",
                {**_FLAG, "help": "leave out the asset checks' results (no Dagster instance read)"},
            ),
        ),
    ),
    (
        "recapture",
        "set a damaged segment and every later one aside (into quarantine/), so the next"
        " capture tick writes them again from the binlog; stop the sensor first",
        "result",
        (
            (
                "--from",
                {
                    "dest": "from_partition",
                    "required": True,
                    "metavar": "PARTITION",
                    "help": "the first segment to re-capture: its partition key or its number",
                },
            ),
        ),
    ),
    (
        "snapshot",
        "read the included tables at one consistent point (tied to its exact GTID state) into"
        " WAL segments, in primary-key chunks; also the recovery after a binlog purge. Run it"
        " again after an interruption: it resumes after the last finished chunk",
        "result",
        (
            (
                "--tables",
                {
                    "metavar": "PATTERNS",
                    "help": "comma-separated schema.table patterns (* wildcard) among the"
                    " captured tables; default: every captured table",
                },
            ),
        ),
    ),
    (
        "dead-letters",
        "list the rows set aside in cdc_dead_letters (CDC_ON_UNLOADABLE=dead-letter), or retry"
        " writing them to their mirrors once the collection is fixed; retry exits 1 while any"
        " is still refused",
        "rows",
        (("action", {"choices": ("list", "retry"), "help": "list or retry"}),),
    ),
    (
        "wal",
        "show one WAL segment: its manifest (range, counts, format) and every change in it,"
        " row images decoded; the segment is verified against its digests first (a quarantined"
        " one is shown unverified)",
        "manifest and changes",
        (
            ("action", {"choices": ("show",), "help": "show"}),
            (
                "partition",
                {"metavar": "PARTITION", "help": "partition key (or segment number)"},
            ),
            (
                "--limit",
                {"type": int, "metavar": "N", "help": "show only the first N changes"},
            ),
        ),
    ),
    (
        "verify",
        "compare every mirrored table with its source table (row count and a hash per row) at"
        " a moment the checkpoint covers; exit 1 on any difference, stale or stray mirror, or a"
        " table that could not be compared",
        "report",
        (
            (
                "--wait",
                {
                    "type": _seconds,
                    "default": 30.0,
                    "metavar": "SECONDS",
                    "help": "how long in all to wait for capture and the loader to cover busy"
                    " tables (default 30)",
                },
            ),
        ),
    ),
)


_SOURCE_HELP = (
    "with CDC_SOURCES_FILE: the source to act on (needed when the file lists more than one)"
)


def _select_source(name: str | None) -> None:
    """With CDC_SOURCES_FILE, make the chosen source's settings this process's environment
    (every command then reads them as it reads the single-source variables)."""
    entries = read_sources()
    if entries is None:
        if name is not None:
            raise ConfigError(
                f"--source {name} needs CDC_SOURCES_FILE, which is not set; without it the"
                " CDC_* variables configure the one source."
            )
        return
    if name is None:
        if len(entries) > 1:
            names = ", ".join(entry.name for entry in entries)
            raise ConfigError(
                f"CDC_SOURCES_FILE lists {len(entries)} sources ({names}); choose one with"
                " --source NAME."
            )
        name = entries[0].name
    environ = find_source(name).environ()
    os.environ.clear()
    os.environ.update(environ)


def build_parser() -> _Parser:
    """The argument parser; each subcommand stores its handler as ``args.handler``, and
    ``parser.commands`` maps every subcommand's name to its parser."""
    parser = _Parser(
        prog=PROG,
        description="Change-data capture: MySQL/MariaDB binlog -> Parquet WAL -> MongoDB."
        " Configured by the CDC_* environment variables.",
    )
    parser.commands = {}
    debug = "show the full traceback of an unexpected error"
    parser.add_argument("--debug", action="store_true", help=debug)
    parser.add_argument("--source", metavar="NAME", help=_SOURCE_HELP)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, text, reports, options in _COMMANDS:
        sub: _Parser = commands.add_parser(name, help=text, description=text)
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug)
        sub.add_argument("--source", metavar="NAME", default=argparse.SUPPRESS, help=_SOURCE_HELP)
        for flag, settings in options:
            sub.add_argument(flag, **settings)
        json_flag, json_settings = _JSON
        sub.add_argument(
            json_flag, **{**json_settings, "help": json_settings["help"].format(what=reports)}
        )
        # the command's handler: _<name>, a dash written as an underscore
        sub.set_defaults(handler=globals()[f"_{name.replace('-', '_')}"])
        parser.commands[name] = sub
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the process exit status (see the module invariants)."""
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        _select_source(args.source)
        return handler(args)
    except KeyboardInterrupt:
        _fail("interrupted")
        return 130
    except Exception as error:
        if args.debug:
            raise
        from cdc_pipeline.core.audit.explain import explain_failure

        hint = (
            ", then run 'cdc-pipeline load --pending' again: captured segments wait in the WAL"
            if args.command == "load"
            else ", then run 'cdc-pipeline catch-up' again: what was captured waits in the WAL"
            if args.command == "catch-up"
            else ""
        )
        explained = explain_failure(error, mongo_where(), hint)
        if explained is not None:
            _fail(explained)
            return EXIT_OPERATOR
        if isinstance(error, CdcError):
            _fail(str(error))
            return EXIT_OPERATOR
        reason = f"{type(error).__name__}: {scrub_secrets(str(error))}"
        _fail(f"unexpected error {reason}; rerun with --debug for the traceback")
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
