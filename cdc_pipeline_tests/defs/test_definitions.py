"""The code location loads, keeps secrets in environment variables, and dagster.yaml is valid."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import yaml

from cdc_pipeline.definitions import defs

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def test_definitions_resolve_without_any_environment() -> None:
    repository = defs.get_repository_def()
    assert {"source", "mongo"} <= set(repository.get_top_level_resources())


def test_secrets_stay_out_of_the_resources_config(monkeypatch) -> None:
    monkeypatch.setenv("CDC_MYSQL_URL", "mysql://reader:s3cret-pw@db.example:3306")
    monkeypatch.setenv("CDC_MONGO_URI", "mongodb://writer:m0ngo-pw@db.example:27017")
    source, mongo = defs.resources["source"], defs.resources["mongo"]
    # Nothing configured: the secret is read from the environment when a run needs it.
    assert "s3cret-pw" not in repr(source) and "m0ngo-pw" not in repr(mongo)
    assert source.url is None and mongo.uri is None
    assert source.capture_settings().source_url.password == "s3cret-pw"


def test_instance_yaml_queues_at_most_one_loader_run_per_source(tmp_path: Path) -> None:
    shutil.copy(PROJECT_ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    instance = dg.DagsterInstance.from_config(str(tmp_path))
    try:
        config = instance.get_concurrency_config().run_queue_config
        assert isinstance(instance.run_coordinator, dg.QueuedRunCoordinator)
        assert instance.run_monitoring_enabled
    finally:
        instance.dispose()
    assert config is not None
    limits = {limit["key"]: limit for limit in config.tag_concurrency_limits}
    assert limits["cdc/loader"]["limit"] == 1
    assert limits["cdc/loader"]["value"] == {"applyLimitPerUniqueValue": True}


def test_the_postgres_instance_yaml_differs_only_in_its_storage() -> None:
    """dagster.postgres.yaml (production) and dagster.yaml (make ui, tests) keep the same queue,
    monitoring and retention; the PostgreSQL one takes every connection setting from env."""
    default = yaml.safe_load((PROJECT_ROOT / "dagster.yaml").read_text())
    postgres = yaml.safe_load((PROJECT_ROOT / "dagster.postgres.yaml").read_text())
    storage = postgres.pop("storage")
    assert postgres == default
    fields = storage["postgres"]["postgres_db"]
    assert all(set(value) == {"env"} for value in fields.values()), fields
