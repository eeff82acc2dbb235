"""Subscribe to OpenLFR alerts: one line per alert, each alert once, offsets committed after handling.

An example for subscribers of ``openlfr.alerts.v1`` (see docs/alerts.md): a command-line
consumer that decodes each message with ``openlfr.messages.codec`` into an ``Alert``, prints one
line for it, and commits its offset only after the line is written (at-least-once). The alert
stage may deliver one alert twice (a replay after a restart), so alerts are deduplicated by
``alert_id``, the key of the contract.

An alert is a *candidate* match waiting for two people to review it; it is not an instruction
to act. Act only on alerts the review marks ``confirmed`` (``GET /v1/alerts/{id}`` or the
``review`` events of ``/v1/alerts/stream`` on the alert service).

Usage::

    python examples/alerts_consumer.py --bootstrap localhost:9092 --group my-subscriber
    python examples/alerts_consumer.py --bootstrap kafka:9092 --topic site-a.openlfr.alerts.v1 \
        --group control-room --from-beginning

Stop with Ctrl-C or SIGTERM: it finishes the alert in hand, commits and leaves the group.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections import OrderedDict
from datetime import UTC, datetime
from types import FrameType

from confluent_kafka import Consumer, KafkaError, Message

from openlfr.messages.codec import DecodeError, decode
from openlfr.messages.models import Alert
from openlfr.messages.topics import ALERTS

logger = logging.getLogger("openlfr.examples.alerts_consumer")


class SeenIds:
    """The most recent ``capacity`` alert ids, to drop repeats (bounded memory)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity: expected >= 1, got {capacity}")
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def add(self, alert_id: str) -> bool:
        """Remember an id; True if it was not seen before."""
        if alert_id in self._ids:
            self._ids.move_to_end(alert_id)
            return False
        self._ids[alert_id] = None
        if len(self._ids) > self.capacity:
            self._ids.popitem(last=False)
        return True


def alert_line(alert: Alert) -> str:
    """One line describing an alert."""
    captured = datetime.fromtimestamp(alert.capture_ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return (
        f"{captured} alert={alert.alert_id} deployment={alert.deployment_id or '-'} camera={alert.camera_id} "
        f"subject={alert.subject_id} watchlist={alert.watchlist_id} score={alert.score:.3f} "
        f"margin={alert.margin:.3f} threshold={alert.threshold:.3f} model={alert.embedder_model} "
        f"reference={'yes' if alert.reference_chip_jpeg else 'no'}"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Print OpenLFR alerts as they are raised.")
    parser.add_argument("--bootstrap", required=True, help="Kafka brokers, host:port[,host:port...]")
    parser.add_argument("--topic", default=ALERTS.name, help=f"the alerts topic (default {ALERTS.name})")
    parser.add_argument("--group", required=True, help="this subscriber's consumer group id")
    parser.add_argument("--from-beginning", action="store_true",
                        help="a new group starts at the oldest kept alert (default: only new alerts)")
    parser.add_argument("--dedupe-capacity", type=int, default=100_000,
                        help="how many recent alert ids are remembered to drop repeats")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s level=%(levelname)s %(message)s", stream=sys.stderr)
    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        "enable.auto.commit": False,  # commit only what was handled
        "auto.offset.reset": "earliest" if args.from_beginning else "latest",
    })
    seen = SeenIds(args.dedupe_capacity)
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    consumer.subscribe([args.topic])
    logger.info('subscribed topic="%s" group="%s"', args.topic, args.group)
    try:
        while not stopping:
            msg: Message | None = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error() is not None:
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    continue
                logger.error('kafka error="%s"', msg.error())
                continue
            try:
                alert = decode(msg.value(), Alert)
            except DecodeError as exc:
                # Not an alert of this schema version: say so, and move past it.
                logger.error('undecodable message partition="%d" offset="%d" reason="%s"',
                             msg.partition(), msg.offset(), exc)
            else:
                if seen.add(alert.alert_id):
                    print(alert_line(alert), flush=True)
            consumer.commit(message=msg, asynchronous=False)
    finally:
        consumer.close()  # leaves the group, so its partitions move at once
    return 0


if __name__ == "__main__":
    sys.exit(main())
