"""The broker's TLS certificate and the SCRAM users' passwords: made here for the test broker and
for compose (``python -m openlfr.kafka.credentials DIR --host kafka``), never committed.

What a directory made here holds (all PEM or one line of text):

- ``ca.pem``, ``ca.key``: a CA of its own (the key signs the broker's certificate and stays in
  this directory; no container mounts it).
- ``broker.pem``: the broker's private key (PKCS#8, unencrypted) and its certificate signed by the
  CA, with the broker's host names as subject alternative names. Kafka reads it as a PEM key
  store (``ssl.keystore.type=PEM``); the broker also presents it to its own controller listener
  (TLS with client certificates), where its principal is ``User:CN=openlfr-broker``.
- ``<user>.password``: one per user of :func:`openlfr.kafka.acls.all_users`, 32 random bytes
  (URL-safe base64: no quoting needed in JAAS lines or ``--add-scram`` arguments).
- ``admin-client.properties``: what Kafka's own tools (``kafka-topics.sh --command-config``)
  need to connect as ``openlfr-admin``.

Certificates are made with the ``openssl`` command (the ``cryptography`` package is not a
dependency). Existing files are kept: running it again adds what is missing, so removing
``broker.pem`` (or a password file) and running it again is how one is renewed (docs/operations.md).
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from openlfr.kafka.acls import ADMIN_USER, BROKER_USER, SUPER_USERS, all_users
from openlfr.kafka.security import KafkaConnection, read_password_file

logger = logging.getLogger(__name__)

#: The broker certificate's subject; its principal on the mutual-TLS controller listener.
BROKER_CN = "openlfr-broker"
BROKER_CERT_PRINCIPAL = f"User:CN={BROKER_CN}"
SCRAM_MECHANISM = "SCRAM-SHA-512"
CA_DAYS = 3650
BROKER_DAYS = 825  # what browsers and most TLS stacks still accept for a leaf certificate


class CredentialsError(RuntimeError):
    """openssl is missing or failed, or a file could not be written."""


def _openssl(*args: str, cwd: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise CredentialsError("the openssl command is not on PATH; it makes the certificates")
    result = subprocess.run([openssl, *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=60)
    if result.returncode != 0:
        raise CredentialsError(f"openssl {args[0]} failed ({result.returncode}): {result.stderr.strip()[-2000:]}")


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` readable by its owner only (``0600``)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def _san(host: str) -> str:
    parts = host.split(".")
    is_ip = len(parts) == 4 and all(p.isdigit() for p in parts)
    return f"IP:{host}" if is_ip else f"DNS:{host}"


@dataclass(frozen=True, slots=True)
class BrokerCredentials:
    """A directory of credentials (see the module's description) and what is made from it."""

    directory: Path

    @classmethod
    def create(
        cls,
        directory: Path,
        *,
        hosts: Sequence[str],
        users: Iterable[str] | None = None,
        ca_path: str | None = None,
    ) -> BrokerCredentials:
        """Make what is missing in ``directory``: the CA, the broker's certificate for ``hosts``
        and a password per user (every user of the ACL table if None); write the admin's client
        properties again (the CA at ``ca_path``, where a container sees it; here if None).

        Raises:
            CredentialsError: openssl is missing or failed.
            ValueError: no host.
        """
        if not hosts:
            raise ValueError("hosts is empty: the broker's certificate must name its host names")
        directory = Path(directory).resolve()
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)  # the files may be read by containers (bind mounts), not by others
        made = cls(directory)
        if not made.ca_file.is_file():
            _openssl(
                "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", "ca.key", "-out", "ca.pem", "-days", str(CA_DAYS), "-subj", "/CN=OpenLFR Kafka CA",
                "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                cwd=directory,
            )
            (directory / "ca.key").chmod(0o600)
            logger.info('made a Kafka CA path="%s"', made.ca_file)
        if not made.keystore.is_file():
            made._make_broker_certificate(hosts)
        for user in users if users is not None else all_users():
            path = made.password_file(user)
            if not path.is_file():
                # Read by the service's container through a bind mount, as the container's user.
                _write_private(path, secrets.token_urlsafe(32) + "\n")
                path.chmod(0o644)
        made._write_admin_client_properties(ca_path or str(made.ca_file))
        return made

    def _make_broker_certificate(self, hosts: Sequence[str]) -> None:
        d = self.directory
        extensions = (
            "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            # serverAuth for the listeners, clientAuth for the broker's own controller connection.
            "extendedKeyUsage=serverAuth,clientAuth\n"
            f"subjectAltName={','.join(_san(h) for h in hosts)}\n"
        )
        (d / "broker.ext").write_text(extensions)
        try:
            _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                     "-keyout", "broker.key", "-out", "broker.csr", "-subj", f"/CN={BROKER_CN}", cwd=d)
            _openssl("x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                     "-out", "broker.crt", "-days", str(BROKER_DAYS), "-extfile", "broker.ext", cwd=d)
            # Kafka's PEM key store: the key, then the chain (leaf first).
            self.keystore.write_text((d / "broker.key").read_text() + (d / "broker.crt").read_text()
                                     + self.ca_file.read_text())
            self.keystore.chmod(0o644)  # read by the broker's container user through a bind mount
        finally:
            for name in ("broker.key", "broker.csr", "broker.crt", "broker.ext", "ca.srl"):
                (d / name).unlink(missing_ok=True)
        logger.info('made the broker certificate path="%s" hosts="%s"', self.keystore, ",".join(hosts))

    def _write_admin_client_properties(self, ca_path: str) -> None:
        if not self.password_file(ADMIN_USER).is_file():
            return
        path = self.directory / "admin-client.properties"
        _write_private(path, java_client_properties(ADMIN_USER, self.password(ADMIN_USER).get_secret_value(), ca_path))
        path.chmod(0o644)

    # -- files ---------------------------------------------------------------------------------

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def keystore(self) -> Path:
        return self.directory / "broker.pem"

    def password_file(self, user: str) -> Path:
        return self.directory / f"{user}.password"

    def password(self, user: str) -> SecretStr:
        return read_password_file(self.password_file(user))

    # -- what is made from them ----------------------------------------------------------------

    def connection(self, bootstrap: str, user: str) -> KafkaConnection:
        """A SASL_SSL connection to ``bootstrap`` as ``user``, trusting this CA."""
        return KafkaConnection(
            bootstrap=bootstrap, security_protocol="SASL_SSL", sasl_mechanism=SCRAM_MECHANISM,
            username=user, password=self.password(user), ca_file=self.ca_file,
        )

    def scram_format_args(self, users: Iterable[str] | None = None) -> list[str]:
        """``kafka-storage format`` arguments that create the SCRAM users with the metadata log
        (``users``, or every user of the ACL table that has a password here)."""
        if users is None:
            users = [user for user in all_users() if self.password_file(user).is_file()]
        args: list[str] = []
        for user in users:
            secret = self.password(user).get_secret_value()
            args += ["--add-scram", f"{SCRAM_MECHANISM}=[name={user},password={secret}]"]
        return args


def java_client_properties(user: str, password: str, ca_path: str) -> str:
    """A Java client's properties file (``--command-config`` of Kafka's tools) for ``user``."""
    return (
        "security.protocol=SASL_SSL\n"
        f"sasl.mechanism={SCRAM_MECHANISM}\n"
        "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{user}" password="{password}";\n'
        "ssl.truststore.type=PEM\n"
        f"ssl.truststore.location={ca_path}\n"
    )


def broker_security_properties(
    *,
    client_listener: str,
    advertised: str,
    controller_listener: str,
    keystore: str,
    truststore: str,
    broker_password: str | None,
) -> dict[str, str]:
    """The broker settings of a SASL_SSL client listener, a mutual-TLS controller listener and
    ``StandardAuthorizer`` (nothing allowed that no ACL grants).

    Args:
        client_listener: ``host:port`` the client listener binds (``:9092`` for every address).
        advertised: ``host:port`` clients are told to use (a name in the certificate).
        controller_listener: ``host:port`` of the controller listener.
        keystore: Path of the broker's PEM key store (``broker.pem``), as the broker sees it.
        truststore: Path of the CA's PEM (``ca.pem``), as the broker sees it.
        broker_password: ``openlfr-broker``'s password for inter-broker SCRAM; None to leave the
            JAAS line out (compose passes it with ``--override`` at start, from a secret).
    """
    properties = {
        "listeners": f"SASL_SSL://{client_listener},CONTROLLER://{controller_listener}",
        "advertised.listeners": f"SASL_SSL://{advertised}",
        "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:SSL",
        "inter.broker.listener.name": "SASL_SSL",
        "controller.listener.names": "CONTROLLER",
        "sasl.enabled.mechanisms": SCRAM_MECHANISM,
        "sasl.mechanism.inter.broker.protocol": SCRAM_MECHANISM,
        # KRaft controllers cannot use SCRAM (the users live in the metadata they serve): the
        # controller listener takes only clients with a certificate signed by the CA.
        "listener.name.controller.ssl.client.auth": "required",
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": keystore,
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": truststore,
        "ssl.enabled.protocols": "TLSv1.3,TLSv1.2",
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found": "false",
        "super.users": ";".join([*(f"User:{u}" for u in SUPER_USERS), BROKER_CERT_PRINCIPAL]),
    }
    if broker_password is not None:
        properties["listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config"] = scram_jaas(BROKER_USER, broker_password)
    return properties


def scram_jaas(user: str, password: str) -> str:
    """The JAAS line of a SCRAM login."""
    return f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{user}" password="{password}";'


def main(argv: Sequence[str] | None = None) -> int:
    """Make (or complete) a credentials directory for compose."""
    parser = argparse.ArgumentParser(
        prog="python -m openlfr.kafka.credentials",
        description="Make the Kafka CA, the broker's certificate and a SCRAM password per user (missing ones only).",
    )
    parser.add_argument("directory", type=Path, help="e.g. deploy/compose/kafka-credentials (git-ignored)")
    parser.add_argument("--host", action="append", required=True,
                        help="a name clients use for the broker (repeat: --host kafka --host localhost)")
    parser.add_argument("--ca-path", default="/run/secrets/kafka-ca",
                        help="where the CA is inside the containers (admin-client.properties)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        made = BrokerCredentials.create(args.directory, hosts=args.host, ca_path=args.ca_path)
    except (CredentialsError, OSError) as exc:
        logger.error("%s", exc)
        return 1
    sys.stdout.write(f"{made.directory}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
