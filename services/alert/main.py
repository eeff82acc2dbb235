"""alert service: matches -> deduplicated alerts, and the people who review them.

At start it reads the alerts topic back into its dedup state, so a restarted service (or a
replay of matches) never alerts twice, and into the review store, so an alert published just
before a crash is still reviewed. Every match is checked before it can alert: the match
stage's signature (OPENLFR_MATCH_SIGNING_KEY, required), its capture time against the clock
(OPENLFR_MAX_CLOCK_SKEW_S), and its deployment, subject and thresholds against the registry
(OPENLFR_REVIEW_REGISTRY_URL, required); a match that fails is dead-lettered with the reason.
Every new alert is stored for review (two-person
adjudication), streamed to open consoles, and counted per deployment. The service serves the
review API, the live stream and the operator console (``/console``) beside its probes, and
purges crops and records past their retention.

Env: OPENLFR_* (Kafka, HTTP, clock skew), OPENLFR_ALERT_* (dedup, registry cache),
OPENLFR_MATCH_SIGNING_KEY, OPENLFR_REVIEW_* (database, retention, registry), OPENLFR_API_TOKENS
and OPENLFR_AUDIT_LOG.
"""

from __future__ import annotations

import logging
import sys
import time

from pydantic import AnyHttpUrl

from openlfr.api.settings import ApiSettings
from openlfr.audit.service import ServiceAudit, open_service_audit
from openlfr.audit.settings import AuditSettings
from openlfr.kafka.admin import ensure_topics
from openlfr.kafka.replay import read_topic
from openlfr.messages.models import Alert
from openlfr.messages.signing import SigningSettings
from openlfr.messages.topics import ALERTS
from openlfr.pipeline.alert import AlertSettings, AlertStage
from openlfr.pipeline.match_trust import RegistryAuthority
from openlfr.pipeline.stage import Stage
from openlfr.review.api import make_review_router
from openlfr.review.events import EventHub
from openlfr.review.metrics import register_review_metrics
from openlfr.review.service import ReviewService
from openlfr.review.settings import ReviewSettings
from openlfr.review.retention import RetentionWorker
from openlfr.review.store import ReviewStore
from openlfr.service.main import HttpApi, run_stage_service
from openlfr.service.settings import ServiceSettings, load_settings

logger = logging.getLogger("openlfr.services.alert")


class AlertReviewSettings(ReviewSettings):
    """Review settings where the registry is required: every match is checked against it before it
    can alert (``openlfr.pipeline.match_trust``), so the service does not start without its URL."""

    #: The registry API's root (the match service's URL).
    registry_url: AnyHttpUrl


class ReviewedAlertStage(AlertStage):
    """The alert stage with its review store, event hub and retention worker."""

    def __init__(
        self,
        settings: AlertSettings,
        *,
        review_settings: ReviewSettings,
        api_settings: ApiSettings,
        audit: ServiceAudit,
        signing: SigningSettings,
        max_clock_skew_s: float,
    ) -> None:
        self.review_settings = review_settings
        self.api_settings = api_settings
        client = review_settings.registry_client()
        if client is None:
            raise ValueError("ReviewedAlertStage: the alert stage checks every match against the registry: "
                             "OPENLFR_REVIEW_REGISTRY_URL is required (AlertReviewSettings)")
        self.service_audit = audit
        self.audit = audit.log
        self.store = ReviewStore(
            review_settings.db_path,
            crop_retention_s=review_settings.crop_retention_s,
            record_retention_s=review_settings.record_retention_s,
        )
        self.hub = EventHub(queue_size=review_settings.stream_queue_size, max_subscribers=review_settings.max_streams)
        self.review = ReviewService(self.store, self.hub)
        self.retention = RetentionWorker(self.store, interval_s=review_settings.purge_interval_s, audit=self.audit)
        super().__init__(
            settings,
            signer=signing.signer(),
            authority=RegistryAuthority(client, cache_s=settings.registry_cache_s),
            max_clock_skew_s=max_clock_skew_s,
            on_alert=self.review.on_alert,
        )

    def ready(self) -> tuple[bool, str]:
        ok, reason = self.retention.check()
        if not ok:
            return ok, reason
        return super().ready()

    def close(self) -> None:
        self.hub.close()
        self.retention.close()
        self.store.close()
        self.service_audit.close()


def build(settings: ServiceSettings) -> ReviewedAlertStage:
    """The alert stage, its dedup state and review store restored from the alerts topic, and its
    audit log checked against the checkpoint topic."""
    api_settings = load_settings(ApiSettings)
    audit = open_service_audit(api_settings.audit_log, settings, load_settings(AuditSettings))
    stage = ReviewedAlertStage(
        load_settings(AlertSettings),
        review_settings=load_settings(AlertReviewSettings),
        api_settings=api_settings,
        audit=audit,
        signing=load_settings(SigningSettings),
        max_clock_skew_s=settings.max_clock_skew_s,
    )
    try:
        topic = settings.topic_name(ALERTS)
        kafka = settings.kafka_connection()
        if settings.create_topics:
            ensure_topics(kafka, {topic: ALERTS.partitions}, retention_ms=ALERTS.retention_ms,
                          timeout_s=settings.startup_timeout_s)
        published = read_topic(kafka, topic, Alert, timeout_s=settings.startup_timeout_s)
        restored = stage.restore(published, now=time.time())
        backfilled = stage.review.on_alerts(published)
    except BaseException:
        stage.close()
        raise
    logger.info('alert state restored from topic="%s" alerts="%d" stored_for_review="%d"', topic, restored, backfilled)
    return stage


def api(settings: ServiceSettings, stage: Stage) -> HttpApi:
    """The review API, live stream and console, served beside the probes."""
    assert isinstance(stage, ReviewedAlertStage)
    register_review_metrics(stage.store, stage.hub)
    access = stage.api_settings.access(stage.audit)
    router = make_review_router(
        stage.store,
        stage.hub,
        access,
        audit=stage.audit,
        registry_client=stage.review_settings.registry_client(),
        heartbeat_s=stage.review_settings.stream_heartbeat_s,
    )
    return HttpApi(
        routers=[router],
        title="OpenLFR alert service: alerts, review, console",
        max_body_bytes=min(stage.api_settings.max_body_bytes, 1024 * 1024),
        before_stop=stage.hub.close,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the service until SIGTERM."""
    return run_stage_service(
        build, ServiceSettings, argv,
        also_validate=(AlertSettings, AlertReviewSettings, ApiSettings, SigningSettings, AuditSettings), api=api,
    )


if __name__ == "__main__":
    sys.exit(main())
