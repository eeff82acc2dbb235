"""``GET /v1/deployments/{id}/look-alikes``: which subjects keep drawing strangers close to their
threshold (the match stage's look-alike watch), for the people who must review their references.

Counts only, per subject: tracks of this deployment that ended within the look-alike margin of
the subject's threshold without matching it, since the match process started. Nothing about the
passers-by is kept or returned. Readers may see it (the subject ids are theirs to see in alerts
anyway); the gauge behind the alert rule carries no subject id.
"""

# No `from __future__ import annotations`: FastAPI resolves the route's Annotated aliases at import.

from typing import Annotated

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, ConfigDict, Field

from openlfr.api.auth import READERS, Access, Principal
from openlfr.messages.models import Id
from openlfr.pipeline.match import MatchStage
from openlfr.registry.api import _404, _AUTH, SLUG_PATTERN, _http_errors
from openlfr.registry.service import Registry


class LookAlikeSubject(BaseModel):
    """One subject and its near-miss tracks."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    subject_id: Id
    near_miss_tracks: int = Field(ge=1)
    attracts_strangers: bool = Field(description="near_miss_tracks reached OPENLFR_MATCH_LOOK_ALIKE_MIN_TRACKS")


class LookAlikes(BaseModel):
    """The look-alike watch of one deployment (this match process, since it started)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    deployment_id: Id
    z_margin: float
    score_margin: float
    min_tracks: int
    subjects: list[LookAlikeSubject]


def make_lookalike_router(stage: MatchStage, registry: Registry, access: Access) -> APIRouter:
    """The look-alike route, served by the match service beside the registry's."""
    Reader = Annotated[Principal, Depends(access.require(*READERS))]
    DeploymentId = Annotated[str, Path(pattern=SLUG_PATTERN)]
    router = APIRouter(prefix="/v1")

    @router.get(
        "/deployments/{deployment_id}/look-alikes", response_model=LookAlikes, tags=["deployments"],
        summary="Subjects that keep drawing strangers close to their threshold (counts only)",
        responses={**_AUTH, **_404},
    )
    def look_alikes(deployment_id: DeploymentId, who: Reader) -> LookAlikes:
        with _http_errors():
            registry.get_deployment(deployment_id)  # 404 naming it when there is no such deployment
        settings = stage.settings
        counts = stage.look_alikes(deployment_id)
        return LookAlikes(
            deployment_id=deployment_id,
            z_margin=settings.look_alike_z_margin,
            score_margin=settings.look_alike_score_margin,
            min_tracks=settings.look_alike_min_tracks,
            subjects=[
                LookAlikeSubject(subject_id=subject, near_miss_tracks=n,
                                 attracts_strangers=n >= settings.look_alike_min_tracks)
                for subject, n in counts.items()
            ],
        )

    return router
