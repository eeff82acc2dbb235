"""Camera-replay load generator: N cameras at F fps into the pipeline over a real broker.

Before any clock starts, a bounded pool of 1280x720 frames is composed per camera
(``openlfr.testing.loadgen``): people from the shared face set walk across three lanes of a
blurred real scene, 0-3 faces a frame, each person over several frames; a seeded set of people
is enrolled (their other photos walk by) and ``--enrolled-share`` of the walks are theirs, the
rest strangers. Then the frames are published through the project's ``Publisher`` as ``Frame``
messages at F fps per camera (cameras staggered), ``capture_ts`` the real publish time, looping
the pool; the ground truth of every published frame is kept.

With ``--start-stack`` it starts a broker (unless ``--bootstrap`` names one) and detect
(``--detect-replicas``), embed (``--embed-replicas``), match and alert as separate processes
(``openlfr.testing.stack.ServiceStack``; production frame-age limits and detect gating, alert cooldown 0 so every
appearance is its own expected alert), enrols the watchlist through the registry API and
authorises a deployment covering the cameras. With ``--bootstrap`` alone it drives a stack
already running on this machine (``--topic-prefix``, ``--registry-url``, tokens in
``OPENLFR_LOADGEN_ADMIN_TOKEN`` and ``OPENLFR_LOADGEN_AUTHORISER_TOKEN``, ``--metrics
stage=url`` for each service).

Measured: alerts are read from the alerts topic as they arrive (capture -> receipt latency, and
the alert's own ``alert_ts``); every service's ``/metrics`` is scraped each second (lag) and at
the end (inputs, busy time, drops); faces are counted on the embeddings topic after the run;
each service's whole-process CPU (user + system, every thread and child, from /proc) and the
broker's over the time the frames went through (start-up left out), against the loop's process
CPU per pasted face with ``--baseline``.
Correctness: every appearance of an enrolled person in at least ``min_votes`` frames gave
exactly one alert (two passes of one person on one camera within the tracker's
``track_max_gap_s`` may be one track, so one alert for them both is right, as is one each);
no alert for a stranger, a wrong person or nobody. ``--baseline`` then runs
the ``face_recognition`` loop (``baseline_face_recognition.py``) on the same frame pool.

Bounds: loopback only (broker and URLs on 127.0.0.1/localhost); ``--max-frames``; a hard
deadline (set-up + duration + drain + baseline budget) after which everything started is stopped.

Usage:
    .venv/bin/python load-tests/loadgen.py --start-stack --cameras 4 --fps 5 --duration-s 60 \\
        [--detect-replicas 2 --embed-replicas 2] [--baseline] [--json out.json]
Prints one Markdown row for docs/benchmarks.md (and the JSON with ``--json``).
"""

from __future__ import annotations

import _thread
import argparse
import contextlib
import heapq
import json
import logging
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import loadavg, machine  # noqa: E402
from bench_services import Scrape, topic_timestamps  # noqa: E402
from loadgen_stack import LoadgenError, Stack, attach_stack, stack_cpu_s, start_stack  # noqa: E402

from openlfr import paths  # noqa: E402
from openlfr.testing.loadgen import (  # noqa: E402
    Cast,
    GroundTruth,
    ObservedAlert,
    PoolFrame,
    blurred_background,
    check_alerts,
    choose_cast,
    compose_pool,
    latency_summary,
    locate_sprites,
    read_people,
)

logger = logging.getLogger("openlfr.loadgen")

FACES_DIR = paths.REPO_ROOT.parent / "shared" / "data" / "faces"
BACKGROUNDS = ("facenet_pytorch/examples/video.mp4", "crowd_scenes")
STAGES = ("detect", "embed", "match", "alert")
#: The detect service's own frame-age limit (``services/detect/main.py``; a test checks they agree).
DETECT_MAX_FRAME_AGE_S = 1.0
#: The frames topic's partitions: cameras are named so the first six land on six partitions.
FRAME_PARTITIONS = 6
#: Frames in all pools together at most (about 100 KB each in memory).
MAX_POOL_FRAMES = 2400
#: Drop reasons that are frames shed (``openlfr.pipeline.freshness``).
SHED_REASONS = frozenset({"stale", "catchup_sampled"})
SCRAPE_S = 1.0
SETTLE_S = 3.0


