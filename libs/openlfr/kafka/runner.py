"""The Kafka loop of a consuming stage, at least once, and the producer-only ``Publisher``.

``StageRunner`` runs one :class:`~openlfr.pipeline.stage.Stage`: poll a batch, decode it,
hand it to the stage, produce the outputs and the dead letters, flush and check that every
delivery was acknowledged, and only then commit the batch's offsets (quix-streams' checkpoint:
flush the producer, then commit). What can go wrong, and what happens:

* a value that is not a valid message (empty, not JSON, wrong schema): a ``DeadLetter`` record
  with the reason and the origin goes to the dead-letter topic; the batch goes on;
* the stage rejects an input (``BatchResult.rejected``): dead-lettered with the stage's reason;
* the stage raises ``BackendUnavailable`` or a delivery fails: the partitions are paused, the
  runner backs off (exponential, bounded), seeks back to the batch's first offsets and retries;
  nothing is committed and nothing dropped meanwhile;
* the stage raises anything else: logged with the traceback, every input of the batch is
  dead-lettered with the error text, and the batch is committed (the stage stays up).

Offsets are committed per partition as ``last offset + 1``, but never beyond the stage's
``BatchResult.hold`` and never backwards. ``hold`` is read as the stage's whole state after the
batch: a partition it does not name holds nothing.

Metrics use ``prometheus_client`` with an injectable registry; labels are only stage, topic,
partition (bounded by the topic), outcome and reason.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import (
    OFFSET_INVALID,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka import Message as KafkaMessage
from confluent_kafka.admin import AdminClient
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from openlfr.messages.codec import DecodeError, decode, encode, headers_for
from openlfr.messages.models import DeadLetter, Message
from openlfr.messages.topics import DEADLETTER, TopicSpec
from openlfr.pipeline.exceptions import BackendUnavailable
from openlfr.pipeline.stage import BatchResult, Incoming, Outgoing, Stage

logger = logging.getLogger(__name__)

#: librdkafka's own log lines go here (via the client's ``logger`` setting), not to stderr.
_LIBRDKAFKA_LOGGER = logging.getLogger("openlfr.kafka.librdkafka")

_FLUSH_MARGIN_S = 2.0
_STOP_CHECK_S = 0.05
_REASON_MAX = 4000  # DeadLetter.reason's max_length
_HEADER_REASON_MAX = 1000

#: Producer settings shared by ``StageRunner`` and ``Publisher``: every output acknowledged by
#: all in-sync replicas, no duplicates from the producer's own retries, small batching delay.
#: lz4 is built into the librdkafka of the confluent-kafka wheels.
PRODUCER_DEFAULTS: dict[str, Any] = {
    "acks": "all",
    "enable.idempotence": True,
    "linger.ms": 5,
    "compression.type": "lz4",
}


# -- pure logic -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff, bounded: ``min(max_s, initial_s * factor ** attempt)``.

    Attributes:
        initial_s: The first delay (attempt 0).
        max_s: No delay is longer.
        factor: Growth per attempt.
    """

    initial_s: float = 0.2
    max_s: float = 30.0
    factor: float = 2.0

    def __post_init__(self) -> None:
        if self.initial_s <= 0:
            raise ValueError(f"initial_s={self.initial_s}, expected > 0")
        if self.max_s < self.initial_s:
            raise ValueError(f"max_s={self.max_s}, expected >= initial_s={self.initial_s}")
        if self.factor < 1:
            raise ValueError(f"factor={self.factor}, expected >= 1")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (0 for the first retry)."""
        if attempt < 0:
            raise ValueError(f"attempt={attempt}, expected >= 0")
        # Capped exponent: factor ** attempt overflows a float long before attempts run out.
        exponent = min(attempt, 1024)
        try:
            value = self.initial_s * self.factor**exponent
        except OverflowError:
            return self.max_s
        return min(self.max_s, value)


def next_offsets(offsets: Iterable[tuple[int, int]]) -> dict[int, int]:
    """Per partition, the offset after the highest of ``(partition, offset)`` pairs."""
    result: dict[int, int] = {}
    for partition, offset in offsets:
        if offset < 0:
            raise ValueError(f"partition {partition}: offset={offset}, expected >= 0")
        result[partition] = max(result.get(partition, 0), offset + 1)
    return result


def commit_targets(
    *,
    acked: Mapping[int, int],
    hold: Mapping[int, int],
    committed: Mapping[int, int],
) -> dict[int, int]:
    """The offsets to commit now, per partition.

    Args:
        acked: Per partition, the offset after the last input whose outputs are acknowledged.
        hold: Per partition, the lowest offset the stage still needs (commit no further).
        committed: Per partition, the offset committed (or started from): never go below it.

    Returns:
        Only the partitions whose commit would move forward.
    """
    targets: dict[int, int] = {}
    for partition, after in acked.items():
        target = min(after, hold[partition]) if partition in hold else after
        floor = committed.get(partition)
        if floor is not None and target <= floor:
            continue
        targets[partition] = target
    return targets


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return value.decode("utf-8", errors="replace")


def dead_letter_record(
    *,
    stage: str,
    reason: str,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | str | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | str | None]] | None,
    failed_ts: float,
) -> DeadLetter:
    """The dead-letter record of one input: why it failed, where it came from, its bytes.

    The reason is cut to what ``DeadLetter`` allows; header values become text (undecodable
    bytes replaced); a missing value is kept as empty bytes.
    """
    if len(reason) > _REASON_MAX:
        reason = reason[: _REASON_MAX - 3] + "..."
    return DeadLetter(
        stage=stage,
        reason=reason,
        topic=topic,
        partition=partition,
        offset=offset,
        key=key.encode("utf-8") if isinstance(key, str) else key,
        value=value or b"",
        headers={name: _text(val) for name, val in (headers or ())},
        failed_ts=failed_ts,
    )


def dead_letter_headers(record: DeadLetter) -> list[tuple[str, bytes]]:
    """Headers of a dead-letter record: the error and its origin, readable without parsing."""
    reason = record.reason.encode("utf-8")[:_HEADER_REASON_MAX]
    return [
        *headers_for(record),
        ("stage", record.stage.encode("utf-8")),
        ("error", reason),
        ("origin", f"{record.topic}[{record.partition}]@{record.offset}".encode()),
    ]


def _err_name(error: KafkaError) -> str:
    return f"{error.name()}: {error.str()}"


# -- metrics ----------------------------------------------------------------------------------

_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300)


class StageMetrics:
    """The runner's metrics in one registry (one set per registry, shared by its runners)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.messages_in = Counter(
            "openlfr_stage_messages_in_total",
            "Messages consumed, valid or not (a batch read again after a retry counts again).",
            ["stage", "topic"], registry=registry,
        )
        self.messages_out = Counter(
            "openlfr_stage_messages_out_total", "Outputs whose delivery was acknowledged.",
            ["stage", "topic"], registry=registry,
        )
        self.dead_lettered = Counter(
            "openlfr_stage_messages_dead_lettered_total",
            "Inputs sent to the dead-letter topic (decode, rejected, handler_error).",
            ["stage", "reason"], registry=registry,
        )
        self.failed = Counter(
            "openlfr_stage_messages_failed_total",
            "Messages that failed: delivery (not acknowledged, retried) or handler_error.",
            ["stage", "reason"], registry=registry,
        )
        self.dropped = Counter(
            "openlfr_stage_messages_dropped_total", "Inputs the stage dropped on purpose.",
            ["stage", "reason"], registry=registry,
        )
        self.retries = Counter(
            "openlfr_stage_backend_retries_total",
            "Batches retried after backend_unavailable or a delivery failure.",
            ["stage", "reason"], registry=registry,
        )
        self.batches = Counter(
            "openlfr_stage_batches_total", "Batches by outcome (ok, retry, handler_error).",
            ["stage", "outcome"], registry=registry,
        )
        self.commits = Counter(
            "openlfr_stage_commits_total", "Offset commits by outcome (ok, failed).",
            ["stage", "outcome"], registry=registry,
        )
        self.batch_size = Histogram(
            "openlfr_stage_batch_size_messages", "Messages per consumed batch.",
            ["stage"], buckets=_BATCH_BUCKETS, registry=registry,
        )
        self.handle_seconds = Histogram(
            "openlfr_stage_handle_seconds", "Time in Stage.handle per batch.",
            ["stage"], buckets=_SECONDS_BUCKETS, registry=registry,
        )
        self.latency = Histogram(
            "openlfr_stage_latency_seconds",
            "From the frame's capture_ts to the acknowledged publication of an output.",
            ["stage"], buckets=_LATENCY_BUCKETS, registry=registry,
        )
        self.lag = Gauge(
            "openlfr_stage_consumer_lag_messages",
            "High watermark minus the consumer's position, per assigned partition.",
            ["stage", "topic", "partition"], registry=registry,
        )


