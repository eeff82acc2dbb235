"""The Dockerfile, checked by structure (no Docker engine here to build it): named stages, pinned
base images, models built at build time, non-root final stages, health checks, and the targets
the compose file builds."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import yaml

from openlfr import paths

DOCKERFILE = paths.REPO_ROOT / "Dockerfile"


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _stages(text: str) -> dict[str, list[tuple[str, str]]]:
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for word, rest in _instructions(text):
        if word == "FROM":
            parts = rest.split()
            assert len(parts) == 3 and parts[1].upper() == "AS", f"unnamed stage: FROM {rest}"
            current = stages.setdefault(parts[2], [("FROM", parts[0])])
        elif current is not None:
            current.append((word, rest))
    return stages


def _args(text: str) -> dict[str, str]:
    """Global ARG defaults (before the first FROM)."""
    args = {}
    for word, rest in _instructions(text):
        if word == "FROM":
            break
        if word == "ARG" and "=" in rest:
            key, value = rest.split("=", 1)
            args[key] = value
    return args


def test_stages_and_pinned_base_images() -> None:
    text = DOCKERFILE.read_text()
    stages = _stages(text)
    assert list(stages) == ["build", "runtime", "triton-cpu-venv", "triton-cpu", "triton"]
    args = _args(text)
    for name, instructions in stages.items():
        image = instructions[0][1]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        assert ":" in image and not image.endswith(":latest"), f"{name}: base image {image} is not pinned"


def test_models_are_built_into_the_image() -> None:
    stages = _stages(DOCKERFILE.read_text())
    runs = " ".join(rest for word, rest in stages["build"] if word == "RUN")
    assert "openlfr models build" in runs and "assemble_repository" in runs
    copies = [rest for word, rest in stages["runtime"] if word == "COPY"]
    assert any("--from=build" in c and "/app/build/models" in c for c in copies)
    assert any("--from=build" in c and "/models" in c for word, c in stages["triton"] if word == "COPY")
    # The CPU Triton's: the python variant, assembled over the same models for its virtualenv.
    assert "'python', paths.build_dir() / 'triton' / 'python-image'" in runs and "/opt/triton/venv/" in runs
    assert any(c.split() == ["--from=build", "/app/build/triton/python-image", "/models"]
               for word, c in stages["triton-cpu"] if word == "COPY")


def test_final_stages_run_as_non_root_with_a_healthcheck() -> None:
    stages = _stages(DOCKERFILE.read_text())
    for name in ("runtime", "triton-cpu", "triton"):
        users = [rest for word, rest in stages[name] if word == "USER"]
        assert users, f"{name} has no USER"
        user = users[-1].split(":")[0]
        assert user not in {"0", "root"}, f"{name} runs as {user}"
        assert any(word == "HEALTHCHECK" for word, _ in stages[name]), name
    runtime = dict((w, r) for w, r in stages["runtime"])
    healthcheck = runtime["HEALTHCHECK"]
    assert "/healthz" in healthcheck and "8080" in healthcheck
    triton_cpu = dict((w, r) for w, r in stages["triton-cpu"])
    assert "/v2/health/ready" in triton_cpu["HEALTHCHECK"] and "curl" not in triton_cpu["HEALTHCHECK"]  # no curl there


def test_the_cpu_triton_runs_the_wheels_server_through_the_entry_point() -> None:
    stages = _stages(DOCKERFILE.read_text())
    venv_runs = " ".join(rest for word, rest in stages["triton-cpu-venv"] if word == "RUN")
    assert "--no-deps -c constraints.txt nvidia-pytriton" in venv_runs and "onnxruntime" in venv_runs and '"numpy<2"' in venv_runs
    final = stages["triton-cpu"]
    assert final[0] == ("FROM", "${PYTHON_IMAGE}")  # the local python base, not NVIDIA's image
    runs = " ".join(rest for word, rest in final if word == "RUN")
    assert "openlfr.inference.triton_exec" in runs and "--prepare-only" in runs  # laid out at build time
    cmd = dict(final)["CMD"]
    assert '"openlfr.inference.triton_exec"' in cmd and '"--model-repository=/models"' in cmd


def test_compose_builds_targets_that_exist() -> None:
    stages = _stages(DOCKERFILE.read_text())
    compose: dict[str, Any] = yaml.safe_load((paths.REPO_ROOT / "docker-compose.yml").read_text())
    builds = [svc["build"] for svc in compose["services"].values() if "build" in svc]
    targets = {build["target"] for build in builds if "dockerfile" not in build}
    assert targets == {"runtime", "triton"} and targets <= set(stages)
    others = {build["dockerfile"] for build in builds if "dockerfile" in build}
    assert others == {"deploy/kafka/Dockerfile"}
    triton_args = {svc["build"]["args"]["TRITON_VARIANT"] for svc in compose["services"].values() if svc.get("build", {}).get("target") == "triton"}
    assert triton_args == {"onnxruntime", "onnxruntime-gpu"}
    for variant in triton_args:
        assert (paths.REPO_ROOT / "deploy" / "triton" / variant).is_dir()


def test_credentials_and_build_outputs_stay_out_of_the_build_context() -> None:
    ignored = set((paths.REPO_ROOT / ".dockerignore").read_text().split())
    assert {"deploy/compose/secrets.env", "deploy/k8s/secrets/credentials.env", ".venv", "build", ".git"} <= ignored


def test_copied_paths_exist() -> None:
    for word, rest in _instructions(DOCKERFILE.read_text()):
        if word == "COPY" and "--from=" not in rest:
            *sources, _dest = shlex.split(rest)
            for source in sources:
                assert (paths.REPO_ROOT / source).exists(), f"COPY {source}: not in the repository"


def test_kafka_image_runs_the_tests_jars_as_a_user_with_every_command_compose_calls() -> None:
    text = (paths.REPO_ROOT / "deploy" / "kafka" / "Dockerfile").read_text()
    instructions = _instructions(text)
    copies = [rest for word, rest in instructions if word == "COPY"]
    assert "build/kafka/libs/ /opt/kafka/libs/" in copies  # what scripts/kafka-fetch.sh gives the tests
    assert "!build/kafka/libs" in (paths.REPO_ROOT / ".dockerignore").read_text().split()
    user = [rest for word, rest in instructions if word == "USER"][-1].split(":")[0]
    assert user not in {"0", "root"}
    compose_text = (paths.REPO_ROOT / "docker-compose.yml").read_text()
    called = set(re.findall(r"/opt/kafka/bin/([\w.-]+\.sh)", compose_text))
    assert called and all((paths.REPO_ROOT / "deploy" / "kafka" / "bin" / name).is_file() for name in called), called
