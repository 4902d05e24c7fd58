"""The README's "Your own servers", followed step by step against local servers, recorded.

``python -m devtools.readme_walkthrough > docs/walkthrough.md`` starts a MariaDB (configured as
step 1 says) and the mongoeco wire server (``standard`` mode, what a real MongoDB gets), then
runs the README's own statements and commands, read from README.md itself: the source user's
GRANTs (step 2, the MariaDB lines), the exports (step 4, host and port pointed at the local
servers), ``doctor`` (5), ``dagster dev`` (6), the sensor and a snapshot (7), and what step 8
says to look at. It prints a Markdown transcript: every command with its output. Every process
and server it starts is stopped by PID at the end.

Where it departs from the README, it says so in the transcript: the local MariaDB is started
with step 1's settings on its command line (no config file to edit), mongoeco has no users (step
3 is skipped; the URI has no credentials), and the local server has no TLS (no ``ssl-*``).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from devtools.local_servers import (
    MariaDBServer,
    MongoecoServer,
    _die_with_parent,
    mongoeco_python,
    new_data_dir,
    stop_process_group,
)

PROJECT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PASSWORD = "walkthrough-Pw-7"


def _block(readme: str, step: str, language: str) -> str:
    """The first ``language`` code block after the README's bold ``step`` heading."""
    start = readme.index(f"**{step}")
    match = re.search(rf"```{language}\n(.*?)```", readme[start:], re.S)
    assert match, f"no {language} block after {step}"
    return match.group(1)


def _show(title: str, command: str, output: str) -> None:
    print(f"### {title}\n\n```console\n$ {command}\n{output.rstrip()}\n```\n", flush=True)


def _run(title: str, command: str, env: dict[str, str], timeout: float = 300) -> str:
    done = subprocess.run(
        command,
        shell=True,
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    output = re.sub(r"\x1b\[[0-9;]*m", "", done.stdout + done.stderr).replace(PASSWORD, "***")
    _show(title, command, output + f"\n(exit {done.returncode})")
    return done.stdout


@contextlib.contextmanager
def _dagster_dev(env: dict[str, str], log: Path) -> Iterator[None]:
    command = [str(BIN / "dagster"), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1"]
    command += ["-p", "3377"]
    with log.open("wb") as handle:
        process = subprocess.Popen(
            command,
            cwd=PROJECT,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    try:
        yield
    finally:
        stop_process_group(process, timeout=60)


def main() -> int:
    readme = (PROJECT / "README.md").read_text()
    work = Path(tempfile.mkdtemp(prefix="cdc_walkthrough-"))
    mariadb = MariaDBServer(new_data_dir("walkthrough-db"))
    mongo = MongoecoServer(mongoeco_python(), new_data_dir("walkthrough-mongoeco"))
    print('# The README\'s "Your own servers", followed step by step (recorded run)\n')
    print(
        "Made by `python -m devtools.readme_walkthrough` on local servers: MariaDB 10.11 started"
        " with step 1's settings, and the mongoeco wire server in `standard` mode. Passwords"
        " are shown as `***`.\n"
    )
    try:
        mariadb.start()
        mongo.start()
        print(
            "**1.** The local MariaDB runs with `log_bin`, `binlog_format=ROW`,"
            " `binlog_row_image=FULL`, `binlog_row_metadata=FULL`, `gtid_strict_mode=ON` on its"
            " command line (`devtools/local_servers.py`): no config file to edit here.\n"
        )
        mariadb.execute(
            "CREATE DATABASE shop",
            "CREATE TABLE shop.orders (id INT PRIMARY KEY, customer VARCHAR(40),"
            " total DECIMAL(9,2))",
            *(f"INSERT INTO shop.orders VALUES ({i}, 'c{i}', {i}.50)" for i in range(1, 101)),
        )
        grants = [
            line.split(";")[0].replace("a-long-password", PASSWORD)
            for line in _block(readme, "2.", "sql").splitlines()
            if line.strip() and "-- MySQL" not in line
        ]
        mariadb.execute(*grants)
        shown = "\n".join(grants).replace(PASSWORD, "***")
        _show("2. the source user (the README's MariaDB lines)", "mariadb", shown)
        print("**3.** Skipped: mongoeco has no users; the URI below carries no credentials.\n")
        exports = {}
        for line in _block(readme, "4.", "bash").splitlines():
            if line.startswith("export "):
                name, _, value = line[len("export ") :].partition("=")
                exports[name] = shlex.split(value, comments=True)[0]
        exports["CDC_MYSQL_URL"] = f"mysql://cdc:{PASSWORD}@127.0.0.1:{mariadb.port}"
        exports["CDC_MONGO_URI"] = f"mongodb://127.0.0.1:{mongo.port}/?directConnection=true"
        exports["CDC_STAGING_DIR"] = str(work / "staging")
        (work / "staging").mkdir()
        print(
            "**4.** The README's exports, with `CDC_MYSQL_URL` and `CDC_MONGO_URI` pointed at the"
            " local servers (no TLS there) and `CDC_STAGING_DIR` in a temporary folder:\n\n"
            "```bash\n"
            + "\n".join(f"export {k}={shlex.quote(v)}" for k, v in exports.items()).replace(
                PASSWORD, "***"
            )
            + "\n```\n"
        )
        base = {k: v for k, v in os.environ.items() if not k.startswith(("CDC_", "DAGSTER_"))}
        env = {**base, **exports, "PATH": f"{BIN}:{os.environ['PATH']}"}
        _run("5. check", "cdc-pipeline doctor", env)
        home = work / "dagster_home"
        env["DAGSTER_HOME"] = str(home)
        _run(
            "6. Dagster's home", 'mkdir -p "$DAGSTER_HOME" && cp dagster.yaml "$DAGSTER_HOME/"', env
        )
        print("**6.** `dagster dev -w workspace.yaml -h 127.0.0.1` started in the background.\n")
        with _dagster_dev(env, work / "dagster_dev.log"):
            time.sleep(15)
            _run(
                "7. the sensor",
                "dagster sensor start binlog_capture_sensor -w workspace.yaml",
                env,
            )
            _run("7. the rows already in the tables", "cdc-pipeline snapshot", env)
            mariadb.execute(
                "UPDATE shop.orders SET total = total + 1 WHERE id <= 10",
                "DELETE FROM shop.orders WHERE id = 100",
                "INSERT INTO shop.orders VALUES (101, 'new', 1.00)",
            )
            print("New changes written to `shop.orders` (10 updates, a delete, an insert).\n")
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                done = subprocess.run(
                    ["cdc-pipeline", "status", "--json"], env=env, capture_output=True, text=True
                )
                if (
                    '"lag_transactions": 0' in done.stdout
                    and '"pending_segments": 0' in done.stdout
                ):
                    break
                time.sleep(5)
            _run("8. where to look: status", "cdc-pipeline status", env)
            _run("8. where to look: verify", "cdc-pipeline verify", env)
            _run("8. the runs the sensor launched", "dagster run list --limit 5", env)
        return 0
    finally:
        mongo.cleanup()
        mariadb.cleanup()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
