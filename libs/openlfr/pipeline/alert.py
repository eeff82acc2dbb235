"""The alert stage: track-level matches -> deduplicated alerts for human review.

Before a match can become an alert it must prove itself; otherwise the runner dead-letters it with
the reason, counted in ``openlfr_alert_matches_refused_total{reason}``:

* ``bad_signature``: its ``sig`` is not the match stage's HMAC of the record under
  ``OPENLFR_MATCH_SIGNING_KEY`` (``openlfr.messages.signing``): written by anyone else;
* ``clock_ahead``: its capture time is more than ``OPENLFR_MAX_CLOCK_SKEW_S`` ahead of this
  stage's clock (``openlfr.pipeline.event_time``; also counted per camera);
* the registry's checks (``openlfr.pipeline.match_trust``): the deployment and the subject exist,
  the deployment covers the camera at the capture time and searches the watchlist, the subject is
  on it, neither is suspended (nor the subject expired), and the thresholds are not below the
  deployment's. The registry not answering pauses the stage (``BackendUnavailable``): nothing is
  alerted unchecked, nothing dropped.

``alert_id`` is the first 32 hex digits of SHA-256 of ``"<camera_id>|<track_id>|<subject_id>"``:
a replayed match gives the same id. A match is suppressed (counted in ``dropped``) when

* ``duplicate``: its alert id was alerted before (kept ``id_retention_s`` of event time);
* ``cooldown``: the same subject was alerted on the same camera less than ``cooldown_s`` of
  event time (``capture_ts``) before or after it (a second track of one person in view);
* ``stale``: it is older than ``id_retention_s`` behind the newest event seen on its camera,
  so its id may have been forgotten and it can no longer be proven new.

Event time is kept per camera (one watermark each): no camera's time, right or wrong, moves
another's. The dedup state (``DedupState``) is rebuilt from the alerts already published
(``AlertStage.restore``): the Kafka service replays the alerts topic into it at start, so a
restarted service never alerts twice; an alert published with a capture time ahead of the clock
(by a version without the check) is remembered by id but moves its camera's watermark no further
than the clock plus the skew. Memory is bounded in event time: per camera, ids older than
``id_retention_s`` and subject pairs older than ``cooldown_s`` behind its watermark are forgotten.

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

from prometheus_client import CollectorRegistry, Counter
from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from openlfr.messages.models import Alert, Match
from openlfr.messages.signing import SIGNING_KEY_SETTING, MatchSigner
from openlfr.messages.topics import ALERTS, MATCHES
from openlfr.pipeline.event_time import DEFAULT_MAX_CLOCK_SKEW_S, FutureGuard
from openlfr.pipeline.match_trust import MatchAuthority, check_match
from openlfr.pipeline.redelivery import Outcome, RedeliveryCache
from openlfr.pipeline.stage import BatchResult, Incoming, Outgoing, Stage
from openlfr.prom import metrics_for

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
    #: How long the registry's answer about a deployment or subject is reused (0: ask per match).
    registry_cache_s: float = Field(default=30.0, ge=0, le=3600)

    @model_validator(mode="after")
    def _consistent(self) -> AlertSettings:
        if self.id_retention_s < self.cooldown_s:
            raise ValueError("id_retention_s must be >= cooldown_s")
        return self


class DedupState:
    """Which alerts were published: ids and the last alert time per subject and camera.

    Times are event times (``capture_ts``), kept per camera: ``watermark(camera_id)`` is the
    newest one recorded for that camera, and no camera's watermark moves another's.

    Args:
        cooldown_s: window of one alert per subject and camera.
        retention_s: how long ids are remembered behind their camera's watermark.
    """

    def __init__(self, *, cooldown_s: float, retention_s: float) -> None:
        if cooldown_s < 0 or retention_s <= 0 or retention_s < cooldown_s:
            raise ValueError(
                f"DedupState: need 0 <= cooldown_s <= retention_s and retention_s > 0, "
                f"got cooldown_s={cooldown_s} retention_s={retention_s}"
            )
        self.cooldown_s = cooldown_s
        self.retention_s = retention_s
        self._watermarks: dict[str, float] = {}
        self._ids: dict[str, tuple[str, float]] = {}
        self._pairs: dict[tuple[str, str], float] = {}

    def __len__(self) -> int:
        """Alert ids remembered."""
        return len(self._ids)

    @property
    def pairs(self) -> int:
        """Subject/camera pairs remembered."""
        return len(self._pairs)

    def watermark(self, camera_id: str) -> float | None:
        """The newest event time recorded for a camera (None before its first)."""
        return self._watermarks.get(camera_id)

    def check(self, *, alert_id: str, subject_id: str, camera_id: str, event_ts: float) -> Decision:
        """Whether an alert would be new, or why it is suppressed. Changes nothing."""
        if alert_id in self._ids:
            return "duplicate"
        watermark = self._watermarks.get(camera_id)
        if watermark is not None and event_ts < watermark - self.retention_s:
            return "stale"
        last = self._pairs.get((subject_id, camera_id))
        if last is not None and abs(event_ts - last) < self.cooldown_s:
            return "cooldown"
        return "new"

    def record(
        self, *, alert_id: str, subject_id: str, camera_id: str, event_ts: float, watermark_limit: float | None = None
    ) -> None:
        """Remember a published alert; its camera's watermark moves to ``event_ts``, but not past
        ``watermark_limit`` when one is given (an event time not to be trusted that far)."""
        self._ids[alert_id] = (camera_id, max(event_ts, self._ids.get(alert_id, (camera_id, event_ts))[1]))
        key = (subject_id, camera_id)
        self._pairs[key] = max(event_ts, self._pairs.get(key, event_ts))
        mark = event_ts if watermark_limit is None else min(event_ts, watermark_limit)
        self._watermarks[camera_id] = max(mark, self._watermarks.get(camera_id, mark))

    def record_alert(self, alert: Alert, *, watermark_limit: float | None = None) -> None:
        """Remember a published alert message."""
        self.record(
            alert_id=alert.alert_id, subject_id=alert.subject_id, camera_id=alert.camera_id,
            event_ts=alert.capture_ts, watermark_limit=watermark_limit,
        )

    def prune(self) -> None:
        """Forget ids older than the retention and pairs older than the cooldown, each behind its
        camera's watermark (event time)."""
        marks = self._watermarks
        self._ids = {k: (cam, ts) for k, (cam, ts) in self._ids.items() if ts >= marks[cam] - self.retention_s}
        self._pairs = {k: ts for k, ts in self._pairs.items() if ts >= marks[k[1]] - self.cooldown_s}


