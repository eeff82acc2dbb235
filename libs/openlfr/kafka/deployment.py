"""Kafka security as deployments need it, rendered by ``deploy/render.py``: compose's broker
(``server.properties``, the start script that creates the first users and keeps the broker's
password off every command line but the first format's), its jobs' commands, each service's
settings and secrets; Kubernetes' Strimzi ``KafkaUser`` resources and KEDA's credentials.

The users and their rights come from :mod:`openlfr.kafka.acls`, the broker's listener settings
from :func:`openlfr.kafka.credentials.broker_security_properties`, as for the test broker.
"""

from __future__ import annotations

from typing import Any

from openlfr.kafka.acls import ADMIN_USER, BROKER_USER, SERVICES, all_users, strimzi_acls, username
from openlfr.kafka.credentials import SCRAM_MECHANISM, broker_security_properties

#: Where compose mounts its secrets (``/run/secrets/<name>``).
SECRETS = "/run/secrets"
CA_SECRET = "kafka-ca"
KEYSTORE_SECRET = "kafka-broker-keystore"
ADMIN_CLIENT_SECRET = "kafka-admin-client"
#: The broker's configuration file in its container (rendered, mounted read-only).
SERVER_PROPERTIES = "/etc/openlfr/kafka/server.properties"
#: Where Kubernetes pods find their Kafka password and the cluster CA.
K8S_CREDENTIALS_DIR = "/etc/openlfr/kafka"


def password_secret(user: str) -> str:
    """Compose's secret holding ``user``'s password."""
    return f"kafka-password-{user}"


def compose_secrets(credentials_dir: str) -> dict[str, dict[str, str]]:
    """The top-level ``secrets:`` of compose: files made by ``python -m openlfr.kafka.credentials``."""
    secrets = {
        CA_SECRET: {"file": f"{credentials_dir}/ca.pem"},
        KEYSTORE_SECRET: {"file": f"{credentials_dir}/broker.pem"},
        ADMIN_CLIENT_SECRET: {"file": f"{credentials_dir}/admin-client.properties"},
    }
    for user in all_users():
        secrets[password_secret(user)] = {"file": f"{credentials_dir}/{user}.password"}
    return secrets


def compose_server_properties(*, port: int, controller_port: int) -> dict[str, str]:
    """The compose broker's settings (no secret: its SCRAM password is added at start)."""
    return {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@kafka:{controller_port}",
        **broker_security_properties(
            client_listener=f":{port}",
            advertised=f"kafka:{port}",
            controller_listener=f":{controller_port}",
            keystore=f"{SECRETS}/{KEYSTORE_SECRET}",
            truststore=f"{SECRETS}/{CA_SECRET}",
            broker_password=None,
        ),
        "log.dirs": "/var/lib/kafka/data",
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "false",
    }


def compose_broker_script(*, cluster_id: str) -> str:
    """The compose broker's start (``sh -ec``; ``$$`` is compose's escape of ``$``).

    The broker's JAAS line (its own password) is appended to a private copy of the settings by a
    shell builtin, so no process lists it. The first start formats the storage with the two super
    users (``--add-scram``: their passwords are on that command line for the seconds it runs);
    the services' users come from the ``kafka-users`` job through the admin API.
    """
    pw = "$$(head -n 1 $$S/" + password_secret("{user}") + ")"
    return "\n".join([
        "umask 077",
        f"S={SECRETS}",
        f"cp {SERVER_PROPERTIES} /tmp/server.properties",
        "printf 'listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram."
        f"ScramLoginModule required username=\"{BROKER_USER}\" password=\"%s\";\\n' "
        f"\"{pw.format(user=BROKER_USER)}\" >> /tmp/server.properties",
        f"/opt/kafka/bin/kafka-storage.sh format --ignore-formatted --cluster-id={cluster_id} "
        "--config=/tmp/server.properties "
        + " ".join(
            f"--add-scram \"{SCRAM_MECHANISM}=[name={user},password={pw.format(user=user)}]\""
            for user in (BROKER_USER, ADMIN_USER)
        ),
        "exec /opt/kafka/bin/kafka-server-start.sh /tmp/server.properties",
        "",
    ])


def compose_admin_args() -> list[str]:
    """What Kafka's tools add to connect as ``openlfr-admin``."""
    return ["--command-config", f"{SECRETS}/{ADMIN_CLIENT_SECRET}"]


