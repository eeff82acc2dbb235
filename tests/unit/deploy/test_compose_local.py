"""deploy/compose/local.yml: the local stack's override of docker-compose.yml, as compose merges
it (`docker-compose config`), on the images scripts/images.sh builds."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from openlfr import paths

REPO = paths.REPO_ROOT
COMPOSE = REPO / "build" / "deploy-tools" / "bin" / "docker-compose"


@pytest.fixture(scope="module")
def merged(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if not COMPOSE.is_file():
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true and no compose binary at build/deploy-tools/bin: scripts/deploy-tools.sh installs it")
        pytest.skip("no compose binary; scripts/deploy-tools.sh installs it")
    env_file = tmp_path_factory.mktemp("env") / "secrets.env"
    env_file.write_text("".join(f"{var}=x\n" for var in (
        "OPENLFR_API_TOKENS", "OPENLFR_REVIEW_REGISTRY_TOKEN", "OPENLFR_DEPLOYMENTS_TOKEN",
        "OPENLFR_MATCH_SIGNING_KEY", "OPENLFR_QDRANT_API_KEY", "GRAFANA_ADMIN_PASSWORD")))
    out = subprocess.run(
        [str(COMPOSE), "-f", "docker-compose.yml", "-f", "deploy/compose/local.yml", "--env-file", str(env_file),
         "config"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


def test_local_stack_runs_only_images_built_here(merged: dict[str, Any]) -> None:
    services = merged["services"]
    assert set(services) == {"kafka", "kafka-users", "topic-init", "ingest", "detect", "embed", "match", "alert",
                             "prometheus", "triton"}
    for name, service in services.items():
        assert service["image"].startswith("localhost/openlfr/"), name
        assert service.get("pull_policy") == "never" and "build" not in service, name
        check = service.get("healthcheck", {})
        assert "start_interval" not in check, name  # podman 4.3's API refuses it
        assert check.get("test", ["CMD-SHELL"])[0] != "CMD", name  # and splits its words at spaces


def test_local_stack_runs_models_on_its_triton_and_vectors_embedded(merged: dict[str, Any]) -> None:
    services = merged["services"]
    for name in ("detect", "embed", "match"):
        env = services[name]["environment"]
        assert (env["OPENLFR_BACKEND"], env["OPENLFR_TRITON_URL"]) == ("triton", "triton:8001"), name
        depends = services[name]["depends_on"]
        assert depends["triton"] == {"condition": "service_healthy", "required": True}, name
        assert not {"triton-gpu", "qdrant"} & set(depends), name
    triton = services["triton"]
    assert "profiles" not in triton and triton["image"] == "localhost/openlfr/triton:0.1.0-pytriton"
    assert "command" not in triton  # the image's entry point (openlfr.inference.triton_exec)
    assert triton["read_only"] is True and triton["user"] == "1000:1000"  # the main file's, kept
    assert "/v2/health/ready" in triton["healthcheck"]["test"][1]
    match = services["match"]["environment"]
    assert match["OPENLFR_VECTOR_STORE"] == "edge" and match["OPENLFR_QDRANT_PATH"].startswith("/data/")
    assert "OPENLFR_QDRANT_URL" not in match and "OPENLFR_QDRANT_API_KEY" not in match
    assert {"type": "volume", "source": "match-data", "target": "/data"}.items() <= next(
        v for v in services["match"]["volumes"] if v["target"] == "/data").items()  # the vectors persist


def test_local_stack_keeps_the_server_stores_under_profiles() -> None:
    override = yaml.safe_load(Path(REPO / "deploy" / "compose" / "local.yml").read_text().replace("!override", "").replace("!reset", ""))
    assert override["services"]["qdrant"] == {"profiles": ["qdrant"]}
    assert override["services"]["grafana"]["profiles"] == ["monitoring"]
