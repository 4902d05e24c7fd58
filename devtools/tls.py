"""TLS for the local source servers of the tests: certificates made here, servers started with them.

``make_certificates`` writes a CA, a server certificate for ``localhost`` signed by it, a client
certificate, and a second CA that signed nothing (for "wrong CA" cases), with the
``cryptography`` package (already a dependency, through pymysql). ``tls_source`` makes a MariaDB
or MySQL 9.7 that serves TLS with them, or that has TLS switched off (``certificates=None``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from devtools.local_servers import MariaDBServer, MySQLServer, SourceServer, new_data_dir


@dataclass(frozen=True)
class Certificates:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
    """A CA that signed nothing here."""


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    names: list[x509.GeneralName] | None = None,
    usage: x509.ObjectIdentifier | None = None,
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, issuer_key = issuer or (name, key)
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_certificates(folder: Path) -> Certificates:
    """A CA, a server certificate for localhost, a client certificate, another CA."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, other_key = _key(), _key()
    ca = _certificate("cdc_pipeline test CA", ca_key, None, ca=True)
    other = _certificate("another test CA", other_key, None, ca=True)
    issuer = (ca.subject, ca_key)
    server_key, client_key = _key(), _key()
    # localhost only, not 127.0.0.1: a URL naming the server by its address then fails
    # VERIFY_IDENTITY (a wrong host name) and passes VERIFY_CA, on one server.
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    server = _certificate(
        "localhost", server_key, issuer, names=names, usage=ExtendedKeyUsageOID.SERVER_AUTH
    )
    client = _certificate("cdc", client_key, issuer, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    paths = Certificates(
        ca=folder / "ca.pem",
        server_cert=folder / "server-cert.pem",
        server_key=folder / "server-key.pem",
        client_cert=folder / "client-cert.pem",
        client_key=folder / "client-key.pem",
        other_ca=folder / "other-ca.pem",
    )
    for certificate, path in (
        (ca, paths.ca),
        (other, paths.other_ca),
        (server, paths.server_cert),
        (client, paths.client_cert),
    ):
        path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    _write_key(server_key, paths.server_key)
    _write_key(client_key, paths.client_key)
    return paths


def tls_source(flavor: str, certificates: Certificates | None) -> SourceServer:
    """A MariaDB or MySQL 9.7 (not started) serving TLS with ``certificates``, or with TLS off
    (MariaDB 10.11 has none unless configured; MySQL is started with an empty tls_version)."""
    server: SourceServer
    if flavor == "mariadb":
        server = MariaDBServer(new_data_dir("tls-mariadb"))
        if certificates is not None:
            server.extra_args = [
                f"--ssl-ca={certificates.ca}",
                f"--ssl-cert={certificates.server_cert}",
                f"--ssl-key={certificates.server_key}",
            ]
        return server
    mysql = MySQLServer()
    if certificates is None:
        mysql.extra_args = ["--tls-version="]
        return mysql
    # mysqld runs in the chroot: the files go into its data folder, named by their inner path.
    inside = mysql.data_dir / "tls"
    inside.mkdir(parents=True, exist_ok=True)
    for source in (certificates.ca, certificates.server_cert, certificates.server_key):
        (inside / source.name).write_bytes(source.read_bytes())
    inner = f"{mysql.inner}/tls"
    mysql.extra_args = [
        f"--ssl-ca={inner}/{certificates.ca.name}",
        f"--ssl-cert={inner}/{certificates.server_cert.name}",
        f"--ssl-key={inner}/{certificates.server_key.name}",
    ]
    return mysql
