"""Settings of alert review in the alert service (env ``OPENLFR_REVIEW_<NAME>``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import AnyHttpUrl, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from openlfr.review.registry_client import HttpRegistryClient
from openlfr.review.store import DAY_S, DEFAULT_CROP_RETENTION_S, DEFAULT_RECORD_RETENTION_S


class ReviewSettings(BaseSettings):
    """Where alert records live, how long they are kept, and where deployments are read from."""

    model_config = SettingsConfigDict(env_prefix="OPENLFR_REVIEW_", frozen=True, extra="ignore")

    #: The SQLite file of alert records and reviews (on a persistent volume); no default.
    db_path: Path
    #: Probe and reference crops are deleted this long after capture.
    crop_retention_s: float = Field(default=DEFAULT_CROP_RETENTION_S, gt=0, le=3 * 365 * DAY_S)
    #: Whole alert records and their review steps are deleted this long after capture
    #: (the per-deployment tallies are kept).
    record_retention_s: float = Field(default=DEFAULT_RECORD_RETENTION_S, gt=0, le=10 * 365 * DAY_S)
    #: Seconds between retention purges.
    purge_interval_s: float = Field(default=3600.0, ge=1, le=DAY_S)
    #: The registry API's root, for the deployment report; without it, reports say the
    #: deployment's details are unknown.
    registry_url: AnyHttpUrl | None = None
    #: The bearer token the alert service presents to the registry (role ``service``).
    registry_token: SecretStr | None = None
    registry_timeout_s: float = Field(default=5.0, gt=0, le=60)
    #: Events a live stream may fall behind by before it loses its oldest.
    stream_queue_size: int = Field(default=256, ge=1, le=100_000)
    #: Live streams open at once.
    max_streams: int = Field(default=64, ge=1, le=10_000)
    #: Seconds between keep-alive comments on an idle stream.
    stream_heartbeat_s: float = Field(default=15.0, gt=0, le=300)

    @model_validator(mode="after")
    def _consistent(self) -> ReviewSettings:
        if self.record_retention_s < self.crop_retention_s:
            raise ValueError(
                f"OPENLFR_REVIEW_RECORD_RETENTION_S ({self.record_retention_s:g}) must be >= "
                f"OPENLFR_REVIEW_CROP_RETENTION_S ({self.crop_retention_s:g})"
            )
        if self.registry_url is not None and self.registry_token is None:
            raise ValueError("OPENLFR_REVIEW_REGISTRY_TOKEN is required when OPENLFR_REVIEW_REGISTRY_URL is set")
        return self

    def registry_client(self) -> HttpRegistryClient | None:
        """The registry client, or None when no registry URL is set."""
        if self.registry_url is None:
            return None
        return HttpRegistryClient(str(self.registry_url), token=self.registry_token, timeout_s=self.registry_timeout_s)
