"""The top entries of a py-spy profile of a process, as Markdown tables (issue 12, item 6).

Record first (py-spy, in requirements.in, samples every thread of the process from outside
it, pausing it for each sample)::

    .venv/bin/py-spy record --rate 200 --format raw --output build/prof/run.txt -- \
        .venv/bin/openlfr run --source build/benchmarks/cpu_per_face/v2-seed7/scene.avi \
        --watchlist build/benchmarks/cpu_per_face/v2-seed7/watchlist --sample-fps 10 --json

then::

    .venv/bin/python benchmarks/profile_top.py build/prof/run.txt --rate 200 [--top 25]

Prints two tables: **self** (samples whose innermost Python frame is the function: a call into
onnxruntime, OpenCV or numpy counts for the Python function that made it, since py-spy samples
Python stacks) and **inclusive** (samples with the function anywhere on the stack, each
counted once). Seconds are samples / rate: time a thread was seen running, which on shared
cores includes time it was runnable but waiting for one; shares are of all samples.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

_LINE = re.compile(r":\d+\)$")


def read_raw(path: Path) -> tuple[Counter[str], Counter[str], int]:
    """Self and inclusive sample counts per function (``name (file)``) of a ``--format raw``
    file, and the total samples."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        # The first entry is the process (or thread) name; frames go outermost to innermost.
        frames = [_LINE.sub(")", frame) for frame in stack.split(";")[1:]]
        frames = [frame for frame in frames if "<frozen importlib" not in frame] or frames
        if frames:
            own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    return own, inclusive, total


def table(title: str, counts: Counter[str], *, total: int, rate: float, top: int) -> str:
    rows = [f"| {title} | s | share |", "| --- | ---: | ---: |"]
    for frame, n in counts.most_common(top):
        rows.append(f"| `{frame}` | {n / rate:.2f} | {100 * n / total:.1f}% |")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("raw", type=Path, help="py-spy record --format raw output")
    parser.add_argument("--rate", type=float, required=True, help="the --rate it was recorded at (samples/s)")
    parser.add_argument("--top", type=int, default=25, help="rows per table (default 25)")
    args = parser.parse_args(argv)
    own, inclusive, total = read_raw(args.raw)
    if not total:
        print(f"{args.raw}: no samples", file=sys.stderr)
        return 1
    print(f"{total} samples, {total / args.rate:.2f} s of threads seen running\n")
    print(table("self", own, total=total, rate=args.rate, top=args.top) + "\n")
    print(table("inclusive", inclusive, total=total, rate=args.rate, top=args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
