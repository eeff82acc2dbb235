"""Errors of the registry, each mapped to one HTTP status by :mod:`openlfr.registry.api`."""

from __future__ import annotations

from openlfr.api.errors import detail_words
from openlfr.watchlist.loader import RefusalReason


class RegistryError(Exception):
    """Base of the registry's errors."""


class NotFound(RegistryError, KeyError):
    """No such watchlist, subject, image or deployment (HTTP 404).

    Args:
        kind: what was looked for (``watchlist``, ``subject``, ``image``, ``deployment``).
        ident: its id.
    """

    def __init__(self, kind: str, ident: str) -> None:
        super().__init__(kind, ident)
        self.kind = kind
        self.ident = ident

    def __str__(self) -> str:
        return f"{self.kind} {self.ident!r} not found"


class Conflict(RegistryError):
    """The change does not fit the current state: a taken id, a watchlist in use (HTTP 409).

    Args:
        message: what conflicts.
        reason: a code for the clients that act on it (``duplicate``, ``too_many_images``),
            sent as ``{"reason", "message"}``; None sends the message alone.
    """

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


class Invalid(RegistryError, ValueError):
    """A request that is well-formed but not acceptable now (HTTP 422).

    Used for the checks that need the registry's settings or clock: an expiry in the past or
    beyond the horizon, a threshold under the floor, a watchlist that does not exist.

    Args:
        field: the request field at fault (``expires_at``, ``threshold``...).
        message: why.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class ImageRefused(RegistryError):
    """An enrolment image that cannot be a reference, with the loader's reason (HTTP 422).

    Args:
        reason: ``unreadable``, ``no_face``, ``multiple_faces``, ``too_small``,
            ``too_blurred`` or ``low_quality`` (``openlfr.watchlist.loader.RefusalReason``).
        message: the detail, e.g. ``2 faces found; a reference image must show exactly one``.
    """

    def __init__(self, reason: RefusalReason, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason: RefusalReason = reason
        self.message = message


class RegistryDbError(RegistryError):
    """The registry's database cannot be opened or used (wrong schema version, no WAL)."""


class RegistryClientError(Exception):
    """A call of the registry's HTTP API failed (raised by :mod:`openlfr.registry.client`)."""


class RegistryUnreachable(RegistryClientError):
    """The registry could not be reached or did not answer in time."""


class RegistryApiError(RegistryClientError):
    """The registry answered with an error status.

    Attributes:
        status_code: the HTTP status.
        detail: the answer's ``detail`` (a string, a ``{"reason", "message"}`` refusal, or a
            list of validation errors), or its text when it is not JSON.
        method: the request's method.
        path: the request's path.
    """

    def __init__(self, status_code: int, detail: object, *, method: str, path: str) -> None:
        self.status_code = status_code
        self.detail = detail
        self.method = method
        self.path = path
        super().__init__(f"{method} {path}: HTTP {status_code}: {self.message}")  # words, not a repr

    @property
    def reason(self) -> str | None:
        """The refusal reason of a refused image (``no_face``, ...), else None."""
        if isinstance(self.detail, dict) and isinstance(self.detail.get("reason"), str):
            return self.detail["reason"]
        return None

    @property
    def message(self) -> str:
        """The detail in words."""
        return detail_words(self.detail)
