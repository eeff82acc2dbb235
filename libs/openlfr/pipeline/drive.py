"""``openlfr run --bus kafka``: feed running services from one source and print their alerts.

The separate services (detect, embed, match, alert) must already run against the same broker
with the watchlist enrolled in the match service's store (``openlfr watchlist enroll``). This
command acts as the ingest service for one camera and subscribes to the alerts topic. It ends
when the source has ended and no alert has arrived for ``--settle-s`` seconds (or at
``--timeout-s``).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import uuid

from confluent_kafka import Consumer, TopicPartition

from openlfr.kafka.admin import ensure_topics
from openlfr.kafka.security import Bootstrap, client_config
from openlfr.messages.codec import DecodeError, decode
from openlfr.messages.models import Alert
from openlfr.messages.topics import ALERTS
from openlfr.pipeline.ingest_service import IngestServiceSettings, run_ingest
from openlfr.service.settings import load_settings


def _alerts_consumer(bootstrap: Bootstrap, topic: str) -> Consumer:
    """A consumer placed at the alerts topic's current end, so only new alerts are read."""
    ensure_topics(bootstrap, {topic: ALERTS.partitions}, retention_ms=ALERTS.retention_ms)
    consumer = Consumer({
        **client_config(bootstrap),
        "group.id": f"openlfr-run-{uuid.uuid4().hex[:12]}",
        "enable.auto.commit": False,
    })
    meta = consumer.list_topics(topic, timeout=30)
    starts = []
    for partition in meta.topics[topic].partitions:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=30)
        starts.append(TopicPartition(topic, partition, high))
    consumer.assign(starts)
    return consumer


def drive_kafka(args: argparse.Namespace) -> int:
    """Run ingest for ``args.source`` and print alerts from the alerts topic."""
    from openlfr.run_cli import alert_line

    if not args.bootstrap or not args.source:
        print("openlfr run --bus kafka: give --bootstrap HOST:PORT and --source", file=sys.stderr)
        return 2
    settings = load_settings(
        IngestServiceSettings, bootstrap=args.bootstrap, cameras=f"{args.camera_id}={args.source}",
        sample_fps=args.sample_fps, file_mode="realtime" if args.realtime else "batch",
    )
    topic = settings.topic_name(ALERTS)
    consumer = _alerts_consumer(settings.kafka_connection(), topic)
    stop = threading.Event()
    published = [0]
    counters: dict = {}

    def ingest() -> None:
        counters.update(run_ingest(settings, stop, on_publish=lambda out: published.__setitem__(0, published[0] + 1)))

    thread = threading.Thread(target=ingest, name="ingest", daemon=True)
    start = time.monotonic()
    thread.start()
    alerts = 0
    last_event = time.monotonic()
    try:
        while time.monotonic() - start < args.timeout_s:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                try:
                    alert = decode(msg.value(), Alert)
                except DecodeError as exc:
                    print(f"openlfr run: unreadable alert skipped: {exc}", file=sys.stderr)
                    continue
                alerts += 1
                last_event = time.monotonic()
                print(alert_line(alert, as_json=args.json), flush=True)
            if thread.is_alive():
                last_event = time.monotonic()
                continue
            if time.monotonic() - last_event >= args.settle_s:
                break
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        thread.join(timeout=30)
        consumer.close()
    summary = {"frames_published": published[0], "alerts": alerts,
               "cameras": {k: {"read": c.read, "sampled": c.sampled, "dropped": dict(c.dropped)}
                           for k, c in counters.items()}}
    print("openlfr run summary: " + json.dumps(summary), file=sys.stderr)
    return 0