class PublisherMetrics:
    """The publisher's metrics in one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.messages = Counter(
            "openlfr_publisher_messages_total",
            "Published messages by outcome (delivered, failed, dropped_queue_full).",
            ["topic", "outcome"], registry=registry,
        )
        self.latency = Histogram(
            "openlfr_publisher_latency_seconds",
            "From the message's capture_ts to its acknowledged publication.",
            ["topic"], buckets=_LATENCY_BUCKETS, registry=registry,
        )


_METRICS: weakref.WeakKeyDictionary[CollectorRegistry, dict[type, Any]] = (
    weakref.WeakKeyDictionary()
)
_METRICS_LOCK = threading.Lock()


def _metrics(kind: type, registry: CollectorRegistry | None) -> Any:
    """One metrics set of ``kind`` per registry: a second runner in a process reuses it."""
    registry = REGISTRY if registry is None else registry
    with _METRICS_LOCK:
        sets = _METRICS.setdefault(registry, {})
        if kind not in sets:
            sets[kind] = kind(registry)
        return sets[kind]


def _capture_ts(message: object) -> float | None:
    return message.capture_ts if isinstance(message, Message) else None


# -- the runner -------------------------------------------------------------------------------


class _Deliveries:
    """Delivery reports of one batch's produce calls."""

    def __init__(self) -> None:
        self.sent = 0
        self.acknowledged = 0
        self.errors: list[str] = []


