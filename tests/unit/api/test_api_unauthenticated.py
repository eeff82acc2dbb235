"""401s are audited at a bounded rate (a flood of bad tokens cannot fill the disk), and a request
whose audit record cannot be written gets 503, not 500 (issue 11, failure 5 and the 500s of 8)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi import APIRouter, Depends
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from openlfr.api.auth import Access, ApiToken, Authenticator, Principal
from openlfr.api.unauthenticated import UnauthenticatedAudit
from openlfr.audit import metrics
from openlfr.audit.log import AuditLog
from openlfr.service.http import make_health_app

ALICE = "alice-token-0123456789"


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _client(tmp_path: Path, unauthenticated: UnauthenticatedAudit | None = None) -> tuple[TestClient, AuditLog]:
    audit = AuditLog(tmp_path / "audit.jsonl") if unauthenticated is None else unauthenticated.audit
    access = Access(Authenticator([ApiToken(name="alice", roles=frozenset({"reviewer"}), token=ALICE)]), audit,
                    unauthenticated=unauthenticated)
    router = APIRouter()

    @router.get("/read")
    def read(who: Principal = Depends(access.require("reviewer"))) -> dict[str, str]:
        return {"who": who.name}

    @router.post("/admin")
    def admin(who: Principal = Depends(access.require("watchlist_admin"))) -> dict[str, str]:
        return {"who": who.name}

    app = make_health_app(ready=lambda: (True, "ok"), registry=CollectorRegistry(), routers=[router])
    return TestClient(app), audit


def test_a_flood_of_bad_tokens_from_one_source_writes_a_bounded_number_of_records(tmp_path: Path) -> None:
    clock = _Clock()
    limiter = UnauthenticatedAudit(AuditLog(tmp_path / "audit.jsonl"), per_source=5, overall=50, window_s=60,
                                   clock=clock)
    client, audit = _client(tmp_path, limiter)
    suppressed_before = metrics.UNAUTHENTICATED.labels("suppressed")._value.get()

    for i in range(200):
        assert client.get("/read", headers={"Authorization": f"Bearer guess-{i:016d}"}).status_code == 401
    records = list(audit.records())
    assert len(records) == 5 and {r.details["source"] for r in records} == {"testclient"}
    assert metrics.UNAUTHENTICATED.labels("suppressed")._value.get() == suppressed_before + 195

    clock.now += 61  # the window ends: the next 401 (or the timer) writes the summary first
    assert client.get("/read").status_code == 401
    summary, after = list(audit.records())[5:]
    assert (summary.action, summary.target) == ("access.unauthenticated", "401 summary")
    assert summary.details["suppressed"] == 195 and summary.details["sources"] == 1
    assert summary.details["top_sources"] == [["testclient", 195]]
    assert after.details == {"source": "testclient", "reason": "missing token"}
    assert audit.verify().ok


def test_many_sources_are_bounded_overall_and_summarised(tmp_path: Path) -> None:
    clock = _Clock()
    audit = AuditLog(tmp_path / "audit.jsonl")
    limiter = UnauthenticatedAudit(audit, per_source=3, overall=20, window_s=60, max_sources=100, clock=clock)
    for n in range(1000):  # a spray from 1000 addresses, 2 each
        for _ in range(2):
            limiter.record(source=f"10.0.{n // 256}.{n % 256}", method="GET", path="/v1/alerts", reason="unknown token")
    assert len(list(audit.records())) == 20
    clock.now += 60
    limiter.flush()
    records = list(audit.records())
    assert len(records) == 21
    summary = records[-1].details
    assert summary["suppressed"] == 2000 - 20
    assert summary["sources"] == 101  # 100 named, the rest counted as "other"
    assert summary["top_sources"][0][0] == "other"
    limiter.flush()  # nothing new: no second summary
    assert len(list(audit.records())) == 21


def test_the_summary_is_written_when_the_window_ends_without_another_401(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "audit.jsonl")
    limiter = UnauthenticatedAudit(audit, per_source=1, overall=10, window_s=1.0)
    for _ in range(4):
        limiter.record(source="192.0.2.7", method="GET", path="/v1/watchlists", reason="missing token")
    deadline = time.monotonic() + 30
    while len(list(audit.records())) < 2:
        assert time.monotonic() < deadline, "no summary record after the window ended"
        time.sleep(0.05)
    assert list(audit.records())[1].details["suppressed"] == 3


def test_a_request_whose_audit_record_cannot_be_written_gets_503(tmp_path: Path) -> None:
    client, audit = _client(tmp_path)
    assert client.post("/admin", headers={"Authorization": f"Bearer {ALICE}"}).status_code == 403  # audited
    assert client.post("/admin", headers={"Authorization": f"Bearer {ALICE}"}).status_code == 403
    lines = audit.path.read_bytes().splitlines(keepends=True)
    audit.path.write_bytes(lines[0])  # the last record cut

    response = client.post("/admin", headers={"Authorization": f"Bearer {ALICE}"})
    assert response.status_code == 503 and "audit log cannot be written" in response.json()["detail"]
    assert audit.path.read_bytes() == lines[0]
    # A 401 stays a 401 (nothing to refuse more firmly), counted as not audited.
    unaudited = metrics.UNAUTHENTICATED.labels("unaudited")._value.get()
    assert client.get("/read").status_code == 401
    assert metrics.UNAUTHENTICATED.labels("unaudited")._value.get() == unaudited + 1
    assert client.get("/read", headers={"Authorization": f"Bearer {ALICE}"}).status_code == 200  # reads go on


@pytest.mark.parametrize(("kwargs"), [{"per_source": -1}, {"overall": -1}, {"window_s": 0}, {"max_sources": 0}])
def test_bad_limits_are_refused(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(ValueError, match="expected"):
        UnauthenticatedAudit(AuditLog(tmp_path / "a.jsonl"), **kwargs)
