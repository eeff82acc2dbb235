"""Fixtures of the registry tests: a registry over a real analyzer, an in-memory Qdrant store, a
real audit log and SQLite and a background cohort of real faces, behind the real HTTP app; a
settable clock; enrolment images."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from openlfr.api.auth import Access, ApiToken
from openlfr.api.settings import ApiSettings
from openlfr.audit.log import AuditLog
from openlfr.cohort.cohort import Cohort, make_cohort
from openlfr.registry.api import make_registry_router
from openlfr.registry.db import RegistryDb
from openlfr.registry.models import to_datetime
from openlfr.registry.service import Registry
from openlfr.registry.settings import RegistrySettings
from openlfr.service.http import make_health_app
from openlfr.vision.images import load_image
from openlfr.watchlist.qdrant_store import QdrantStore

KNN = Path("face_recognition/examples/knn_examples")

#: Shared-set images by role in the tests.
IMAGES = {
    "obama": KNN / "train/obama/obama.jpg",
    "obama2": KNN / "train/obama/obama2.jpg",
    "obama_probe": KNN / "test/obama1.jpg",
    "rose": KNN / "train/rose_leslie/img1.jpg",
    "kit": KNN / "train/kit_harington/john1.jpeg",
    "two_people": Path("face_recognition/examples/two_people.jpg"),
    "no_face": Path("dlib/examples/faces/dogs.jpg"),
    "small_face": Path("glint360k_celebs/Hugh_Laurie/3366.png"),
}

#: name -> (token, roles); every role once, and a holder of two roles.
TOKENS = {
    "alice": ("alice-token-0123456789", ["watchlist_admin"]),
    "dave": ("dave-token-0123456789ab", ["deployment_authoriser"]),
    "vera": ("vera-token-0123456789ab", ["viewer"]),
    "rex": ("rex-token-0123456789abc", ["reviewer"]),
    "svc": ("svc-token-0123456789abc", ["service"]),
    "both": ("both-token-0123456789ab", ["watchlist_admin", "deployment_authoriser"]),
}

#: The embedding model the test registries match with (their cohorts are made for it).
MODEL_VERSION = "dlib_resnet@0123456789ab"

MAX_BODY_BYTES = 2 * 1024 * 1024
MAX_IMAGE_BYTES = 1024 * 1024


class FakeClock:
    """A wall clock the test sets (Unix seconds)."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def at(self, **delta: float) -> datetime:
        """An aware datetime ``delta`` (timedelta keywords) from now."""
        return to_datetime(self.now) + timedelta(**delta)

    def iso(self, **delta: float) -> str:
        return self.at(**delta).isoformat()


@dataclass
class RegistryEnv:
    """One registry behind its HTTP app."""

    clock: FakeClock
    db: RegistryDb
    store: QdrantStore
    audit: AuditLog
    registry: Registry
    app: FastAPI
    http: TestClient
    tokens: dict[str, tuple[str, list[str]]]
    max_body_bytes: int
    max_image_bytes: int

    def call(self, who: str | None, method: str, path: str, **kwargs):
        """An HTTP call as ``who`` (a TOKENS name), or without a token."""
        headers = dict(kwargs.pop("headers", {}) or {})
        if who is not None:
            headers["Authorization"] = f"Bearer {TOKENS[who][0]}"
        return self.http.request(method, path, headers=headers, **kwargs)

    def actions(self) -> list[str]:
        return [r.action for r in self.audit.records()]


