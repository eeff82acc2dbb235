"""What the Kafka clients of every service share: producer settings, librdkafka's logger, and
which delivery errors no retry can cure."""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import KafkaError

#: librdkafka's own log lines go here (via the client's ``logger`` setting), not to stderr.
LIBRDKAFKA_LOGGER = logging.getLogger("openlfr.kafka.librdkafka")

#: The broker's default ``message.max.bytes`` as the producer counts it (librdkafka's own default):
#: no record the services send is larger unless a site sets ``OPENLFR_MAX_MESSAGE_BYTES``.
DEFAULT_MAX_MESSAGE_BYTES = 1_000_000

#: Producer settings shared by ``StageRunner`` and ``Publisher``: every output acknowledged by
#: all in-sync replicas, no duplicates from the producer's own retries, small batching delay.
#: lz4 is built into the librdkafka of the confluent-kafka wheels.
PRODUCER_DEFAULTS: dict[str, Any] = {
    "acks": "all",
    "enable.idempotence": True,
    "linger.ms": 5,
    "compression.type": "lz4",
}

#: Delivery errors that the same record meets again however often it is sent: too large for the
#: producer or the broker, refused as invalid. A broker that is down, a topic not created yet,
#: a timeout or a missing ACL can be cured by an operator and is retried (the stage reports the
#: stall on ``/readyz`` instead).
PERMANENT_DELIVERY_ERRORS: frozenset[int] = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,  # librdkafka's own check at produce() and the broker's
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_MSG,  # CORRUPT_MESSAGE
        KafkaError.INVALID_MSG_SIZE,
        KafkaError.INVALID_RECORD,
        KafkaError.INVALID_TIMESTAMP,
        KafkaError._BAD_MSG,  # noqa: SLF001 - librdkafka's local error codes
        KafkaError._INVALID_ARG,  # noqa: SLF001
    }
)


def is_permanent(error: KafkaError) -> bool:
    """Whether resending the record cannot succeed (see ``PERMANENT_DELIVERY_ERRORS``)."""
    return error.code() in PERMANENT_DELIVERY_ERRORS


def err_name(error: KafkaError) -> str:
    """``NAME: text`` of a librdkafka error."""
    return f"{error.name()}: {error.str()}"
