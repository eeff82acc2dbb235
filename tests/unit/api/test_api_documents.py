"""The APIs' OpenAPI documents declare how to authenticate (every operation but the probes and the
console page) and which roles each operation needs, and ``/docs`` and ``/redoc`` are served from
installed files, with no CDN."""

from __future__ import annotations

import re

import pytest
from fastapi import APIRouter, Depends
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from openlfr.api.auth import ROLES, Access, ApiToken, Authenticator, Principal
from openlfr.api.roles_doc import EXTENSION, roles_sentence
from openlfr.audit.log import AuditLog
from openlfr.service.http import make_health_app
from openlfr.service.openapi import documented_apps, openapi_documents

#: Operations anyone may call: the probes, and the console page (its data needs a token).
OPEN = {("/healthz", "get"), ("/readyz", "get"), ("/console", "get")}


def test_every_operation_declares_the_token_schemes() -> None:
    docs = openapi_documents()
    for service in ("match", "alert"):
        doc = docs[service]
        schemes = doc["components"]["securitySchemes"]
        assert schemes["bearer"] == {"type": "http", "scheme": "bearer", "description": schemes["bearer"]["description"]}
        assert schemes["apiKey"]["in"] == "header" and schemes["apiKey"]["name"] == "X-API-Key"
        operations = [(path, method, op) for path, ops in doc["paths"].items() for method, op in ops.items()]
        assert len(operations) > 5
        for path, method, op in operations:
            if (path, method) in OPEN:
                assert "security" not in op, (service, path, method)
            else:
                assert {"bearer": []} in op["security"] and {"apiKey": []} in op["security"], (service, path, method)


def test_docs_are_served_without_a_cdn() -> None:
    router = APIRouter()

    @router.get("/v1/thing")
    def thing() -> dict[str, str]:
        return {}

    client = TestClient(make_health_app(ready=lambda: (True, "ok"), registry=CollectorRegistry(), routers=[router]))
    page = client.get("/docs")
    assert page.status_code == 200
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert assets and all(a.startswith("/docs/static/") for a in assets), assets
    assert "https://" not in page.text and "http://" not in page.text
    for asset in assets:
        served = client.get(asset)
        assert served.status_code == 200 and len(served.content) > 500, asset
    assert client.get("/openapi.json").json()["paths"]["/v1/thing"]


#: One token per role, each with that role alone.
ROLE_TOKENS = {role: f"token-of-a-{role}-holder-0123456789" for role in ROLES}

#: A few operations' roles as the issue states them, so that a route changing its role shows here.
KNOWN = {
    ("match", "post", "/v1/watchlists"): {"watchlist_admin"},
    ("match", "post", "/v1/subjects/{subject_id}/images"): {"watchlist_admin"},
    ("match", "post", "/v1/deployments"): {"deployment_authoriser"},
    ("match", "get", "/v1/watchlists"): set(ROLES),
    ("alert", "post", "/v1/alerts/{alert_id}/reviews"): {"reviewer"},
    ("alert", "get", "/v1/alerts"): set(ROLES),
}


def _protected(doc: dict) -> list[tuple[str, str, dict]]:
    return [(path, method, op) for path, ops in doc["paths"].items() for method, op in ops.items()
            if (path, method) not in OPEN]


def test_every_protected_operation_names_the_roles_its_route_enforces() -> None:
    """The description names the roles, and the service refuses (403) every role not named and
    lets each named one past the role check, so the text cannot drift from the dependency."""
    tokens = [ApiToken(name=f"holder-{role}", roles=frozenset({role}), token=token)
              for role, token in ROLE_TOKENS.items()]
    checked = 0
    with documented_apps(tokens) as apps:
        for service in ("match", "alert"):
            app = apps[service]
            doc = app.openapi()
            client = TestClient(app, raise_server_exceptions=False)
            operations = _protected(doc)
            assert len(operations) > 5
            for path, method, op in operations:
                assert {"bearer": []} in op["security"], (service, path, method)
                roles = set(op[EXTENSION])
                assert roles and roles <= set(ROLES), (service, path, method, roles)
                assert op["description"].endswith(roles_sentence(frozenset(roles))), (service, path, method)
                if (service, method, path) in KNOWN:
                    assert roles == KNOWN[(service, method, path)], (service, path, method)
                url = re.sub(r"\{[^}]+\}", "x1", path)
                for role, token in ROLE_TOKENS.items():
                    if role in roles and path.endswith("/stream"):
                        continue  # a stream that passes the check never ends
                    answer = client.request(method.upper(), url, headers={"Authorization": f"Bearer {token}"})
                    if role in roles:
                        assert answer.status_code != 403, (service, method, path, role, answer.text)
                    else:
                        assert answer.status_code == 403, (service, method, path, role, answer.status_code)
                        assert f"one of the roles {sorted(roles)}" in answer.json()["detail"]
                    checked += 1
    assert checked > 100


def test_a_route_with_two_different_role_checks_is_refused_when_documented(tmp_path) -> None:
    token = ApiToken(name="someone", roles=frozenset({"viewer"}), token_sha256="0" * 64)
    access = Access(Authenticator([token]), AuditLog(tmp_path / "audit.jsonl"))
    router = APIRouter()

    @router.get("/v1/odd")
    def odd(a: Principal = Depends(access.require("viewer")),
            b: Principal = Depends(access.require("reviewer"))) -> dict[str, str]:
        return {}

    with pytest.raises(ValueError, match="/v1/odd: several role dependencies"):
        make_health_app(ready=lambda: (True, "ok"), registry=CollectorRegistry(), routers=[router])


def test_redoc_is_served_without_a_cdn() -> None:
    router = APIRouter()

    @router.get("/v1/thing")
    def thing() -> dict[str, str]:
        return {}

    client = TestClient(make_health_app(ready=lambda: (True, "ok"), registry=CollectorRegistry(), routers=[router]))
    page = client.get("/redoc")
    assert page.status_code == 200
    urls = re.findall(r'(?:src|href|spec-url)="([^"]+)"', page.text)
    assert "/redoc/static/redoc.standalone.js" in urls and "/openapi.json" in urls, urls
    assert all(u.startswith("/") and not u.startswith("//") for u in urls), urls
    assert "https://" not in page.text and "http://" not in page.text
    script = client.get("/redoc/static/redoc.standalone.js")
    assert script.status_code == 200 and len(script.content) > 500_000
    assert b"Redoc" in script.content[:2000]
    for url in urls:
        assert client.get(url).status_code == 200, url
