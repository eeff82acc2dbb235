"""The services mode of ``bench_pipeline.py``: a real broker, the stages as ``openlfr service``
processes, their ``/metrics`` scraped while the video goes through (see ``bench_pipeline``'s
docstring for what is measured). ``Scrape`` and ``topic_timestamps`` serve ``loadgen.py`` too.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from bench_common import (  # noqa: E402 - load-tests/ is the script folder, on sys.path
    POLL_S, READYZ_TIMEOUT_S, SETTLE_S, STAGES, BenchError, Deadline, bottleneck, histogram_quantile, loadavg, log,
    percentile,
)

logger = logging.getLogger("openlfr.bench_pipeline")


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
        if name == "alert" and "match" in self.services:
            # Alert checks every match against the registry: the match service's API.
            env = {"OPENLFR_REVIEW_REGISTRY_URL": f"http://127.0.0.1:{self.services['match'].port}", **env}
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
