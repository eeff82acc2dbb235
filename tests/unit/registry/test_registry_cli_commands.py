"""``openlfr watchlist list|show|suspend|resume|delete``, ``openlfr subject ...``, ``openlfr
deployment update|end`` and all-or-nothing ``watchlist enroll``, against the registry served by
uvicorn (real clock), with every refusal's exit status and words."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from openlfr import cli
from openlfr.registry.models import SubjectCreate, WatchlistCreate
from openlfr.service.http import run_http_in_thread

ENROL = ["--reason", "warrant 1", "--legal-basis", "PACE s.24", "--source", "custody photo", "--no-progress"]


@pytest.fixture
def served(make_env) -> Iterator[tuple[object, str]]:
    env = make_env(clock=time.time)
    server = run_http_in_thread(env.app, "127.0.0.1", 0)
    yield env, f"http://127.0.0.1:{server.port}"
    server.stop()


def _as(monkeypatch: pytest.MonkeyPatch, env, who: str | None) -> None:
    if who is None:
        monkeypatch.delenv(cli.TOKEN_ENV, raising=False)
    else:
        monkeypatch.setenv(cli.TOKEN_ENV, env.tokens[who][0])


def _people(root: Path, image_bytes: dict[str, bytes], **files: list[str]) -> Path:
    """``root/<subject>/<n>.jpg`` for each subject's list of test images."""
    for subject, names in files.items():
        (root / subject).mkdir(parents=True)
        for n, name in enumerate(names):
            (root / subject / f"{n}.jpg").write_bytes(image_bytes[name])
    return root


@pytest.fixture
def enrolled(served, monkeypatch, tmp_path: Path, image_bytes, capsys):
    """Watchlist ``wl`` with obama (two photos) and rose, enrolled through the CLI as alice."""
    env, url = served
    folder = _people(tmp_path / "people", image_bytes, obama=["obama", "obama2"], rose=["rose"])
    _as(monkeypatch, env, "alice")
    assert cli.main(["watchlist", "enroll", str(folder), "--api", url, "--watchlist-id", "wl",
                     "--watchlist-name", "Match day", *ENROL]) == 0
    capsys.readouterr()
    return env, url


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = cli.main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_watchlist_list_and_show(enrolled, capsys) -> None:
    env, url = enrolled
    rc, out, _ = _run(capsys, "watchlist", "list", "--api", url)
    header, row = out.splitlines()
    assert rc == 0 and header.split() == ["WATCHLIST", "NAME", "SUBJECTS", "STATUS", "CREATED_BY", "CREATED"]
    assert row.split()[:5] == ["wl", "Match", "day", "2", "ready"] and "alice" in row
    rc, out, _ = _run(capsys, "watchlist", "list", "--api", url, "--json")
    assert rc == 0 and [w["id"] for w in json.loads(out)] == ["wl"]

    rc, out, _ = _run(capsys, "watchlist", "show", "wl", "--api", url)
    lines = out.splitlines()
    assert rc == 0 and lines[0].startswith("watchlist wl: Match day (2 subjects, ready; created by alice")
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert rows["obama"][2:5] == ["wanted", "active", "2"] and rows["rose"][2:5] == ["wanted", "active", "1"]
    rc, out, _ = _run(capsys, "watchlist", "show", "wl", "--api", url, "--json")
    shown = json.loads(out)
    assert shown["watchlist"]["subject_count"] == 2 and {s["id"] for s in shown["subjects"]} == {"obama", "rose"}

    rc, _, err = _run(capsys, "watchlist", "show", "nope", "--api", url)
    assert rc == 1 and err.strip() == "openlfr watchlist show: refused (HTTP 404): watchlist 'nope' not found"


def test_subject_list_show_suspend_resume(enrolled, capsys) -> None:
    env, url = enrolled
    rc, out, _ = _run(capsys, "subject", "list", "wl", "--api", url)
    assert rc == 0 and [line.split()[0] for line in out.splitlines()] == ["SUBJECT", "obama", "rose"]
    rc, out, _ = _run(capsys, "subject", "show", "obama", "--api", url)
    assert rc == 0 and out.startswith("subject obama: obama on watchlist wl, wanted, active")
    assert "reason: warrant 1" in out and "legal basis: PACE s.24" in out and out.count("  image ") == 2
    assert "source: custody photo" in out

    rc, out, _ = _run(capsys, "subject", "suspend", "obama", "--api", url)
    assert rc == 0 and out.strip() == "subject obama suspended: no longer searched for"
    assert env.registry.get_subject("obama").status == "suspended"
    assert json.loads(_run(capsys, "subject", "show", "obama", "--api", url, "--json")[1])["status"] == "suspended"
    rc, out, _ = _run(capsys, "subject", "resume", "obama", "--api", url)
    assert rc == 0 and out.strip() == "subject obama active: searched for again"
    assert env.registry.get_subject("obama").status == "active"


