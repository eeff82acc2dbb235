"""How many CPUs this process may really use: its affinity and its container's CPU quota.

onnxruntime sizes its default intra-op pool by the machine's cores. In a container with a CPU
limit (a Kubernetes pod with ``limits.cpu: 2`` on a 32-core node) that is 16 threads sharing two
CPUs' worth of quota: the kernel throttles the container every period and each operator waits
for its slowest thread. :func:`cpu_budget` reads the limit the way the kernel applies it: the
cgroup's CPU quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``), rounded
up, and the CPUs the process may be scheduled on.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

logger = logging.getLogger(__name__)

#: Where the process's cgroup files are mounted.
CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_cpu_quota(root: Path = CGROUP_ROOT) -> float | None:
    """The CPU quota of the cgroup mounted at ``root`` in CPUs (1.5 for ``150000 100000``), or
    None where there is none (``max``, -1, no such files, unreadable)."""
    try:
        text = (root / "cpu.max").read_text().split()
    except OSError:
        text = None
    if text:
        if len(text) != 2 or text[0] == "max":
            return None
        return _ratio(text[0], text[1])
    try:
        quota = (root / "cpu" / "cpu.cfs_quota_us").read_text().strip()
        period = (root / "cpu" / "cpu.cfs_period_us").read_text().strip()
    except OSError:
        return None
    return _ratio(quota, period)


def _ratio(quota: str, period: str) -> float | None:
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    if q <= 0 or p <= 0:
        return None
    return q / p


def cpu_budget(root: Path = CGROUP_ROOT) -> int:
    """CPUs this process may use: the CPUs it may run on, at most its cgroup's quota rounded up
    (at least 1)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_quota(root)
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def default_intra_op_threads(root: Path = CGROUP_ROOT) -> int:
    """The intra-op pool size for "let onnxruntime choose" (0): 0 where onnxruntime's own choice
    (the machine's cores) fits this process, else the budget (a CPU quota or affinity below the
    machine's cores)."""
    budget = cpu_budget(root)
    machine = os.cpu_count() or budget
    return 0 if budget >= machine else budget
