"""Throughput and latency of the whole pipeline: the embedded mode and the services over Kafka.

Input: the shared 1080p pedestrian video (``facenet_pytorch/examples/video.mp4``, 4.2 s,
25 fps, 1920x1080), read as fast as it can be processed, every frame kept unless
``--sample-fps`` says otherwise. Watchlist: the built sample's (``openlfr.pipeline.samples``);
nobody in the video is on it, so every face goes through detect, embed and a Qdrant search.

* ``embedded``: ``EmbeddedPipeline`` wired as ``openlfr run`` wires it (local onnxruntime,
  Qdrant in memory). Each stage's ``handle`` is timed; per-stage latency is capture time to
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
import contextlib
import json
import logging
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType
from typing import Any

from openlfr import paths

logger = logging.getLogger("openlfr.bench_pipeline")

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
    from openlfr.config import ModelSettings
    from openlfr.models.build import model_version
    from openlfr.models.specs import BLAZEFACE_FULL, BLAZEFACE_SHORT, EMBEDDER
    from openlfr.messages.signing import MatchSigner
    from openlfr.pipeline.alert import AlertSettings, AlertStage
    from openlfr.pipeline.detect import DetectStage
    from openlfr.pipeline.embed import EmbedStage
    from openlfr.pipeline.embedded import EmbeddedPipeline
    from openlfr.pipeline.ingest import open_source
    from openlfr.pipeline.match import MatchSettings, MatchStage
    from openlfr.pipeline.match_trust import StaticAuthority
    from openlfr.vision.factory import build_analyzer
    from openlfr.pipeline.deployments import ActiveDeployment, StaticGate
    from openlfr.watchlist.loader import enroll_folder
    from openlfr.watchlist.qdrant_store import QdrantStore

    settings = ModelSettings(threads=args.threads)
    analyzer = build_analyzer(settings)
    store = QdrantStore(location=":memory:")
    report = enroll_folder(watchlist, analyzer=analyzer, store=store, watchlist_id="default")
    deployment = ActiveDeployment(deployment_id="bench", watchlist_ids=("default",), threshold=0.705,
                                  snapshot_ts=time.time())
    signer = MatchSigner.ephemeral()
    authority = StaticAuthority.for_run(deployment, camera_ids=["bench"],
                                        subjects={s: "default" for s in report.enrolled})
    detector_spec = BLAZEFACE_FULL if settings.detector == "full" else BLAZEFACE_SHORT
    pipeline = EmbeddedPipeline(
        detect=DetectStage(analyzer, detector_model=model_version(settings.model_dir, detector_spec.name),
                           max_frame_age_s=None),
        embed=EmbedStage(analyzer.embedder, embedder_model=model_version(settings.model_dir, EMBEDDER.name),
                         max_frame_age_s=None),
        # The file is read faster than real time: capture times run ahead of the clock.
        match=MatchStage(MatchSettings(), store=store, gate=StaticGate(deployment), signer=signer,
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


# -- services ---------------------------------------------------------------------------------


@dataclass
class Service:
    """One service process with its HTTP port and log file."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def get(self, path: str, *, timeout_s: float = 2.0) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=timeout_s) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def tail(self, chars: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-chars:]
        return "(no log)"


@dataclass(slots=True)
class Scrape:
    """The samples of one ``/metrics`` page: ``(name, labels) -> value``."""

    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]

    @classmethod
    def parse(cls, text: str) -> Scrape:
        from prometheus_client.parser import text_string_to_metric_families

        samples = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return cls(samples)

    def total(self, name: str, **labels: str) -> float:
        """Sum of every sample of ``name`` whose labels include ``labels``."""
        want = set(labels.items())
        return sum(v for (n, lab), v in self.samples.items() if n == name and want <= set(lab))

    def has(self, name: str, **labels: str) -> bool:
        want = set(labels.items())
        return any(n == name and want <= set(lab) for (n, lab) in self.samples)

    def buckets(self, name: str, **labels: str) -> list[tuple[float, float]]:
        """Cumulative ``(le, count)`` of a histogram, summed over the other labels."""
        want = set(labels.items())
        out: dict[float, float] = {}
        for (n, lab), v in self.samples.items():
            if n == f"{name}_bucket" and want <= set(lab):
                le = float(dict(lab)["le"])
                out[le] = out.get(le, 0.0) + v
        return sorted(out.items())


