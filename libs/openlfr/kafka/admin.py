"""Topic set-up and broker checks with confluent-kafka's ``AdminClient``.

Every call is bounded by its ``timeout_s``: librdkafka retries a broker that is down for ever on
its own, so each wait here is cut by a deadline and reported as an exception that names the
bootstrap address and the last error seen.

librdkafka's own log lines (``Connect to ipv4#127.0.0.1:9092 failed: Connection refused`` many
times a second while a broker is down) are expected while these functions wait, so they go to
this module's logger at DEBUG rather than to stderr.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ClusterMetadata, ConfigResource, NewTopic

from openlfr.kafka.security import Bootstrap, client_config

logger = logging.getLogger(__name__)

#: Kafka's rule for topic names (``org.apache.kafka.common.internals.Topic``).
_TOPIC_NAME = re.compile(r"[a-zA-Z0-9._-]{1,249}")
_POLL_INTERVAL_S = 0.1

#: A segment spans at most this fraction of its topic's retention (``segment.ms``).
SEGMENT_FRACTION = 10
#: ``segment.ms`` never longer than a day: long-retention topics still roll daily.
SEGMENT_MS_MAX = 24 * 3_600_000
#: ``segment.bytes`` of every topic with a retention (the broker's default is 1 GiB).
SEGMENT_BYTES = 128 * 1024 * 1024


class KafkaAdminError(RuntimeError):
    """A topic or cluster operation failed or did not finish in time."""


class BrokerUnavailableError(KafkaAdminError):
    """No broker at the bootstrap address answered a metadata request in time."""


class TopicMismatchError(KafkaAdminError):
    """A topic exists with a partition count other than the one asked for."""


class _LibrdkafkaLog:
    """Takes librdkafka's log records (syslog levels) and writes them to our logger at DEBUG."""

    def log(self, level: int, msg: str, *args: Any) -> None:
        logger.debug("librdkafka syslog_level=%d " + msg, level, *args)


def _admin_client(bootstrap: Bootstrap, **extra: Any) -> AdminClient:
    config: dict[str, Any] = {**client_config(bootstrap), "logger": _LibrdkafkaLog()}
    config.update(extra)
    return AdminClient(config)


def _metadata(client: AdminClient, timeout_s: float) -> ClusterMetadata:
    try:
        return client.list_topics(timeout=max(timeout_s, 0.001))
    finally:
        client.poll(0)  # hands the queued librdkafka log lines to _LibrdkafkaLog


def wait_for_broker(bootstrap: Bootstrap, timeout_s: float = 30.0) -> ClusterMetadata:
    """Wait until a broker at ``bootstrap`` answers a metadata request.

    Args:
        bootstrap: ``host:port[,host:port...]`` of one or more brokers, or a
            :class:`~openlfr.kafka.security.KafkaConnection` (TLS, SASL).
        timeout_s: The longest this call takes.

    Returns:
        The cluster's metadata from the first answer (brokers, topics).

    Raises:
        ValueError: ``timeout_s`` is not positive.
        BrokerUnavailableError: No answer within ``timeout_s``.
    """
    if timeout_s <= 0:
        raise ValueError(f"timeout_s={timeout_s}, expected > 0")
    deadline = time.monotonic() + timeout_s
    client = _admin_client(bootstrap)
    last_error = "no answer yet"
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BrokerUnavailableError(
                f"no Kafka broker answered at {bootstrap} within {timeout_s:.1f}s ({last_error})"
            )
        try:
            metadata = _metadata(client, remaining)
        except KafkaException as exc:
            last_error = str(exc.args[0]) if exc.args else repr(exc)
        else:
            if metadata.brokers:
                return metadata
            last_error = "metadata named no broker"
        # Some failures (an unresolvable host) come back at once; do not spin on them.
        time.sleep(min(_POLL_INTERVAL_S, max(deadline - time.monotonic(), 0)))


def _check_topic_name(name: str) -> None:
    if not _TOPIC_NAME.fullmatch(name) or name in (".", ".."):
        raise ValueError(
            f"topic name {name!r} is not a legal Kafka topic name "
            "(1 to 249 of a-z A-Z 0-9 . _ -, not '.' or '..')"
        )


