"""Settings of a service's HTTP API (env ``OPENLFR_API_<NAME>``; the audit log ``OPENLFR_AUDIT_LOG``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from openlfr.api.auth import ApiToken, Authenticator


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

    @field_validator("tokens")
    @classmethod
    def _distinct(cls, value: list[ApiToken]) -> list[ApiToken]:
        Authenticator(value)  # raises on repeated names or tokens
        return value

    def authenticator(self) -> Authenticator:
        """The token table."""
        return Authenticator(self.tokens)
