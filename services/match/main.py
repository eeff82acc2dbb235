"""match service: embeddings -> track-level matches against the watchlist in Qdrant.

Env: OPENLFR_* (Kafka, HTTP), OPENLFR_MATCH_* (thresholds, tracking), OPENLFR_QDRANT_URL or
OPENLFR_QDRANT_PATH (a server, or Qdrant's local mode on a directory; one of them).
"""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic import SecretStr, model_validator

from openlfr.pipeline.match import MatchSettings, MatchStage
from openlfr.service.main import run_stage_service
from openlfr.service.settings import ServiceSettings, load_settings
from openlfr.watchlist.qdrant_store import QdrantStore


class MatchServiceSettings(ServiceSettings):
    """Kafka settings and where the watchlist vectors are."""

    qdrant_url: str | None = None
    qdrant_path: Path | None = None
    qdrant_api_key: SecretStr | None = None
    qdrant_collection: str = "openlfr_watchlist"

    @model_validator(mode="after")
    def _one_store(self) -> MatchServiceSettings:
        if (self.qdrant_url is None) == (self.qdrant_path is None):
            raise ValueError("set exactly one of OPENLFR_QDRANT_URL and OPENLFR_QDRANT_PATH")
        return self


def build(settings: MatchServiceSettings) -> MatchStage:
    """The match stage over the configured store."""
    match_settings = load_settings(MatchSettings)
    store = QdrantStore(
        url=settings.qdrant_url,
        path=settings.qdrant_path,
        collection=settings.qdrant_collection,
        api_key=settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None,
    )
    return MatchStage(match_settings, store=store)


def main(argv: list[str] | None = None) -> int:
    """Run the service until SIGTERM."""
    return run_stage_service(build, MatchServiceSettings, argv, also_validate=(MatchSettings,))


if __name__ == "__main__":
    sys.exit(main())
