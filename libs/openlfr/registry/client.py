"""A small client of the registry's HTTP API (``openlfr.registry.api``).

Every call has a timeout; an error status raises :class:`RegistryApiError` with the status and
the answer's detail, and a connection failure or timeout :class:`RegistryUnreachable`.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Sequence
from types import TracebackType
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from openlfr.registry.exceptions import RegistryApiError, RegistryUnreachable
from openlfr.registry.models import (
    ReembedStatus,
    DeploymentCreate,
    DeploymentPage,
    DeploymentPublic,
    DeploymentStatus,
    DeploymentUpdate,
    ImagePublic,
    SubjectCreate,
    SubjectEnrolled,
    SubjectPage,
    SubjectPublic,
    SubjectUpdate,
    WatchlistCreate,
    WatchlistPage,
    WatchlistPublic,
    WatchlistUpdate,
)

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

#: Content-Type of an upload by file suffix (the API accepts these).
IMAGE_CONTENT_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
    ".bmp": "image/bmp",
}


class RegistryClient:
    """Calls the registry API with a bearer token.

    Args:
        base_url: e.g. ``http://match:8080`` (the routes are under ``/v1``).
        token: the caller's API token (``OPENLFR_API_TOKENS``); never logged.
        timeout_s: timeout of every call (enrolment runs face analysis: allow seconds).
        http: an httpx client to send through instead of a new one (tests pass FastAPI's
            ``TestClient``); ``base_url`` is then ignored and the client is not closed here.
    """

    def __init__(
        self, base_url: str, token: str, *, timeout_s: float = 30.0, http: httpx.Client | None = None
    ) -> None:
        if not token:
            raise ValueError("RegistryClient.token: must not be empty")
        if not timeout_s > 0:
            raise ValueError(f"RegistryClient.timeout_s: expected > 0, got {timeout_s}")
        self._headers = {"Authorization": f"Bearer {token}"}
        self._owned = http is None
        self._http = http if http is not None else httpx.Client(
            base_url=base_url.rstrip("/"), timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0))
        )
        # A given client keeps its own timeouts (FastAPI's TestClient refuses per-call ones).
        self._timeout: float | None = timeout_s if http is None else None

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool (unless it was given)."""
        if self._owned:
            self._http.close()

    # -- transport ---------------------------------------------------------------------------

    def _request(
        self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None,
        content: bytes | None = None, headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        extra: dict[str, Any] = {"timeout": self._timeout} if self._timeout is not None else {}
        try:
            response = self._http.request(
                method, path, json=json, params=params, content=content,
                headers={**self._headers, **(headers or {})}, **extra,
            )
        except httpx.TransportError as exc:
            raise RegistryUnreachable(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        if response.is_error:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise RegistryApiError(response.status_code, detail, method=method, path=path)
        return response

    def _model(self, model: type[M], method: str, path: str, **kwargs: Any) -> M:
        return model.model_validate(self._request(method, path, **kwargs).json())

    @staticmethod
    def _body(value: BaseModel) -> Any:
        return value.model_dump(mode="json", exclude_unset=True)

    # -- watchlists --------------------------------------------------------------------------

    def create_watchlist(self, body: WatchlistCreate) -> WatchlistPublic:
        return self._model(WatchlistPublic, "POST", "/v1/watchlists", json=self._body(body))

    def list_watchlists(self, *, limit: int = 100, offset: int = 0) -> WatchlistPage:
        return self._model(WatchlistPage, "GET", "/v1/watchlists", params={"limit": limit, "offset": offset})

    def get_watchlist(self, watchlist_id: str) -> WatchlistPublic:
        return self._model(WatchlistPublic, "GET", f"/v1/watchlists/{watchlist_id}")

    def update_watchlist(self, watchlist_id: str, body: WatchlistUpdate) -> WatchlistPublic:
        return self._model(WatchlistPublic, "PATCH", f"/v1/watchlists/{watchlist_id}", json=self._body(body))

    def delete_watchlist(self, watchlist_id: str) -> None:
        self._request("DELETE", f"/v1/watchlists/{watchlist_id}")

    def suspend_watchlist(self, watchlist_id: str) -> WatchlistPublic:
        return self._model(WatchlistPublic, "POST", f"/v1/watchlists/{watchlist_id}/suspend")

    def resume_watchlist(self, watchlist_id: str) -> WatchlistPublic:
        return self._model(WatchlistPublic, "POST", f"/v1/watchlists/{watchlist_id}/resume")

    # -- subjects ----------------------------------------------------------------------------

    def create_subject(self, watchlist_id: str, body: SubjectCreate) -> SubjectPublic:
        return self._model(SubjectPublic, "POST", f"/v1/watchlists/{watchlist_id}/subjects", json=self._body(body))

    def list_subjects(self, watchlist_id: str, *, limit: int = 100, offset: int = 0) -> SubjectPage:
        return self._model(
            SubjectPage, "GET", f"/v1/watchlists/{watchlist_id}/subjects", params={"limit": limit, "offset": offset}
        )

    def get_subject(self, subject_id: str) -> SubjectPublic:
        return self._model(SubjectPublic, "GET", f"/v1/subjects/{subject_id}")

    def update_subject(self, subject_id: str, body: SubjectUpdate) -> SubjectPublic:
        return self._model(SubjectPublic, "PATCH", f"/v1/subjects/{subject_id}", json=self._body(body))

    def delete_subject(self, subject_id: str) -> None:
        self._request("DELETE", f"/v1/subjects/{subject_id}")

    def enrol_subject(
        self, watchlist_id: str, subject: SubjectCreate, images: Sequence[tuple[bytes, str, str]]
    ) -> SubjectEnrolled:
        """Create a subject with its photos (``(data, content_type, source)`` each), all or nothing.

        When every photo is refused the registry keeps no subject and this raises
        RegistryApiError 422 with ``reason`` ``no_image_enrolled`` and ``detail["refused"]``.
        """
        body = {
            "subject": self._body(subject),
            "images": [{"content_base64": base64.b64encode(data).decode("ascii"), "content_type": content_type,
                        "source": source} for data, content_type, source in images],
        }
        return self._model(SubjectEnrolled, "POST", f"/v1/watchlists/{watchlist_id}/enrolments", json=body)

    # -- images ------------------------------------------------------------------------------

    def enrol_image(self, subject_id: str, data: bytes, *, content_type: str, source: str) -> ImagePublic:
        """Upload one image; a refusal raises RegistryApiError with status 422 and ``reason``."""
        return self._model(
            ImagePublic, "POST", f"/v1/subjects/{subject_id}/images", params={"source": source}, content=data,
            headers={"Content-Type": content_type},
        )

    def image_chip(self, subject_id: str, image_id: str) -> bytes:
        """The reference chip (JPEG)."""
        return self._request("GET", f"/v1/subjects/{subject_id}/images/{image_id}").content

    def delete_image(self, subject_id: str, image_id: str) -> None:
        self._request("DELETE", f"/v1/subjects/{subject_id}/images/{image_id}")

    # -- deployments -------------------------------------------------------------------------

    def create_deployment(self, body: DeploymentCreate) -> DeploymentPublic:
        return self._model(DeploymentPublic, "POST", "/v1/deployments", json=self._body(body))

    def list_deployments(
        self, *, status: DeploymentStatus | None = None, limit: int = 100, offset: int = 0
    ) -> DeploymentPage:
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if status is not None:
            params["status"] = status
        return self._model(DeploymentPage, "GET", "/v1/deployments", params=params)

    def get_deployment(self, deployment_id: str) -> DeploymentPublic:
        return self._model(DeploymentPublic, "GET", f"/v1/deployments/{deployment_id}")

    def update_deployment(self, deployment_id: str, body: DeploymentUpdate) -> DeploymentPublic:
        return self._model(DeploymentPublic, "PATCH", f"/v1/deployments/{deployment_id}", json=self._body(body))

    def end_deployment(self, deployment_id: str, *, reason: str | None = None) -> DeploymentPublic:
        return self._model(
            DeploymentPublic, "POST", f"/v1/deployments/{deployment_id}/end",
            json={"reason": reason} if reason is not None else None,
        )

    # -- re-embedding --------------------------------------------------------------------------

    def start_reembed(self) -> ReembedStatus:
        return self._model(ReembedStatus, "POST", "/v1/reembed")

    def reembed_status(self) -> ReembedStatus:
        return self._model(ReembedStatus, "GET", "/v1/reembed")
