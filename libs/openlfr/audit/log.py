"""An append-only, hash-chained audit log in a JSON-lines file.

Each record carries the SHA-256 of the record before it (``prev_hash``) and its own hash over a
canonical JSON encoding of every other field, so editing, deleting, reordering or inserting a
record breaks the chain at that point and :meth:`AuditLog.verify` names the first broken line.

The chain shows tampering; it does not prevent it. Whoever can rewrite the whole file can rebuild
a consistent chain, so the latest hash should also be kept (or published) somewhere else.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, field_validator

logger = logging.getLogger(__name__)

Action = Literal[
    "watchlist.create",
    "watchlist.update",
    "watchlist.delete",
    "subject.enrol",
    "subject.update",
    "subject.delete",
    "watchlist.reembed",
    "deployment.create",
    "deployment.update",
    "deployment.threshold",
    "deployment.end",
    "alert.review",
    "alert.purge",
    "access.denied",
    "export",
]

GENESIS_HASH = "0" * 64
_HEX64 = r"^[0-9a-f]{64}$"
_TAIL_BLOCK = 4096


class AuditLogError(RuntimeError):
    """The log file cannot be extended: its last line is incomplete or not a valid record."""


def canonical_json(obj: Any) -> bytes:
    """UTF-8 JSON with sorted keys and no whitespace; NaN and infinities are refused (ValueError)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
        "utf-8"
    )


class AuditRecord(BaseModel):
    """One entry of the chain. ``hash`` is not checked on construction, so tampered records still load."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seq: int = Field(ge=0)
    ts: float = Field(allow_inf_nan=False, description="epoch seconds, UTC")
    actor: str = Field(min_length=1)
    action: Action
    target: str = Field(min_length=1)
    details: dict[str, JsonValue]
    prev_hash: str = Field(pattern=_HEX64)
    hash: str = Field(pattern=_HEX64)

    @field_validator("actor", "target")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    def compute_hash(self) -> str:
        """SHA-256 (hex) of the canonical JSON of every field except ``hash``."""
        return hashlib.sha256(canonical_json(self.model_dump(mode="json", exclude={"hash"}))).hexdigest()

    def to_line(self) -> bytes:
        """The record as one canonical JSON line, newline included."""
        return canonical_json(self.model_dump(mode="json")) + b"\n"


class VerifyResult(BaseModel):
    """The outcome of :meth:`AuditLog.verify`.

    Attributes:
        ok: the whole file is an intact chain (an empty or missing file is ok).
        records: how many records were checked and found intact before the first broken one.
        first_broken: 1-based line number of the first broken record, or None when ok. In an
            intact chain the record on line ``n`` has ``seq == n - 1``.
        reason: why it is broken ("" when ok).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    ok: bool
    records: int
    first_broken: int | None
    reason: str


_LOCKS: dict[Path, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _process_lock(path: Path) -> threading.Lock:
    """One lock per file per process, shared by every AuditLog on that file."""
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(path, threading.Lock())


def _parse_line(raw: bytes) -> AuditRecord:
    """Validate one line (without its newline) strictly; raises ValueError with the cause."""
    try:
        return AuditRecord.model_validate_json(raw, strict=True)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()[:3]
        )
        raise ValueError(f"not a valid record ({problems})") from exc


def _last_line(fh: BinaryIO) -> bytes:
    """The file's last line, newline included if present; b"" for an empty file."""
    end = fh.seek(0, os.SEEK_END)
    pos, buf = end, b""
    while pos > 0:
        step = min(_TAIL_BLOCK, pos)
        pos -= step
        fh.seek(pos)
        buf = fh.read(step) + buf
        cut = buf.rfind(b"\n", 0, len(buf) - 1)
        if cut != -1:
            return buf[cut + 1 :]
    return buf


