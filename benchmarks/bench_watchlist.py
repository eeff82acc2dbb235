"""Watchlist search speed and recall: the edge store beside Qdrant's local mode, at 1k-100k subjects.

Synthetic watchlists: one reference per subject, random 128-d vectors of norm ~1 (like dlib
descriptors: strangers ~1.4 apart), spread over 5 watchlists; 2% suspended, 5% expired, 5%
unexpired with an expiry, enrolment times over the past year. Every search carries a
deployment's full filter: 2 of the 5 watchlists, active, unexpired, enrolled before a cut-off
18 days ago (~35% of the entries pass). Probes are half "enrolled" (a searchable subject's
reference plus noise, ~0.35 away, like another photo of the same person) and half strangers.

Measures per store and size: bulk upsert (chunks of 1000; the edge store's HNSW build timed
apart), single-face ``search`` (limit 2, as the match stage asks) p50/p95/p99, ``search_many``
of 8 faces, one ``count_subjects`` of the deployment, and top-1 agreement with brute force
(numpy over the same filter) for each kind of probe.

Usage: .venv/bin/python benchmarks/bench_watchlist.py [--sizes 1000,10000,100000]
       [--queries 400] [--local-sizes 1000,10000,100000] [--local-queries 24] [--json OUT]
Prints a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import platform
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from openlfr.watchlist.edge_store import EdgeStore
from openlfr.watchlist.qdrant_store import QdrantStore
from openlfr.watchlist.store import VectorStore, WatchlistEntry

NOW = 1_800_000_000.0
DAY = 86_400.0
WATCHLISTS = 5
SEARCHED = ["wl-0", "wl-1"]
ENROLLED_BEFORE = NOW - 18 * DAY
LIMIT = 2
BATCH = 8
CHUNK = 1000
#: Per-dimension noise of an "enrolled" probe: sqrt(128) * 0.031 = ~0.35 from its reference.
PROBE_NOISE = 0.031


@dataclass(frozen=True)
class Watchlist:
    """A synthetic watchlist as entries and as parallel arrays for brute force."""

    entries: list[WatchlistEntry]
    vectors: np.ndarray  # (n, 128)
    searchable: np.ndarray  # (n,) bool: passes the deployment's filter at NOW


def make_watchlist(n: int, seed: int) -> Watchlist:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, 128)).astype(np.float32)
    norms = rng.normal(1.0, 0.03, size=(n, 1)).astype(np.float32)
    vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True) * norms
    watchlist = np.arange(n) % WATCHLISTS
    suspended = rng.random(n) < 0.02
    has_expiry = rng.random(n) < 0.10
    expires = np.where(rng.random(n) < 0.5, NOW - rng.uniform(1, 30 * DAY, n), NOW + rng.uniform(1, 300 * DAY, n))
    enrolled = NOW - rng.uniform(0, 365 * DAY, n)
    entries = [
        WatchlistEntry(
            subject_id=f"subject-{i:06d}",
            watchlist_id=f"wl-{watchlist[i]}",
            reference_image_id=f"ref-{i:06d}",
            vector=vectors[i],
            status="suspended" if suspended[i] else "active",
            expires_ts=float(expires[i]) if has_expiry[i] else None,
            enrolled_ts=float(enrolled[i]),
        )
        for i in range(n)
    ]
    searchable = (
        (watchlist < len(SEARCHED)) & ~suspended & (~has_expiry | (expires > NOW)) & (enrolled <= ENROLLED_BEFORE)
    )
    return Watchlist(entries=entries, vectors=vectors, searchable=searchable)


def make_probes(wl: Watchlist, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(probes (count, 128), whether each is an enrolled subject's): half and half, interleaved."""
    rng = np.random.default_rng(seed)
    enrolled = np.arange(count) % 2 == 0
    targets = rng.choice(np.flatnonzero(wl.searchable), size=count)
    near = wl.vectors[targets] + rng.normal(0, PROBE_NOISE, size=(count, 128)).astype(np.float32)
    strangers = rng.normal(size=(count, 128)).astype(np.float32)
    strangers /= np.linalg.norm(strangers, axis=1, keepdims=True)
    return np.where(enrolled[:, None], near, strangers).astype(np.float32), enrolled


def brute_force_top1(wl: Watchlist, probe: np.ndarray) -> str:
    distances = np.where(wl.searchable, np.linalg.norm(wl.vectors - probe, axis=1), np.inf)
    return wl.entries[int(np.argmin(distances))].subject_id


def percentiles(seconds: list[float]) -> tuple[float, float, float]:
    ms = np.asarray(seconds) * 1e3
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95)), float(np.percentile(ms, 99))