def test_watchlist_suspend_and_resume_the_whole_watchlist(enrolled, capsys) -> None:
    env, url = enrolled
    assert _run(capsys, "subject", "suspend", "rose", "--api", url)[0] == 0
    rc, out, _ = _run(capsys, "watchlist", "suspend", "wl", "--api", url)
    assert rc == 0 and out.strip() == "watchlist wl suspended: no deployment searches its 2 subject(s)"
    assert env.registry.get_watchlist("wl").suspended and env.registry.get_watchlist("wl").suspended_by == "alice"
    # The subjects keep their own status: suspending the list does not touch them.
    assert [env.registry.get_subject(s).status for s in ("obama", "rose")] == ["active", "suspended"]
    rc, out, _ = _run(capsys, "watchlist", "show", "wl", "--api", url)
    assert rc == 0 and "(2 subjects, suspended by alice;" in out.splitlines()[0]
    rc, out, _ = _run(capsys, "watchlist", "suspend", "wl", "--api", url)
    assert rc == 0 and out.strip() == "watchlist wl: already suspended; nothing changed"
    rc, out, _ = _run(capsys, "watchlist", "resume", "wl", "--api", url)
    assert rc == 0 and out.strip().startswith("watchlist wl resumed: its subjects are searched again")
    assert not env.registry.get_watchlist("wl").suspended
    # Rose was suspended on her own before: she stays suspended.
    assert [env.registry.get_subject(s).status for s in ("obama", "rose")] == ["active", "suspended"]
    assert env.actions().count("watchlist.suspend") == 1 and env.actions().count("watchlist.resume") == 1


def test_subject_and_watchlist_refusals(enrolled, monkeypatch, capsys) -> None:
    env, url = enrolled
    _as(monkeypatch, env, "vera")  # a viewer reads but may not change
    assert _run(capsys, "subject", "show", "rose", "--api", url)[0] == 0
    rc, _, err = _run(capsys, "subject", "suspend", "rose", "--api", url)
    assert rc == 1 and "openlfr subject suspend: refused (HTTP 403): forbidden: this needs one of the roles " \
        "['watchlist_admin']" in err, err
    rc, _, err = _run(capsys, "watchlist", "suspend", "wl", "--api", url)
    assert rc == 1 and "refused (HTTP 403)" in err and "watchlist_admin" in err
    assert env.registry.get_subject("rose").status == "active" and not env.registry.get_watchlist("wl").suspended
    rc, _, err = _run(capsys, "watchlist", "resume", "nope", "--api", url)
    assert rc == 1 and "HTTP 404" in err
    _as(monkeypatch, env, None)
    rc, _, err = _run(capsys, "subject", "list", "wl", "--api", url)
    assert rc == 2 and f"set {cli.TOKEN_ENV} to an API token" in err
    monkeypatch.setenv(cli.TOKEN_ENV, "not-a-token-0123456789")
    rc, _, err = _run(capsys, "watchlist", "list", "--api", url)
    assert rc == 1 and f"refused (HTTP 401): the token in ${cli.TOKEN_ENV} is not known" in err
    _as(monkeypatch, env, "alice")
    rc, _, err = _run(capsys, "subject", "show", "nobody", "--api", url)
    assert rc == 1 and "refused (HTTP 404): subject 'nobody' not found" in err
    rc, _, err = _run(capsys, "subject", "list", "wl", "--api", "http://127.0.0.1:9")
    assert rc == 1 and "openlfr subject list: the API could not be reached: GET /v1/watchlists/wl/subjects" in err


def test_deleting_needs_yes_and_is_refused_while_a_deployment_searches(enrolled, monkeypatch, capsys) -> None:
    env, url = enrolled
    rc, _, err = _run(capsys, "subject", "delete", "rose", "--api", url)
    assert rc == 2 and "add --yes to do it" in err and env.registry.get_subject("rose")
    rc, _, err = _run(capsys, "watchlist", "delete", "wl", "--api", url)
    assert rc == 2 and "add --yes to do it" in err

    _as(monkeypatch, env, "dave")
    assert _run(capsys, "deployment", "create", "--api", url, "--id", "dep", "--purpose", "p", "--authorised-by",
                "x", "--cameras", "c", "--watchlists", "wl", "--end", "now+1h")[0] == 0
    _as(monkeypatch, env, "alice")
    rc, _, err = _run(capsys, "watchlist", "delete", "wl", "--yes", "--api", url)
    assert rc == 1 and "openlfr watchlist delete: refused (HTTP 409): " in err and "dep" in err, err
    assert env.registry.get_watchlist("wl").subject_count == 2

    rc, out, _ = _run(capsys, "subject", "delete", "rose", "--yes", "--api", url)
    assert rc == 0 and out.strip() == "subject rose deleted with its images and vectors"
    assert _run(capsys, "subject", "show", "rose", "--api", url)[0] == 1
    _as(monkeypatch, env, "dave")
    assert _run(capsys, "deployment", "end", "dep", "--api", url, "--reason", "done")[0] == 0
    _as(monkeypatch, env, "alice")
    rc, out, _ = _run(capsys, "watchlist", "delete", "wl", "--yes", "--api", url)
    assert rc == 0 and out.strip() == "watchlist wl deleted with its 1 subject(s)"
    assert env.registry.list_watchlists().total == 0