def _match_default(name: str) -> float:
    from openlfr.pipeline.match import MatchSettings

    return float(MatchSettings.model_fields[name].default)


MIN_VOTES = int(_match_default("min_votes"))
#: A track may span two passes of one person this far apart (the match stage's default).
TRACK_MAX_GAP_S = _match_default("track_max_gap_s")


def log(text: str) -> None:
    """Progress on stderr (the row goes to stdout)."""
    print(f"loadgen: {text}", file=sys.stderr, flush=True)


def camera_ids(n: int, *, partitions: int = FRAME_PARTITIONS) -> list[str]:
    """``n`` camera ids; the first ``partitions`` land on distinct partitions of the frames topic
    (librdkafka's default partitioner: CRC-32 of the key), so replicas share the work."""
    per_partition = -(-n // partitions)
    by_partition: dict[int, list[str]] = {p: [] for p in range(partitions)}
    k = 0
    while any(len(ids) < per_partition for ids in by_partition.values()):
        name = f"lg-cam-{k}"
        ids = by_partition[zlib.crc32(name.encode()) % partitions]
        if len(ids) < per_partition:
            ids.append(name)
        k += 1
    ordered = [by_partition[p][i] for i in range(per_partition) for p in range(partitions)]
    return ordered[:n]


# -- the scenario -----------------------------------------------------------------------------


@dataclass
class Scenario:
    """The cast, the watchlist folder and every camera's precomposed pool."""

    cast: Cast
    cameras: list[str]
    pools: dict[str, list[PoolFrame]]
    fps: float
    watchlist_dir: Path
    skipped_photos: list[str]
    sprites: int
    compose_s: float

    @property
    def slack_s(self) -> float:
        """How far outside an appearance's frames an alert's capture time may lie."""
        return 0.5 / self.fps

    def baseline_frames(self) -> list[tuple[str, float, int, PoolFrame]]:
        """One pass of every pool in capture order, cameras staggered as when published."""
        base = 1.0e9
        n = len(self.cameras)
        out = [(camera, base + (f.index + i / n) / self.fps, 0, f)
               for i, camera in enumerate(self.cameras) for f in self.pools[camera]]
        return sorted(out, key=lambda item: item[1])


def add_scenario_args(parser: argparse.ArgumentParser) -> None:
    """The arguments that decide the frames (shared with the baseline script)."""
    parser.add_argument("--cameras", type=int, default=1)
    parser.add_argument("--fps", type=float, default=5.0, help="frames per second per camera")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--enrolled-share", dest="enrolled_share", type=float, default=0.5,
                        help="share of walks by enrolled people (the rest are strangers)")
    parser.add_argument("--enrolled-people", dest="enrolled_people", type=int, default=6,
                        help="people put on the watchlist (among those with 2+ photos)")
    parser.add_argument("--walk-s", dest="walk_s", type=float, default=3.0, help="seconds a person takes to cross")
    parser.add_argument("--pool-s", dest="pool_s", type=float, default=30.0,
                        help="seconds of video composed per camera (looped; capped so all pools stay "
                        f"under {MAX_POOL_FRAMES} frames)")
    parser.add_argument("--work-dir", dest="work_dir", type=Path, help="where the watchlist folder and stack go")