class AuditLog:
    """An append-only, hash-chained JSON-lines audit log.

    Appends are serialised by a per-process lock and an exclusive ``flock`` on the file, so
    threads and processes on one host cannot fork the chain. ``flock`` is advisory and may not
    hold across hosts on network file systems.

    Args:
        path: the JSON-lines file; created on the first append.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = _process_lock(self.path.resolve())

    def append(
        self,
        *,
        actor: str,
        action: Action,
        target: str,
        details: dict[str, JsonValue],
        ts: float | None = None,
    ) -> AuditRecord:
        """Add one record at the end of the chain and make it durable (flush + fsync).

        Raises:
            ValueError: an invalid field (unknown action, blank actor or target, details that
                are not JSON, a non-finite ts).
            AuditLogError: the file's last line is incomplete or invalid, so nothing is chained
                onto it; run :meth:`verify` and repair the file first.
        """
        draft = AuditRecord(
            seq=0,
            ts=time.time() if ts is None else ts,
            actor=actor,
            action=action,
            target=target,
            details=details,
            prev_hash=GENESIS_HASH,
            hash=GENESIS_HASH,
        )
        draft.compute_hash()  # refuses NaN and the like before the file is touched
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            created = not self.path.exists()
            with self.path.open("a+b") as fh:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
                try:
                    seq, prev_hash = self._next_link(fh)
                    linked = draft.model_copy(update={"seq": seq, "prev_hash": prev_hash})
                    record = linked.model_copy(update={"hash": linked.compute_hash()})
                    fh.write(record.to_line())  # "a" mode: always at the end, whatever was read
                    fh.flush()
                    os.fsync(fh.fileno())
                finally:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
            if created:
                self._fsync_dir()
        logger.info(
            'audit record appended seq="%d" action="%s" actor="%s"', record.seq, record.action, record.actor
        )
        return record

    def records(self) -> Iterator[AuditRecord]:
        """Every record in file order, without checking the chain.

        Raises:
            ValueError: a line is not a valid record (the line number is named).
        """
        if not self.path.exists():
            return
        with self.path.open("rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                try:
                    yield _parse_line(raw.rstrip(b"\n"))
                except ValueError as exc:
                    raise ValueError(f"{self.path} line {lineno}: {exc}") from exc

    def verify(self) -> VerifyResult:
        """Check every record's hash, seq and link to the one before; stop at the first break."""
        if not self.path.exists():
            return VerifyResult(ok=True, records=0, first_broken=None, reason="")
        prev_hash = GENESIS_HASH
        count = 0
        with self.path.open("rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                outcome = self._check(raw, lineno=lineno, prev_hash=prev_hash)
                if isinstance(outcome, str):
                    logger.warning('audit chain broken path="%s" line="%d" reason="%s"', self.path, lineno, outcome)
                    return VerifyResult(ok=False, records=count, first_broken=lineno, reason=outcome)
                prev_hash = outcome.hash
                count += 1
        return VerifyResult(ok=True, records=count, first_broken=None, reason="")

    @staticmethod
    def _check(raw: bytes, *, lineno: int, prev_hash: str) -> AuditRecord | str:
        """The record on this line if it is intact and linked, else why not."""
        if not raw.endswith(b"\n"):
            return f"line {lineno}: incomplete last line (no newline; truncated or interrupted write)"
        try:
            record = _parse_line(raw[:-1])
        except ValueError as exc:
            return f"line {lineno}: {exc}"
        if record.compute_hash() != record.hash:
            return f"line {lineno}: hash mismatch (record seq {record.seq} was modified)"
        if record.prev_hash != prev_hash:
            return (
                f"line {lineno}: prev_hash mismatch (seq {record.seq} does not follow the record before it; "
                "a record was deleted, reordered or inserted)"
            )
        if record.seq != lineno - 1:
            return f"line {lineno}: seq mismatch (expected {lineno - 1}, found {record.seq})"
        return record

    def _next_link(self, fh: BinaryIO) -> tuple[int, str]:
        """(seq, prev_hash) for the next record, read from the last line under the file lock."""
        tail = _last_line(fh)
        if not tail:
            return 0, GENESIS_HASH
        if not tail.endswith(b"\n"):
            raise AuditLogError(f"{self.path}: the last line is incomplete; refusing to chain onto it")
        try:
            last = _parse_line(tail[:-1])
        except ValueError as exc:
            raise AuditLogError(f"{self.path}: the last line is {exc}; refusing to chain onto it") from exc
        return last.seq + 1, last.hash

    def _fsync_dir(self) -> None:
        """Make the new file's directory entry durable too."""
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
