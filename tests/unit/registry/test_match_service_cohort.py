"""The match service's start with its background cohort: required, checked against the embedding
model (exit 2 naming OPENLFR_REGISTRY_COHORT), and one normaliser shared by the registry and the
match stage. The service's own entry point (``services/match/main.py``), without a broker: the
cohort is dealt with before any topic is touched."""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from openlfr.cohort.cohort import make_cohort
from openlfr.service.modules import load_service_main


@pytest.fixture(scope="module")
def match_main() -> ModuleType:
    """``services/match/main.py`` loaded as ``openlfr service match`` loads it."""
    return load_service_main("match", module_name="openlfr_service_match_test")


@pytest.fixture
def service_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, model_dir: Path) -> Iterator[Path]:
    """The match service's settings but the cohort: a throwaway database, store and audit log."""
    monkeypatch.setenv("OPENLFR_BOOTSTRAP", "127.0.0.1:9")  # never dialled: the start stops before
    monkeypatch.setenv("OPENLFR_MODEL_DIR", str(model_dir))
    monkeypatch.setenv("OPENLFR_REGISTRY_DB_PATH", ":memory:")
    monkeypatch.setenv("OPENLFR_VECTOR_STORE", "qdrant-local")
    monkeypatch.setenv("OPENLFR_QDRANT_PATH", ":memory:")
    monkeypatch.setenv("OPENLFR_AUDIT_LOG", str(tmp_path / "audit.jsonl"))
    monkeypatch.setenv("OPENLFR_API_TOKENS", json.dumps([{"name": "a", "roles": ["viewer"], "token": "t" * 24}]))
    monkeypatch.setenv("OPENLFR_MATCH_SIGNING_KEY", secrets.token_hex(32))  # required by the match service
    monkeypatch.delenv("OPENLFR_REGISTRY_COHORT", raising=False)
    yield tmp_path


def test_without_a_cohort_the_service_exits_2_naming_the_setting(match_main, service_env, capsys) -> None:
    assert match_main.main(["--check-config"]) == 2
    err = capsys.readouterr().err
    assert "bad setting OPENLFR_REGISTRY_COHORT: required" in err
    assert "openlfr cohort build" in err


@pytest.mark.parametrize("problem", ["missing", "not_a_cohort", "other_model"])
def test_an_unusable_cohort_stops_the_start(match_main, service_env: Path, monkeypatch, caplog, problem: str,
                                            shared_cohort_faces) -> None:
    path = service_env / "cohort.npz"
    if problem == "not_a_cohort":
        path.write_bytes(b"not a cohort")
    elif problem == "other_model":
        make_cohort(shared_cohort_faces, model_version="dlib_resnet_v1@000000000000").save(path)
    monkeypatch.setenv("OPENLFR_REGISTRY_COHORT", str(path))
    settings = match_main.MatchServiceSettings()
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as stopped:
        match_main.build(settings)
    assert stopped.value.code == 2
    message = " ".join(r.getMessage() for r in caplog.records)
    assert "OPENLFR_REGISTRY_COHORT" in message, message
    expected = {"missing": "no cohort file at", "not_a_cohort": "is not a readable cohort file",
                "other_model": "the cohort was embedded with dlib_resnet_v1@000000000000"}[problem]
    assert expected in message, message

# The registry and the match stage share the cohort: tests/integration/test_match_service_start.py
# (the service reads its audit log's checkpoints from the broker at start).


def test_check_config_names_every_missing_setting_in_one_run(match_main, monkeypatch, capsys) -> None:
    """One run lists every bad setting of every settings class the service reads, each by the
    variable an operator sets (not OPENLFR_API_OPENLFR_AUDIT_LOG, not OPENLFR_<SETTINGS>)."""
    import os

    for name in list(os.environ):
        if name.startswith("OPENLFR_"):
            monkeypatch.delenv(name)
    assert match_main.main(["--check-config"]) == 2
    err = capsys.readouterr().err
    for name in ("OPENLFR_BOOTSTRAP", "OPENLFR_MATCH_SIGNING_KEY", "OPENLFR_REGISTRY_DB_PATH",
                 "OPENLFR_REGISTRY_COHORT", "OPENLFR_API_TOKENS", "OPENLFR_AUDIT_LOG"):
        assert f"bad setting {name}: " in err, (name, err)
    assert "OPENLFR_API_OPENLFR" not in err and "<SETTINGS>" not in err
    assert "OPENLFR_VECTOR_STORE=edge needs OPENLFR_QDRANT_PATH" in err
