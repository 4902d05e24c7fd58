"""No password leaks, end to end (issue 22).

One test runs the whole pipeline with distinctive passwords in both URLs (the source's
``CDC_MYSQL_URL`` and the sink's ``CDC_MONGO_URI``), then looks for them everywhere they could
have gone. What runs, on a fresh staging folder and ``DAGSTER_HOME`` (the project's
``dagster.yaml``, SQLite storage):

- capture and load: ``cdc-pipeline capture --once``, ``dagster job execute -j catch_up_job`` (as
  CI and cron run it: compute logs and event log in ``DAGSTER_HOME``) over inserts, updates, a
  delete, a table without a key and a column change whose mirror rebuild reads the source
  again; a ``binlog_capture_sensor`` tick and the ``load_batch_job`` run it requests;
- snapshots: ``cdc-pipeline snapshot`` and ``snapshot_job``;
- checks: ``audit_job`` (every global asset check; ``schema_versions_valid`` runs with each load);
- every CLI command, read from the parser (so a new one is covered too), with ``--json`` and
  with ``--debug``, as subprocesses; harmless arguments, a refusal is fine (its text is checked);
- failures: ``dagster job execute -j catch_up_job`` with MongoDB's port closed (the run fails
  and logs why), a sensor tick where the source refuses a wrong password, and every CLI command
  again with ``--json`` and ``--debug`` while the source and MongoDB refuse wrong passwords;
- the UI: ``dagster-webserver`` on the same ``DAGSTER_HOME``, asked over GraphQL for every run
  (config, tags, steps) with every event (``eventConnection``; each event type's fields, built
  from the schema: messages, errors and their causes, metadata), ``logsForRun`` per run, the
  captured compute logs, the assets' materializations with their metadata, each asset check's
  evaluations with their metadata, the resources' configured values and the sensor.

Neither password, nor either wrong one (raw, percent-encoded, form-encoded, base64, or its
distinctive middle alone, which also finds a cut or escaped copy), may then appear in any file
under the staging folder or ``DAGSTER_HOME`` (the bytes, and the decoded contents: every SQLite
cell, inflated where zlib-compressed, and every Parquet value and footer, since the WAL's pages
are zstd-compressed), in any document, collection name or index of any MongoDB database
(BSON and extended JSON), in any stdout/stderr, or in any GraphQL answer.

Run here rather than as the production processes: the sensor tick, ``snapshot_job``,
``load_batch_job`` and ``audit_job`` run in this process on the same instance (no daemon, no
code server: each subprocess costs seconds on a 2-core CI machine), so their logs are in the
event log but not in compute-log files, and the daemon's tick history is not stored (the
tick's result, cursor and error are checked instead). The second CLI round (wrong passwords)
runs ``cli.main`` in this process for the same reason; a ``--debug`` traceback is printed with
``traceback.format_exception``, as the interpreter prints it.

MongoDB: the nx-27017 stand-in has no authentication (pymongo's SCRAM ``saslStart`` gets an
answer without ``payload``: ``KeyError: 'payload'`` on every connection). So the pipeline reaches
it through ``ScramProxy`` (``cdc_pipeline_tests/mongo_auth_proxy.py``), which checks the password
with a real SCRAM conversation, as mongod does, and forwards everything else: every MongoDB
connection the pipeline makes really authenticates with the distinctive password (the test
asserts the proxy counted logins), and a wrong one is refused as by MongoDB (code 18). Not
covered: a real mongod's own log and users, the source server's logs, PostgreSQL run storage,
GridFS content (no value here is large enough; its collections would be searched), and what
``ps`` shows (the passwords are only ever in the environment, never in a command line here).
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import time
import traceback
import urllib.error
import urllib.request
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus, urlsplit

import bson
import dagster as dg
import pyarrow.parquet as pq
import pytest
from bson import json_util

from cdc_pipeline import cli
from cdc_pipeline.core.wal.staging import WalPaths, list_segments, sequence_of
from cdc_pipeline.definitions import defs
from cdc_pipeline.defs.capture import binlog_capture_sensor
from cdc_pipeline.defs.resources import MongoSinkResource, SourceResource
from cdc_pipeline_tests.conftest import MongoTarget
from cdc_pipeline_tests.mongo_auth_proxy import ScramProxy
from devtools.local_servers import SourceServer, free_port

pytestmark = pytest.mark.integration

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
_LETTERS = "ghjkmnpqrstuvwxyzGHJKLMNPQRSTUVWXYZ"
"""Letters only, none a hex digit: a password's middle is never part of a digest, id or GTID."""