def compose_provision_command(*, port: int) -> list[str]:
    """The ``kafka-users`` job: the services' SCRAM users and the ACL table (openlfr image)."""
    return [
        "python", "-m", "openlfr.kafka.provision", "--bootstrap", f"kafka:{port}",
        "--ca-file", f"{SECRETS}/{CA_SECRET}", "--password-file", f"{SECRETS}/{password_secret('{user}')}",
    ]


def compose_provision_secrets() -> list[str]:
    return [CA_SECRET, password_secret(ADMIN_USER), *(password_secret(username(name)) for name in SERVICES)]


def compose_service_env(service: str) -> dict[str, str]:
    """A service's Kafka settings in compose (its password and the CA are mounted secrets)."""
    user = username(service)
    return {
        "OPENLFR_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "OPENLFR_KAFKA_SASL_MECHANISM": SCRAM_MECHANISM,
        "OPENLFR_KAFKA_USERNAME": user,
        "OPENLFR_KAFKA_PASSWORD_FILE": f"{SECRETS}/{password_secret(user)}",
        "OPENLFR_KAFKA_CA_FILE": f"{SECRETS}/{CA_SECRET}",
    }


def compose_service_secrets(service: str) -> list[str]:
    return [CA_SECRET, password_secret(username(service))]


def k8s_service_env(service: str, *, ca_key: str) -> list[dict[str, Any]]:
    """A service's Kafka settings on Kubernetes: the password and the CA are files of
    :func:`k8s_credentials_volume` (a rotated password reaches the file without a new pod spec)."""
    return [
        {"name": "OPENLFR_KAFKA_SECURITY_PROTOCOL", "value": "SASL_SSL"},
        {"name": "OPENLFR_KAFKA_SASL_MECHANISM", "value": SCRAM_MECHANISM},
        {"name": "OPENLFR_KAFKA_USERNAME", "value": username(service)},
        {"name": "OPENLFR_KAFKA_PASSWORD_FILE", "value": f"{K8S_CREDENTIALS_DIR}/password"},
        {"name": "OPENLFR_KAFKA_CA_FILE", "value": f"{K8S_CREDENTIALS_DIR}/{ca_key}"},
    ]


def k8s_credentials_volume(service: str, *, ca_secret: str, ca_key: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The service's password (the Secret of its KafkaUser) and the cluster CA as one read-only
    volume, and its mount."""
    volume = {
        "name": "kafka-credentials",
        "projected": {
            "sources": [
                {"secret": {"name": username(service), "items": [{"key": "password", "path": "password"}]}},
                {"secret": {"name": ca_secret, "items": [{"key": ca_key, "path": ca_key}]}},
            ]
        },
    }
    return volume, {"name": "kafka-credentials", "mountPath": K8S_CREDENTIALS_DIR, "readOnly": True}


def k8s_kafka_users(*, cluster: str, labels: dict[str, str]) -> list[dict[str, Any]]:
    """One Strimzi ``KafkaUser`` per service: SCRAM-SHA-512 (the User Operator makes the password
    and the Secret of the user's name) and the service's ACLs."""
    return [
        {
            "apiVersion": "kafka.strimzi.io/v1beta2",
            "kind": "KafkaUser",
            "metadata": {"name": username(name), "labels": {"strimzi.io/cluster": cluster, **labels}},
            "spec": {
                "authentication": {"type": "scram-sha-512"},
                "authorization": {"type": "simple", "acls": strimzi_acls(name)},
            },
        }
        for name in SERVICES
    ]


def keda_trigger_authentication(service: str, *, ca_secret: str, ca_key: str, labels: dict[str, str]) -> dict[str, Any]:
    """KEDA's credentials for the lag of ``service``'s group: the service's own user (its group
    READ implies the DESCRIBE the lag needs) and the cluster CA."""
    user = username(service)
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "TriggerAuthentication",
        "metadata": {"name": f"{service}-kafka", "labels": labels},
        "spec": {
            "env": [{"parameter": "username", "name": "OPENLFR_KAFKA_USERNAME", "containerName": service}],
            "secretTargetRef": [
                {"parameter": "password", "name": user, "key": "password"},
                {"parameter": "ca", "name": ca_secret, "key": ca_key},
            ],
        },
    }
