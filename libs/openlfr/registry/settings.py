"""Settings of the registry (env ``OPENLFR_REGISTRY_<NAME>``), built once by the hosting service."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from openlfr.watchlist.loader import (
    DEFAULT_MIN_BLUR,
    DEFAULT_MIN_INTER_EYE_PX,
    DEFAULT_MIN_QUALITY,
    ReferencePolicy,
)


class RegistrySettings(BaseSettings):
    """Where the registry keeps its records and the limits it enforces.

    ``OPENLFR_REGISTRY_DB_PATH`` must be given (``:memory:`` for a throwaway registry): it
    holds the watchlists, the subjects' reference chips and the deployments.
    ``OPENLFR_REGISTRY_COHORT`` must be given too: the background cohort file
    (``openlfr cohort build``) every reference is scored against and every deployment's
    per-subject threshold is calibrated on. There is no default: a cohort of faces like the
    cameras see, of people on no watchlist, is a site's choice (the demo's is built by
    ``openlfr cohort build --sample``).
    """

    model_config = SettingsConfigDict(env_prefix="OPENLFR_REGISTRY_", frozen=True, extra="ignore")

    #: The SQLite file (WAL); ``:memory:`` keeps everything in the process.
    db_path: Path
    #: The background cohort file (``openlfr cohort build``), loaded once at start.
    cohort: Path = Field(default=None, validate_default=True)  # type: ignore[assignment] - required, see below
    #: The lowest score (0..1) a deployment may match at; lower thresholds are refused (422).
    #: 0.70 is a descriptor distance of 0.60, dlib's own same-person threshold.
    threshold_floor: float = Field(default=0.70, gt=0.0, le=1.0)
    #: How far before its creation a deployment may start (clock skew between its author and us).
    max_backdate_s: float = Field(default=300.0, ge=0, le=86_400)
    #: The longest a deployment may run (end minus start, days): an authorisation is for an
    #: operation, not open-ended; a longer one needs a new deployment (re-authorised, audited).
    max_deployment_days: float = Field(default=31.0, gt=0, le=366)
    #: A subject's expiry must lie within this many days of the time it is set.
    max_expiry_days: int = Field(default=365, ge=1, le=3650)
    #: A new reference this close (store score, 0..1) to another subject's is refused as a copy of
    #: a photo already enrolled (409 ``near_duplicate``). Unset: the built-in embedder's own
    #: (dlib 0.93, FaceRes 0.85; benchmarks/near_duplicates.py); required for another embedder.
    near_duplicate_score: float | None = Field(default=None, gt=0.5, le=1.0)
    #: Reference images one subject may have.
    max_images_per_subject: int = Field(default=20, ge=1, le=1000)
    #: The enrolment policy (the same floors as folder enrolment, ``openlfr.watchlist.loader``).
    min_inter_eye_px: float = Field(default=DEFAULT_MIN_INTER_EYE_PX, ge=0)
    min_blur: float = Field(default=DEFAULT_MIN_BLUR, ge=0)
    min_quality: float = Field(default=DEFAULT_MIN_QUALITY, ge=0, le=1)
    #: JPEG quality of the reference chips shown to reviewers.
    chip_jpeg_quality: int = Field(default=95, ge=50, le=100)
    #: Largest image decoded when the registry is called directly (the API's own limit,
    #: ``OPENLFR_API_MAX_IMAGE_PIXELS``, applies to uploads first).
    max_image_pixels: int = Field(default=40_000_000, ge=10_000, le=200_000_000)
    #: Deployment activity counts are written to the database at most this often (seconds).
    activity_flush_s: float = Field(default=5.0, gt=0, le=3600)

    @field_validator("cohort", mode="before")
    @classmethod
    def _cohort_given(cls, value: object) -> object:
        # Required; a missing one is refused with how to make one, not just "Field required".
        if value is None or (isinstance(value, str) and not value.strip()):
            raise ValueError(
                "required: the background cohort file per-subject thresholds are calibrated on; build one "
                "with `openlfr cohort build DIR --out PATH` from faces of people on no watchlist "
                "(the demo's: `openlfr cohort build --sample`, written to build/cohort/default.npz)"
            )
        return value

    def policy(self) -> ReferencePolicy:
        """The enrolment policy these settings give."""
        return ReferencePolicy(
            min_inter_eye_px=self.min_inter_eye_px, min_blur=self.min_blur, min_quality=self.min_quality
        )
