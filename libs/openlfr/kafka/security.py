"""How a client reaches the brokers: their addresses, and TLS and SASL/SCRAM when they ask for them.

Every Kafka client of the project (stage runners, the ingest publisher, topic set-up, topic
replays, audit checkpoints) builds its librdkafka settings from :func:`client_config`, which takes
either a plain ``host:port[,...]`` (no security, as in most tests) or a :class:`KafkaConnection`.
A connection prints as its addresses only: it can go into log lines and error messages, and its
password never does (``repr`` hides it too).

Protocols: ``PLAINTEXT`` (nothing), ``SSL`` (TLS; a client certificate when ``cert_file`` and
``key_file`` are given) and ``SASL_SSL`` (TLS, then a SCRAM user name and password). SASL over a
plain connection is not offered: the records would still cross the network in the clear.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import SecretStr

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_SSL"]
SaslMechanism = Literal["SCRAM-SHA-512", "SCRAM-SHA-256"]
SECURITY_PROTOCOLS: tuple[str, ...] = get_args(SecurityProtocol)
SASL_MECHANISMS: tuple[str, ...] = get_args(SaslMechanism)

#: SCRAM user names the project makes and accepts: no space, comma or '=' (SCRAM escapes those,
#: and Kafka's tools split on them), at most 128 characters.
USERNAME = re.compile(r"[A-Za-z0-9._@-]{1,128}")
_PEM_CERT = "-----BEGIN CERTIFICATE-----"


class KafkaSecurityError(ValueError):
    """A security setting is missing, contradicts another or names an unusable file."""


@dataclass(frozen=True, slots=True)
class KafkaConnection:
    """The brokers' addresses and how to authenticate to them.

    ``str(connection)`` is the addresses, so a connection can stand wherever a bootstrap string
    is printed.
    """

    bootstrap: str
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism = "SCRAM-SHA-512"
    username: str | None = None
    password: SecretStr | None = field(default=None, repr=False)
    #: PEM file of the CA(s) that signed the brokers' certificates; the system's CAs if None.
    ca_file: Path | None = None
    #: Client certificate and key (PEM) for brokers that ask for one (``ssl.client.auth``).
    cert_file: Path | None = None
    key_file: Path | None = None

    def __post_init__(self) -> None:
        check_security(
            protocol=self.security_protocol,
            mechanism=self.sasl_mechanism,
            username=self.username,
            has_password=self.password is not None and bool(self.password.get_secret_value()),
            ca_file=self.ca_file,
            cert_file=self.cert_file,
            key_file=self.key_file,
        )

    def __str__(self) -> str:
        return self.bootstrap

    @property
    def secured(self) -> bool:
        """Whether the connection uses TLS."""
        return self.security_protocol != "PLAINTEXT"

    def config(self) -> dict[str, Any]:
        """librdkafka's settings for this connection (``bootstrap.servers`` and security)."""
        config: dict[str, Any] = {"bootstrap.servers": self.bootstrap}
        if self.security_protocol == "PLAINTEXT":
            return config
        config["security.protocol"] = self.security_protocol
        # librdkafka checks the broker's host name against its certificate by default (since
        # 2.0); said here so that no site turns it off by accident through another layer.
        config["ssl.endpoint.identification.algorithm"] = "https"
        if self.ca_file is not None:
            config["ssl.ca.location"] = str(self.ca_file)
        if self.cert_file is not None and self.key_file is not None:
            config["ssl.certificate.location"] = str(self.cert_file)
            config["ssl.key.location"] = str(self.key_file)
        if self.security_protocol == "SASL_SSL":
            assert self.password is not None  # checked in __post_init__
            config["sasl.mechanism"] = self.sasl_mechanism
            config["sasl.username"] = self.username
            config["sasl.password"] = self.password.get_secret_value()
        return config

    def with_user(self, username: str, password: str) -> KafkaConnection:
        """The same brokers and CA with other SCRAM credentials (``SASL_SSL``)."""
        return KafkaConnection(
            bootstrap=self.bootstrap,
            security_protocol="SASL_SSL",
            sasl_mechanism=self.sasl_mechanism,
            username=username,
            password=SecretStr(password),
            ca_file=self.ca_file,
        )


#: What every function that opens a Kafka client takes: plain addresses or a connection.
Bootstrap = str | KafkaConnection


def client_config(target: Bootstrap) -> dict[str, Any]:
    """librdkafka's connection settings for ``target`` (a bootstrap string: no security)."""
    if isinstance(target, KafkaConnection):
        return target.config()
    return {"bootstrap.servers": target}


def check_security(
    *,
    protocol: str,
    mechanism: str,
    username: str | None,
    has_password: bool,
    ca_file: Path | None,
    cert_file: Path | None,
    key_file: Path | None,
) -> None:
    """Refuse a combination that would not connect, or would silently connect with less
    protection than its settings suggest (credentials given to a ``PLAINTEXT`` connection).

    Raises:
        KafkaSecurityError: naming the setting at fault.
    """
    if protocol not in SECURITY_PROTOCOLS:
        raise KafkaSecurityError(f"security_protocol={protocol!r}, expected one of {SECURITY_PROTOCOLS}")
    if mechanism not in SASL_MECHANISMS:
        raise KafkaSecurityError(f"sasl_mechanism={mechanism!r}, expected one of {SASL_MECHANISMS}")
    if protocol == "SASL_SSL":
        if not username:
            raise KafkaSecurityError("username is required with security_protocol=SASL_SSL")
        if not USERNAME.fullmatch(username):
            raise KafkaSecurityError("username may only hold 1 to 128 of a-z A-Z 0-9 . _ @ -")
        if not has_password:
            raise KafkaSecurityError("password is required with security_protocol=SASL_SSL")
    elif username or has_password:
        raise KafkaSecurityError(
            f"username and password are used only with security_protocol=SASL_SSL, not {protocol}"
        )
    if protocol == "PLAINTEXT" and (ca_file or cert_file or key_file):
        raise KafkaSecurityError("ca_file, cert_file and key_file need security_protocol=SSL or SASL_SSL")
    if (cert_file is None) != (key_file is None):
        raise KafkaSecurityError("cert_file and key_file go together: give both or neither")
    if ca_file is not None:
        check_pem_certificates(ca_file)
    if cert_file is not None:
        check_pem_certificates(cert_file)
    if key_file is not None:
        check_readable(key_file)


def check_readable(path: Path) -> str:
    """The text of ``path``.

    Raises:
        KafkaSecurityError: it cannot be read, or it is empty.
    """
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise KafkaSecurityError(f"cannot read {path}: {exc}") from exc
    if not text.strip():
        raise KafkaSecurityError(f"{path} is empty")
    return text


def check_pem_certificates(path: Path) -> None:
    """Raises :class:`KafkaSecurityError` unless ``path`` holds at least one PEM certificate."""
    if _PEM_CERT not in check_readable(path):
        raise KafkaSecurityError(f"{path} holds no PEM certificate ({_PEM_CERT})")


def read_password_file(path: Path) -> SecretStr:
    """The password in ``path``: its first line, without the line end.

    Raises:
        KafkaSecurityError: unreadable, empty, or the first line is empty.
    """
    first = check_readable(path).splitlines()[0]
    if not first:
        raise KafkaSecurityError(f"the first line of {path} is empty")
    return SecretStr(first)
