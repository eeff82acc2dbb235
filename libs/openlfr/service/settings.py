"""The settings every pipeline service has, from the environment (prefix ``OPENLFR_``).

A service subclasses :class:`ServiceSettings` with its own fields. A bad or missing setting stops
the service at start with a line that names it (``bad setting OPENLFR_BATCH_SIZE: ...``) and
exit status 2.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable
from typing import Literal, NoReturn, TypeVar

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from openlfr.kafka.clients import DEFAULT_MAX_MESSAGE_BYTES
from openlfr.kafka.deadletter import DEFAULT_DEADLETTER_PAYLOAD_BYTES, payload_budget
from openlfr.messages.topics import ALL_TOPICS, TopicSpec

ENV_PREFIX = "OPENLFR_"
#: Exit status of a service that would not start on its settings.
EXIT_BAD_SETTINGS = 2

#: Kafka's rule for topic and group names (``org.apache.kafka.common.internals.Topic``).
_KAFKA_NAME = re.compile(r"[a-zA-Z0-9._-]{1,249}")
_HOST_PORT = re.compile(r"^[^\s,:]+:\d{1,5}$")

S = TypeVar("S", bound="ServiceSettings")


class ServiceSettings(BaseSettings):
    """Kafka, HTTP, batching and logging settings of a service.

    Every field can be set as ``OPENLFR_<NAME>`` (``OPENLFR_BOOTSTRAP=kafka:9092``);
    ``OPENLFR_TOPICS`` is JSON (``{"openlfr.frames.v1": "site-a.frames"}``).
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    #: ``host:port[,host:port...]`` of the Kafka brokers; no default, a service must be told.
    bootstrap: str
    #: The consumer group; ``openlfr-<stage>`` if not given.
    group_id: str | None = None
    batch_size: int = Field(default=16, ge=1, le=1024)
    #: Longest wait for a full batch: at low frame rates every stage adds up to this much latency.
    poll_timeout_s: float = Field(default=0.1, gt=0, le=60)
    http_host: str = "0.0.0.0"  # noqa: S104 - probes and scrapers reach the pod's address
    http_port: int = Field(default=8080, ge=1, le=65535)
    #: Prepended to every default topic name (``site-a.`` gives ``site-a.openlfr.frames.v1``).
    topic_prefix: str = ""
    #: The actual name of a topic, by its default name; wins over ``topic_prefix``.
    topics: dict[str, str] = Field(default_factory=dict)
    #: Whether the service creates its topics at start (off where topics are provisioned).
    create_topics: bool = True
    #: Replicas of created topics; the broker's default if not given.
    replication_factor: int | None = Field(default=None, ge=1, le=32)
    backoff_initial_s: float = Field(default=0.2, gt=0, le=60)
    backoff_max_s: float = Field(default=30.0, gt=0, le=600)
    #: Longest wait for the producer's delivery reports of one batch.
    flush_timeout_s: float = Field(default=30.0, ge=1, le=600)
    #: How soon a dead replica's partitions move to another (the broker allows 6..1800 s).
    session_timeout_s: float = Field(default=10.0, ge=6, le=1800)
    #: The broker's message limit (its ``message.max.bytes``, or the topics' ``max.message.bytes``
    #: where lower): the producer refuses larger records at once, no dead letter is larger.
    max_message_bytes: int = Field(default=DEFAULT_MAX_MESSAGE_BYTES, ge=262_144, le=104_857_600)
    #: The most bytes of an input a dead letter keeps (topics that carry faces: none).
    deadletter_payload_bytes: int = Field(default=DEFAULT_DEADLETTER_PAYLOAD_BYTES, ge=0)
    #: Retries of an input whose outputs fail for good (too large, invalid) before it is
    #: dead-lettered and passed.
    delivery_max_retries: int = Field(default=5, ge=0, le=100)
    #: No batch finished for this long while input waits: /readyz says stalled.
    stall_after_s: float = Field(default=60.0, ge=1, le=3600)
    #: Longest wait for the broker at start.
    startup_timeout_s: float = Field(default=30.0, gt=0, le=600)
    #: Inputs captured more than this ahead of a stage's clock are dead-lettered and counted per
    #: camera (``openlfr.pipeline.event_time``): a fast clock or a forged message must not move
    #: event time. Above NTP drift and below a day; raise it for files fed faster than real time.
    max_clock_skew_s: float = Field(default=300.0, gt=0, le=86400)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("bootstrap")
    @classmethod
    def _bootstrap(cls, value: str) -> str:
        servers = [s.strip() for s in value.split(",")]
        bad = [s for s in servers if not _HOST_PORT.match(s)]
        if not value.strip() or bad:
            raise ValueError(f"expected host:port[,host:port...], got {value!r}")
        return ",".join(servers)

    @field_validator("group_id")
    @classmethod
    def _group_id(cls, value: str | None) -> str | None:
        if value is not None and not _KAFKA_NAME.fullmatch(value):
            raise ValueError(f"{value!r} is not a legal group id (1 to 249 of a-z A-Z 0-9 . _ -)")
        return value

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if value and not _KAFKA_NAME.fullmatch(value):
            raise ValueError(f"{value!r} may only hold a-z A-Z 0-9 . _ -")
        return value

    @field_validator("topics")
    @classmethod
    def _topics(cls, value: dict[str, str]) -> dict[str, str]:
        known = {spec.name for spec in ALL_TOPICS}
        for default, actual in value.items():
            if not _KAFKA_NAME.fullmatch(actual) or actual in (".", ".."):
                raise ValueError(f"{default}: {actual!r} is not a legal Kafka topic name")
            if default not in known and not _KAFKA_NAME.fullmatch(default):
                raise ValueError(f"{default!r} is not a topic's default name")
        return value

    @field_validator("backoff_max_s")
    @classmethod
    def _backoff(cls, value: float, info: ValidationInfo) -> float:
        initial = info.data.get("backoff_initial_s")  # absent when it failed its own check
        if initial is not None and value < initial:
            raise ValueError(f"{value} is below backoff_initial_s={initial}")
        return value

    @field_validator("deadletter_payload_bytes")
    @classmethod
    def _deadletter_payload(cls, value: int, info: ValidationInfo) -> int:
        limit = info.data.get("max_message_bytes")  # absent when it failed its own check
        if limit is not None and value > payload_budget(limit):
            raise ValueError(
                f"{value} does not fit a dead letter within OPENLFR_MAX_MESSAGE_BYTES={limit} "
                f"(at most {payload_budget(limit)})"
            )
        return value

    def topic_name(self, spec: TopicSpec) -> str:
        """The actual name of a topic: an override, else the prefix and the default name."""
        return self.topics.get(spec.name, self.topic_prefix + spec.name)

    def topic_names(self, specs: Iterable[TopicSpec]) -> dict[TopicSpec, str]:
        """The actual names of ``specs``, for ``StageRunner(topic_names=...)``."""
        return {spec: self.topic_name(spec) for spec in specs}

    def consumer_group(self, stage_name: str) -> str:
        """The consumer group of a stage."""
        return self.group_id or f"openlfr-{stage_name}"