def _make_env(tmp_path: Path, analyzer, cohort: Cohort, *, db_path: str | Path = ":memory:",
              clock: FakeClock | None = None, store: QdrantStore | None = None, model_version: str = MODEL_VERSION,
              **settings) -> RegistryEnv:
    clock = clock or FakeClock()
    store = store or QdrantStore(location=":memory:", clock=clock)
    if model_version == MODEL_VERSION:  # not a built-in model's version: its near-duplicate score is given
        settings.setdefault("near_duplicate_score", 0.93)
    db = RegistryDb(db_path)
    audit = AuditLog(tmp_path / "audit.jsonl")
    registry = Registry(
        db=db, store=store, analyzer=analyzer, audit=audit,
        settings=RegistrySettings(db_path=Path(str(db_path)), cohort=tmp_path / "cohort.npz", **settings),
        model_version=model_version, cohort=cohort, clock=clock,
    )
    api = ApiSettings(
        tokens=[ApiToken(name=name, token=token, roles=roles) for name, (token, roles) in TOKENS.items()],
        audit_log=audit.path, max_body_bytes=MAX_BODY_BYTES, max_image_bytes=MAX_IMAGE_BYTES,
    )
    access = Access(api.authenticator(), audit)
    app = make_health_app(
        ready=registry.ready, registry=CollectorRegistry(), routers=[make_registry_router(registry, access, api)],
        title="registry", max_body_bytes=api.max_body_bytes,
    )
    return RegistryEnv(clock, db, store, audit, registry, app, TestClient(app), TOKENS, MAX_BODY_BYTES, MAX_IMAGE_BYTES)


def _close(e: RegistryEnv) -> None:
    e.http.close()
    e.registry.close()
    e.store.close()
    e.db.close()


@pytest.fixture(scope="session")
def cohort(shared_cohort_faces) -> Cohort:
    """The background cohort of the test registries: real faces of people on none of their
    watchlists (UTKFace crops and the dlib johns), made for ``MODEL_VERSION``."""
    return make_cohort(shared_cohort_faces, model_version=MODEL_VERSION, meta={"source": "registry tests"})


@pytest.fixture(scope="session")
def other_cohort(shared_cohort_faces) -> Cohort:
    """A second cohort of the same model (a new cohort file): the same faces but the first 20."""
    return make_cohort(shared_cohort_faces[20:], model_version=MODEL_VERSION, meta={"source": "registry tests, v2"})


@pytest.fixture
def env(tmp_path: Path, analyzer, cohort: Cohort) -> Iterator[RegistryEnv]:
    """A fresh registry (in-memory SQLite and Qdrant, audit log in tmp_path) behind its app."""
    e = _make_env(tmp_path, analyzer, cohort)
    yield e
    _close(e)


@pytest.fixture
def make_env(tmp_path: Path, analyzer, cohort: Cohort) -> Iterator[Callable[..., RegistryEnv]]:
    """Builds registries with another cohort, analyzer, model version, settings, clock, store or
    database file; closes them after."""
    made: list[RegistryEnv] = []

    def make(**kwargs) -> RegistryEnv:
        e = _make_env(tmp_path, kwargs.pop("analyzer", analyzer), kwargs.pop("cohort", cohort), **kwargs)
        made.append(e)
        return e

    yield make
    for e in reversed(made):
        _close(e)


@pytest.fixture
def clock() -> FakeClock:
    """A settable wall clock."""
    return FakeClock()


@pytest.fixture(scope="session")
def image_bytes(faces_dir: Path) -> dict[str, bytes]:
    """The test images' file bytes, by name."""
    return {name: (faces_dir / rel).read_bytes() for name, rel in IMAGES.items()}


@pytest.fixture(scope="session")
def vectors(analyzer, faces_dir: Path) -> dict[str, np.ndarray]:
    """The descriptor of the one face of the single-face test images, by name."""
    out = {}
    for name in ("obama", "obama2", "obama_probe", "rose", "kit"):
        faces = analyzer.analyze(load_image(faces_dir / IMAGES[name]))
        assert len(faces) == 1, name
        out[name] = faces.embeddings[0]
    return out


@pytest.fixture(scope="session")
def enrolled(analyzer, faces_dir: Path, vectors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The vector the registry stores for each single-face test image, by the enrolment rule worked
    out here by hand: the dlib chip's descriptor averaged with its flipped chip's."""
    out = {}
    for name in vectors:
        faces = analyzer.analyze(load_image(faces_dir / IMAGES[name]))
        flipped = analyzer.embedder.embed(np.ascontiguousarray(faces.chips[:1, :, ::-1]))[0]
        a, b = faces.embeddings[0], flipped
        mean = a / np.linalg.norm(a) + b / np.linalg.norm(b)
        out[name] = (mean / np.linalg.norm(mean) * (np.linalg.norm(a) + np.linalg.norm(b)) / 2).astype(np.float32)
    return out
