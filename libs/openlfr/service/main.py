"""The entry point every consuming service shares: settings, logging, topics, HTTP, the loop.

A service's ``__main__`` is one line::

    sys.exit(run_stage_service(DetectStage.from_settings, DetectSettings))

Start steps, in order: load the settings (exit 2 naming a bad one), configure logging, build the
stage, make sure its topics exist, start the health and metrics HTTP server, install the
SIGTERM/SIGINT handlers, run the Kafka loop until a signal asks it to stop, return 0.

A stage may declare the topics it writes as ``output_topics`` (a tuple of ``TopicSpec``); they
are created at start with the input and dead-letter topics.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

from fastapi import APIRouter
from prometheus_client import REGISTRY, CollectorRegistry
from pydantic_settings import BaseSettings

from openlfr.kafka.admin import KafkaAdminError, ensure_topics, wait_for_broker
from openlfr.kafka.runner import Backoff, StageRunner
from openlfr.kafka.security import KafkaSecurityError
from openlfr.messages.topics import DEADLETTER, TopicSpec
from openlfr.pipeline.exceptions import BackendUnavailable
from openlfr.pipeline.stage import Stage
from openlfr.service.http import make_health_app, run_http_in_thread
from openlfr.service.settings import (
    EXIT_BAD_SETTINGS,
    ServiceSettings,
    load_settings,
    settings_help,
    settings_problems,
)

logger = logging.getLogger(__name__)

S = TypeVar("S", bound=ServiceSettings)

#: key="value" fields after the fixed ones; messages carry their own key="value" fields.
LOG_FORMAT = '%(asctime)s level=%(levelname)s logger=%(name)s %(message)s'
_logging_lock = threading.Lock()
_logging_configured = False


def configure_logging(level: str) -> None:
    """Configure the root logger once per process (later calls only change the level)."""
    global _logging_configured  # noqa: PLW0603 - once per process, by design
    with _logging_lock:
        root = logging.getLogger()
        if not _logging_configured:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter(LOG_FORMAT))
            root.addHandler(handler)
            _logging_configured = True
        root.setLevel(level)
        # librdkafka repeats a refused connection many times a second while a broker is down.
        librdkafka_level = max(logging.getLevelName(level), logging.WARNING)
        logging.getLogger("openlfr.kafka.librdkafka").setLevel(librdkafka_level)


@dataclass(frozen=True, slots=True)
class HttpApi:
    """A service's API beside its probes: routers, the OpenAPI title, the body size limit."""

    routers: Sequence[APIRouter]
    title: str
    max_body_bytes: int | None = None
    #: Called at stop before the HTTP server is stopped (e.g. to end open event streams).
    before_stop: Callable[[], None] | None = None


def stage_topics(stage: Stage) -> list[TopicSpec]:
    """The topics a stage reads and writes: input, dead letters, declared outputs."""
    specs: list[TopicSpec] = [stage.input_topic, DEADLETTER]
    for spec in stage.output_topics:
        if spec not in specs:
            specs.append(spec)
    return specs


def ensure_stage_topics(settings: ServiceSettings, specs: Iterable[TopicSpec]) -> list[str]:
    """Create the missing topics with each spec's partition count and retention."""
    by_retention: dict[int, dict[str, int]] = {}
    for spec in specs:
        by_retention.setdefault(spec.retention_ms, {})[settings.topic_name(spec)] = spec.partitions
    created: list[str] = []
    for retention_ms, topics in sorted(by_retention.items()):
        created += ensure_topics(
            settings.kafka_connection(),
            topics,
            retention_ms=retention_ms,
            replication_factor=settings.replication_factor,
            timeout_s=settings.startup_timeout_s,
        )
    return created


def _parse_args(
    argv: Sequence[str] | None, settings_classes: Sequence[type[BaseSettings]] = ()
) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Run an OpenLFR pipeline stage. Settings come from OPENLFR_* variables.",
        epilog=settings_help(settings_classes) if settings_classes else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--env-file", type=Path, help="read OPENLFR_* settings from this file too")
    parser.add_argument(
        "--check-config", action="store_true", help="validate the settings and exit (0 or 2)"
    )
    return parser.parse_args(argv)


