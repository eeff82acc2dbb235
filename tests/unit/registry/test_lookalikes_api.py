"""``GET /v1/deployments/{id}/look-alikes``: the match stage's look-alike counts, per subject,
behind the API's roles (the gauge behind the alert rule names no subject)."""

from __future__ import annotations

from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from openlfr.api.auth import Access
from openlfr.messages.signing import MatchSigner
from openlfr.pipeline.match import MatchSettings, MatchStage, _TemplateState
from openlfr.pipeline.templates import TrackTemplate
from openlfr.registry.lookalikes_api import make_lookalike_router
from openlfr.service.http import make_health_app

from .conftest import TOKENS
from .test_registry_thresholds import add_subjects, deploy


def test_look_alikes_of_a_deployment(env, image_bytes) -> None:
    add_subjects(env, "wl", ["obama", "rose"], image_bytes)
    deploy(env, "dep-1", "wl", "cam-1")
    stage = MatchStage(MatchSettings(look_alike_min_tracks=2), store=env.store, gate=env.registry,
                       registry=CollectorRegistry(), signer=MatchSigner.ephemeral())
    # Three tracks ended near obama's threshold without matching, one near rose's, one of them
    # also matched rose (a match is not a near miss).
    for near, published in (({"obama"}, set()), ({"obama", "rose"}, {"rose"}), ({"obama", "rose"}, set())):
        stage._count_near_misses(_TemplateState(TrackTemplate(max_faces=1), "dep-1", set(published), set(near)))
    from openlfr.api.settings import ApiSettings, ApiToken

    api = ApiSettings(tokens=[ApiToken(name=n, token=t, roles=r) for n, (t, r) in TOKENS.items()],
                      audit_log=env.audit.path)
    app = make_health_app(ready=env.registry.ready, registry=CollectorRegistry(),
                          routers=[make_lookalike_router(stage, env.registry, Access(api.authenticator(), env.audit))],
                          title="match")
    http = TestClient(app)
    answer = http.get("/v1/deployments/dep-1/look-alikes", headers={"Authorization": f"Bearer {TOKENS['vera'][0]}"})
    assert answer.status_code == 200, answer.text
    data = answer.json()
    assert data["deployment_id"] == "dep-1" and data["min_tracks"] == 2
    assert data["subjects"] == [
        {"subject_id": "obama", "near_miss_tracks": 3, "attracts_strangers": True},
        {"subject_id": "rose", "near_miss_tracks": 1, "attracts_strangers": False},
    ]
    assert http.get("/v1/deployments/dep-1/look-alikes").status_code == 401
    missing = http.get("/v1/deployments/nope/look-alikes", headers={"Authorization": f"Bearer {TOKENS['vera'][0]}"})
    assert missing.status_code == 404 and "nope" in missing.text
    quiet = deploy(env, "dep-2", "wl", "cam-2")
    assert http.get(f"/v1/deployments/{quiet.id}/look-alikes",
                    headers={"Authorization": f"Bearer {TOKENS['vera'][0]}"}).json()["subjects"] == []
