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
import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn
from urllib.parse import unquote, urlsplit

from cdc_pipeline.core.errors import CdcError, ConfigError, CorruptSegmentError, StagingError
from cdc_pipeline.core.wal.segment import WalPaths, partition_key

if TYPE_CHECKING:
    from cdc_pipeline.core.settings import CaptureSettings

PROG = "cdc-pipeline"
EXIT_FAILED = 1
EXIT_OPERATOR = 2
_PRIVILEGE_ERRORS = frozenset({1044, 1142, 1143, 1227, 1370})
"""MySQL/MariaDB errors meaning "this user lacks a privilege" (database, table, column, global,
routine)."""
_RECAPTURE_DOC = "docs/operations.md, 'A damaged segment'"


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr, exit 2."""

    commands: dict[str, argparse.ArgumentParser]

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_OPERATOR, f"{PROG}: {message}; see '{self.prog} --help'\n")


def _fail(message: str) -> None:
    print(f"{PROG}: {' '.join(message.split())}", file=sys.stderr)


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


def _mongo_where() -> str:
    """The sink as operators may see it: the redacted URI, or the variable's name."""
    from cdc_pipeline.core.settings import MongoSettings

    try:
        return MongoSettings.from_env().redacted()
    except (CdcError, ValueError):
        return "CDC_MONGO_URI"


def _chain(error: BaseException) -> Iterator[BaseException]:
    """``error`` and the errors it was raised from or while handling (also under ``from None``)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _explain(error: BaseException, command: str) -> str | None:
    """One sentence for a failure a person can fix, or None when it is not recognised."""
    import pymysql
    from pymongo.errors import OperationFailure

    from cdc_pipeline.core.errors import SourceSettingError
    from cdc_pipeline.core.load.retry import SinkUnavailableError

    if isinstance(error, SinkUnavailableError):
        again = (
            ", then run 'cdc-pipeline load --pending' again: captured segments wait in the WAL"
            if command == "load"
            else ""
        )
        noun = "try" if error.attempts == 1 else "tries"
        return (
            f"MongoDB at {_mongo_where()} did not answer ({error.error_class},"
            f" {error.attempts} {noun} in {error.elapsed_seconds:.1f} s); start it or correct"
            f" the host and port in CDC_MONGO_URI{again}."
        )
    if isinstance(error, SourceSettingError):
        return None  # already diagnosed, with its own fix
    for cause in _chain(error):
        code = cause.args[0] if cause.args else None
        if isinstance(cause, pymysql.err.MySQLError) and code in _PRIVILEGE_ERRORS:
            said = _scrub(str(cause.args[1]) if len(cause.args) > 1 else "access denied")
            return (
                f"the source refused a query for lack of a privilege (MySQL error {code}:"
                f" {said.rstrip('.')}); grant it to the user of CDC_MYSQL_URL ('cdc-pipeline"
                " doctor' prints the GRANT statements it needs)."
            )
        if isinstance(cause, OperationFailure) and cause.code in (13, 18):
            what = "refused the credentials" if cause.code == 18 else "denied an operation"
            return (
                f"MongoDB at {_mongo_where()} {what} (code {cause.code}); correct the user and"
                " password in CDC_MONGO_URI or grant that user readWrite on CDC_MONGO_DB."
            )
    return None


# -- the staging folder and quarantined segments -------------------------------------------


def _check_staging(paths: WalPaths, *, create: bool, write: bool) -> None:
    """CDC_STAGING_DIR must be a folder, writable when the command writes. Only capture
    (``create``) may create it, and never its missing parents: that is a typo or a disk that
    is not mounted, and the WAL must not land elsewhere."""
    root = paths.root.parent
    if not root.exists() and not create:
        raise StagingError(
            f"CDC_STAGING_DIR {root} does not exist, so there is no WAL to read; point it at the"
            " folder capture writes to, or run 'cdc-pipeline capture --once' first."
        )
    if not root.exists():
        if not root.parent.exists():
            raise StagingError(
                f"CDC_STAGING_DIR {root} does not exist and neither does its parent"
                f" {root.parent}; create it (mkdir -p {root}) or correct CDC_STAGING_DIR."
            )
        folders = [root.parent]
    else:
        folders = [root, paths.root] if paths.root.exists() else [root]
    for folder in folders:
        if not folder.is_dir():
            raise StagingError(
                f"CDC_STAGING_DIR needs {folder} to be a folder, but it is a file; point"
                " CDC_STAGING_DIR at a folder."
            )
        if write and not os.access(folder, os.W_OK | os.X_OK):
            raise StagingError(
                f"{folder} is not writable by this user, and the WAL is written there; make it"
                " writable or point CDC_STAGING_DIR at a writable folder."
            )


def _applied_on_disk(paths: WalPaths) -> int:
    """The last segment known applied on this host: the loader's note, or what was retired."""
    known = 0
    for name, key in (("applied.json", "last_sequence"), ("retired.json", "through_sequence")):
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            known = max(known, int(json.loads((paths.root / name).read_text())[key]))
    return known


