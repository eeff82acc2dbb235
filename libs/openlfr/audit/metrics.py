"""The audit log's Prometheus metrics (the default registry: one audit log per service process).

Labels are bounded sets only (action, reason, outcome), never an actor or a source address.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

APPENDED = Counter(
    "openlfr_audit_records_total",
    "Records appended to the audit log, per action.",
    ["action"],
)
REFUSED = Counter(
    "openlfr_audit_write_refusals_total",
    "Audit records not written, per reason: truncated, altered, broken or anchor (the file is not the chain "
    "this process knows or was checkpointed: the chain is not continued), io (the write itself failed).",
    ["reason"],
)
INTACT = Gauge(
    "openlfr_audit_log_intact",
    "1 while the audit log can be extended, 0 once this process found it cut, altered or short of its "
    "checkpointed head (every audited request then gets 503 until a restart on a repaired or new log).",
)
CHECKPOINTS = Counter(
    "openlfr_audit_checkpoints_total",
    "Audit-log heads published to the checkpoint topic, per outcome (published, failed).",
    ["outcome"],
)
UNANCHORED = Gauge(
    "openlfr_audit_unanchored_records",
    "Records appended by this process since the last head the broker acknowledged: what a rewrite of "
    "the log's end could change undetected by the checkpoints.",
)
UNAUTHENTICATED = Counter(
    "openlfr_api_unauthenticated_total",
    "Requests refused with 401, per outcome: audited (a record each), suppressed (over the rate limit: "
    "counted in a summary record), unaudited (the audit log could not be written).",
    ["outcome"],
)
