"""An append-only, hash-chained audit log in a JSON-lines file.

Each record carries the hash of the record before it (``prev_hash``) and its own hash over a
canonical JSON encoding of every other field, so editing, deleting, reordering or inserting a
record breaks the chain at that point and :meth:`AuditLog.verify` names the first broken line.
With a key (``OPENLFR_AUDIT_HMAC_KEY``) the hashes are HMAC-SHA256, so whoever lacks the key
cannot forge a consistent chain at all.

The chain alone shows tampering only in part: whoever can rewrite the file can cut its end or
rebuild a consistent chain. So the head (record count and last hash) is also kept elsewhere:
the service publishes it to a checkpoint topic (:mod:`openlfr.audit.checkpoint`), ``verify``
checks the file against such heads (``expect``), and a writer keeps the head it last wrote in
memory and refuses to continue a chain whose file no longer ends with it (cut, altered) or that
does not hold a checkpointed head (:class:`AuditLogTamperedError`). Threat model and limits:
docs/operations.md, "Audit log".
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, field_validator

from openlfr.audit import metrics
from openlfr.audit.exceptions import AuditLogError, AuditLogTamperedError, TamperKind

logger = logging.getLogger(__name__)

__all__ = [
    "GENESIS_HASH", "Action", "AuditLog", "AuditLogError", "AuditLogTamperedError", "AuditRecord", "Head",
    "VerifyResult", "canonical_json",
]

Action = Literal[
    "watchlist.create",
    "watchlist.update",
    "watchlist.delete",
    "watchlist.suspend",
    "watchlist.resume",
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
    "access.unauthenticated",
    "export",
]

GENESIS_HASH = "0" * 64
_HEX64 = r"^[0-9a-f]{64}$"


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

    def compute_hash(self, key: bytes | None = None) -> str:
        """SHA-256 (hex) of the canonical JSON of every field except ``hash``; HMAC-SHA256 with ``key``."""
        payload = canonical_json(self.model_dump(mode="json", exclude={"hash"}))
        if key is None:
            return hashlib.sha256(payload).hexdigest()
        return hmac.new(key, payload, hashlib.sha256).hexdigest()

    def to_line(self) -> bytes:
        """The record as one canonical JSON line, newline included."""
        return canonical_json(self.model_dump(mode="json")) + b"\n"


class Head(BaseModel):
    """Where a chain stands: how many records it holds and the hash of the last one.

    Written ``HASH:COUNT`` (``openlfr audit verify --expect-head``); the head of an empty chain is
    ``GENESIS_HASH:0``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    count: int = Field(ge=0)
    hash: str = Field(pattern=_HEX64)

    @classmethod
    def parse(cls, text: str) -> Head:
        """A head from ``HASH:COUNT``.

        Raises:
            ValueError: not 64 lowercase hex digits, a colon and a count >= 1.
        """
        digest, sep, count = text.strip().rpartition(":")
        if not sep or not count.isdigit() or int(count) < 1:
            raise ValueError(f"expected HASH:COUNT (64 hex digits, a colon, a record count >= 1), got {text!r}")
        try:
            return cls(count=int(count), hash=digest)
        except ValidationError as exc:
            raise ValueError(f"expected HASH:COUNT with a 64-digit lowercase hex hash, got {text!r}") from exc

    def __str__(self) -> str:
        return f"{self.hash}:{self.count}"


GENESIS = Head(count=0, hash=GENESIS_HASH)


class VerifyResult(BaseModel):
    """The outcome of :meth:`AuditLog.verify`.

    Attributes:
        ok: the file exists, holds at least one record, is an intact chain, and holds every
            expected head at its count.
        records: how many records were checked and found intact before the first broken one.
        first_broken: 1-based line number of the first broken record (for a cut log: the first
            line that is missing), or None when ok or when there is no file to point into. In an
            intact chain the record on line ``n`` has ``seq == n - 1``.
        reason: why it is not ok ("" when ok).
        head: the head of the intact part (its last record's hash and the record count).
        anchored: how many of the expected heads the file was found to hold.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    ok: bool
    records: int
    first_broken: int | None
    reason: str
    head: Head = GENESIS
    anchored: int = 0


@dataclass(frozen=True, slots=True)
class _Tail:
    """The end of the chain as a writer last saw it: its head, the byte offset after the last
    record, and that record's line (to find it again at ``end - len(line)``)."""

    head: Head
    end: int
    line: bytes


_GENESIS_TAIL = _Tail(GENESIS, 0, b"")


