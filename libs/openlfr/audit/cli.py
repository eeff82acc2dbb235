"""``openlfr audit verify``: the chain, and the heads kept outside it.

Exit status: 0 intact (and holding every head asked for), 1 not (missing, empty, broken, cut,
rewritten, or no checkpoint to check against), 2 bad arguments, 3 the broker could not be read.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from openlfr.audit.log import AuditLog, Head

EXIT_NOT_INTACT = 1
EXIT_UNREACHABLE = 3


def _head(text: str) -> Head:
    try:
        return Head.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def add_audit_parser(sub: Any) -> None:
    """``openlfr audit verify`` on the CLI's subcommands."""
    audit = sub.add_parser("audit", help="the audit log").add_subparsers(dest="audit_command", required=True)
    verify = audit.add_parser(
        "verify",
        help="verify the hash chain and the heads kept outside it; exit 1 naming the first broken link",
        description="Verify an audit log: every record's hash and link, and that the file holds each given head "
        "(--expect-head, or every checkpoint on the broker with --against-topic) at its count, so that a cut "
        "tail or a re-chained rewrite is caught. A missing or empty file fails. Exit 0 intact, 1 not, "
        "3 broker unreachable.",
    )
    verify.add_argument("path", type=Path, help="the audit log (JSON lines)")
    verify.add_argument("--expect-head", action="append", default=[], type=_head, metavar="HASH:COUNT",
                        help="a head recorded elsewhere (printed by an earlier verify); repeatable")
    verify.add_argument("--against-topic", action="store_true",
                        help="check every checkpoint of this log on the checkpoint topic")
    verify.add_argument("--bootstrap", help="the brokers (default: OPENLFR_BOOTSTRAP; TLS and SASL from "
                        "OPENLFR_KAFKA_*, as the services)")
    verify.add_argument("--topic", help="the checkpoint topic (default: OPENLFR_TOPIC_PREFIX + "
                        "openlfr.audit-checkpoints.v1)")
    verify.add_argument("--log-id", default=os.environ.get("OPENLFR_AUDIT_LOG_ID"),
                        help="the log's id on the topic (default: OPENLFR_AUDIT_LOG_ID, else the file's stem)")
    verify.add_argument("--hmac-key-env", metavar="VAR",
                        help="the environment variable holding the chain's HMAC key (never on the command line)")
    verify.add_argument("--timeout-s", type=float, default=30.0, help="longest wait for the broker")
    verify.set_defaults(func=cmd_audit_verify)


def cmd_audit_verify(args: argparse.Namespace) -> int:
    """Verify an audit log's chain and heads; report the first broken link."""
    key = None
    if args.hmac_key_env:
        value = os.environ.get(args.hmac_key_env)
        if not value:
            print(f"openlfr: --hmac-key-env {args.hmac_key_env}: the variable is not set", file=sys.stderr)
            return 2
        key = value.encode()
    expected: list[Head] = list(args.expect_head)
    source = ""
    if args.against_topic:
        checkpoints = _checkpoints(args)
        if isinstance(checkpoints, int):
            return checkpoints
        expected += [cp.head() for cp in checkpoints]
        latest = max((cp.count for cp in checkpoints), default=0)
        source = f"; {len(checkpoints)} checkpoint(s) on the topic, the latest at count {latest}"
    log = AuditLog(args.path, key=key)
    try:
        result = log.verify(expect=expected)
    except ValueError as exc:  # two heads for one count: the checkpoints themselves conflict
        print(f"audit log {args.path}: NOT VERIFIED: {exc} (two logs share the id, or the topic was written "
              "by someone else)")
        return EXIT_NOT_INTACT
    if result.ok:
        unanchored = result.records - max((h.count for h in expected), default=0)
        print(f"audit log {args.path}: chain intact, {result.records} record(s), head {result.head}{source}")
        if expected:
            print(f"  {result.anchored} expected head(s) held; {unanchored} record(s) after the last one "
                  "are not anchored yet")
        return 0
    if result.first_broken is None:
        print(f"audit log {args.path}: NOT VERIFIED: {result.reason}{source}")
    else:
        print(f"audit log {args.path}: BROKEN at line {result.first_broken}: {result.reason} "
              f"({result.records} intact record(s) before it, head {result.head}{source})")
    return EXIT_NOT_INTACT


def _checkpoints(args: argparse.Namespace) -> list[Any] | int:
    """The log's checkpoints on the topic, or an exit status."""
    from openlfr.audit.checkpoint import LOG_ID_PATTERN, read_checkpoints
    from openlfr.kafka.admin import KafkaAdminError
    from openlfr.messages.topics import AUDIT_CHECKPOINTS

    import re

    from confluent_kafka import KafkaException

    from openlfr.service.settings import KafkaClientSettings

    if not getattr(args, "verbose", False):  # librdkafka's retries of a down broker, once a millisecond
        logging.getLogger("openlfr.kafka.librdkafka").setLevel(logging.CRITICAL)

    # Brokers and credentials as the services take them (a ValidationError names the setting: exit 2).
    kafka = KafkaClientSettings(**({"bootstrap": args.bootstrap} if args.bootstrap else {})).kafka_connection()

    log_id = args.log_id or Path(args.path).stem
    if not re.fullmatch(LOG_ID_PATTERN, log_id):
        print(f"openlfr: {log_id!r} is not a log id: give --log-id", file=sys.stderr)
        return 2
    topic = args.topic or os.environ.get("OPENLFR_TOPIC_PREFIX", "") + AUDIT_CHECKPOINTS.name
    try:
        checkpoints = read_checkpoints(kafka, topic, log_id, timeout_s=args.timeout_s)
    except (KafkaAdminError, KafkaException) as exc:
        print(f"audit log {args.path}: cannot read the checkpoints on {topic} at {kafka}: {exc}")
        return EXIT_UNREACHABLE
    if not checkpoints:
        print(f"audit log {args.path}: NOT VERIFIED: no checkpoint of log id {log_id!r} on {topic}: nothing "
              "outside the file vouches for it (wrong --log-id or --topic, or the service never published)")
        return EXIT_NOT_INTACT
    return checkpoints