# -- secrets and where they could hide ------------------------------------------------------------


@dataclass(frozen=True)
class Secret:
    """A distinctive password: ``<label>/<middle> +%!`` (``/``, space, ``+`` and ``%`` make its
    percent-encoded and form-encoded forms differ from it and from each other)."""

    label: str
    middle: str = field(default_factory=lambda: "".join(random.choices(_LETTERS, k=16)))

    @property
    def value(self) -> str:
        return f"{self.label}/{self.middle} +%!"

    @property
    def quoted(self) -> str:
        return quote(self.value, safe="")

    def forms(self) -> dict[str, bytes]:
        return {
            "raw": self.value.encode(),
            "percent-encoded": self.quoted.encode(),
            "form-encoded": quote_plus(self.value, safe="").encode(),
            "base64": base64.b64encode(self.value.encode()),
            "middle": self.middle.encode(),  # any other spelling, a cut or escaped copy
        }


def leaks_in(data: bytes, secrets: list[Secret]) -> list[str]:
    return [
        f"{secret.label} ({form})"
        for secret in secrets
        for form, needle in secret.forms().items()
        if needle in data
    ]


def _inflated(data: bytes) -> bytes | None:
    """``data`` decompressed when it is zlib or gzip (Dagster stores snapshots zlib-compressed)."""
    for decompress in (zlib.decompress, gzip.decompress):
        try:
            return decompress(data)
        except (zlib.error, OSError, EOFError):
            continue
    return None


def _sqlite_cells(path: Path) -> Iterator[tuple[str, bytes]]:
    """Each table's cells, text and blobs (and blobs inflated), one byte string per table."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            cells: list[bytes] = []
            for row in db.execute(f'SELECT * FROM "{table}"'):
                for value in row:
                    if isinstance(value, str):
                        cells.append(value.encode())
                    elif isinstance(value, bytes):
                        cells.append(value)
                        cells.append(_inflated(value) or b"")
            yield f"sqlite table {table}", b"\n".join(cells)


def _parquet_values(path: Path) -> Iterator[tuple[str, bytes]]:
    """A Parquet file's values and footer, decoded (its pages are compressed on disk)."""
    table = pq.read_table(path)
    yield "parquet rows", json.dumps(table.to_pylist(), default=repr).encode()
    metadata = pq.read_schema(path).metadata or {}
    yield "parquet footer", b"\n".join(key + b"=" + value for key, value in metadata.items())


def file_views(path: Path) -> Iterator[tuple[str, bytes]]:
    """A file's bytes and, for SQLite, Parquet and compressed files, their decoded contents."""
    data = path.read_bytes()
    yield "bytes", data
    if data.startswith(b"SQLite format 3\x00"):
        yield from _sqlite_cells(path)
    elif data.startswith(b"PAR1"):
        yield from _parquet_values(path)
    elif (inflated := _inflated(data)) is not None:
        yield "inflated", inflated


def tree_leaks(root: Path, secrets: list[Secret]) -> tuple[list[str], int]:
    """Every leak in the files under ``root``, and how many files were read."""
    found: list[str] = []
    files = 0
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        files += 1
        for view, data in file_views(path):
            found += [f"{path} [{view}]: {leak}" for leak in leaks_in(data, secrets)]
    return found, files


