"""Throughput and latency of the whole pipeline: the embedded mode and the services over Kafka.

Input: the shared 1080p pedestrian video (``facenet_pytorch/examples/video.mp4``, 4.2 s,
25 fps, 1920x1080), read as fast as it can be processed, every frame kept unless
``--sample-fps`` says otherwise. Watchlist: the built sample's (``openlfr.pipeline.samples``);
nobody in the video is on it, so every face goes through detect, embed and a Qdrant search.

* ``embedded``: ``EmbeddedPipeline`` wired as ``openlfr run`` wires it (the detect stage from
  the detect service's settings, gate included; the embed skip; local onnxruntime; Qdrant in
  memory). Each stage's ``handle`` is timed; per-stage latency is capture time to
  the return of that stage's ``handle``.
* ``services``: a real broker (``KafkaBroker`` in a temp dir), enrolment through the registry API
  into a temp Qdrant path, detect/embed/match/alert as separate ``openlfr service`` processes
  (unique topic prefix), then ``openlfr service ingest`` in batch file mode. When the stages
  have been idle for ``SETTLE_S`` and their lag is 0, every service's ``/metrics`` is scraped:
  busy time from ``openlfr_stage_handle_seconds``, latency percentiles from the
  ``openlfr_stage_latency_seconds`` buckets (coarse: 5, 10, 30 s bounds) and, exactly, from
  the output records' timestamps minus their capture time. Start is the first frame record's
  timestamp; end is the last batch match finished (polled every ``POLL_S``).

Capture time of a file frame is the ingest's start plus the frame's time in the video, so when
the pipeline runs slower than the video the latency figures are mostly the backlog's queueing
time, not the cost of a frame; ``--realtime`` paces the file like a camera instead (frames/s
is then the input rate).

Usage: .venv/bin/python load-tests/bench_pipeline.py [--mode embedded|services|both]
       [--sample-fps 25] [--batch-size 8] [--threads 0] [--realtime] [--out results.json]
Prints Markdown tables for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

from bench_common import (  # noqa: E402
    FACES_DIR, HARD_TIMEOUT_S, VIDEO, BenchError, Deadline, bottleneck, loadavg, log, machine, percentile,
    sample_watchlist,
)
from bench_services import run_services  # noqa: E402


# -- embedded ---------------------------------------------------------------------------------


@dataclass(slots=True)
class StageClock:
    """Time spent in one stage's ``handle`` and the capture-to-output latency of its outputs."""

    calls: int = 0
    inputs: int = 0
    outputs: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)

    def wrap(self, handle: Callable[..., Any]) -> Callable[..., Any]:
        def timed(batch: Sequence[Any], *, now: float) -> Any:
            started = time.perf_counter()
            result = handle(batch, now=now)
            self.seconds += time.perf_counter() - started
            done = time.time()
            self.calls += 1
            self.inputs += len(batch)
            self.outputs += len(result.outputs)
            self.latencies += [done - out.message.capture_ts for out in result.outputs]
            return result

        return timed


