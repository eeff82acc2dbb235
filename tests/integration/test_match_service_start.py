"""The match service built by its own entry point (``services/match/main.py``) against the real
broker (it reads its audit log's checkpoints at start): the registry and the match stage share
one cohort normaliser, and the registry's figures are on the service's metrics."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from openlfr.cohort.cohort import Cohort
from openlfr.service.modules import load_service_main
from openlfr.testing.kafka_broker import KafkaBroker
from openlfr.testing.stack import demo_cohort

pytestmark = pytest.mark.integration


def test_the_registry_and_the_match_stage_share_the_cohort(kafka_broker: KafkaBroker, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    cohort_path = demo_cohort()
    monkeypatch.setenv("OPENLFR_BOOTSTRAP", kafka_broker.bootstrap)
    monkeypatch.setenv("OPENLFR_TOPIC_PREFIX", f"start-{secrets.token_hex(4)}.")
    monkeypatch.setenv("OPENLFR_REGISTRY_DB_PATH", ":memory:")
    monkeypatch.setenv("OPENLFR_REGISTRY_COHORT", str(cohort_path))
    monkeypatch.setenv("OPENLFR_VECTOR_STORE", "qdrant-local")
    monkeypatch.setenv("OPENLFR_QDRANT_PATH", ":memory:")
    monkeypatch.setenv("OPENLFR_AUDIT_LOG", str(tmp_path / "audit.jsonl"))
    monkeypatch.setenv("OPENLFR_MATCH_SIGNING_KEY", secrets.token_hex(32))
    monkeypatch.setenv("OPENLFR_API_TOKENS", json.dumps([{"name": "a", "roles": ["viewer"], "token": "t" * 24}]))
    match_main = load_service_main("match", module_name="openlfr_service_match_start_test")
    stage = match_main.build(match_main.MatchServiceSettings())
    try:
        cohort = Cohort.load(cohort_path)
        assert stage.norm is stage.registry.norm
        assert stage.norm.cohort_id == cohort.short_id == stage.registry.cohort_id
        assert stage.gate is stage.registry
        assert stage.registry.near_duplicate_score == 0.93  # the built-in embedder's own
        assert REGISTRY.get_sample_value("openlfr_registry_deployments_withheld") == 0
    finally:
        stage.close()
    assert REGISTRY.get_sample_value("openlfr_registry_deployments_withheld") is None  # unregistered at close