def mongo_leaks(client: Any, secrets: list[Secret]) -> tuple[list[str], int]:
    """Every leak in any document (BSON and extended JSON) of any collection of any
    database, in collection names and in index definitions; and how many documents."""
    found: list[str] = []
    documents = 0
    for db_name in client.list_database_names():
        database = client[db_name]
        names = database.list_collection_names()
        found += [
            f"mongo {db_name}: collection name {leak}"
            for leak in leaks_in("\n".join(names).encode(), secrets)
        ]
        for name in names:
            collection = database[name]
            indexes = json_util.dumps(collection.index_information()).encode()
            found += [
                f"mongo {db_name}.{name} indexes: {leak}" for leak in leaks_in(indexes, secrets)
            ]
            for document in collection.find():
                documents += 1
                data = bson.encode(document) + json_util.dumps(document).encode()
                found += [
                    f"mongo {db_name}.{name} _id={document.get('_id')!r}: {leak}"
                    for leak in leaks_in(data, secrets)
                ]
    return found, documents


# -- running things -------------------------------------------------------------------------------


@dataclass
class Outputs:
    """Every text the pipeline showed anybody: (what, text)."""

    texts: list[tuple[str, str]] = field(default_factory=list)

    def add(self, what: str, text: str | bytes) -> None:
        self.texts.append(
            (what, text.decode(errors="replace") if isinstance(text, bytes) else text)
        )

    def leaks(self, secrets: list[Secret]) -> list[str]:
        return [
            f"{what}: {leak}"
            for what, text in self.texts
            for leak in leaks_in(text.encode(errors="surrogateescape"), secrets)
        ]


