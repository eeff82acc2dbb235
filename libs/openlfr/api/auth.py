"""Authentication by bearer token (or ``X-API-Key``) and authorisation by role.

Tokens come from the environment (``OPENLFR_API_TOKENS``, JSON), never from a file in the
repository, and are never logged: each entry names its holder and roles and gives either the
token itself or its SHA-256 (hex), so a deployment can keep only hashes in its secret store.
Tokens are compared as SHA-256 digests with ``hmac.compare_digest``.

Roles (a holder may have several; none implies another):

* ``viewer``: read alerts, watchlists, deployments, reports;
* ``reviewer``: adjudicate alerts (two different reviewers confirm an alert);
* ``watchlist_admin``: create, change and delete watchlists and subjects, enrol images;
* ``deployment_authoriser``: create, change and end deployments and their thresholds;
* ``service``: a peer service (the alert service reading a deployment from the registry).

A request without a valid token gets 401, written to the audit log (``access.unauthenticated``:
source address, method and path, never the token) at a bounded rate
(:class:`~openlfr.api.unauthenticated.UnauthenticatedAudit`). A request whose token lacks the role
gets 403, and the refusal is written to the audit log (``access.denied``) with who asked for
what; when the audit log cannot be written, 503 (:func:`add_audit_error_handler`).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Literal, get_args

from fastapi import FastAPI, HTTPException, Request, Security, status
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from openlfr.api.unauthenticated import UnauthenticatedAudit
from openlfr.audit.exceptions import AuditLogError
from openlfr.audit.log import AuditLog

logger = logging.getLogger(__name__)

#: The two ways to present a token, as the OpenAPI documents declare them (checked by
#: ``Access.principal``, not by these: they never refuse on their own).
BEARER = HTTPBearer(scheme_name="bearer", description="an API token: 'Authorization: Bearer <token>'",
                    auto_error=False)
API_KEY = APIKeyHeader(name="X-API-Key", scheme_name="apiKey", description="the same token in 'X-API-Key'",
                       auto_error=False)

Role = Literal["viewer", "reviewer", "watchlist_admin", "deployment_authoriser", "service"]
ROLES: tuple[Role, ...] = get_args(Role)

#: Every role that may read (lists, gets, reports): reading is part of each job.
READERS: tuple[Role, ...] = ROLES

#: Shortest token accepted in clear (about 96 bits of a random URL-safe string).
MIN_TOKEN_CHARS = 16
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


def token_digest(token: str) -> str:
    """SHA-256 (hex) of a token, as ``token_sha256`` entries give it."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class ApiToken(BaseModel):
    """One entry of ``OPENLFR_API_TOKENS``: who holds the token and what they may do."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._@-]+$")
    roles: frozenset[Role] = Field(min_length=1)
    token: SecretStr | None = None
    token_sha256: str | None = None

    @model_validator(mode="after")
    def _one_secret(self) -> ApiToken:
        if (self.token is None) == (self.token_sha256 is None):
            raise ValueError(f"token {self.name!r}: give exactly one of 'token' and 'token_sha256'")
        if self.token is not None and len(self.token.get_secret_value()) < MIN_TOKEN_CHARS:
            raise ValueError(f"token {self.name!r}: a token must be at least {MIN_TOKEN_CHARS} characters")
        if self.token_sha256 is not None and not _SHA256_HEX.match(self.token_sha256):
            raise ValueError(f"token {self.name!r}: token_sha256 must be 64 lowercase hex digits")
        return self

    @property
    def digest(self) -> str:
        """SHA-256 (hex) of the token."""
        if self.token is not None:
            return token_digest(self.token.get_secret_value())
        assert self.token_sha256 is not None
        return self.token_sha256


@dataclass(frozen=True, slots=True)
class Principal:
    """Who made a request: the token holder's name and roles."""

    name: str
    roles: frozenset[Role]

    def has_any(self, roles: tuple[Role, ...] | frozenset[Role]) -> bool:
        """Whether the holder has at least one of ``roles``."""
        return bool(self.roles & frozenset(roles))


