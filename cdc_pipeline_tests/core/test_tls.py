"""``core.tls`` through ``SourceUrl.parse``: every ``ssl-*`` parameter is applied or refused with
one sentence, never ignored; the password never appears in a refusal or a redacted URL."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from cdc_pipeline.core.errors import ConfigError
from cdc_pipeline.core.settings import SourceUrl
from devtools.tls import make_certificates

BASE = "mysql://cdc:pw-Zq81@db.internal:3306/"


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    certificates = make_certificates(tmp_path_factory.mktemp("pem"))
    return {
        "ca": str(certificates.ca),
        "cert": str(certificates.client_cert),
        "key": str(certificates.client_key),
    }


@pytest.mark.parametrize(
    ("query", "mode", "verify", "hostname"),
    [
        ("", "PREFERRED", None, None),
        ("?ssl-mode=disabled", "DISABLED", None, None),
        ("?ssl-mode=REQUIRED", "REQUIRED", ssl.CERT_NONE, False),
        ("?ssl-ca={ca}", "VERIFY_CA", ssl.CERT_REQUIRED, False),
        ("?ssl-mode=VERIFY_IDENTITY&ssl-ca={ca}", "VERIFY_IDENTITY", ssl.CERT_REQUIRED, True),
        ("?ssl-cert={cert}&ssl-key={key}", "REQUIRED", ssl.CERT_NONE, False),
    ],
)
def test_modes_and_what_they_check(
    pem: dict[str, str], query: str, mode: str, verify: int | None, hostname: bool | None
) -> None:
    url = SourceUrl.parse(BASE + query.format(**pem))
    assert url.tls.mode == mode
    options = url.connect_kwargs()
    if verify is None:  # DISABLED, or pymysql's own PREFERRED (TLS if offered, unchecked)
        assert "ssl" not in options
        assert options.get("ssl_disabled", False) == (mode == "DISABLED")
    else:
        context = options["ssl"]
        assert isinstance(context, ssl.SSLContext)
        assert context.verify_mode == verify
        assert context.check_hostname is hostname
    assert "pw-Zq81" not in url.redacted() and "pw-Zq81" not in repr(url)
    assert url.redacted().startswith("mysql://cdc:***@db.internal:3306")
    assert (f"ssl-mode={mode}" in url.redacted()) == bool(query)


@pytest.mark.parametrize(
    ("query", "sentence"),
    [
        ("?sslmode=REQUIRED", "parameter 'sslmode' this tool does not take"),
        ("?ssl-mode=REQUIRED&ssl-mode=DISABLED", "gives 'ssl-mode' twice"),
        ("?ssl-mode=STRICT", "use one of DISABLED, PREFERRED"),
        ("?ssl-mode=VERIFY_CA", "without ssl-ca"),
        ("?ssl-mode=REQUIRED&ssl-ca=/nonexistent/ca.pem", "not a readable file"),
        ("?ssl-mode=DISABLED&ssl-ca={ca}", "DISABLED with certificate files"),
        ("?ssl-mode=PREFERRED&ssl-cert={cert}&ssl-key={key}", "ssl-cert with ssl-mode=PREFERRED"),
        ("?ssl-key={key}", "ssl-key without ssl-cert"),
        ("?ssl-ca={key}", "could not be loaded"),
        ("db?ssl-mode=REQUIRED", "path or fragment"),
    ],
)
def test_what_is_not_taken_is_refused_in_one_sentence(
    pem: dict[str, str], query: str, sentence: str
) -> None:
    with pytest.raises(ConfigError, match="CDC_MYSQL_URL") as refused:
        SourceUrl.parse(BASE + query.format(**pem))
    message = str(refused.value)
    assert sentence in message
    assert "pw-Zq81" not in message
    assert message.count(". ") == 0 and message.endswith(".")


def test_a_client_key_that_does_not_match_its_certificate_is_refused(tmp_path: Path) -> None:
    one, other = make_certificates(tmp_path / "one"), make_certificates(tmp_path / "other")
    query = f"?ssl-mode=REQUIRED&ssl-cert={one.client_cert}&ssl-key={other.client_key}"
    with pytest.raises(ConfigError, match="could not be loaded"):
        SourceUrl.parse(BASE + query)


def test_the_shared_preferred_context_is_pymysqls_without_the_ca_store() -> None:
    """PREFERRED connections share ``unverified_context``: it checks what pymysql's context for
    empty options checks (nothing) with the same protocol settings, and loads no CA
    certificate, the 20-60 ms pymysql spends on each of its own."""
    import pymysql

    from cdc_pipeline.core.mysql.source import unverified_context

    ours = unverified_context()
    theirs = pymysql.connections.Connection._create_ssl_ctx(None, {})
    for attribute in (
        "verify_mode",
        "check_hostname",
        "verify_flags",
        "protocol",
        "options",
        "minimum_version",
        "maximum_version",
    ):
        assert getattr(ours, attribute) == getattr(theirs, attribute), attribute
    assert ours.verify_mode == ssl.CERT_NONE and not ours.check_hostname
    assert ours.cert_store_stats()["x509_ca"] == 0
