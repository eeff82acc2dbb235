"""A small client of the review API (``openlfr.review.api``), served by the alert service.

Every call has a timeout; an error status raises :class:`ReviewApiError` with the status and
the answer's detail, and a connection failure or timeout :class:`ReviewApiUnreachable`.
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Any

import httpx

from openlfr.review.exceptions import ReviewApiError, ReviewApiUnreachable
from openlfr.review.schemas import AlertPagePublic, AlertPublic, ReviewCreate
from openlfr.review.store import Status

logger = logging.getLogger(__name__)


class ReviewClient:
    """Calls the review API with a bearer token.

    Args:
        base_url: e.g. ``http://alert:8081``.
        token: the caller's API token; never logged.
        timeout_s: timeout of every call.
    """

    def __init__(self, base_url: str, token: str, *, timeout_s: float = 30.0) -> None:
        if not token:
            raise ValueError("ReviewClient.token: must not be empty")
        if not timeout_s > 0:
            raise ValueError(f"ReviewClient.timeout_s: expected > 0, got {timeout_s}")
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"), timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0)),
            headers={"Authorization": f"Bearer {token}"},
        )

    def __enter__(self) -> ReviewClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def _request(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None) -> Any:
        try:
            response = self._http.request(method, path, json=json, params=params)
        except httpx.TransportError as exc:
            raise ReviewApiUnreachable(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        if response.is_error:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise ReviewApiError(response.status_code, detail, method=method, path=path)
        return response.json()

    def list_alerts(
        self, *, status: Status | None = None, deployment_id: str | None = None, camera_id: str | None = None,
        since: float | None = None, until: float | None = None, limit: int = 50, cursor: str | None = None,
        needs_my_review: bool = False,
    ) -> AlertPagePublic:
        """One page of alerts, newest first (``needs_my_review``: only those the caller may review now)."""
        params = {
            "status": status, "deployment_id": deployment_id, "camera_id": camera_id, "since": since,
            "until": until, "limit": limit, "cursor": cursor, "needs_my_review": "true" if needs_my_review else None,
        }
        data = self._request("GET", "/v1/alerts", params={k: v for k, v in params.items() if v is not None})
        return AlertPagePublic.model_validate(data)

    def get_alert(self, alert_id: str) -> AlertPublic:
        """One alert with its review steps."""
        return AlertPublic.model_validate(self._request("GET", f"/v1/alerts/{alert_id}"))

    def review(self, alert_id: str, body: ReviewCreate) -> AlertPublic:
        """Make one review step; the alert after it."""
        data = self._request("POST", f"/v1/alerts/{alert_id}/reviews",
                             json=body.model_dump(mode="json", exclude_none=True))
        return AlertPublic.model_validate(data)
