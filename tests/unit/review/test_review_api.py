"""The review API: every route and role, its refusals (401, 403 audited, 404, 409, 422, 502, 503),
the audit of reviews and reports (the live stream: test_review_stream.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from openlfr.review.exceptions import DeploymentNotFound, RegistryUnavailable, SubjectNotFound
from openlfr.review.store import MAX_REASON_CHARS
from openlfr.review.testing import ReviewApp, bearer, build_review_app, make_alert

DAY = 86400.0


class FakeRegistry:
    """A registry client answering from a dict, or failing as told."""

    def __init__(self, deployments: dict[str, dict[str, Any]], *, down: bool = False,
                 subjects: dict[str, dict[str, Any]] | None = None,
                 look_alikes: dict[str, dict[str, Any]] | None = None) -> None:
        self.deployments = deployments
        self.subjects = subjects or {}
        self.look_alikes = look_alikes or {}
        self.down = down
        self.look_alikes_down = False
        self.asked: list[str] = []

    def get_deployment(self, deployment_id: str) -> dict[str, Any]:
        self.asked.append(deployment_id)
        if self.down:
            raise RegistryUnavailable("the registry at http://registry:8080 could not be reached: connection refused")
        if deployment_id not in self.deployments:
            raise DeploymentNotFound(deployment_id)
        return self.deployments[deployment_id]

    def get_subject(self, subject_id: str) -> dict[str, Any]:
        self.asked.append(subject_id)
        if self.down:
            raise RegistryUnavailable("the registry at http://registry:8080 could not be reached: connection refused")
        if subject_id not in self.subjects:
            raise SubjectNotFound(subject_id)
        return self.subjects[subject_id]

    def get_look_alikes(self, deployment_id: str) -> dict[str, Any] | None:
        self.asked.append(f"{deployment_id}/look-alikes")
        if self.down or self.look_alikes_down:
            raise RegistryUnavailable("the registry answered HTTP 503 for the look-alikes of deployment "
                                      f"{deployment_id!r}: the match stage is not ready")
        return self.look_alikes.get(deployment_id)  # None: not served


DEPLOYMENT = {
    "id": "dep-1",
    "purpose": "Find people wanted on warrant for serious violence",
    "authorised_by": "Supt. A. Example",
    "camera_ids": ["cam-1", "cam-2"],
    "start_ts": 1_800_000_000.0,
    "end_ts": 1_800_028_800.0,
    "watchlist_ids": ["wl-1"],
    "threshold": 0.705,
    "snapshot": {"ts": 1_799_990_000.0, "subjects": 412, "fingerprint": "abc123"},
    "status": "ended",
    "stats": {"faces": 50_000, "tracks": 9_000},
    "model_version": "dlib_resnet_v1@sha256:0123abcd",
}


#: The registry's record of subject-1 (``SubjectPublic``), as ``GET /v1/subjects/subject-1`` answers.
SUBJECT = {
    "id": "subject-1", "watchlist_id": "wl-1", "display_name": "Subject One", "category": "wanted",
    "reason": "warrant 12/345 for robbery", "legal_basis": "PACE 1984 s.24; warrant 12/345", "added_by": "wanda",
    "expires_at": "2027-03-01T12:00:00Z", "expired": False, "status": "active", "images": [],
    "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
}


@pytest.fixture
def review(tmp_path: Path) -> Iterator[ReviewApp]:
    app = build_review_app(tmp_path, registry_client=FakeRegistry({"dep-1": DEPLOYMENT},
                                                                  subjects={"subject-1": SUBJECT}))
    yield app
    app.hub.close()
    app.store.close()


@pytest.fixture
def client(review: ReviewApp) -> TestClient:
    return TestClient(review.app)


@pytest.fixture
def alert(review: ReviewApp):
    a = make_alert()
    review.service.on_alert(a)
    return a


def _post_review(client: TestClient, alert_id: str, who: str, decision: str, reason: str | None = None,
                 **extra: Any) -> httpx.Response:
    return client.post(f"/v1/alerts/{alert_id}/reviews", json={"decision": decision, "reason": reason, **extra},
                       headers=bearer(who))


ROUTES = [
    ("GET", "/v1/alerts"),
    ("GET", "/v1/alerts/{id}"),
    ("GET", "/v1/alerts/{id}/probe.jpg"),
    ("GET", "/v1/alerts/{id}/reference.jpg"),
    ("GET", "/v1/alerts/{id}/scene.jpg"),
    ("POST", "/v1/alerts/{id}/reviews"),
    ("GET", "/v1/alerts/stream"),
    ("GET", "/v1/deployments/dep-1/report"),
    ("GET", "/v1/me"),
    ("GET", "/v1/alerts/summary"),
    ("GET", "/v1/alerts/{id}/subject"),
]


@pytest.mark.parametrize("method, path", ROUTES)
@pytest.mark.parametrize("headers, detail", [
    ({}, "authentication required"),
    ({"Authorization": "Bearer not-a-known-token-123"}, "unknown token"),
])
def test_every_route_needs_a_token(client: TestClient, alert, method: str, path: str, headers: dict,
                                   detail: str) -> None:
    r = client.request(method, path.format(id=alert.alert_id), headers=headers,
                       json={"decision": "confirm"} if method == "POST" else None)
    assert r.status_code == 401
    assert detail in r.json()["detail"]
    assert r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("who", ["victor", "wanda"])
def test_reviewing_needs_the_reviewer_role_and_refusals_are_audited(
    client: TestClient, review: ReviewApp, alert, who: str
) -> None:
    r = _post_review(client, alert.alert_id, who, "confirm")
    assert r.status_code == 403
    assert "reviewer" in r.json()["detail"]
    assert review.store.get(alert.alert_id).status == "pending"
    (record,) = review.audit_records()
    assert (record.action, record.actor) == ("access.denied", who)
    assert record.target == f"POST /v1/alerts/{alert.alert_id}/reviews"


@pytest.mark.parametrize("who", ["alice", "victor", "wanda"])
def test_every_role_reads(client: TestClient, alert, who: str) -> None:
    assert client.get("/v1/alerts", headers=bearer(who)).status_code == 200
    assert client.get(f"/v1/alerts/{alert.alert_id}", headers=bearer(who)).status_code == 200
    assert client.get(f"/v1/alerts/{alert.alert_id}/probe.jpg", headers=bearer(who)).status_code == 200


def test_list_and_get(client: TestClient, review: ReviewApp) -> None:
    now = time.time()
    alerts = [make_alert(track=f"t{i}", camera=f"cam-{i % 2}", capture_ts=now - 100 + i) for i in range(5)]
    for a in alerts:
        review.service.on_alert(a)
    r = client.get("/v1/alerts", params={"limit": 2}, headers=bearer("victor"))
    assert r.status_code == 200
    body = r.json()
    assert [i["alert_id"] for i in body["items"]] == [alerts[4].alert_id, alerts[3].alert_id]
    assert body["next_cursor"]
    item = body["items"][0]
    assert item["probe_url"] == f"/v1/alerts/{alerts[4].alert_id}/probe.jpg"
    assert item["reference_url"] == f"/v1/alerts/{alerts[4].alert_id}/reference.jpg"
    assert (item["status"], item["next_step"], item["reviews"]) == ("pending", 1, [])
    assert "probe_chip_jpeg" not in item and "reference_chip_jpeg" not in item
    rest = client.get("/v1/alerts", params={"limit": 10, "cursor": body["next_cursor"]}, headers=bearer("victor"))
    assert [i["alert_id"] for i in rest.json()["items"]] == [a.alert_id for a in reversed(alerts[:3])]
    assert rest.json()["next_cursor"] is None

    only = client.get("/v1/alerts", params={"camera_id": "cam-1", "since": now - 99, "until": now - 96.5},
                      headers=bearer("victor")).json()["items"]
    assert [i["alert_id"] for i in only] == [alerts[3].alert_id, alerts[1].alert_id]
    assert client.get("/v1/alerts", params={"deployment_id": "dep-x"}, headers=bearer("victor")).json() == {
        "items": [], "next_cursor": None
    }

    one = client.get(f"/v1/alerts/{alerts[0].alert_id}", headers=bearer("victor")).json()
    assert (one["subject_id"], one["camera_id"], one["score"], one["embedder_model"]) == (
        "subject-1", "cam-0", 0.82, "dlib_resnet_v1@sha256:0123abcd"
    )


@pytest.mark.parametrize("params, detail", [
    ({"status": "open"}, None),
    ({"limit": 0}, None),
    ({"limit": 501}, None),
    ({"cursor": "bogus"}, "cursor"),
    ({"since": 10, "until": 5}, "before until"),
    ({"camera_id": "bad camera"}, None),
])
def test_list_refuses_bad_filters(client: TestClient, params: dict, detail: str | None) -> None:
    r = client.get("/v1/alerts", params=params, headers=bearer("victor"))
    assert r.status_code == 422
    if detail:
        assert detail in r.json()["detail"]


def test_unknown_and_malformed_ids(client: TestClient) -> None:
    r = client.get(f"/v1/alerts/{'0' * 32}", headers=bearer("victor"))
    assert r.status_code == 404 and "never received" in r.json()["detail"]
    assert client.get(f"/v1/alerts/{'0' * 32}/probe.jpg", headers=bearer("victor")).status_code == 404
    assert _post_review(client, "0" * 32, "alice", "confirm").status_code == 404
    assert client.get("/v1/alerts/NOT-AN-ID", headers=bearer("victor")).status_code == 422


def test_chips_are_served_until_purged(client: TestClient, review: ReviewApp, alert) -> None:
    probe = client.get(f"/v1/alerts/{alert.alert_id}/probe.jpg", headers=bearer("victor"))
    assert probe.status_code == 200 and probe.headers["content-type"] == "image/jpeg"
    assert probe.content == alert.probe_chip_jpeg and "no-store" in probe.headers["cache-control"]
    ref = client.get(f"/v1/alerts/{alert.alert_id}/reference.jpg", headers=bearer("victor"))
    assert ref.status_code == 200 and ref.content == alert.reference_chip_jpeg
    scene = client.get(f"/v1/alerts/{alert.alert_id}/scene.jpg", headers=bearer("victor"))
    assert scene.status_code == 200 and scene.content == alert.scene_jpeg and "no-store" in scene.headers["cache-control"]
    listed = client.get(f"/v1/alerts/{alert.alert_id}", headers=bearer("victor")).json()
    assert listed["scene_url"] == f"/v1/alerts/{alert.alert_id}/scene.jpg"

    review.store.purge(now=time.time() + 40 * DAY)
    for which in ("probe", "reference", "scene"):
        r = client.get(f"/v1/alerts/{alert.alert_id}/{which}.jpg", headers=bearer("victor"))
        assert r.status_code == 404
        assert f"the {which} crop of alert {alert.alert_id} was deleted" in r.json()["detail"]
        assert "crop retention period (31 days)" in r.json()["detail"]
    record = client.get(f"/v1/alerts/{alert.alert_id}", headers=bearer("victor")).json()
    assert (record["probe_url"], record["reference_url"], record["scene_url"]) == (None, None, None)
    assert record["crops_purged_ts"]


def test_reference_absent_says_so(client: TestClient, review: ReviewApp) -> None:
    a = make_alert(track="noref", reference=False)
    review.service.on_alert(a)
    r = client.get(f"/v1/alerts/{a.alert_id}/reference.jpg", headers=bearer("victor"))
    assert r.status_code == 404 and "came without a watchlist reference image" in r.json()["detail"]
    assert client.get(f"/v1/alerts/{a.alert_id}", headers=bearer("victor")).json()["reference_url"] is None


def test_scene_absent_says_so(client: TestClient, review: ReviewApp) -> None:
    a = make_alert(track="noscene", scene=False)
    review.service.on_alert(a)
    r = client.get(f"/v1/alerts/{a.alert_id}/scene.jpg", headers=bearer("victor"))
    assert r.status_code == 404 and "came without a scene crop" in r.json()["detail"]
    assert client.get(f"/v1/alerts/{a.alert_id}", headers=bearer("victor")).json()["scene_url"] is None


def test_two_person_confirm_is_audited_and_published(client: TestClient, review: ReviewApp, alert) -> None:
    sub = review.hub.subscribe()
    r = _post_review(client, alert.alert_id, "alice", "confirm", "looks like him", step=1)
    assert r.status_code == 200
    assert (r.json()["status"], r.json()["next_step"]) == ("awaiting_second", 2)

    r = _post_review(client, alert.alert_id, "alice", "confirm")
    assert r.status_code == 409
    assert r.json()["detail"].startswith("you (alice) already made the first review")

    r = _post_review(client, alert.alert_id, "bob", "confirm", step=2)
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "confirmed" and body["next_step"] is None
    assert [(s["step"], s["reviewer"], s["decision"], s["reason"]) for s in body["reviews"]] == [
        (1, "alice", "confirm", "looks like him"), (2, "bob", "confirm", None)
    ]

    r = _post_review(client, alert.alert_id, "victor", "confirm")
    assert r.status_code == 403
    r = _post_review(client, "f" * 32, "bob", "confirm")
    assert r.status_code == 404
    r = _post_review(client, alert.alert_id, "bob", "reject", "changed my mind")
    assert r.status_code == 409 and "already confirmed" in r.json()["detail"]

    reviews = [rec for rec in review.audit_records() if rec.action == "alert.review"]
    assert [(rec.actor, rec.target, rec.details["step"], rec.details["decision"], rec.details["reason"],
             rec.details["status"]) for rec in reviews] == [
        ("alice", f"alert:{alert.alert_id}", 1, "confirm", "looks like him", "awaiting_second"),
        ("bob", f"alert:{alert.alert_id}", 2, "confirm", None, "confirmed"),
    ]
    assert reviews[0].details["deployment_id"] == "dep-1"
    assert review.audit.verify().ok

    events = [sub.get(timeout=0) for _ in range(2)]
    assert [e.kind for e in events] == ["review", "review"]
    assert [(e.data["previous_status"], e.data["alert"]["status"], e.data["step"]["reviewer"]) for e in events] == [
        ("pending", "awaiting_second", "alice"), ("awaiting_second", "confirmed", "bob")
    ]
    assert sub.get(timeout=0) is None


def test_reject_needs_a_reason_and_ends_the_review(client: TestClient, review: ReviewApp, alert) -> None:
    r = _post_review(client, alert.alert_id, "alice", "reject")
    assert r.status_code == 422 and r.json()["detail"] == "a reject needs a reason: say why the alert is wrong"
    r = _post_review(client, alert.alert_id, "alice", "reject", "   ")
    assert r.status_code == 422
    r = _post_review(client, alert.alert_id, "alice", "reject", "x" * (MAX_REASON_CHARS + 1))
    assert r.status_code == 422
    r = _post_review(client, alert.alert_id, "alice", "approve")
    assert r.status_code == 422
    r = _post_review(client, alert.alert_id, "alice", "confirm", extra_field=1)
    assert r.status_code == 422
    assert review.store.get(alert.alert_id).status == "pending"
    assert not [rec for rec in review.audit_records() if rec.action == "alert.review"]

    r = _post_review(client, alert.alert_id, "alice", "reject", "different person")
    assert r.status_code == 200 and r.json()["status"] == "rejected"
    r = _post_review(client, alert.alert_id, "bob", "confirm")
    assert r.status_code == 409 and "already rejected by alice" in r.json()["detail"]


def test_second_step_reject_by_another_reviewer(client: TestClient, alert) -> None:
    assert _post_review(client, alert.alert_id, "alice", "confirm").status_code == 200
    r = _post_review(client, alert.alert_id, "bob", "reject", "the tattoo is on the other arm")
    assert r.status_code == 200 and r.json()["status"] == "rejected"
    assert [s["step"] for s in r.json()["reviews"]] == [1, 2]


def test_a_stale_step_is_a_conflict(client: TestClient, alert) -> None:
    assert _post_review(client, alert.alert_id, "alice", "confirm", step=1).status_code == 200
    r = _post_review(client, alert.alert_id, "bob", "confirm", step=1)
    assert r.status_code == 409 and "changed since you loaded it" in r.json()["detail"]


def test_a_review_that_cannot_be_audited_is_not_recorded(client: TestClient, review: ReviewApp, alert) -> None:
    with review.audit.path.open("ab") as fh:
        fh.write(b"{not a record\n")  # the chain cannot be extended past this line
    r = _post_review(client, alert.alert_id, "alice", "confirm")
    assert r.status_code == 503 and "the review was not recorded" in r.json()["detail"]
    assert review.store.get(alert.alert_id).status == "pending"
    assert review.store.tallies("dep-1").awaiting_second == 0


def test_confirm_after_the_crops_were_purged_is_a_conflict(client: TestClient, review: ReviewApp, alert) -> None:
    review.store.purge(now=time.time() + 40 * DAY)
    r = _post_review(client, alert.alert_id, "alice", "confirm")
    assert r.status_code == 409 and "can no longer be confirmed" in r.json()["detail"]
    assert _post_review(client, alert.alert_id, "alice", "reject", "cannot be checked").status_code == 200


def test_report_json_from_the_registry_and_tallies(client: TestClient, review: ReviewApp) -> None:
    for i in range(3):
        review.service.on_alert(make_alert(track=f"r{i}"))
    ids = [r.alert_id for r in review.store.list_alerts().records]
    _post_review(client, ids[0], "alice", "reject", "no")
    _post_review(client, ids[1], "alice", "confirm")
    _post_review(client, ids[1], "bob", "confirm")
    r = client.get("/v1/deployments/dep-1/report", headers=bearer("victor"))
    assert r.status_code == 200
    report = r.json()
    assert (report["purpose"], report["authorised_by"], report["cameras"], report["threshold"]) == (
        DEPLOYMENT["purpose"], DEPLOYMENT["authorised_by"], ["cam-1", "cam-2"], 0.705
    )
    assert (report["watchlist_size"], report["faces_processed"], report["tracks"]) == (412, 50_000, 9_000)
    assert (report["alerts"], report["adjudicated"], report["confirmed"], report["rejected"], report["pending"]) == (
        3, 2, 1, 1, 1
    )
    assert report["precision"] == 0.5 and report["false_alert_share"] == 0.5
    assert report["summary"].startswith("Of 2 alerts adjudicated, 1 was wrong (50%)")
    (export,) = [rec for rec in review.audit_records() if rec.action == "export"]
    assert (export.actor, export.target, export.details["format"], export.details["registry"]) == (
        "victor", "deployment:dep-1/report", "json", True
    )


def test_report_markdown(client: TestClient, review: ReviewApp, alert) -> None:
    r = client.get("/v1/deployments/dep-1/report", params={"format": "markdown"}, headers=bearer("alice"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/markdown")
    assert r.text.startswith("# Live facial recognition deployment dep-1")
    assert "| Purpose | Find people wanted on warrant for serious violence |" in r.text
    assert "No alert has been adjudicated yet; 1 alert awaits review." in r.text
    assert client.get("/v1/deployments/dep-1/report", params={"format": "pdf"},
                      headers=bearer("alice")).status_code == 422


def test_report_of_a_deployment_without_alerts_and_of_an_unknown_one(tmp_path: Path) -> None:
    registry = FakeRegistry({"dep-1": DEPLOYMENT, "dep-2": {"id": "dep-2"}})
    review = build_review_app(tmp_path, registry_client=registry)
    client = TestClient(review.app)
    r = client.get("/v1/deployments/dep-2/report", headers=bearer("victor"))
    assert r.status_code == 200
    assert (r.json()["alerts"], r.json()["purpose"], r.json()["summary"]) == (0, "unknown", "No alert was raised.")
    r = client.get("/v1/deployments/dep-9/report", headers=bearer("victor"))
    assert r.status_code == 404 and r.json()["detail"] == "the registry has no deployment 'dep-9'"
    assert client.get("/v1/deployments/bad id/report", headers=bearer("victor")).status_code == 422
    registry.down = True
    r = client.get("/v1/deployments/dep-1/report", headers=bearer("victor"))
    assert r.status_code == 502 and "could not be reached" in r.json()["detail"]
    assert [rec.target for rec in review.audit_records() if rec.action == "export"] == ["deployment:dep-2/report"]
    review.store.close()


LOOK_ALIKES = {
    "deployment_id": "dep-1", "z_margin": 1.0, "score_margin": 0.03, "min_tracks": 5,
    "subjects": [{"subject_id": "subject-1", "near_miss_tracks": 7, "attracts_strangers": True},
                 {"subject_id": "subject-2", "near_miss_tracks": 1, "attracts_strangers": False}],
}


def test_report_with_the_look_alike_watch_and_when_it_fails_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = FakeRegistry({"dep-1": DEPLOYMENT, "dep-2": {"id": "dep-2"}}, look_alikes={"dep-1": LOOK_ALIKES})
    review = build_review_app(tmp_path, registry_client=registry)
    client = TestClient(review.app)
    report = client.get("/v1/deployments/dep-1/report", headers=bearer("victor")).json()
    assert report["look_alikes"]["watch"].startswith("from the match service, counted since its match process")
    assert report["look_alikes"]["subjects_with_near_misses"] == 2
    assert report["look_alikes"]["attracting_strangers"] == [{"subject_id": "subject-1", "near_miss_tracks": 7}]
    page = client.get("/v1/deployments/dep-1/report", params={"format": "markdown"}, headers=bearer("victor")).text
    assert "| Subjects that attract strangers (near-miss tracks) | subject-1 (7 tracks) |" in page
    # Not served (a registry without the match stage beside it): unknown, saying so.
    report = client.get("/v1/deployments/dep-2/report", headers=bearer("victor")).json()
    assert report["look_alikes"]["watch"] == "unknown (the registry does not serve the look-alike watch)"
    assert report["look_alikes"]["attracting_strangers"] == "unknown"
    # The look-alikes alone failing: the report stands, the watch reads unknown with the reason, a warning is logged.
    registry.look_alikes_down = True
    with caplog.at_level("WARNING", logger="openlfr.review.api"):
        r = client.get("/v1/deployments/dep-1/report", headers=bearer("victor"))
    assert r.status_code == 200 and r.json()["purpose"] == DEPLOYMENT["purpose"]
    assert r.json()["look_alikes"]["watch"] == ("unknown (the registry answered HTTP 503 for the look-alikes of "
                                                "deployment 'dep-1': the match stage is not ready)")
    assert any("look-alikes unavailable" in rec.getMessage() and "dep-1" in rec.getMessage() for rec in caplog.records)
    exports = [rec.details for rec in review.audit_records() if rec.action == "export"]
    assert [(d["registry"], d["look_alikes"]) for d in exports] == [(True, True), (True, True), (True, False),
                                                                     (True, False)]
    review.store.close()


def test_report_without_a_registry(tmp_path: Path) -> None:
    review = build_review_app(tmp_path, registry_client=None)
    client = TestClient(review.app)
    review.service.on_alert(make_alert())
    r = client.get("/v1/deployments/dep-1/report", headers=bearer("victor"))
    assert r.status_code == 200
    report = r.json()
    assert report["deployment_details"] == "unknown (the registry was not asked)"
    assert (report["deployment_id"], report["alerts"], report["purpose"], report["watchlist_size"]) == (
        "dep-1", 1, "unknown", "unknown"
    )
    assert report["look_alikes"]["watch"] == "unknown (the registry was not asked)"
    r = client.get("/v1/deployments/dep-2/report", headers=bearer("victor"))
    assert r.status_code == 404 and "no registry is configured" in r.json()["detail"]
    review.store.close()


@pytest.mark.parametrize("who, roles, may_review", [
    ("alice", ["reviewer"], True),
    ("victor", ["viewer"], False),
    ("wanda", ["watchlist_admin"], False),
])
def test_me_names_the_token_holder_and_roles(client: TestClient, who: str, roles: list[str],
                                             may_review: bool) -> None:
    r = client.get("/v1/me", headers=bearer(who))
    assert r.status_code == 200
    assert r.json() == {"name": who, "roles": roles, "may_review": may_review}


def test_needs_my_review_and_the_summary_follow_the_two_person_rule(client: TestClient, review: ReviewApp) -> None:
    now = time.time()
    pending = make_alert(track="p", capture_ts=now - 10)
    alices = make_alert(track="a", camera="cam-2", capture_ts=now - 20)  # alice makes the first review
    bobs = make_alert(track="b", camera="cam-2", deployment="dep-2", capture_ts=now - 30)  # bob makes the first
    done = make_alert(track="d", capture_ts=now - 40)
    for a in (pending, alices, bobs, done):
        review.service.on_alert(a)
    assert _post_review(client, alices.alert_id, "alice", "confirm").status_code == 200
    assert _post_review(client, bobs.alert_id, "bob", "confirm").status_code == 200
    assert _post_review(client, done.alert_id, "bob", "reject", "not them").status_code == 200

    def mine(who: str, **params: Any) -> list[str]:
        r = client.get("/v1/alerts", params={"needs_my_review": "true", **params}, headers=bearer(who))
        assert r.status_code == 200
        return [i["alert_id"] for i in r.json()["items"]]

    assert mine("alice") == [pending.alert_id, bobs.alert_id]
    assert mine("bob") == [pending.alert_id, alices.alert_id]
    assert mine("alice", camera_id="cam-2") == [bobs.alert_id]
    assert mine("alice", status="awaiting_second", deployment_id="dep-1") == []
    assert mine("victor") == []  # a viewer reviews nothing

    r = client.get("/v1/alerts/summary", headers=bearer("alice"))
    assert r.status_code == 200
    assert r.json() == {
        "statuses": {"pending": 1, "awaiting_second": 2, "confirmed": 0, "rejected": 1},
        "needs_my_review": 2, "cameras": ["cam-1", "cam-2"], "deployments": ["dep-1", "dep-2"],
    }
    by_camera = client.get("/v1/alerts/summary", params={"camera_id": "cam-2"}, headers=bearer("bob")).json()
    assert by_camera["statuses"] == {"pending": 0, "awaiting_second": 2, "confirmed": 0, "rejected": 0}
    assert by_camera["needs_my_review"] == 1
    assert by_camera["cameras"] == ["cam-1", "cam-2"]  # the choices stay whole under a filter
    by_deployment = client.get("/v1/alerts/summary", params={"deployment_id": "dep-2"}, headers=bearer("victor"))
    assert by_deployment.json()["statuses"]["awaiting_second"] == 1 and by_deployment.json()["needs_my_review"] == 0


def test_the_subject_of_an_alert_comes_from_the_registry(client: TestClient, review: ReviewApp, alert) -> None:
    r = client.get(f"/v1/alerts/{alert.alert_id}/subject", headers=bearer("victor"))
    assert r.status_code == 200
    assert r.json() == {
        "subject_id": "subject-1", "category": "wanted", "legal_basis": "PACE 1984 s.24; warrant 12/345",
        "expires_ts": 1_803_902_400.0, "expired": False, "status": "active",
    }
    gone = make_alert(track="t9", subject="subject-9")
    review.service.on_alert(gone)
    r = client.get(f"/v1/alerts/{gone.alert_id}/subject", headers=bearer("victor"))
    assert r.status_code == 404 and "does not know subject 'subject-9'" in r.json()["detail"]
    assert client.get(f"/v1/alerts/{'0' * 32}/subject", headers=bearer("victor")).status_code == 404


def test_the_subject_without_a_registry_or_with_one_down(tmp_path: Path) -> None:
    alert = make_alert()
    for registry, code, detail in ((None, 503, "no registry is configured"),
                                   (FakeRegistry({}, down=True), 502, "could not be reached")):
        review = build_review_app(tmp_path / str(code), registry_client=registry)
        try:
            review.service.on_alert(alert)
            r = TestClient(review.app).get(f"/v1/alerts/{alert.alert_id}/subject", headers=bearer("alice"))
            assert r.status_code == code and detail in r.json()["detail"]
        finally:
            review.hub.close()
            review.store.close()


def test_console_page_is_self_contained(client: TestClient) -> None:
    r = client.get("/console")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "img-src blob:" in csp and "connect-src 'self'" in csp
    assert r.headers["x-frame-options"] == "DENY"
    page = r.text
    for hook in ('id="token"', 'id="alerts"', 'data-action="confirm"', 'data-action="reject"',
                 'data-role="reject-reason"', 'id="conn-status"', "sessionStorage", "/v1/alerts/stream",
                 'id="whoami"', "/v1/me", "/v1/alerts/summary", 'id="filter-camera"', 'id="enlarge"'):
        assert hook in page
    assert "http://" not in page and "https://" not in page  # nothing fetched from elsewhere
    assert "innerHTML" not in page and "window.prompt" not in page


def test_openapi_documents_the_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/v1/alerts", "/v1/alerts/{alert_id}", "/v1/alerts/{alert_id}/probe.jpg",
                 "/v1/alerts/{alert_id}/reference.jpg", "/v1/alerts/{alert_id}/reviews", "/v1/alerts/stream",
                 "/v1/deployments/{deployment_id}/report", "/console", "/v1/me", "/v1/alerts/summary",
                 "/v1/alerts/{alert_id}/subject", "/v1/alerts/{alert_id}/scene.jpg"):
        assert path in paths, path
    post = paths["/v1/alerts/{alert_id}/reviews"]["post"]
    assert {"401", "403", "404", "409", "422"} <= set(post["responses"])
    assert "text/event-stream" in paths["/v1/alerts/stream"]["get"]["responses"]["200"]["content"]
