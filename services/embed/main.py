"""embed service: faces -> embeddings (dlib ResNet on the configured backend). Env: OPENLFR_*."""

from __future__ import annotations

import sys

from pydantic import Field

from openlfr.config import ModelSettings
from openlfr.inference.factory import make_backend
from openlfr.pipeline.embed import EmbedStage
from openlfr.pipeline.embed_skip import EmbedSkip, EmbedSkipSettings
from openlfr.pipeline.freshness import CatchUpSettings
from openlfr.service.main import run_stage_service
from openlfr.service.settings import ServiceSettings
from openlfr.vision.embedder import FaceEmbedder


class EmbedServiceSettings(ServiceSettings, ModelSettings, CatchUpSettings):
    """Kafka and model settings, catch-up after an outage, plus the stage's own."""

    max_frame_age_s: float = Field(default=5.0, gt=0, le=3600)
    #: Most chips per inference call.
    max_batch: int = Field(default=64, ge=1, le=1024)


def build(settings: EmbedServiceSettings) -> EmbedStage:
    """The embed stage on the configured backend."""
    return EmbedStage(
        FaceEmbedder(backend=make_backend(settings, stage="embed"), manifest=settings.embedder_manifest()),
        embedder_model=settings.embedder_version(),
        max_frame_age_s=settings.max_frame_age_s,
        max_batch=settings.max_batch,
        catchup_lateness_s=settings.catchup_lateness_s,
        catchup_keep_every=settings.catchup_keep_every,
        # OPENLFR_EMBED_SKIP_*, with the match stage's OPENLFR_MATCH_* it must agree with
        # (validated at start by main).
        skip=EmbedSkip.from_settings(EmbedSkipSettings()),
    )


def main(argv: list[str] | None = None) -> int:
    """Run the service until SIGTERM."""
    return run_stage_service(build, EmbedServiceSettings, argv, also_validate=(EmbedSkipSettings,))


if __name__ == "__main__":
    sys.exit(main())
