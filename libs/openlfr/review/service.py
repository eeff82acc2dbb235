"""The glue the alert stage calls: keep each new alert and tell the live subscribers."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from openlfr.messages.models import Alert
from openlfr.review.events import EventHub
from openlfr.review.schemas import AlertPublic, ReviewEvent, ReviewStepPublic
from openlfr.review.store import Decision, ReviewOutcome, ReviewStore

logger = logging.getLogger(__name__)


class ReviewService:
    """Alerts into the store and onto the hub; reviews through the store and onto the hub.

    The per-deployment metrics read the store's tallies (``openlfr.review.metrics``), so they
    move with it and need no call here.

    Args:
        store: where alerts and reviews are kept.
        hub: the live subscribers (the console's stream).
    """

    def __init__(self, store: ReviewStore, hub: EventHub) -> None:
        self.store = store
        self.hub = hub

    def on_alert(self, alert: Alert) -> bool:
        """Keep a new alert and publish an ``alert`` event; True if it was new.

        Thread-safe and idempotent by ``alert_id`` (a replayed alert is neither stored again
        nor published again). Called by the alert stage for every alert it raises.
        """
        if not self.store.add_alert(alert):
            return False
        record = self.store.get(alert.alert_id)
        self.hub.publish("alert", AlertPublic.from_record(record).model_dump(mode="json"))
        return True

    def on_alerts(self, alerts: Iterable[Alert]) -> int:
        """:meth:`on_alert` for each; how many were new (for a backfill from the alerts topic)."""
        return sum(self.on_alert(alert) for alert in alerts)

    def review(
        self,
        alert_id: str,
        *,
        reviewer: str,
        decision: Decision,
        reason: str | None = None,
        expected_step: int | None = None,
        before_commit: Callable[[ReviewOutcome], None] | None = None,
    ) -> ReviewOutcome:
        """Record a review step (see :meth:`ReviewStore.review`) and publish a ``review`` event."""
        outcome = self.store.review(
            alert_id,
            reviewer=reviewer,
            decision=decision,
            reason=reason,
            expected_step=expected_step,
            before_commit=before_commit,
        )
        step = outcome.step
        event = ReviewEvent(
            alert_id=alert_id,
            previous_status=outcome.previous_status,
            step=ReviewStepPublic(
                step=step.step, reviewer=step.reviewer, decision=step.decision, reason=step.reason, ts=step.ts
            ),
            alert=AlertPublic.from_record(outcome.record),
        )
        self.hub.publish("review", event.model_dump(mode="json"))
        return outcome
