"""TLS to the source, against real MariaDB 10.11 and MySQL 9.7 servers serving certificates made
by ``devtools.tls`` (a CA, a server certificate for ``localhost``, a client certificate).

The matrix: ``VERIFY_IDENTITY`` with the right CA captures and loads, the binlog stream included
(its socket is TLS, and the server counts the handshakes); a wrong CA, or a URL naming the server
by an address its certificate does not name, is refused before anything is written; ``VERIFY_CA``
accepts that address; ``REQUIRED`` against a server without TLS is refused; ``DISABLED`` works
in plaintext; a user created ``REQUIRE X509`` gets in with the client certificate only.
``doctor`` says whether the session is encrypted and what it checks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from cdc_pipeline.core.audit.doctor import check_source
from cdc_pipeline.core.capture.tick import capture_once
from cdc_pipeline.core.errors import SourceUnavailableError
from cdc_pipeline.core.load.loader import run_load
from cdc_pipeline.core.mysql.binlog import BinlogReader
from cdc_pipeline.core.mysql.source import connect, encrypted, read_state, tls_session
from cdc_pipeline.core.settings import SourceUrl
from cdc_pipeline.core.wal.staging import WalPaths
from cdc_pipeline_tests.conftest import SOURCE_FLAVORS, MongoTarget, make_capture_settings
from cdc_pipeline_tests.pipeline_checks import mirror_differences
from devtools.local_servers import SourceServer
from devtools.tls import Certificates, make_certificates, tls_source

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module", params=SOURCE_FLAVORS)
def tls_server(
    request: pytest.FixtureRequest, certificates: Certificates
) -> Iterator[SourceServer]:
    server = tls_source(request.param, certificates)
    server.start()
    yield server
    server.cleanup()


def url_of(server: SourceServer, query: str, host: str = "localhost") -> SourceUrl:
    return SourceUrl.parse(f"mysql://root@{host}:{server.port}/?{query}")


def handshakes(server: SourceServer) -> int:
    return int(server.execute("SHOW GLOBAL STATUS LIKE 'Ssl_accepts'")[0][1])  # type: ignore[call-overload]


def test_verify_identity_captures_and_loads_over_tls_the_binlog_stream_included(
    tls_server: SourceServer,
    certificates: Certificates,
    mongo_target: MongoTarget,
    mongo_db_name: str,
    tmp_path: Path,
) -> None:
    url = url_of(tls_server, f"ssl-mode=VERIFY_IDENTITY&ssl-ca={certificates.ca}")
    tls_server.execute(
        "CREATE DATABASE IF NOT EXISTS tls_db",
        "CREATE TABLE IF NOT EXISTS tls_db.t (id INT PRIMARY KEY, secret VARCHAR(20))",
    )
    settings = make_capture_settings(tls_server, "tls_db", tmp_path / "staging", source_url=url)
    capture_once(settings)  # starts at the current position
    tls_server.execute("INSERT INTO tls_db.t VALUES (1, 'over tls'), (2, 'also')")
    before = handshakes(tls_server)
    while capture_once(settings).manifest is not None:
        pass
    # The capture's connections (SQL, the library's control connection, the binlog stream)
    # each made a TLS handshake with the server.
    assert handshakes(tls_server) - before >= 3
    with connect(url) as connection:
        state = read_state(connection)
    with BinlogReader(
        url, state.flavor, 4243, state.executed, lambda _schema, _table: True
    ) as reader:
        reader._fetch()
        stream = reader._stream._stream_connection
        assert encrypted(stream), "the binlog stream runs in plaintext"
    mongo = dataclasses.replace(mongo_target.settings, database=mongo_db_name)
    run_load(WalPaths(settings.staging_dir, "default"), mongo, source_url=url)
    with mongo_target.client(tz_aware=True) as client:
        sink = mongo_target.sink(client[mongo_db_name])
        assert mirror_differences(tls_server, "tls_db", sink) == []
        assert sink.database[sink.mirror("tls_db", "t")].count_documents({}) == 2
    findings = {finding.check: finding for finding in check_source(url)}
    assert findings["tls"].ok and findings["tls"].advice is None, findings["tls"]
    assert "encrypted (TLSv1" in findings["tls"].detail
    assert "naming the host" in findings["tls"].detail


@pytest.mark.parametrize(
    ("query", "host", "expected"),
    [
        ("ssl-ca={other_ca}", "localhost", "self-signed certificate in certificate chain"),
        ("ssl-mode=VERIFY_IDENTITY&ssl-ca={ca}", "127.0.0.1", "IP address mismatch"),
    ],
)
def test_a_wrong_ca_or_host_name_is_refused_before_anything_is_written(
    tls_server: SourceServer,
    certificates: Certificates,
    tmp_path: Path,
    query: str,
    host: str,
    expected: str,
) -> None:
    text = query.format(ca=certificates.ca, other_ca=certificates.other_ca)
    url = url_of(tls_server, text, host)
    with pytest.raises(SourceUnavailableError, match="TLS handshake") as refused, connect(url):
        pass
    assert expected in str(refused.value)
    settings = make_capture_settings(tls_server, "tls_db", tmp_path / "staging", source_url=url)
    with pytest.raises(SourceUnavailableError, match="TLS handshake"):
        capture_once(settings)
    assert not list((tmp_path / "staging").rglob("*.parquet"))


def test_verify_ca_accepts_an_address_the_certificate_does_not_name(
    tls_server: SourceServer, certificates: Certificates
) -> None:
    url = url_of(tls_server, f"ssl-mode=VERIFY_CA&ssl-ca={certificates.ca}", "127.0.0.1")
    with connect(url) as connection:
        assert tls_session(connection) is not None
    findings = {finding.check: finding for finding in check_source(url)}
    assert findings["tls"].advice is None
    assert "signed by the CA" in findings["tls"].detail


def test_disabled_is_plaintext_and_doctor_warns(tls_server: SourceServer) -> None:
    url = url_of(tls_server, "ssl-mode=DISABLED", "127.0.0.1")
    with connect(url) as connection:
        assert tls_session(connection) is None
    findings = {finding.check: finding for finding in check_source(url)}
    tls = findings["tls"]
    assert tls.ok and tls.advice and "not encrypted" in tls.detail


def test_preferred_encrypts_every_connection_with_one_shared_context(
    tls_server: SourceServer,
) -> None:
    """pymysql makes a TLS context per connection in PREFERRED mode (the CA store loaded each
    time); ours is made once and shared, and a mode with options still gets its own."""
    preferred = url_of(tls_server, "ssl-mode=PREFERRED", "127.0.0.1")
    with connect(preferred) as first, connect(preferred) as second:
        assert tls_session(first) is not None and tls_session(second) is not None
        assert first.ctx is second.ctx
        required = url_of(tls_server, "ssl-mode=REQUIRED", "127.0.0.1")
        with connect(required) as third:
            assert tls_session(third) is not None and third.ctx is not first.ctx


def test_a_user_required_to_show_a_client_certificate_gets_in_with_it_only(
    tls_server: SourceServer, certificates: Certificates
) -> None:
    tls_server.execute(
        "CREATE USER IF NOT EXISTS 'cdc_x509'@'%' IDENTIFIED BY 'x509-pass' REQUIRE X509",
        "GRANT SELECT ON *.* TO 'cdc_x509'@'%'",
    )
    base = f"mysql://cdc_x509:x509-pass@localhost:{tls_server.port}/?ssl-ca={certificates.ca}"
    with (
        pytest.raises(SourceUnavailableError, match="refused user"),
        connect(SourceUrl.parse(base)),
    ):
        pass
    client = f"{base}&ssl-cert={certificates.client_cert}&ssl-key={certificates.client_key}"
    with connect(SourceUrl.parse(client)) as connection:
        assert tls_session(connection) is not None


@pytest.fixture(scope="module", params=SOURCE_FLAVORS)
def plaintext_server(request: pytest.FixtureRequest) -> Iterator[SourceServer]:
    server = tls_source(request.param, None)
    server.start()
    yield server
    server.cleanup()


def test_required_against_a_server_without_tls_is_refused(plaintext_server: SourceServer) -> None:
    required = url_of(plaintext_server, "ssl-mode=REQUIRED", "127.0.0.1")
    with pytest.raises(SourceUnavailableError, match="does not offer TLS"), connect(required):
        pass
    preferred = url_of(plaintext_server, "ssl-mode=PREFERRED", "127.0.0.1")
    with connect(preferred) as connection:
        assert tls_session(connection) is None
    findings = {finding.check: finding for finding in check_source(preferred)}
    assert findings["tls"].advice and "not encrypted" in findings["tls"].detail