def run(
    outputs: Outputs, what: str, command: list[str], env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        command,
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    outputs.add(f"{what} stdout", done.stdout)
    outputs.add(f"{what} stderr", done.stderr)
    return done


def cli_invocations(partition_after_end: str) -> list[list[str]]:
    """Every command of the parser with ``--json`` and with ``--debug``, each with harmless
    arguments (a new command gets none: if it needs some, its refusal is checked too)."""
    arguments = {
        "capture": ["--once"],
        "load": ["--pending"],
        "verify": ["--wait", "5"],
        "recapture": ["--from", partition_after_end],  # far past the end: refused, nothing moved
        "dead-letters": ["list"],
    }
    invocations = []
    for name, parser in sorted(cli.build_parser().commands.items()):
        flags = [flag for flag in ("--json", "--debug") if flag in parser._option_string_actions]
        invocations += [[name, *arguments.get(name, []), flag] for flag in flags]
    invocations.append(["dead-letters", "retry", "--json"])
    return invocations


def dagster_job(
    outputs: Outputs, job: str, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    command = [str(BIN / "dagster"), "job", "execute", "-m", "cdc_pipeline.definitions", "-j", job]
    return run(outputs, f"dagster job execute -j {job}", command, env)


@contextlib.contextmanager
def source_user(server: SourceServer, password: str) -> Iterator[str]:
    """A capture user on 127.0.0.1 with what docs/operations.md asks for (MySQL: RELOAD too,
    for the snapshot's read lock), kept out of the binlog, dropped afterwards."""
    name = f"cdc_{uuid.uuid4().hex[:8]}"
    account = f"'{name}'@'127.0.0.1'"
    grants = (
        "REPLICATION SLAVE, REPLICATION CLIENT, RELOAD, SELECT"
        if server.flavor == "mysql"
        else "REPLICATION SLAVE, BINLOG MONITOR, SELECT"
    )
    server.execute(
        "SET sql_log_bin = 0",
        f"CREATE USER {account} IDENTIFIED BY '{password}'",
        f"GRANT {grants} ON *.* TO {account}",
    )
    try:
        yield name
    finally:
        server.execute("SET sql_log_bin = 0", f"DROP USER IF EXISTS {account}")


@contextlib.contextmanager
def webserver(env: dict[str, str], log: Path) -> Iterator[Callable[[], str]]:
    """``dagster-webserver`` on a free 127.0.0.1 port (the code location loaded from the
    module, with the pipeline's environment), started now so that it loads while the pipeline
    runs; yields a function that waits until it serves and returns its URL. Stopped by its PID."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [
                *(str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port)),
                *("-m", "cdc_pipeline.definitions"),
            ],
            env=env,
            cwd=PROJECT_ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )

        def serving() -> str:
            deadline = time.monotonic() + 120
            while True:
                assert process.poll() is None, f"dagster-webserver exited:\n{log.read_text()}"
                assert time.monotonic() < deadline, f"no webserver in 120 s:\n{log.read_text()}"
                with (
                    contextlib.suppress(OSError),
                    urllib.request.urlopen(f"{url}/server_info", timeout=5) as response,
                ):
                    if response.status == 200:
                        return url
                time.sleep(0.3)

        try:
            yield serving
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def cli_in_process(
    outputs: Outputs,
    what: str,
    argv: list[str],
    env: dict[str, str],
    capfd: pytest.CaptureFixture[str],
) -> int:
    """``cdc-pipeline`` run by ``cli.main`` in this process, with the CDC_* variables of
    ``env`` only; an exception that escapes it (``--debug``) is printed as the interpreter
    prints it. Its stdout and stderr go to ``outputs``."""
    capfd.readouterr()
    with pytest.MonkeyPatch.context() as patch:
        for name in [name for name in os.environ if name.startswith("CDC_")]:
            patch.delenv(name)
        for name, value in env.items():
            if name.startswith("CDC_"):
                patch.setenv(name, value)
        try:
            code = cli.main(argv)
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
        except Exception as error:
            print("".join(traceback.format_exception(error)), file=sys.stderr, end="")
            code = 1
    out, err = capfd.readouterr()
    outputs.add(f"{what} stdout", out)
    outputs.add(f"{what} stderr", err)
    return code


# -- GraphQL --------------------------------------------------------------------------------------


def graphql(
    url: str, query: str, variables: dict[str, Any] | None = None
) -> tuple[dict[str, Any], bytes]:
    request = urllib.request.Request(
        f"{url}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            body: bytes = response.read()
    except urllib.error.HTTPError as error:  # an answer with "errors" comes with status 500
        body = error.read()
    return json.loads(body), body


_INTROSPECTION = """{ __schema { types { name kind possibleTypes { name }
  fields { name args { type { kind } defaultValue }
    type { kind name ofType { kind name ofType { kind name ofType { kind name
      ofType { kind name ofType { kind name ofType { kind name } } } } } } } } } } }"""


_BROKEN_FIELDS = {
    ("ErrorChainLink", "message"),
    ("AssetMaterializationPlannedEvent", "pipelineName"),
    # Asked of an unpartitioned asset (each table's MongoDB copy) they fail with "Asset node has
    # no partitions definition"; the UI asks them of partitioned assets only.
    ("AssetNode", "dataVersionByPartition"),
    ("AssetNode", "staleStatusByPartition"),
    ("AssetNode", "staleCausesByPartition"),
}
"""Declared non-null in Dagster 1.13's schema but never resolved ("Cannot return null for
non-nullable field ErrorChainLink.message"); the UI asks for neither (it reads
``errorChain { error { message stack } }``, asked here too)."""


class Selections:
    """Selection sets built from the schema: every field without required arguments, to a
    depth; every member of a union or interface; each field aliased by its type, so members
    whose fields share a name but not a type never conflict."""

    def __init__(self, url: str) -> None:
        answer, _ = graphql(url, _INTROSPECTION)
        self.types = {t["name"]: t for t in answer["data"]["__schema"]["types"]}

    @staticmethod
    def _named(kind: dict[str, Any]) -> dict[str, Any]:
        while kind.get("ofType"):
            kind = kind["ofType"]
        return kind

    def of(self, type_name: str, depth: int) -> str:
        kind = self.types[type_name]
        if kind["kind"] in ("UNION", "INTERFACE"):
            members = [
                f"... on {member['name']} {{ {body} }}"
                for member in kind["possibleTypes"]
                if (body := self.of(member["name"], depth))
            ]
            return "__typename " + " ".join(members)
        parts = []
        for item in kind["fields"] or []:
            if (type_name, item["name"]) in _BROKEN_FIELDS or any(
                arg["type"]["kind"] == "NON_NULL" and arg["defaultValue"] is None
                for arg in item["args"]
            ):
                continue
            named = self._named(item["type"])
            alias = f"{type_name}_{item['name']}: {item['name']}"
            if named["kind"] in ("SCALAR", "ENUM"):
                parts.append(alias)
            elif depth > 0 and (body := self.of(named["name"], depth - 1)):
                parts.append(f"{alias} {{ {body} }}")
        return " ".join(parts)


def graphql_answers(url: str, outputs: Outputs) -> dict[str, Any]:
    """Ask what the UI shows about runs (config, tags, every event with its fields, errors and
    metadata), their captured compute logs, the assets' materializations, the checks'
    evaluations, the resources and the sensor; every answer goes to ``outputs``. Returns a few
    counts for the test's own sanity checks."""
    selections = Selections(url)
    facts: dict[str, Any] = {"statuses": {}, "events": 0, "logs": 0}

    def ask(what: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        answer, body = graphql(url, query, variables)
        outputs.add(f"GraphQL {what}", body)
        errors = answer.get("errors") or []
        assert not errors, (what, [(e.get("message"), e.get("path")) for e in errors[:3]])
        return answer["data"]  # type: ignore[no-any-return]

    runs = ask(
        "runs with their events",
        "{ runsOrError { __typename ... on Runs { results { runId jobName status runConfigYaml"
        " tags { key value } stepKeysToExecute parentRunId rootRunId stepStats { stepKey status }"
        " eventConnection(limit: 100000) { cursor hasMore"
        f" events {{ {selections.of('DagsterRunEvent', 3)} }} }} }} }}"
        " ... on PythonError { message stack } } }",
    )["runsOrError"]["results"]
    for item in runs:
        facts["statuses"].setdefault(item["jobName"], []).append(item["status"])
        events = item["eventConnection"]["events"]
        facts["events"] += len(events)
        run_id = item["runId"]
        ask(
            f"logsForRun {run_id}",
            "query($runId: ID!) { logsForRun(runId: $runId, limit: 100000) { __typename"
            f" ... on EventConnection {{ events {{ {selections.of('DagsterRunEvent', 0)} }} }}"
            " ... on PythonError { message stack } } }",
            {"runId": run_id},
        )
        file_keys = {
            event["LogsCapturedEvent_fileKey"]
            for event in events
            if event.get("LogsCapturedEvent_fileKey")
        }
        for file_key in sorted(file_keys):
            logs = ask(
                f"capturedLogs {run_id} {file_key}",
                "query($key: [String!]!) { capturedLogs(logKey: $key) { stdout stderr cursor } }",
                {"key": [run_id, "compute_logs", file_key]},
            )["capturedLogs"]
            facts["logs"] += len(logs["stdout"] or "") + len(logs["stderr"] or "")
    metadata = selections.of("MetadataEntry", 2)
    assets = ask(
        "assets and their materializations",
        f"{{ assetNodes {{ assetKey {{ path }} description metadataEntries {{ {metadata} }}"
        " assetMaterializations(limit: 1000) {"
        f" {selections.of('MaterializationEvent', 2)} }}"
        " assetChecksOrError { ... on AssetChecks { checks { name description } } } } }",
    )["assetNodes"]
    facts["materializations"] = sum(len(node["assetMaterializations"]) for node in assets)
    facts["check_executions"] = 0
    execution = selections.of("AssetCheckExecution", 3)
    for node in assets:
        for check in node["assetChecksOrError"].get("checks", []):
            facts["check_executions"] += len(
                ask(
                    f"check {check['name']}",
                    "query($key: AssetKeyInput!, $name: String!) {"
                    " assetCheckExecutions(assetKey: $key, checkName: $name, limit: 100) {"
                    f" {execution} }} }}",
                    {"key": {"path": node["assetKey"]["path"]}, "name": check["name"]},
                )["assetCheckExecutions"]
            )
    workspace = ask(
        "workspace",
        "{ workspaceOrError { ... on Workspace { locationEntries { name locationOrLoadError {"
        " ... on RepositoryLocation { name repositories { name } } } } } } }",
    )
    for entry in workspace["workspaceOrError"]["locationEntries"]:
        location = entry["locationOrLoadError"]
        for repository in location["repositories"]:
            selector = {
                "repositoryName": repository["name"],
                "repositoryLocationName": location["name"],
            }
            facts["resources"] = ask(
                "resources and the sensor",
                "query($selector: RepositorySelector!) {"
                " allTopLevelResourceDetailsOrError(repositorySelector: $selector) {"
                " ... on ResourceDetailsList { results { name description configuredValues {"
                " key value type } } } }"
                " sensorsOrError(repositorySelector: $selector) { ... on Sensors { results {"
                " name description sensorState { status ticks(limit: 50) { status skipReason"
                " cursor error { message stack } } } } } } }",
                {"selector": selector},
            )["allTopLevelResourceDetailsOrError"]["results"]
    return facts


# -- the test -------------------------------------------------------------------------------------


def test_no_password_reaches_a_file_a_document_or_an_output(
    source_server: SourceServer,
    source_schema: str,
    mongo_target: MongoTarget,
    mongo_db_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    upstream = urlsplit(mongo_target.uri)
    if upstream.hostname not in ("127.0.0.1", "localhost") or upstream.port is None:
        pytest.skip("the SCRAM proxy fronts a MongoDB on 127.0.0.1 only")
    source_secret, mongo_secret = Secret("SrcPw"), Secret("MongoPw")
    wrong_source, wrong_mongo = Secret("WrongSrcPw"), Secret("WrongMongoPw")
    secrets = [source_secret, mongo_secret, wrong_source, wrong_mongo]
    outputs = Outputs()
    staging, home = tmp_path / "staging", tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(home)):
        pass  # its SQLite storage created now: the webserver and a run must not both create it
    schema = f"`{source_schema}`"
    source_server.execute(
        f"CREATE TABLE {schema}.customers (id INT PRIMARY KEY, name VARCHAR(40), note TEXT)",
        f"CREATE TABLE {schema}.visits (at DATETIME, who INT)",  # no key: row_changes only
        f"INSERT INTO {schema}.customers VALUES "
        + ", ".join(f"({i}, 'c{i}', 'n{i}')" for i in range(1, 21)),
    )
    mongo_user = f"sink_{uuid.uuid4().hex[:6]}"
    with (
        source_user(source_server, source_secret.value) as user,
        contextlib.closing(ScramProxy(upstream.port, mongo_user, mongo_secret.value)) as proxy,
    ):
        source_url = f"mysql://{user}:{source_secret.quoted}@127.0.0.1:{source_server.port}"
        mongo_uri = proxy.uri(mongo_user, mongo_secret.quoted)
        base = {k: v for k, v in os.environ.items() if not k.startswith(("CDC_", "DAGSTER_"))}
        env = {
            **base,
            "DAGSTER_HOME": str(home),
            "CDC_MYSQL_URL": source_url,
            "CDC_MONGO_URI": mongo_uri,
            "CDC_MONGO_DB": mongo_db_name,
            "CDC_MONGO_COMPAT": mongo_target.compat,
            "CDC_STAGING_DIR": str(staging),
            "CDC_INCLUDE_TABLES": f"{source_schema}.*",
            "CDC_SERVER_ID": str(random.randint(10_000, 2**31)),
            "CDC_RECONCILE_WAIT_SECONDS": "5",
        }
        wrong_url = source_url.replace(source_secret.quoted, wrong_source.quoted)
        broken = {  # the source and MongoDB both refuse a wrong password
            **env,
            "CDC_MYSQL_URL": wrong_url,
            "CDC_MONGO_URI": proxy.uri(mongo_user, wrong_mongo.quoted),
            "CDC_MONGO_RETRY_SECONDS": "1",
        }
        cdc = [sys.executable, "-m", "cdc_pipeline.cli"]
        with webserver(env, tmp_path / "webserver.log") as serving:
            # Capture (fixes where the stream starts) and a snapshot of the rows already there.
            assert run(outputs, "capture", [*cdc, "capture", "--once"], env).returncode == 0
            done = run(outputs, "snapshot", [*cdc, "snapshot", "--json"], env)
            assert done.returncode == 0, done.stderr
            # Changes, a column change that makes the loader rebuild the mirror from the
            # source, then catch_up_job as CI and cron run it.
            source_server.execute(
                f"INSERT INTO {schema}.customers VALUES (21, 'c21', 'n21'), (22, 'c22', 'n22')",
                f"UPDATE {schema}.customers SET name = 'gold' WHERE id < 5",
                f"DELETE FROM {schema}.customers WHERE id = 20",
                f"INSERT INTO {schema}.visits VALUES (NOW(), 1), (NOW(), 2)",
                f"ALTER TABLE {schema}.customers MODIFY COLUMN name VARCHAR(60)",
            )
            done = dagster_job(outputs, "catch_up_job", env)
            assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

            # Every CLI command with --json and with --debug.
            source_server.execute(f"INSERT INTO {schema}.customers VALUES (23, 'c23', 'n23')")
            after_end = str(sequence_of(list_segments(WalPaths(staging, "default"))[-1]) + 1000)
            for invocation in cli_invocations(after_end):
                run(outputs, " ".join(invocation), [*cdc, *invocation], env)

            # The daemon's part, in this process on the same instance: snapshot_job, a sensor
            # tick and the load_batch_job runs it requests, audit_job (the checks), and a tick
            # where the source refuses the password.
            for name, value in env.items():
                if name.startswith(("CDC_", "DAGSTER_HOME")):
                    monkeypatch.setenv(name, value)
            with dg.DagsterInstance.from_config(str(home)) as instance:
                run_in_process = {
                    name: defs.resolve_job_def(name) for name in ("snapshot_job", "audit_job")
                }
                assert run_in_process["snapshot_job"].execute_in_process(instance=instance).success
                source_server.execute(f"UPDATE {schema}.customers SET note = 't' WHERE id = 7")
                result = sensor_tick(instance, source_url, mongo_uri, outputs)
                assert isinstance(result, dg.SensorResult), result
                load_batch_job = defs.resolve_job_def("load_batch_job")
                for request in result.run_requests or []:
                    assert load_batch_job.execute_in_process(
                        instance=instance, partition_key=request.partition_key, tags=request.tags
                    ).success
                run_in_process["audit_job"].execute_in_process(instance=instance)
                failed_tick = sensor_tick(instance, wrong_url, mongo_uri, outputs)
                assert isinstance(failed_tick, Exception), failed_tick
            outputs.add("in-process runs", "\n".join(capfd.readouterr()))

            # Every CLI command where the source and MongoDB refuse the password, in this
            # process (one interpreter start instead of one per command; --debug tracebacks
            # printed as the interpreter prints them).
            for invocation in cli_invocations(after_end):
                name = f"refused: {' '.join(invocation)}"
                cli_in_process(outputs, name, invocation, broken, capfd)
            assert proxy.refused > 0, "the wrong MongoDB password was never tried"

            # A failing run: MongoDB's port closed (the same user and password in the URI).
            source_server.execute(f"INSERT INTO {schema}.customers VALUES (24, 'c24', 'n24')")
            dead_mongo = mongo_uri.replace(f":{proxy.port}/", f":{free_port()}/")
            failing = {**env, "CDC_MONGO_URI": dead_mongo, "CDC_MONGO_RETRY_SECONDS": "1"}
            done = dagster_job(outputs, "catch_up_job", failing)
            assert done.returncode != 0 and "catch_up_job: failed: MongoDB at" in done.stderr

            # Everything loaded in the end (the mirrors hold the pipeline's work).
            done = run(outputs, "final load", [*cdc, "load", "--pending", "--json"], env)
            assert done.returncode == 0, done.stderr
            assert proxy.logins > 0

            # The UI's answers.
            facts = graphql_answers(serving(), outputs)
        outputs.add("webserver log", (tmp_path / "webserver.log").read_bytes())
        outputs.add("the rest of this test's output", "\n".join(capfd.readouterr()))

    # The pipeline did what the test claims, so that finding nothing means something.
    statuses = facts["statuses"]
    assert sorted(statuses.get("catch_up_job", [])) == ["FAILURE", "SUCCESS"], statuses
    assert statuses.get("snapshot_job") == ["SUCCESS"], statuses
    assert statuses.get("load_batch_job") and statuses.get("audit_job"), statuses
    assert facts["events"] > 50 and facts["logs"] > 0 and facts["materializations"] > 0, facts
    assert facts["check_executions"] >= 6, facts
    with mongo_target.client() as client:
        assert client[mongo_db_name]["row_changes"].count_documents({}) > 0
        mongo_found, documents = mongo_leaks(client, secrets)
    staging_found, staging_files = tree_leaks(staging, secrets)
    home_found, home_files = tree_leaks(home, secrets)
    assert staging_files > 5 and home_files > 5 and documents > 20

    leaks = outputs.leaks(secrets) + staging_found + home_found + mongo_found
    assert leaks == [], f"{len(leaks)} leaks:\n" + "\n".join(leaks[:50])
    # The URLs were shown, redacted: a leak had its chances.
    shown = "\n".join(text for _, text in outputs.texts)
    assert f"mysql://{user}:***@127.0.0.1:{source_server.port}" in shown
    assert f"mongodb://***@127.0.0.1:{proxy.port}/{mongo_db_name}" in shown


def sensor_tick(
    instance: dg.DagsterInstance, source_url: str, mongo_uri: str, outputs: Outputs
) -> dg.SensorResult | dg.SkipReason | Exception:
    """One evaluation of ``binlog_capture_sensor`` with the daemon's part (the partitions it
    asks for are added); its result, cursor and any error (what the daemon stores for the tick)
    go to ``outputs``."""
    resources = {
        "source": SourceResource(url=source_url),
        "mongo": MongoSinkResource(uri=mongo_uri),
    }
    try:
        with dg.build_sensor_context(instance=instance, resources=resources) as context:
            result = binlog_capture_sensor(context)
    except Exception as error:
        outputs.add("sensor tick error", "".join(traceback.format_exception(error)))
        return error
    outputs.add("sensor tick", repr(result))
    if isinstance(result, dg.SensorResult):
        outputs.add("sensor cursor", result.cursor or "")
        for request in result.dynamic_partitions_requests or []:
            instance.add_dynamic_partitions("cdc_batches", list(request.partition_keys or []))
    return result  # type: ignore[return-value]


def test_the_search_finds_a_password_wherever_it_is_hidden(tmp_path: Path) -> None:
    """The search itself: a planted password is found in compressed Parquet pages, in a
    zlib-compressed SQLite blob, in plain and encoded text; and nothing is found without one."""
    import pyarrow as pa

    secret, other = Secret("SrcPw"), Secret("MongoPw")
    # Among many values, as the WAL writes them (zstd), and neither the smallest nor the largest
    # (those are also in the footer's statistics, uncompressed): not in the file's bytes.
    rows = ["".join(random.choices("abcdefgh", k=40)) for _ in range(2000)]
    rows[1000] = f"d{secret.value}"
    pq.write_table(pa.table({"v": rows}), tmp_path / "seg.parquet", compression="zstd")
    assert secret.middle.encode() not in (tmp_path / "seg.parquet").read_bytes()
    with contextlib.closing(sqlite3.connect(tmp_path / "runs.db")) as db:
        db.execute("CREATE TABLE snapshots (body BLOB)")
        db.execute("INSERT INTO snapshots VALUES (?)", (zlib.compress(secret.quoted.encode()),))
        db.commit()
    (tmp_path / "clean.txt").write_text("nothing here")
    found, files = tree_leaks(tmp_path, [secret, other])
    assert files == 3
    assert any("seg.parquet [parquet rows]: SrcPw (raw)" in leak for leak in found), found
    assert any(
        "runs.db [sqlite table snapshots]: SrcPw (percent-encoded)" in leak for leak in found
    )
    assert not any("MongoPw" in leak or "clean.txt" in leak for leak in found), found
    outputs = Outputs()
    outputs.add("json", json.dumps({"url": f"mongodb://u:{other.quoted}@h"}))
    outputs.add("escaped", other.value.replace("/", "\\/"))
    assert outputs.leaks([secret, other]) == [
        "json: MongoPw (percent-encoded)",
        "json: MongoPw (middle)",
        "escaped: MongoPw (middle)",
    ]
