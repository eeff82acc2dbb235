"""Reading deployments and subjects from the registry's API: for the per-deployment report, and
for the alert stage's checks of every match (``openlfr.pipeline.match_trust``); and the match
service's look-alike watch of a deployment, for the report."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any, Protocol

from pydantic import SecretStr

from openlfr.review.exceptions import DeploymentNotFound, RegistryUnavailable, SubjectNotFound, WatchlistNotFound

logger = logging.getLogger(__name__)

#: Longest registry answer read (a deployment record is a few kilobytes).
MAX_RESPONSE_BYTES = 1024 * 1024


class RegistryClient(Protocol):
    """What the review API needs of the registry: deployments for the report, subjects for the
    console (category, legal basis, expiry)."""

    def get_deployment(self, deployment_id: str) -> dict[str, Any]:
        """The registry's record of a deployment (``GET /v1/deployments/{id}``).

        Raises:
            DeploymentNotFound: the registry does not know it.
            RegistryUnavailable: the registry could not be asked.
        """
        ...

    def get_subject(self, subject_id: str) -> dict[str, Any]:
        """The registry's record of a subject (``GET /v1/subjects/{id}``).

        Raises:
            SubjectNotFound: the registry does not know it.
            RegistryUnavailable: the registry could not be asked.
        """
        ...

    def get_look_alikes(self, deployment_id: str) -> dict[str, Any] | None:
        """The look-alike watch of a deployment (``GET /v1/deployments/{id}/look-alikes``, served
        by the match service beside the registry's API), or None where it is not served (404).

        Raises:
            RegistryUnavailable: the registry could not be asked.
        """
        ...


class HttpRegistryClient:
    """The registry over HTTP, with a bearer token (a ``service`` or ``viewer`` role).

    Args:
        base_url: the registry API's root (``http://registry:8080``).
        token: the bearer token.
        timeout_s: the longest wait for one answer.
    """

    def __init__(self, base_url: str, *, token: SecretStr | None, timeout_s: float = 5.0) -> None:
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"HttpRegistryClient.base_url: expected an http(s) URL, got {base_url!r}")
        if timeout_s <= 0:
            raise ValueError(f"HttpRegistryClient.timeout_s: expected > 0, got {timeout_s}")
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.timeout_s = timeout_s

    def get_deployment(self, deployment_id: str) -> dict[str, Any]:
        return self._get(f"/v1/deployments/{urllib.parse.quote(deployment_id, safe='')}",
                         what=f"deployment {deployment_id!r}", not_found=lambda: DeploymentNotFound(deployment_id))

    def get_subject(self, subject_id: str) -> dict[str, Any]:
        """The registry's record of a subject (``GET /v1/subjects/{id}``).

        Raises:
            SubjectNotFound: the registry does not know it.
            RegistryUnavailable: the registry could not be asked.
        """
        return self._get(f"/v1/subjects/{urllib.parse.quote(subject_id, safe='')}",
                         what=f"subject {subject_id!r}", not_found=lambda: SubjectNotFound(subject_id))

    def get_watchlist(self, watchlist_id: str) -> dict[str, Any]:
        """The registry's record of a watchlist (``GET /v1/watchlists/{id}``: its suspension).

        Raises:
            WatchlistNotFound: the registry does not know it.
            RegistryUnavailable: the registry could not be asked.
        """
        return self._get(f"/v1/watchlists/{urllib.parse.quote(watchlist_id, safe='')}",
                         what=f"watchlist {watchlist_id!r}", not_found=lambda: WatchlistNotFound(watchlist_id))

    def get_look_alikes(self, deployment_id: str) -> dict[str, Any] | None:
        """The look-alike watch of a deployment (``GET /v1/deployments/{id}/look-alikes``): per
        subject, the counts of near-miss tracks since the match process started.

        Returns:
            The answer (``LookAlikes``), or None on a 404: a registry without the match stage
            beside it does not serve the route (nor does one that no longer knows the deployment).

        Raises:
            RegistryUnavailable: the registry could not be asked, or answered with another error.
        """
        path = f"/v1/deployments/{urllib.parse.quote(deployment_id, safe='')}/look-alikes"
        try:
            return self._get(path, what=f"the look-alikes of deployment {deployment_id!r}", not_found=_NotServed)
        except _NotServed:
            return None

    def _get(self, path: str, *, what: str, not_found: Callable[[], Exception]) -> dict[str, Any]:
        request = urllib.request.Request(self.base_url + path, headers={"Accept": "application/json"})
        if self._token is not None:
            request.add_header("Authorization", f"Bearer {self._token.get_secret_value()}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310 - http(s) only
                body = response.read(MAX_RESPONSE_BYTES + 1)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise not_found() from exc
            raise RegistryUnavailable(f"the registry answered HTTP {exc.code} for {what}: {_detail(exc)}") from exc
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RegistryUnavailable(f"the registry at {self.base_url} could not be reached: {reason}") from exc
        if len(body) > MAX_RESPONSE_BYTES:
            raise RegistryUnavailable(f"the registry's answer for {what} is over {MAX_RESPONSE_BYTES} bytes")
        try:
            record = json.loads(body)
        except ValueError as exc:
            raise RegistryUnavailable(f"the registry's answer for {what} is not JSON: {exc}") from exc
        if not isinstance(record, dict):
            raise RegistryUnavailable(f"the registry's answer for {what} is not a JSON object")
        return record


class _NotServed(Exception):
    """A 404 where "not served" is an answer, not an error."""


def _detail(exc: urllib.error.HTTPError) -> str:
    """The ``detail`` of an error answer, or its first 200 characters."""
    try:
        raw = exc.read(4096)
    except OSError:
        return exc.reason or ""
    try:
        detail = json.loads(raw).get("detail")
    except (ValueError, AttributeError):
        detail = None
    text = detail if isinstance(detail, str) else raw.decode("utf-8", "replace")
    return text[:200]