class Authenticator:
    """Maps presented tokens to principals.

    Raises:
        ValueError: two entries share a name or a token.
    """

    def __init__(self, tokens: list[ApiToken]) -> None:
        by_digest: dict[str, Principal] = {}
        names: set[str] = set()
        for entry in tokens:
            if entry.name in names:
                raise ValueError(f"API tokens: the name {entry.name!r} is given twice")
            if entry.digest in by_digest:
                raise ValueError(f"API tokens: {entry.name!r} has the same token as {by_digest[entry.digest].name!r}")
            names.add(entry.name)
            by_digest[entry.digest] = Principal(entry.name, entry.roles)
        self._by_digest = by_digest

    def __len__(self) -> int:
        return len(self._by_digest)

    def authenticate(self, token: str) -> Principal | None:
        """The holder of ``token``, or None when it is unknown (constant-time per entry)."""
        digest = token_digest(token)
        found: Principal | None = None
        for known, principal in self._by_digest.items():
            if hmac.compare_digest(known, digest):
                found = principal
        return found


def presented_token(request: Request) -> str | None:
    """The token of ``Authorization: Bearer <token>`` or ``X-API-Key: <token>``."""
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return None
    key = request.headers.get("x-api-key")
    return key.strip() if key and key.strip() else None


class Access:
    """FastAPI dependencies that authenticate and check roles, auditing refusals.

    Usage::

        access = Access(authenticator, audit)
        @router.post("/v1/watchlists")
        def create(body: ..., who: Principal = Depends(access.require("watchlist_admin"))): ...
    """

    def __init__(
        self, authenticator: Authenticator, audit: AuditLog, *, unauthenticated: UnauthenticatedAudit | None = None
    ) -> None:
        self.authenticator = authenticator
        self.audit = audit
        self.unauthenticated = UnauthenticatedAudit(audit) if unauthenticated is None else unauthenticated

    def _audit_401(self, request: Request, reason: Literal["missing token", "unknown token"]) -> None:
        source = request.client.host if request.client is not None else "unknown"
        self.unauthenticated.record(source=source, method=request.method, path=request.url.path, reason=reason)

    def principal(self, request: Request) -> Principal:
        """The authenticated caller; 401 (audited, rate-limited) without a valid token."""
        token = presented_token(request)
        if token is None:
            self._audit_401(request, "missing token")
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                detail="authentication required: send 'Authorization: Bearer <token>' or 'X-API-Key: <token>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        principal = self.authenticator.authenticate(token)
        if principal is None:
            logger.warning('api request with an unknown token method="%s" path="%s"', request.method, request.url.path)
            self._audit_401(request, "unknown token")
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED, detail="unknown token", headers={"WWW-Authenticate": "Bearer"}
            )
        return principal

    def require(self, *roles: Role) -> Callable[[Request], Principal]:
        """A dependency passing callers with at least one of ``roles``; 403 (audited) otherwise."""
        if not roles:
            raise ValueError("require: name at least one role")
        unknown = [r for r in roles if r not in ROLES]
        if unknown:
            raise ValueError(f"require: unknown roles {unknown}")
        needed = frozenset(roles)

        def dependency(
            request: Request,
            _bearer: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)] = None,
            _api_key: Annotated[str | None, Security(API_KEY)] = None,
        ) -> Principal:
            # The two Security parameters only declare the schemes in the OpenAPI document (so
            # /docs has Authorize and generated clients send the token); ``principal`` checks.
            principal = self.principal(request)
            if not principal.has_any(needed):
                target = f"{request.method} {request.url.path}"
                self.audit.append(
                    actor=principal.name,
                    action="access.denied",
                    target=target,
                    details={"needed_any_of": sorted(needed), "has": sorted(principal.roles)},
                )
                logger.warning('api request refused actor="%s" target="%s"', principal.name, target)
                raise HTTPException(
                    status.HTTP_403_FORBIDDEN,
                    detail=f"forbidden: this needs one of the roles {sorted(needed)}; "
                    f"{principal.name!r} has {sorted(principal.roles)}",
                )
            return principal

        # Read by ``document_required_roles``: the OpenAPI description names the very roles checked here.
        dependency.required_roles = needed  # type: ignore[attr-defined]
        return dependency


def add_audit_error_handler(app: FastAPI) -> None:
    """Answer 503 (not 500) when a request's audit record cannot be written: what it asked for
    was not done, or not recorded, and the caller may retry once the log is repaired."""

    async def audit_unavailable(request: Request, exc: Exception) -> JSONResponse:
        logger.error('api request failed: audit log unwritable method="%s" path="%s" error="%s"',
                     request.method, request.url.path, exc)
        return JSONResponse(
            {"detail": "the audit log cannot be written, so the request was not carried out or not recorded; "
                       "the operators are alerted (openlfr_audit_log_intact)"},
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        )

    app.add_exception_handler(AuditLogError, audit_unavailable)
