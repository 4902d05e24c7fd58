"""TLS to the source: the ``ssl-*`` parameters of CDC_MYSQL_URL, named as the MySQL client names
them (``--ssl-mode``, ``--ssl-ca``, ``--ssl-cert``, ``--ssl-key``).

Modes, as the MySQL client defines them:
    DISABLED         plaintext;
    PREFERRED        TLS when the server offers it, else plaintext; the certificate is not
                     checked (the default without any ``ssl-*`` parameter; ``doctor`` warns);
    REQUIRED         TLS or no connection; the certificate is not checked (the default with
                     only ``ssl-cert``/``ssl-key``);
    VERIFY_CA        TLS, the server's certificate signed by ``ssl-ca`` (the default with it);
    VERIFY_IDENTITY  as VERIFY_CA, and the certificate names the host of the URL.

Invariants: every parameter is either applied or refused with one sentence (an unknown name,
a repeated one, an unknown mode, a file that cannot be read, a combination the mode ignores);
the same options reach every connection to the source, SQL and binlog stream alike
(``mysql.source.open_connection``).
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from typing import Any

from cdc_pipeline.core.errors import ConfigError

SSL_MODES = ("DISABLED", "PREFERRED", "REQUIRED", "VERIFY_CA", "VERIFY_IDENTITY")
PARAMETERS = ("ssl-mode", "ssl-ca", "ssl-cert", "ssl-key")


@dataclass(frozen=True)
class SourceTls:
    """The TLS options of the source connections (``parse`` reads them from the URL)."""

    mode: str = "PREFERRED"
    ca: str = ""
    cert: str = ""
    key: str = ""
    explicit: bool = False
    """Whether the URL said anything about TLS (shown in ``redacted`` URLs only then)."""

    @property
    def required(self) -> bool:
        """Whether a connection without TLS must be refused."""
        return self.mode not in ("DISABLED", "PREFERRED")

    @property
    def check(self) -> str:
        """What is checked of the server's certificate, for ``doctor``."""
        return {
            "VERIFY_CA": f"signed by the CA in {self.ca}",
            "VERIFY_IDENTITY": f"signed by the CA in {self.ca} and naming the host",
        }.get(self.mode, "not checked")

    def query(self) -> str:
        """The URL's query string for these options ("" when the URL gave none)."""
        if not self.explicit:
            return ""
        pairs = [("ssl-mode", self.mode), ("ssl-ca", self.ca), ("ssl-cert", self.cert)]
        pairs.append(("ssl-key", self.key))
        return "/?" + "&".join(f"{name}={value}" for name, value in pairs if value)

    @classmethod
    def parse(cls, pairs: list[tuple[str, str]], variable: str) -> SourceTls:
        """The options from the URL's query parameters; ConfigError for anything not taken."""
        given: dict[str, str] = {}
        for name, value in pairs:
            if name not in PARAMETERS:
                raise ConfigError(
                    f"{variable} has a parameter '{name}' this tool does not take; the ones it"
                    f" takes are {', '.join(PARAMETERS)} (as the MySQL client names them)."
                )
            if name in given:
                raise ConfigError(f"{variable} gives '{name}' twice; give it once.")
            given[name] = value
        implied = "VERIFY_CA" if given.get("ssl-ca") else "REQUIRED" if given else "PREFERRED"
        mode = given.get("ssl-mode", implied).upper()
        if mode not in SSL_MODES:
            raise ConfigError(
                f"{variable} has ssl-mode={given['ssl-mode']}; use one of {', '.join(SSL_MODES)}."
            )
        for name in ("ssl-ca", "ssl-cert", "ssl-key"):
            path = given.get(name)
            if path is None:
                continue
            if not path or not os.path.isfile(path) or not os.access(path, os.R_OK):
                raise ConfigError(
                    f"{variable} names {name}={path or '(empty)'}, which is not a readable file;"
                    " give the path of the PEM file."
                )
        if mode == "DISABLED" and len(given) > 1:
            raise ConfigError(
                f"{variable} has ssl-mode=DISABLED with certificate files, which that mode would"
                " ignore; remove the files or choose another ssl-mode."
            )
        if mode.startswith("VERIFY") and not given.get("ssl-ca"):
            raise ConfigError(
                f"{variable} has ssl-mode={mode} without ssl-ca; add ssl-ca=<PEM file of the CA"
                " that signed the server's certificate>."
            )
        if mode == "PREFERRED" and given.get("ssl-cert"):
            raise ConfigError(
                f"{variable} has ssl-cert with ssl-mode=PREFERRED, which may connect without TLS"
                " and so without the certificate; use ssl-mode=REQUIRED or VERIFY_IDENTITY."
            )
        if given.get("ssl-key") and not given.get("ssl-cert"):
            raise ConfigError(
                f"{variable} has ssl-key without ssl-cert; give the client certificate too."
            )
        tls = cls(
            mode=mode,
            ca=given.get("ssl-ca", ""),
            cert=given.get("ssl-cert", ""),
            key=given.get("ssl-key", ""),
            explicit=bool(given),
        )
        try:
            tls.context()
        except (ssl.SSLError, OSError) as error:
            raise ConfigError(
                f"{variable}'s certificate files could not be loaded ({error.__class__.__name__}:"
                f" {getattr(error, 'reason', None) or error.strerror or 'unreadable'}); give PEM"
                " files, the key unencrypted and matching ssl-cert."
            ) from None
        return tls

    def connect_kwargs(self) -> dict[str, Any]:
        """The TLS keyword arguments of ``pymysql.connect``. Without TLS options pymysql
        itself is PREFERRED (TLS when offered, the certificate unchecked); with a context it
        refuses a server without TLS (MySQL error 2026)."""
        if self.mode == "DISABLED":
            return {"ssl_disabled": True}
        if self.mode == "PREFERRED":
            return {}
        return {"ssl": self.context()}

    def context(self) -> ssl.SSLContext:
        """The client's TLS context for this mode."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if self.mode.startswith("VERIFY"):
            context.load_verify_locations(cafile=self.ca)
            context.check_hostname = self.mode == "VERIFY_IDENTITY"
            context.verify_mode = ssl.CERT_REQUIRED
        else:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.cert:
            context.load_cert_chain(self.cert, keyfile=self.key or None)
        return context
