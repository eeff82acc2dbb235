"""The load generator's stack: the broker and services a run starts (or attaches to), and their
process CPU.

Split from ``loadgen.py``; see its docstring for what a run does.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import urllib.parse
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench_services import Scrape

if TYPE_CHECKING:
    from loadgen import Scenario

logger = logging.getLogger("openlfr.loadgen")

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class LoadgenError(RuntimeError):
    """The run could not be made (a service did not start, a bound was hit)."""


# -- the stack --------------------------------------------------------------------------------


def _loopback(host: str, what: str) -> None:
    if host not in LOOPBACK:
        raise LoadgenError(f"{what} {host!r} is not a loopback address; the load generator stays on this machine")


@dataclass
class Stack:
    """The broker and services the run uses, and how to stop what it started."""

    bootstrap: str
    prefix: str
    processes: dict[str, list[Any]] = field(default_factory=dict)  # stage -> ServiceProcess list
    metrics_urls: dict[str, list[str]] = field(default_factory=dict)
    broker: Any = None
    stack: Any = None

    def topic(self, name: str) -> str:
        return self.prefix + name

    def scrape(self) -> dict[str, list[Scrape]]:
        """Every service's ``/metrics``, by stage (one per replica; a failed scrape is skipped)."""
        import urllib.request

        out: dict[str, list[Scrape]] = {}
        for stage, urls in self.metrics_urls.items():
            for url in urls:
                try:
                    with urllib.request.urlopen(url, timeout=5) as resp:
                        out.setdefault(stage, []).append(Scrape.parse(resp.read().decode()))
                except OSError as exc:
                    logger.debug('scrape failed url="%s" error="%s"', url, exc)
        return out

    def check_alive(self) -> None:
        for stage, procs in self.processes.items():
            for p in procs:
                if p.proc.poll() is not None:
                    raise LoadgenError(f"{stage} exited {p.proc.returncode}:\n{p.log_tail()}")

    def close(self) -> dict[str, list[int | None]]:
        """SIGTERM every service started, wait, then stop the broker if started."""
        codes: dict[str, list[int | None]] = {}
        for procs in self.processes.values():
            for p in procs:
                if p.proc.poll() is None:
                    p.proc.send_signal(signal.SIGTERM)
        for stage, procs in self.processes.items():
            for p in procs:
                try:
                    code: int | None = p.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.proc.kill()
                    p.proc.wait()
                    code = None
                codes.setdefault(stage, []).append(code)
        self.processes = {}
        if self.broker is not None:
            self.broker.stop()
            self.broker = None
        return codes


def process_tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` and every live descendant (all threads), from
    /proc; 0 for a process that is gone."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    tree = {pid}
    grew = True
    while grew:
        grew = False
        for child, parent in parents.items():
            if parent in tree and child not in tree:
                tree.add(child)
                grew = True
    return sum(times.get(p, 0.0) for p in tree)


def stack_cpu_s(stack: Stack) -> dict[str, float]:
    """Process CPU seconds so far of each stage's services (replicas summed) and of the broker
    (``broker``) where this run started it."""
    out = {stage: sum(process_tree_cpu_s(p.proc.pid) for p in procs) for stage, procs in stack.processes.items()}
    process = getattr(stack.broker, "_process", None)
    if process is not None:
        out["broker"] = process_tree_cpu_s(process.pid)
    return out


def start_stack(args: argparse.Namespace, scenario: Scenario, work: Path, deployment_id: str) -> Stack:
    """A broker (unless ``--bootstrap``), the stage services, enrolment and the deployment."""
    from openlfr.testing.kafka_broker import KafkaBroker
    from openlfr.testing.stack import ServiceStack

    broker = None
    if args.bootstrap:
        _loopback(args.bootstrap.rsplit(":", 1)[0], "--bootstrap")
        bootstrap = args.bootstrap
    else:
        broker = KafkaBroker(work_dir=work / "kafka", startup_timeout_s=90)
        broker.start()
        bootstrap = broker.bootstrap
    env = {
        "OPENLFR_MAX_FRAME_AGE_S": str(args.max_frame_age_s),
        "OPENLFR_ALERT_COOLDOWN_S": "0",
        "OPENLFR_BATCH_SIZE": str(args.batch_size),
        "OPENLFR_TOPIC_PREFIX": f"lg-{uuid.uuid4().hex[:8]}.",
    }
    if args.threads:
        env["OPENLFR_THREADS"] = str(args.threads)
    env["OPENLFR_DETECT_GATING"] = args.detect_gating
    stack = ServiceStack(bootstrap, work / "stack", env=env)
    result = Stack(bootstrap=bootstrap, prefix=stack.prefix, broker=broker, stack=stack)
    try:
        match = stack.start("match")
        result.processes["match"] = [match]
        stack.wait_ready(match)
        counts = {"detect": args.detect_replicas, "embed": args.embed_replicas, "alert": 1}
        for stage, n in counts.items():
            own = ({"OPENLFR_MAX_FRAME_AGE_S": str(args.detect_max_frame_age_s)}
                   if stage == "detect" and args.detect_max_frame_age_s is not None else {})
            result.processes[stage] = [stack.start(stage, **own) for _ in range(n)]
        for procs in result.processes.values():
            for p in procs:
                stack.wait_ready(p)
        stack.enrol_and_deploy(scenario.watchlist_dir, cameras=scenario.cameras, deployment_id=deployment_id)
    except BaseException:  # StackError, or Ctrl-C / the hard timeout while starting
        result.close()
        raise
    result.metrics_urls = {stage: [p.url("/metrics") for p in procs] for stage, procs in result.processes.items()}
    return result


def attach_stack(args: argparse.Namespace, scenario: Scenario, work: Path, deployment_id: str) -> Stack:
    """A stack already running on this machine: enrol and deploy through its registry API."""
    from openlfr.testing.stack import ServiceProcess, ServiceStack

    _loopback(args.bootstrap.rsplit(":", 1)[0], "--bootstrap")
    if not args.registry_url:
        raise LoadgenError("--bootstrap without --start-stack needs --registry-url (the match service)")
    url = urllib.parse.urlsplit(args.registry_url)
    _loopback(url.hostname or "", "--registry-url")
    tokens = {role: os.environ.get(f"OPENLFR_LOADGEN_{role.upper()}_TOKEN", "") for role in ("admin", "authoriser")}
    if not all(tokens.values()):
        raise LoadgenError("set OPENLFR_LOADGEN_ADMIN_TOKEN and OPENLFR_LOADGEN_AUTHORISER_TOKEN")
    stack = ServiceStack(args.bootstrap, work / "stack", env={"OPENLFR_TOPIC_PREFIX": args.topic_prefix})
    stack.tokens.update(tokens)
    # Only the base URL of the match service is used by enrol_and_deploy.
    stack.services["match"] = ServiceProcess("match", None, url.port or 80, work / "none.log")  # type: ignore[arg-type]
    stack.enrol_and_deploy(scenario.watchlist_dir, cameras=scenario.cameras, deployment_id=deployment_id)
    metrics: dict[str, list[str]] = {}
    for spec in args.metrics:
        stage, _, metrics_url = spec.partition("=")
        _loopback(urllib.parse.urlsplit(metrics_url).hostname or "", "--metrics")
        metrics.setdefault(stage, []).append(metrics_url)
    return Stack(bootstrap=args.bootstrap, prefix=args.topic_prefix, metrics_urls=metrics)


