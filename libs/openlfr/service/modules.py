"""The services' entry modules (``services/<name>/main.py``), loaded as ``openlfr service NAME``
loads them: by path, registered in ``sys.modules`` (pydantic resolves the settings' annotations
through it)."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

from openlfr import paths


def load_service_main(name: str, *, module_name: str | None = None) -> ModuleType:
    """``services/<name>/main.py`` as a module (named ``module_name``, default ``openlfr_service_<name>``).

    Raises:
        FileNotFoundError: no such service.
    """
    path = paths.REPO_ROOT / "services" / name / "main.py"
    spec = importlib.util.spec_from_file_location(module_name or f"openlfr_service_{name}", path)
    if spec is None or spec.loader is None or not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
