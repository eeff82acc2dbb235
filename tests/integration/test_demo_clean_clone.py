"""README's first command on a clean clone with only Python: ``make demo`` sets up and runs the
demo with no Java, Maven, npm, Go, apt or root on the PATH, and ends in its alerts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from openlfr import paths

pytestmark = pytest.mark.integration

#: Tools the demo must not need (the tests' and services' set-up uses them).
NOT_FOR_THE_DEMO = {"java", "javac", "mvn", "npm", "npx", "node", "nodejs", "go", "apt", "apt-get", "dpkg", "sudo",
                    "podman", "docker"}


def _path_without_extras(bin_dir: Path) -> str:
    """A PATH of one folder linking every command of the machine's PATH but ``NOT_FOR_THE_DEMO``."""
    bin_dir.mkdir()
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        if not folder or not Path(folder).is_dir():
            continue
        for tool in Path(folder).iterdir():
            if tool.name in NOT_FOR_THE_DEMO or (bin_dir / tool.name).exists():
                continue
            if tool.is_file() and os.access(tool, os.X_OK):
                (bin_dir / tool.name).symlink_to(tool)
    return str(bin_dir)


@pytest.mark.timeout(2400)
def test_make_demo_runs_on_a_clean_clone_with_only_python(tmp_path: Path) -> None:
    root = tmp_path / "checkout"
    clone = root / "openlfr"
    root.mkdir()
    subprocess.run(["git", "clone", "-q", str(paths.REPO_ROOT), str(clone)], check=True, timeout=300)
    (root / "shared").symlink_to(paths.REPO_ROOT.parent / "shared")  # the shared face set beside it
    env = {
        "PATH": _path_without_extras(tmp_path / "bin"),
        "HOME": os.environ.get("HOME", str(tmp_path)),  # pip's cache of this machine, if any
        "PYTHON": str(Path(sys.base_prefix) / "bin" / "python3.11"),  # the machine's, not the project's venv
        "LANG": "C.UTF-8",
    }
    proc = subprocess.run(["make", "demo"], cwd=clone, env=env, capture_output=True, text=True, timeout=2300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert not (clone / "build" / "kafka").exists()  # nothing of the tests' set-up was fetched
    # Set-up says what it does: pip's own lines for the pinned packages, not minutes of silence.
    assert "setup: installing" in out and "Collecting numpy" in out, out[:3000]
    assert "ALERT " in proc.stdout and "subject=barack_obama" in proc.stdout, out[-3000:]