def test_deployment_update_and_end(enrolled, monkeypatch, capsys) -> None:
    env, url = enrolled
    _as(monkeypatch, env, "dave")
    assert _run(capsys, "deployment", "create", "--api", url, "--id", "dep", "--purpose", "match day",
                "--authorised-by", "Supt. X", "--cameras", "gate-1", "--watchlists", "wl", "--end", "now+2h")[0] == 0
    rc, out, err = _run(capsys, "deployment", "update", "dep", "--api", url, "--end", "now+3h", "--cameras",
                        "gate-1", "gate-2", "--purpose", "match day, extra time", "--threshold", "0.72")
    updated = json.loads(out)
    assert rc == 0, err
    assert "deployment dep updated: camera_ids, end_at, purpose, threshold" in err
    assert updated["camera_ids"] == ["gate-1", "gate-2"] and updated["purpose"] == "match day, extra time"
    assert updated["threshold"] == 0.72
    assert 2.9 * 3600 < env.registry.get_deployment("dep").end_at.timestamp() - time.time() < 3.1 * 3600
    assert env.registry.active_for("gate-2", time.time() + 60).deployment_id == "dep"

    rc, _, err = _run(capsys, "deployment", "update", "dep", "--api", url, "--end", "now-1h")
    assert rc == 1 and "refused (HTTP 422): --end: " in err and "is not after start_at" in err, err
    rc, _, err = _run(capsys, "deployment", "update", "dep", "--api", url, "--threshold", "0.5")
    assert rc == 1 and "refused (HTTP 422): --threshold: 0.5 is below the floor of 0.7" in err, err
    _as(monkeypatch, env, "alice")  # a watchlist admin may not change deployments
    rc, _, err = _run(capsys, "deployment", "update", "dep", "--api", url, "--purpose", "q")
    assert rc == 1 and "refused (HTTP 403)" in err and "deployment_authoriser" in err

    _as(monkeypatch, env, "dave")
    rc, out, err = _run(capsys, "deployment", "end", "dep", "--api", url, "--reason", "match over")
    assert rc == 0 and json.loads(out)["status"] == "ended"
    assert "deployment dep ended: matching on gate-1, gate-2 has stopped" in err
    rc, _, err = _run(capsys, "deployment", "update", "dep", "--api", url, "--purpose", "again")
    assert rc == 1 and "refused (HTTP 409): deployment 'dep' has ended; create a new one" in err
    rc, out, _ = _run(capsys, "deployment", "list", "--api", url, "--status", "active")
    assert rc == 0 and json.loads(out)["total"] == 0
    rc, _, err = _run(capsys, "deployment", "end", "nope", "--api", url)
    assert rc == 1 and "refused (HTTP 404): deployment 'nope' not found" in err


@pytest.mark.parametrize(
    ("args", "named"),
    [
        ([], "nothing to change: give at least one of --purpose, --end"),
        (["--end", "tomorrow"], "--end 'tomorrow': not an ISO 8601 time or now+-N; give ISO 8601"),
        (["--target-fpir", "often"], "--target-fpir: 'often' is not a rate"),
        (["--threshold", "2"], "--threshold: Input should be less than or equal to 1"),
        (["--cameras", "c", "c"], "--cameras: camera named more than once: ['c']"),
    ],
)
def test_bad_update_flags_are_refused_naming_the_flag(monkeypatch, capsys, args: list[str], named: str) -> None:
    monkeypatch.setenv(cli.TOKEN_ENV, "unused-token")
    rc, _, err = _run(capsys, "deployment", "update", "dep", "--api", "http://127.0.0.1:9", *args)
    assert rc == 2 and named in err, err