def bench_store(
    name: str, store: VectorStore, wl: Watchlist, queries: int, *, build: Callable[[], object] | None
) -> dict:
    """One row: upsert, index build, search, search_many, count_subjects and recall."""
    n = len(wl.entries)
    started = time.perf_counter()
    for start in range(0, n, CHUNK):
        store.upsert(wl.entries[start : start + CHUNK])
    upsert_s = time.perf_counter() - started
    build_s = None
    if build is not None:
        started = time.perf_counter()
        build()
        build_s = time.perf_counter() - started
    probes, enrolled = make_probes(wl, queries, seed=n + 1)
    search = dict(limit=LIMIT, watchlist_ids=SEARCHED, enrolled_before=ENROLLED_BEFORE)
    for probe in probes[: min(5, queries)]:  # warm-up: caches, lazy loads
        store.search(probe, **search)

    times, found = [], []
    for probe in probes:
        t0 = time.perf_counter()
        hits = store.search(probe, **search)
        times.append(time.perf_counter() - t0)
        found.append(hits[0].subject_id if hits else None)
    # Brute force after the timed loop: its 50 MB scans between searches would evict the caches.
    agree = {True: 0, False: 0}
    for probe, is_enrolled, top1 in zip(probes, enrolled, found, strict=True):
        agree[bool(is_enrolled)] += top1 == brute_force_top1(wl, probe)

    batch_times = []
    for start in range(0, max(BATCH, queries - queries % BATCH), BATCH):
        batch = probes[start : start + BATCH]
        if len(batch) < BATCH:
            break
        t0 = time.perf_counter()
        store.search_many(batch, **search)
        batch_times.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    counted = store.count_subjects(watchlist_ids=SEARCHED, enrolled_before=ENROLLED_BEFORE)
    count_ms = (time.perf_counter() - t0) * 1e3
    if counted != int(wl.searchable.sum()):
        raise RuntimeError(f"{name} counted {counted} subjects, brute force {int(wl.searchable.sum())}")

    p50, p95, p99 = percentiles(times)
    batch_p50 = percentiles(batch_times)[0] if batch_times else math.nan
    row = {
        "store": name,
        "subjects": n,
        "searchable": int(wl.searchable.sum()),
        "queries": queries,
        "upsert_s": upsert_s,
        "index_build_s": build_s,
        "search_p50_ms": p50,
        "search_p95_ms": p95,
        "search_p99_ms": p99,
        "search_many8_p50_ms": batch_p50,
        "count_subjects_ms": count_ms,
        "recall_enrolled": agree[True] / int(enrolled.sum()),
        "recall_strangers": agree[False] / int((~enrolled).sum()),
    }
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {mem_kb / 2**20:.0f} GB"
    except OSError:
        memory = ""
    return f"{platform.machine()} {cpu}, {os.cpu_count()} cores{memory}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000", help="subjects per watchlist set, comma-separated")
    parser.add_argument("--queries", type=int, default=400, help="single-face searches per edge run")
    parser.add_argument("--local-sizes", default="1000,10000,100000", help="sizes Qdrant's local mode runs at")
    parser.add_argument(
        "--local-queries", type=int, default=24, help="searches per local-mode run (~3 s each at 100k)"
    )
    parser.add_argument("--json", type=Path, help="write the rows as JSON")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    local_sizes = {int(s) for s in args.local_sizes.split(",") if s}
    warnings.filterwarnings("ignore", message="Local mode is not recommended")

    rows = []
    for n in sizes:
        wl = make_watchlist(n, seed=n)
        with tempfile.TemporaryDirectory(prefix="bench-edge-") as folder:
            edge = EdgeStore(path=Path(folder) / "edge", clock=lambda: NOW, auto_optimize=False)
            rows.append(bench_store("edge", edge, wl, args.queries, build=edge.optimize))
            edge.close()
        if n in local_sizes:
            local = QdrantStore(location=":memory:", clock=lambda: NOW)
            rows.append(bench_store("qdrant-local", local, wl, args.local_queries, build=None))
            local.close()

    meta = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "python": sys.version.split()[0],
        "qdrant-edge-py": importlib.metadata.version("qdrant-edge-py"),
        "qdrant-client": importlib.metadata.version("qdrant-client"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    print(f"\nMachine: {meta['machine']}; Python {meta['python']}, qdrant-edge-py {meta['qdrant-edge-py']}, "
          f"qdrant-client {meta['qdrant-client']}; {meta['date']}\n")
    print("| store | subjects | upsert s | index build s | search p50 / p95 / p99 ms | search_many(8) p50 ms "
          "| count_subjects ms | top-1 = brute force: enrolled / strangers | queries |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        build = "-" if r["index_build_s"] is None else f"{r['index_build_s']:.2f}"
        print(
            f"| {r['store']} | {r['subjects']:,} | {r['upsert_s']:.2f} | {build} | "
            f"{r['search_p50_ms']:.2f} / {r['search_p95_ms']:.2f} / {r['search_p99_ms']:.2f} | "
            f"{r['search_many8_p50_ms']:.1f} ({r['search_many8_p50_ms'] / BATCH:.2f} a face) | "
            f"{r['count_subjects_ms']:.0f} | "
            f"{r['recall_enrolled']:.0%} / {r['recall_strangers']:.0%} | {r['queries']} |"
        )
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
