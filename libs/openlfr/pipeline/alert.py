"""The alert stage: track-level matches -> deduplicated alerts for human review.

``alert_id`` is the first 32 hex digits of SHA-256 of ``"<camera_id>|<track_id>|<subject_id>"``:
a replayed match gives the same id. A match is suppressed (counted in ``dropped``) when

* ``duplicate``: its alert id was alerted before (kept ``id_retention_s`` of event time);
* ``cooldown``: the same subject was alerted on the same camera less than ``cooldown_s`` of
  event time (``capture_ts``) before or after it (a second track of one person in view);
* ``stale``: it is older than ``id_retention_s`` behind the newest event seen, so its id may
  have been forgotten and it can no longer be proven new.

The dedup state (``DedupState``) is rebuilt from the alerts already published
(``AlertStage.restore``): the Kafka service replays the alerts topic into it at start, so a
restarted service never alerts twice. Its memory is bounded in event time: ids older than
``id_retention_s`` and subject/camera pairs older than ``cooldown_s`` behind the newest event
are forgotten.

Re-delivery: when the runner hands over a batch again because its alerts were not all
acknowledged, each of its matches gives the outcome it gave the first time (the same alert,
or the same drop), not ``duplicate`` (``openlfr.pipeline.redelivery``); subscribers may
therefore see one alert id twice, and must treat ``alert_id`` as the key.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from openlfr.messages.models import Alert, Match
from openlfr.messages.topics import ALERTS, MATCHES
from openlfr.pipeline.redelivery import Outcome, RedeliveryCache
from openlfr.pipeline.stage import BatchResult, Incoming, Outgoing, Stage

logger = logging.getLogger(__name__)

Decision = Literal["new", "duplicate", "cooldown", "stale"]


def alert_id_for(*, camera_id: str, track_id: str, subject_id: str) -> str:
    """The deterministic alert id of a track's match with a subject."""
    return hashlib.sha256(f"{camera_id}|{track_id}|{subject_id}".encode()).hexdigest()[:32]


class AlertSettings(BaseSettings):
    """Settings of the alert stage (env ``OPENLFR_ALERT_<NAME>``)."""

    model_config = SettingsConfigDict(env_prefix="OPENLFR_ALERT_", frozen=True, extra="ignore")

    #: One alert per subject and camera within this much event time.
    cooldown_s: float = Field(default=300.0, ge=0, le=7 * 86400)
    #: Alert ids are remembered this long (event time); older matches are dropped as stale.
    id_retention_s: float = Field(default=86400.0, gt=0, le=30 * 86400)

    @model_validator(mode="after")
    def _consistent(self) -> AlertSettings:
        if self.id_retention_s < self.cooldown_s:
            raise ValueError("id_retention_s must be >= cooldown_s")
        return self


class DedupState:
    """Which alerts were published: ids and the last alert time per subject and camera.

    Times are event times (``capture_ts``). ``watermark`` is the newest one recorded.

    Args:
        cooldown_s: window of one alert per subject and camera.
        retention_s: how long ids are remembered behind the watermark.
    """

    def __init__(self, *, cooldown_s: float, retention_s: float) -> None:
        if cooldown_s < 0 or retention_s <= 0 or retention_s < cooldown_s:
            raise ValueError(
                f"DedupState: need 0 <= cooldown_s <= retention_s and retention_s > 0, "
                f"got cooldown_s={cooldown_s} retention_s={retention_s}"
            )
        self.cooldown_s = cooldown_s
        self.retention_s = retention_s
        self.watermark: float | None = None
        self._ids: dict[str, float] = {}
        self._pairs: dict[tuple[str, str], float] = {}

    def __len__(self) -> int:
        """Alert ids remembered."""
        return len(self._ids)

    @property
    def pairs(self) -> int:
        """Subject/camera pairs remembered."""
        return len(self._pairs)

    def check(self, *, alert_id: str, subject_id: str, camera_id: str, event_ts: float) -> Decision:
        """Whether an alert would be new, or why it is suppressed. Changes nothing."""
        if alert_id in self._ids:
            return "duplicate"
        if self.watermark is not None and event_ts < self.watermark - self.retention_s:
            return "stale"
        last = self._pairs.get((subject_id, camera_id))
        if last is not None and abs(event_ts - last) < self.cooldown_s:
            return "cooldown"
        return "new"

    def record(self, *, alert_id: str, subject_id: str, camera_id: str, event_ts: float) -> None:
        """Remember a published alert."""
        self._ids[alert_id] = max(event_ts, self._ids.get(alert_id, event_ts))
        key = (subject_id, camera_id)
        self._pairs[key] = max(event_ts, self._pairs.get(key, event_ts))
        self.watermark = event_ts if self.watermark is None else max(self.watermark, event_ts)

    def record_alert(self, alert: Alert) -> None:
        """Remember a published alert message."""
        self.record(
            alert_id=alert.alert_id, subject_id=alert.subject_id, camera_id=alert.camera_id, event_ts=alert.capture_ts
        )

    def prune(self) -> None:
        """Forget ids older than the retention and pairs older than the cooldown (event time)."""
        if self.watermark is None:
            return
        id_floor = self.watermark - self.retention_s
        pair_floor = self.watermark - self.cooldown_s
        self._ids = {k: ts for k, ts in self._ids.items() if ts >= id_floor}
        self._pairs = {k: ts for k, ts in self._pairs.items() if ts >= pair_floor}