def test_enrolment_is_all_or_nothing_per_subject(served, monkeypatch, tmp_path: Path, image_bytes, capsys) -> None:
    """A subject whose every photo is refused is not left behind; one with a good photo is kept
    with it; a subject that existed before is never deleted."""
    env, url = served
    folder = _people(tmp_path / "people", image_bytes, obama=["obama", "no_face"], dog=["no_face", "two_people"])
    _as(monkeypatch, env, "alice")
    rc, out, err = _run(capsys, "watchlist", "enroll", str(folder), "--api", url, "--watchlist-id", "wl", *ENROL)
    assert rc == 0, err
    assert "watchlist wl: 1 subjects created, 1 images enrolled, 3 files refused" in out
    assert "subject dog not enrolled: every one of its 2 file(s) was refused; the registry kept no subject for it" \
        in out
    assert "dog/0.jpg (dog): no_face" in out and "dog/1.jpg (dog): multiple_faces" in out
    assert [s.id for s in env.registry.list_subjects("wl").items] == ["obama"]
    # The registry put dog on the list at its first readable photo and deleted it again, audited.
    assert env.actions().count("subject.delete") == 1

    # A subject that existed before the run (here with no image yet) is the operator's: kept.
    env.registry.create_subject("wl", SubjectCreate(
        id="dog", display_name="Dog", category="wanted", reason="r", legal_basis="l",
        expires_at=datetime.now(UTC) + timedelta(days=5),
    ), actor="alice")
    rc, out, _ = _run(capsys, "watchlist", "enroll", str(folder), "--api", url, "--watchlist-id", "wl", *ENROL)
    assert rc == 1 and "0 subjects created, 0 images enrolled, 4 files refused" in out
    assert "obama/0.jpg (obama): duplicate" in out and "deleted again" not in out
    assert sorted(s.id for s in env.registry.list_subjects("wl").items) == ["dog", "obama"]


def test_a_watchlist_the_run_created_is_removed_when_nothing_was_enrolled(served, monkeypatch, tmp_path: Path,
                                                                         image_bytes, capsys) -> None:
    env, url = served
    folder = _people(tmp_path / "people", image_bytes, dog=["no_face"], small=["small_face"])
    (folder / "stray.jpg").write_bytes(image_bytes["kit"])
    _as(monkeypatch, env, "alice")
    rc, out, err = _run(capsys, "watchlist", "enroll", str(folder), "--api", url, "--watchlist-id", "fresh", *ENROL)
    assert rc == 1
    assert "watchlist fresh created" in err
    assert "watchlist fresh: 0 subjects created, 0 images enrolled, 3 files refused" in out
    assert "subject dog not enrolled" in out and "subject small not enrolled" in out
    assert "small/0.jpg (small): too_small" in out and "stray.jpg (-): not_in_subject_folder" in out
    assert "watchlist fresh deleted again: this run created it and enrolled nothing" in out
    assert env.registry.list_watchlists().total == 0
    assert env.actions().count("watchlist.delete") == 1

    # A watchlist that existed before is kept, empty or not.
    env.registry.create_watchlist(WatchlistCreate(id="kept", name="kept"), actor="alice")
    rc, out, _ = _run(capsys, "watchlist", "enroll", str(folder), "--api", url, "--watchlist-id", "kept", *ENROL)
    assert rc == 1 and "watchlist kept" in out and "deleted again: this run created it" not in out
    assert [w.id for w in env.registry.list_watchlists().items] == ["kept"]


def test_a_csv_without_its_columns_is_refused_before_any_change(served, monkeypatch, tmp_path: Path,
                                                                 capsys) -> None:
    env, url = served
    bad = tmp_path / "bad.csv"
    bad.write_text("file,subject\nx.jpg,y\n")
    _as(monkeypatch, env, "alice")
    rc, _, err = _run(capsys, "watchlist", "enroll", "--csv", str(bad), "--api", url, "--watchlist-id", "new", *ENROL)
    assert rc == 2 and "openlfr watchlist enroll: --csv: bulk_enrol: " in err and "lacks the columns" in err
    assert env.registry.list_watchlists().total == 0


@pytest.mark.parametrize(("layout", "words"), [("empty", "no subject folder with a photo in it"),
                                               ("flat", "1 file(s) not in a subject's folder (a.jpg)")])
def test_a_folder_with_no_subject_folder_is_refused_before_any_change(served, monkeypatch, tmp_path: Path,
                                                                      image_bytes, capsys, layout: str,
                                                                      words: str) -> None:
    """An empty folder, or photos not in a folder per person: exit 2 naming the folder and the
    layout wanted, before any call (it created a watchlist, refused every file, deleted it again
    and exited 1)."""
    env, url = served
    folder = tmp_path / "people"
    folder.mkdir()
    if layout == "flat":
        (folder / "a.jpg").write_bytes(image_bytes["kit"])
        (folder / "nobody").mkdir()  # a subject folder with nothing in it does not count
    _as(monkeypatch, env, "alice")
    rc, out, err = _run(capsys, "watchlist", "enroll", str(folder), "--api", url, "--watchlist-id", "new", *ENROL)
    assert rc == 2 and f"openlfr watchlist enroll: {folder}: {words}" in err and out == "", err
    assert "SUBJECT_ID/photo.jpg" in err
    assert env.registry.list_watchlists().total == 0 and "watchlist.create" not in env.actions()
