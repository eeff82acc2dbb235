"""Who may do what on the broker: one SCRAM user per service and the least each one needs.

The one table of the project's Kafka permissions. The test broker applies it through the admin
API (:meth:`Grant.binding`), compose's ``topic-init`` job through ``kafka-acls.sh``
(:meth:`Grant.cli_args`) and Kubernetes through Strimzi ``KafkaUser`` resources
(:func:`strimzi_acls`), all rendered from :data:`SERVICES`. With ``StandardAuthorizer`` and no
``allow.everyone.if.no.acl.found``, anything not granted here is refused: a stolen ``detect``
password can read frames and write faces, but cannot write a match or read an alert.

Topics are created by the operator's admin user (compose's ``topic-init``, Strimzi's Topic
Operator, a test's admin client): no service is granted ``CREATE``, so services run with
``OPENLFR_CREATE_TOPICS=false`` on a broker with ACLs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from openlfr.kafka.admin import KafkaAdminError
from openlfr.kafka.clients import LIBRDKAFKA_LOGGER
from openlfr.kafka.replay import REPLAY_GROUP_PREFIX
from openlfr.kafka.security import Bootstrap, client_config
from openlfr.messages.topics import (
    ALERTS,
    AUDIT_CHECKPOINTS,
    DEADLETTER,
    EMBEDDINGS,
    FACES,
    FRAMES,
    MATCHES,
    TopicSpec,
)

logger = logging.getLogger(__name__)

Operation = Literal["READ", "WRITE", "DESCRIBE"]
ResourceType = Literal["TOPIC", "GROUP"]
PatternType = Literal["LITERAL", "PREFIXED"]

#: Every SCRAM user the project makes is ``openlfr-<name>``.
USER_PREFIX = "openlfr-"
#: The broker's own user (inter-broker traffic) and the operator's: both super users, no ACLs.
BROKER_USER = "openlfr-broker"
ADMIN_USER = "openlfr-admin"
SUPER_USERS = (BROKER_USER, ADMIN_USER)


@dataclass(frozen=True, slots=True)
class ServiceAccess:
    """What one service does on the broker."""

    #: Topics it consumes (in its consumer group, or read back at start).
    reads: tuple[TopicSpec, ...] = ()
    #: Topics it produces to (idempotent producers need only WRITE since Kafka 3.0, KIP-679).
    writes: tuple[TopicSpec, ...] = ()
    #: Its consumer group (``ServiceSettings.consumer_group``), if it has one.
    group: str | None = None
    #: Whether it reads topics back at start (alert state, audit checkpoints): assigned
    #: partitions under a throw-away group id with the replay prefix.
    replays: bool = False


#: The services and what each may do. A stage's ``input_topic`` and ``output_topics`` must be
#: here (tests/unit/kafka/test_acls.py checks them against the stage classes).
SERVICES: Mapping[str, ServiceAccess] = {
    "ingest": ServiceAccess(writes=(FRAMES,)),
    "detect": ServiceAccess(reads=(FRAMES,), writes=(FACES, DEADLETTER), group="openlfr-detect"),
    "embed": ServiceAccess(reads=(FACES,), writes=(EMBEDDINGS, DEADLETTER), group="openlfr-embed"),
    "match": ServiceAccess(
        reads=(EMBEDDINGS, AUDIT_CHECKPOINTS),
        writes=(MATCHES, DEADLETTER, AUDIT_CHECKPOINTS),
        group="openlfr-match",
        replays=True,
    ),
    "alert": ServiceAccess(
        reads=(MATCHES, ALERTS, AUDIT_CHECKPOINTS),
        writes=(ALERTS, DEADLETTER, AUDIT_CHECKPOINTS),
        group="openlfr-alert",
        replays=True,
    ),
}


def username(service: str) -> str:
    """The SCRAM user of a service (``openlfr-detect``)."""
    if service not in SERVICES:
        raise ValueError(f"unknown service {service!r}; expected one of {sorted(SERVICES)}")
    return USER_PREFIX + service


def all_users() -> list[str]:
    """Every SCRAM user: the super users, then one per service."""
    return [*SUPER_USERS, *(username(name) for name in SERVICES)]


@dataclass(frozen=True, slots=True, order=True)
class Grant:
    """One ALLOW rule: ``principal`` may ``operation`` on a resource, from any host."""

    principal: str
    resource_type: ResourceType
    resource_name: str
    pattern_type: PatternType
    operation: Operation

    def binding(self) -> Any:
        """As confluent-kafka's ``AclBinding`` (for ``AdminClient.create_acls``)."""
        from confluent_kafka.admin import (  # only where ACLs are applied through the admin API
            AclBinding,
            AclOperation,
            AclPermissionType,
            ResourcePatternType,
        )
        from confluent_kafka.admin import ResourceType as KafkaResourceType

        return AclBinding(
            KafkaResourceType[self.resource_type],
            self.resource_name,
            ResourcePatternType[self.pattern_type],
            self.principal,
            "*",
            AclOperation[self.operation],
            AclPermissionType.ALLOW,
        )

    def cli_args(self) -> list[str]:
        """The ``kafka-acls.sh --add`` arguments of this rule."""
        args = [
            "--add", "--allow-principal", self.principal, "--operation", self.operation.capitalize(),
            f"--{self.resource_type.lower()}", self.resource_name,
        ]
        if self.pattern_type == "PREFIXED":
            args += ["--resource-pattern-type", "prefixed"]
        return args


