"""The pipeline's services as separate processes on this machine, for tests and load tests.

``ServiceStack`` starts ``openlfr service NAME`` processes against one broker with their own
topic prefix, working folder, API tokens (one per role, random per stack), registry and review
databases and audit log, and the demo's background cohort for the match service
(``build/cohort/default.npz``, built from the shared face set when missing); ``enrol_and_deploy``
enrols a watchlist folder through the match service's registry API and authorises a deployment
for the given cameras.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from openlfr.kafka.acls import ADMIN_USER, username
from openlfr.kafka.credentials import BrokerCredentials
from openlfr.kafka.replay import read_topic
from openlfr.kafka.security import Bootstrap
from openlfr.messages.models import Alert
from openlfr.subprocesses import free_port

#: Token holders of a stack, by name, and their roles.
ROLES: dict[str, list[str]] = {
    "admin": ["watchlist_admin"],
    "authoriser": ["deployment_authoriser"],
    "reviewer-a": ["reviewer"],
    "reviewer-b": ["reviewer"],
    "viewer": ["viewer"],
    "alert-service": ["service"],
    "ingest-service": ["service"],
}


class StackError(RuntimeError):
    """A service exited or did not become ready; the message carries its log's tail."""


def demo_cohort_path() -> Path:
    """Where the demo's background cohort of the configured embedder is (``build/cohort/default.npz``
    for the default one)."""
    from openlfr.cohort.cli import default_cohort_path
    from openlfr.config import ModelSettings

    settings = ModelSettings()
    return default_cohort_path(settings.embedder_version(), embed_mirror=settings.embed_mirror)