class _RefusedMetrics:
    """``openlfr_alert_matches_refused_total``, one per Prometheus registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.counter = Counter(
            "openlfr_alert_matches_refused_total",
            "Matches the alert stage refused (dead-lettered) instead of alerting, by reason: bad_signature, "
            "clock_ahead, unknown_deployment, outside_deployment, watchlist_not_deployed, unknown_subject, "
            "subject_not_on_watchlist, below_threshold.",
            ["reason"],
            registry=registry,
        )


class AlertStage(Stage[Match]):
    """Matches -> Alerts, never the same alert twice, never one the match stage did not sign or
    the registry does not back.

    Args:
        settings: cooldown and id retention.
        signer: verifies the match stage's signatures (``OPENLFR_MATCH_SIGNING_KEY``).
        authority: the registry's deployments and subjects (``openlfr.pipeline.match_trust``).
        max_clock_skew_s: matches captured more than this ahead of the stage's clock are refused
            (``openlfr.pipeline.event_time``); None turns the check off (files replayed faster
            than real time).
        on_alert: called with every new alert as it is raised (the alert service stores it for
            review and streams it); it must be idempotent by ``alert_id``, since a batch whose
            alerts were not acknowledged is handled again.
        registry: where the refusal counters are registered.
    """

    name = "alert"
    input_topic = MATCHES
    output_topics = (ALERTS,)
    input_model = Match
    output_topic = ALERTS

    def __init__(
        self,
        settings: AlertSettings,
        *,
        signer: MatchSigner,
        authority: MatchAuthority,
        max_clock_skew_s: float | None = DEFAULT_MAX_CLOCK_SKEW_S,
        on_alert: Callable[[Alert], object] | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.signer = signer
        self.authority = authority
        self.on_alert = on_alert
        self.state = DedupState(cooldown_s=settings.cooldown_s, retention_s=settings.id_retention_s)
        self._future = FutureGuard(stage=self.name, max_skew_s=max_clock_skew_s, registry=registry)
        self._refused = metrics_for(_RefusedMetrics, registry).counter
        self._redelivery = RedeliveryCache()

    def restore(self, alerts: Iterable[Alert], *, now: float) -> int:
        """Rebuild the dedup state from alerts already published (in any order); returns how
        many were read. An alert captured more than the skew ahead of ``now`` is remembered by
        id, but moves its camera's watermark only to ``now`` plus the skew."""
        limit = self._future.limit(now)
        n = ahead = 0
        for alert in alerts:
            if limit is not None and alert.capture_ts > limit:
                ahead += 1
                logger.warning(
                    'published alert captured ahead of the clock; its camera\'s watermark is held at the skew '
                    'alert_id="%s" camera_id="%s" ahead_s="%.1f"',
                    alert.alert_id, alert.camera_id, alert.capture_ts - now,
                )
            self.state.record_alert(alert, watermark_limit=limit)
            n += 1
        self.state.prune()
        logger.info('alert dedup state restored alerts="%d" ids="%d" pairs="%d" ahead_of_clock="%d"',
                    n, len(self.state), self.state.pairs, ahead)
        return n

    def handle(self, batch: Sequence[Incoming[Match]], *, now: float) -> BatchResult:
        """Decide each match; a registry that does not answer raises ``BackendUnavailable``
        before any state changes (the registry is asked first for the whole batch)."""
        result = BatchResult()
        replays = [self._redelivery.get(incoming) for incoming in batch]
        for incoming, replay in zip(batch, replays, strict=True):
            if replay is None and self.signer.verify(incoming.message):
                self.authority.deployment(incoming.message.deployment_id)
                self.authority.subject(incoming.message.subject_id)
                self.authority.watchlist(incoming.message.watchlist_id)
        self._redelivery.forget_before(batch)
        for incoming, replay in zip(batch, replays, strict=True):
            if replay is None:
                replay = self._decide(incoming.message, now=now)
                self._redelivery.put(incoming, replay)
            replay.add_to(result, incoming)
        self.state.prune()
        return result

    def ready(self) -> tuple[bool, str]:
        return self.authority.ready()

    def _refuse(self, outcome: Outcome, match: Match, reason: str, detail: str) -> Outcome:
        self._refused.labels(reason).inc()
        outcome.rejected = f"{reason}: {detail}"
        logger.warning(
            'match refused camera_id="%s" track_id="%s" deployment_id="%s" reason="%s" detail="%s"',
            match.camera_id, match.track_id, match.deployment_id, reason, detail,
        )
        return outcome

    def _decide(self, match: Match, *, now: float) -> Outcome:
        outcome = Outcome()
        # The signature first: nothing of an unauthenticated record (its camera id included)
        # reaches the registry, the counters' labels or the state.
        if not self.signer.verify(match):
            return self._refuse(outcome, match, "bad_signature",
                                f"sig is not the match stage's signature under {SIGNING_KEY_SETTING}")
        ahead = self._future.refuse(camera_id=match.camera_id, capture_ts=match.capture_ts, now=now)
        if ahead is not None:
            return self._refuse(outcome, match, "clock_ahead", ahead)
        refusal = check_match(match, deployment=self.authority.deployment(match.deployment_id),
                              subject=self.authority.subject(match.subject_id),
                              watchlist=self.authority.watchlist(match.watchlist_id))
        if refusal is not None:
            return self._refuse(outcome, match, *refusal)
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
            lateness_s=match.lateness_s,
            scene_jpeg=match.scene_jpeg,
        )
        self.state.record_alert(alert)
        if self.on_alert is not None:
            self.on_alert(alert)
        outcome.outputs.append(Outgoing(topic=ALERTS, key=match.camera_id, message=alert))
        logger.info(
            'alert raised camera_id="%s" track_id="%s" alert_id="%s"', match.camera_id, match.track_id, alert_id
        )
        return outcome
