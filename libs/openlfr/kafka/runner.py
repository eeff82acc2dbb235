"""The Kafka loop of a consuming stage, at least once.

``StageRunner`` runs one :class:`~openlfr.pipeline.stage.Stage`: poll a batch, decode it,
hand it to the stage, produce the outputs and the dead letters, flush and check that every
delivery was acknowledged, and only then commit the batch's offsets (quix-streams' checkpoint:
flush the producer, then commit). What can go wrong, and what happens:

* a value that is not a valid message (empty, not JSON, wrong schema, any size): a
  ``DeadLetter`` record with the reason, a reference to the original (topic, partition, offset,
  size, SHA-256) and at most its first bytes (none for topics that carry faces) goes to the
  dead-letter topic; the batch goes on (:mod:`openlfr.kafka.deadletter`);
* the stage rejects an input (``BatchResult.rejected``): dead-lettered with the stage's reason;
* the stage raises ``BackendUnavailable`` or a delivery fails for a cause that can pass (broker
  or topic unavailable, timeout): the partitions are paused, the runner backs off (exponential,
  bounded), seeks back to the batch's first offsets and retries; nothing is committed and
  nothing dropped meanwhile, and ``/readyz`` says "stalled" once no batch has finished for
  ``stall_after_s`` (:mod:`openlfr.kafka.progress`);
* a delivery fails for good (a record over the broker's limit, an invalid record): the batch is
  read again one input at a time, and the input whose outputs fail ``delivery_max_retries + 1``
  times is dead-lettered with the error and passed, so one message cannot stall the stage;
* the stage raises anything else: logged with the traceback, every input of the batch is
  dead-lettered with the error text, and the batch is committed (the stage stays up).

Offsets are committed per partition as ``last offset + 1``, but never beyond the stage's
``BatchResult.hold`` and never backwards. ``hold`` is read as the stage's whole state after the
batch: a partition it does not name holds nothing.

The producer-only ``Publisher`` (ingest) is in :mod:`openlfr.kafka.publisher`; the names below
the imports are kept here for the modules that import them from this one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka import Message as KafkaMessage
from prometheus_client import CollectorRegistry

from openlfr.kafka.clients import (
    DEFAULT_MAX_MESSAGE_BYTES,
    LIBRDKAFKA_LOGGER,
    PRODUCER_DEFAULTS,
    err_name,
)
from openlfr.kafka.deadletter import (
    DEFAULT_DEADLETTER_PAYLOAD_BYTES,
    dead_letter_headers,
    dead_letter_record,
    encoded_size,
    keeps_payload,
    payload_budget,
)
from openlfr.kafka.delivery import Deliveries, Record, deliver
from openlfr.kafka.metrics import PublisherMetrics, StageMetrics, capture_ts_of, metrics_for
from openlfr.kafka.offsets import Backoff, commit_targets, next_offsets
from openlfr.kafka.probes import BrokerProbe, read_lag
from openlfr.kafka.progress import Progress
from openlfr.kafka.publisher import Publisher
from openlfr.kafka.security import Bootstrap, client_config
from openlfr.messages.codec import DecodeError, decode, encode, headers_for
from openlfr.messages.models import DeadLetter
from openlfr.messages.topics import DEADLETTER, TopicSpec
from openlfr.pipeline.exceptions import BackendUnavailable
from openlfr.pipeline.stage import BatchResult, Incoming, Outgoing, Stage

__all__ = [
    "PRODUCER_DEFAULTS",
    "Backoff",
    "Publisher",
    "PublisherMetrics",
    "StageMetrics",
    "StageRunner",
    "commit_targets",
    "dead_letter_headers",
    "dead_letter_record",
    "next_offsets",
]

logger = logging.getLogger(__name__)

_STOP_CHECK_S = 0.05


class StageRunner:
    """Runs one stage over Kafka, at least once. Call :meth:`run` in one thread; any thread may
    call :meth:`request_stop`, :meth:`assigned_partitions` and :meth:`broker_reachable`.
    """

    def __init__(
        self,
        stage: Stage,
        *,
        bootstrap: Bootstrap,
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
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        deadletter_payload_bytes: int = DEFAULT_DEADLETTER_PAYLOAD_BYTES,
        delivery_max_retries: int = 5,
        stall_after_s: float = 60.0,
    ) -> None:
        """Describe the runner; the clients are made at :meth:`run`.

        Args:
            stage: The stage to run.
            bootstrap: ``host:port[,host:port...]`` of the brokers, or a
                :class:`~openlfr.kafka.security.KafkaConnection` (TLS, SASL).
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
            max_message_bytes: The broker's message limit: the producer refuses larger records
                at once (a permanent failure), and no dead letter is larger.
            deadletter_payload_bytes: The most bytes of an input's value a dead letter keeps
                (none for topics that carry faces); at most what fits ``max_message_bytes``.
            delivery_max_retries: Retries of one input whose outputs fail permanently (too
                large, invalid) before it is dead-lettered and passed.
            stall_after_s: No batch finished for this long with input waiting: ``/readyz``
                says "stalled" and ``openlfr_stage_stalled`` is 1.
        """
        if not 1 <= batch_size <= 1024:
            raise ValueError(f"batch_size={batch_size}, expected 1..1024")
        if poll_timeout_s <= 0:
            raise ValueError(f"poll_timeout_s={poll_timeout_s}, expected > 0")
        if flush_timeout_s <= 0:
            raise ValueError(f"flush_timeout_s={flush_timeout_s}, expected > 0")
        if session_timeout_s <= 0:
            raise ValueError(f"session_timeout_s={session_timeout_s}, expected > 0")
        budget = payload_budget(max_message_bytes)  # ValueError when too small
        if not 0 <= deadletter_payload_bytes <= budget:
            raise ValueError(
                f"deadletter_payload_bytes={deadletter_payload_bytes}, expected 0..{budget} "
                f"(what fits a record of max_message_bytes={max_message_bytes})"
            )
        if delivery_max_retries < 0:
            raise ValueError(f"delivery_max_retries={delivery_max_retries}, expected >= 0")
        self.stage = stage
        self.bootstrap = bootstrap
        self.group_id = group_id
        self._topic_names = dict(topic_names or {})
        self.batch_size = batch_size
        self.poll_timeout_s = poll_timeout_s
        self.backoff = backoff or Backoff()
        self.flush_timeout_s = flush_timeout_s
        self.lag_interval_s = lag_interval_s
        self.metrics: StageMetrics = metrics_for(StageMetrics, registry)
        self.input_topic = self.topic_name(stage.input_topic)
        self.deadletter_topic = self.topic_name(DEADLETTER)
        self.max_message_bytes = max_message_bytes
        self.delivery_max_retries = delivery_max_retries
        #: Dead letters of topics that carry faces keep metadata only.
        self.letter_payload_bytes = (
            deadletter_payload_bytes if keeps_payload(stage.input_topic) else 0
        )
        self.progress = Progress(stall_after_s=stall_after_s)
        self.metrics.progress_age.labels(stage.name).set_function(self.progress.age)
        self.metrics.stalled.labels(stage.name).set_function(
            lambda: float(self.progress.stalled())
        )

        self._consumer_config: dict[str, Any] = {
            **client_config(bootstrap),
            "group.id": group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": int(session_timeout_s * 1000),
            "client.id": f"openlfr-{stage.name}",
            "logger": LIBRDKAFKA_LOGGER,
        }
        self._consumer_config.update(consumer_config or {})
        self._producer_config: dict[str, Any] = {
            **client_config(bootstrap),
            **PRODUCER_DEFAULTS,
            "delivery.timeout.ms": int(flush_timeout_s * 1000),
            "message.max.bytes": max_message_bytes,
            "client.id": f"openlfr-{stage.name}",
            "logger": LIBRDKAFKA_LOGGER,
        }
        self._producer_config.update(producer_config or {})

        # A plain flag, not an Event: setting it takes no lock, so a signal handler that
        # interrupts the loop's own thread cannot deadlock on it.
        self._stop_requested = False
        self._lock = threading.Lock()
        self._probe = BrokerProbe(bootstrap, self.input_topic)
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
        # Set after a permanent delivery failure: per partition, the offset up to which the
        # batch is read again one input at a time; and the input failing now, with its count.
        self._isolate_until: dict[int, int] = {}
        self._permanent: tuple[int, int, int] | None = None
        self._lag_due = 0.0
        self._lag_partitions: set[int] = set()

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
        """Whether the broker answers a metadata request for the input topic (cached briefly)."""
        if self._consumer is None:
            return False, "consumer not started"
        return self._probe.check(timeout_s=timeout_s, cache_s=cache_s)

    def progress_check(self) -> tuple[bool, str]:
        """For ``/readyz``: whether the stage makes progress (see :mod:`openlfr.kafka.progress`)."""
        return self.progress.check()

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
            self.progress.restart()
            while not self._stop_requested:
                messages = self._consumer.consume(
                    num_messages=1 if self._isolating() else self.batch_size,
                    timeout=self.poll_timeout_s,
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
                    'stage="%s" dead-letter partition="%s[%d]" offset="%d" value_bytes=%d '
                    'reason="%s"',
                    stage, self.input_topic, partition, offset, len(message.value() or b""), exc,
                )
                letters.append((self._letter(message, str(exc), now), "decode"))
                continue
            valid.append(Incoming(message=value, partition=partition, offset=offset))
        if not raw:
            return
        self.progress.batch_started()
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
        if deliveries.failures:
            if not deliveries.permanent:
                self._retry(first, reason="delivery", detail=deliveries.summary())
                return
            given_up = self._permanent_failure(raw, first, deliveries, now)
            if given_up is None:
                return
            # This one input's outputs can never be delivered: it is dead-lettered instead.
            result, letters = None, [given_up]
            deliveries = self._publish([], letters)
            if deliveries.failures:
                self._retry(first, reason="delivery", detail=deliveries.summary())
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
        self._permanent = None
        with self._lock:
            for partition, after in next_offsets(raw).items():
                self._acked[partition] = max(self._acked.get(partition, 0), after)
                # The first offset seen is where the group stood: never commit below it.
                self._committed.setdefault(partition, first[partition])
            self._isolate_until = {
                p: until for p, until in self._isolate_until.items()
                if p in self._assigned and self._acked.get(p, 0) < until
            }
        self.progress.advanced()
        self._commit()

    def _permanent_failure(
        self,
        raw: Mapping[tuple[int, int], KafkaMessage],
        first: Mapping[int, int],
        deliveries: Deliveries,
        now: float,
    ) -> tuple[DeadLetter, str] | None:
        """After a delivery no retry can cure: read a batch of several inputs again one at a
        time; retry a single input up to ``delivery_max_retries`` times, then return its dead
        letter (None: retrying)."""
        stage = self.stage.name
        detail = deliveries.summary()
        if len(raw) > 1:
            with self._lock:
                for partition, after in next_offsets(raw).items():
                    self._isolate_until[partition] = max(
                        self._isolate_until.get(partition, 0), after
                    )
            logger.warning(
                'stage="%s" delivery failed for good; reading the batch again one input at a '
                'time messages=%d detail="%s"', stage, len(raw), detail,
            )
            self._retry(first, reason="delivery_permanent", detail=detail, delay_s=0.0)
            return None
        ((partition, offset), message), = raw.items()
        count = 1
        if self._permanent is not None and self._permanent[:2] == (partition, offset):
            count = self._permanent[2] + 1
        self._permanent = (partition, offset, count)
        if count <= self.delivery_max_retries:
            self._retry(first, reason="delivery_permanent", detail=detail)
            return None
        reason = f"delivery failed after {count} attempts: {detail}"
        logger.error(
            'stage="%s" dead-letter partition="%s[%d]" offset="%d" reason="%s"',
            stage, self.input_topic, partition, offset, reason,
        )
        # Metadata only when the dead-letter topic itself refused a record.
        keep = not any(f.topic == self.deadletter_topic for f in deliveries.permanent)
        return self._letter(message, reason, now, keep_payload=keep), "delivery"

    def _isolating(self) -> bool:
        """Whether inputs are read one at a time (after a permanent delivery failure)."""
        with self._lock:
            return bool(self._isolate_until)

    def _letter(
        self, message: KafkaMessage, reason: str, now: float, *, keep_payload: bool = True
    ) -> DeadLetter:
        fields: dict[str, Any] = {
            "stage": self.stage.name,
            "reason": reason,
            "topic": message.topic(),
            "partition": message.partition(),
            "offset": message.offset(),
            "key": message.key(),
            "value": message.value(),
            "headers": message.headers(),
            "failed_ts": now,
        }
        payload = self.letter_payload_bytes if keep_payload else 0
        letter = dead_letter_record(**fields, payload_max_bytes=payload)
        if payload and encoded_size(letter) > self.max_message_bytes:
            letter = dead_letter_record(**fields, payload_max_bytes=0)  # cannot happen in budget
        return letter

    def _publish(
        self, outputs: Sequence[Outgoing], letters: Sequence[tuple[DeadLetter, str]]
    ) -> Deliveries:
        """Produce the outputs and dead letters, flush, and collect every delivery report."""
        producer = self._producer
        if producer is None:
            raise RuntimeError("the runner is not running")
        stage = self.stage.name
        records = [
            Record(
                self.topic_name(out.topic), out.key.encode("utf-8"), encode(out.message),
                headers_for(out.message), capture_ts_of(out.message),
            )
            for out in outputs
        ]
        records += [
            Record(self.deadletter_topic, letter.key, encode(letter), dead_letter_headers(letter))
            for letter, _ in letters
        ]

        def acknowledged(record: Record) -> None:
            if record.topic == self.deadletter_topic:
                return
            self.metrics.messages_out.labels(stage, record.topic).inc()
            if record.capture_ts is not None:
                self.metrics.latency.labels(stage).observe(time.time() - record.capture_ts)

        def failed(record: Record) -> None:
            self.metrics.failed.labels(stage, "delivery").inc()

        return deliver(
            producer, records, timeout_s=self.flush_timeout_s,
            on_acknowledged=acknowledged, on_failed=failed,
        )

    def _retry(
        self, first: Mapping[int, int], *, reason: str, detail: str, delay_s: float | None = None
    ) -> None:
        """Pause, back off (``delay_s``, else the backoff's next delay), seek back to the
        batch's first offsets, resume."""
        consumer = self._consumer
        if consumer is None:
            raise RuntimeError("the runner is not running")
        stage = self.stage.name
        self.progress.retrying(f"{reason}: {detail}"[:300])
        delay = self.backoff.delay(self._attempt) if delay_s is None else delay_s
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
        logger.warning('stage="%s" consumer error="%s"', self.stage.name, err_name(error))

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
                self._isolate_until.pop(partition, None)
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
        with self._lock:
            committed = dict(self._committed)
        lags = read_lag(consumer, self.input_topic, sorted(self.assigned_partitions()), committed)
        for partition, lag in lags.items():
            self.metrics.lag.labels(self.stage.name, self.input_topic, str(partition)).set(lag)
            self._lag_partitions.add(partition)
        if lags:
            self.progress.lag(sum(lags.values()))
        if lags or self._lag_partitions:
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