def demo_cohort(timeout_s: float = 1800) -> Path:
    """The demo's background cohort (``demo_cohort_path``), built from the shared face set by
    ``openlfr cohort build --sample`` when it is missing or of another model (set-up builds it;
    this is the fallback, and a no-op when it is there).

    Raises:
        StackError: it could not be built (the command's output in the message).
    """
    from openlfr.cohort.cohort import Cohort
    from openlfr.cohort.exceptions import CohortError
    from openlfr.config import ModelSettings

    path = demo_cohort_path()
    if path.is_file():
        try:
            settings = ModelSettings()
            if Cohort.load(path).fits(settings.embedder_version(), embed_mirror=settings.embed_mirror):
                return path
        except CohortError:
            pass  # unreadable or of an old schema: rebuilt below
    proc = subprocess.run([sys.executable, "-m", "openlfr.cli", "cohort", "build", "--sample", "--out", str(path)],
                          capture_output=True, text=True, timeout=timeout_s, check=False)
    if proc.returncode != 0 or not path.is_file():
        raise StackError(f"the demo cohort could not be built (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return path


@dataclass
class ServiceProcess:
    """One running service: its process, HTTP port and log file."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def get(self, path: str, *, token: str | None = None, attempts: int = 3) -> tuple[int, str]:
        """GET ``path``: (status, body). A busy stage can answer slowly, so connection errors
        are retried ``attempts`` times."""
        request = urllib.request.Request(self.url(path))
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        for attempt in range(attempts):
            try:
                with urllib.request.urlopen(request, timeout=10) as resp:
                    return resp.status, resp.read().decode(errors="replace")
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read().decode(errors="replace")
            except OSError:
                if attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    def metric(self, prefix: str) -> float:
        """Sum of the samples whose line starts with ``prefix`` (name and leading labels)."""
        _, text = self.get("/metrics")
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


@dataclass
class ServiceStack:
    """Services over one broker, each with its own HTTP port, sharing a prefix and a work folder."""

    bootstrap: str
    work: Path
    env: dict[str, str] = field(default_factory=dict)
    services: dict[str, ServiceProcess] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    #: A broker with SASL_SSL and ACLs: each service connects as its own user (``openlfr-NAME``)
    #: and creates no topic (the test creates them as ``openlfr-admin``).
    kafka_credentials: BrokerCredentials | None = None

    def __post_init__(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        self.tokens = {name: secrets.token_urlsafe(24) for name in ROLES}
        api_tokens = [{"name": name, "roles": ROLES[name], "token": token} for name, token in self.tokens.items()]
        self.env = {
            **os.environ,
            "OPENLFR_BOOTSTRAP": self.bootstrap,
            "OPENLFR_TOPIC_PREFIX": f"stack-{uuid.uuid4().hex[:8]}.",
            "OPENLFR_BATCH_SIZE": "4",
            "OPENLFR_SESSION_TIMEOUT_S": "6",
            "OPENLFR_MAX_FRAME_AGE_S": "3600",  # files are fed faster than real time
            "OPENLFR_QDRANT_PATH": str(self.work / "vectors"),
            "OPENLFR_REGISTRY_DB_PATH": str(self.work / "registry.db"),
            "OPENLFR_REGISTRY_ACTIVITY_FLUSH_S": "1",
            "OPENLFR_REGISTRY_COHORT": str(demo_cohort_path()),  # built at the match service's start if missing
            "OPENLFR_REVIEW_DB_PATH": str(self.work / "review.db"),
            "OPENLFR_REVIEW_REGISTRY_TOKEN": self.tokens["alert-service"],
            "OPENLFR_MATCH_SIGNING_KEY": secrets.token_hex(32),  # match signs, alert verifies
            "OPENLFR_API_TOKENS": json.dumps(api_tokens),
            "OPENLFR_AUDIT_LOG": str(self.audit_log),
            "OPENLFR_LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        } | self.env

    @property
    def kafka_admin(self) -> Bootstrap:
        """How the test reaches the broker with every right (the bootstrap, or ``openlfr-admin``)."""
        if self.kafka_credentials is None:
            return self.bootstrap
        return self.kafka_credentials.connection(self.bootstrap, ADMIN_USER)

    def kafka_env(self, name: str) -> dict[str, str]:
        """The Kafka credentials of service ``name`` (none without ``kafka_credentials``)."""
        if self.kafka_credentials is None:
            return {}
        user = username(name)
        return {
            "OPENLFR_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "OPENLFR_KAFKA_USERNAME": user,
            "OPENLFR_KAFKA_PASSWORD_FILE": str(self.kafka_credentials.password_file(user)),
            "OPENLFR_KAFKA_CA_FILE": str(self.kafka_credentials.ca_file),
            "OPENLFR_CREATE_TOPICS": "false",
        }

    @property
    def audit_log(self) -> Path:
        return self.work / "audit.jsonl"

    @property
    def prefix(self) -> str:
        return self.env["OPENLFR_TOPIC_PREFIX"]

    def start(self, name: str, *, gate_ingest: bool = True, port: int | None = None, **env: str) -> ServiceProcess:
        """Start ``openlfr service NAME`` (extra env on top of the stack's).

        With the match service running, alert checks matches and reads deployments from it, and
        ingest (unless ``gate_ingest`` is False) publishes only cameras a deployment covers. The
        match service gets the demo's cohort unless ``OPENLFR_REGISTRY_COHORT`` names another.
        """
        # A restarted service keeps its address (``port``), as behind a real service name: the
        # services that call it (alert -> match's registry, ingest -> match's gate) still reach it.
        port = free_port() if port is None else port
        log, again = self.work / f"{name}-{port}.log", 1
        while log.exists():  # a restart keeps the earlier process's log
            again += 1
            log = self.work / f"{name}-{port}-{again}.log"
        extra = {**self.kafka_env(name), **env}
        if name == "alert":
            # The alert stage checks every match against the registry (the match service). A stack
            # without one gets an address where nothing answers: a match would wait, unchecked.
            registry = self.services["match"].base_url if "match" in self.services else "http://127.0.0.1:9"
            extra.setdefault("OPENLFR_REVIEW_REGISTRY_URL", registry)
        if name == "match" and {**self.env, **extra}["OPENLFR_REGISTRY_COHORT"] == str(demo_cohort_path()):
            demo_cohort()
        if name == "ingest" and gate_ingest and "match" in self.services:
            extra.setdefault("OPENLFR_DEPLOYMENTS_URL", self.services["match"].base_url)
            extra.setdefault("OPENLFR_DEPLOYMENTS_TOKEN", self.tokens["ingest-service"])
        proc = subprocess.Popen(
            [sys.executable, "-m", "openlfr.cli", "service", name],
            env={**self.env, **extra, "OPENLFR_HTTP_PORT": str(port), "OPENLFR_HTTP_HOST": "127.0.0.1"},
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        service = ServiceProcess(name, proc, port, log)
        key, n = name, 1
        while key in self.services:  # a further replica: detect, detect-2, ...
            n += 1
            key = f"{name}-{n}"
        self.services[key] = service
        return service

    def wait_ready(self, service: ServiceProcess, timeout_s: float = 180) -> None:
        """Until ``/readyz`` answers 200. Raises StackError with the log when it exits or times out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if service.proc.poll() is not None:
                raise StackError(f"{service.name} exited {service.proc.returncode}:\n{service.log_tail()}")
            try:
                if service.get("/readyz", attempts=1)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.5)
        raise StackError(f"{service.name} not ready in {timeout_s}s:\n{service.log_tail()}")

    def start_ready(self, *names: str) -> list[ServiceProcess]:
        """Start services (in order) and wait until each is ready."""
        started = [self.start(name) for name in names]
        for service in started:
            self.wait_ready(service)
        return started

    def enrol_and_deploy(
        self,
        watchlist_dir: Path,
        *,
        cameras: list[str],
        watchlist_id: str = "default",
        deployment_id: str = "dep-test",
        threshold: float = 0.705,
        target_fpir: float | None = None,
        hours: float = 2.0,
        base_url: str | None = None,
    ) -> dict:
        """Enrol every subject folder through the registry API and authorise a deployment with
        per-subject thresholds calibrated to ``target_fpir`` (the registry's default when None),
        ``threshold`` being their raw floor.

        ``base_url`` is the match service's (default: the one this stack started). Returns the
        deployment as the API gave it.
        """
        from openlfr.registry.bulk import SubjectDefaults, bulk_enrol
        from openlfr.registry.client import RegistryClient
        from openlfr.registry.models import DeploymentCreate, WatchlistCreate

        base = base_url or self.services["match"].base_url
        with RegistryClient(base, self.tokens["admin"]) as admin:
            admin.create_watchlist(WatchlistCreate(id=watchlist_id, name=f"test list {watchlist_id}"))
            report = bulk_enrol(
                admin,
                watchlist_id=watchlist_id,
                defaults=SubjectDefaults(
                    category="wanted",
                    reason="integration test",
                    legal_basis="test fixture, no real person is sought",
                    expires_at=datetime.now(UTC) + timedelta(days=7),
                    source="shared face set",
                ),
                folder=watchlist_dir,
                progress=False,
            )
        if not report.images_enrolled:
            raise StackError(f"nothing enrolled from {watchlist_dir}: {report.summary()}")
        now = datetime.now(UTC)
        with RegistryClient(base, self.tokens["authoriser"]) as authoriser:
            deployment = authoriser.create_deployment(
                DeploymentCreate(
                    id=deployment_id,
                    purpose="integration test of the pipeline",
                    authorised_by="Test Superintendent",
                    camera_ids=cameras,
                    start_at=now - timedelta(seconds=60),
                    end_at=now + timedelta(hours=hours),
                    watchlist_ids=[watchlist_id],
                    threshold=threshold,
                    **({"target_fpir": target_fpir} if target_fpir is not None else {}),
                )
            )
        return deployment.model_dump(mode="json")

    def alerts(self) -> list[Alert]:
        """Every alert on the stack's alerts topic."""
        return read_topic(self.kafka_admin, self.prefix + "openlfr.alerts.v1", Alert)

    def stop_all(self, timeout_s: float = 30) -> dict[str, int | None]:
        """SIGTERM every service that runs; their exit codes (None: killed after ``timeout_s``)."""
        codes: dict[str, int | None] = {}
        for service in self.services.values():
            if service.proc.poll() is None:
                service.proc.send_signal(signal.SIGTERM)
        for name, service in self.services.items():
            try:
                codes[name] = service.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                service.proc.kill()
                codes[name] = None
        return codes

    def kill_all(self) -> None:
        """SIGKILL whatever still runs (test teardown)."""
        for service in self.services.values():
            if service.proc.poll() is None:
                service.proc.kill()
                service.proc.wait(timeout=10)
