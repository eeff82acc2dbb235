"""Helpers for tests of alert review: alerts with real JPEG crops, and the review app wired as
the alert service would wire it (store, hub, service, metrics, router, audit log)."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from PIL import Image, ImageDraw
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from openlfr.api.auth import Access, ApiToken, Authenticator, Role
from openlfr.audit.log import AuditLog
from openlfr.messages.models import Alert
from openlfr.pipeline.alert import alert_id_for
from openlfr.review.api import make_review_router
from openlfr.review.events import EventHub
from openlfr.review.metrics import ReviewCollector, register_review_metrics
from openlfr.review.registry_client import RegistryClient
from openlfr.review.service import ReviewService
from openlfr.review.store import ReviewStore
from openlfr.service.http import make_health_app

#: name -> (token, roles) of the test callers.
TOKENS: dict[str, tuple[str, tuple[Role, ...]]] = {
    "alice": ("alice-token-0123456789", ("reviewer",)),
    "bob": ("bob-token-0123456789ab", ("reviewer",)),
    "victor": ("victor-token-012345678", ("viewer",)),
    "wanda": ("wanda-token-0123456789", ("watchlist_admin",)),
}


def bearer(name: str) -> dict[str, str]:
    """The Authorization header of a test caller."""
    return {"Authorization": f"Bearer {TOKENS[name][0]}"}


def jpeg(color: tuple[int, int, int], *, size: int = 150, label: str = "") -> bytes:
    """A real JPEG face-chip stand-in (a filled square with an ellipse and a label)."""
    image = Image.new("RGB", (size, size), color)
    draw = ImageDraw.Draw(image)
    draw.ellipse((size // 5, size // 8, size - size // 5, size - size // 8), outline=(255, 255, 255), width=3)
    if label:
        draw.text((6, 6), label, fill=(255, 255, 255))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=85)
    return out.getvalue()


def scene_jpeg(*, width: int = 320, height: int = 240, label: str = "scene") -> bytes:
    """A real JPEG scene-crop stand-in: a grey street with a person's head and shoulders."""
    image = Image.new("RGB", (width, height), (90, 100, 110))
    draw = ImageDraw.Draw(image)
    cx, cy = width // 2, height // 2
    draw.rectangle((0, int(height * 0.8), width, height), fill=(60, 60, 60))
    draw.ellipse((cx - width // 8, cy - height // 4, cx + width // 8, cy + height // 8), fill=(200, 160, 130))
    draw.rectangle((cx - width // 5, cy + height // 8, cx + width // 5, height), fill=(30, 60, 120))
    if label:
        draw.text((6, 6), label, fill=(255, 255, 255))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=75)
    return out.getvalue()


def make_alert(
    *,
    track: str = "t1",
    subject: str = "subject-1",
    camera: str = "cam-1",
    deployment: str | None = "dep-1",
    capture_ts: float | None = None,
    score: float = 0.82,
    margin: float = 0.11,
    reference: bool = True,
    scene: bool = True,
) -> Alert:
    """An alert as the alert stage raises it, with real JPEG crops (and a scene crop unless
    ``scene`` is False)."""
    ts = time.time() if capture_ts is None else capture_ts
    return Alert(
        camera_id=camera,
        frame_id=f"{camera}-{track}-f",
        capture_ts=ts,
        trace_id="trace-00000001",
        alert_id=alert_id_for(camera_id=camera, track_id=track, subject_id=subject),
        track_id=track,
        subject_id=subject,
        watchlist_id="wl-1",
        score=score,
        margin=margin,
        threshold=0.705,
        probe_chip_jpeg=jpeg((120, 40, 40), label="probe"),
        reference_image_id="ref-1" if reference else None,
        embedder_model="dlib_resnet_v1@sha256:0123abcd",
        alert_ts=ts + 0.5,
        deployment_id=deployment,
        reference_chip_jpeg=jpeg((40, 40, 120), label="ref") if reference else None,
        scene_jpeg=scene_jpeg() if scene else None,
    )


@dataclass
class ReviewApp:
    """The review app and the parts behind it."""

    app: FastAPI
    store: ReviewStore
    hub: EventHub
    service: ReviewService
    audit: AuditLog
    registry: CollectorRegistry
    collector: ReviewCollector

    def sample(self, name: str, **labels: str) -> float | None:
        """A metric's value now."""
        return self.registry.get_sample_value(name, labels)

    def audit_records(self) -> list[Any]:
        """Every audit record so far."""
        return list(self.audit.records())


def build_review_app(
    tmp_path: Path,
    *,
    store: ReviewStore | None = None,
    registry_client: RegistryClient | None = None,
    heartbeat_s: float = 15.0,
    queue_size: int = 256,
    max_streams: int = 64,
    clock: Callable[[], float] = time.time,
    names: Sequence[str] = tuple(TOKENS),
) -> ReviewApp:
    """The review API as the alert service hosts it, on a fresh store and audit log."""
    store = store if store is not None else ReviewStore(tmp_path / "review.sqlite3", clock=clock)
    hub = EventHub(queue_size=queue_size, max_subscribers=max_streams)
    audit = AuditLog(tmp_path / "audit.jsonl")
    tokens = [ApiToken(name=n, roles=frozenset(TOKENS[n][1]), token=SecretStr(TOKENS[n][0])) for n in names]
    access = Access(Authenticator(tokens), audit)
    registry = CollectorRegistry()
    collector = register_review_metrics(store, hub, registry=registry)
    router = make_review_router(
        store, hub, access, audit=audit, registry_client=registry_client, heartbeat_s=heartbeat_s, clock=clock
    )
    app = make_health_app(ready=lambda: (True, "ok"), registry=registry, routers=[router], title="OpenLFR alerts")
    return ReviewApp(
        app=app,
        store=store,
        hub=hub,
        service=ReviewService(store, hub),
        audit=audit,
        registry=registry,
        collector=collector,
    )
