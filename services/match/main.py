"""match service: embeddings -> track-level matches, and the registry API it hosts.

The service owns the watchlist registry (watchlists, subjects, reference images,
deployments: ``openlfr.registry``) and the vector store, in one process: the registry's
HTTP API is served beside the probes (``/v1/...``, OpenAPI at ``/openapi.json``), and the
match stage asks the registry which deployment covers each frame.

Env: OPENLFR_* (Kafka, HTTP, models, clock skew), OPENLFR_MATCH_* (voting, tracking, and
OPENLFR_MATCH_SIGNING_KEY, required: the key every Match is signed with), the vector store
(OPENLFR_VECTOR_STORE, OPENLFR_QDRANT_URL or OPENLFR_QDRANT_PATH, ...), OPENLFR_REGISTRY_*
(database, background cohort, threshold floor, enrolment policy), OPENLFR_API_TOKENS,
OPENLFR_AUDIT_LOG and OPENLFR_AUDIT_* (checkpoints).

The background cohort (OPENLFR_REGISTRY_COHORT, required) is loaded once at start and checked
against the embedding model; the service exits 2 naming the setting when it is missing, not a
cohort file, or embedded by another model. The registry (enrolment statistics, deployment
thresholds) and the match stage (probe statistics, normalised scores) share its normaliser.
"""

from __future__ import annotations

import logging
import sys

from prometheus_client import REGISTRY

from openlfr.api.settings import ApiSettings
from openlfr.audit.service import ServiceAudit, open_service_audit
from openlfr.audit.settings import AuditSettings
from openlfr.cohort.cohort import Cohort
from openlfr.cohort.exceptions import CohortError
from openlfr.config import ModelSettings
from openlfr.messages.signing import SigningSettings
from openlfr.pipeline.match import MatchSettings, MatchStage
from openlfr.pipeline.stage import Stage
from openlfr.registry.api import make_registry_router
from openlfr.registry.lookalikes_api import make_lookalike_router
from openlfr.registry.core import COHORT_SETTING
from openlfr.registry.db import RegistryDb
from openlfr.registry.metrics import register_registry_metrics
from openlfr.registry.service import Registry
from openlfr.registry.settings import RegistrySettings
from openlfr.service.main import HttpApi, run_stage_service
from openlfr.service.settings import EXIT_BAD_SETTINGS, ServiceSettings, load_settings
from openlfr.vision.factory import build_analyzer
from openlfr.watchlist.factory import StoreModel, VectorStoreSettings, open_store

logger = logging.getLogger(__name__)


class MatchServiceSettings(ServiceSettings, ModelSettings):
    """Kafka, HTTP and model settings (the models enrol reference images)."""


class HostedMatchStage(MatchStage):
    """The match stage with the registry it serves: ready when both are, closes both."""

    def __init__(
        self, *args: object, registry: Registry, api_settings: ApiSettings, audit: ServiceAudit, **kwargs: object
    ) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.registry = registry
        self.api_settings = api_settings
        self.service_audit = audit
        self._registry_metrics = register_registry_metrics(registry)  # unregistered at close

    def ready(self) -> tuple[bool, str]:
        ok, reason = self.registry.ready()
        if not ok:
            return ok, f"registry: {reason}"
        return super().ready()

    def close(self) -> None:
        REGISTRY.unregister(self._registry_metrics)
        self.registry.close()
        super().close()
        self.registry.db.close()
        self.service_audit.close()


def build(settings: MatchServiceSettings) -> HostedMatchStage:
    """The registry over the configured store, database and cohort, and the match stage it gates.

    Exits with status 2 (naming ``OPENLFR_REGISTRY_COHORT``) when the cohort cannot be used.
    """
    api_settings = load_settings(ApiSettings)
    registry_settings = load_settings(RegistrySettings)
    embedder = settings.embedder_version()  # what the embed service stamps on every vector
    try:
        cohort = Cohort.load(registry_settings.cohort, setting=COHORT_SETTING)
        cohort.check_model(embedder, embed_mirror=settings.embed_mirror, setting=COHORT_SETTING)
    except CohortError as exc:
        logger.error('bad setting: %s', exc)  # the message names OPENLFR_REGISTRY_COHORT
        raise SystemExit(EXIT_BAD_SETTINGS) from exc
    manifest = settings.embedder_manifest()
    if registry_settings.near_duplicate_score is None and manifest.near_duplicate_score is None:
        logger.error('bad setting: OPENLFR_REGISTRY_NEAR_DUPLICATE_SCORE: required with the embedder %s, whose '
                     'manifest names no near_duplicate_score (measure it: benchmarks/near_duplicates.py)', embedder)
        raise SystemExit(EXIT_BAD_SETTINGS)
    if registry_settings.near_duplicate_score is None:
        registry_settings = registry_settings.model_copy(update={"near_duplicate_score": manifest.near_duplicate_score})
    logger.info(
        'cohort loaded cohort="%s" path="%s" people="%s" faces="%d"',
        cohort.short_id, registry_settings.cohort, cohort.meta.get("people"), cohort.vectors.shape[0],
    )
    # The store holds this embedder's vectors only (another embedder gets a collection of its own).
    audit = open_service_audit(api_settings.audit_log, settings, load_settings(AuditSettings))
    try:
        store = open_store(load_settings(VectorStoreSettings),
                           StoreModel(model_version=embedder, dim=settings.embedder_manifest().embedding_size))
    except BaseException:
        audit.close()
        raise
    try:
        db = RegistryDb(registry_settings.db_path)
        try:
            registry = Registry(
                db=db,
                store=store,
                analyzer=build_analyzer(settings),
                audit=audit.log,
                settings=registry_settings,
                model_version=embedder,
                cohort=cohort,
            )
        except BaseException:
            db.close()
            raise
    except BaseException:
        store.close()
        audit.close()
        raise
    return HostedMatchStage(
        load_settings(MatchSettings), store=store, gate=registry, registry=registry, api_settings=api_settings,
        audit=audit,
        norm=registry.norm, signer=load_settings(SigningSettings).signer(), max_clock_skew_s=settings.max_clock_skew_s,
    )


def api(settings: MatchServiceSettings, stage: Stage) -> HttpApi:
    """The registry's API, served beside the probes."""
    assert isinstance(stage, HostedMatchStage)
    access = stage.api_settings.access(stage.service_audit.log)
    return HttpApi(
        routers=[make_registry_router(stage.registry, access, stage.api_settings),
                 make_lookalike_router(stage, stage.registry, access)],
        title="OpenLFR match service: watchlists, subjects and deployments",
        max_body_bytes=stage.api_settings.max_body_bytes,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the service until SIGTERM."""
    return run_stage_service(
        build,
        MatchServiceSettings,
        argv,
        also_validate=(MatchSettings, SigningSettings, VectorStoreSettings, RegistrySettings, ApiSettings, AuditSettings),
        api=api,
    )


if __name__ == "__main__":
    sys.exit(main())