class AlertStage(Stage[Match]):
    """Matches -> Alerts, never the same alert twice.

    Args:
        settings: cooldown and id retention.
        on_alert: called with every new alert as it is raised (the alert service stores it for
            review and streams it); it must be idempotent by ``alert_id``, since a batch whose
            alerts were not acknowledged is handled again.
    """

    name = "alert"
    input_topic = MATCHES
    output_topics = (ALERTS,)
    input_model = Match
    output_topic = ALERTS

    def __init__(self, settings: AlertSettings, *, on_alert: Callable[[Alert], object] | None = None) -> None:
        self.settings = settings
        self.on_alert = on_alert
        self.state = DedupState(cooldown_s=settings.cooldown_s, retention_s=settings.id_retention_s)
        self._redelivery = RedeliveryCache()

    def restore(self, alerts: Iterable[Alert]) -> int:
        """Rebuild the dedup state from alerts already published (in any order); returns how
        many were read."""
        n = 0
        for alert in alerts:
            self.state.record_alert(alert)
            n += 1
        self.state.prune()
        logger.info('alert dedup state restored alerts="%d" ids="%d" pairs="%d"', n, len(self.state), self.state.pairs)
        return n

    def handle(self, batch: Sequence[Incoming[Match]], *, now: float) -> BatchResult:
        result = BatchResult()
        replays = [self._redelivery.get(incoming) for incoming in batch]
        self._redelivery.forget_before(batch)
        for incoming, replay in zip(batch, replays, strict=True):
            if replay is None:
                replay = self._decide(incoming.message, now=now)
                self._redelivery.put(incoming, replay)
            replay.add_to(result, incoming)
        self.state.prune()
        return result

    def _decide(self, match: Match, *, now: float) -> Outcome:
        outcome = Outcome()
        alert_id = alert_id_for(camera_id=match.camera_id, track_id=match.track_id, subject_id=match.subject_id)
        decision = self.state.check(
            alert_id=alert_id, subject_id=match.subject_id, camera_id=match.camera_id, event_ts=match.capture_ts
        )
        if decision != "new":
            outcome.drop(decision)
            logger.info(
                'match suppressed camera_id="%s" track_id="%s" reason="%s"', match.camera_id, match.track_id, decision
            )
            return outcome
        alert = Alert(
            camera_id=match.camera_id,
            frame_id=match.frame_id,
            capture_ts=match.capture_ts,
            trace_id=match.trace_id,
            alert_id=alert_id,
            track_id=match.track_id,
            subject_id=match.subject_id,
            watchlist_id=match.watchlist_id,
            score=match.score,
            margin=match.margin,
            threshold=match.threshold,
            probe_chip_jpeg=match.probe_chip_jpeg,
            reference_image_id=match.reference_image_id,
            embedder_model=match.embedder_model,
            alert_ts=now,
            deployment_id=match.deployment_id,
            reference_chip_jpeg=match.reference_chip_jpeg,
            normalised_score=match.normalised_score,
            normalised_threshold=match.normalised_threshold,
            cohort=match.cohort,
        )
        self.state.record_alert(alert)
        if self.on_alert is not None:
            self.on_alert(alert)
        outcome.outputs.append(Outgoing(topic=ALERTS, key=match.camera_id, message=alert))
        logger.info(
            'alert raised camera_id="%s" track_id="%s" alert_id="%s"', match.camera_id, match.track_id, alert_id
        )
        return outcome
