"""What the review store hands out: alert records and their review steps, crops, pages,
summaries, review outcomes, tallies and purge results (``openlfr.review.store`` keeps them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

Status = Literal["pending", "awaiting_second", "confirmed", "rejected"]
STATUSES: tuple[Status, ...] = get_args(Status)
FINAL_STATUSES: frozenset[Status] = frozenset({"confirmed", "rejected"})
Decision = Literal["confirm", "reject"]
DECISIONS: tuple[Decision, ...] = get_args(Decision)


@dataclass(frozen=True, slots=True)
class ReviewStep:
    """One review of an alert.

    Attributes:
        step: 1 for the first review, 2 for the second.
        reviewer: the token holder who made it.
        decision: ``confirm`` or ``reject``.
        reason: the reason of a reject (always given) or the note of a confirm (optional).
        ts: when it was made (epoch seconds).
    """

    step: int
    reviewer: str
    decision: Decision
    reason: str | None
    ts: float


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """A stored alert without its crops: the alert's fields, its review state and steps.

    Attributes:
        received_ts: when this store received it.
        status_ts: when its status last changed (``received_ts`` while pending).
        has_probe, has_reference: whether the crops are still kept.
        had_reference: whether the alert came with a reference crop at all.
        crops_purged_ts: when its crops were deleted under the crop retention, or None.
        has_scene: whether the probe's scene crop is kept (never sent, or deleted with the crops).
    """

    alert_id: str
    deployment_id: str | None
    camera_id: str
    frame_id: str
    trace_id: str
    track_id: str
    subject_id: str
    watchlist_id: str
    capture_ts: float
    alert_ts: float
    received_ts: float
    score: float
    margin: float
    threshold: float
    reference_image_id: str | None
    embedder_model: str
    status: Status
    status_ts: float
    has_probe: bool
    has_reference: bool
    had_reference: bool
    crops_purged_ts: float | None
    reviews: tuple[ReviewStep, ...] = ()
    has_scene: bool = False

    @property
    def final(self) -> bool:
        """Whether the review is over (confirmed or rejected)."""
        return self.status in FINAL_STATUSES

    @property
    def next_step(self) -> int | None:
        """The review step the alert waits for (1 or 2), or None when final."""
        return {"pending": 1, "awaiting_second": 2}.get(self.status)


@dataclass(frozen=True, slots=True)
class Chips:
    """The crops of an alert, None where not kept."""

    probe: bytes | None
    reference: bytes | None
    had_reference: bool
    crops_purged_ts: float | None
    scene: bytes | None = None


@dataclass(frozen=True, slots=True)
class AlertPage:
    """One page of a list, newest first; ``next_cursor`` continues it (None at the end)."""

    records: tuple[AlertRecord, ...]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class AlertSummary:
    """How many alerts are in each state, and how many one reviewer may review next.

    Attributes:
        statuses: alerts per status (every status present, 0 when none).
        needs_review: alerts ``reviewer`` may review now (see :meth:`ReviewStore.list_alerts`'s
            ``needs_review_by``); 0 when no reviewer was named.
        cameras, deployments: every camera and deployment id of a kept record, sorted (the
            filters' choices; alerts without a deployment are not listed).
    """

    statuses: dict[Status, int]
    needs_review: int
    cameras: tuple[str, ...]
    deployments: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ReviewOutcome:
    """What a review did: the step recorded, the alert after it, and its status before."""

    step: ReviewStep
    record: AlertRecord
    previous_status: Status


@dataclass(frozen=True, slots=True)
class Tallies:
    """The running counts of one deployment (``NO_DEPLOYMENT`` for alerts without one).

    ``alerts`` counts every alert ever received; ``confirmed`` and ``rejected`` final outcomes;
    ``awaiting_second`` alerts with one confirm waiting for the second review.
    """

    deployment_id: str
    alerts: int = 0
    confirmed: int = 0
    rejected: int = 0
    awaiting_second: int = 0

    @property
    def adjudicated(self) -> int:
        """Alerts with a final outcome."""
        return self.confirmed + self.rejected

    @property
    def unadjudicated(self) -> int:
        """Alerts without a final outcome (pending, and awaiting the second review)."""
        return self.alerts - self.adjudicated

    @property
    def pending(self) -> int:
        """Alerts no one has reviewed yet."""
        return self.alerts - self.adjudicated - self.awaiting_second

    @property
    def precision(self) -> float | None:
        """confirmed / (confirmed + rejected), or None when nothing is adjudicated."""
        return self.confirmed / self.adjudicated if self.adjudicated else None

    @property
    def false_alert_share(self) -> float | None:
        """rejected / (confirmed + rejected), or None when nothing is adjudicated."""
        return self.rejected / self.adjudicated if self.adjudicated else None


@dataclass(frozen=True, slots=True)
class PurgeResult:
    """What a purge deleted: crops of ``crops`` alerts, ``records`` whole alert records."""

    crops: int
    records: int
    crop_cutoff_ts: float
    record_cutoff_ts: float
