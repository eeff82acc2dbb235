"""The Python that the shell scripts run inline (``python - <<'PY'`` blocks) compiles and imports
only names that exist: a rename in the package shows here, not when an operator runs the script
(``scripts/run-services.sh`` imported a helper that a CLI split had renamed)."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
from pathlib import Path

import pytest

from openlfr import paths

SCRIPTS = sorted((paths.REPO_ROOT / "scripts").glob("*.sh"))
_HEREDOC = re.compile(r"<<'?(PY|PYTHON|EOF)'?\n(.*?)\n\1\n", re.S)


def _inline_python(script: Path) -> list[str]:
    """The bodies of the script's ``<<'PY'`` (or ``PYTHON``/``EOF``) here-documents."""
    return [m.group(2) for m in _HEREDOC.finditer(script.read_text())]


def test_the_scripts_run_inline_python() -> None:
    """The check below has something to check (run-services.sh builds the sample inline)."""
    assert any("from openlfr" in block for script in SCRIPTS for block in _inline_python(script))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_inline_python_imports_names_that_exist(script: Path) -> None:
    for block in _inline_python(script):
        tree = ast.parse(block, filename=str(script))  # a syntax error fails here
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "openlfr":
                module = importlib.import_module(node.module)
                for alias in node.names:
                    assert hasattr(module, alias.name) or importlib.util.find_spec(f"{node.module}.{alias.name}"), (
                        f"{script.name}: from {node.module} import {alias.name}: no such name")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "openlfr":
                        importlib.import_module(alias.name)
