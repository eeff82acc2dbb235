"""alert service: matches -> deduplicated alerts on the alerts topic.

At start it reads the alerts topic back into its dedup state, so a restarted service (or a
replay of matches) never alerts twice. Env: OPENLFR_* and OPENLFR_ALERT_*.
"""

from __future__ import annotations

import logging
import sys

from openlfr.kafka.admin import ensure_topics
from openlfr.kafka.replay import read_topic
from openlfr.messages.models import Alert
from openlfr.messages.topics import ALERTS
from openlfr.pipeline.alert import AlertSettings, AlertStage
from openlfr.service.main import run_stage_service
from openlfr.service.settings import ServiceSettings, load_settings

logger = logging.getLogger("openlfr.services.alert")


def build(settings: ServiceSettings) -> AlertStage:
    """The alert stage, its dedup state restored from the alerts already published."""
    stage = AlertStage(load_settings(AlertSettings))
    topic = settings.topic_name(ALERTS)
    if settings.create_topics:
        ensure_topics(settings.bootstrap, {topic: ALERTS.partitions}, retention_ms=ALERTS.retention_ms,
                      timeout_s=settings.startup_timeout_s)
    restored = stage.restore(read_topic(settings.bootstrap, topic, Alert, timeout_s=settings.startup_timeout_s))
    logger.info('alert dedup restored from topic="%s" alerts="%d"', topic, restored)
    return stage


def main(argv: list[str] | None = None) -> int:
    """Run the service until SIGTERM."""
    return run_stage_service(build, ServiceSettings, argv, also_validate=(AlertSettings,))


if __name__ == "__main__":
    sys.exit(main())
