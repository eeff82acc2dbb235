"""Tokens, roles and the audited 403 (``openlfr.api.auth``), and the API settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from openlfr.api.auth import Access, ApiToken, Authenticator, Principal, token_digest
from openlfr.api.settings import ApiSettings
from openlfr.audit.log import AuditLog

ALICE = "alice-token-0123456789"
BOB = "bob-token-abcdefghijkl"


def _tokens() -> list[ApiToken]:
    return [
        ApiToken(name="alice", roles=frozenset({"reviewer"}), token=ALICE),
        ApiToken(name="bob", roles=frozenset({"watchlist_admin", "viewer"}), token_sha256=token_digest(BOB)),
    ]


def _app(tmp_path: Path) -> tuple[TestClient, AuditLog]:
    audit = AuditLog(tmp_path / "audit.jsonl")
    access = Access(Authenticator(_tokens()), audit)
    app = FastAPI()

    @app.get("/read")
    def read(who: Principal = Depends(access.require("viewer", "reviewer"))) -> dict[str, str]:
        return {"who": who.name}

    @app.post("/admin")
    def admin(who: Principal = Depends(access.require("watchlist_admin"))) -> dict[str, str]:
        return {"who": who.name}

    return TestClient(app), audit


def test_a_token_or_its_hash_authenticates_and_an_unknown_one_does_not() -> None:
    auth = Authenticator(_tokens())
    assert auth.authenticate(ALICE) == Principal("alice", frozenset({"reviewer"}))
    assert auth.authenticate(BOB) == Principal("bob", frozenset({"watchlist_admin", "viewer"}))
    assert auth.authenticate("nobody-token-000000") is None
    assert len(auth) == 2


def test_bearer_and_api_key_headers_are_accepted(tmp_path: Path) -> None:
    client, _ = _app(tmp_path)
    assert client.get("/read", headers={"Authorization": f"Bearer {ALICE}"}).json() == {"who": "alice"}
    assert client.get("/read", headers={"X-API-Key": BOB}).json() == {"who": "bob"}


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ({}, "authentication required"),
        ({"Authorization": "Basic abc"}, "authentication required"),
        ({"Authorization": "Bearer wrong-token-0000000"}, "unknown token"),
    ],
)
def test_no_or_an_unknown_token_is_401_and_audited(tmp_path: Path, headers: dict[str, str], detail: str) -> None:
    client, audit = _app(tmp_path)
    response = client.get("/read", headers=headers)
    assert response.status_code == 401 and detail in response.json()["detail"]
    assert response.headers["www-authenticate"] == "Bearer"
    (record,) = list(audit.records())
    assert (record.actor, record.action, record.target) == ("anonymous", "access.unauthenticated", "GET /read")
    reason = "unknown token" if detail == "unknown token" else "missing token"
    assert record.details == {"source": "testclient", "reason": reason}
    assert "wrong-token" not in audit.path.read_text()  # the token itself is never written


def test_a_request_outside_its_role_is_403_and_audited(tmp_path: Path) -> None:
    client, audit = _app(tmp_path)
    response = client.post("/admin", headers={"Authorization": f"Bearer {ALICE}"})
    assert response.status_code == 403
    assert "watchlist_admin" in response.json()["detail"] and "'alice'" in response.json()["detail"]
    (record,) = list(audit.records())
    assert (record.actor, record.action, record.target) == ("alice", "access.denied", "POST /admin")
    assert record.details == {"needed_any_of": ["watchlist_admin"], "has": ["reviewer"]}
    assert ALICE not in audit.path.read_text()  # the token itself is never written
    assert client.post("/admin", headers={"Authorization": f"Bearer {BOB}"}).status_code == 200


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"name": "x", "roles": ["viewer"]}, "exactly one of 'token' and 'token_sha256'"),
        ({"name": "x", "roles": ["viewer"], "token": "short"}, "at least 16 characters"),
        ({"name": "x", "roles": ["viewer"], "token_sha256": "ABC"}, "64 lowercase hex"),
        ({"name": "x", "roles": ["superuser"], "token": ALICE}, "roles"),
        ({"name": "x", "roles": [], "token": ALICE}, "roles"),
        ({"name": "bad name", "roles": ["viewer"], "token": ALICE}, "name"),
    ],
)
def test_bad_token_entries_are_refused(entry: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ApiToken.model_validate(entry)


def test_a_name_or_token_given_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="given twice"):
        Authenticator([*_tokens(), ApiToken(name="alice", roles=frozenset({"viewer"}), token="another-token-00000")])
    with pytest.raises(ValueError, match="same token"):
        Authenticator([*_tokens(), ApiToken(name="carol", roles=frozenset({"viewer"}), token=ALICE)])


def test_settings_read_tokens_and_the_audit_log_from_the_environment(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OPENLFR_API_TOKENS", json.dumps([{"name": "alice", "roles": ["reviewer"], "token": ALICE}]))
    monkeypatch.setenv("OPENLFR_AUDIT_LOG", str(tmp_path / "a.jsonl"))
    settings = ApiSettings()
    assert settings.audit_log == tmp_path / "a.jsonl"
    assert settings.authenticator().authenticate(ALICE).name == "alice"
    assert ALICE not in repr(settings)  # SecretStr: never printed
    monkeypatch.setenv("OPENLFR_API_TOKENS", "[]")
    with pytest.raises(ValueError, match="tokens"):
        ApiSettings()
