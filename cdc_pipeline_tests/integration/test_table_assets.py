"""One asset per captured table: ``tables.json`` kept by capture, the source table and its
MongoDB copy in the code location's asset graph (definitions reloaded as a code-location reload
does), a materialization of each copy per load, and each table's reconciliation result as its
``matches_source`` check, failing for the one table whose mirror was damaged."""

from __future__ import annotations

import importlib
from collections.abc import Iterator

import dagster as dg
import pytest

import cdc_pipeline.definitions
from cdc_pipeline.core.capture.tick import capture_once
from cdc_pipeline.core.settings import CaptureSettings
from cdc_pipeline.core.wal.staging import WalPaths
from cdc_pipeline.core.wal.tables import seen_tables
from cdc_pipeline_tests.conftest import MongoTarget
from cdc_pipeline_tests.sensor_ticks import capture_sensor_tick
from devtools.local_servers import SourceServer

pytestmark = pytest.mark.integration


@pytest.fixture
def reloaded() -> Iterator[None]:
    """Definitions are read again after the test, under the suite's own environment."""
    yield
    importlib.reload(cdc_pipeline.definitions)


def test_each_captured_table_is_an_asset_with_loads_and_its_own_check(
    source_server: SourceServer,
    source_schema: str,
    capture_settings: CaptureSettings,
    mongo_target: MongoTarget,
    mongo_db_name: str,
    pipeline_env: WalPaths,
    monkeypatch: pytest.MonkeyPatch,
    reloaded: None,
) -> None:
    db = source_schema
    source_server.execute(
        f"CREATE TABLE `{db}`.orders (id INT PRIMARY KEY, v INT)",
        f"CREATE TABLE `{db}`.`order-lines` (id INT PRIMARY KEY, qty INT)",
        f"CREATE TABLE `{db}`.events (at INT, what VARCHAR(10))",  # no primary key
    )
    capture_once(capture_settings)
    source_server.execute(
        *(f"INSERT INTO `{db}`.orders VALUES ({i}, {i})" for i in range(1, 6)),
        *(f"INSERT INTO `{db}`.`order-lines` VALUES ({i}, {i})" for i in range(1, 4)),
        f"INSERT INTO `{db}`.events VALUES (1, 'a'), (2, 'b')",
    )
    monkeypatch.setenv("CDC_RECONCILE_WAIT_SECONDS", "2")
    with dg.instance_for_test() as instance:
        tick = capture_sensor_tick(instance, source_server, mongo_target.uri)
        assert isinstance(tick, dg.SensorResult) and tick.run_requests
        seen = {(t.schema, t.table): t.keyed for t in seen_tables(pipeline_env)}
        assert seen == {(db, "orders"): True, (db, "order-lines"): True, (db, "events"): False}
        assert pipeline_env.tables.exists()

        # A code-location reload reads the catalog: each table is a pair of assets.
        module = importlib.reload(cdc_pipeline.definitions)
        graph = module.defs.get_repository_def().asset_graph
        keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
        for table in ("orders", "order-lines", "events"):
            assert {f"default/source/{db}/{table}", f"default/mongodb/{db}/{table}"} <= keys
        copy = dg.AssetKey(["default", "mongodb", db, "orders"])
        assert graph.get(copy).parent_keys == {
            dg.AssetKey(["default", "source", db, "orders"]),
            dg.AssetKey("mongo_batch"),
        }

        job = module.defs.resolve_job_def("load_batch_job")
        for request in tick.run_requests:
            assert job.execute_in_process(
                instance=instance, partition_key=request.partition_key, tags=request.tags
            ).success
        event = instance.get_latest_materialization_event(copy)
        assert event is not None and event.asset_materialization is not None
        metadata = {k: v.value for k, v in event.asset_materialization.metadata.items()}
        assert metadata["rows applied"] == 5 and metadata["mirror documents"] == 5
        assert metadata["rows by op"] == {"insert": 5}
        assert metadata["last change gtid"] and metadata["last change committed at"]
        events = instance.get_latest_materialization_event(
            dg.AssetKey(["default", "mongodb", db, "events"])
        )
        assert events is not None and events.asset_materialization is not None
        assert "mirror documents" not in events.asset_materialization.metadata  # change log only

        with mongo_target.client() as client:
            sink = mongo_target.sink(client[mongo_db_name])
            client[mongo_db_name][sink.mirror(db, "order-lines")].delete_one({"_id": 2})
        audit = module.defs.resolve_job_def("audit_job").execute_in_process(
            instance=instance, raise_on_error=False
        )
    results = {
        (evaluation.asset_key.path[-1], evaluation.check_name): evaluation
        for evaluation in audit.get_asset_check_evaluations()
    }
    assert results[("orders", "matches_source")].passed
    broken = results[("order-lines", "matches_source")]
    assert not broken.passed and broken.severity == dg.AssetCheckSeverity.ERROR
    assert broken.metadata["missing"].value == 1
    assert ("events", "matches_source") not in results  # no mirror, no check
    assert not results[("mongo_batch", "source_sink_reconciliation")].passed