def settings_error_lines(exc: ValidationError, *, prefix: str = ENV_PREFIX) -> list[str]:
    """One ``bad setting OPENLFR_X: reason`` line per error, naming the variable to fix."""
    lines = []
    for err in exc.errors():
        loc = err.get("loc") or ()
        name = prefix + (str(loc[0]).upper() if loc else "<SETTINGS>")
        detail = ".".join(str(p) for p in loc[1:])
        message = err.get("msg", "invalid")
        lines.append(f"bad setting {name}: {detail + ': ' if detail else ''}{message}")
    return lines


def exit_bad_settings(exc: ValidationError, *, prefix: str = ENV_PREFIX) -> NoReturn:
    """Write the errors of ``exc`` to stderr and exit with status 2."""
    for line in settings_error_lines(exc, prefix=prefix):
        # Logging is not configured yet (its level is a setting): stderr is the channel.
        sys.stderr.write(line + "\n")
    raise SystemExit(EXIT_BAD_SETTINGS)


def load_settings(settings_cls: type[S], **values: object) -> S:
    """Build settings from the environment (and ``values``), or exit with status 2 naming the
    bad settings."""
    try:
        return settings_cls(**values)
    except ValidationError as exc:
        prefix = settings_cls.model_config.get("env_prefix") or ENV_PREFIX
        exit_bad_settings(exc, prefix=prefix.upper())
