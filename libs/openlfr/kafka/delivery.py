"""Sending one batch's records and collecting every delivery report, with each failure
classified as permanent (the same record fails again however often it is sent) or not."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka import Message as KafkaMessage

from openlfr.kafka.clients import err_name, is_permanent

#: After the delivery deadline, the last reports still get this long to arrive.
FLUSH_MARGIN_S = 2.0


@dataclass(frozen=True, slots=True)
class Record:
    """One record to send."""

    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    #: The frame's capture time, for the latency histogram (None: not a pipeline message).
    capture_ts: float | None = None


@dataclass(frozen=True, slots=True)
class DeliveryFailure:
    """A record that was not acknowledged: where it was going, why, and whether a retry can
    succeed."""

    topic: str
    text: str
    permanent: bool

    def __str__(self) -> str:
        return f'topic="{self.topic}" {self.text}'


@dataclass(slots=True)
class Deliveries:
    """Delivery reports of one batch's records."""

    sent: int = 0
    acknowledged: int = 0
    failures: list[DeliveryFailure] = field(default_factory=list)

    @property
    def permanent(self) -> list[DeliveryFailure]:
        """The failures no retry can cure."""
        return [f for f in self.failures if f.permanent]

    def summary(self, most: int = 3) -> str:
        """The first failures as one line."""
        return "; ".join(str(f) for f in self.failures[:most])


def _failure(topic: str, error: KafkaError, prefix: str = "") -> DeliveryFailure:
    return DeliveryFailure(topic, prefix + err_name(error), is_permanent(error))


def deliver(
    producer: Producer,
    records: Sequence[Record],
    *,
    timeout_s: float,
    on_acknowledged: Callable[[Record], None],
    on_failed: Callable[[Record], None],
) -> Deliveries:
    """Produce ``records`` in order, flush, and collect every delivery report.

    A full local queue is waited out (serving reports) until the deadline; the first record
    that cannot be queued ends the sending, since what follows would fail behind it anyway.

    Args:
        producer: The producer; its ``delivery.timeout.ms`` should be ``timeout_s``, so every
            report is due by the deadline.
        records: What to send.
        timeout_s: How long sending and waiting may take (plus a short margin for the reports).
        on_acknowledged: Called with each record the broker acknowledged.
        on_failed: Called with each record that failed.
    """
    deliveries = Deliveries()
    deadline = time.monotonic() + timeout_s

    def report_for(record: Record) -> Callable[[KafkaError | None, KafkaMessage], None]:
        def report(error: KafkaError | None, message: KafkaMessage) -> None:
            if error is not None:
                deliveries.failures.append(_failure(record.topic, error))
                on_failed(record)
                return
            deliveries.acknowledged += 1
            on_acknowledged(record)

        return report

    for record in records:
        while True:
            try:
                producer.produce(
                    record.topic, value=record.value, key=record.key, headers=record.headers,
                    on_delivery=report_for(record),
                )
                deliveries.sent += 1
                break
            except BufferError:
                # The local queue is full: serve delivery reports until there is room (a stage
                # never drops an output), but not past the deadline.
                if time.monotonic() >= deadline:
                    deliveries.failures.append(
                        DeliveryFailure(record.topic, "local queue full", permanent=False)
                    )
                    on_failed(record)
                    break
                producer.poll(0.05)
            except KafkaException as exc:
                # librdkafka refuses some records at once (e.g. over message.max.bytes).
                error = exc.args[0] if exc.args else None
                if isinstance(error, KafkaError):
                    failure = _failure(record.topic, error, "produce failed: ")
                else:
                    failure = DeliveryFailure(record.topic, f"produce failed: {exc}", False)
                deliveries.failures.append(failure)
                on_failed(record)
                break
        if deliveries.failures:
            break
    remaining = producer.flush(max(deadline - time.monotonic(), 0.0) + FLUSH_MARGIN_S)
    if remaining:
        deliveries.failures.append(
            DeliveryFailure("*", f"{remaining} messages unacknowledged after flush", False)
        )
    elif deliveries.acknowledged + len(deliveries.failures) < deliveries.sent:
        deliveries.failures.append(
            DeliveryFailure(
                "*", f"{deliveries.sent - deliveries.acknowledged} delivery reports missing", False
            )
        )
    return deliveries
