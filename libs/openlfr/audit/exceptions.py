"""Errors of the audit log."""

from __future__ import annotations

from typing import Literal

#: Why a writer refuses to continue a chain: records cut from the end, a record it knows changed,
#: a link broken, or the file short of (or different from) a head anchored outside it.
TamperKind = Literal["truncated", "altered", "broken", "anchor"]


class AuditLogError(RuntimeError):
    """The log cannot be extended: the write failed, or the file is not a chain to continue."""


class AuditLogTamperedError(AuditLogError):
    """The file no longer holds the chain this process knows, so nothing is chained onto it.

    Raised by every append until the service is restarted on a repaired or new log (see
    docs/operations.md, "Audit log"): an API turns it into 503.

    Attributes:
        kind: what was found (``truncated``, ``altered``, ``broken`` or ``anchor``).
    """

    def __init__(self, message: str, *, kind: TamperKind) -> None:
        super().__init__(message)
        self.kind: TamperKind = kind
