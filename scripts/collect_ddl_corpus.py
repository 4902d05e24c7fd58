"""Regenerate cdc_pipeline_tests/core/mysql/ddl_corpus.json from a real MariaDB and MySQL 9.7.

Starts both servers as the test fixtures do (devtools.local_servers; MySQL needs the chroot of
'make mysql-chroot'), runs every scene of the corpus on each, writes the file and stops them.
The classifier is never run here: the file holds only what the servers wrote and did.

Usage: .venv/bin/python scripts/collect_ddl_corpus.py
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cdc_pipeline_tests.integration.test_ddl_corpus_collector import (
    CORPUS_FILE,
    collect,
    write_corpus,
)
from devtools.local_servers import MariaDBServer, MySQLServer, new_data_dir


def main() -> None:
    cases = []
    for server in (MariaDBServer(new_data_dir("mariadb")), MySQLServer()):
        server.start()
        try:
            started = time.monotonic()
            collected = collect(server)
            seconds = time.monotonic() - started
            print(f"{server.flavor}: {len(collected)} statements in {seconds:.1f} s")
            cases.extend(collected)
        finally:
            server.cleanup()
    write_corpus(cases)
    print(f"wrote {CORPUS_FILE}")


if __name__ == "__main__":
    main()
