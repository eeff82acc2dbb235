"""The CPUs a process may use: cgroup quotas (v2 and v1 file layouts) and the affinity mask."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from openlfr.inference.cpu_budget import cgroup_cpu_quota, cpu_budget, default_intra_op_threads


def _v2(tmp_path: Path, text: str) -> Path:
    (tmp_path / "cpu.max").write_text(text)
    return tmp_path


def _v1(tmp_path: Path, quota: str, period: str) -> Path:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text(quota)
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text(period)
    return tmp_path


@pytest.mark.parametrize(
    ("layout", "expected"),
    [
        (lambda p: _v2(p, "150000 100000\n"), 1.5),
        (lambda p: _v2(p, "max 100000\n"), None),
        (lambda p: _v2(p, "garbage\n"), None),
        (lambda p: _v1(p, "200000\n", "100000\n"), 2.0),
        (lambda p: _v1(p, "-1\n", "100000\n"), None),
        (lambda p: p, None),
    ],
    ids=["v2-quota", "v2-unlimited", "v2-unreadable", "v1-quota", "v1-unlimited", "no-cgroup-files"],
)
def test_the_cgroup_quota_is_read_from_either_layout(tmp_path: Path, layout, expected) -> None:
    assert cgroup_cpu_quota(layout(tmp_path)) == expected


def test_a_quota_below_the_cpus_bounds_the_budget_rounded_up(tmp_path: Path) -> None:
    cpus = len(os.sched_getaffinity(0))
    assert cpu_budget(_v2(tmp_path, "50000 100000")) == 1
    assert cpu_budget(_v2(tmp_path, f"{cpus * 100000 + 1} 100000")) == cpus  # more quota than CPUs
    assert cpu_budget(tmp_path / "none") == cpus


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two CPUs to pin a child to one")
def test_a_process_pinned_to_one_cpu_gets_a_one_thread_pool() -> None:
    """A child pinned to CPU 0 (as a container's cpuset would) builds its onnxruntime session
    options with one intra-op thread where onnxruntime would take every core."""
    code = (
        "import os; os.sched_setaffinity(0, {0});"
        "from openlfr.inference.session_options import OrtThreading;"
        "from openlfr.inference.cpu_budget import default_intra_op_threads;"
        "print(default_intra_op_threads(), OrtThreading().session_options().intra_op_num_threads,"
        " OrtThreading(intra_op_threads=3).session_options().intra_op_num_threads)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["1", "1", "3"]
    assert default_intra_op_threads() in (0, len(os.sched_getaffinity(0)))  # this process: unpinned or its mask