def run_embedded(args: argparse.Namespace, watchlist: Path) -> dict[str, Any]:
    """One run of ``EmbeddedPipeline`` on the video; the figures."""
    from openlfr.messages.signing import MatchSigner
    from openlfr.pipeline.alert import AlertSettings, AlertStage
    from openlfr.pipeline.detect_settings import DetectSettings, build_detect_stage
    from openlfr.pipeline.embed import EmbedStage
    from openlfr.pipeline.embed_skip import EmbedSkip, EmbedSkipSettings
    from openlfr.pipeline.embedded import EmbeddedPipeline
    from openlfr.pipeline.ingest import open_source
    from openlfr.pipeline.match import MatchSettings, MatchStage
    from openlfr.pipeline.match_trust import StaticAuthority
    from openlfr.vision.factory import build_analyzer
    from openlfr.pipeline.deployments import ActiveDeployment, StaticGate
    from openlfr.watchlist.loader import enroll_folder
    from openlfr.watchlist.qdrant_store import QdrantStore

    # What ``openlfr run`` builds: the detect service's settings (gate included) from OPENLFR_*.
    settings = DetectSettings(threads=args.threads)
    analyzer = build_analyzer(settings)
    store = QdrantStore(location=":memory:")
    report = enroll_folder(watchlist, analyzer=analyzer, store=store, watchlist_id="default")
    deployment = ActiveDeployment(deployment_id="bench", watchlist_ids=("default",), threshold=0.705,
                                  snapshot_ts=time.time())
    signer = MatchSigner.ephemeral()
    authority = StaticAuthority.for_run(deployment, camera_ids=["bench"],
                                        subjects={s: "default" for s in report.enrolled})
    match_settings = MatchSettings()
    pipeline = EmbeddedPipeline(
        detect=build_detect_stage(settings, analyzer=analyzer, live=False),
        embed=EmbedStage(analyzer.embedder, embedder_model=settings.embedder_version(), max_frame_age_s=None,
                         skip=EmbedSkip.from_settings(EmbedSkipSettings.for_match(match_settings))),
        # The file is read faster than real time: capture times run ahead of the clock.
        match=MatchStage(match_settings, store=store, gate=StaticGate(deployment), signer=signer,
                         max_clock_skew_s=None),
        alert=AlertStage(AlertSettings(), signer=signer, authority=authority, max_clock_skew_s=None),
        batch_size=args.batch_size,
    )
    clocks = {stage.name: StageClock() for stage in pipeline.stages}
    for stage in pipeline.stages:
        # An instance attribute: the pipeline calls stage.handle, and its identity checks
        # (``stage is self.match``) still see the real stage objects.
        stage.handle = clocks[stage.name].wrap(stage.handle)  # type: ignore[method-assign]
    load = loadavg()
    summary = pipeline.run(
        [("bench", open_source(str(args.video), realtime_files=args.realtime))],
        sample_fps=args.sample_fps,
        on_alert=lambda alert: None,
    )
    store.close()
    seconds = summary.seconds
    frames = summary.frames_processed
    stages: dict[str, dict[str, Any]] = {}
    for name, clock in clocks.items():
        stages[name] = {
            "inputs": clock.inputs,
            "batches": clock.calls,
            "busy_s": round(clock.seconds, 3),
            "ms_per_frame": 1e3 * clock.seconds / frames if frames else None,
            "ms_per_input": 1e3 * clock.seconds / clock.inputs if clock.inputs else None,
            "utilisation": clock.seconds / seconds if seconds else None,
            "latency_p50_s": percentile(clock.latencies, 0.50),
            "latency_p95_s": percentile(clock.latencies, 0.95),
            "latency_source": "exact",
        }
    busy = sum(s["busy_s"] for s in stages.values())
    return {
        "mode": "embedded",
        "loadavg_1m_before": load,
        "frames_read": summary.frames_read,
        "frames": frames,
        "faces": summary.faces,
        "tracks": summary.tracks,
        "alerts": summary.alerts,
        "dead_letters": summary.dead_letters,
        "dropped": summary.dropped,
        "seconds": seconds,
        "frames_per_s": frames / seconds if seconds else None,
        "faces_per_s": summary.faces / seconds if seconds else None,
        "outside_stages_s": round(seconds - busy, 3),
        "stages": stages,
        "bottleneck": bottleneck(stages),
    }


# -- report -----------------------------------------------------------------------------------


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1e3:.0f}"