def _quarantined(paths: WalPaths, applied: int) -> list[Path]:
    """Segments validation set aside that were neither re-captured nor applied since: loading
    halts at the first of them."""
    if not paths.quarantine.is_dir():
        return []
    return [
        path
        for path in sorted(paths.quarantine.glob("seg-*.parquet"))
        if int(path.stem.split("-")[1]) > applied and not (paths.segments / path.name).exists()
    ]


def _quarantine_sentence(paths: WalPaths, segment: Path) -> str:
    key = partition_key(paths.root.name, int(segment.stem.split("-")[1]))
    why = "failed verification"
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        reason = str(json.loads(segment.with_suffix(".reason.json").read_text())["reason"])
        said = reason.split(";")[0].removeprefix(f"segment {segment.name} ").strip()[:200]
        why = said if said.startswith(("is ", "does ", "cannot ")) else f"{why} ({said})"
    return (
        f"segment {key} {why} and was quarantined in {paths.quarantine}, so nothing after it is"
        f" loaded; stop the capture sensor, run 'cdc-pipeline recapture --from {key}', capture"
        f" again and run 'cdc-pipeline load --pending' ({_RECAPTURE_DOC})."
    )


# -- the commands ----------------------------------------------------------------------------


def _doctor(args: argparse.Namespace) -> int:
    from cdc_pipeline.core.audit.doctor import run_doctor
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
        _fail(f"{failed} of {len(findings)} checks failed; apply the fixes printed above.")
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
    _check_staging(WalPaths(settings.staging_dir, settings.source_name), create=True, write=True)
    from cdc_pipeline.core.capture.tick import capture_once

    result = capture_once(settings)
    print(json.dumps(result.to_dict(), indent=2, default=str) if args.json else result.summary())
    return 0


def _snapshot(args: argparse.Namespace) -> int:
    from cdc_pipeline.core.capture.snapshot import SnapshotProgress, run_snapshot
    from cdc_pipeline.core.settings import CaptureSettings

    settings = CaptureSettings.from_env()
    _check_staging(WalPaths(settings.staging_dir, settings.source_name), create=True, write=True)
    patterns = tuple(part.strip() for part in (args.tables or "").split(",") if part.strip())

    def show(progress: SnapshotProgress) -> None:
        if not args.json:
            print(progress.line(), flush=True)

    result = run_snapshot(settings, patterns, on_progress=show)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        print(result.summary())
        print(
            "the sensor loads the new segments (or run 'cdc-pipeline load --pending'); capture"
            " goes on from the snapshot's position."
        )
    return 0


def _wal_paths() -> WalPaths:
    from cdc_pipeline.core.settings import source_name_from_env, staging_dir_from_env

    return WalPaths(staging_dir_from_env(), source_name_from_env())