def build_scenario(args: argparse.Namespace, work: Path | None = None) -> Scenario:
    """Cast, sprites (faces located by the project's analyzer) and every camera's pool."""
    import cv2
    import numpy as np

    from openlfr.config import ModelSettings
    from openlfr.vision.factory import build_analyzer
    from openlfr.vision.images import load_image

    if not 1 <= args.cameras <= 64:
        raise ValueError(f"--cameras must be in 1..64, got {args.cameras}")
    if not 0 < args.fps <= 30:
        raise ValueError(f"--fps must be in (0, 30], got {args.fps}")
    started = time.monotonic()
    work = work or args.work_dir or Path(tempfile.mkdtemp(prefix="openlfr-loadgen-"))
    cast = choose_cast(read_people(FACES_DIR), seed=args.seed, enrolled_people=args.enrolled_people)
    analyzer = build_analyzer(ModelSettings())

    def locate(rgb: np.ndarray) -> np.ndarray | None:
        faces = analyzer.analyze(rgb)
        if not len(faces):
            return None
        return faces.boxes[int(np.argmax(faces.boxes[:, 2] - faces.boxes[:, 0]))]

    sprites, skipped = locate_sprites(cast, locate, load_image)
    watchlist = work / "watchlist"
    shutil.rmtree(watchlist, ignore_errors=True)
    for subject, photos in cast.enrolled.items():
        (watchlist / subject).mkdir(parents=True)
        for photo in photos:
            shutil.copyfile(photo, watchlist / subject / photo.name)
    scenes: list[np.ndarray] = []
    cap = cv2.VideoCapture(str(FACES_DIR / BACKGROUNDS[0]))
    ok, bgr = cap.read()
    cap.release()
    if ok:
        scenes.append(blurred_background(bgr))
    for path in sorted((FACES_DIR / BACKGROUNDS[1]).glob("*")):
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is not None:
            scenes.append(blurred_background(img))
    if not scenes:
        scenes.append(np.full((720, 1280, 3), 90, np.uint8))
    cameras = camera_ids(args.cameras)
    pool_s = min(args.pool_s, MAX_POOL_FRAMES / (args.cameras * args.fps))
    if pool_s < args.walk_s * 2:
        raise ValueError(f"pool of {pool_s:.1f}s per camera is too short for {args.walk_s}s walks; fewer "
                         "cameras or a lower --fps")
    pools = {camera: compose_pool(camera=camera, background=scenes[i % len(scenes)], sprites=sprites,
                                  seed=args.seed, fps=args.fps, pool_s=pool_s, walk_s=args.walk_s,
                                  enrolled_share=args.enrolled_share)
             for i, camera in enumerate(cameras)}
    return Scenario(cast, cameras, pools, args.fps, watchlist, skipped, len(sprites),
                    round(time.monotonic() - started, 1))


# -- the run ----------------------------------------------------------------------------------


class AlertListener(threading.Thread):
    """Reads the alerts topic from its current end; keeps ``(receipt time, Alert)``."""

    def __init__(self, bootstrap: str, topic: str, *, deployment_id: str, cameras: set[str]) -> None:
        super().__init__(name="loadgen-alerts", daemon=True)
        from confluent_kafka import Consumer, TopicPartition

        self.deployment_id, self.cameras = deployment_id, cameras
        self.received: list[tuple[float, Any]] = []
        self.invalid = 0
        self.stop_event = threading.Event()
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"openlfr-loadgen-{uuid.uuid4().hex[:12]}",
                                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
        info = self.consumer.list_topics(topic, timeout=30).topics[topic]
        starts = []
        for p in info.partitions:
            _, high = self.consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            starts.append(TopicPartition(topic, p, high))
        self.consumer.assign(starts)

    def run(self) -> None:
        from openlfr.messages.codec import DecodeError, decode
        from openlfr.messages.models import Alert

        try:
            while not self.stop_event.is_set():
                for msg in self.consumer.consume(num_messages=100, timeout=0.2):
                    now = time.time()
                    if msg.error() is not None:
                        continue
                    try:
                        alert = decode(msg.value(), Alert)
                    except DecodeError:
                        self.invalid += 1
                        continue
                    if alert.deployment_id == self.deployment_id and alert.camera_id in self.cameras:
                        self.received.append((now, alert))
        finally:
            self.consumer.close()


class MetricsPoller(threading.Thread):
    """Scrapes every service each ``SCRAPE_S``: the highest lag per stage (replicas summed)."""

    def __init__(self, stack: Stack) -> None:
        super().__init__(name="loadgen-metrics", daemon=True)
        self.stack = stack
        self.max_lag: dict[str, float] = {}
        self.batches: dict[str, float] = {}
        self.last_change = time.time()
        self.lag_now: dict[str, float] = {}
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.wait(SCRAPE_S):
            for stage, scrapes in self.stack.scrape().items():
                lag = sum(s.total("openlfr_stage_consumer_lag_messages") for s in scrapes)
                batches = sum(s.total("openlfr_stage_batches_total", outcome="ok") for s in scrapes)
                self.lag_now[stage] = lag
                self.max_lag[stage] = max(self.max_lag.get(stage, 0.0), lag)
                if batches != self.batches.get(stage):
                    self.batches[stage], self.last_change = batches, time.time()


