"""The registry's HTTP API end to end: every endpoint, every role, every refusal, the audit trail."""

from __future__ import annotations

import hashlib

import cv2
import numpy as np
import pytest

from openlfr.registry.service import snapshot_fingerprint


# -- helpers -------------------------------------------------------------------------------


def subject_body(env, **over) -> dict:
    body = {
        "display_name": "Person One",
        "category": "missing_person",
        "reason": "reported missing, believed at risk",
        "legal_basis": "Missing person report 2027/0042",
        "expires_at": env.clock.iso(days=30),
    }
    body.update(over)
    return body


def deployment_body(env, **over) -> dict:
    body = {
        "purpose": "search for a missing person at the central station",
        "authorised_by": "Supt. Jane Roe",
        "camera_ids": ["cam-1", "cam-2"],
        "start_at": env.clock.iso(),
        "end_at": env.clock.iso(hours=8),
        "watchlist_ids": ["wl-1"],
        "threshold": 0.75,
    }
    body.update(over)
    return body


def make_watchlist(env, watchlist_id: str = "wl-1") -> dict:
    r = env.call("alice", "POST", "/v1/watchlists", json={"id": watchlist_id, "name": f"list {watchlist_id}"})
    assert r.status_code == 201, r.text
    return r.json()


def make_subject(env, subject_id: str = "s-1", watchlist_id: str = "wl-1", **over) -> dict:
    body = subject_body(env, id=subject_id, **over)
    r = env.call("alice", "POST", f"/v1/watchlists/{watchlist_id}/subjects", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def upload(env, subject_id: str, data: bytes, *, who: str = "alice", kind: str = "image/jpeg",
           source: str = "custody photo 2027/0042"):
    return env.call(who, "POST", f"/v1/subjects/{subject_id}/images", params={"source": source}, content=data,
                    headers={"Content-Type": kind})


# -- authentication and roles --------------------------------------------------------------

ENDPOINTS = [
    ("POST", "/v1/watchlists"),
    ("GET", "/v1/watchlists"),
    ("GET", "/v1/watchlists/wl-1"),
    ("PATCH", "/v1/watchlists/wl-1"),
    ("DELETE", "/v1/watchlists/wl-1"),
    ("POST", "/v1/watchlists/wl-1/subjects"),
    ("GET", "/v1/watchlists/wl-1/subjects"),
    ("GET", "/v1/subjects/s-1"),
    ("PATCH", "/v1/subjects/s-1"),
    ("DELETE", "/v1/subjects/s-1"),
    ("POST", "/v1/subjects/s-1/images?source=x"),
    ("GET", "/v1/subjects/s-1/images/abc123"),
    ("DELETE", "/v1/subjects/s-1/images/abc123"),
    ("POST", "/v1/deployments"),
    ("GET", "/v1/deployments"),
    ("GET", "/v1/deployments/dep-1"),
    ("PATCH", "/v1/deployments/dep-1"),
    ("POST", "/v1/deployments/dep-1/end"),
]
WATCHLIST_WRITES = [
    ("POST", "/v1/watchlists"),
    ("PATCH", "/v1/watchlists/wl-1"),
    ("DELETE", "/v1/watchlists/wl-1"),
    ("POST", "/v1/watchlists/wl-1/subjects"),
    ("PATCH", "/v1/subjects/s-1"),
    ("DELETE", "/v1/subjects/s-1"),
    ("POST", "/v1/subjects/s-1/images?source=x"),
    ("DELETE", "/v1/subjects/s-1/images/abc123"),
]
DEPLOYMENT_WRITES = [
    ("POST", "/v1/deployments"),
    ("PATCH", "/v1/deployments/dep-1"),
    ("POST", "/v1/deployments/dep-1/end"),
]
WRONG_ROLES = (
    [(m, p, who) for m, p in WATCHLIST_WRITES for who in ("dave", "vera", "rex", "svc")]
    + [(m, p, who) for m, p in DEPLOYMENT_WRITES for who in ("alice", "vera", "rex", "svc")]
)


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_every_endpoint_needs_a_known_token(env, method: str, path: str) -> None:
    r = env.call(None, method, path)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    r = env.http.request(method, path, headers={"Authorization": "Bearer not-a-token-of-anyone"})
    assert r.status_code == 401 and r.json() == {"detail": "unknown token"}
    r = env.http.request(method, path, headers={"X-API-Key": "not-a-token-of-anyone"})
    assert r.status_code == 401
    assert env.actions() == ["access.unauthenticated"] * 3  # audited (at a bounded rate), nothing else


@pytest.mark.parametrize(("method", "path", "who"), WRONG_ROLES)
def test_writes_with_the_wrong_role_get_403_and_are_audited(env, method: str, path: str, who: str) -> None:
    r = env.call(who, method, path, json={})
    assert r.status_code == 403, r.text
    assert who in r.json()["detail"]
    (record,) = list(env.audit.records())
    assert record.action == "access.denied" and record.actor == who
    assert record.target == f"{method} {path.split('?')[0]}"
    assert record.details["has"] == env.tokens[who][1]


def test_every_role_reads_and_the_service_key_header_works(env, image_bytes) -> None:
    make_watchlist(env)
    make_subject(env)
    image_id = upload(env, "s-1", image_bytes["obama"]).json()["id"]
    dep = env.call("dave", "POST", "/v1/deployments", json=deployment_body(env)).json()
    reads = [
        "/v1/watchlists", "/v1/watchlists/wl-1", "/v1/watchlists/wl-1/subjects", "/v1/subjects/s-1",
        f"/v1/subjects/s-1/images/{image_id}", "/v1/deployments", f"/v1/deployments/{dep['id']}",
    ]
    for who in env.tokens:
        for path in reads:
            assert env.call(who, "GET", path).status_code == 200, (who, path)
    r = env.http.get(f"/v1/deployments/{dep['id']}", headers={"X-API-Key": env.tokens["svc"][0]})
    assert r.status_code == 200 and r.json()["threshold"] == 0.75
    assert "access.denied" not in env.actions()


# -- watchlists ----------------------------------------------------------------------------


def test_watchlist_lifecycle(env) -> None:
    created = make_watchlist(env)
    assert created["id"] == "wl-1" and created["created_by"] == "alice" and created["subject_count"] == 0
    r = env.call("alice", "POST", "/v1/watchlists", json={"name": "no id given", "description": "assigned"})
    assert r.status_code == 201 and r.json()["id"].startswith("wl-")
    page = env.call("vera", "GET", "/v1/watchlists", params={"limit": 1}).json()
    assert page["total"] == 2 and len(page["items"]) == 1 and page["limit"] == 1
    second = env.call("vera", "GET", "/v1/watchlists", params={"limit": 1, "offset": 1}).json()["items"]
    assert {page["items"][0]["id"], second[0]["id"]} == {"wl-1", r.json()["id"]}

    env.clock.advance(10)
    r = env.call("alice", "PATCH", "/v1/watchlists/wl-1", json={"description": "station watchlist"})
    assert r.status_code == 200 and r.json()["description"] == "station watchlist"
    assert r.json()["updated_at"] > created["updated_at"]
    r = env.call("alice", "DELETE", "/v1/watchlists/wl-1")
    assert r.status_code == 204 and r.content == b""
    assert env.call("vera", "GET", "/v1/watchlists/wl-1").status_code == 404
    assert env.actions() == ["watchlist.create", "watchlist.create", "watchlist.update", "watchlist.delete"]
    update = list(env.audit.records())[2]
    assert update.actor == "alice" and update.target == "watchlist/wl-1"
    assert update.details == {"changes": {"description": {"before": "", "after": "station watchlist"}}}


@pytest.mark.parametrize(
    ("method", "path", "body", "missing"),
    [
        ("GET", "/v1/watchlists/nope", None, "watchlist 'nope'"),
        ("PATCH", "/v1/watchlists/nope", {"name": "x"}, "watchlist 'nope'"),
        ("DELETE", "/v1/watchlists/nope", None, "watchlist 'nope'"),
        ("GET", "/v1/watchlists/nope/subjects", None, "watchlist 'nope'"),
        ("POST", "/v1/watchlists/nope/subjects", "subject", "watchlist 'nope'"),
        ("GET", "/v1/subjects/nope", None, "subject 'nope'"),
        ("PATCH", "/v1/subjects/nope", {"status": "suspended"}, "subject 'nope'"),
        ("DELETE", "/v1/subjects/nope", None, "subject 'nope'"),
        ("GET", "/v1/subjects/nope/images/abc", None, "subject 'nope'"),
        ("DELETE", "/v1/subjects/nope/images/abc", None, "subject 'nope'"),
        ("GET", "/v1/subjects/s-1/images/abc", None, "image 'abc'"),
        ("DELETE", "/v1/subjects/s-1/images/abc", None, "image 'abc'"),
        ("GET", "/v1/deployments/nope", None, "deployment 'nope'"),
        ("PATCH", "/v1/deployments/nope", {"purpose": "x"}, "deployment 'nope'"),
        ("POST", "/v1/deployments/nope/end", None, "deployment 'nope'"),
    ],
)
def test_404_names_what_was_not_found(env, method: str, path: str, body, missing: str) -> None:
    make_watchlist(env)
    make_subject(env)
    if body == "subject":
        body = subject_body(env)
    who = "dave" if "deployments" in path and method != "GET" else "alice"
    r = env.call(who, method, path, json=body)
    assert r.status_code == 404, r.text
    assert r.json() == {"detail": f"{missing} not found"}


def test_upload_to_an_unknown_subject_is_404_before_reading_the_image(env) -> None:
    r = upload(env, "nobody", b"not even an image", kind="text/plain")
    assert r.status_code == 404 and r.json() == {"detail": "subject 'nobody' not found"}


def test_409_conflicts(env, image_bytes) -> None:
    make_watchlist(env)
    make_watchlist(env, "wl-2")
    r = env.call("alice", "POST", "/v1/watchlists", json={"id": "wl-1", "name": "again"})
    assert r.status_code == 409 and "already exists" in r.json()["detail"]
    make_subject(env)
    r = env.call("alice", "POST", "/v1/watchlists/wl-2/subjects", json=subject_body(env, id="s-1"))
    assert r.status_code == 409 and r.json()["detail"] == "subject 's-1' already exists (on watchlist 'wl-1')"
    make_subject(env, "s-2")
    assert upload(env, "s-1", image_bytes["obama"]).status_code == 201
    r = upload(env, "s-1", image_bytes["obama"])
    assert r.status_code == 409 and r.json()["detail"]["reason"] == "duplicate"
    r = upload(env, "s-2", image_bytes["obama"])
    assert r.status_code == 409 and "already a reference of subject 's-1'" in r.json()["detail"]["message"]

    dep = env.call("dave", "POST", "/v1/deployments", json=deployment_body(env, id="dep-1")).json()
    r = env.call("dave", "POST", "/v1/deployments", json=deployment_body(env, id="dep-1"))
    assert r.status_code == 409 and "already exists" in r.json()["detail"]
    # the same camera in an overlapping window
    r = env.call("dave", "POST", "/v1/deployments", json=deployment_body(
        env, camera_ids=["cam-9", "cam-2"], start_at=env.clock.iso(hours=7), end_at=env.clock.iso(hours=9),
    ))
    assert r.status_code == 409 and "camera 'cam-2' is already covered by deployment 'dep-1'" in r.json()["detail"]
    # after it, or on other cameras, is fine
    r = env.call("dave", "POST", "/v1/deployments", json=deployment_body(
        env, id="dep-2", start_at=env.clock.iso(hours=8), end_at=env.clock.iso(hours=9),
    ))
    assert r.status_code == 201, r.text
    r = env.call("dave", "PATCH", "/v1/deployments/dep-1", json={"end_at": env.clock.iso(hours=8, minutes=30)})
    assert r.status_code == 409 and "dep-2" in r.json()["detail"]

    r = env.call("alice", "DELETE", "/v1/watchlists/wl-1")
    assert r.status_code == 409 and "dep-1" in r.json()["detail"] and "dep-2" in r.json()["detail"]
    assert env.call("dave", "POST", f"/v1/deployments/{dep['id']}/end", json={"reason": "found"}).status_code == 200
    r = env.call("dave", "POST", f"/v1/deployments/{dep['id']}/end")
    assert r.status_code == 409 and "already ended" in r.json()["detail"]
    r = env.call("dave", "PATCH", f"/v1/deployments/{dep['id']}", json={"purpose": "more"})
    assert r.status_code == 409 and "has ended" in r.json()["detail"]
    env.call("dave", "POST", "/v1/deployments/dep-2/end")
    assert env.call("alice", "DELETE", "/v1/watchlists/wl-1").status_code == 204


def test_a_deployment_past_its_end_no_longer_holds_its_watchlist(env) -> None:
    make_watchlist(env)
    env.call("dave", "POST", "/v1/deployments", json=deployment_body(env, id="dep-1", end_at=env.clock.iso(hours=1)))
    assert env.call("alice", "DELETE", "/v1/watchlists/wl-1").status_code == 409
    env.clock.advance(3601)
    assert env.call("vera", "GET", "/v1/deployments/dep-1").json()["status"] == "ended"
    assert env.call("vera", "GET", "/v1/deployments", params={"status": "active"}).json()["total"] == 0
    assert env.call("alice", "DELETE", "/v1/watchlists/wl-1").status_code == 204
    # the ended deployment still names the watchlist it searched
    assert env.call("vera", "GET", "/v1/deployments/dep-1").json()["watchlist_ids"] == ["wl-1"]


# -- validation ----------------------------------------------------------------------------


def _loc(r) -> list[list]:
    return [e["loc"] for e in r.json()["detail"]]


@pytest.mark.parametrize(
    ("over", "loc"),
    [
        ({"category": "suspicious_looking"}, ["body", "category"]),
        ({"display_name": "x" * 201}, ["body", "display_name"]),
        ({"display_name": "   "}, ["body", "display_name"]),
        ({"reason": "r" * 2001}, ["body", "reason"]),
        ({"legal_basis": ""}, ["body", "legal_basis"]),
        ({"id": "has space"}, ["body", "id"]),
        ({"id": "a/b"}, ["body", "id"]),
        ({"expires_at": "2030-01-01T00:00:00"}, ["body", "expires_at"]),  # naive
        ({"expires_at": None}, ["body", "expires_at"]),
        ({"status": "deleted"}, ["body", "status"]),
        ({"nickname": "extra"}, ["body", "nickname"]),
    ],
)
def test_subject_schema_refusals(env, over: dict, loc: list) -> None:
    make_watchlist(env)
    r = env.call("alice", "POST", "/v1/watchlists/wl-1/subjects", json=subject_body(env, **over))
    assert r.status_code == 422, r.text
    assert loc in _loc(r)


@pytest.mark.parametrize(
    ("delta", "message"),
    [({"seconds": -1}, "is not in the future"), ({"days": 0}, "is not in the future"),
     ({"days": 366}, "beyond the maximum horizon of 365 days")],
)
def test_expiry_must_be_in_the_future_and_within_the_horizon(env, delta: dict, message: str) -> None:
    make_watchlist(env)
    body = subject_body(env, expires_at=env.clock.iso(**delta))
    r = env.call("alice", "POST", "/v1/watchlists/wl-1/subjects", json=body)
    assert r.status_code == 422
    (error,) = r.json()["detail"]
    assert error["loc"] == ["body", "expires_at"] and message in error["msg"]
    make_subject(env, expires_at=env.clock.iso(days=365))
    r = env.call("alice", "PATCH", "/v1/subjects/s-1", json={"expires_at": env.clock.iso(**delta)})
    assert r.status_code == 422 and message in r.json()["detail"][0]["msg"]


def test_bad_json_and_empty_patches_are_422(env) -> None:
    make_watchlist(env)
    r = env.call("alice", "POST", "/v1/watchlists", content=b'{"name": ', headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "json_invalid"
    r = env.call("alice", "PATCH", "/v1/watchlists/wl-1", json={})
    assert r.status_code == 422 and "at least one of" in r.json()["detail"][0]["msg"]
    r = env.call("alice", "PATCH", "/v1/watchlists/wl-1", json={"name": None})
    assert r.status_code == 422 and "must not be null" in r.json()["detail"][0]["msg"]
    r = env.call("alice", "POST", "/v1/watchlists", json={"name": "n" * 201})
    assert r.status_code == 422 and _loc(r) == [["body", "name"]]
    r = env.call("vera", "GET", "/v1/watchlists", params={"limit": 0})
    assert r.status_code == 422 and _loc(r) == [["query", "limit"]]
    assert env.call("vera", "GET", "/v1/subjects/has space").status_code == 422
    assert env.actions() == ["watchlist.create"]


@pytest.mark.parametrize(
    ("over", "status", "message"),
    [
        ({"threshold": 0.69}, 422, "0.69 is below the floor of 0.7"),
        ({"threshold": 1.5}, 422, "less than or equal to 1"),
        ({"end_at": "START"}, 422, "must be after start_at"),
        ({"watchlist_ids": ["wl-1", "nope"]}, 422, "watchlist 'nope' does not exist"),
        ({"watchlist_ids": []}, 422, "at least 1 item"),
        ({"camera_ids": []}, 422, "at least 1 item"),
        ({"camera_ids": ["cam-1", "cam-1"]}, 422, "camera named more than once: ['cam-1']"),
        ({"purpose": "p" * 2001}, 422, "at most 2000 characters"),
        ({"authorised_by": ""}, 422, "at least 1 character"),
        ({"start_at": "PAST", "end_at": "PAST_END"}, 422, "is in the past"),
        ({"start_at": "BACKDATED"}, 422, "cannot authorise matching retroactively"),
    ],
)
def test_deployment_refusals(env, over: dict, status: int, message: str) -> None:
    make_watchlist(env)
    times = {"START": env.clock.iso(), "PAST": env.clock.iso(hours=-3), "PAST_END": env.clock.iso(hours=-1),
             "BACKDATED": env.clock.iso(hours=-1)}
    over = {k: times.get(v, v) if isinstance(v, str) else v for k, v in over.items()}
    r = env.call("dave", "POST", "/v1/deployments", json=deployment_body(env, **over))
    assert r.status_code == status, r.text
    assert message in r.text
    assert env.actions() == ["watchlist.create"]


def test_threshold_changes_are_floored_and_audited_on_their_own(env) -> None:
    make_watchlist(env)
    env.call("dave", "POST", "/v1/deployments", json=deployment_body(env, id="dep-1"))
    r = env.call("dave", "PATCH", "/v1/deployments/dep-1", json={"threshold": 0.5})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "threshold"]
    assert "floor of 0.7" in r.json()["detail"][0]["msg"]
    r = env.call("dave", "PATCH", "/v1/deployments/dep-1", json={"end_at": env.clock.iso(hours=-1)})
    assert r.status_code == 422 and "end_at" in r.text
    change = {"threshold": 0.8, "purpose": "narrower", "camera_ids": ["cam-3"]}
    r = env.call("dave", "PATCH", "/v1/deployments/dep-1", json=change)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["threshold"] == 0.8 and body["purpose"] == "narrower" and body["camera_ids"] == ["cam-3"]
    records = list(env.audit.records())
    assert [r.action for r in records] == [
        "watchlist.create", "deployment.create", "deployment.threshold", "deployment.update",
    ]
    assert records[2].details["threshold"] == {"before": 0.75, "after": 0.8} and records[2].actor == "dave"
    assert records[3].details["changes"] == {
        "purpose": {"before": "search for a missing person at the central station", "after": "narrower"},
        "camera_ids": {"before": ["cam-1", "cam-2"], "after": ["cam-3"]},
    }


# -- images --------------------------------------------------------------------------------


def test_enrolment_keeps_the_chip_and_quality_never_the_vector(env, image_bytes) -> None:
    make_watchlist(env)
    make_subject(env)
    r = upload(env, "s-1", image_bytes["obama"])
    assert r.status_code == 201, r.text
    image = r.json()
    assert image["subject_id"] == "s-1" and image["added_by"] == "alice"
    assert image["source"] == "custody photo 2027/0042"
    digest = hashlib.sha256(image_bytes["obama"]).hexdigest()
    assert image["sha256"] == digest and image["id"] == digest[:32]
    assert image["quality"]["inter_eye_px"] >= 40 and 0 < image["quality"]["score"] <= 1
    chip = env.call("vera", "GET", f"/v1/subjects/s-1/images/{image['id']}")
    assert chip.status_code == 200 and chip.headers["content-type"] == "image/jpeg"
    decoded = cv2.imdecode(np.frombuffer(chip.content, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (150, 150, 3)
    assert env.registry.reference_chip("s-1", image["id"]) == chip.content
    subject = env.call("vera", "GET", "/v1/subjects/s-1").json()
    assert [i["id"] for i in subject["images"]] == [image["id"]]
    assert env.store.count() == 1
    record = list(env.audit.records())[-1]
    assert record.action == "subject.enrol" and record.details["event"] == "image_added"
    assert record.details["image_id"] == image["id"] and record.details["source"] == "custody photo 2027/0042"
    text = env.audit.path.read_text()
    assert "vector" not in text and "embedding" not in text


@pytest.mark.parametrize(
    ("name", "reason", "message"),
    [
        ("no_face", "no_face", "no face found"),
        ("two_people", "multiple_faces", "2 faces found"),
        ("small_face", "too_small", "inter-eye distance"),
        ("corrupt", "unreadable", "corrupt image header"),
        ("empty", "unreadable", "empty file"),
    ],
)
def test_refused_images_get_422_with_the_reason(env, image_bytes, name: str, reason: str, message: str) -> None:
    make_watchlist(env)
    make_subject(env)
    broken = {"corrupt": b"\xff\xd8\xff\xe0 not really a jpeg", "empty": b""}
    data = broken[name] if name in broken else image_bytes[name]
    kind = "image/png" if name == "small_face" else "image/jpeg"
    r = upload(env, "s-1", data, kind=kind)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail["reason"] == reason and message in detail["message"]
    assert env.store.count() == 0 and env.call("vera", "GET", "/v1/subjects/s-1").json()["images"] == []
    assert env.actions() == ["watchlist.create", "subject.enrol"]  # the subject's creation only


def test_image_type_size_and_provenance_limits(env, image_bytes) -> None:
    make_watchlist(env)
    make_subject(env)
    r = upload(env, "s-1", image_bytes["obama"], kind="text/plain")
    assert r.status_code == 415 and "not an accepted image type" in r.json()["detail"]
    r = upload(env, "s-1", image_bytes["obama"], kind="")
    assert r.status_code == 415
    big = b"\xff\xd8" + bytes(env.max_image_bytes + 10)
    r = upload(env, "s-1", big)
    assert r.status_code == 413 and f"limit of {env.max_image_bytes} bytes" in r.json()["detail"]
    bigger = b"\xff\xd8" + bytes(env.max_body_bytes + 10)
    r = upload(env, "s-1", bigger)
    assert r.status_code == 413 and f"limit of {env.max_body_bytes} bytes" in r.json()["detail"]
    r = upload(env, "s-1", image_bytes["obama"], source="")
    assert r.status_code == 422 and _loc(r) == [["query", "source"]]
    r = env.call("alice", "POST", "/v1/subjects/s-1/images", content=image_bytes["obama"],
                 headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 422 and _loc(r) == [["query", "source"]]
    assert env.store.count() == 0


def test_image_delete_removes_its_vector_and_keeps_the_others(env, image_bytes, enrolled) -> None:
    make_watchlist(env)
    make_subject(env)
    first = upload(env, "s-1", image_bytes["obama"]).json()["id"]
    assert env.store.count() == 1
    env.clock.advance(5)
    second = upload(env, "s-1", image_bytes["obama2"]).json()["id"]
    assert env.store.count() == 3  # two references and, with two, the subject's template
    assert env.call("alice", "DELETE", f"/v1/subjects/s-1/images/{first}").status_code == 204
    assert env.store.count() == 1  # one reference: no template
    hit = env.store.search(enrolled["obama"], limit=1)[0]
    assert hit.reference_image_id == second
    # the vector rebuilt from the kept chip is the enrolled one
    assert env.store.search(enrolled["obama2"], limit=1)[0].distance < 1e-3
    assert env.call("vera", "GET", f"/v1/subjects/s-1/images/{first}").status_code == 404
    assert env.registry.reference_chip("s-1", first) is None
    record = list(env.audit.records())[-1]
    assert record.action == "subject.update" and record.details["event"] == "image_removed"
    assert record.details["image_id"] == first and record.details["images_left"] == 1


# -- subjects ------------------------------------------------------------------------------


def test_subject_pages_changes_and_delete(env, image_bytes, vectors) -> None:
    make_watchlist(env)
    for i in range(3):
        make_subject(env, f"s-{i}", display_name=f"Person {i}")
    r = env.call("alice", "POST", "/v1/watchlists/wl-1/subjects", json=subject_body(env))
    assert r.status_code == 201 and r.json()["id"].startswith("s-")
    # Pages are in id order; the generated id is random, so it may fall anywhere among them.
    ids = sorted(["s-0", "s-1", "s-2", r.json()["id"]])
    page = env.call("vera", "GET", "/v1/watchlists/wl-1/subjects", params={"limit": 2, "offset": 1}).json()
    assert page["total"] == 4 and [s["id"] for s in page["items"]] == ids[1:3]
    assert env.call("vera", "GET", "/v1/watchlists/wl-1").json()["subject_count"] == 4

    upload(env, "s-1", image_bytes["obama"])
    r = env.call("alice", "PATCH", "/v1/subjects/s-1", json={"status": "suspended", "reason": "under review"})
    assert r.status_code == 200 and r.json()["status"] == "suspended"
    assert env.store.search(vectors["obama"], limit=1) == []
    record = list(env.audit.records())[-1]
    assert record.action == "subject.update" and record.details["changes"] == {
        "reason": {"before": "reported missing, believed at risk", "after": "under review"},
        "status": {"before": "active", "after": "suspended"},
    }
    r = env.call("alice", "PATCH", "/v1/subjects/s-1", json={"status": "active"})
    assert env.store.search(vectors["obama"], limit=1)[0].subject_id == "s-1"

    assert env.call("alice", "DELETE", "/v1/subjects/s-1").status_code == 204
    assert env.store.search(vectors["obama"], limit=5) == [] and env.store.count() == 0
    assert env.call("vera", "GET", "/v1/subjects/s-1").status_code == 404
    record = list(env.audit.records())[-1]
    assert record.action == "subject.delete" and record.details["watchlist_id"] == "wl-1"
    assert len(record.details["image_ids"]) == 1


# -- deployments and the whole trail -------------------------------------------------------


def test_deployment_lifecycle_and_the_audit_chain(env, image_bytes) -> None:
    make_watchlist(env)
    make_subject(env, "s-1")
    make_subject(env, "s-2")
    make_subject(env, "s-3", status="suspended")
    a = upload(env, "s-1", image_bytes["obama"]).json()["id"]
    b = upload(env, "s-2", image_bytes["rose"]).json()["id"]
    upload(env, "s-3", image_bytes["kit"])
    env.clock.advance(1)
    r = env.call("dave", "POST", "/v1/deployments", json=deployment_body(env))
    assert r.status_code == 201, r.text
    dep = r.json()
    assert dep["id"].startswith("dep-") and dep["status"] == "active"
    assert dep["created_by"] == "dave" and dep["authorised_by"] == "Supt. Jane Roe"
    assert dep["model_version"] == "dlib_resnet@0123456789ab"
    assert dep["snapshot"]["snapshot_ts"] == env.clock.now
    assert dep["snapshot"]["active_subjects"] == 2 and dep["snapshot"]["reference_images"] == 2
    assert dep["snapshot"]["fingerprint"] == snapshot_fingerprint([("s-1", a), ("s-2", b)])
    assert dep["stats"] == {"faces": 0, "tracks": 0}

    env.registry.record_activity(dep["id"], faces=7, tracks=2)
    env.registry.record_activity(dep["id"], faces=3, tracks=0)
    got = env.call("svc", "GET", f"/v1/deployments/{dep['id']}").json()
    assert got["stats"] == {"faces": 10, "tracks": 2}
    listed = env.call("vera", "GET", "/v1/deployments").json()
    assert listed["total"] == 1 and listed["items"][0]["id"] == dep["id"]

    r = env.call("dave", "POST", f"/v1/deployments/{dep['id']}/end", json={"reason": "person found"})
    assert r.status_code == 200
    ended = r.json()
    assert ended["status"] == "ended" and ended["ended_by"] == "dave" and ended["end_reason"] == "person found"
    assert env.call("vera", "GET", "/v1/deployments", params={"status": "ended"}).json()["total"] == 1
    assert env.registry.active_for("cam-1", env.clock.now) is None

    records = list(env.audit.records())
    assert [(r.action, r.actor) for r in records] == [
        ("watchlist.create", "alice"),
        ("subject.enrol", "alice"), ("subject.enrol", "alice"), ("subject.enrol", "alice"),
        ("subject.enrol", "alice"), ("subject.enrol", "alice"), ("subject.enrol", "alice"),
        ("deployment.create", "dave"),
        ("deployment.end", "dave"),
    ]
    assert records[-1].details["stats"] == {"faces": 10, "tracks": 2}
    assert records[-2].details["snapshot"]["fingerprint"] == dep["snapshot"]["fingerprint"]
    verified = env.audit.verify()
    assert verified.ok and verified.records == len(records)


def test_a_deployment_cannot_run_longer_than_the_maximum(env) -> None:
    """An authorisation is bounded (OPENLFR_REGISTRY_MAX_DEPLOYMENT_DAYS, default 31): neither a
    create nor a later extension can make a deployment run until year 9999."""
    make_watchlist(env)
    for end in (env.clock.iso(days=32), "9999-12-31T23:59:59+00:00"):
        r = env.call("dave", "POST", "/v1/deployments", json=deployment_body(env, end_at=end))
        assert r.status_code == 422, r.text
        assert "OPENLFR_REGISTRY_MAX_DEPLOYMENT_DAYS" in r.text and "end_at" in r.text
    assert env.call("vera", "GET", "/v1/deployments").json()["total"] == 0
    r = env.call("dave", "POST", "/v1/deployments", json=deployment_body(env, end_at=env.clock.iso(days=31)))
    assert r.status_code == 201, r.text
    dep_id, end_at = r.json()["id"], r.json()["end_at"]
    r = env.call("dave", "PATCH", f"/v1/deployments/{dep_id}", json={"end_at": env.clock.iso(days=40)})
    assert r.status_code == 422 and "the most is 31" in r.text
    assert env.call("vera", "GET", f"/v1/deployments/{dep_id}").json()["end_at"] == end_at


def test_openapi_documents_every_route(env) -> None:
    doc = env.http.get("/openapi.json").json()
    expected = {
        "/v1/watchlists": {"get", "post"},
        "/v1/watchlists/{watchlist_id}": {"get", "patch", "delete"},
        "/v1/watchlists/{watchlist_id}/subjects": {"get", "post"},
        "/v1/subjects/{subject_id}": {"get", "patch", "delete"},
        "/v1/subjects/{subject_id}/images": {"post"},
        "/v1/subjects/{subject_id}/images/{image_id}": {"get", "delete"},
        "/v1/deployments": {"get", "post"},
        "/v1/deployments/{deployment_id}": {"get", "patch"},
        "/v1/deployments/{deployment_id}/end": {"post"},
    }
    for path, methods in expected.items():
        assert set(doc["paths"][path]) == methods, path
        for method in methods:
            op = doc["paths"][path][method]
            assert op["summary"] and "401" in op["responses"] and "403" in op["responses"], (path, method)
    upload_op = doc["paths"]["/v1/subjects/{subject_id}/images"]["post"]
    assert "image/jpeg" in upload_op["requestBody"]["content"]
    assert {"413", "415", "422"} <= set(upload_op["responses"])
    assert env.http.get("/readyz").status_code == 200