def _load(args: argparse.Namespace) -> int:
    from cdc_pipeline.core.load.loader import LoadHaltedError, run_load
    from cdc_pipeline.core.settings import MongoSettings, SourceUrl

    if not args.pending:
        raise ConfigError(
            "load needs --pending (load every captured segment after the checkpoint, in order);"
            " single partitions load through the Dagster job load_batch_job."
        )
    url = os.environ.get("CDC_MYSQL_URL", "").strip()
    source_url = SourceUrl.parse(url) if url else None
    mongo = MongoSettings.from_env()
    paths = _wal_paths()
    _check_staging(paths, create=False, write=True)
    try:
        # With the source URL, mirrors are rebuilt after column changes; without, marked stale.
        result = run_load(paths, mongo, source_url=source_url)
    except (CorruptSegmentError, LoadHaltedError) as error:
        applied = _applied_on_disk(paths)
        next_name = paths.segment(applied + 1).name
        halted = [path for path in _quarantined(paths, applied) if path.name == next_name]
        if halted:
            raise CorruptSegmentError(_quarantine_sentence(paths, halted[0])) from error
        raise
    print(json.dumps(result.to_dict(), indent=2, default=str) if args.json else result.summary())
    return 0


def _status(args: argparse.Namespace) -> int:
    from cdc_pipeline.core.audit.status import read_status
    from cdc_pipeline.core.settings import MongoSettings, SourceUrl
    from cdc_pipeline.core.wal.segment import sequence_of_partition

    url = os.environ.get("CDC_MYSQL_URL", "").strip()
    source_url = SourceUrl.parse(url) if url else None
    mongo = MongoSettings.from_env() if os.environ.get("CDC_MONGO_URI", "").strip() else None
    paths = _wal_paths()
    _check_staging(paths, create=False, write=False)
    status = read_status(paths, source_url, mongo)
    applied = _applied_on_disk(paths)
    if status.applied_partition:
        applied = sequence_of_partition(status.applied_partition)
    quarantined = _quarantined(paths, applied)
    keys = [partition_key(paths.root.name, int(p.stem.split("-")[1])) for p in quarantined]
    if args.json:
        print(json.dumps({**status.to_dict(), "quarantined": keys}, indent=2, default=str))
    else:
        print("\n".join(status.lines()))
        if keys:
            print(f"quarantined {', '.join(keys)} (loading halts at {keys[0]})")
    problems = [_quarantine_sentence(paths, quarantined[0])] if quarantined else []
    if status.source_error:
        problems.append(f"status is partial: {status.source_error}")
    if status.sink_error:
        problems.append(
            f"status is partial: MongoDB at {_mongo_where()} could not be read, so what was"
            " applied is unknown; start MongoDB or correct CDC_MONGO_URI (details above)."
        )
    if not problems:
        return 0
    more = len(problems) - 1
    _fail(problems[0] + (f" ({more} more problem{'s' * (more > 1)} above)" if more else ""))
    return EXIT_FAILED


def _recapture(args: argparse.Namespace) -> int:
    from cdc_pipeline.core.load.retry import RetryPolicy
    from cdc_pipeline.core.load.sink import open_sink
    from cdc_pipeline.core.settings import MongoSettings
    from cdc_pipeline.core.wal.recapture import recapture_from
    from cdc_pipeline.core.wal.segment import sequence_of_partition

    paths = _wal_paths()
    text = args.from_partition.strip()
    try:
        sequence = int(text) if text.isdigit() else sequence_of_partition(text)
    except (ValueError, IndexError):
        raise ConfigError(
            f"--from takes a partition key like {paths.root.name}-000000000042 or a segment"
            f" number, not {text!r}."
        ) from None
    mongo = MongoSettings.from_env()
    _check_staging(paths, create=False, write=True)
    with open_sink(mongo, RetryPolicy(deadline=min(10.0, mongo.retry_seconds))) as sink:
        checkpoint = sink.read_checkpoint(paths.root.name)
    result = recapture_from(paths, sequence, checkpoint.last_sequence if checkpoint else 0)
    if args.json:
        print(json.dumps({"moved": result.moved, "folder": str(result.folder or "")}, indent=2))
    else:
        print(result.summary())
    return 0


