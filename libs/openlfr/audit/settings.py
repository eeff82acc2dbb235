"""Settings of the audit log's checkpoints and key (env ``OPENLFR_AUDIT_<NAME>``; the file itself
is ``OPENLFR_AUDIT_LOG``, read by :class:`openlfr.api.settings.ApiSettings`)."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from openlfr.audit.checkpoint import LOG_ID_PATTERN
from openlfr.messages.topics import AUDIT_CHECKPOINTS

_HOUR_MS = 3_600_000


class AuditSettings(BaseSettings):
    """Where and how often a service anchors its audit log's head, and the chain's key.

    ``OPENLFR_AUDIT_LOG_ID`` names the log on the checkpoint topic and must be unique per log
    file across the deployment (two replicas with their own files need two ids); it defaults to
    the file's name without its suffix (``/data/audit/match.jsonl`` -> ``match``).
    """

    model_config = SettingsConfigDict(env_prefix="OPENLFR_AUDIT_", frozen=True, extra="ignore")

    log_id: str | None = Field(default=None, pattern=LOG_ID_PATTERN)
    #: Publish the head after this many records...
    checkpoint_every_records: int = Field(default=100, ge=1, le=1_000_000)
    #: ...and at least this often while it moves: the most a rewrite of the log's end can hide.
    checkpoint_interval_s: float = Field(default=60.0, gt=0, le=86_400)
    #: ``retention.ms`` of the checkpoint topic when a service creates it (-1: for ever). Keep it
    #: at least as long as the audit log must be verifiable.
    checkpoint_retention_ms: int = Field(default=AUDIT_CHECKPOINTS.retention_ms)
    #: Longest wait for the broker's acknowledgement of one checkpoint, and for reading them at start.
    checkpoint_timeout_s: float = Field(default=10.0, gt=0, le=600)
    #: HMAC key of the chain (at least 16 characters); none: plain SHA-256. Every writer and
    #: verifier of a log uses the same key; a log started without one cannot take one later.
    hmac_key: SecretStr | None = None

    @field_validator("checkpoint_retention_ms")
    @classmethod
    def _retention(cls, value: int) -> int:
        if value != -1 and value < _HOUR_MS:
            raise ValueError(f"{value} ms: expected -1 (for ever) or at least one hour ({_HOUR_MS})")
        return value

    @field_validator("hmac_key")
    @classmethod
    def _key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().encode()) < 16:
            raise ValueError("the HMAC key must be at least 16 bytes")
        return value

    def key(self) -> bytes | None:
        """The HMAC key as bytes (None: unkeyed)."""
        return None if self.hmac_key is None else self.hmac_key.get_secret_value().encode()

    def id_of(self, path: Path) -> str:
        """The log's id: ``log_id``, else the file's stem.

        Raises:
            ValueError: the stem is not a legal id (then ``OPENLFR_AUDIT_LOG_ID`` must be given).
        """
        if self.log_id is not None:
            return self.log_id
        if not re.fullmatch(LOG_ID_PATTERN, path.stem):
            raise ValueError(f"OPENLFR_AUDIT_LOG_ID: the file name {path.name!r} makes no log id; give one")
        return path.stem