class StageRunner:
    """Runs one stage over Kafka, at least once. Call :meth:`run` in one thread; any thread may
    call :meth:`request_stop`, :meth:`assigned_partitions` and :meth:`broker_reachable`.
    """

    def __init__(
        self,
        stage: Stage,
        *,
        bootstrap: str,
        group_id: str,
        topic_names: Mapping[TopicSpec, str] | None = None,
        batch_size: int = 16,
        poll_timeout_s: float = 0.5,
        backoff: Backoff | None = None,
        flush_timeout_s: float = 30.0,
        session_timeout_s: float = 10.0,
        lag_interval_s: float = 5.0,
        registry: CollectorRegistry | None = None,
        consumer_config: Mapping[str, Any] | None = None,
        producer_config: Mapping[str, Any] | None = None,
    ) -> None:
        """Describe the runner; the clients are made at :meth:`run`.

        Args:
            stage: The stage to run.
            bootstrap: ``host:port[,host:port...]`` of the brokers.
            group_id: The consumer group.
            topic_names: The actual name of a topic, by spec (``spec.name`` when absent).
            batch_size: Most messages per batch (1..1024).
            poll_timeout_s: Longest wait for a batch; also bounds how late a stop is noticed.
            backoff: Delays between retries of a batch (backend down, delivery failed).
            flush_timeout_s: Longest wait for delivery reports; also the producer's
                ``delivery.timeout.ms``, so every report is in by then.
            session_timeout_s: The group's session timeout (how soon a dead replica's
                partitions move to another).
            lag_interval_s: The lag gauge is refreshed at most this often.
            registry: Where the metrics go (prometheus_client's default if None).
            consumer_config: Further librdkafka consumer settings (override the defaults).
            producer_config: Further librdkafka producer settings (override the defaults).
        """
        if not 1 <= batch_size <= 1024:
            raise ValueError(f"batch_size={batch_size}, expected 1..1024")
        if poll_timeout_s <= 0:
            raise ValueError(f"poll_timeout_s={poll_timeout_s}, expected > 0")
        if flush_timeout_s <= 0:
            raise ValueError(f"flush_timeout_s={flush_timeout_s}, expected > 0")
        if session_timeout_s <= 0:
            raise ValueError(f"session_timeout_s={session_timeout_s}, expected > 0")
        self.stage = stage
        self.bootstrap = bootstrap
        self.group_id = group_id
        self._topic_names = dict(topic_names or {})
        self.batch_size = batch_size
        self.poll_timeout_s = poll_timeout_s
        self.backoff = backoff or Backoff()
        self.flush_timeout_s = flush_timeout_s
        self.lag_interval_s = lag_interval_s
        self.metrics: StageMetrics = _metrics(StageMetrics, registry)
        self.input_topic = self.topic_name(stage.input_topic)
        self.deadletter_topic = self.topic_name(DEADLETTER)

        self._consumer_config: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "group.id": group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": int(session_timeout_s * 1000),
            "client.id": f"openlfr-{stage.name}",
            "logger": _LIBRDKAFKA_LOGGER,
        }
        self._consumer_config.update(consumer_config or {})
        self._producer_config: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            **PRODUCER_DEFAULTS,
            "delivery.timeout.ms": int(flush_timeout_s * 1000),
            "client.id": f"openlfr-{stage.name}",
            "logger": _LIBRDKAFKA_LOGGER,
        }
        self._producer_config.update(producer_config or {})

        # A plain flag, not an Event: setting it takes no lock, so a signal handler that
        # interrupts the loop's own thread cannot deadlock on it.
        self._stop_requested = False
        self._lock = threading.Lock()
        self._probe: AdminClient | None = None
        self._assigned: frozenset[int] = frozenset()
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        # Per input partition: offset after the last acknowledged input, the last committed
        # offset (or the first offset seen, which is where the group's position was), and the
        # stage's latest hold.
        self._acked: dict[int, int] = {}
        self._committed: dict[int, int] = {}
        self._hold: dict[int, int] = {}
        self._attempt = 0
        self._lag_due = 0.0
        self._lag_partitions: set[int] = set()
        self._broker_check: tuple[float, bool, str] = (0.0, False, "not checked yet")

    # -- public API ----------------------------------------------------------------------------

    def topic_name(self, spec: TopicSpec) -> str:
        """The actual name of a topic."""
        return self._topic_names.get(spec, spec.name)

    def request_stop(self) -> None:
        """Ask :meth:`run` to stop after the batch in flight (thread- and signal-safe)."""
        self._stop_requested = True

    @property
    def stopping(self) -> bool:
        """Whether a stop was requested."""
        return self._stop_requested

    def assigned_partitions(self) -> frozenset[int]:
        """The input partitions this replica owns now."""
        with self._lock:
            return self._assigned

    def committed_offsets(self) -> dict[int, int]:
        """What this runner committed (or started from), by input partition."""
        with self._lock:
            return dict(self._committed)

    def broker_reachable(self, *, timeout_s: float = 1.0, cache_s: float = 2.0) -> tuple[bool, str]:
        """Whether the broker answers a metadata request for the input topic (cached briefly,
        so readiness probes do not flood the broker)."""
        checked, ok, reason = self._broker_check
        if time.monotonic() - checked < cache_s:
            return ok, reason
        if self._consumer is None:
            return False, "consumer not started"
        if self._probe is None:
            # A client of its own: a metadata request on the consumer's handle from this
            # (HTTP) thread waits behind the consumer's own calls, for tens of seconds.
            self._probe = AdminClient({"bootstrap.servers": self.bootstrap})
        try:
            metadata = self._probe.list_topics(topic=self.input_topic, timeout=timeout_s)
            topic = metadata.topics.get(self.input_topic)
            if not metadata.brokers:
                ok, reason = False, "no broker in metadata"
            elif topic is None or topic.error is not None:
                error = topic.error if topic is not None else "not in metadata"
                ok, reason = False, f'topic="{self.input_topic}" unavailable: {error}'
            else:
                ok, reason = True, "ok"
        except (KafkaException, RuntimeError) as exc:
            ok, reason = False, f"no answer from {self.bootstrap}: {exc}"
        self._broker_check = (time.monotonic(), ok, reason)
        return ok, reason

    def run(self) -> None:
        """Consume and process until :meth:`request_stop`; then commit, close and return.

        Raises:
            KafkaException: A fatal client error (the service should exit and restart).
        """
        try:
            self._consumer = Consumer(self._consumer_config)
            self._producer = Producer(self._producer_config)
            self._consumer.subscribe(
                [self.input_topic],
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
            logger.info(
                'stage="%s" consuming topic="%s" group="%s" batch_size=%d',
                self.stage.name, self.input_topic, self.group_id, self.batch_size,
            )
            while not self._stop_requested:
                messages = self._consumer.consume(
                    num_messages=self.batch_size, timeout=self.poll_timeout_s
                )
                if messages:
                    self._process(messages)
                self._producer.poll(0)
                self._refresh_lag()
        finally:
            self._shutdown()

    # -- the batch -----------------------------------------------------------------------------

    def _process(self, messages: list[KafkaMessage]) -> None:
        stage = self.stage.name
        now = time.time()
        valid: list[Incoming] = []
        raw: dict[tuple[int, int], KafkaMessage] = {}
        letters: list[tuple[DeadLetter, str]] = []  # (record, metric reason)
        first: dict[int, int] = {}
        for message in messages:
            error = message.error()
            if error is not None:
                self._kafka_error(error)
                continue
            partition, offset = message.partition(), message.offset()
            first.setdefault(partition, offset)
            raw[(partition, offset)] = message
            self.metrics.messages_in.labels(stage, self.input_topic).inc()
            try:
                value = decode(message.value(), self.stage.input_model)
            except DecodeError as exc:
                logger.warning(
                    'stage="%s" dead-letter partition="%s[%d]" offset="%d" reason="%s"',
                    stage, self.input_topic, partition, offset, exc,
                )
                letters.append((self._letter(message, str(exc), now), "decode"))
                continue
            valid.append(Incoming(message=value, partition=partition, offset=offset))
        if not raw:
            return
        self.metrics.batch_size.labels(stage).observe(len(raw))

        result: BatchResult | None = None
        if valid:
            started = time.perf_counter()
            try:
                result = self.stage.handle(valid, now=now)
            except BackendUnavailable as exc:
                self.metrics.handle_seconds.labels(stage).observe(time.perf_counter() - started)
                self._retry(first, reason="backend_unavailable", detail=str(exc))
                return
            except Exception as exc:  # noqa: BLE001 - any other failure: dead-letter the batch
                self.metrics.handle_seconds.labels(stage).observe(time.perf_counter() - started)
                logger.exception(
                    'stage="%s" handler failed; dead-lettering the batch messages=%d error="%s"',
                    stage, len(valid), exc,
                )
                text = f"handler error: {type(exc).__name__}: {exc}"
                for incoming in valid:
                    letter = self._letter(raw[(incoming.partition, incoming.offset)], text, now)
                    letters.append((letter, "handler_error"))
            else:
                self.metrics.handle_seconds.labels(stage).observe(time.perf_counter() - started)
                for incoming, reason in result.rejected:
                    logger.warning(
                        'stage="%s" rejected partition="%s[%d]" offset="%d" reason="%s"',
                        stage, self.input_topic, incoming.partition, incoming.offset, reason,
                    )
                    source = raw.get((incoming.partition, incoming.offset))
                    if source is None:
                        raise ValueError(
                            f"stage {stage!r} rejected partition {incoming.partition} offset "
                            f"{incoming.offset}, which is not in the batch"
                        )
                    letters.append((self._letter(source, reason, now), "rejected"))

        deliveries = self._publish(result.outputs if result else [], letters)
        if deliveries.errors:
            self._retry(first, reason="delivery", detail="; ".join(deliveries.errors[:3]))
            return

        # Acknowledged: now the batch counts.
        outcome = "ok" if result is not None or not valid else "handler_error"
        self.metrics.batches.labels(stage, outcome).inc()
        for _, reason in letters:
            self.metrics.dead_lettered.labels(stage, reason).inc()
            if reason == "handler_error":
                self.metrics.failed.labels(stage, "handler_error").inc()
        if result is not None:
            for reason, count in result.dropped.items():
                if count:
                    self.metrics.dropped.labels(stage, reason).inc(count)
            self._hold = dict(result.hold)
        self._attempt = 0
        with self._lock:
            for partition, after in next_offsets(raw).items():
                self._acked[partition] = max(self._acked.get(partition, 0), after)
                # The first offset seen is where the group stood: never commit below it.
                self._committed.setdefault(partition, first[partition])
        self._commit()

    def _letter(self, message: KafkaMessage, reason: str, now: float) -> DeadLetter:
        return dead_letter_record(
            stage=self.stage.name,
            reason=reason,
            topic=message.topic(),
            partition=message.partition(),
            offset=message.offset(),
            key=message.key(),
            value=message.value(),
            headers=message.headers(),
            failed_ts=now,
        )

    def _publish(
        self, outputs: Sequence[Outgoing], letters: Sequence[tuple[DeadLetter, str]]
    ) -> _Deliveries:
        """Produce the outputs and dead letters, flush, and collect every delivery report."""
        producer = self._producer
        if producer is None:
            raise RuntimeError("the runner is not running")
        deliveries = _Deliveries()
        stage = self.stage.name
        deadline = time.monotonic() + self.flush_timeout_s

        def on_delivery(
            capture_ts: float | None, topic: str
        ) -> Callable[[KafkaError | None, KafkaMessage], None]:
            def report(error: KafkaError | None, message: KafkaMessage) -> None:
                if error is not None:
                    deliveries.errors.append(f'topic="{topic}" {_err_name(error)}')
                    self.metrics.failed.labels(stage, "delivery").inc()
                    return
                deliveries.acknowledged += 1
                if topic != self.deadletter_topic:
                    self.metrics.messages_out.labels(stage, topic).inc()
                    if capture_ts is not None:
                        self.metrics.latency.labels(stage).observe(time.time() - capture_ts)

            return report

        records: list[tuple[str, bytes | None, bytes, list[tuple[str, bytes]], float | None]] = []
        for out in outputs:
            records.append(
                (
                    self.topic_name(out.topic),
                    out.key.encode("utf-8"),
                    encode(out.message),
                    headers_for(out.message),
                    _capture_ts(out.message),
                )
            )
        for letter, _ in letters:
            records.append(
                (
                    self.deadletter_topic,
                    letter.key,
                    encode(letter),
                    dead_letter_headers(letter),
                    None,
                )
            )
        for topic, key, value, headers, capture_ts in records:
            while True:
                try:
                    producer.produce(
                        topic, value=value, key=key, headers=headers,
                        on_delivery=on_delivery(capture_ts, topic),
                    )
                    deliveries.sent += 1
                    break
                except BufferError:
                    # The local queue is full: serve delivery reports until there is room
                    # (a stage never drops an output), but not past the flush deadline.
                    if time.monotonic() >= deadline:
                        deliveries.errors.append(f'topic="{topic}" local queue full')
                        break
                    producer.poll(0.05)
                except KafkaException as exc:
                    deliveries.errors.append(f'topic="{topic}" produce failed: {exc}')
                    break
            if deliveries.errors:
                break
        # delivery.timeout.ms is flush_timeout_s, so every report is due by the deadline; the
        # margin lets the last ones arrive, so a failed batch leaves nothing queued behind it.
        remaining = producer.flush(max(deadline - time.monotonic(), 0.0) + _FLUSH_MARGIN_S)
        if remaining:
            deliveries.errors.append(f"{remaining} messages unacknowledged after flush")
        elif deliveries.acknowledged + len(deliveries.errors) < deliveries.sent:
            deliveries.errors.append(
                f"{deliveries.sent - deliveries.acknowledged} delivery reports missing"
            )
        return deliveries

    def _retry(self, first: Mapping[int, int], *, reason: str, detail: str) -> None:
        """Pause, back off, seek back to the batch's first offsets, resume."""
        consumer = self._consumer
        if consumer is None:
            raise RuntimeError("the runner is not running")
        stage = self.stage.name
        delay = self.backoff.delay(self._attempt)
        self._attempt += 1
        self.metrics.retries.labels(stage, reason).inc()
        self.metrics.batches.labels(stage, "retry").inc()
        logger.warning(
            'stage="%s" retrying batch reason="%s" attempt=%d backoff_seconds="%.3f" detail="%s"',
            stage, reason, self._attempt, delay, detail,
        )
        assigned = [TopicPartition(self.input_topic, p) for p in sorted(self.assigned_partitions())]
        if assigned:
            consumer.pause(assigned)
        for partition, offset in sorted(first.items()):
            if partition not in self.assigned_partitions():
                continue  # revoked meanwhile: its new owner starts from the committed offset
            try:
                consumer.seek(TopicPartition(self.input_topic, partition, offset))
            except KafkaException as exc:
                logger.warning(
                    'stage="%s" seek failed partition="%s[%d]" offset="%d" error="%s"',
                    stage, self.input_topic, partition, offset, exc,
                )
        self._sleep(delay)  # a stop cuts the wait short; the batch stays uncommitted
        if assigned:
            consumer.resume(assigned)

    def _sleep(self, seconds: float) -> None:
        """Sleep, in short steps so that a stop request ends it early."""
        deadline = time.monotonic() + seconds
        while not self._stop_requested:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            time.sleep(min(remaining, _STOP_CHECK_S))

    def _commit(self) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        with self._lock:
            targets = commit_targets(acked=self._acked, hold=self._hold, committed=self._committed)
            targets = {p: o for p, o in targets.items() if p in self._assigned}
        if not targets:
            return
        offsets = [TopicPartition(self.input_topic, p, o) for p, o in sorted(targets.items())]
        try:
            consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # The inputs are replayed by whoever owns the partition next: at least once.
            self.metrics.commits.labels(self.stage.name, "failed").inc()
            logger.warning('stage="%s" commit failed offsets="%s" error="%s"', self.stage.name,
                           _offsets_text(self.input_topic, targets), exc)
            return
        self.metrics.commits.labels(self.stage.name, "ok").inc()
        with self._lock:
            for partition, offset in targets.items():
                self._committed[partition] = offset
        logger.debug('stage="%s" committed offsets="%s"', self.stage.name,
                     _offsets_text(self.input_topic, targets))

    def _kafka_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._PARTITION_EOF:
            return
        if error.fatal():
            raise KafkaException(error)
        logger.warning('stage="%s" consumer error="%s"', self.stage.name, _err_name(error))

    # -- rebalance -----------------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        with self._lock:
            self._assigned = self._assigned | {tp.partition for tp in partitions}
        logger.info('stage="%s" assigned partitions="%s"', self.stage.name,
                    ",".join(f"{tp.topic}[{tp.partition}]" for tp in partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._commit()  # what is acknowledged, before another replica takes over
        self._forget(partitions)
        logger.info('stage="%s" revoked partitions="%s"', self.stage.name,
                    ",".join(f"{tp.topic}[{tp.partition}]" for tp in partitions))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._forget(partitions)  # no longer ours: a commit would be refused
        logger.warning('stage="%s" lost partitions="%s"', self.stage.name,
                       ",".join(f"{tp.topic}[{tp.partition}]" for tp in partitions))

    def _forget(self, partitions: Sequence[TopicPartition]) -> None:
        gone = {tp.partition for tp in partitions}
        with self._lock:
            self._assigned = self._assigned - gone
            for partition in gone:
                self._acked.pop(partition, None)
                self._committed.pop(partition, None)
        for partition in gone & self._lag_partitions:
            self._lag_partitions.discard(partition)
            try:
                self.metrics.lag.remove(self.stage.name, self.input_topic, str(partition))
            except KeyError:
                pass  # never set: nothing to remove

    # -- lag -----------------------------------------------------------------------------------

    def _refresh_lag(self) -> None:
        now = time.monotonic()
        consumer = self._consumer
        if consumer is None or now < self._lag_due:
            return
        # Until a first value is known (no assignment or nothing fetched yet), look again soon.
        self._lag_due = now + min(self.lag_interval_s, 0.5)
        partitions = [
            TopicPartition(self.input_topic, p) for p in sorted(self.assigned_partitions())
        ]
        if not partitions:
            return
        try:
            positions = consumer.position(partitions)
        except KafkaException as exc:
            logger.debug('stage="%s" position failed error="%s"', self.stage.name, exc)
            return
        known = 0
        for tp in positions:
            try:
                _, high = consumer.get_watermark_offsets(tp, cached=True)
                if high < 0:
                    _, high = consumer.get_watermark_offsets(tp, timeout=0.5, cached=False)
            except KafkaException as exc:
                logger.debug('stage="%s" watermarks failed error="%s"', self.stage.name, exc)
                continue
            position = tp.offset
            if position == OFFSET_INVALID or position < 0:
                with self._lock:
                    position = self._committed.get(tp.partition, -1)
            if high < 0 or position < 0:
                continue
            self.metrics.lag.labels(self.stage.name, self.input_topic, str(tp.partition)).set(
                max(high - position, 0)
            )
            self._lag_partitions.add(tp.partition)
            known += 1
        if known or self._lag_partitions:
            self._lag_due = now + self.lag_interval_s

    # -- shutdown ------------------------------------------------------------------------------

    def _shutdown(self) -> None:
        consumer, producer = self._consumer, self._producer
        try:
            if producer is not None:
                left = producer.flush(self.flush_timeout_s)
                if left:
                    logger.warning(
                        'stage="%s" unacknowledged_at_stop=%d', self.stage.name, left
                    )
            self._commit()
        finally:
            if consumer is not None:
                try:
                    consumer.close()
                except (KafkaException, RuntimeError) as exc:
                    logger.warning(
                        'stage="%s" consumer close failed error="%s"', self.stage.name, exc
                    )
            self._consumer = None
            self._producer = None
            with self._lock:
                self._assigned = frozenset()
            try:
                self.stage.close()
            finally:
                logger.info('stage="%s" stopped', self.stage.name)


def _offsets_text(topic: str, offsets: Mapping[int, int]) -> str:
    return ",".join(f"{topic}[{p}]@{o}" for p, o in sorted(offsets.items()))


# -- the publisher (ingest) -------------------------------------------------------------------


class Publisher:
    """A producer for ``ingest``: same settings as the stages, and it never blocks on a full
    queue: a message that finds librdkafka's bounded queue full is dropped and counted, because
    a backlog of stale video is worse than a gap.
    """

    def __init__(
        self,
        *,
        bootstrap: str,
        topic_names: Mapping[TopicSpec, str] | None = None,
        max_queued_messages: int = 1000,
        max_queued_kbytes: int = 65536,
        delivery_timeout_s: float = 30.0,
        registry: CollectorRegistry | None = None,
        producer_config: Mapping[str, Any] | None = None,
        client_id: str = "openlfr-ingest",
    ) -> None:
        """Make the producer.

        Args:
            bootstrap: ``host:port[,host:port...]`` of the brokers.
            topic_names: The actual name of a topic, by spec (``spec.name`` when absent).
            max_queued_messages: librdkafka's queue bound in messages.
            max_queued_kbytes: librdkafka's queue bound in KiB.
            delivery_timeout_s: A message not acknowledged by then is reported failed.
            registry: Where the metrics go (prometheus_client's default if None).
            producer_config: Further librdkafka settings (override the defaults).
            client_id: The client id the broker sees.
        """
        if max_queued_messages < 1:
            raise ValueError(f"max_queued_messages={max_queued_messages}, expected >= 1")
        if max_queued_kbytes < 1:
            raise ValueError(f"max_queued_kbytes={max_queued_kbytes}, expected >= 1")
        if delivery_timeout_s <= 0:
            raise ValueError(f"delivery_timeout_s={delivery_timeout_s}, expected > 0")
        self._topic_names = dict(topic_names or {})
        self.metrics: PublisherMetrics = _metrics(PublisherMetrics, registry)
        config: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            **PRODUCER_DEFAULTS,
            "queue.buffering.max.messages": max_queued_messages,
            "queue.buffering.max.kbytes": max_queued_kbytes,
            "delivery.timeout.ms": int(delivery_timeout_s * 1000),
            "client.id": client_id,
            "logger": _LIBRDKAFKA_LOGGER,
        }
        config.update(producer_config or {})
        self._producer = Producer(config)
        self._lock = threading.Lock()
        self.delivered = 0
        self.failed = 0
        self.dropped = 0

    def topic_name(self, spec: TopicSpec) -> str:
        """The actual name of a topic."""
        return self._topic_names.get(spec, spec.name)

    def publish(self, outgoing: Outgoing) -> bool:
        """Queue one message; False if the local queue was full and it was dropped."""
        topic = self.topic_name(outgoing.topic)
        capture_ts = _capture_ts(outgoing.message)

        def report(error: KafkaError | None, message: KafkaMessage) -> None:
            if error is not None:
                with self._lock:
                    self.failed += 1
                self.metrics.messages.labels(topic, "failed").inc()
                logger.warning('publish failed topic="%s" key="%s" error="%s"', topic,
                               outgoing.key, _err_name(error))
                return
            with self._lock:
                self.delivered += 1
            self.metrics.messages.labels(topic, "delivered").inc()
            if capture_ts is not None:
                self.metrics.latency.labels(topic).observe(time.time() - capture_ts)

        try:
            self._producer.produce(
                topic,
                value=encode(outgoing.message),
                key=outgoing.key.encode("utf-8"),
                headers=headers_for(outgoing.message),
                on_delivery=report,
            )
        except BufferError:
            with self._lock:
                self.dropped += 1
            self.metrics.messages.labels(topic, "dropped_queue_full").inc()
            logger.debug(
                'publish dropped topic="%s" key="%s" reason="queue_full"', topic, outgoing.key
            )
            self._producer.poll(0)
            return False
        self._producer.poll(0)  # serve delivery reports as we go
        return True

    def poll(self, timeout_s: float = 0.0) -> int:
        """Serve delivery reports; the number served."""
        return self._producer.poll(timeout_s)

    def flush(self, timeout_s: float = 30.0) -> int:
        """Wait for every queued message's report; the number still unacknowledged."""
        return self._producer.flush(timeout_s)

    def __len__(self) -> int:
        """Messages queued and not yet acknowledged."""
        return len(self._producer)