def run_stage_service(
    stage_factory: Callable[[S], Stage],
    settings_cls: type[S],
    argv: Sequence[str] | None = None,
    *,
    registry: CollectorRegistry | None = None,
    also_validate: Sequence[type[BaseSettings]] = (),
    api: Callable[[S, Stage], HttpApi] | None = None,
) -> int:
    """Run one stage as a service until SIGTERM or SIGINT; the process exit status.

    ``api``, when given, builds the service's HTTP API (served with the probes) from its
    settings and stage.

    Returns:
        0 after a requested stop, 1 when the broker, the topics or the HTTP port failed at
        start, 2 for bad settings.
    """
    args = _parse_args(argv, (settings_cls, *also_validate))
    values: dict[str, Any] = {"_env_file": args.env_file} if args.env_file else {}
    # Every settings class is checked before any is refused, so one run names every bad setting.
    problems = settings_problems(settings_cls, **values)
    for extra in also_validate:  # the stage's own settings, read again by its factory
        problems += [line for line in settings_problems(extra) if line not in problems]
    if problems:
        # Logging is not configured yet (its level is a setting): stderr is the channel.
        sys.stderr.write("".join(line + "\n" for line in problems))
        return EXIT_BAD_SETTINGS
    settings = load_settings(settings_cls, **values)
    if args.check_config:
        sys.stdout.write("settings ok\n")
        return 0
    configure_logging(settings.log_level)
    registry = REGISTRY if registry is None else registry

    try:
        stage = stage_factory(settings)
    except (KafkaAdminError, BackendUnavailable, OSError) as exc:
        logger.error('service could not build its stage error="%s"', exc)
        return 1
    try:
        kafka = settings.kafka_connection()
        specs = stage_topics(stage)
        if settings.create_topics:
            created = ensure_stage_topics(settings, specs)
            if created:
                logger.info('stage="%s" created topics="%s"', stage.name, ",".join(created))
        else:
            wait_for_broker(kafka, settings.startup_timeout_s)
        runner = StageRunner(
            stage,
            bootstrap=kafka,
            group_id=settings.consumer_group(stage.name),
            topic_names=settings.topic_names(specs),
            batch_size=settings.batch_size,
            poll_timeout_s=settings.poll_timeout_s,
            backoff=Backoff(initial_s=settings.backoff_initial_s, max_s=settings.backoff_max_s),
            flush_timeout_s=settings.flush_timeout_s,
            session_timeout_s=settings.session_timeout_s,
            registry=registry,
            max_message_bytes=settings.max_message_bytes,
            deadletter_payload_bytes=settings.deadletter_payload_bytes,
            delivery_max_retries=settings.delivery_max_retries,
            stall_after_s=settings.stall_after_s,
        )
        extras = api(settings, stage) if api is not None else None
        http = run_http_in_thread(
            make_health_app(
                ready={
                    "broker": runner.broker_reachable,
                    "partitions": lambda: _partitions_check(runner),
                    "progress": runner.progress_check,
                    "stage": stage.ready,
                },
                registry=registry,
                routers=extras.routers if extras else (),
                title=extras.title if extras else "OpenLFR service",
                max_body_bytes=extras.max_body_bytes if extras else None,
            ),
            settings.http_host,
            settings.http_port,
        )
    except (KafkaAdminError, KafkaSecurityError, OSError) as exc:
        logger.error('stage="%s" could not start error="%s"', stage.name, exc)
        stage.close()
        return 1

    def on_signal(signum: int, frame: FrameType | None) -> None:
        logger.info(
            'stage="%s" stop requested signal="%s"', stage.name, signal.Signals(signum).name
        )
        runner.request_stop()

    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, on_signal)
    try:
        runner.run()
    except Exception:
        logger.exception('stage="%s" loop failed', stage.name)
        return 1
    finally:
        if extras is not None and extras.before_stop is not None:
            try:
                extras.before_stop()
            except Exception:
                logger.exception('stage="%s" stop hook failed', stage.name)
        http.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0


def _partitions_check(runner: StageRunner) -> tuple[bool, str]:
    if runner.stopping:
        return False, "stopping"
    assigned = runner.assigned_partitions()
    if not assigned:
        return False, "no partition assigned"
    return True, f"{len(assigned)} assigned"
