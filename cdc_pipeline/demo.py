"""``make demo``: start a local MariaDB and the MongoDB stand-in, load the pipeline, stop them.

The capture and load stages are not built yet (see the README's status table): today the demo
proves the local set-up works end to end (servers start, the binlog is configured for CDC, the
Dagster code location loads) and stops everything it started. It grows with each issue.
"""

from __future__ import annotations

import sys
import time

import pymongo

from cdc_pipeline.local_servers import MariaDBServer, NxMongoServer, new_data_dir


def main() -> int:
    started = time.monotonic()
    mariadb = MariaDBServer(new_data_dir("demo-mariadb"))
    mongo = NxMongoServer(new_data_dir("demo-nx-27017"))
    try:
        mariadb.start()
        mongo.start()
        settings = mariadb.execute(
            "SELECT @@log_bin, @@binlog_format, @@binlog_row_image, @@binlog_row_metadata,"
            " @@gtid_strict_mode"
        )[0]
        with pymongo.MongoClient(mongo.uri, serverSelectionTimeoutMS=5000) as client:
            client.admin.command("ping")
        from cdc_pipeline.definitions import defs

        resources = sorted(defs.get_repository_def().get_top_level_resources())
        print(
            f"MariaDB   127.0.0.1:{mariadb.port}  log_bin/format/image/metadata/strict = {settings}"
        )
        print(f"MongoDB   {mongo.uri} (nx-27017 stand-in) answers ping")
        print(f"Dagster   code location cdc_pipeline.definitions loads; resources: {resources}")
        print("Pipeline  capture and load are not built yet; see README 'Status'.")
    finally:
        mongo.cleanup()
        mariadb.cleanup()
    print(
        f"demo finished in {time.monotonic() - started:.1f} s; every server it started is stopped"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
