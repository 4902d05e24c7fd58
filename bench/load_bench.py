"""Load throughput: rows per second from the WAL into MongoDB.

What is measured, on the WAL that capture wrote for one backlog, in separate processes, each
into a fresh database on the same MongoDB server:
    * ``product``: ``cdc_pipeline.core.load.loader.run_load`` (the path every loader takes: validate
      each segment, register schema versions, replace-upsert one ``row_changes`` document per
      row event and one mirror document per key, write the checkpoint after the data);
    * ``insert_many`` (the baseline): a bare pymongo ``insert_many`` of the same change-log
      documents (read back, untimed, from the product's ``row_changes``) in chunks of the
      product's ``BULK_CHUNK``: the least a MongoDB write of this change log can cost;
    * ``insert_many_all`` (a second reference): the same, for every document the product
      wrote: the change log and the mirror collections (and the few bookkeeping documents).

The ratio to ``insert_many`` therefore prices everything the product does beyond appending
the change log: validation, upserts instead of inserts, the mirrors and the checkpoint. The
ratio to ``insert_many_all`` leaves out the mirrors' documents, which the product must write
too, and so prices the product's own work and its upserts. Both count rows of the backlog per
second (a row is one change-log document and, for keyed tables, one mirror write).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pymongo

from bench.capture_bench import SOURCE_NAME, checked, task_timeout
from bench.child import run_child

if TYPE_CHECKING:  # the measured children import only what their loop needs
    from bench.workload import Backlog


@dataclass
class LoadRuns:
    product: list[dict[str, Any]]
    insert_many: list[dict[str, Any]]
    insert_many_all: list[dict[str, Any]]


# -- the measured tasks (run inside ``bench.child``) --------------------------------------------
def measure_product_load(arguments: dict[str, Any]) -> dict[str, Any]:
    """run_load of a private copy of the WAL (copied before timing) into a fresh database."""
    import pandas  # noqa: F401  (pyarrow may import it on the first read: keep it untimed)

    from cdc_pipeline.core.load.loader import run_load
    from cdc_pipeline.core.settings import MongoSettings
    from cdc_pipeline.core.wal.staging import WalPaths

    staging = Path(tempfile.mkdtemp(prefix="load-", dir=arguments["workdir"]))
    try:
        shutil.copytree(Path(arguments["wal_staging"]) / SOURCE_NAME, staging / SOURCE_NAME)
        settings = MongoSettings(
            uri=arguments["mongo_uri"], database=arguments["database"], compat=arguments["compat"]
        )
        started, cpu_started = time.perf_counter(), time.process_time()
        result = run_load(WalPaths(staging, SOURCE_NAME), settings)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    rows = sum(item.rows for item in result.loaded)
    return {"seconds": seconds, "cpu_seconds": cpu, "rows": rows, "segments": len(result.loaded)}


def measure_insert_many(arguments: dict[str, Any]) -> dict[str, Any]:
    """Read each of ``collections`` back a chunk at a time (untimed) and insert_many each chunk
    (timed) into the same collection of another database; ``rows`` counts the change log's
    documents (one per backlog row), ``documents`` all of them."""
    bulk_chunk = int(arguments["bulk_chunk"])
    client: pymongo.MongoClient[Any] = pymongo.MongoClient(
        arguments["mongo_uri"], serverSelectionTimeoutMS=5_000, tz_aware=True
    )
    rows = 0
    documents = 0
    timed = [0.0, 0.0]  # wall and process CPU seconds of the insert_many calls only
    with contextlib.closing(client):
        for name in arguments.get("collections", ["row_changes"]):
            source = client[arguments["documents_database"]][name]
            target = client[arguments["database"]][name]
            chunk: list[dict[str, Any]] = []
            for document in source.find({}, batch_size=bulk_chunk):
                chunk.append(document)
                if len(chunk) >= bulk_chunk:
                    _timed_insert(target, chunk, timed)
                    documents += len(chunk)
                    rows += len(chunk) if name == "row_changes" else 0
                    chunk = []
            if chunk:
                _timed_insert(target, chunk, timed)
                documents += len(chunk)
                rows += len(chunk) if name == "row_changes" else 0
    return {"seconds": timed[0], "cpu_seconds": timed[1], "rows": rows, "documents": documents}


def _timed_insert(collection: Any, documents: list[dict[str, Any]], timed: list[float]) -> None:
    started, cpu_started = time.perf_counter(), time.process_time()
    collection.insert_many(documents, ordered=True)
    timed[0] += time.perf_counter() - started
    timed[1] += time.process_time() - cpu_started


# -- the runs -------------------------------------------------------------------------------------
def bench_load(
    mongo_uri: str, compat: str, backlog: Backlog, wal_staging: Path, runs: int, workdir: Path
) -> LoadRuns:
    """``runs`` rounds: the product loads into a fresh database, then ``insert_many`` copies
    its change log into another fresh one, and ``insert_many_all`` every collection it wrote
    into a third; all are dropped after the round."""
    from cdc_pipeline.core.load.sink import BULK_CHUNK

    timeout = task_timeout(backlog.rows)
    product: list[dict[str, Any]] = []
    baseline: list[dict[str, Any]] = []
    every_document: list[dict[str, Any]] = []
    client: pymongo.MongoClient[Any] = pymongo.MongoClient(
        mongo_uri, serverSelectionTimeoutMS=5_000
    )
    with contextlib.closing(client):
        for round_number in range(runs):
            loaded = f"bench_load_{backlog.variant}_{backlog.rows}_{round_number}"
            copied = f"{loaded}_insert_many"
            copied_all = f"{loaded}_insert_many_all"
            for name in (loaded, copied, copied_all):
                client.drop_database(name)
            try:
                figures = run_child(
                    "load_product",
                    {
                        "mongo_uri": mongo_uri,
                        "database": loaded,
                        "compat": compat,
                        "wal_staging": str(wal_staging),
                        "workdir": str(workdir),
                    },
                    timeout,
                )
                product.append(checked(figures, backlog, "product load"))
                figures = run_child(
                    "load_insert_many",
                    {
                        "mongo_uri": mongo_uri,
                        "database": copied,
                        "documents_database": loaded,
                        "bulk_chunk": BULK_CHUNK,
                    },
                    timeout,
                )
                baseline.append(checked(figures, backlog, "insert_many"))
                figures = run_child(
                    "load_insert_many",
                    {
                        "mongo_uri": mongo_uri,
                        "database": copied_all,
                        "documents_database": loaded,
                        "bulk_chunk": BULK_CHUNK,
                        "collections": sorted(client[loaded].list_collection_names()),
                    },
                    timeout,
                )
                every_document.append(checked(figures, backlog, "insert_many of every document"))
            finally:
                for name in (loaded, copied, copied_all):
                    client.drop_database(name)
    return LoadRuns(product, baseline, every_document)
