"""Fixtures of the deployment checks: the renderer, the pinned offline tools and the built overlays.

The tools live in build/deploy-tools/ (scripts/deploy-tools.sh, run by `make setup`); a test that
needs one that is missing is skipped with a reason that says so.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from openlfr import paths

REPO = paths.REPO_ROOT
TOOLS = REPO / "build" / "deploy-tools"
OVERLAYS = ("cpu", "gpu")
SETUP_HINT = "scripts/deploy-tools.sh (run by `make setup`) installs it"


class Kit:
    """The tools and helpers the deployment tests share (a fixture: test modules cannot import
    this conftest under --import-mode=importlib)."""

    repo = REPO
    overlays = OVERLAYS

    @staticmethod
    def tool(name: str) -> Path:
        """A pinned tool under build/deploy-tools, or skip naming the script that installs it."""
        candidates = {
            "docker-compose": TOOLS / "bin" / "docker-compose",
            "kustomize": TOOLS / "bin" / "kustomize",
            "kubernetes-validate": TOOLS / "venv" / "bin" / "kubernetes-validate",
            "node_modules": TOOLS / "node" / "node_modules" / "@kubernetes-models",
        }
        path = candidates[name]
        # In CI setup.sh has run scripts/deploy-tools.sh, so a missing tool is a failure there.
        missing = pytest.fail if os.environ.get("CI") == "true" else pytest.skip
        if not path.exists():
            missing(f"{name} is not installed at {path}; {SETUP_HINT}")
        if name == "node_modules" and shutil.which("node") is None:
            missing(f"node is not on PATH; {SETUP_HINT} with npm")
        return path

    @staticmethod
    def run(cmd: list[str | Path], *, cwd: Path = REPO, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a tool; on an unexpected exit status fail with its output."""
        proc = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=120)
        if check and proc.returncode != 0:
            pytest.fail(f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    @classmethod
    def kustomize_build(cls, directory: Path) -> list[dict[str, Any]]:
        """The documents `kustomize build DIRECTORY` gives."""
        out = cls.run([cls.tool("kustomize"), "build", directory]).stdout
        return [doc for doc in yaml.safe_load_all(out) if doc]

    @staticmethod
    def of_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
        """Documents of one kind, by name."""
        return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


@pytest.fixture(scope="session")
def kit() -> type[Kit]:
    return Kit


@pytest.fixture(scope="session")
def render() -> ModuleType:
    """deploy/render.py as a module."""
    spec = importlib.util.spec_from_file_location("openlfr_deploy_render", REPO / "deploy" / "render.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def built() -> dict[str, list[dict[str, Any]]]:
    """Every overlay, built."""
    return {name: Kit.kustomize_build(REPO / "deploy" / "k8s" / "overlays" / name) for name in OVERLAYS}


@pytest.fixture(scope="session")
def secrets_built(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """deploy/k8s/secrets built from its example file (the real one is never committed)."""
    work = tmp_path_factory.mktemp("secrets")
    shutil.copytree(REPO / "deploy" / "k8s" / "secrets", work, dirs_exist_ok=True)
    (work / "credentials.env").unlink(missing_ok=True)
    shutil.copy(work / "credentials.env.example", work / "credentials.env")
    return Kit.kustomize_build(work)

