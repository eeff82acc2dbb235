"""Give the broker the project's users and rules: each service's SCRAM credentials from its password
file, and the ACL table (:mod:`openlfr.kafka.acls`), as ``openlfr-admin``.

Compose runs it at every ``up`` (service ``kafka-users``, before ``topic-init``)::

    python -m openlfr.kafka.provision --bootstrap kafka:9092 --ca-file /run/secrets/kafka-ca \\
        --password-file '/run/secrets/kafka-password-{user}'

so a password changed in its file (rotation, docs/operations.md) reaches the broker at the next
``up``; the service then restarts with it. Passwords go through the admin API
(``AlterUserScramCredentials``), never onto a command line. Re-running is harmless: an upsert sets
the same credential again and an existing ACL is not duplicated.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion
from pydantic import SecretStr

from openlfr.kafka import acls
from openlfr.kafka.admin import KafkaAdminError, wait_for_broker
from openlfr.kafka.clients import LIBRDKAFKA_LOGGER
from openlfr.kafka.security import Bootstrap, KafkaConnection, KafkaSecurityError, client_config, read_password_file

logger = logging.getLogger(__name__)

#: PBKDF2 iterations of the stored SCRAM credential (Kafka's minimum is 4096).
SCRAM_ITERATIONS = 8192


def upsert_users(admin: Bootstrap, passwords: Mapping[str, SecretStr], *, timeout_s: float = 30.0) -> list[str]:
    """Set each user's SCRAM-SHA-512 credential to its password (creating the user if new).

    Raises:
        KafkaAdminError: the broker refused one or did not answer.
    """
    if not passwords:
        return []
    client = AdminClient({**client_config(admin), "logger": LIBRDKAFKA_LOGGER})
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS)
    alterations = [
        UserScramCredentialUpsertion(user, info, password.get_secret_value().encode())
        for user, password in passwords.items()
    ]
    futures = client.alter_user_scram_credentials(alterations, request_timeout=timeout_s)
    for user, future in futures.items():
        try:
            future.result(timeout=timeout_s)
        except (KafkaException, TimeoutError) as exc:
            raise KafkaAdminError(f'setting the SCRAM credential of user="{user}" at {admin} failed: {exc}') from exc
    users = sorted(passwords)
    logger.info('scram credentials set users="%s"', ",".join(users))
    return users


def provision(
    admin: Bootstrap,
    passwords: Mapping[str, SecretStr],
    *,
    topic_prefix: str = "",
    timeout_s: float = 30.0,
) -> tuple[list[str], int]:
    """The services' users and the ACL table on the broker; (users set, rules sent)."""
    wait_for_broker(admin, timeout_s)
    users = upsert_users(admin, passwords, timeout_s=timeout_s)
    rules = acls.apply(admin, acls.grants(topic_name=lambda spec: topic_prefix + spec.name), timeout_s=timeout_s)
    return users, rules


def _passwords(pattern: str, users: Iterable[str]) -> dict[str, SecretStr]:
    return {user: read_password_file(Path(pattern.format(user=user))) for user in users}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m openlfr.kafka.provision", description=__doc__.split("\n")[0])
    parser.add_argument("--bootstrap", required=True, help="host:port of the SASL_SSL listener")
    parser.add_argument("--ca-file", type=Path, required=True, help="PEM of the CA that signed the broker")
    parser.add_argument("--password-file", required=True,
                        help="path of a user's password file, with {user} (e.g. /run/secrets/kafka-password-{user})")
    parser.add_argument("--topic-prefix", default="", help="OPENLFR_TOPIC_PREFIX of the services")
    parser.add_argument("--timeout-s", type=float, default=60.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s")
    logging.getLogger(LIBRDKAFKA_LOGGER.name).setLevel(logging.WARNING)
    if "{user}" not in args.password_file:
        parser.error("--password-file must contain {user}")
    try:
        admin = KafkaConnection(
            bootstrap=args.bootstrap, security_protocol="SASL_SSL", username=acls.ADMIN_USER,
            password=read_password_file(Path(args.password_file.format(user=acls.ADMIN_USER))), ca_file=args.ca_file,
        )
        passwords = _passwords(args.password_file, (acls.username(name) for name in acls.SERVICES))
        users, rules = provision(admin, passwords, topic_prefix=args.topic_prefix, timeout_s=args.timeout_s)
    except KafkaSecurityError as exc:
        logger.error("bad credentials file: %s", exc)
        return 2
    except KafkaAdminError as exc:
        logger.error("%s", exc)
        return 1
    sys.stdout.write(f"users={len(users)} acls={rules}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