class ServiceSet:
    """The broker, the four stage services and the ingest, all stopped by :meth:`close`."""

    def __init__(self, work: Path, *, batch_size: int, threads: int, deadline: Deadline) -> None:
        from openlfr.testing.kafka_broker import KafkaBroker

        self.work = work
        self.deadline = deadline
        self.broker = KafkaBroker(work_dir=work / "kafka")
        self.prefix = f"bench-{uuid.uuid4().hex[:8]}."
        self.batch_size = batch_size
        self.threads = threads
        self.services: dict[str, Service] = {}
        self.env: dict[str, str] = {}

    def start_broker(self) -> None:
        from openlfr.testing.stack import ServiceStack

        self.broker.start()
        # The stack's environment: API tokens, registry and review databases, audit log.
        self.stack = ServiceStack(self.broker.bootstrap, self.work / "stack")
        self.env = {
            **self.stack.env,
            "OPENLFR_TOPIC_PREFIX": self.prefix,
            "OPENLFR_BATCH_SIZE": str(self.batch_size),
            "OPENLFR_THREADS": str(self.threads),
            "OPENLFR_MAX_FRAME_AGE_S": "3600",  # the file is fed faster than real time
            "OPENLFR_MAX_CLOCK_SKEW_S": "86400",  # so its capture times run ahead of the clock
            "OPENLFR_HTTP_HOST": "127.0.0.1",
        }

    def enrol_and_deploy(self, watchlist: Path, camera: str) -> None:
        """Enrol the watchlist through the match service's API and authorise ``camera``."""
        from openlfr.testing.stack import ServiceProcess

        match = self.services["match"]
        self.stack.services["match"] = ServiceProcess("match", match.proc, match.port, match.log)
        self.stack.enrol_and_deploy(watchlist, cameras=[camera], deployment_id="bench")

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "openlfr.cli", *args], env=self.env, capture_output=True,
                              text=True, timeout=max(self.deadline.left(), 1.0), check=False)

    def start(self, name: str, **env: str) -> Service:
        from openlfr.subprocesses import free_port

        port = free_port("127.0.0.1")
        log = self.work / f"{name}.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "openlfr.cli", "service", name],
            env={**self.env, "OPENLFR_HTTP_PORT": str(port), **env},
            stdout=log.open("wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        service = Service(name, proc, port, log)
        self.services[name] = service
        return service

    def wait_ready(self, service: Service) -> tuple[float, str]:
        """Wait until the service is ready; the seconds it took and how it was seen.

        Ready is ``/readyz`` answering 200 or, when ``/readyz`` gives no answer within
        ``READYZ_TIMEOUT_S``, the broker's view of the same thing: the stage's consumer group
        is stable and its member holds partitions. (With confluent-kafka 2.16.1 the
        ``/readyz`` broker check, ``list_topics`` on the consumer that the loop thread is
        polling, can wait minutes for its turn.)
        """
        started = time.monotonic()
        while True:
            if service.proc.poll() is not None:
                raise BenchError(f"{service.name} exited {service.proc.returncode}:\n{service.tail()}")
            try:
                if service.get("/readyz", timeout_s=READYZ_TIMEOUT_S)[0] == 200:
                    return time.monotonic() - started, "readyz"
            except OSError as exc:  # not listening yet, or no answer in time
                timed_out = isinstance(exc, TimeoutError) or isinstance(getattr(exc, "reason", None), TimeoutError)
                if timed_out and self._group_assigned(service.name):
                    return time.monotonic() - started, "consumer group stable (/readyz gave no answer)"
            if self.deadline.left() <= 0:
                raise BenchError(f"{service.name} not ready before the hard timeout:\n{service.tail()}")
            time.sleep(0.5)

    def _group_assigned(self, stage: str) -> bool:
        """Whether the stage's consumer group (``openlfr-<stage>``) is stable with partitions."""
        from confluent_kafka import ConsumerGroupState, KafkaException
        from confluent_kafka.admin import AdminClient

        group = f"openlfr-{stage}"
        admin = AdminClient({"bootstrap.servers": self.broker.bootstrap,
                             "logger": logging.getLogger("openlfr.kafka.librdkafka")})
        try:
            description = admin.describe_consumer_groups([group], request_timeout=5)[group].result(timeout=10)
        except (KafkaException, TimeoutError) as exc:
            logger.debug('group="%s" not described error="%s"', group, exc)
            return False
        return description.state == ConsumerGroupState.STABLE and any(
            member.assignment and member.assignment.topic_partitions for member in description.members
        )

    def wait_all_ready(self, names: Sequence[str]) -> dict[str, tuple[float, str]]:
        """:meth:`wait_ready` for several services at once."""
        with ThreadPoolExecutor(max_workers=len(names)) as pool:
            futures = {name: pool.submit(self.wait_ready, self.services[name]) for name in names}
            return {name: (round(f.result()[0], 1), f.result()[1]) for name, f in futures.items()}

    def scrape(self, name: str) -> Scrape:
        status, text = self.services[name].get("/metrics", timeout_s=5.0)
        if status != 200:
            raise BenchError(f"{name} /metrics answered {status}")
        return Scrape.parse(text)

    def close(self) -> dict[str, int | None]:
        """SIGTERM every service still running, wait, then stop the broker."""
        codes: dict[str, int | None] = {}
        for service in self.services.values():
            if service.proc.poll() is None:
                service.proc.send_signal(signal.SIGTERM)
        for name, service in self.services.items():
            try:
                codes[name] = service.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                service.proc.kill()
                service.proc.wait()
                codes[name] = None
        self.broker.stop()
        return codes


def topic_timestamps(bootstrap: str, topic: str, *, timeout_s: float = 60.0) -> list[tuple[float, bytes]]:
    """``(record timestamp in s, value)`` of every record of ``topic`` up to its current end."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"openlfr-bench-{uuid.uuid4().hex[:12]}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        info = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if info is None or info.error is not None:
            return []
        ends, starts = {}, []
        for p in info.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)
            if high > low:
                ends[p] = high
                starts.append(TopicPartition(topic, p, low))
        consumer.assign(starts)
        out: list[tuple[float, bytes]] = []
        deadline = time.monotonic() + timeout_s
        while ends and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=500, timeout=0.5):
                if msg.error() is not None or msg.partition() not in ends:
                    continue
                out.append((msg.timestamp()[1] / 1e3, msg.value() or b""))
                if msg.offset() >= ends[msg.partition()] - 1:
                    del ends[msg.partition()]
        if ends:
            raise BenchError(f"reading {topic} did not reach its end in {timeout_s}s: {ends}")
        return out
    finally:
        consumer.close()


def run_services(args: argparse.Namespace, watchlist: Path, deadline: Deadline) -> dict[str, Any]:
    """The four stage services and the ingest over a real broker; the figures."""
    from openlfr.messages.codec import decode
    from openlfr.messages.models import Embeddings, Faces, Match
    from openlfr.messages.topics import EMBEDDINGS, FACES, FRAMES, MATCHES

    work = Path(tempfile.mkdtemp(prefix="openlfr-bench-"))
    services = ServiceSet(work, batch_size=args.batch_size, threads=args.threads, deadline=deadline)
    ok = False
    try:
        t0 = time.monotonic()
        services.start_broker()
        log(f"broker {services.broker.bootstrap} up in {time.monotonic() - t0:.1f}s")
        for name in STAGES:
            services.start(name)
        waits = services.wait_all_ready(STAGES)
        services.enrol_and_deploy(watchlist, "bench")
        log(f"enrolled and deployed at {time.monotonic() - t0:.1f}s")
        log(f"ready at {time.monotonic() - t0:.1f}s (/readyz took {waits}); starting ingest")
        load = loadavg()
        ingest = services.start(
            "ingest", OPENLFR_CAMERAS=f"bench={args.video}", OPENLFR_SAMPLE_FPS=str(args.sample_fps),
            OPENLFR_FILE_MODE="realtime" if args.realtime else "batch",
        )
        started = time.time()
        last_change = {name: started for name in ("detect", "embed", "match")}
        done_batches = {name: 0.0 for name in last_change}
        max_lag = {name: 0.0 for name in last_change}
        frames_published: int | None = None
        while True:
            deadline.check("waiting for the stages to drain")
            time.sleep(POLL_S)
            now = time.time()
            scrapes = {name: services.scrape(name) for name in last_change}
            for name, scrape in scrapes.items():
                batches = scrape.total("openlfr_stage_batches_total", outcome="ok")
                if batches != done_batches[name]:
                    done_batches[name], last_change[name] = batches, now
                max_lag[name] = max(max_lag[name], scrape.total("openlfr_stage_consumer_lag_messages"))
            for name in STAGES:
                proc = services.services[name].proc
                if proc.poll() is not None:
                    raise BenchError(f"{name} exited {proc.returncode}:\n{services.services[name].tail()}")
            if ingest.proc.poll() is None:
                continue
            if ingest.proc.returncode != 0:
                raise BenchError(f"ingest exited {ingest.proc.returncode}:\n{ingest.tail()}")
            if frames_published is None:
                frames_published = len(topic_timestamps(services.broker.bootstrap, services.prefix + FRAMES.name))
            detect_in = scrapes["detect"].total("openlfr_stage_messages_in_total")
            lag_known = all(scrapes[n].has("openlfr_stage_consumer_lag_messages") for n in scrapes)
            lag = sum(scrapes[n].total("openlfr_stage_consumer_lag_messages") for n in scrapes)
            idle = now - max(last_change.values()) >= SETTLE_S
            if detect_in >= frames_published and lag_known and lag == 0 and idle:
                break
        final = {name: services.scrape(name) for name in STAGES}
        log(f"drained after {time.time() - started:.1f}s")
        bootstrap = services.broker.bootstrap
        frames = topic_timestamps(bootstrap, services.prefix + FRAMES.name)
        outputs = {name: topic_timestamps(bootstrap, services.prefix + spec.name)
                   for name, spec in (("detect", FACES), ("embed", EMBEDDINGS), ("match", MATCHES))}
        if not frames:
            raise BenchError(f"ingest published no frame:\n{ingest.tail()}")
        embeddings = outputs["embed"]
        faces = sum(len(decode(value, Embeddings).faces) for _, value in embeddings)
        # Exact per-record latency: the record's timestamp (set when the stage produced it)
        # minus the capture time it carries.
        exact = {name: [ts - decode(value, model).capture_ts for ts, value in records]
                 for (name, records), model in zip(outputs.items(), (Faces, Embeddings, Match), strict=True)}
        first_publish = min(ts for ts, _ in frames)
        last_publish = max(ts for ts, _ in frames)
        last_embeddings = max((ts for ts, _ in embeddings), default=first_publish)
        # The end: the last batch match finished (seen by polling), never before the last
        # embeddings record was written.
        end = max(last_change["match"], last_embeddings)
        seconds = end - first_publish
        stages: dict[str, dict[str, Any]] = {}
        for name in STAGES:
            s = final[name]
            messages = s.total("openlfr_stage_messages_in_total", stage=name)
            busy = s.total("openlfr_stage_handle_seconds_sum", stage=name)
            latency = s.buckets("openlfr_stage_latency_seconds", stage=name)
            stages[name] = {
                "inputs": int(messages),
                "outputs": int(s.total("openlfr_stage_messages_out_total", stage=name)),
                "batches": int(s.total("openlfr_stage_handle_seconds_count", stage=name)),
                "busy_s": round(busy, 3),
                "ms_per_frame": 1e3 * busy / len(frames) if frames else None,
                "ms_per_input": 1e3 * busy / messages if messages else None,
                "utilisation": busy / seconds if seconds > 0 else None,
                "latency_p50_s": percentile(exact.get(name, []), 0.50),
                "latency_p95_s": percentile(exact.get(name, []), 0.95),
                "latency_source": "record timestamps",
                "histogram_p50_s": histogram_quantile(latency, 0.50),
                "histogram_p95_s": histogram_quantile(latency, 0.95),
                "max_lag": max_lag.get(name),
                "dead_lettered": int(s.total("openlfr_stage_messages_dead_lettered_total", stage=name)),
                "dropped": {dict(lab)["reason"]: int(v) for (n, lab), v in s.samples.items()
                            if n == "openlfr_stage_messages_dropped_total" and dict(lab).get("stage") == name},
                "retries": int(s.total("openlfr_stage_backend_retries_total", stage=name)),
            }
        t1 = time.monotonic()
        codes = services.close()
        log(f"stopped in {time.monotonic() - t1:.1f}s, exit codes {codes}")
        ok = True
        return {
            "mode": "services",
            "loadavg_1m_before": load,
            "frames": len(frames),
            "faces": faces,
            "embeddings_messages": len(embeddings),
            "seconds": round(seconds, 2),
            "ingest_publish_s": round(last_publish - first_publish, 2),
            "frames_per_s": len(frames) / seconds if seconds > 0 else None,
            "faces_per_s": faces / seconds if seconds > 0 else None,
            "end_resolution_s": POLL_S,
            "stages": stages,
            "bottleneck": bottleneck(stages),
            "max_lag_stage": max(max_lag, key=lambda n: max_lag[n]),
            "readyz_wait_s": waits,
            "exit_codes": codes,
        }
    finally:
        services.close()  # a second call after success stops nothing
        if ok and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"logs and data kept in {work}")


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
