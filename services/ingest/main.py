"""ingest service: cameras, streams and video files -> the frames topic.

Env: OPENLFR_BOOTSTRAP, OPENLFR_CAMERAS ("cam-1=rtsp://host/stream;cam-2=/data/video.mp4"),
OPENLFR_SAMPLE_FPS, ... (see IngestServiceSettings). Live sources never queue more than
OPENLFR_QUEUE_SIZE frames: the oldest is dropped and counted.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from types import FrameType

from prometheus_client import REGISTRY

from openlfr.kafka.admin import KafkaAdminError, wait_for_broker
from openlfr.pipeline.ingest_service import IngestServiceSettings, run_ingest
from openlfr.service.http import make_health_app, run_http_in_thread
from openlfr.service.main import configure_logging
from openlfr.service.settings import load_settings, settings_help

logger = logging.getLogger("openlfr.services.ingest")


def main(argv: list[str] | None = None) -> int:
    """Run until SIGTERM (or until every source ends: video files without looping)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=settings_help([IngestServiceSettings]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check-config", action="store_true", help="validate the settings and exit")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(IngestServiceSettings)
    except SystemExit as exc:
        return int(exc.code or 0)
    if args.check_config:
        sys.stdout.write("settings ok\n")
        return 0
    configure_logging(settings.log_level)
    stop = threading.Event()
    kafka = settings.kafka_connection()

    def broker() -> tuple[bool, str]:
        try:
            wait_for_broker(kafka, 2.0)
            return True, "ok"
        except KafkaAdminError as exc:
            return False, str(exc)

    http = run_http_in_thread(make_health_app(ready={"broker": broker}, registry=REGISTRY),
                              settings.http_host, settings.http_port)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        logger.info('stop requested signal="%s"', signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    try:
        counters = run_ingest(settings, stop)
    except KafkaAdminError as exc:
        logger.error('ingest could not start error="%s"', exc)
        return 1
    finally:
        http.stop()
    for camera_id, c in counters.items():
        logger.info('camera_id="%s" read="%d" sampled="%d" published="%d" dropped="%s"',
                    camera_id, c.read, c.sampled, c.published, dict(c.dropped))
    return 0


if __name__ == "__main__":
    sys.exit(main())
