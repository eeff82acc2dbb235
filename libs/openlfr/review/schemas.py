"""What the review API sends and accepts (named by direction), and the events' payloads."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from openlfr.api.auth import Role
from openlfr.api.text import free_text
from openlfr.review.store import MAX_REASON_CHARS, AlertRecord, AlertSummary, Decision, Status

#: Where the API serves an alert's crops (relative to the API's root).
PROBE_PATH = "/v1/alerts/{alert_id}/probe.jpg"
REFERENCE_PATH = "/v1/alerts/{alert_id}/reference.jpg"
SCENE_PATH = "/v1/alerts/{alert_id}/scene.jpg"


class ReviewStepPublic(BaseModel):
    """One review of an alert."""

    model_config = ConfigDict(frozen=True)

    step: int = Field(description="1 for the first review, 2 for the second")
    reviewer: str = Field(description="who made it (the token holder's name)")
    decision: Decision
    reason: str | None = Field(description="the reason of a reject, or the optional note of a confirm")
    ts: float = Field(description="when it was made, epoch seconds (UTC)")


class AlertPublic(BaseModel):
    """An alert record with its review state and steps; the crops are at ``probe_url``,
    ``reference_url`` and ``scene_url`` (null once deleted under the crop retention, or when
    never sent)."""

    model_config = ConfigDict(frozen=True)

    alert_id: str
    deployment_id: str | None
    camera_id: str
    frame_id: str
    trace_id: str
    track_id: str
    subject_id: str
    watchlist_id: str
    capture_ts: float = Field(description="capture time of the probe face, epoch seconds (UTC)")
    alert_ts: float = Field(description="when the alert stage raised it")
    received_ts: float = Field(description="when the review store received it")
    score: float
    margin: float
    threshold: float
    reference_image_id: str | None
    embedder_model: str = Field(description="the model version that made the match")
    status: Status = Field(description="pending, awaiting_second, confirmed (actionable) or rejected")
    status_ts: float = Field(description="when the status last changed")
    next_step: int | None = Field(description="the review step it waits for (1 or 2), null when final")
    reviews: list[ReviewStepPublic]
    probe_url: str | None
    reference_url: str | None
    scene_url: str | None = Field(
        default=None, description="the probe face in its scene (JPEG), while kept; null when scene crops were off"
    )
    crops_purged_ts: float | None = Field(description="when the crops were deleted under the retention period")

    @classmethod
    def from_record(cls, record: AlertRecord) -> AlertPublic:
        """The public form of a stored record."""
        return cls(
            alert_id=record.alert_id,
            deployment_id=record.deployment_id,
            camera_id=record.camera_id,
            frame_id=record.frame_id,
            trace_id=record.trace_id,
            track_id=record.track_id,
            subject_id=record.subject_id,
            watchlist_id=record.watchlist_id,
            capture_ts=record.capture_ts,
            alert_ts=record.alert_ts,
            received_ts=record.received_ts,
            score=record.score,
            margin=record.margin,
            threshold=record.threshold,
            reference_image_id=record.reference_image_id,
            embedder_model=record.embedder_model,
            status=record.status,
            status_ts=record.status_ts,
            next_step=record.next_step,
            reviews=[
                ReviewStepPublic(step=s.step, reviewer=s.reviewer, decision=s.decision, reason=s.reason, ts=s.ts)
                for s in record.reviews
            ],
            probe_url=PROBE_PATH.format(alert_id=record.alert_id) if record.has_probe else None,
            reference_url=REFERENCE_PATH.format(alert_id=record.alert_id) if record.has_reference else None,
            scene_url=SCENE_PATH.format(alert_id=record.alert_id) if record.has_scene else None,
            crops_purged_ts=record.crops_purged_ts,
        )


class AlertPagePublic(BaseModel):
    """One page of alerts, newest first; pass ``next_cursor`` as ``cursor`` for the next."""

    items: list[AlertPublic]
    next_cursor: str | None


class ReviewCreate(BaseModel):
    """One review step. A reject needs a ``reason``; a confirm may carry one as a note."""

    model_config = ConfigDict(extra="forbid")

    decision: Literal["confirm", "reject"]
    reason: Annotated[str, AfterValidator(free_text)] | None = Field(default=None, max_length=MAX_REASON_CHARS)
    step: Literal[1, 2] | None = Field(
        default=None,
        description="the step the reviewer believes they make; when given and the alert has moved on, 409",
    )


class ReviewEvent(BaseModel):
    """The ``review`` event of the stream: the step just made and the alert after it."""

    alert_id: str
    previous_status: Status
    step: ReviewStepPublic
    alert: AlertPublic


class MePublic(BaseModel):
    """Who the token belongs to, and whether they may review at all."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="the token holder's name (the reviewer name their reviews are recorded under)")
    roles: list[Role] = Field(description="the token's roles, sorted")
    may_review: bool = Field(
        description="whether the token has the reviewer role; a reviewer may make the first step of a pending "
        "alert and the second step of an alert whose first step someone else made"
    )


class AlertSummaryPublic(BaseModel):
    """Counts per status, what the caller may review now, and the ids there are to filter by."""

    model_config = ConfigDict(frozen=True)

    statuses: dict[Status, int] = Field(description="alerts per status (with the camera/deployment filters)")
    needs_my_review: int = Field(
        description="alerts the caller may review now (0 for a token without the reviewer role)"
    )
    cameras: list[str] = Field(description="camera ids of the kept alerts, sorted")
    deployments: list[str] = Field(description="deployment ids of the kept alerts, sorted")

    @classmethod
    def from_summary(cls, summary: AlertSummary) -> AlertSummaryPublic:
        return cls(
            statuses=summary.statuses,
            needs_my_review=summary.needs_review,
            cameras=list(summary.cameras),
            deployments=list(summary.deployments),
        )


class AlertSubjectPublic(BaseModel):
    """What the registry says of the subject an alert names: why they are on the watchlist and
    until when (read from the registry when asked, not kept with the alert)."""

    model_config = ConfigDict(frozen=True)

    subject_id: str
    category: str = Field(description="wanted, suspect, missing_person, vulnerable_person, risk_to_self_or_others")
    legal_basis: str = Field(description="the law or warrant the subject's entry rests on")
    expires_ts: float = Field(description="when the entry expires, epoch seconds (UTC)")
    expired: bool
    status: str = Field(description="the entry's status in the registry (active, suspended)")
