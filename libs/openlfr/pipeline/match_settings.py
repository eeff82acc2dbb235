"""Settings of the match stage (env ``OPENLFR_MATCH_<NAME>``), validated at start: the decision
rule, the tracker's limits, the look-alike watch. Which watchlists and threshold are not
settings: each deployment says so (``openlfr.pipeline.deployments``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class MatchSettings(BaseSettings):
    """Settings of the match stage (env ``OPENLFR_MATCH_<NAME>``).

    Which watchlists are searched, and at what threshold, is not a setting: each deployment
    says so (``openlfr.pipeline.deployments``). Distances are Euclidean between dlib
    descriptors; ``min_votes`` frames of a track must agree before it matches.
    """

    model_config = SettingsConfigDict(env_prefix="OPENLFR_MATCH_", frozen=True, extra="ignore")

    min_margin_distance: float = Field(default=0.05, ge=0, lt=2)
    #: ``template``: a track decides on the mean of its best faces (``openlfr.pipeline.templates``);
    #: ``votes``: on ``min_votes`` frames that each pass on their own.
    decision: Literal["template", "votes"] = "template"
    #: Faces of a track a decision needs: template faces, or frames that agree (votes).
    min_votes: int = Field(default=3, ge=1, le=1000)
    #: The best faces (by quality) a track's template averages.
    template_faces: int = Field(default=5, ge=1, le=100)
    #: Look-alike watch: a track that ends without matching a subject whose threshold its template
    #: came within this of (normalised units; raw score units without per-subject thresholds) is a
    #: near miss of that subject. Counts only: nothing of the passer-by is kept.
    look_alike_z_margin: float = Field(default=1.0, gt=0)
    look_alike_score_margin: float = Field(default=0.03, gt=0, lt=1)
    #: Near-miss tracks at which a subject counts as attracting strangers (the alert rule's gauge).
    look_alike_min_tracks: int = Field(default=5, ge=1)
    #: Faces whose combined quality score is below this are neither matched nor tracked.
    min_quality: float = Field(default=0.2, ge=0, le=1)
    track_max_gap_s: float = Field(default=2.0, gt=0)
    track_max_s: float = Field(default=600.0, gt=0)
    track_min_iou: float = Field(default=0.1, gt=0, le=1)
    #: Within this of a track (its last face and its mean) a face may join it: docs/pipeline.md, "The tracker".
    track_max_distance: float = Field(default=0.45, gt=0, lt=2)
    track_reacquire_distance: float = Field(default=0.4, ge=0, lt=2)
    track_camera_idle_s: float = Field(default=60.0, gt=0)
    probe_jpeg_quality: int = Field(default=90, ge=50, le=100)

    @model_validator(mode="before")
    @classmethod
    def _no_retired_settings(cls, data: object) -> object:
        if isinstance(data, dict):
            for retired in ("watchlist_ids", "max_distance"):
                if retired in data:
                    raise ValueError(
                        f"OPENLFR_MATCH_{retired.upper()} is no longer read: watchlists and threshold "
                        "come from the deployment (POST /v1/deployments)"
                    )
        return data

    @model_validator(mode="after")
    def _consistent(self) -> MatchSettings:
        if self.track_max_s < self.track_max_gap_s:
            raise ValueError("track_max_s must be >= track_max_gap_s")
        if self.track_reacquire_distance > self.track_max_distance:
            raise ValueError("track_reacquire_distance must be <= track_max_distance")
        if self.track_camera_idle_s < self.track_max_gap_s:
            raise ValueError("track_camera_idle_s must be >= track_max_gap_s")
        return self