def _require_select(settings: CaptureSettings) -> None:
    """Verify reads every captured table, and a table the user may not read is hidden from it
    (its mirror would look like a stray): probe SELECT on each schema CDC_INCLUDE_TABLES names
    (a name that does not exist still answers "denied" first), refuse with the GRANT."""
    import pymysql

    from cdc_pipeline.core.errors import SourceSettingError
    from cdc_pipeline.core.mysql.grants import has_wildcard
    from cdc_pipeline.core.mysql.source import connect, query_one

    def quoted(name: str) -> str:
        return "`" + name.replace("`", "``") + "`"

    with connect(settings.source_url) as connection:
        for pattern in settings.include_tables:
            schema, _, table = pattern.partition(".")
            if has_wildcard(schema):
                continue
            probe = "cdc_pipeline_select_probe" if has_wildcard(table) else table
            try:
                query_one(connection, f"SELECT 1 FROM {quoted(schema)}.{quoted(probe)} LIMIT 0")
            except pymysql.err.MySQLError as error:
                code = error.args[0] if error.args else None
                if code not in _PRIVILEGE_ERRORS:
                    continue  # 1146: no such table (yet); verify reports what it finds
                current = str((query_one(connection, "SELECT CURRENT_USER()") or ("",))[0])
                user, _, host = current.rpartition("@")
                account = f"'{user or settings.source_url.user}'@'{host or '%'}'"
                raise SourceSettingError(
                    f"the source user {account} may not read {pattern} (MySQL error {code}), so"
                    f" verify cannot compare it; run GRANT SELECT ON {quoted(schema)}.* TO"
                    f" {account};"
                ) from None


def _verify(args: argparse.Namespace) -> int:
    from cdc_pipeline.core.audit.reconcile.run import reconcile
    from cdc_pipeline.core.settings import CaptureSettings, MongoSettings

    capture = CaptureSettings.from_env()
    mongo = MongoSettings.from_env()
    paths = WalPaths(capture.staging_dir, capture.source_name)
    _check_staging(paths, create=False, write=True)
    quarantined = _quarantined(paths, _applied_on_disk(paths))
    if quarantined:
        raise CorruptSegmentError(_quarantine_sentence(paths, quarantined[0]))
    _require_select(capture)
    report = reconcile(
        paths, capture.source_url, mongo, capture.include_tables, wait_seconds=args.wait
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


def build_parser() -> _Parser:
    """The argument parser; each subcommand stores its handler as ``args.handler``, and
    ``parser.commands`` maps every subcommand's name to its parser."""
    parser = _Parser(
        prog=PROG,
        description="Change-data capture: MySQL/MariaDB binlog -> Parquet WAL -> MongoDB."
        " Configured by the CDC_* environment variables.",
    )
    parser.commands = {}
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
        parser.commands[name] = sub
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
        "capture one bounded slice of the binlog into one WAL segment (what the sensor runs);"
        " creates CDC_STAGING_DIR if its parent folder exists",
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
        " lag, quarantined segments and the MongoDB breaker (exit 1 if a part could not be read"
        " or a segment is quarantined)",
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

    snapshot = command(
        "snapshot",
        _snapshot,
        "read the included tables at one consistent point (tied to its exact GTID state) into"
        " WAL segments, in primary-key chunks; also the recovery after a binlog purge. Run it"
        " again after an interruption: it resumes after the last finished chunk",
    )
    snapshot.add_argument(
        "--tables",
        metavar="PATTERNS",
        help="comma-separated schema.table patterns (* wildcard) among the captured tables;"
        " default: every captured table",
    )
    snapshot.add_argument("--json", action="store_true", help="print the result as JSON")

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
    except KeyboardInterrupt:
        _fail("interrupted")
        return 130
    except Exception as error:
        if args.debug:
            raise
        explained = _explain(error, args.command)
        if explained is not None:
            _fail(explained)
            return EXIT_OPERATOR
        if isinstance(error, CdcError):
            _fail(str(error))
            return EXIT_OPERATOR
        reason = f"{type(error).__name__}: {_scrub(str(error))}"
        _fail(f"unexpected error {reason}; rerun with --debug for the traceback")
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
