"""Session fixtures of the integration tier: a real Kafka broker, a real Prometheus server, the
sample video with its watchlist, and names unique per test."""

from __future__ import annotations

import itertools
import re
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from openlfr.pipeline.samples import Samples, build_samples
from openlfr.testing.kafka_broker import KafkaBroker, fetch_script
from openlfr.testing.prometheus import PrometheusServer, find_binary

_UNSAFE = re.compile(r"[^a-zA-Z0-9._-]+")


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """One single-node KRaft broker on 127.0.0.1 for the session (``broker.bootstrap``).

    ``scripts/kafka-fetch.sh`` runs first: it downloads the jars from Maven Central when they
    are missing or ``deploy/kafka/pom.xml`` changed, and does nothing otherwise.
    """
    fetched = subprocess.run(
        [str(fetch_script())], capture_output=True, text=True, timeout=600, check=False
    )
    if fetched.returncode != 0:
        pytest.fail(
            f"{fetch_script()} failed with code {fetched.returncode}:\n"
            f"{fetched.stdout}{fetched.stderr}"
        )
    broker = KafkaBroker(work_dir=tmp_path_factory.mktemp("kafka"), startup_timeout_s=90)
    with broker:
        yield broker


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """One Prometheus server on 127.0.0.1 for the session (Debian's ``/usr/bin/prometheus``).

    It scrapes nothing at first: a test points it at its services with
    ``prometheus.configure(jobs=[...], rule_files=[...])`` (scraping every second).
    """
    if find_binary("prometheus") is None:
        pytest.fail("prometheus is not installed: run scripts/test-deps.sh (Debian's prometheus package)")
    with PrometheusServer(work_dir=tmp_path_factory.mktemp("prometheus")) as server:
        yield server


@pytest.fixture
def unique_topic(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Makes topic (and consumer group) names that no other test, run or call uses.

    ``unique_topic("frames")`` gives ``frames-<test name>-<8 hex>-0``; call it again for
    another name. The broker lives for the whole session, so names must never repeat.
    """
    test_name = _UNSAFE.sub("_", request.node.name)[:80]
    run = uuid.uuid4().hex[:8]
    counter = itertools.count()

    def make(prefix: str = "topic") -> str:
        name = f"{_UNSAFE.sub('_', prefix)}-{test_name}-{run}-{next(counter)}"
        if len(name) > 249:
            raise ValueError(f"topic name of {len(name)} characters, Kafka allows 249: {name}")
        return name

    return make


@pytest.fixture(scope="session")
def samples(analyzer, faces_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Samples:  # noqa: ANN001
    """The sample video and its watchlist (``openlfr.pipeline.samples``), built once a session
    and only read by the tests that feed it."""

    def locate(image: np.ndarray) -> np.ndarray:
        faces = analyzer.analyze(image)
        return faces.boxes[int(np.argmax(faces.boxes[:, 2] - faces.boxes[:, 0]))]

    return build_samples(faces_dir, tmp_path_factory.mktemp("samples"), locate=locate)