def markdown(meta: dict[str, Any], results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """The tables for docs/benchmarks.md."""
    command = (f".venv/bin/python load-tests/bench_pipeline.py --mode {args.mode} --sample-fps {args.sample_fps:g} "
               f"--batch-size {args.batch_size}" + (f" --threads {args.threads}" if args.threads else "")
               + (" --realtime" if args.realtime else ""))
    lines = [
        f"Command: `{command}`",
        "",
        f"Machine: {meta['arch']} {meta['cpu']}, {meta['cores']} cores, {meta['memory_gb']} GB; Python "
        f"{meta['python']}, onnxruntime {meta['onnxruntime']}. Date: {meta['date']}. Input: "
        f"`{VIDEO.relative_to(FACES_DIR)}` (1920x1080, 25 fps, 4.2 s), "
        f"{'paced in real time' if args.realtime else 'read as fast as possible'}, sampled at "
        f"{args.sample_fps:g} fps, batch size {args.batch_size}, onnxruntime threads "
        f"{args.threads or 'default'} per process.",
        "",
        "| mode | frames | faces | seconds | frames/s | faces/s | bottleneck | load before |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {r['mode']} | {r['frames']} | {r['faces']} | {r['seconds']:.1f} | {_num(r['frames_per_s'], '.1f')} | "
            f"{_num(r['faces_per_s'], '.1f')} | {r['bottleneck']} | {_num(r['loadavg_1m_before'], '.2f')} |"
        )
    lines += [
        "",
        "| mode | stage | inputs | busy s | ms per frame | ms per input | busy share of wall | "
        "latency p50 / p95 ms | histogram p50 / p95 ms | max lag |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        for name, s in r["stages"].items():
            share = None if s["utilisation"] is None else 100 * s["utilisation"]
            histogram = (f"{_ms(s['histogram_p50_s'])} / {_ms(s['histogram_p95_s'])}"
                         if "histogram_p50_s" in s else "-")
            lines.append(
                f"| {r['mode']} | {name} | {s['inputs']} | {s['busy_s']:.2f} | {_num(s['ms_per_frame'], '.1f')} | "
                f"{_num(s['ms_per_input'], '.1f')} | {_num(share, '.0f')}% | "
                f"{_ms(s['latency_p50_s'])} / {_ms(s['latency_p95_s'])} | {histogram} | "
                f"{_num(s.get('max_lag'), '.0f')} |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=["embedded", "services", "both"], default="both")
    parser.add_argument("--sample-fps", dest="sample_fps", type=float, default=25.0,
                        help="frames per second kept from the video (25: every frame)")
    parser.add_argument("--batch-size", dest="batch_size", type=int, default=8,
                        help="messages per stage batch (embedded batch size, OPENLFR_BATCH_SIZE)")
    parser.add_argument("--threads", type=int, default=0,
                        help="onnxruntime threads per process (OPENLFR_THREADS; 0: onnxruntime decides)")
    parser.add_argument("--realtime", action="store_true", help="pace the file at 25 fps like a camera")
    parser.add_argument("--video", type=Path, default=VIDEO, help="the input video")
    parser.add_argument("--keep", action="store_true", help="keep the services' logs and data")
    parser.add_argument("--out", type=Path, help="write the figures as JSON")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch-size must be at least 1, got {args.batch_size}")
    if not 0 <= args.threads <= 256:
        parser.error(f"--threads must be in [0, 256], got {args.threads}")
    if not 0 < args.sample_fps <= 60:
        parser.error(f"--sample-fps must be in (0, 60], got {args.sample_fps}")
    if not args.video.is_file():
        parser.error(f"--video {args.video} not found")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    # SIGTERM ends the run like Ctrl-C: the finally blocks stop the services and the broker.
    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    deadline = Deadline(time.monotonic() + HARD_TIMEOUT_S)
    meta = machine()
    watchlist = sample_watchlist()
    results: list[dict[str, Any]] = []
    try:
        if args.mode in ("embedded", "both"):
            results.append(run_embedded(args, watchlist))
            log(f"embedded done in {results[-1]['seconds']:.1f}s")
        if args.mode in ("services", "both"):
            results.append(run_services(args, watchlist, deadline))
            log(f"services done in {results[-1]['seconds']:.1f}s")
    except BenchError as exc:
        log(str(exc))
        return 1
    except KeyboardInterrupt:
        log("interrupted; everything started was stopped")
        return 130
    print()
    print(markdown(meta, results, args))
    if args.out:
        args.out.write_text(json.dumps({"meta": meta, "args": {k: str(v) for k, v in vars(args).items()},
                                        "results": results}, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
