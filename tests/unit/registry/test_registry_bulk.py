"""Bulk enrolment and the client, against the registry served by uvicorn on a free port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from openlfr.registry.bulk import SubjectDefaults, bulk_enrol
from openlfr.registry.client import RegistryClient
from openlfr.registry.exceptions import RegistryApiError, RegistryUnreachable
from openlfr.registry.models import SubjectCreate, WatchlistCreate
from openlfr.service.http import run_http_in_thread


@pytest.fixture
def served(env) -> Iterator[tuple[object, str]]:
    server = run_http_in_thread(env.app, "127.0.0.1", 0)
    yield env, f"http://127.0.0.1:{server.port}"
    server.stop()


@pytest.fixture
def admin(served) -> Iterator[RegistryClient]:
    env, url = served
    with RegistryClient(url, env.tokens["alice"][0], timeout_s=30) as client:
        client.create_watchlist(WatchlistCreate(id="wl-1", name="bulk"))
        yield client


def defaults(env) -> SubjectDefaults:
    return SubjectDefaults(
        category="wanted", reason="warrant 7/27", legal_basis="PACE s.24", expires_at=env.clock.at(days=90),
        source="force custody system export 2027-05",
    )


def test_bulk_from_a_folder(served, admin, tmp_path: Path, image_bytes, capsys) -> None:
    env, _ = served
    root = tmp_path / "tree"
    (root / "obama").mkdir(parents=True)
    (root / "obama" / "a.jpg").write_bytes(image_bytes["obama"])
    (root / "obama" / "nested").mkdir()
    (root / "obama" / "nested" / "b.jpg").write_bytes(image_bytes["obama2"])
    (root / "obama" / ".hidden.jpg").write_bytes(b"ignored")
    (root / "rose").mkdir()
    (root / "rose" / "1.jpg").write_bytes(image_bytes["rose"])
    (root / "rose" / "dogs.jpg").write_bytes(image_bytes["no_face"])
    (root / "rose" / "notes.txt").write_text("not an image")
    (root / "stray.jpg").write_bytes(image_bytes["kit"])
    (root / "bad name").mkdir()
    (root / "bad name" / "x.jpg").write_bytes(image_bytes["kit"])
    admin.create_subject("wl-1", SubjectCreate(
        id="rose", display_name="Rose L.", category="suspect", reason="r", legal_basis="l",
        expires_at=env.clock.at(days=5),
    ))

    report = bulk_enrol(admin, watchlist_id="wl-1", defaults=defaults(env), folder=root)

    assert report.subjects_created == ["obama"]
    assert report.enrolled == {"obama": 2, "rose": 1} and report.images_enrolled == 3
    refused = {str(r.path.relative_to(root)): r.reason for r in report.refused}
    assert refused == {
        "stray.jpg": "not_in_subject_folder",
        "bad name/x.jpg": "invalid_subject_id",
        "rose/dogs.jpg": "no_face",
        "rose/notes.txt": "unsupported_type",
    }
    assert report.refused_by_reason() == {
        "invalid_subject_id": 1, "no_face": 1, "not_in_subject_folder": 1, "unsupported_type": 1,
    }
    summary = report.summary()
    assert "1 subjects created, 3 images enrolled, 4 files refused" in summary
    assert "rose/dogs.jpg (rose): no_face: no face found" in summary
    assert "enrolling on wl-1" in capsys.readouterr().err  # the progress bar

    obama = admin.get_subject("obama")
    assert obama.category == "wanted" and obama.reason == "warrant 7/27" and obama.added_by == "alice"
    assert {i.source for i in obama.images} == {"force custody system export 2027-05"}
    assert admin.get_subject("rose").category == "suspect"  # an existing subject is not changed
    assert env.store.count() == 4  # three references and obama's template (two photos)

    again = bulk_enrol(admin, watchlist_id="wl-1", defaults=defaults(env), folder=root, progress=False)
    assert again.subjects_created == [] and again.images_enrolled == 0
    assert again.refused_by_reason()["duplicate"] == 3


def test_bulk_from_a_csv_with_bad_rows(served, admin, tmp_path: Path, image_bytes) -> None:
    env, _ = served
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "kit.jpeg").write_bytes(image_bytes["kit"])
    (tmp_path / "img" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (tmp_path / "img" / "two.jpg").write_bytes(image_bytes["two_people"])
    (tmp_path / "img" / "rose.jpg").write_bytes(image_bytes["rose"])
    other = admin.create_watchlist(WatchlistCreate(id="wl-other", name="other"))
    admin.create_subject(other.id, SubjectCreate(
        id="elsewhere", display_name="E", category="wanted", reason="r", legal_basis="l",
        expires_at=env.clock.at(days=5),
    ))
    far = env.clock.iso(days=400)
    lines = [
        "path,subject_id,display_name,category,reason,legal_basis,expires_at,source",
        "img/kit.jpeg,kit,Kit H.,missing_person,reported missing,MP report 1,,family photo",
        "img/corrupt.jpg,kit,,,,,,",
        "img/two.jpg,kit,,,,,,",
        "img/missing.jpg,kit,,,,,,",
        f"img/rose.jpg,rose,,,,,{far},",
        "img/rose.jpg,bad/id,,,,,,",
        "img/rose.jpg,elsewhere,,,,,,",
        "img/rose.jpg,typo,,shoplifter,,,,",
        ",kit,,,,,,",
    ]
    csv_path = tmp_path / "enrol.csv"
    csv_path.write_text("\n".join(lines) + "\n")

    report = bulk_enrol(admin, watchlist_id="wl-1", defaults=defaults(env), csv_path=csv_path, progress=False)

    assert report.subjects_created == ["kit"]
    assert report.enrolled == {"kit": 1}
    reasons = sorted((r.subject_id, r.reason) for r in report.refused)
    assert reasons == sorted([
        ("kit", "unreadable"),
        ("kit", "multiple_faces"),
        ("kit", "missing_file"),
        ("rose", "subject_refused"),  # expiry beyond the horizon: the registry says why
        ("bad/id", "invalid_subject_id"),
        ("elsewhere", "subject_on_other_watchlist"),
        ("typo", "invalid_subject"),
        ("kit", "invalid_row"),
    ])
    rose = next(r for r in report.refused if r.subject_id == "rose")
    assert "maximum horizon" in rose.detail
    kit = admin.get_subject("kit")
    assert (kit.display_name, kit.category, kit.reason, kit.legal_basis) == (
        "Kit H.", "missing_person", "reported missing", "MP report 1",
    )
    assert [i.source for i in kit.images] == ["family photo"]


def test_bulk_input_errors_and_auth(served, admin, tmp_path: Path) -> None:
    env, url = served
    with pytest.raises(ValueError, match="exactly one"):
        bulk_enrol(admin, watchlist_id="wl-1", defaults=defaults(env))
    with pytest.raises(ValueError, match="not a folder"):
        bulk_enrol(admin, watchlist_id="wl-1", defaults=defaults(env), folder=tmp_path / "nope")
    bad = tmp_path / "bad.csv"
    bad.write_text("file,subject\nx,y\n")
    with pytest.raises(ValueError, match=r"lacks the columns \['path', 'subject_id'\]"):
        bulk_enrol(admin, watchlist_id="wl-1", defaults=defaults(env), csv_path=bad)
    (tmp_path / "t" / "s").mkdir(parents=True)
    (tmp_path / "t" / "s" / "a.jpg").write_bytes(b"x")
    with pytest.raises(RegistryApiError) as missing:
        bulk_enrol(admin, watchlist_id="nope", defaults=defaults(env), folder=tmp_path / "t")
    assert missing.value.status_code == 404
    with RegistryClient(url, env.tokens["vera"][0]) as viewer, pytest.raises(RegistryApiError) as forbidden:
        bulk_enrol(viewer, watchlist_id="wl-1", defaults=defaults(env), folder=tmp_path / "t", progress=False)
    assert forbidden.value.status_code == 403


def test_client_errors_carry_status_and_detail(served, admin) -> None:
    env, _ = served
    with pytest.raises(RegistryApiError) as err:
        admin.get_subject("nobody")
    assert err.value.status_code == 404 and err.value.detail == "subject 'nobody' not found"
    with pytest.raises(RegistryApiError) as err:
        admin.enrol_image("nobody", b"x", content_type="image/jpeg", source="s")
    assert err.value.status_code == 404
    with RegistryClient("http://127.0.0.1:9", "some-token-0123456789", timeout_s=2) as dead, \
            pytest.raises(RegistryUnreachable):
        dead.list_watchlists()
    page = admin.list_watchlists()
    assert [w.id for w in page.items] == ["wl-1"]


def test_client_through_the_test_client(env) -> None:
    client = RegistryClient("http://ignored", env.tokens["alice"][0], http=env.http)
    created = client.create_watchlist(WatchlistCreate(id="wl-t", name="via TestClient"))
    assert created.created_by == "alice"
    with pytest.raises(RegistryApiError) as err:
        client.create_watchlist(WatchlistCreate(id="wl-t", name="again"))
    assert err.value.status_code == 409


def test_bulk_is_all_or_nothing_per_subject(served, admin, tmp_path: Path, image_bytes) -> None:
    """A subject the run created whose every photo is refused is deleted again, and so is a
    watchlist it created with nothing on it; subjects and watchlists that existed are kept."""
    env, _ = served
    root = tmp_path / "tree"
    for subject, names in {"obama": ["obama"], "dog": ["no_face", "two_people"]}.items():
        (root / subject).mkdir(parents=True)
        for n, name in enumerate(names):
            (root / subject / f"{n}.jpg").write_bytes(image_bytes[name])

    report = bulk_enrol(admin, watchlist_id="wl-1", defaults=defaults(env), folder=root, progress=False)
    assert report.subjects_created == ["obama"] and report.subjects_removed == ["dog"]
    assert report.enrolled == {"obama": 1}
    assert not report.watchlist_created and not report.watchlist_removed
    assert "subject dog not enrolled: every one of its 2 file(s) was refused" in report.summary()
    assert [s.id for s in admin.list_subjects("wl-1").items] == ["obama"]

    only_dog = tmp_path / "dog-only"
    (only_dog / "dog").mkdir(parents=True)
    (only_dog / "dog" / "0.jpg").write_bytes(image_bytes["no_face"])
    report = bulk_enrol(admin, watchlist_id="wl-new", defaults=defaults(env), folder=only_dog, progress=False,
                        watchlist_name="new")
    assert report.watchlist_created and report.watchlist_removed and report.subjects_removed == ["dog"]
    assert "watchlist wl-new deleted again: this run created it and enrolled nothing" in report.summary()
    assert [w.id for w in admin.list_watchlists().items] == ["wl-1"]


class _InterruptedClient(RegistryClient):
    """Stops the run as Ctrl-C would, at the second subject's request (a fault not to be caused
    for real in a test process)."""

    uploads = 0

    def enrol_subject(self, watchlist_id: str, subject, images):  # noqa: ANN001, ANN201 - as the base
        self.uploads += 1
        if self.uploads == 2:
            raise KeyboardInterrupt
        return super().enrol_subject(watchlist_id, subject, images)


def test_a_stopped_run_leaves_no_subject_without_an_image(served, tmp_path: Path, image_bytes) -> None:
    env, url = served
    root = tmp_path / "tree"
    for subject, name in (("a-obama", "obama"), ("b-rose", "rose")):
        (root / subject).mkdir(parents=True)
        (root / subject / "0.jpg").write_bytes(image_bytes[name])
    with _InterruptedClient(url, env.tokens["alice"][0]) as client, pytest.raises(KeyboardInterrupt):
        bulk_enrol(client, watchlist_id="wl-stop", defaults=defaults(env), folder=root, progress=False,
                   watchlist_name="stopped")
    assert [s.id for s in env.registry.list_subjects("wl-stop").items] == ["a-obama"]  # b-rose: never created


def _subject_body(env, subject_id: str) -> dict[str, str]:
    return {"id": subject_id, "display_name": subject_id, "category": "wanted", "reason": "warrant 7/27",
            "legal_basis": "PACE s.24", "expires_at": env.clock.iso(days=90)}


def _photo(data: bytes, content_type: str = "image/jpeg") -> dict[str, str]:
    import base64

    return {"content_base64": base64.b64encode(data).decode("ascii"), "content_type": content_type,
            "source": "custody export"}


def test_the_registry_keeps_a_subject_only_with_an_image(served, admin, image_bytes) -> None:
    """POST /v1/watchlists/{id}/enrolments: the subject and its photos together, or nothing."""
    env, _ = served
    photos = [_photo(image_bytes["no_face"]), _photo(b"not an image at all"), _photo(image_bytes["two_people"]),
              _photo(image_bytes["obama"], "image/gif")]
    answer = env.call("alice", "POST", "/v1/watchlists/wl-1/enrolments",
                      json={"subject": _subject_body(env, "dog"), "images": photos})
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"]
    assert detail["reason"] == "no_image_enrolled" and "so the subject was not created" in detail["message"]
    assert [(r["index"], r["reason"]) for r in detail["refused"]] == [
        (0, "no_face"), (1, "unsupported_type"), (2, "multiple_faces"), (3, "unsupported_type")]
    assert env.call("alice", "GET", "/v1/subjects/dog").status_code == 404
    assert admin.list_subjects("wl-1").total == 0

    # One good photo among bad ones: the subject is kept with it, the rest refused by index.
    answer = env.call("alice", "POST", "/v1/watchlists/wl-1/enrolments", json={
        "subject": _subject_body(env, "obama"),
        "images": [_photo(image_bytes["no_face"]), _photo(image_bytes["obama"]),
                   {**_photo(b"x"), "content_base64": "%%"}],
    })
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["subject"]["id"] == "obama" and len(body["subject"]["images"]) == 1
    assert [i["id"] for i in body["images"]] == [i["id"] for i in body["subject"]["images"]]
    assert [(r["index"], r["reason"]) for r in body["refused"]] == [(0, "no_face"), (2, "unreadable")]

    # The id is taken now: 409 and nothing changes; a viewer may not enrol; a bad body is a 422.
    again = env.call("alice", "POST", "/v1/watchlists/wl-1/enrolments",
                     json={"subject": _subject_body(env, "obama"), "images": [_photo(image_bytes["obama2"])]})
    assert again.status_code == 409, again.text
    assert len(env.call("alice", "GET", "/v1/subjects/obama").json()["images"]) == 1
    assert env.call("alice", "POST", "/v1/watchlists/wl-1/enrolments",
                    json={"subject": _subject_body(env, "x"), "images": []}).status_code == 422
    assert env.call("alice", "POST", "/v1/watchlists/nope/enrolments",
                    json={"subject": _subject_body(env, "x"), "images": [_photo(image_bytes["obama2"])]}
                    ).status_code == 404
