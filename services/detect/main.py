"""detect service: frames -> faces (detector, landmarks, chips, quality). Env: OPENLFR_*."""

from __future__ import annotations

import sys

from openlfr.pipeline.detect import DetectStage
from openlfr.pipeline.detect_settings import DETECT_MAX_FRAME_AGE_S, DetectSettings, build_detect_stage, make_gate
from openlfr.service.main import run_stage_service
from openlfr.service.settings import ServiceSettings

__all__ = ["DETECT_MAX_FRAME_AGE_S", "DetectServiceSettings", "build", "main", "make_gate"]


class DetectServiceSettings(ServiceSettings, DetectSettings):
    """Kafka settings plus the detect stage's (:class:`~openlfr.pipeline.detect_settings.DetectSettings`:
    model, catch-up, gating, frame-age limit, quality floor, message budget), which ``openlfr run``
    builds its detect stage from too."""


def build(settings: DetectServiceSettings) -> DetectStage:
    """The detect stage on the configured backend."""
    return build_detect_stage(settings)


def main(argv: list[str] | None = None) -> int:
    """Run the service until SIGTERM."""
    return run_stage_service(build, DetectServiceSettings, argv)


if __name__ == "__main__":
    sys.exit(main())
