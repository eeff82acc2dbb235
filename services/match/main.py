"""match service: embeddings -> track-level matches, and the registry API it hosts.

The service owns the watchlist registry (watchlists, subjects, reference images,
deployments: ``openlfr.registry``) and the vector store, in one process: the registry's
HTTP API is served beside the probes (``/v1/...``, OpenAPI at ``/openapi.json``), and the
match stage asks the registry which deployment covers each frame.

Env: OPENLFR_* (Kafka, HTTP, models), OPENLFR_MATCH_* (voting, tracking), the vector store
(OPENLFR_VECTOR_STORE, OPENLFR_QDRANT_URL or OPENLFR_QDRANT_PATH, ...), OPENLFR_REGISTRY_*
(database, threshold floor, enrolment policy), OPENLFR_API_TOKENS and OPENLFR_AUDIT_LOG.
"""

from __future__ import annotations

import sys

from openlfr.api.auth import Access
from openlfr.api.settings import ApiSettings
from openlfr.audit.log import AuditLog
from openlfr.config import ModelSettings
from openlfr.models.build import model_version
from openlfr.models.specs import EMBEDDER
from openlfr.pipeline.match import MatchSettings, MatchStage
from openlfr.pipeline.stage import Stage
from openlfr.registry.api import make_registry_router
from openlfr.registry.db import RegistryDb
from openlfr.registry.service import Registry
from openlfr.registry.settings import RegistrySettings
from openlfr.service.main import HttpApi, run_stage_service
from openlfr.service.settings import ServiceSettings, load_settings
from openlfr.vision.factory import build_analyzer
from openlfr.watchlist.factory import VectorStoreSettings, open_store


class MatchServiceSettings(ServiceSettings, ModelSettings):
    """Kafka, HTTP and model settings (the models enrol reference images)."""


class HostedMatchStage(MatchStage):
    """The match stage with the registry it serves: ready when both are, closes both."""

    def __init__(self, *args: object, registry: Registry, api_settings: ApiSettings, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.registry = registry
        self.api_settings = api_settings

    def ready(self) -> tuple[bool, str]:
        ok, reason = self.registry.ready()
        if not ok:
            return ok, f"registry: {reason}"
        return super().ready()

    def close(self) -> None:
        self.registry.close()
        super().close()
        self.registry.db.close()


def build(settings: MatchServiceSettings) -> HostedMatchStage:
    """The registry over the configured store and database, and the match stage it gates."""
    api_settings = load_settings(ApiSettings)
    registry_settings = load_settings(RegistrySettings)
    store = open_store(load_settings(VectorStoreSettings))
    try:
        registry = Registry(
            db=RegistryDb(registry_settings.db_path),
            store=store,
            analyzer=build_analyzer(settings),
            audit=AuditLog(api_settings.audit_log),
            settings=registry_settings,
            model_version=model_version(settings.model_dir, EMBEDDER.name),
        )
    except BaseException:
        store.close()
        raise
    return HostedMatchStage(
        load_settings(MatchSettings), store=store, gate=registry, registry=registry, api_settings=api_settings
    )


def api(settings: MatchServiceSettings, stage: Stage) -> HttpApi:
    """The registry's API, served beside the probes."""
    assert isinstance(stage, HostedMatchStage)
    access = Access(stage.api_settings.authenticator(), AuditLog(stage.api_settings.audit_log))
    return HttpApi(
        routers=[make_registry_router(stage.registry, access, stage.api_settings)],
        title="OpenLFR match service: watchlists, subjects and deployments",
        max_body_bytes=stage.api_settings.max_body_bytes,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the service until SIGTERM."""
    return run_stage_service(
        build,
        MatchServiceSettings,
        argv,
        also_validate=(MatchSettings, VectorStoreSettings, RegistrySettings, ApiSettings),
        api=api,
    )


if __name__ == "__main__":
    sys.exit(main())