def service_grants(
    service: str, *, topic_name: Callable[[TopicSpec], str] = lambda spec: spec.name
) -> list[Grant]:
    """The rules of one service, sorted (``topic_name`` gives a site's actual topic names)."""
    access = SERVICES[service]
    principal = f"User:{username(service)}"
    rules: set[Grant] = set()
    for spec in access.reads:
        rules.add(Grant(principal, "TOPIC", topic_name(spec), "LITERAL", "READ"))
    for spec in access.writes:
        rules.add(Grant(principal, "TOPIC", topic_name(spec), "LITERAL", "WRITE"))
        # Producers look up the topic's metadata: WRITE implies DESCRIBE, said once for tools
        # that list ACLs per operation.
        rules.add(Grant(principal, "TOPIC", topic_name(spec), "LITERAL", "DESCRIBE"))
    if access.group is not None:
        rules.add(Grant(principal, "GROUP", access.group, "LITERAL", "READ"))
    if access.replays:
        rules.add(Grant(principal, "GROUP", REPLAY_GROUP_PREFIX, "PREFIXED", "READ"))
    return sorted(rules)


def grants(*, topic_name: Callable[[TopicSpec], str] = lambda spec: spec.name) -> list[Grant]:
    """Every service's rules."""
    return [rule for service in SERVICES for rule in service_grants(service, topic_name=topic_name)]


def table(rules: Iterable[Grant]) -> str:
    """A Markdown table of ``rules``, one row per principal and resource (for the docs)."""
    rows: dict[tuple[str, str, str], list[str]] = {}
    for rule in rules:
        name = rule.resource_name + ("*" if rule.pattern_type == "PREFIXED" else "")
        rows.setdefault((rule.principal, rule.resource_type.lower(), name), []).append(rule.operation)
    lines = ["| principal | resource | name | operations |", "| --- | --- | --- | --- |"]
    for (principal, kind, name), ops in rows.items():
        lines.append(f"| {principal} | {kind} | `{name}` | {', '.join(sorted(ops))} |")
    return "\n".join(lines)


_STRIMZI_PATTERN: dict[str, str] = {"LITERAL": "literal", "PREFIXED": "prefix"}


def strimzi_acls(service: str, *, topic_name: Callable[[TopicSpec], str] = lambda spec: spec.name) -> list[dict[str, Any]]:
    """``spec.authorization.acls`` of a Strimzi ``KafkaUser`` (type ``simple``), one entry per
    resource with its operations."""
    by_resource: dict[tuple[str, str, str], list[str]] = {}
    for rule in service_grants(service, topic_name=topic_name):
        key = (rule.resource_type.lower(), rule.resource_name, _STRIMZI_PATTERN[rule.pattern_type])
        by_resource.setdefault(key, []).append(rule.operation.capitalize())
    return [
        {"resource": {"type": kind, "name": name, "patternType": pattern}, "operations": sorted(ops), "host": "*"}
        for (kind, name, pattern), ops in sorted(by_resource.items())
    ]


def apply(admin: Bootstrap, rules: Iterable[Grant], *, timeout_s: float = 30.0) -> int:
    """Create ``rules`` on the broker as ``admin`` (a super user); creating an existing rule is
    a no-op. The number of rules sent.

    Raises:
        KafkaAdminError: the broker refused one (not authorised, no authorizer) or did not answer.
    """
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    bindings = [rule.binding() for rule in rules]
    if not bindings:
        return 0
    client = AdminClient({**client_config(admin), "logger": LIBRDKAFKA_LOGGER})
    futures = client.create_acls(bindings, request_timeout=timeout_s)
    for binding, future in futures.items():
        try:
            future.result(timeout=timeout_s)
        except (KafkaException, TimeoutError) as exc:
            raise KafkaAdminError(f"creating ACL {binding} at {admin} failed: {exc}") from exc
    logger.info('applied acls count="%d" broker="%s"', len(bindings), admin)
    return len(bindings)
