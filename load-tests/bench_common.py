"""What the pipeline benchmarks share: the hard deadline, percentiles, the machine, progress lines.

Used by ``bench_pipeline.py`` (both modes), ``bench_services.py`` and ``loadgen.py``.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from openlfr import paths

FACES_DIR = paths.REPO_ROOT.parent / "shared" / "data" / "faces"
VIDEO = FACES_DIR / "facenet_pytorch" / "examples" / "video.mp4"
STAGES = ("detect", "embed", "match", "alert")
#: The whole run (both modes) ends by then, whatever happens; everything started is stopped.
HARD_TIMEOUT_S = 480.0
#: How often the services' /metrics are scraped while the video goes through.
POLL_S = 0.25
#: The stages must have finished no batch for this long before the run counts as drained.
SETTLE_S = 3.0
#: How long one ``/readyz`` probe may take before the lag gauge is looked at instead.
READYZ_TIMEOUT_S = 10.0


class BenchError(RuntimeError):
    """The benchmark could not run (a service did not start, the deadline passed)."""


@dataclass(slots=True)
class Deadline:
    """The hard time limit shared by every wait of the run."""

    at: float

    def left(self) -> float:
        return self.at - time.monotonic()

    def check(self, what: str) -> None:
        if self.left() <= 0:
            raise BenchError(f"hard timeout ({HARD_TIMEOUT_S:.0f}s) reached while {what}")


# -- figures ----------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) of ``values`` by linear interpolation; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def histogram_quantile(buckets: Sequence[tuple[float, float]], q: float) -> float | None:
    """Prometheus' ``histogram_quantile``: ``buckets`` are cumulative ``(le, count)`` pairs.

    Linear within the bucket holding the quantile; a quantile in the ``+Inf`` bucket is the
    highest finite bound. None when the histogram is empty.
    """
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower, below = 0.0, 0.0
    for le, count in ordered:
        if count >= rank:
            if math.isinf(le):
                return lower
            if count == below:
                return le
            return lower + (le - lower) * (rank - below) / (count - below)
        lower, below = le, count
    return lower


def machine() -> dict[str, Any]:
    """Cores, CPU model (``/proc/cpuinfo``), memory, Python and onnxruntime versions."""
    import onnxruntime

    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_gb = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gb = round(int(line.split()[1]) / 1024**2)
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "cores": os.cpu_count(),
        "cpu": model,
        "arch": platform.machine(),
        "memory_gb": mem_gb,
        "python": sys.version.split()[0],
        "onnxruntime": onnxruntime.__version__,
    }


def log(text: str) -> None:
    """Progress on stderr (the tables go to stdout)."""
    print(f"bench: {text}", file=sys.stderr, flush=True)


def loadavg() -> float | None:
    """The 1-minute load average (other work on the machine shows here)."""
    with contextlib.suppress(OSError):
        return os.getloadavg()[0]
    return None


def bottleneck(stages: dict[str, dict[str, Any]]) -> str:
    """The stage with the most busy time (handle time per message x messages)."""
    return max(stages, key=lambda name: stages[name]["busy_s"])


def sample_watchlist() -> Path:
    """The built sample's watchlist folder (built once under ``build/samples``)."""
    from openlfr.run_cli import largest_face
    from openlfr.config import ModelSettings
    from openlfr.pipeline.samples import build_samples
    from openlfr.vision.factory import build_analyzer

    analyzer = build_analyzer(ModelSettings())
    return build_samples(FACES_DIR, paths.build_dir() / "samples", locate=largest_face(analyzer)).watchlist
