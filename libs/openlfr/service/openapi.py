"""The OpenAPI documents of the HTTP services, built without starting them (``openlfr openapi``).

Each service's app is assembled as the service assembles it (the routers, their schemas and
limits), over throwaway in-memory stores where its routes need one: no broker, model, cohort,
database file or audit record is touched.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from fastapi import FastAPI
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
    with documented_apps() as apps:
        return {name: app.openapi() for name, app in apps.items()}


@contextmanager
def documented_apps(tokens: Sequence[ApiToken] = ()) -> Iterator[dict[str, FastAPI]]:
    """``{service: app}`` as each service assembles it, over throwaway stores.

    Args:
        tokens: who may call the routes (a test's); by default one unusable token.
    """
    from openlfr.registry.api import make_registry_router
    from openlfr.registry.lookalikes_api import make_lookalike_router
    from openlfr.review.api import make_review_router
    from openlfr.review.events import EventHub
    from openlfr.review.store import ReviewStore

    apps: dict[str, FastAPI] = {}
    for name in PROBE_ONLY:
        apps[name] = make_health_app(ready=_ok, registry=CollectorRegistry(), title=f"OpenLFR {name} service")

    tokens = list(tokens) or [ApiToken(name="openapi", roles=frozenset({"viewer"}), token_sha256="0" * 64)]
    with tempfile.TemporaryDirectory(prefix="openlfr-openapi-") as tmp:
        audit = AuditLog(Path(tmp) / "unused-audit.jsonl")
        access = Access(Authenticator(tokens), audit)
        api_settings = ApiSettings(tokens=tokens, audit_log=audit.path)

        # The routes only are documented: the registry (its cohort, models and stores) is never
        # asked anything here, so none is built.
        registry = cast("Registry", None)
        apps["match"] = make_health_app(
            ready=_ok,
            registry=CollectorRegistry(),
            routers=[make_registry_router(registry, access, api_settings),
                     make_lookalike_router(cast("MatchStage", None), registry, access)],
            title="OpenLFR match service: watchlists, subjects and deployments",
        )

        review_store = ReviewStore(":memory:")
        hub = EventHub()
        try:
            apps["alert"] = make_health_app(
                ready=_ok,
                registry=CollectorRegistry(),
                routers=[make_review_router(review_store, hub, access, audit=audit)],
                title="OpenLFR alert service: alerts, review, console",
            )
            yield apps
        finally:
            hub.close()
            review_store.close()
