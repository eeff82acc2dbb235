"""The alert service's deployment report reads the look-alike watch from the match service's real
API: the registry's and the look-alike routes served over HTTP as the match service serves them,
the review API's report asking them through ``HttpRegistryClient`` (issue 10)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from openlfr.api.auth import Access, ApiToken
from openlfr.api.settings import ApiSettings
from openlfr.messages.signing import MatchSigner
from openlfr.pipeline.match import MatchSettings, MatchStage, _TemplateState
from openlfr.pipeline.templates import TrackTemplate
from openlfr.registry.api import make_registry_router
from openlfr.registry.lookalikes_api import make_lookalike_router
from openlfr.review.registry_client import HttpRegistryClient
from openlfr.review.testing import bearer, build_review_app
from openlfr.service.http import make_health_app, run_http_in_thread

from .conftest import TOKENS
from .test_registry_thresholds import add_subjects, deploy


@pytest.fixture
def match_service(env) -> Iterator[tuple[str, MatchStage]]:
    """The match service's API (registry and look-alikes) on a real port, and its match stage."""
    stage = MatchStage(MatchSettings(look_alike_min_tracks=2), store=env.store, gate=env.registry,
                       registry=CollectorRegistry(), signer=MatchSigner.ephemeral())
    api = ApiSettings(tokens=[ApiToken(name=n, token=t, roles=r) for n, (t, r) in TOKENS.items()],
                      audit_log=env.audit.path)
    access = Access(api.authenticator(), env.audit)
    app = make_health_app(ready=env.registry.ready, registry=CollectorRegistry(), title="match",
                          routers=[make_registry_router(env.registry, access, api),
                                   make_lookalike_router(stage, env.registry, access)])
    server = run_http_in_thread(app, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{server.port}", stage
    server.stop()


def test_the_report_shows_the_match_services_look_alike_watch(
    env, image_bytes, match_service: tuple[str, MatchStage], tmp_path: Path
) -> None:
    url, stage = match_service
    add_subjects(env, "wl", ["obama", "rose"], image_bytes)
    deploy(env, "dep-1", "wl", "cam-1")
    deploy(env, "dep-2", "wl", "cam-2")
    # Three tracks of dep-1 ended near obama's threshold without matching, one near rose's.
    for near in ({"obama"}, {"obama", "rose"}, {"obama"}):
        stage._count_near_misses(_TemplateState(TrackTemplate(max_faces=1), "dep-1", set(), set(near)))
    client = HttpRegistryClient(url, token=SecretStr(TOKENS["svc"][0]))  # the alert service's role
    answer = client.get_look_alikes("dep-1")
    assert answer is not None and answer["min_tracks"] == 2
    assert client.get_look_alikes("nope") is None  # the route's 404

    review = build_review_app(tmp_path / "review", registry_client=client)
    try:
        http = TestClient(review.app)
        report = http.get("/v1/deployments/dep-1/report", headers=bearer("victor")).json()
        assert report["purpose"] == "station"  # the deployment, from the same registry
        assert report["look_alikes"] == {
            "watch": "from the match service, counted since its match process started",
            "score_margin": 0.03, "z_margin": 1.0, "min_tracks": 2, "subjects_with_near_misses": 2,
            "attracting_strangers": [{"subject_id": "obama", "near_miss_tracks": 3}],
        }
        page = http.get("/v1/deployments/dep-1/report", params={"format": "markdown"}, headers=bearer("victor")).text
        assert "| Subjects that attract strangers (near-miss tracks) | obama (3 tracks) |" in page
        quiet = http.get("/v1/deployments/dep-2/report", headers=bearer("victor")).json()["look_alikes"]
        assert (quiet["subjects_with_near_misses"], quiet["attracting_strangers"]) == (0, [])
    finally:
        review.hub.close()
        review.store.close()