def publish(args: argparse.Namespace, scenario: Scenario, stack: Stack, truth: GroundTruth,
            deadline: float) -> dict[str, Any]:
    """Frames at ``--fps`` per camera for ``--duration-s`` (or ``--max-frames``), looping the pools."""
    from prometheus_client import CollectorRegistry

    from openlfr.kafka.runner import Publisher
    from openlfr.messages.models import Frame
    from openlfr.messages.topics import FRAMES
    from openlfr.pipeline.stage import Outgoing

    publisher = Publisher(bootstrap=stack.bootstrap, topic_names={FRAMES: stack.topic(FRAMES.name)},
                          registry=CollectorRegistry(), client_id="openlfr-loadgen")
    run_id = uuid.uuid4().hex[:8]
    n = len(scenario.cameras)
    period = 1.0 / args.fps
    total = min(int(round(args.duration_s * args.fps)) * n, args.max_frames)
    t0 = time.time() + 0.2
    due = [(t0 + i * period / n, i, 0) for i in range(n)]
    heapq.heapify(due)
    published = dropped = late = 0
    max_late = 0.0
    while published + dropped < total:
        when, cam, seq = heapq.heappop(due)
        if time.time() > deadline:
            raise LoadgenError("hard deadline reached while publishing")
        delay = when - time.time()
        if delay > 0:
            time.sleep(delay)
        camera = scenario.cameras[cam]
        pool = scenario.pools[camera]
        frame = pool[seq % len(pool)]
        now = time.time()
        lateness = now - when
        max_late = max(max_late, lateness)
        late += lateness > period
        message = Frame(camera_id=camera, frame_id=f"{camera}:{run_id}:{seq}", capture_ts=now,
                        trace_id=uuid.uuid4().hex, width=1280, height=720, jpeg=frame.jpeg, ingest_ts=time.time())
        if publisher.publish(Outgoing(topic=FRAMES, key=camera, message=message)):
            published += 1
            truth.add_frame(camera, now, frame.faces, pass_no=seq // len(pool))
        else:
            dropped += 1
        heapq.heappush(due, (when + period, cam, seq + 1))
    seconds = time.time() - t0
    left = publisher.flush(30.0)
    return {"frames_planned": total, "published": published, "dropped_queue_full": dropped,
            "unacknowledged": left, "failed": publisher.failed, "seconds": round(seconds, 2),
            "frames_per_s": published / seconds if seconds > 0 else None, "late_frames": late,
            "max_late_s": round(max_late, 4), "start_ts": t0, "end_ts": t0 + seconds}


def stage_figures(final: dict[str, list[Scrape]], poller: MetricsPoller, wall_s: float,
                  replicas: dict[str, int]) -> dict[str, dict[str, Any]]:
    """Per stage, replicas summed: inputs, busy time, busy share per replica, drops, lag."""
    out: dict[str, dict[str, Any]] = {}
    for stage in STAGES:
        scrapes = final.get(stage, [])
        if not scrapes:
            continue
        n = max(replicas.get(stage, len(scrapes)), 1)
        busy = sum(s.total("openlfr_stage_handle_seconds_sum", stage=stage) for s in scrapes)
        inputs = sum(s.total("openlfr_stage_messages_in_total", stage=stage) for s in scrapes)
        dropped: dict[str, int] = {}
        for s in scrapes:
            for (name, labels), value in s.samples.items():
                lab = dict(labels)
                if name == "openlfr_stage_messages_dropped_total" and lab.get("stage") == stage:
                    dropped[lab["reason"]] = dropped.get(lab["reason"], 0) + int(value)
        out[stage] = {
            "replicas": n,
            "inputs": int(inputs),
            "outputs": int(sum(s.total("openlfr_stage_messages_out_total", stage=stage) for s in scrapes)),
            "per_replica_inputs": [int(s.total("openlfr_stage_messages_in_total", stage=stage)) for s in scrapes],
            "busy_s": round(busy, 3),
            "ms_per_input": 1e3 * busy / inputs if inputs else None,
            "busy_share": busy / n / wall_s if wall_s > 0 else None,
            "dropped": dropped,
            "dead_lettered": int(sum(s.total("openlfr_stage_messages_dead_lettered_total", stage=stage)
                                     for s in scrapes)),
            "retries": int(sum(s.total("openlfr_stage_backend_retries_total", stage=stage) for s in scrapes)),
            "max_lag": poller.max_lag.get(stage),
            # How many inputs each handle call took together: detect runs the crops of all of a
            # batch's frames, of every camera, through the model in one call (per model).
            "mean_batch": _ratio(sum(s.total("openlfr_stage_batch_size_messages_sum", stage=stage) for s in scrapes),
                                 sum(s.total("openlfr_stage_batch_size_messages_count", stage=stage) for s in scrapes)),
        }
        if stage == "detect":
            run = sum(s.total("openlfr_detect_crops_total", kind="run") for s in scrapes)
            out[stage]["crops_per_frame"] = _ratio(run, inputs)
            out[stage]["crops_ungated_per_frame"] = _ratio(
                sum(s.total("openlfr_detect_crops_total", kind="ungated") for s in scrapes), inputs)
    return out


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def count_faces(stack: Stack, cameras: set[str]) -> tuple[int, int, float | None]:
    """Faces and messages on the embeddings topic from the run's cameras; the last record time."""
    from openlfr.messages.topics import EMBEDDINGS

    faces = messages = 0
    last: float | None = None
    for ts, value in topic_timestamps(stack.bootstrap, stack.topic(EMBEDDINGS.name)):
        doc = json.loads(value)
        if doc.get("camera_id") in cameras:
            messages += 1
            faces += len(doc.get("faces", ()))
            last = ts if last is None else max(last, ts)
    return faces, messages, last


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Scenario, stack, publish, drain, score; the figures."""
    from openlfr.kafka.admin import ensure_topics
    from openlfr.messages.topics import ALERTS, FRAMES

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="openlfr-loadgen-"))
    work.mkdir(parents=True, exist_ok=True)
    scenario = build_scenario(args, work)
    pool_frames = sum(len(p) for p in scenario.pools.values())
    log(f"composed {pool_frames} frames for {len(scenario.cameras)} cameras from {scenario.sprites} photos "
        f"({len(scenario.cast.enrolled)} people enrolled) in {scenario.compose_s}s")
    deployment_id = f"loadgen-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    stack = (start_stack if args.start_stack else attach_stack)(args, scenario, work, deployment_id)
    log(f"stack ready in {time.monotonic() - started:.1f}s (bootstrap {stack.bootstrap}, prefix {stack.prefix})")
    listener: AlertListener | None = None
    poller = MetricsPoller(stack)
    try:
        ensure_topics(stack.bootstrap, {stack.topic(FRAMES.name): FRAMES.partitions,
                                        stack.topic(ALERTS.name): ALERTS.partitions}, timeout_s=30)
        listener = AlertListener(stack.bootstrap, stack.topic(ALERTS.name), deployment_id=deployment_id,
                                 cameras=set(scenario.cameras))
        listener.start()
        poller.start()
        load = loadavg()
        truth = GroundTruth()
        cpu_before = stack_cpu_s(stack)
        deadline = time.time() + args.duration_s + args.drain_s + 30
        generator = publish(args, scenario, stack, truth, deadline)
        log(f"published {generator['published']} frames in {generator['seconds']}s; draining")
        drain_until = time.time() + args.drain_s
        drained = False
        while time.time() < drain_until:
            stack.check_alive()
            time.sleep(0.5)
            idle = time.time() - poller.last_change >= SETTLE_S
            alerts_idle = not listener.received or time.time() - listener.received[-1][0] >= SETTLE_S
            if poller.lag_now and all(v == 0 for v in poller.lag_now.values()) and idle and alerts_idle:
                drained = True
                break
        final = stack.scrape()
        cpu_after = stack_cpu_s(stack)
        end = time.time()
        listener.stop_event.set()
        poller.stop_event.set()
        listener.join(5)
        faces, embeddings_messages, last_embeddings = count_faces(stack, set(scenario.cameras))
    finally:
        if listener is not None:
            listener.stop_event.set()
        poller.stop_event.set()
        codes = stack.close()
    received = list(listener.received)
    observed = [ObservedAlert(a.camera_id, a.subject_id, a.capture_ts, a.alert_id) for _, a in received]
    correctness = check_alerts(truth, observed, min_frames=MIN_VOTES, slack_s=scenario.slack_s,
                               rejoin_gap_s=TRACK_MAX_GAP_S)
    first_seen = {}
    for a in truth.appearances.values():
        first_seen.setdefault((a.camera_id, a.person_id), []).append(a)
    to_first = []
    for now, alert in received:
        mine = [a for a in first_seen.get((alert.camera_id, alert.subject_id), [])
                if a.first_ts - scenario.slack_s <= alert.capture_ts <= a.last_ts + scenario.slack_s]
        if mine:
            to_first.append(now - min(a.first_ts for a in mine))
    active_s = (max(last_embeddings or generator["end_ts"], generator["end_ts"]) - generator["start_ts"])
    stages = stage_figures(final, poller, end - generator["start_ts"],
                           {"detect": args.detect_replicas, "embed": args.embed_replicas})
    # Shed for freshness only: embed's "skipped" (every face of a frame left out by the embed
    # skip, a decision that cannot change) and detect's "no_face" are not frames lost.
    frames_dropped = generator["dropped_queue_full"] + sum(
        n for s in ("detect", "embed") for reason, n in stages.get(s, {}).get("dropped", {}).items()
        if reason in SHED_REASONS)
    busy_all = sum(s["busy_s"] for s in stages.values())
    # Whole processes while the frames went through (start-up left out: a service starts once).
    process_cpu = {k: round(cpu_after[k] - cpu_before.get(k, 0.0), 2) for k in cpu_after}
    services_cpu = sum(v for k, v in process_cpu.items() if k != "broker")
    result: dict[str, Any] = {
        "loadavg_1m_before": load,
        "scenario": {"cameras": scenario.cameras, "fps": args.fps, "duration_s": args.duration_s,
                     "seed": args.seed, "enrolled_share": args.enrolled_share,
                     "enrolled_people": sorted(scenario.cast.enrolled), "walk_photos": scenario.sprites,
                     "skipped_photos": scenario.skipped_photos, "pool_frames": pool_frames,
                     "compose_s": scenario.compose_s, "min_votes": MIN_VOTES,
                     "detect_replicas": args.detect_replicas, "embed_replicas": args.embed_replicas,
                     "detect_gating": args.detect_gating, "detect_max_frame_age_s": args.detect_max_frame_age_s,
                     "batch_size": args.batch_size, "max_frame_age_s": args.max_frame_age_s},
        "generator": generator,
        "truth": {"frames": truth.frames, "faces": truth.faces, "appearances": len(truth.appearances)},
        "drained": drained,
        "faces_embedded": faces,
        "embeddings_messages": embeddings_messages,
        "active_s": round(active_s, 2),
        "faces_per_s": faces / active_s if active_s > 0 else None,
        # The pasted faces (the same in both loops; the detector also finds blurred background faces).
        "truth_faces_per_s": truth.faces / active_s if active_s > 0 else None,
        "busy_ms_per_face_all_stages": 1e3 * busy_all / faces if faces else None,
        "process_cpu_s": process_cpu,
        "cpu_ms_per_truth_face": 1e3 * services_cpu / truth.faces if truth.faces else None,
        "cpu_ms_per_truth_face_with_broker": (1e3 * (services_cpu + process_cpu.get("broker", 0.0)) / truth.faces
                                              if truth.faces else None),
        "frames_dropped": frames_dropped,
        "latency_capture_to_alert": latency_summary([now - a.capture_ts for now, a in received]),
        "latency_capture_to_alert_ts": latency_summary([a.alert_ts - a.capture_ts for _, a in received]),
        "latency_first_seen_to_alert": latency_summary(to_first),
        "stages": stages,
        "bottleneck": max(stages, key=lambda s: stages[s]["busy_share"] or 0.0) if stages else None,
        "max_lag_stage": max(poller.max_lag, key=lambda s: poller.max_lag[s]) if poller.max_lag else None,
        "correctness": correctness.summary(),
        "invalid_alert_records": listener.invalid,
        "exit_codes": codes,
    }
    if args.baseline:
        from baseline_face_recognition import run_baseline

        log(f"baseline: face_recognition loop on the same frames (budget {args.baseline_budget_s:.0f}s)")
        base = run_baseline(scenario.baseline_frames(), scenario.cast.enrolled, budget_s=args.baseline_budget_s,
                            min_frames=MIN_VOTES, slack_s=scenario.slack_s)
        result["baseline"] = base
        result["vs_baseline"] = compare(result, base)
    if not args.keep and not args.work_dir:
        shutil.rmtree(work, ignore_errors=True)
    return result


def compare(result: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """The targets: faces/s ratio (achieved and by busy time per face) and accuracy side by side."""
    pipe, ref = result["correctness"], base["correctness"]

    def rate(c: dict[str, Any]) -> float | None:
        return c["unexpected"] / c["alerts"] if c["alerts"] else 0.0

    ratio = (result["truth_faces_per_s"] / base["truth_faces_per_s"]
             if result["truth_faces_per_s"] and base["truth_faces_per_s"] else None)
    cost = (base["ms_per_face"] / result["busy_ms_per_face_all_stages"]
            if base["ms_per_face"] and result["busy_ms_per_face_all_stages"] else None)
    return {
        # Achieved rates: the pipeline's is bounded by the offered load (cameras x fps).
        "faces_per_s_ratio": ratio,
        # Processing time per face, all stages summed vs the loop: capacity per CPU-second.
        "busy_time_per_face_ratio": cost,
        # Whole-process CPU per pasted face: the services (and with the broker) vs the loop.
        "process_cpu_per_truth_face_ratio": (base["cpu_ms_per_truth_face"] / result["cpu_ms_per_truth_face"]
                                             if base.get("cpu_ms_per_truth_face") and result["cpu_ms_per_truth_face"]
                                             else None),
        "process_cpu_per_truth_face_ratio_with_broker": (
            base["cpu_ms_per_truth_face"] / result["cpu_ms_per_truth_face_with_broker"]
            if base.get("cpu_ms_per_truth_face") and result["cpu_ms_per_truth_face_with_broker"] else None),
        "target_ratio": 20.0,
        "recall": {"pipeline": pipe["recall"], "baseline": ref["recall"]},
        "wrong_alert_rate": {"pipeline": rate(pipe), "baseline": rate(ref)},
        "accuracy_no_worse": (pipe["recall"] or 0) >= (ref["recall"] or 0) and (rate(pipe) or 0) <= (rate(ref) or 0),
    }


def _num(value: float | None, fmt: str, scale: float = 1.0) -> str:
    return "-" if value is None else format(value * scale, fmt)


def markdown_row(r: dict[str, Any]) -> str:
    """One row of the load-test table in docs/benchmarks.md."""
    s, c, lat = r["scenario"], r["correctness"], r["latency_capture_to_alert"]
    base = r.get("baseline")
    vs = r.get("vs_baseline", {})
    return (
        "| cameras | fps | detect x | embed x | frames | faces/s | p50 / p95 / p99 ms | dropped | max lag (stage) | "
        "bottleneck (busy) | alerts ok / expected, dup, wrong | face_recognition faces/s (recall, wrong) | ratio | "
        "detect gating | process CPU ms per pasted face: services (+ broker) / loop |\n"
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- | --- | ---: | --- | --- |\n"
        f"| {len(s['cameras'])} | {s['fps']:g} | {s['detect_replicas']} | {s['embed_replicas']} | "
        f"{r['generator']['published']} | {_num(r['truth_faces_per_s'], '.1f')} | "
        f"{_num(lat['p50_s'], '.0f', 1e3)} / {_num(lat['p95_s'], '.0f', 1e3)} / {_num(lat['p99_s'], '.0f', 1e3)} | "
        f"{r['frames_dropped']} | {_num(max(r['stages'][x]['max_lag'] or 0 for x in r['stages']) if r['stages'] else None, '.0f')}"
        f" ({r['max_lag_stage']}) | {r['bottleneck']} "
        f"({_num(r['stages'][r['bottleneck']]['busy_share'] if r['bottleneck'] else None, '.0%')}) | "
        f"{c['matched']} / {c['expected']}, {c['duplicates']}, {c['unexpected']} | "
        + (f"{_num(base['truth_faces_per_s'], '.2f')} ({_num(base['correctness']['recall'], '.2f')}, "
           f"{base['correctness']['unexpected']}) | {_num(vs.get('faces_per_s_ratio'), '.1f')}x |" if base else "- | - |")
        + f" {s.get('detect_gating', 'off')} | "
        + f"{_num(r.get('cpu_ms_per_truth_face'), '.1f')} ({_num(r.get('cpu_ms_per_truth_face_with_broker'), '.1f')})"
        + (f" / {_num(base.get('cpu_ms_per_truth_face'), '.1f')}: "
           f"{_num(vs.get('process_cpu_per_truth_face_ratio'), '.1f')}x "
           f"({_num(vs.get('process_cpu_per_truth_face_ratio_with_broker'), '.1f')}x)" if base else "")
        + " |"
    )


def build_parser() -> argparse.ArgumentParser:
    """The command line (scenario, stack, bounds, output)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_scenario_args(parser)
    parser.add_argument("--duration-s", dest="duration_s", type=float, default=60.0)
    parser.add_argument("--max-frames", dest="max_frames", type=int, default=20_000,
                        help="frames published at most, all cameras together")
    parser.add_argument("--drain-s", dest="drain_s", type=float, default=30.0,
                        help="longest wait after the last frame for the stages to catch up")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--start-stack", dest="start_stack", action="store_true",
                       help="start the services (and a broker unless --bootstrap is given too)")
    where.add_argument("--attach", action="store_true", help="use a stack already running (needs --bootstrap)")
    parser.add_argument("--bootstrap", help="an existing broker on this machine (host:port)")
    parser.add_argument("--topic-prefix", dest="topic_prefix", default="", help="the running stack's topic prefix")
    parser.add_argument("--registry-url", dest="registry_url", help="the running match service (registry API)")
    parser.add_argument("--metrics", action="append", default=[], help="stage=http://127.0.0.1:PORT/metrics")
    parser.add_argument("--detect-replicas", dest="detect_replicas", type=int, default=1)
    parser.add_argument("--embed-replicas", dest="embed_replicas", type=int, default=1)
    parser.add_argument("--batch-size", dest="batch_size", type=int, default=8)
    parser.add_argument("--detect-gating", dest="detect_gating", choices=("off", "motion", "pyramid"),
                        default="pyramid", help="the detect services' OPENLFR_DETECT_GATING (with --start-stack; "
                        "pyramid is the service's default)")
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime threads per service (0: default)")
    parser.add_argument("--detect-max-frame-age-s", dest="detect_max_frame_age_s", type=float,
                        default=DETECT_MAX_FRAME_AGE_S,
                        help="detect's own frame-age limit (the detect service's default, 1 s): frames that "
                        "waited longer for detect are skipped, so an overloaded detect sheds frames while "
                        "they are still worth detecting")
    parser.add_argument("--max-frame-age-s", dest="max_frame_age_s", type=float, default=5.0,
                        help="the other stages' frame-age limit (production default 5)")
    parser.add_argument("--baseline", action="store_true", help="run the face_recognition loop on the same frames")
    parser.add_argument("--baseline-budget-s", dest="baseline_budget_s", type=float, default=60.0)
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, data)")
    parser.add_argument("--hard-timeout-s", dest="hard_timeout_s", type=float, default=None,
                        help="the whole run ends by then (default: 300 + duration + drain + baseline budget)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.attach and not args.bootstrap:
        parser.error("--attach needs --bootstrap")
    if not 1 <= args.detect_replicas <= FRAME_PARTITIONS or not 1 <= args.embed_replicas <= FRAME_PARTITIONS:
        parser.error(f"replicas must be in 1..{FRAME_PARTITIONS}")
    if not 0 < args.duration_s <= 3600 or args.max_frames < 1:
        parser.error("--duration-s must be in (0, 3600] and --max-frames >= 1")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    hard = args.hard_timeout_s or (300 + args.duration_s + args.drain_s + (args.baseline_budget_s if args.baseline else 0))
    # The hard bound: Ctrl-C in the main thread, so every finally block stops what it started.
    timer = threading.Timer(hard, _thread.interrupt_main)
    timer.daemon = True
    timer.start()

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    meta = machine()
    try:
        result = run(args)
    except (LoadgenError, ValueError) as exc:
        log(str(exc))
        return 1
    except KeyboardInterrupt:
        log(f"interrupted (hard timeout {hard:.0f}s or a signal); everything started was stopped")
        return 130
    finally:
        timer.cancel()
    result["meta"] = meta
    result["args"] = {k: str(v) for k, v in vars(args).items()}
    print(markdown_row(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
    with contextlib.suppress(KeyError):
        log(f"correctness ok={result['correctness']['ok']} latency p99="
            f"{result['latency_capture_to_alert']['p99_s']} dropped={result['frames_dropped']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
