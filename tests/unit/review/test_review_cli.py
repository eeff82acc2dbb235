"""``openlfr alerts list|show|review`` against the review API served by uvicorn: filters and
time forms, the two-person rule and every refusal in words with its exit status."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from openlfr import cli
from openlfr.review.testing import TOKENS, ReviewApp, build_review_app, make_alert
from openlfr.service.http import run_http_in_thread


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[ReviewApp, str]]:
    review = build_review_app(tmp_path)
    server = run_http_in_thread(review.app, "127.0.0.1", 0)
    yield review, f"http://127.0.0.1:{server.port}"
    server.stop()
    review.hub.close()
    review.store.close()


def _run(monkeypatch, capsys, who: str | None, *argv: str) -> tuple[int, str, str]:
    if who is None:
        monkeypatch.delenv(cli.TOKEN_ENV, raising=False)
    else:
        monkeypatch.setenv(cli.TOKEN_ENV, TOKENS[who][0])
    rc = cli.main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_alerts_list_filters_and_time_forms(served, monkeypatch, capsys) -> None:
    review, url = served
    now = time.time()
    old = make_alert(track="t-old", camera="cam-1", capture_ts=now - 3 * 3600)
    new = make_alert(track="t-new", camera="cam-2", deployment="dep-2", capture_ts=now - 60)
    for alert in (old, new):
        review.service.on_alert(alert)

    rc, out, err = _run(monkeypatch, capsys, "victor", "alerts", "list", "--api", url)
    lines = out.splitlines()
    assert rc == 0 and lines[0].split() == ["ALERT", "SEEN", "CAMERA", "DEPLOYMENT", "SUBJECT", "SCORE", "STATUS",
                                            "REVIEWERS"]
    assert [line.split()[0] for line in lines[1:]] == [new.alert_id, old.alert_id]  # newest first
    assert lines[1].split()[2:] == ["cam-2", "dep-2", "subject-1", "0.820", "pending", "-"]
    assert err.strip() == "2 alert(s)"

    def ids(*flags: str) -> list[str]:
        rc, out, err = _run(monkeypatch, capsys, "victor", "alerts", "list", "--api", url, "--json", *flags)
        assert rc == 0, err
        return [a["alert_id"] for a in json.loads(out)]

    assert ids("--since", "now-1h") == [new.alert_id]
    assert ids("--until", "now-1h") == [old.alert_id]
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now - 4 * 3600))  # no offset: local time
    assert ids("--since", since, "--until", "now-2h") == [old.alert_id]
    assert ids("--camera", "cam-1") == [old.alert_id]
    assert ids("--deployment", "dep-2") == [new.alert_id]
    assert ids("--status", "confirmed") == []
    rc, _, err = _run(monkeypatch, capsys, "victor", "alerts", "list", "--api", url, "--limit", "1")
    assert rc == 0 and "1 alert(s) (more: raise --limit or narrow the filters)" in err


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--since", "yesterday"], "--since 'yesterday': not an ISO 8601 time or now+-N; give ISO 8601"),
        (["--until", "now+"], "--until 'now+': not an ISO 8601 time"),
        (["--since", "now", "--until", "now-1h"], "--until (now-1h) must be after --since (now)"),
        (["--limit", "0"], "--limit: 0 must be at least 1"),
    ],
)
def test_bad_list_flags_are_refused_naming_the_flag(monkeypatch, capsys, flags: list[str], named: str) -> None:
    rc, _, err = _run(monkeypatch, capsys, "victor", "alerts", "list", "--api", "http://127.0.0.1:9", *flags)
    assert rc == 2 and named in err, err


def test_two_person_review_and_its_refusals_in_words(served, monkeypatch, capsys) -> None:
    review, url = served
    alert = make_alert()
    review.service.on_alert(alert)
    aid = alert.alert_id

    rc, _, err = _run(monkeypatch, capsys, "victor", "alerts", "review", aid, "--confirm", "--api", url)
    assert rc == 1 and "openlfr alerts review: refused (HTTP 403): your token lacks the reviewer role" in err, err
    rc, _, err = _run(monkeypatch, capsys, "alice", "alerts", "review", aid, "--reject", "--api", url)
    assert rc == 2 and "--reason is required with --reject" in err
    assert review.store.get(aid).status == "pending"

    rc, out, err = _run(monkeypatch, capsys, "alice", "alerts", "review", aid, "--confirm", "--api", url)
    assert rc == 0, err
    assert f"alert {aid}: step 1 confirm by alice; now awaiting a second review by a different reviewer" in err
    assert out.startswith(f"alert {aid}: awaiting_second (waits for review step 2)")

    def mine(who: str) -> list[str]:
        rc, out, _ = _run(monkeypatch, capsys, who, "alerts", "list", "--needs-my-review", "--json", "--api", url)
        assert rc == 0
        return [a["alert_id"] for a in json.loads(out)]

    assert mine("alice") == [] and mine("bob") == [aid] and mine("victor") == []  # a viewer reviews nothing
    rc, _, err = _run(monkeypatch, capsys, "alice", "alerts", "review", aid, "--confirm", "--api", url)
    assert rc == 1 and f"refused (HTTP 409): you (alice) already made the first review of alert {aid}; the second " \
        "review must be made by a different reviewer" in err, err
    assert review.store.get(aid).status == "awaiting_second"

    rc, out, err = _run(monkeypatch, capsys, "bob", "alerts", "review", aid, "--confirm", "--reason", "same scar",
                        "--api", url, "--json")
    assert rc == 0 and "step 2 confirm by bob; now confirmed by two reviewers: actionable" in err
    shown = json.loads(out)
    assert shown["status"] == "confirmed"
    assert [(r["reviewer"], r["decision"], r["reason"]) for r in shown["reviews"]] == [
        ("alice", "confirm", None), ("bob", "confirm", "same scar")]

    rc, _, err = _run(monkeypatch, capsys, "bob", "alerts", "review", aid, "--reject", "--reason", "no", "--api", url)
    assert rc == 1 and f"refused (HTTP 409): alert {aid} is already confirmed" in err, err
    rc, out, _ = _run(monkeypatch, capsys, "victor", "alerts", "show", aid, "--api", url)
    assert rc == 0 and out.splitlines()[0] == f"alert {aid}: confirmed"
    assert "step 1: confirm by alice" in out and "step 2: confirm by bob" in out and ": same scar" in out


def test_a_reject_at_the_first_step_is_final(served, monkeypatch, capsys) -> None:
    review, url = served
    alert = make_alert(track="t2")
    review.service.on_alert(alert)
    rc, _, err = _run(monkeypatch, capsys, "bob", "alerts", "review", alert.alert_id, "--reject", "--reason",
                      "a different person", "--api", url)
    assert rc == 0 and "step 1 reject by bob; now rejected" in err
    assert review.store.get(alert.alert_id).status == "rejected"
    (step,) = [r for r in review.audit_records() if r.action == "alert.review"]
    assert step.actor == "bob" and step.details["reason"] == "a different person"


@pytest.mark.parametrize(
    ("argv", "who", "code", "words"),
    [
        (["alerts", "review", "0" * 32, "--confirm"], "alice", 1, "refused (HTTP 404): no such alert: no alert"),
        (["alerts", "show", "0" * 32], "victor", 1, "refused (HTTP 404): no alert '" + "0" * 32 + "'"),
        (["alerts", "show", "not-an-id"], "victor", 1, "refused (HTTP 422): path.alert_id: String should match"),
        (["alerts", "list"], None, 2, f"set {cli.TOKEN_ENV} to an API token"),
        (["alerts", "review", "0" * 32, "--confirm", "--reason", "bad\x00text"], "alice", 2, "--reason: "),
    ],
)
def test_alert_refusals(served, monkeypatch, capsys, argv: list[str], who: str | None, code: int,
                        words: str) -> None:
    _, url = served
    rc, _, err = _run(monkeypatch, capsys, who, *argv, "--api", url)
    assert rc == code and words in err, err


def test_confirm_and_reject_are_one_of_two(monkeypatch, capsys) -> None:
    with pytest.raises(SystemExit) as stopped:
        cli.main(["alerts", "review", "0" * 32, "--confirm", "--reject", "--reason", "x"])
    assert stopped.value.code == 2
    assert "argument --reject: not allowed with argument --confirm" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["alerts", "review", "0" * 32])
    assert "one of the arguments --confirm --reject is required" in capsys.readouterr().err


def test_an_unreachable_review_api_is_said_in_words(monkeypatch, capsys) -> None:
    rc, _, err = _run(monkeypatch, capsys, "victor", "alerts", "list", "--api", "http://127.0.0.1:9")
    assert rc == 1 and "openlfr alerts list: the API could not be reached: GET /v1/alerts: ConnectError" in err


def test_report_refusals_read_as_words(served, monkeypatch, capsys) -> None:
    _, url = served
    rc, _, err = _run(monkeypatch, capsys, "victor", "report", "dep-none", "--api", url)
    assert rc == 1 and err.strip() == ("openlfr report: refused (HTTP 404): no alert has been recorded for deployment "
                                       "'dep-none', and no registry is configured to look the deployment up")