@dataclass(frozen=True, slots=True)
class _Scan:
    """A walk over the chain: how far it was intact, and what stopped it."""

    tail: _Tail
    anchored: int
    broken_line: int | None = None
    reason: str = ""
    kind: TamperKind | None = None


@dataclass
class _FileState:
    """What every AuditLog of one file in this process shares: the lock, the tail last written
    or read, the head anchored elsewhere, why the chain is refused (sticky), the listeners."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    tail: _Tail | None = None
    anchors: dict[int, str] = field(default_factory=dict)
    refused: AuditLogTamperedError | None = None
    listeners: list[Callable[[AuditRecord], None]] = field(default_factory=list)


_STATES: dict[Path, _FileState] = {}
_STATES_GUARD = threading.Lock()


def _file_state(path: Path) -> _FileState:
    """One state per file per process, shared by every AuditLog on that file."""
    with _STATES_GUARD:
        return _STATES.setdefault(path, _FileState())


def _parse_line(raw: bytes) -> AuditRecord:
    """Validate one line (without its newline) strictly; raises ValueError with the cause."""
    try:
        return AuditRecord.model_validate_json(raw, strict=True)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()[:3]
        )
        raise ValueError(f"not a valid record ({problems})") from exc


class AuditLog:
    """An append-only, hash-chained JSON-lines audit log.

    Appends are serialised by a per-process lock and an exclusive ``flock`` on the file, so
    threads and processes on one host cannot fork the chain. ``flock`` is advisory and may not
    hold across hosts on network file systems.

    Before each append the writer checks that the file still ends with the record it last wrote
    or read (same bytes at the same offset; records other processes appended since must link on
    from it), and on its first append (or :meth:`check`) it verifies the whole chain and the
    anchored head. A file found cut, altered or broken is refused for good in this process: every
    later append raises :class:`AuditLogTamperedError`, ``openlfr_audit_log_intact`` drops to 0
    and an ERROR line says why.

    Args:
        path: the JSON-lines file; created on the first append.
        key: HMAC key of the chain (None: plain SHA-256). Every writer and verifier of a file
            must use the same key.
    """

    def __init__(self, path: Path, *, key: bytes | None = None) -> None:
        if key is not None and len(key) < 16:
            raise ValueError("the audit HMAC key must be at least 16 bytes")
        self.path = Path(path)
        self._key = key
        self._state = _file_state(self.path.resolve())

    # -- writing -------------------------------------------------------------------------------

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
            AuditLogTamperedError: the file is not the chain this process knows or was anchored
                (cut, altered, broken, short of the checkpointed head): nothing is chained onto it,
                now or later in this process.
            AuditLogError: the write failed (disk full, permissions); nothing was added.
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
        state = self._state
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with state.lock:
                self._raise_if_refused()
                created = not self.path.exists()
                if created:
                    self._check_missing()
                with self.path.open("a+b") as fh:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
                    try:
                        record = self._append_locked(fh, draft)
                    finally:
                        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
                if created:
                    self._fsync_dir()
        except AuditLogTamperedError as exc:
            metrics.REFUSED.labels(exc.kind).inc()
            raise
        except OSError as exc:
            metrics.REFUSED.labels("io").inc()
            logger.error('audit record not written path="%s" action="%s" error="%s"', self.path, action, exc)
            raise AuditLogError(f"{self.path}: the audit record could not be written ({exc})") from exc
        metrics.APPENDED.labels(record.action).inc()
        logger.info(
            'audit record appended seq="%d" action="%s" actor="%s"', record.seq, record.action, record.actor
        )
        for listener in list(state.listeners):
            listener(record)
        return record

    def _append_locked(self, fh: BinaryIO, draft: AuditRecord) -> AuditRecord:
        """Check the file against the known tail, then write one record after it (locks held)."""
        tail = self._current_tail(fh)
        linked = draft.model_copy(update={"seq": tail.head.count, "prev_hash": tail.head.hash})
        record = linked.model_copy(update={"hash": linked.compute_hash(self._key)})
        line = record.to_line()
        try:
            # Unbuffered (O_APPEND: at the end, which _current_tail read up to), so that nothing of a
            # failed write is left in a buffer to be flushed after the roll-back.
            view = memoryview(line)
            while view:
                view = view[os.write(fh.fileno(), view):]
            os.fsync(fh.fileno())
        except OSError:
            self._roll_back(fh, tail.end)
            raise
        self._state.tail = _Tail(Head(count=record.seq + 1, hash=record.hash), tail.end + len(line), line)
        return record

    def _roll_back(self, fh: BinaryIO, end: int) -> None:
        """Cut a partly written record (disk full) so that the chain stays whole."""
        try:
            os.ftruncate(fh.fileno(), end)
        except OSError as exc:
            logger.error('audit log: a partial record could not be cut off path="%s" error="%s"', self.path, exc)

    def _current_tail(self, fh: BinaryIO) -> _Tail:
        """The tail to chain onto, after checking the file against what this process knows."""
        state = self._state
        size = os.fstat(fh.fileno()).st_size
        known = state.tail
        if known is None:
            scan = self._scan(fh, _GENESIS_TAIL, self._anchors())
            return self._accept(scan)
        if size < known.end:
            self._refuse(
                "truncated",
                f"the file is {size} bytes, shorter than the {known.end} bytes it had after record seq "
                f"{known.head.count - 1}: records were cut from its end",
            )
        if known.line:
            fh.seek(known.end - len(known.line))
            if fh.read(len(known.line)) != known.line:
                self._refuse(
                    "altered",
                    f"record seq {known.head.count - 1} is no longer at bytes {known.end - len(known.line)}.."
                    f"{known.end}: the log was altered or rewritten",
                )
        if size == known.end:
            return known
        return self._accept(self._scan(fh, known, {}))  # records other processes appended since

    def _check_missing(self) -> None:
        """Refuse to start a new file where this process knew records, or one is anchored."""
        known = self._state.tail
        if known is None:
            self._accept(self._scan(None, _GENESIS_TAIL, self._anchors()))
        elif known.end > 0:
            self._refuse("truncated", f"the file is gone (deleted or moved) after record seq {known.head.count - 1}")

    def _accept(self, scan: _Scan) -> _Tail:
        if scan.kind is not None:
            self._refuse(scan.kind, scan.reason)
        self._state.tail = scan.tail
        metrics.INTACT.set(1)
        return scan.tail

    def _refuse(self, kind: TamperKind, reason: str) -> None:
        """Refuse the chain for good in this process; raises."""
        message = (f"{self.path}: {reason}; refusing to continue the chain (verify it with "
                   "`openlfr audit verify --against-topic`, then restart on a repaired or new log)")
        self._state.refused = AuditLogTamperedError(message, kind=kind)
        metrics.INTACT.set(0)
        logger.error('audit log refused path="%s" kind="%s" reason="%s"', self.path, kind, reason)
        raise AuditLogTamperedError(message, kind=kind)

    def _raise_if_refused(self) -> None:
        refused = self._state.refused
        if refused is not None:
            raise AuditLogTamperedError(str(refused), kind=refused.kind)

    def anchor(self, heads: Iterable[Head]) -> None:
        """Require the file to hold each of ``heads`` (from the checkpoint topic) at its count.

        Checked on the next append or :meth:`check`, with a full verification of the file.

        Raises:
            ValueError: two heads disagree at one count.
        """
        expected = _expected(heads)
        with self._state.lock:
            self._state.anchors = expected
            self._state.tail = None

    def check(self) -> Head:
        """Verify the file now as the next append would (the whole chain, the anchored head) and
        return its head.

        Raises:
            AuditLogTamperedError: as :meth:`append` would.
            AuditLogError: the file cannot be read.
        """
        with self._state.lock:
            try:
                self._raise_if_refused()
                if not self.path.exists():
                    self._check_missing()
                    return GENESIS
                with self.path.open("rb") as fh:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_SH)
                    try:
                        return self._current_tail(fh).head
                    finally:
                        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
            except AuditLogTamperedError as exc:
                metrics.REFUSED.labels(exc.kind).inc()
                raise
            except OSError as exc:
                raise AuditLogError(f"{self.path}: cannot be read ({exc})") from exc

    def head(self) -> Head | None:
        """The head this process last wrote or read (None before the first append or check)."""
        tail = self._state.tail
        return None if tail is None else tail.head

    def add_listener(self, listener: Callable[[AuditRecord], None]) -> None:
        """Call ``listener(record)`` after each append to this file in this process (it must not block)."""
        self._state.listeners.append(listener)

    def remove_listener(self, listener: Callable[[AuditRecord], None]) -> None:
        """Stop calling ``listener``."""
        if listener in self._state.listeners:
            self._state.listeners.remove(listener)

    def _anchors(self) -> dict[int, str]:
        return dict(self._state.anchors)

    # -- reading -------------------------------------------------------------------------------

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

    def verify(self, *, expect: Iterable[Head] = ()) -> VerifyResult:
        """Check every record's hash, seq and link to the one before, and that the file holds
        each ``expect``-ed head at its count; stop at the first break.

        A missing or empty file is not ok: a log that has been written holds at least one record.
        """
        expected = _expected(expect)
        if not self.path.exists():
            return self._broken(None, 0, f"no such file: {self.path} (never written, moved or deleted)")
        with self.path.open("rb") as fh:
            scan = self._scan(fh, _GENESIS_TAIL, expected)
        head = scan.tail.head
        if scan.kind is not None:
            return self._broken(scan.broken_line, head.count, scan.reason, head=head, anchored=scan.anchored)
        if head.count == 0:
            return self._broken(None, 0, f"empty file: {self.path} holds no record (emptied or never written)")
        return VerifyResult(ok=True, records=head.count, first_broken=None, reason="", head=head,
                            anchored=scan.anchored)

    def _broken(self, line: int | None, records: int, reason: str, *, head: Head = GENESIS,
                anchored: int = 0) -> VerifyResult:
        logger.warning('audit log not intact path="%s" line="%s" reason="%s"', self.path, line, reason)
        return VerifyResult(ok=False, records=records, first_broken=line, reason=reason, head=head,
                            anchored=anchored)

    def _scan(self, fh: BinaryIO | None, start: _Tail, expected: Mapping[int, str]) -> _Scan:
        """Walk the chain from ``start`` (its offset and head) to the end of the file."""
        tail, anchored = start, 0
        if fh is not None:
            fh.seek(start.end)
            lineno = start.head.count
            for raw in fh:
                lineno += 1
                outcome = self._check(raw, lineno=lineno, prev_hash=tail.head.hash)
                if isinstance(outcome, str):
                    return _Scan(tail, anchored, lineno, outcome, "broken")
                count = outcome.seq + 1
                wanted = expected.get(count)
                if wanted is not None and wanted != outcome.hash:
                    return _Scan(tail, anchored, lineno, (
                        f"line {lineno}: record seq {outcome.seq} has hash {outcome.hash[:16]}..., but the "
                        f"checkpointed head at count {count} is {wanted[:16]}...: the log was rewritten"
                    ), "anchor")
                anchored += wanted is not None
                tail = _Tail(Head(count=count, hash=outcome.hash), tail.end + len(raw), raw)
        beyond = [count for count in expected if count > tail.head.count]
        if beyond:
            return _Scan(tail, anchored, tail.head.count + 1, (
                f"the log ends after {tail.head.count} record(s), but a checkpointed head says it held "
                f"{max(beyond)}: at least {max(beyond) - tail.head.count} record(s) were cut from its end"
            ), "truncated")
        return _Scan(tail, anchored)

    def _check(self, raw: bytes, *, lineno: int, prev_hash: str) -> AuditRecord | str:
        """The record on this line if it is intact and linked, else why not."""
        if not raw.endswith(b"\n"):
            return f"line {lineno}: incomplete last line (no newline; truncated or interrupted write)"
        try:
            record = _parse_line(raw[:-1])
        except ValueError as exc:
            return f"line {lineno}: {exc}"
        if record.compute_hash(self._key) != record.hash:
            hint = ""
            if lineno == 1:
                hint = ", or the log is keyed otherwise" if self._key is not None else ", or the log is HMAC-keyed"
            return f"line {lineno}: hash mismatch (record seq {record.seq} was modified{hint})"
        if record.prev_hash != prev_hash:
            return (
                f"line {lineno}: prev_hash mismatch (seq {record.seq} does not follow the record before it; "
                "a record was deleted, reordered or inserted)"
            )
        if record.seq != lineno - 1:
            return f"line {lineno}: seq mismatch (expected {lineno - 1}, found {record.seq})"
        return record

    def _fsync_dir(self) -> None:
        """Make the new file's directory entry durable too."""
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _expected(heads: Iterable[Head]) -> dict[int, str]:
    """Expected hash by count; two different hashes for one count cannot both hold.

    Raises:
        ValueError: two heads disagree at one count (the checkpoints themselves conflict).
    """
    out: dict[int, str] = {}
    for head in heads:
        if head.count == 0:
            continue
        known = out.setdefault(head.count, head.hash)
        if known != head.hash:
            raise ValueError(f"two expected heads disagree at count {head.count}: {known} and {head.hash}")
    return out