def retention_config(retention_ms: int | None) -> dict[str, str]:
    """A topic's retention settings such that a record is gone in time.

    Kafka deletes whole closed segments whose newest record is older than ``retention.ms``; the
    active segment closes only after ``segment.ms`` (7 days by default) or ``segment.bytes``
    (1 GiB). With the defaults, a topic of 1 h retention that keeps receiving records keeps them
    for up to 7 days. Here a segment spans at most a tenth of the retention (at most a day) and
    128 MiB, so a record is deleted at the latest ``retention.ms + segment.ms`` after it was
    written, plus the broker's ``log.retention.check.interval.ms`` (5 min by default).

    Args:
        retention_ms: ``retention.ms`` (-1: keep for ever); None: the broker's defaults.

    Raises:
        ValueError: ``retention_ms`` is not positive and not -1.
    """
    if retention_ms is None:
        return {}
    if retention_ms == -1:
        return {"retention.ms": "-1"}
    if retention_ms <= 0:
        raise ValueError(f"retention_ms={retention_ms}, expected > 0 or -1 (no limit)")
    segment_ms = max(1, min(retention_ms // SEGMENT_FRACTION, SEGMENT_MS_MAX))
    return {
        "retention.ms": str(retention_ms),
        "segment.ms": str(segment_ms),
        "segment.bytes": str(SEGMENT_BYTES),
    }


def _warn_on_lasting_segments(
    client: AdminClient, names: list[str], wanted: Mapping[str, str], deadline: float
) -> None:
    """Warn about existing topics whose ``segment.ms`` is longer than ``wanted``'s: their
    records outlive the retention (a topic made before segments were set, or by hand)."""
    resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name in names]
    try:
        futures = client.describe_configs(
            resources, request_timeout=max(deadline - time.monotonic(), 0.001)
        )
        for resource, future in futures.items():
            entries = future.result(timeout=max(deadline - time.monotonic(), 0.001))
            entry = entries.get("segment.ms")
            if entry is None or int(entry.value) <= int(wanted["segment.ms"]):
                continue
            logger.warning(
                'topic="%s" segment_ms=%s keeps records past its retention; set it with '
                "kafka-configs.sh --alter --entity-type topics --entity-name %s "
                '--add-config segment.ms=%s,segment.bytes=%s',
                resource.name, entry.value, resource.name, wanted["segment.ms"],
                wanted["segment.bytes"],
            )
    except (KafkaException, TimeoutError, ValueError) as exc:
        logger.debug("describing topic configs failed error=%s", exc)


def _ready_partitions(metadata: ClusterMetadata, topic: str) -> int | None:
    """Partitions of ``topic`` that have a leader, or None while the topic is unknown."""
    found = metadata.topics.get(topic)
    if found is None or found.error is not None:
        return None
    return sum(1 for p in found.partitions.values() if p.error is None and p.leader >= 0)


def ensure_topics(
    bootstrap: Bootstrap,
    topics: Mapping[str, int],
    *,
    retention_ms: int | None = None,
    replication_factor: int | None = None,
    config: Mapping[str, str] | None = None,
    timeout_s: float = 30.0,
) -> list[str]:
    """Create the topics that do not exist yet and wait until every partition has a leader.

    Idempotent: a topic that exists with the asked partition count is left as it is, including its
    configuration (``retention_ms`` and ``config`` apply to topics this call creates; an existing
    topic whose segments outlast its retention is named in a warning). Two callers racing to
    create the same topic both succeed.

    Args:
        bootstrap: ``host:port[,host:port...]`` of one or more brokers, or a
            :class:`~openlfr.kafka.security.KafkaConnection`.
        topics: Partition count by topic name.
        retention_ms: ``retention.ms`` of the created topics (-1: keep for ever), with the
            ``segment.ms`` and ``segment.bytes`` that make it hold (:func:`retention_config`);
            the broker's ``log.retention.*`` defaults if None.
        replication_factor: Replicas per partition of the created topics; the broker's
            ``default.replication.factor`` if None.
        config: Further topic settings of the created topics (e.g. ``max.message.bytes``);
            they win over those from ``retention_ms``.
        timeout_s: The longest this call takes, creation and waiting together.

    Returns:
        The names of the topics this call created, sorted.

    Raises:
        ValueError: A topic name, partition count, retention or replication factor is invalid.
        BrokerUnavailableError: The broker did not answer within ``timeout_s``.
        TopicMismatchError: A topic exists with another partition count (partitions are never
            added here: that would move keys to other partitions).
        KafkaAdminError: The broker refused a creation, or the partitions had no leader in time.
    """
    for name, partitions in topics.items():
        _check_topic_name(name)
        if isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1:
            raise ValueError(f"topic {name!r}: partitions={partitions!r}, expected an int >= 1")
    topic_config = {**retention_config(retention_ms), **(config or {})}
    if replication_factor is not None and replication_factor < 1:
        raise ValueError(f"replication_factor={replication_factor}, expected >= 1")
    if timeout_s <= 0:
        raise ValueError(f"timeout_s={timeout_s}, expected > 0")
    if not topics:
        return []

    deadline = time.monotonic() + timeout_s
    metadata = wait_for_broker(bootstrap, timeout_s)
    client = _admin_client(bootstrap)
    missing = [name for name in topics if name not in metadata.topics]
    created: list[str] = []
    if missing:
        new_topics = [
            NewTopic(
                name,
                num_partitions=topics[name],
                replication_factor=-1 if replication_factor is None else replication_factor,
                config=topic_config,
            )
            for name in missing
        ]
        remaining = max(deadline - time.monotonic(), 0.001)
        futures = client.create_topics(
            new_topics, operation_timeout=remaining, request_timeout=remaining
        )
        for name, future in futures.items():
            try:
                future.result(timeout=max(deadline - time.monotonic(), 0.001))
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                if (
                    isinstance(error, KafkaError)
                    and error.code() == KafkaError.TOPIC_ALREADY_EXISTS
                ):
                    continue  # created by someone else meanwhile; its partitions are checked below
                raise KafkaAdminError(
                    f'creating topic="{name}" at {bootstrap} failed: {exc}'
                ) from exc
            except TimeoutError as exc:
                raise KafkaAdminError(
                    f'creating topic="{name}" at {bootstrap} did not finish within {timeout_s:.1f}s'
                ) from exc
            created.append(name)
        client.poll(0)
        for name in created:
            logger.info(
                'created topic="%s" partitions=%d config="%s"',
                name,
                topics[name],
                ",".join(f"{k}={v}" for k, v in sorted(topic_config.items())),
            )

    existing = sorted(set(topics) - set(missing))
    if existing and retention_ms is not None and retention_ms != -1:
        _warn_on_lasting_segments(client, existing, topic_config, deadline)

    # The controller acknowledges a creation before every broker has the new metadata; wait
    # until the partitions have leaders so that a producer started next does not see
    # UNKNOWN_TOPIC_OR_PART.
    pending = dict(topics)
    while True:
        for name, wanted in list(pending.items()):
            found = metadata.topics.get(name)
            if found is not None and found.error is None and len(found.partitions) != wanted:
                raise TopicMismatchError(
                    f'topic="{name}" at {bootstrap} has {len(found.partitions)} partitions, '
                    f"expected {wanted}"
                )
            if _ready_partitions(metadata, name) == wanted:
                del pending[name]
        if not pending:
            return sorted(created)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise KafkaAdminError(
                f"topics {sorted(pending)} at {bootstrap} had no leader for every partition "
                f"within {timeout_s:.1f}s"
            )
        time.sleep(min(_POLL_INTERVAL_S, remaining))
        try:
            metadata = _metadata(client, deadline - time.monotonic())
        except KafkaException as exc:
            raise BrokerUnavailableError(
                f"the broker at {bootstrap} stopped answering while topics were created: {exc}"
            ) from exc
