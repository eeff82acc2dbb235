"""Health and metrics over HTTP: ``/healthz``, ``/readyz``, ``/metrics``, in a daemon thread."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import uvicorn
from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, make_asgi_app

logger = logging.getLogger(__name__)

#: A readiness check: whether it passes, and why not (``"ok"`` when it does).
Check = Callable[[], tuple[bool, str]]


def make_health_app(
    *,
    ready: Check | Mapping[str, Check],
    registry: CollectorRegistry,
    routers: Sequence[APIRouter] = (),
    title: str = "OpenLFR service",
    max_body_bytes: int | None = None,
) -> FastAPI:
    """The probes and the metrics of a service, and its API routes if it has any.

    Args:
        ready: One check, or named checks (``broker``, ``partitions``, ``stage``); ``/readyz``
            answers 200 only when all pass, else 503, with each check's reason as JSON.
        registry: What ``/metrics`` exposes (prometheus text format).
        routers: The service's API; with any, ``/openapi.json``, ``/docs`` and ``/redoc`` are served.
        title: The OpenAPI document's title.
        max_body_bytes: Request bodies over this get 413 (``openlfr.api.limits.BodySizeLimit``).
    """
    checks: dict[str, Check] = dict(ready) if isinstance(ready, Mapping) else {"ready": ready}
    documented = bool(routers)
    app = FastAPI(
        title=title,
        docs_url=None,  # served below from the installed Swagger UI, not a CDN
        redoc_url=None,
        openapi_url="/openapi.json" if documented else None,
    )
    if documented:
        _serve_docs(app, title)
    if routers:
        from openlfr.api.roles_doc import document_required_roles

        for router in routers:
            document_required_roles(router)
            app.include_router(router)
        from openlfr.api.auth import add_audit_error_handler
        from openlfr.api.limits import StrictJson

        add_audit_error_handler(app)
        app.add_middleware(StrictJson)  # inside the body size limit (added after: outermost)
    if max_body_bytes is not None:
        from openlfr.api.limits import BodySizeLimit

        app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        """Alive: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        """Ready: every check passes."""
        results: dict[str, dict[str, Any]] = {}
        for name, check in checks.items():
            try:
                ok, reason = check()
            except Exception as exc:  # noqa: BLE001 - a failing check means not ready, with why
                logger.warning('readiness check="%s" raised error="%s"', name, exc)
                ok, reason = False, f"check raised {type(exc).__name__}: {exc}"
            results[name] = {"ok": bool(ok), "reason": reason}
        all_ok = all(r["ok"] for r in results.values())
        return JSONResponse(
            {"ready": all_ok, "checks": results}, status_code=200 if all_ok else 503
        )

    app.mount("/metrics", make_asgi_app(registry=registry))
    return app


def _serve_docs(app: FastAPI, title: str) -> None:
    """``/docs``: Swagger UI from the ``swagger-ui-bundle`` package's files, and ``/redoc``: ReDoc
    from the ``fastapi-standalone-docs`` package's ``redoc.standalone.js``, both served by the
    service itself, so the pages work where no CDN is reachable (a police network, this project's
    CI). No web fonts are loaded (ReDoc falls back to the browser's)."""
    from pathlib import Path

    import fastapi_standalone_docs
    import swagger_ui_bundle
    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
    from fastapi.responses import HTMLResponse
    from fastapi.staticfiles import StaticFiles

    redoc_dir = Path(fastapi_standalone_docs.__file__).parent / "static" / "redoc"
    app.mount("/docs/static", StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="swagger-ui")
    app.mount("/redoc/static", StaticFiles(directory=redoc_dir), name="redoc")

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url="/openapi.json", title=f"{title}: API",
            redoc_js_url="/redoc/static/redoc.standalone.js",
            redoc_favicon_url="/docs/static/favicon-32x32.png", with_google_fonts=False,
        )

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json", title=f"{title}: API",
            swagger_js_url="/docs/static/swagger-ui-bundle.js", swagger_css_url="/docs/static/swagger-ui.css",
            swagger_favicon_url="/docs/static/favicon-32x32.png",
            swagger_ui_parameters={"persistAuthorization": False},
        )


class HttpServer:
    """A uvicorn server running in a daemon thread."""

    def __init__(self, server: uvicorn.Server, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def port(self) -> int:
        """The port it listens on (the chosen one when asked for port 0)."""
        for server in self._server.servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return int(self._server.config.port)

    def is_alive(self) -> bool:
        """Whether the server thread runs."""
        return self._thread.is_alive()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop serving and wait for the thread (at most ``timeout_s``)."""
        self._server.should_exit = True
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(1.0)


def run_http_in_thread(
    app: FastAPI, host: str, port: int, *, startup_timeout_s: float = 10.0
) -> HttpServer:
    """Serve ``app`` on ``host:port`` in a daemon thread; return once it listens.

    Raises:
        OSError: The server did not start listening (port taken, bad address).
    """
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", lifespan="off", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="openlfr-http", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    while not server.started:
        if not thread.is_alive():
            raise OSError(f"the HTTP server did not start on {host}:{port} (see the log)")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise OSError(f"the HTTP server did not start on {host}:{port} in {startup_timeout_s}s")
        time.sleep(0.02)
    handle = HttpServer(server, thread)
    logger.info('http listening host="%s" port=%d', host, handle.port)
    return handle
