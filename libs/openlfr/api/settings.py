"""Settings of a service's HTTP API (env ``OPENLFR_API_<NAME>``; the audit log ``OPENLFR_AUDIT_LOG``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from openlfr.api.auth import Access, ApiToken, Authenticator
from openlfr.api.limits import DecodeSlots
from openlfr.api.unauthenticated import UnauthenticatedAudit
from openlfr.audit.log import AuditLog


class ApiSettings(BaseSettings):
    """Who may call the API and how much they may send.

    ``OPENLFR_API_TOKENS`` is a JSON list of ``{"name", "roles", "token" | "token_sha256"}``.
    """

    model_config = SettingsConfigDict(env_prefix="OPENLFR_API_", frozen=True, extra="ignore")

    tokens: list[ApiToken] = Field(min_length=1)
    #: The hash-chained audit log every change and refusal is written to.
    audit_log: Path = Field(validation_alias=AliasChoices("OPENLFR_AUDIT_LOG", "audit_log"))
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024)
    max_image_bytes: int = Field(default=10 * 1024 * 1024, ge=1024, le=128 * 1024 * 1024)
    max_image_pixels: int = Field(default=40_000_000, ge=10_000, le=200_000_000)
    #: Uploaded images decoded and analysed at once (each up to ``max_image_pixels`` x 3 bytes
    #: decoded); more wait up to ``decode_wait_s``, then get 503 with Retry-After.
    max_concurrent_decodes: int = Field(default=2, ge=1, le=64)
    decode_wait_s: float = Field(default=10.0, ge=0, le=300)
    #: 401s audited per source address per window; the rest are counted in one summary record.
    audit_401_per_source: int = Field(default=10, ge=0, le=10_000)
    #: 401s audited per window, all sources together (bounds the log's growth under a flood).
    audit_401_per_window: int = Field(default=60, ge=0, le=100_000)
    audit_401_window_s: float = Field(default=60.0, ge=1, le=86_400)

    @field_validator("tokens")
    @classmethod
    def _distinct(cls, value: list[ApiToken]) -> list[ApiToken]:
        Authenticator(value)  # raises on repeated names or tokens
        return value

    def decode_slots(self) -> DecodeSlots:
        """The bound on concurrent image decoding these settings give."""
        return DecodeSlots(self.max_concurrent_decodes, wait_s=self.decode_wait_s)

    def authenticator(self) -> Authenticator:
        """The token table."""
        return Authenticator(self.tokens)

    def access(self, audit: AuditLog) -> Access:
        """The role checks over the token table, auditing refusals (401s at the configured rate)."""
        unauthenticated = UnauthenticatedAudit(
            audit, per_source=self.audit_401_per_source, overall=self.audit_401_per_window,
            window_s=self.audit_401_window_s,
        )
        return Access(self.authenticator(), audit, unauthenticated=unauthenticated)
