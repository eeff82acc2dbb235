"""The OpenAPI documents of the HTTP services, built without starting them (``openlfr openapi``).

Each service's app is assembled as the service assembles it (the routers, their schemas and
limits), over throwaway in-memory stores where its routes need one: no broker, model, cohort,
database file or audit record is touched.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from prometheus_client import CollectorRegistry

from openlfr.api.auth import Access, ApiToken, Authenticator
from openlfr.api.settings import ApiSettings
from openlfr.audit.log import AuditLog
from openlfr.service.http import make_health_app

if TYPE_CHECKING:
    from openlfr.pipeline.match import MatchStage
    from openlfr.registry.service import Registry

#: Services with only probes and metrics.
PROBE_ONLY = ("ingest", "detect", "embed")


def _ok() -> tuple[bool, str]:
    return True, "ok"


def openapi_documents() -> dict[str, dict[str, Any]]:
    """``{service: OpenAPI document}`` for ingest, detect, embed, match and alert."""
    from openlfr.registry.api import make_registry_router
    from openlfr.registry.lookalikes_api import make_lookalike_router
    from openlfr.review.api import make_review_router
    from openlfr.review.events import EventHub
    from openlfr.review.store import ReviewStore

    docs: dict[str, dict[str, Any]] = {}
    for name in PROBE_ONLY:
        app = make_health_app(ready=_ok, registry=CollectorRegistry(), title=f"OpenLFR {name} service")
        docs[name] = app.openapi()

    token = ApiToken(name="openapi", roles=frozenset({"viewer"}), token_sha256="0" * 64)
    with tempfile.TemporaryDirectory(prefix="openlfr-openapi-") as tmp:
        audit = AuditLog(Path(tmp) / "unused-audit.jsonl")
        access = Access(Authenticator([token]), audit)
        api_settings = ApiSettings(tokens=[token], audit_log=audit.path)

        # The routes only are documented: the registry (its cohort, models and stores) is never
        # asked anything here, so none is built.
        registry = cast("Registry", None)
        app = make_health_app(
            ready=_ok,
            registry=CollectorRegistry(),
            routers=[make_registry_router(registry, access, api_settings),
                     make_lookalike_router(cast("MatchStage", None), registry, access)],
            title="OpenLFR match service: watchlists, subjects and deployments",
        )
        docs["match"] = app.openapi()

        review_store = ReviewStore(":memory:")
        hub = EventHub()
        try:
            app = make_health_app(
                ready=_ok,
                registry=CollectorRegistry(),
                routers=[make_review_router(review_store, hub, access, audit=audit)],
                title="OpenLFR alert service: alerts, review, console",
            )
            docs["alert"] = app.openapi()
        finally:
            hub.close()
            review_store.close()
    return docs
