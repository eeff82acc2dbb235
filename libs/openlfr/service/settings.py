"""The settings every pipeline service has, from the environment (prefix ``OPENLFR_``).

A service subclasses :class:`ServiceSettings` with its own fields. A bad or missing setting stops
the service at start with a line that names it (``bad setting OPENLFR_BATCH_SIZE: ...``) and
exit status 2.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Literal, NoReturn, TypeVar

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from openlfr.api.errors import validation_message
from openlfr.kafka.clients import DEFAULT_MAX_MESSAGE_BYTES
from openlfr.kafka.deadletter import DEFAULT_DEADLETTER_PAYLOAD_BYTES, payload_budget
from openlfr.kafka.security import (
    USERNAME,
    KafkaConnection,
    SaslMechanism,
    SecurityProtocol,
    check_pem_certificates,
    check_readable,
    read_password_file,
)
from openlfr.messages.topics import ALL_TOPICS, TopicSpec

ENV_PREFIX = "OPENLFR_"
#: Exit status of a service that would not start on its settings.
EXIT_BAD_SETTINGS = 2

#: Kafka's rule for topic and group names (``org.apache.kafka.common.internals.Topic``).
_KAFKA_NAME = re.compile(r"[a-zA-Z0-9._-]{1,249}")
_HOST_PORT = re.compile(r"^[^\s,:]+:\d{1,5}$")

S = TypeVar("S", bound="ServiceSettings")


class KafkaClientSettings(BaseSettings):
    """Where the Kafka brokers are and how a client authenticates to them (every service, and
    the command-line tools that read topics).

    ``OPENLFR_KAFKA_SECURITY_PROTOCOL=SASL_SSL`` needs ``OPENLFR_KAFKA_USERNAME`` and
    ``OPENLFR_KAFKA_PASSWORD`` or ``OPENLFR_KAFKA_PASSWORD_FILE`` (its first line; a mounted
    secret), and usually ``OPENLFR_KAFKA_CA_FILE`` (the PEM of the CA that signed the brokers'
    certificates). Credentials given to a ``PLAINTEXT`` connection are refused rather than
    ignored: a site that set them meant to be protected.
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    #: ``host:port[,host:port...]`` of the Kafka brokers; no default, a service must be told.
    bootstrap: str
    kafka_security_protocol: SecurityProtocol = "PLAINTEXT"
    kafka_sasl_mechanism: SaslMechanism = "SCRAM-SHA-512"
    #: The SCRAM user (one per service; see ``openlfr.kafka.acls``).
    kafka_username: str | None = Field(default=None, validate_default=True)
    kafka_password: SecretStr | None = Field(default=None, validate_default=True)
    #: A file whose first line is the password (read at start; wins over nothing, never both).
    kafka_password_file: Path | None = Field(default=None, validate_default=True)
    #: PEM of the CA(s) that signed the brokers' certificates; the system's CAs if not given.
    kafka_ca_file: Path | None = Field(default=None, validate_default=True)
    #: Client certificate and key (PEM), for brokers that ask for one.
    kafka_cert_file: Path | None = Field(default=None, validate_default=True)
    kafka_key_file: Path | None = Field(default=None, validate_default=True)

    @field_validator("bootstrap")
    @classmethod
    def _bootstrap(cls, value: str) -> str:
        servers = [s.strip() for s in value.split(",")]
        bad = [s for s in servers if not _HOST_PORT.match(s)]
        if not value.strip() or bad:
            raise ValueError(f"expected host:port[,host:port...], got {value!r}")
        return ",".join(servers)

    @field_validator("kafka_username")
    @classmethod
    def _kafka_username(cls, value: str | None, info: ValidationInfo) -> str | None:
        protocol = info.data.get("kafka_security_protocol")  # absent when it failed its own check
        if protocol == "SASL_SSL" and not value:
            raise ValueError("required with OPENLFR_KAFKA_SECURITY_PROTOCOL=SASL_SSL")
        if protocol not in (None, "SASL_SSL") and value is not None:
            raise ValueError(f"used only with OPENLFR_KAFKA_SECURITY_PROTOCOL=SASL_SSL, not {protocol}")
        if value is not None and not USERNAME.fullmatch(value):
            raise ValueError("may only hold 1 to 128 of a-z A-Z 0-9 . _ @ -")
        return value

    @field_validator("kafka_password")
    @classmethod
    def _kafka_password(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        protocol = info.data.get("kafka_security_protocol")
        if value is not None and protocol not in (None, "SASL_SSL"):
            raise ValueError(f"used only with OPENLFR_KAFKA_SECURITY_PROTOCOL=SASL_SSL, not {protocol}")
        if value is not None and not value.get_secret_value():
            raise ValueError("is empty")
        return value

    @field_validator("kafka_password_file")
    @classmethod
    def _kafka_password_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        protocol = info.data.get("kafka_security_protocol")
        if value is not None:
            if protocol not in (None, "SASL_SSL"):
                raise ValueError(f"used only with OPENLFR_KAFKA_SECURITY_PROTOCOL=SASL_SSL, not {protocol}")
            if info.data.get("kafka_password") is not None:
                raise ValueError("give OPENLFR_KAFKA_PASSWORD or OPENLFR_KAFKA_PASSWORD_FILE, not both")
            read_password_file(value)  # KafkaSecurityError (a ValueError) naming the file
        elif protocol == "SASL_SSL" and "kafka_password" in info.data and info.data["kafka_password"] is None:
            raise ValueError(
                "OPENLFR_KAFKA_PASSWORD or OPENLFR_KAFKA_PASSWORD_FILE is required with "
                "OPENLFR_KAFKA_SECURITY_PROTOCOL=SASL_SSL"
            )
        return value

    @field_validator("kafka_ca_file", "kafka_cert_file")
    @classmethod
    def _kafka_certificates(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is not None:
            _needs_tls(info)
            check_pem_certificates(value)
        return value

    @field_validator("kafka_key_file")
    @classmethod
    def _kafka_key_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is not None:
            _needs_tls(info)
            check_readable(value)
        if "kafka_cert_file" in info.data and (info.data["kafka_cert_file"] is None) != (value is None):
            raise ValueError("OPENLFR_KAFKA_CERT_FILE and OPENLFR_KAFKA_KEY_FILE go together: give both or neither")
        return value

    def kafka_connection(self) -> KafkaConnection:
        """The brokers and credentials for the clients (a password file is read now)."""
        password = self.kafka_password
        if self.kafka_password_file is not None:
            password = read_password_file(self.kafka_password_file)
        return KafkaConnection(
            bootstrap=self.bootstrap,
            security_protocol=self.kafka_security_protocol,
            sasl_mechanism=self.kafka_sasl_mechanism,
            username=self.kafka_username,
            password=password,
            ca_file=self.kafka_ca_file,
            cert_file=self.kafka_cert_file,
            key_file=self.kafka_key_file,
        )


def _needs_tls(info: ValidationInfo) -> None:
    protocol = info.data.get("kafka_security_protocol")
    if protocol == "PLAINTEXT":
        raise ValueError("needs OPENLFR_KAFKA_SECURITY_PROTOCOL=SSL or SASL_SSL, not PLAINTEXT")


class ServiceSettings(KafkaClientSettings):
    """Kafka, HTTP, batching and logging settings of a service.

    Every field can be set as ``OPENLFR_<NAME>`` (``OPENLFR_BOOTSTRAP=kafka:9092``);
    ``OPENLFR_TOPICS`` is JSON (``{"openlfr.frames.v1": "site-a.frames"}``).
    """

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
    """One ``bad setting OPENLFR_X: reason`` line per error, naming the variable to fix.

    A field read under an alias (``OPENLFR_AUDIT_LOG`` of the API settings) is named by the
    alias; an error of the settings as a whole (one setting against another) by its message,
    which names them.
    """
    lines = []
    for err in exc.errors():
        loc = err.get("loc") or ()
        first = str(loc[0]) if loc else ""
        detail = ".".join(str(p) for p in loc[1:])
        message = validation_message(err)
        if not first:
            lines.append(f"bad settings: {message}")
            continue
        name = first.upper() if first.upper().startswith(ENV_PREFIX) else prefix + first.upper()
        lines.append(f"bad setting {name}: {detail + ': ' if detail else ''}{message}")
    return lines


def settings_problems(settings_cls: type[BaseSettings], **values: object) -> list[str]:
    """The ``settings_error_lines`` of building ``settings_cls`` from the environment (and
    ``values``): empty when it builds."""
    try:
        settings_cls(**values)
    except ValidationError as exc:
        prefix = settings_cls.model_config.get("env_prefix") or ENV_PREFIX
        return settings_error_lines(exc, prefix=prefix.upper())
    return []


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


def _attribute_docs(settings_cls: type[BaseSettings]) -> dict[str, str]:
    """The ``#:`` comments above each field of ``settings_cls`` and its bases, by field name."""
    import inspect

    docs: dict[str, str] = {}
    for klass in reversed(settings_cls.__mro__):
        if not (isinstance(klass, type) and issubclass(klass, BaseSettings)) or klass is BaseSettings:
            continue
        try:
            lines = inspect.getsource(klass).splitlines()
        except (OSError, TypeError):  # no source (a frozen build): the help goes without comments
            continue
        comment: list[str] = []
        for line in lines:
            text = line.strip()
            if text.startswith("#:"):
                comment.append(text[2:].strip())
                continue
            match = re.match(r"([a-z_][a-z0-9_]*)\s*:", text)
            if match and comment:
                docs[match.group(1)] = " ".join(comment)
            comment = []
    return docs


def _env_name(name: str, alias: object, prefix: str) -> str:
    choices = getattr(alias, "choices", None)
    if isinstance(alias, str):
        return alias.upper()
    if choices:
        for choice in choices:
            if isinstance(choice, str) and choice.upper().startswith(ENV_PREFIX):
                return choice.upper()
    return prefix + name.upper()


def _default_text(value: object) -> str:
    import json

    if value is None:
        return "unset"
    if isinstance(value, SecretStr):
        return "(secret)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list, tuple, frozenset, set)):
        try:
            return json.dumps(value if isinstance(value, (dict, list)) else sorted(value), default=str)
        except TypeError:
            return str(value)
    return str(value)


def settings_help(settings_classes: Iterable[type[BaseSettings]]) -> str:
    """Every setting the classes read, one per line: the variable, its default (``required``
    when it has none) and what it is, for a service's ``--help``."""
    import textwrap

    from pydantic_core import PydanticUndefined

    seen: set[str] = set()
    lines: list[str] = []
    for settings_cls in settings_classes:
        prefix = str(settings_cls.model_config.get("env_prefix") or ENV_PREFIX).upper()
        docs = _attribute_docs(settings_cls)
        for name, field in settings_cls.model_fields.items():
            env = _env_name(name, field.validation_alias or field.alias, prefix)
            if env in seen:
                continue
            seen.add(env)
            if field.is_required():
                default = "required"
            else:
                value = field.default if field.default is not PydanticUndefined else field.get_default(
                    call_default_factory=True)
                default = "default " + _default_text(value)
            about = field.description or docs.get(name, "")
            head = f"  {env} ({default})"
            lines.append(head)
            if about:
                lines += textwrap.wrap(about, width=96, initial_indent="      ", subsequent_indent="      ")
    return "settings (environment variables; --env-file may hold them too):\n" + "\n".join(lines)
