"""``cdc-pipeline`` as a subprocess: operator mistakes end in one stderr line, never a secret."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import subprocess
import sys
import types
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cdc_pipeline import cli
from cdc_pipeline.core.settings import CaptureSettings
from cdc_pipeline.core.wal.staging import WalPaths
from cdc_pipeline_tests.conftest import MongoTarget
from devtools.local_servers import SourceServer, free_port

pytestmark = pytest.mark.integration

PROJECT = Path(__file__).resolve().parents[2]


def _capture_importable() -> bool:
    try:
        importlib.import_module("cdc_pipeline.core.capture.tick")
    except ImportError:
        return False
    return True


needs_capture = pytest.mark.skipif(
    not _capture_importable(), reason="cdc_pipeline.core.capture.tick is not importable yet"
)


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str

    def assert_one_line_failure(self, code: int, *secrets: str) -> str:
        """Exit ``code``, one ``cdc-pipeline:`` line on stderr, no traceback or secret anywhere."""
        assert self.code == code, (self.code, self.stdout, self.stderr)
        lines = self.stderr.splitlines()
        assert len(lines) == 1, self.stderr
        assert lines[0].startswith("cdc-pipeline: "), lines[0]
        self.assert_clean(*secrets)
        return lines[0]

    def assert_clean(self, *secrets: str) -> None:
        for text in (self.stdout, self.stderr):
            assert "Traceback" not in text
            for secret in secrets:
                assert secret not in text


def run_cli(*args: str, env: dict[str, str] | None = None) -> Run:
    """Run ``python -m cdc_pipeline.cli`` with only the given CDC_* variables set."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("CDC_")}
    completed = subprocess.run(
        [sys.executable, "-m", "cdc_pipeline.cli", *args],
        env={**base, **(env or {})},
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return Run(completed.returncode, completed.stdout, completed.stderr)


@pytest.fixture
def staging_env(tmp_path: Path) -> dict[str, str]:
    """Keeps any staging the CLI does in a temporary folder."""
    return {"CDC_STAGING_DIR": str(tmp_path / "wal")}


@contextlib.contextmanager
def cdc_user(server: SourceServer, grants: str) -> Iterator[tuple[str, str]]:
    """A throwaway user (name, password) on 127.0.0.1, kept out of the binlog, then dropped."""
    name = f"u_{uuid.uuid4().hex[:8]}"
    password = f"Pw-{uuid.uuid4().hex[:12]}"
    account = f"'{name}'@'127.0.0.1'"
    server.execute(
        "SET sql_log_bin = 0",
        f"CREATE USER {account} IDENTIFIED BY '{password}'",
        f"GRANT {grants} ON *.* TO {account}",
    )
    try:
        yield name, password
    finally:
        server.execute("SET sql_log_bin = 0", f"DROP USER IF EXISTS {account}")


COMMANDS = sorted(cli.build_parser().commands)
"""Every subcommand, read from the parser itself, so a new command is tested without asking."""
REPORTING = {
    "catch-up",
    "doctor",
    "metrics",
    "capture",
    "load",
    "status",
    "recapture",
    "verify",
    "snapshot",
    "dead-letters",
    "wal",
}
"""The commands that report state and so take --json (test_cli_bad_input runs each with it)."""


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help_works_for_every_command(command: str) -> None:
    run = run_cli(*command.split(), "--help")
    assert run.code == 0, run.stderr
    assert run.stdout.startswith(f"usage: {' '.join(['cdc-pipeline', *command.split()])} ")
    assert run.stderr == ""
    assert "--debug" in run.stdout
    if command in REPORTING:
        assert "--json" in run.stdout


def test_every_command_is_known_to_report_state_or_not() -> None:
    not_reporting: set[str] = set()  # a command that reports nothing goes here, on purpose
    assert set(COMMANDS) == REPORTING | not_reporting


@pytest.mark.parametrize(
    "args", [[], ["no-such-command"], ["doctor", "--no-such-flag"], ["capture"]]
)
def test_bad_arguments_are_one_line(args: list[str], staging_env: dict[str, str]) -> None:
    env = {**staging_env, "CDC_MYSQL_URL": "mysql://cdc@127.0.0.1:1"}
    run_cli(*args, env=env).assert_one_line_failure(2)


@pytest.mark.parametrize("command", [["doctor"], ["capture", "--once"], ["catch-up"]])
def test_an_unset_source_url_is_named(command: list[str], staging_env: dict[str, str]) -> None:
    line = run_cli(*command, env=staging_env).assert_one_line_failure(2)
    assert "CDC_MYSQL_URL is not set" in line


@pytest.mark.parametrize(
    "command", [["doctor"], ["capture", "--once"], ["status"], ["load", "--pending"], ["verify"]]
)
def test_a_wrong_url_scheme_is_named(command: list[str], staging_env: dict[str, str]) -> None:
    env = {**staging_env, "CDC_MYSQL_URL": "postgres://cdc:Sch3me-Secret@127.0.0.1:5432"}
    line = run_cli(*command, env=env).assert_one_line_failure(2, "Sch3me-Secret")
    assert "CDC_MYSQL_URL must look like mysql://" in line


def test_doctor_reports_an_unreachable_source(staging_env: dict[str, str]) -> None:
    port = free_port()
    env = {**staging_env, "CDC_MYSQL_URL": f"mysql://cdc:Unre4ch-Secret@127.0.0.1:{port}"}
    run = run_cli("doctor", env=env)
    line = run.assert_one_line_failure(1, "Unre4ch-Secret")
    assert "checks failed" in line
    assert f"FAIL connection: cannot reach the source at 127.0.0.1:{port}" in run.stdout
    assert "FAIL mongo: CDC_MONGO_URI is not set" in run.stdout


@needs_capture
def test_capture_reports_an_unreachable_source(staging_env: dict[str, str]) -> None:
    port = free_port()
    env = {**staging_env, "CDC_MYSQL_URL": f"mysql://cdc:Unre4ch-Secret@127.0.0.1:{port}"}
    line = run_cli("capture", "--once", env=env).assert_one_line_failure(2, "Unre4ch-Secret")
    assert f"127.0.0.1:{port}" in line


@pytest.mark.parametrize(
    "command",
    [["doctor"], pytest.param(["capture", "--once"], marks=needs_capture), ["catch-up"]],
)
def test_a_bad_password_is_refused_without_echoing_it(
    source_server: SourceServer, staging_env: dict[str, str], command: list[str]
) -> None:
    with cdc_user(source_server, "SELECT") as (name, password):
        wrong = f"Wr0ng-{uuid.uuid4().hex[:8]}"
        url = f"mysql://{name}:{wrong}@127.0.0.1:{source_server.port}"
        # catch-up reads every setting first, then touches the source before MongoDB.
        mongo = {"CDC_MONGO_URI": f"mongodb://127.0.0.1:{free_port()}"}
        run = run_cli(*command, env={**staging_env, **mongo, "CDC_MYSQL_URL": url})
    if command == ["doctor"]:
        run.assert_one_line_failure(1, wrong, password)
        assert f"FAIL connection: the source mysql://{name}:***@" in run.stdout
        assert f"refused user '{name}'" in run.stdout
    else:
        line = run.assert_one_line_failure(2, wrong, password)
        assert f"refused user '{name}'" in line


def test_a_missing_grant_fails_doctor_with_the_fix(
    source_server: SourceServer, mongo_target: MongoTarget, staging_env: dict[str, str]
) -> None:
    with cdc_user(source_server, "SELECT") as (name, password):
        env = {
            **staging_env,
            "CDC_MYSQL_URL": f"mysql://{name}:{password}@127.0.0.1:{source_server.port}",
            "CDC_MONGO_URI": mongo_target.uri,
        }
        run = run_cli("doctor", env=env)
    line = run.assert_one_line_failure(1, password)
    assert line == "cdc-pipeline: 1 of" + line.split(" of", 1)[1]
    assert "FAIL grants:" in run.stdout
    assert "     fix: GRANT REPLICATION SLAVE, " in run.stdout
    assert f"TO '{name}'@'127.0.0.1';" in run.stdout


def test_doctor_passes_on_a_healthy_setup_and_json_parses(
    source_server: SourceServer, mongo_target: MongoTarget, staging_env: dict[str, str]
) -> None:
    env = {**staging_env, "CDC_MYSQL_URL": source_server.url, "CDC_MONGO_URI": mongo_target.uri}
    text = run_cli("doctor", env=env)
    assert (text.code, text.stderr) == (0, ""), text.stdout
    # Everything passes; the plaintext session to the fixtures' server is a warning only, and
    # so is a server with no table yet.
    assert all(
        line.startswith(("ok   ", "warn tls:", "warn tables:", "     advice:"))
        for line in text.stdout.splitlines()
    ), text.stdout

    run = run_cli("doctor", "--json", env=env)
    assert run.code == 0, run.stderr
    findings = json.loads(run.stdout)
    assert {"connection", "grants", "mongo", "staging", "staging_space"} <= {
        f["check"] for f in findings
    }
    assert all(set(f) == {"check", "ok", "detail", "fix", "advice"} and f["ok"] for f in findings)


def test_with_nothing_configured_status_exits_2_and_doctor_json_stays_json(
    staging_env: dict[str, str],
) -> None:
    """``status`` said ``source ?`` and exited 0; ``doctor --json`` printed a text line."""
    Path(staging_env["CDC_STAGING_DIR"]).mkdir()
    status = run_cli("status", env=staging_env)
    line = status.assert_one_line_failure(2)
    assert "CDC_MYSQL_URL and CDC_MONGO_URI are not set" in line
    assert "source      not configured (CDC_MYSQL_URL is not set)" in status.stdout
    assert "mongodb     not configured (CDC_MONGO_URI is not set)" in status.stdout
    doctor = run_cli("doctor", "--json", env=staging_env)
    line = doctor.assert_one_line_failure(2)
    assert line.endswith("CDC_MYSQL_URL is not set; export it as mysql://user:password@host:port.")
    findings = {f["check"]: f for f in json.loads(doctor.stdout)}
    assert findings["connection"]["ok"] is False
    assert "CDC_MYSQL_URL is not set" in findings["connection"]["detail"]
    assert findings["mongo"]["ok"] is False


def test_doctor_json_carries_failures_and_fixes(staging_env: dict[str, str]) -> None:
    env = {**staging_env, "CDC_MYSQL_URL": f"mysql://cdc@127.0.0.1:{free_port()}"}
    run = run_cli("doctor", "--json", env=env)
    run.assert_one_line_failure(1)
    findings = {f["check"]: f for f in json.loads(run.stdout)}
    assert findings["connection"]["ok"] is False
    assert findings["connection"]["fix"]
    assert findings["mongo"]["ok"] is False


class _FakeResult:
    def summary(self) -> str:
        return "captured 3 events into segment 000001"

    def to_dict(self) -> dict[str, object]:
        return {"events": 3, "segment": "000001"}


def _fake_capture_module(capture_once: object) -> types.ModuleType:
    module = types.ModuleType("cdc_pipeline.core.capture.tick")
    module.capture_once = capture_once  # type: ignore[attr-defined]
    return module


def test_capture_once_prints_the_summary_or_json(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    seen: list[CaptureSettings] = []

    def capture_once(settings: CaptureSettings) -> _FakeResult:
        seen.append(settings)
        return _FakeResult()

    monkeypatch.setitem(
        sys.modules, "cdc_pipeline.core.capture.tick", _fake_capture_module(capture_once)
    )
    monkeypatch.setenv("CDC_MYSQL_URL", "mysql://cdc:pw@127.0.0.1:3306")
    monkeypatch.setenv("CDC_STAGING_DIR", str(tmp_path))
    assert cli.main(["capture", "--once"]) == 0
    assert capsys.readouterr().out == "captured 3 events into segment 000001\n"
    assert cli.main(["capture", "--once", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"events": 3, "segment": "000001"}
    assert [s.staging_dir for s in seen] == [tmp_path, tmp_path]


def test_an_unexpected_error_is_one_scrubbed_line_unless_debug(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def capture_once(settings: CaptureSettings) -> _FakeResult:
        raise RuntimeError(f"boom\nwhile talking to {settings.source_url.password}")

    monkeypatch.setitem(
        sys.modules, "cdc_pipeline.core.capture.tick", _fake_capture_module(capture_once)
    )
    monkeypatch.setenv("CDC_MYSQL_URL", "mysql://cdc:Unexp3cted-pw@127.0.0.1:3306")
    assert cli.main(["capture", "--once"]) == 1
    err = capsys.readouterr().err
    assert err == (
        "cdc-pipeline: unexpected error RuntimeError: boom while talking to ***;"
        " rerun with --debug for the traceback\n"
    )
    with pytest.raises(RuntimeError):
        cli.main(["capture", "--once", "--debug"])
    with pytest.raises(RuntimeError):
        cli.main(["--debug", "capture", "--once"])


# -- a corrupt segment, and --json of every command on a healthy pipeline ----------------------


@pytest.fixture
def cli_env(
    source_server: SourceServer,
    source_schema: str,
    mongo_target: MongoTarget,
    mongo_db_name: str,
    tmp_path: Path,
) -> dict[str, str]:
    """This test's pipeline (a table ``t`` in its schema) for the CLI; staging not created yet."""
    source_server.execute(f"CREATE TABLE `{source_schema}`.t (id INT PRIMARY KEY, v INT)")
    return {
        "CDC_MYSQL_URL": source_server.url,
        "CDC_MONGO_URI": mongo_target.uri,
        "CDC_MONGO_DB": mongo_db_name,
        "CDC_MONGO_COMPAT": mongo_target.compat,
        "CDC_STAGING_DIR": str(tmp_path / "wal"),
        "CDC_INCLUDE_TABLES": f"{source_schema}.*",
        "CDC_SERVER_ID": str(uuid.uuid4().int % 2**31 + 10_000),
    }


RAN_WITH_JSON: set[str] = set()


def run_json(*args: str, env: dict[str, str]) -> dict[str, object] | list[object]:
    RAN_WITH_JSON.add(args[0])
    run = run_cli(*args, "--json", env=env)
    assert (run.code, run.stderr) == (0, ""), (args, run.stdout, run.stderr)
    return json.loads(run.stdout)  # type: ignore[no-any-return]


def test_every_reporting_command_prints_parseable_json(
    source_server: SourceServer, source_schema: str, cli_env: dict[str, str]
) -> None:
    assert run_json("capture", "--once", env=cli_env)["segment"] is None  # type: ignore[call-overload]
    assert Path(cli_env["CDC_STAGING_DIR"]).is_dir()  # created: its parent exists
    source_server.execute(f"INSERT INTO `{source_schema}`.t VALUES (1, 1), (2, 2)")
    captured = run_json("capture", "--once", env=cli_env)
    assert captured["partition_key"] == "default-000000000001"  # type: ignore[call-overload]
    shown = run_json("wal", "show", "default-000000000001", env=cli_env)
    assert shown["format_version"] == 2 and shown["rows"] == 2  # type: ignore[call-overload]
    changes = shown["changes"]  # type: ignore[call-overload]
    assert [(c["op"], c["pk"], c["after"]) for c in changes] == [
        ("insert", {"id": 1}, {"id": 1, "v": 1}),
        ("insert", {"id": 2}, {"id": 2, "v": 2}),
    ]
    loaded = run_json("load", "--pending", env=cli_env)
    assert loaded["checkpoint"] == "default-000000000001"  # type: ignore[call-overload]
    status = run_json("status", env=cli_env)
    assert status["pending_segments"] == 0 and status["quarantined"] == []  # type: ignore[call-overload]
    verify = run_json("verify", "--wait", "10", env=cli_env)
    assert verify["passed"] and verify["complete"]  # type: ignore[call-overload]
    doctor = run_json("doctor", env=cli_env)
    assert all(finding["ok"] for finding in doctor)  # type: ignore[index,union-attr]
    source_server.execute(f"INSERT INTO `{source_schema}`.t VALUES (3, 3)")
    run_json("capture", "--once", env=cli_env)
    moved = run_json("recapture", "--from", "default-000000000002", env=cli_env)
    assert moved["moved"] == ["seg-000000000002.parquet"]  # type: ignore[call-overload]
    snapshot = run_json("snapshot", env=cli_env)
    assert snapshot["complete"] and snapshot["rows_written"] == 3  # type: ignore[call-overload]
    assert snapshot["stream_segments"] == 1  # the set-aside segment, captured again first  # type: ignore[call-overload]
    assert run_json("dead-letters", "list", env=cli_env) == {"dead_letters": []}
    assert run_json("dead-letters", "retry", env=cli_env) == {"written": 0, "still_refused": []}
    samples = run_json("metrics", "--no-checks", env=cli_env)
    assert samples["cdc_up"] == [
        [{"source": "default", "part": "source"}, 1.0],
        [{"source": "default", "part": "mongodb"}, 1.0],
    ]  # type: ignore[call-overload]
    caught_up = run_json("catch-up", env=cli_env)
    assert caught_up["passed"] and len(caught_up["checks"]) == 3  # type: ignore[call-overload]
    assert RAN_WITH_JSON >= REPORTING


def test_catch_up_loads_everything_and_fails_in_one_line_on_a_damaged_mirror(
    source_server: SourceServer,
    source_schema: str,
    cli_env: dict[str, str],
    mongo_target: MongoTarget,
    mongo_db_name: str,
) -> None:
    """The CI command: capture until caught up, load, then the checks; a mirror that no longer
    equals its source is a failed check (exit 1, one line naming it), not a quiet exit 0."""
    env = {**cli_env, "CDC_SEGMENT_MAX_EVENTS": "10"}
    first = run_cli("catch-up", env=env)  # an empty WAL starts at the source's position
    assert (first.code, first.stderr) == (0, ""), (first.stdout, first.stderr)
    assert "captured 0 segments (0 row events)" in first.stdout.splitlines()
    source_server.execute(
        *(f"INSERT INTO `{source_schema}`.t VALUES ({key}, {key})" for key in range(1, 26))
    )
    run = run_cli("catch-up", env=env)
    assert (run.code, run.stderr) == (0, ""), (run.stdout, run.stderr)
    lines = run.stdout.splitlines()
    assert "captured 3 segments (25 row events)" in lines, run.stdout
    for check in ("gtid_continuity", "no_duplicate_events", "source_sink_reconciliation"):
        assert f"check {check}: passed" in lines, run.stdout
    with mongo_target.client() as client:
        sink = mongo_target.sink(client[mongo_db_name])
        assert client[mongo_db_name][sink.mirror(source_schema, "t")].count_documents({}) == 25
        client[mongo_db_name][sink.mirror(source_schema, "t")].delete_one({"_id": 7})
    again = run_cli("catch-up", env=env)
    line = again.assert_one_line_failure(1)
    assert line.startswith(
        "cdc-pipeline: catch-up: 1 of 3 checks failed (source_sink_reconciliation); first: 1"
        " differ ("
    ), line
    assert "check source_sink_reconciliation: FAILED: 1 differ" in again.stdout


def test_a_corrupt_segment_is_named_with_the_way_back(
    source_server: SourceServer, source_schema: str, cli_env: dict[str, str]
) -> None:
    run_json("capture", "--once", env=cli_env)
    for key in (1, 2):
        source_server.execute(f"INSERT INTO `{source_schema}`.t VALUES ({key}, {key})")
        run_json("capture", "--once", env=cli_env)
    paths = WalPaths(Path(cli_env["CDC_STAGING_DIR"]), "default")
    segment = paths.segment(1)
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0xFF
    segment.write_bytes(bytes(data))

    sentence = (
        "segment default-000000000001 is damaged (its bytes no longer match the sha256 written"
        f" at capture) and was quarantined in {paths.quarantine}, so nothing after it is loaded;"
        " stop the capture sensor, run 'cdc-pipeline recapture --from default-000000000001',"
        " capture again and run 'cdc-pipeline load --pending' (docs/operations.md, 'A damaged"
        " segment')."
    )
    for command, code in (
        ("load --pending", 2),
        ("status", 1),
        ("verify", 2),
        ("load --pending", 2),
    ):
        run = run_cli(*command.split(), env=cli_env)
        assert run.assert_one_line_failure(code) == f"cdc-pipeline: {sentence}", command
    assert (paths.quarantine / segment.name).exists()
    status = run_cli("status", "--json", env=cli_env)
    assert json.loads(status.stdout)["quarantined"] == ["default-000000000001"]
    assert "quarantined default-000000000001 (loading halts at default-000000000001)" in (
        run_cli("status", env=cli_env).stdout
    )

    # The sentence's way back works: set aside, capture again, load.
    run_json("recapture", "--from", "default-000000000001", env=cli_env)
    run_json("capture", "--once", env=cli_env)
    assert run_json("load", "--pending", env=cli_env)["checkpoint"] == "default-000000000001"  # type: ignore[call-overload]
    assert run_json("status", env=cli_env)["quarantined"] == []  # type: ignore[call-overload]
    assert run_json("verify", "--wait", "10", env=cli_env)["passed"]  # type: ignore[call-overload]
