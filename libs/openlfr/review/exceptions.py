"""Errors of alert review, each mapped to one HTTP status by the API."""

from __future__ import annotations

from typing import Literal


class ReviewError(Exception):
    """Base of the review errors."""


class AlertNotFound(ReviewError, KeyError):
    """No alert record has this id (never received, or deleted under the record retention)."""

    def __init__(self, alert_id: str) -> None:
        super().__init__(alert_id)
        self.alert_id = alert_id

    def __str__(self) -> str:
        return f"no alert {self.alert_id!r}: never received, or its record was deleted under the retention period"


#: Why a review was refused: the alert is already final, the same person tried both steps,
#: the caller's view of the alert is out of date, or its crops are gone so it cannot be confirmed.
ConflictReason = Literal["final", "same_reviewer", "stale_step", "crops_purged"]


class ReviewConflict(ReviewError):
    """The review does not fit the alert's current state (HTTP 409)."""

    def __init__(self, reason: ConflictReason, detail: str) -> None:
        super().__init__(detail)
        self.reason: ConflictReason = reason
        self.detail = detail


class InvalidReview(ReviewError, ValueError):
    """The review itself is malformed: a reject without a reason, a reason too long (HTTP 422)."""


class ChipGone(ReviewError):
    """The crop asked for is not kept: deleted under the crop retention, or never sent."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class DeploymentNotFound(ReviewError, KeyError):
    """The registry does not know the deployment."""

    def __init__(self, deployment_id: str) -> None:
        super().__init__(deployment_id)
        self.deployment_id = deployment_id

    def __str__(self) -> str:
        return f"the registry has no deployment {self.deployment_id!r}"


class SubjectNotFound(ReviewError, KeyError):
    """The registry does not know the subject (never enrolled, or deleted)."""

    def __init__(self, subject_id: str) -> None:
        super().__init__(subject_id)
        self.subject_id = subject_id

    def __str__(self) -> str:
        return f"the registry has no subject {self.subject_id!r}"


class WatchlistNotFound(ReviewError, KeyError):
    """The registry does not know the watchlist (never created, or deleted)."""

    def __init__(self, watchlist_id: str) -> None:
        super().__init__(watchlist_id)
        self.watchlist_id = watchlist_id

    def __str__(self) -> str:
        return f"the registry has no watchlist {self.watchlist_id!r}"


class RegistryUnavailable(ReviewError):
    """The registry could not be asked (down, refusing, timing out, or refusing our token)."""


class HubFull(ReviewError):
    """The event hub already serves as many subscribers as it allows."""


class InvalidCursor(ReviewError, ValueError):
    """A list cursor that this store did not hand out."""


class ReviewApiError(ReviewError):
    """The review API answered a client (:mod:`openlfr.review.client`) with an error status.

    Attributes:
        status_code: the HTTP status.
        detail: the answer's ``detail``, or its text when it is not JSON.
        method: the request's method.
        path: the request's path.
    """

    def __init__(self, status_code: int, detail: object, *, method: str, path: str) -> None:
        self.status_code = status_code
        self.detail = detail
        self.method = method
        self.path = path
        super().__init__(f"{method} {path}: HTTP {status_code}: {self.message}")

    @property
    def message(self) -> str:
        """The detail in words."""
        from openlfr.api.errors import detail_words

        return detail_words(self.detail)


class ReviewApiUnreachable(ReviewError):
    """The review API could not be reached or did not answer in time."""
