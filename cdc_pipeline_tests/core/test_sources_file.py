"""CDC_SOURCES_FILE: what a file means for each source, and every refusal in one sentence."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdc_pipeline.core.errors import ConfigError
from cdc_pipeline.core.settings import CaptureSettings, MongoSettings, scrub_secrets
from cdc_pipeline.core.sources_file import SourceEntry, find_source, parse_sources, read_sources

THREE = """
defaults:
  mongo_compat: nx-27017
  staging_dir: /var/lib/cdc
sources:
  - name: shop
    url_env: SHOP_URL
    include_tables: [shop.*, "shop.`a.b`"]
  - name: billing
    url_env: BILLING_URL
    server_id: 4270002
    mongo_pool: mongo_loads
  - name: crm
    url_env: CRM_URL
    mongo_db: crm_copy
    mongo_uri_env: CRM_MONGO
"""

PROCESS = {
    "SHOP_URL": "mysql://shop:shop-secret-1@127.0.0.1:3306",
    "BILLING_URL": "mysql://bill:bill-secret-2@127.0.0.1:3307",
    "CRM_URL": "mysql://crm:crm-secret-3@127.0.0.1:3308",
    "CDC_MONGO_URI": "mongodb://127.0.0.1:27017",
    "CRM_MONGO": "mongodb://crm:mongo-secret-4@127.0.0.1:27018",
    # the process's own single-source variables must not leak into any source
    "CDC_INCLUDE_TABLES": "leak.*",
    "CDC_SERVER_ID": "99",
    "CDC_MONGO_DB": "leaked",
    "CDC_MYSQL_URL": "mysql://leak:leak@127.0.0.1:1",
    "HOME": "/root",
}


def entries(text: str = THREE) -> dict[str, SourceEntry]:
    return {entry.name: entry for entry in parse_sources(text, Path("sources.yaml"))}


def test_each_source_gets_its_own_settings_and_nothing_of_the_process_variables() -> None:
    found = entries()
    assert list(found) == ["shop", "billing", "crm"]
    shop = CaptureSettings.from_env(found["shop"].environ(PROCESS))
    billing = CaptureSettings.from_env(found["billing"].environ(PROCESS))
    assert shop.source_name == "shop" and billing.source_name == "billing"
    assert shop.source_url.user == "shop" and shop.source_url.password == "shop-secret-1"
    assert billing.source_url.port == 3307
    assert shop.include_tables == ("shop.*", "shop.`a.b`")
    assert billing.include_tables == ()  # not the process's leak.*
    assert shop.server_id == 4_270_001 and billing.server_id == 4_270_002  # not 99
    assert str(shop.staging_dir) == "/var/lib/cdc"
    crm_env = found["crm"].environ(PROCESS)
    crm_mongo = MongoSettings.from_env(crm_env)
    assert crm_mongo.database == "crm_copy" and crm_mongo.uri == PROCESS["CRM_MONGO"]
    assert crm_mongo.compat == "nx-27017"
    shop_mongo = MongoSettings.from_env(found["shop"].environ(PROCESS))
    assert shop_mongo.database == "cdc_shop" and shop_mongo.uri == PROCESS["CDC_MONGO_URI"]
    assert found["billing"].mongo_pool == "mongo_loads"
    assert crm_env["HOME"] == "/root"  # everything else of the process stays


def test_a_missing_url_variable_is_named_by_its_own_name() -> None:
    shop = entries()["shop"]
    env = shop.environ({"CDC_MONGO_URI": "mongodb://127.0.0.1"})
    with pytest.raises(ConfigError, match=r"^SHOP_URL is not set"):
        CaptureSettings.from_env(env)
    env = shop.environ({"SHOP_URL": "http://x"})
    with pytest.raises(ConfigError, match=r"^SHOP_URL must look like mysql://"):
        CaptureSettings.from_env(env)


def test_the_secrets_of_every_source_are_scrubbed(tmp_path: Path) -> None:
    path = tmp_path / "sources.yaml"
    path.write_text(THREE)
    env = {**PROCESS, "CDC_SOURCES_FILE": str(path)}
    text = " ".join(PROCESS[name] for name in ("SHOP_URL", "BILLING_URL", "CRM_URL", "CRM_MONGO"))
    scrubbed = scrub_secrets(text, env, limit=10_000)
    for secret in ("shop-secret-1", "bill-secret-2", "crm-secret-3", "mongo-secret-4"):
        assert secret not in scrubbed
    assert "shop-secret-1" in scrub_secrets(text, {}, limit=10_000)  # the check can fail


def test_read_and_find_through_the_variable(tmp_path: Path) -> None:
    path = tmp_path / "sources.yaml"
    path.write_text(THREE)
    env = {"CDC_SOURCES_FILE": str(path)}
    assert [entry.name for entry in read_sources(env) or []] == ["shop", "billing", "crm"]
    assert find_source("crm", env).settings["CDC_MONGO_DB"] == "crm_copy"
    assert read_sources({}) is None
    with pytest.raises(ConfigError, match="has no source named 'nope' \\(it has: shop, billing"):
        find_source("nope", env)
    path.write_text(THREE.replace("crm_copy", "other"))  # an edited file is read again
    assert find_source("crm", env).settings["CDC_MONGO_DB"] == "other"
    with pytest.raises(ConfigError, match="cannot be read"):
        read_sources({"CDC_SOURCES_FILE": str(tmp_path / "missing.yaml")})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sources: [", "is not valid YAML at line"),
        ("{}", "needs a 'sources:' list"),
        ("sources: []", "lists no sources"),
        ("sources: [{name: a, url_env: U}]\nextra: 1", "unknown top-level keys"),
        ("sources: [{url_env: U}]", "source 1 needs a name"),
        ("sources: [{name: a-b, url_env: U}]", "needs a name of a letter"),
        ("sources: [{name: a}]", "source 'a' has no url_env"),
        ("sources: [{name: a, url: 'mysql://u:p@h'}]", "secrets stay in the environment"),
        ("sources: [{name: a, url_env: U, mongo_uri: x}]", "secrets stay in the environment"),
        ("sources: [{name: a, url_env: U, colour: red}]", "unknown key 'colour'"),
        ("sources: [{name: a, url_env: 'not a var'}]", "must name an environment variable"),
        ("sources: [{name: a, url_env: U, server_id: [1, x]}]", "must be a list of strings"),
        ("sources: [{name: a, url_env: U}, {name: a, url_env: V}]", "two sources are named 'a'"),
        (
            "sources: [{name: a, url_env: U}, {name: b, url_env: U}]",
            "read the server of U with the same server id",
        ),
        (
            "sources: [{name: a, url_env: U, mongo_db: x}, {name: b, url_env: V, mongo_db: x}]",
            "write the same MongoDB database 'x'",
        ),
        ("defaults: {name: a}\nsources: [{name: a, url_env: U}]", "defaults has an unknown key"),
    ],
)
def test_refusals_are_one_sentence_naming_the_file(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_sources(text, Path("/etc/cdc/sources.yaml"))
    sentence = str(raised.value)
    assert message in sentence
    assert sentence.startswith("CDC_SOURCES_FILE (/etc/cdc/sources.yaml)")
    assert "\n" not in sentence


def test_two_sources_on_one_server_with_their_own_ids_and_databases_are_fine() -> None:
    text = "sources: [{name: a, url_env: U, server_id: 11}, {name: b, url_env: U, server_id: 12}]"
    found = entries(text)
    assert {e.settings["CDC_MONGO_DB"] for e in found.values()} == {"cdc_a", "cdc_b"}
