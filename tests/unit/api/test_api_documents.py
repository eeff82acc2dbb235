"""The APIs' OpenAPI documents declare how to authenticate (every operation but the probes and the
console page), and ``/docs`` is served from the installed Swagger UI, with no CDN."""

from __future__ import annotations

import re

from fastapi import APIRouter
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from openlfr.service.http import make_health_app
from openlfr.service.openapi import openapi_documents

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
