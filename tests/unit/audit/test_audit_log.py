"""The hash-chained audit log: appends chain, tampering is found at the first broken line, writers do not fork it."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from openlfr.audit.log import GENESIS_HASH, AuditLog, AuditLogError, AuditRecord, canonical_json


def _fill(log: AuditLog, n: int = 5) -> list[AuditRecord]:
    return [
        log.append(actor="officer-1", action="subject.enrol", target=f"subject-{i}", details={"i": i, "tag": "ü"})
        for i in range(n)
    ]


def test_appends_chain_and_verify(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    written = _fill(log)

    assert [r.seq for r in written] == [0, 1, 2, 3, 4]
    assert written[0].prev_hash == GENESIS_HASH
    assert all(b.prev_hash == a.hash for a, b in zip(written, written[1:]))
    assert all(r.hash == r.compute_hash() for r in written)
    assert list(log.records()) == written
    result = log.verify()
    assert (result.ok, result.records, result.first_broken, result.reason) == (True, 5, None, "")


def test_hash_is_over_canonical_json_of_all_other_fields(tmp_path: Path) -> None:
    record = AuditLog(tmp_path / "a.jsonl").append(
        actor="a", action="export", target="exp-1", details={"b": 1, "a": [1.5, None]}, ts=1700000000.25
    )
    fields = record.model_dump(mode="json", exclude={"hash"})
    expected = hashlib.sha256(
        json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    )
    assert record.hash == expected.hexdigest()
    assert canonical_json({"b": 1, "a": "é"}) == '{"a":"é","b":1}'.encode()


@pytest.mark.parametrize(
    ("path_kind", "reason_has"),
    [("missing", "no such file"), ("empty", "empty file")],
)
def test_missing_or_empty_file_fails_verification(tmp_path: Path, path_kind: str, reason_has: str) -> None:
    # A log that has been written holds at least one record: a missing or emptied one is not "intact".
    path = tmp_path / "audit.jsonl"
    if path_kind == "empty":
        path.touch()
    result = AuditLog(path).verify()
    assert (result.ok, result.records, result.first_broken) == (False, 0, None)
    assert reason_has in result.reason
    assert list(AuditLog(path).records()) == []


def _edit_detail(lines: list[str]) -> list[str]:
    rec = json.loads(lines[1])
    rec["details"]["i"] = 99
    lines[1] = json.dumps(rec)
    return lines


def _delete_line_3(lines: list[str]) -> list[str]:
    return lines[:2] + lines[3:]


def _swap_lines_2_3(lines: list[str]) -> list[str]:
    lines[1], lines[2] = lines[2], lines[1]
    return lines


def _truncate_last(lines: list[str]) -> list[str]:
    lines[-1] = lines[-1][: len(lines[-1]) // 2]
    return lines


def _insert_forged(lines: list[str]) -> list[str]:
    rec = AuditRecord.model_validate_json(lines[1])
    forged = rec.model_copy(update={"seq": 2, "target": "forged", "prev_hash": "ab" * 32})
    forged = forged.model_copy(update={"hash": forged.compute_hash()})
    return lines[:2] + [forged.to_line().decode().rstrip("\n")] + lines[2:]


def _blank_line(lines: list[str]) -> list[str]:
    return lines[:3] + [""] + lines[3:]


def _renumber_seq(lines: list[str]) -> list[str]:
    # Every field rewritten and rehashed consistently except that seq skips: only seq shows it.
    out: list[str] = []
    prev = GENESIS_HASH
    for n, line in enumerate(lines):
        rec = AuditRecord.model_validate_json(line)
        rec = rec.model_copy(update={"seq": n if n < 3 else n + 1, "prev_hash": prev})
        rec = rec.model_copy(update={"hash": rec.compute_hash()})
        prev = rec.hash
        out.append(rec.to_line().decode().rstrip("\n"))
    return out


@pytest.mark.parametrize(
    ("tamper", "first_broken", "records", "reason_has"),
    [
        (_edit_detail, 2, 1, "hash mismatch"),
        (_delete_line_3, 3, 2, "prev_hash mismatch"),
        (_swap_lines_2_3, 2, 1, "prev_hash mismatch"),
        (_truncate_last, 5, 4, "not a valid record"),
        (_insert_forged, 3, 2, "prev_hash mismatch"),
        (_blank_line, 4, 3, "not a valid record"),
        (_renumber_seq, 4, 3, "seq mismatch"),
    ],
    ids=["edit-detail", "delete", "swap", "truncate", "insert-forged", "blank-line", "seq-gap"],
)
def test_tampering_is_found_at_first_broken_line(
    tmp_path: Path,
    tamper: Callable[[list[str]], list[str]],
    first_broken: int,
    records: int,
    reason_has: str,
) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    _fill(log)
    lines = tamper(path.read_text(encoding="utf-8").splitlines())
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")

    result = log.verify()

    assert not result.ok
    assert result.first_broken == first_broken
    assert result.records == records
    assert reason_has in result.reason
    assert f"line {first_broken}" in result.reason


def test_interrupted_write_without_newline_is_broken_and_blocks_append(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    _fill(log, 3)
    data = path.read_bytes()
    path.write_bytes(data[:-10])

    result = log.verify()
    assert (result.ok, result.first_broken, result.records) == (False, 3, 2)
    assert "incomplete" in result.reason
    with pytest.raises(AuditLogError, match="cut from its end"):  # this process wrote those bytes
        log.append(actor="a", action="export", target="t", details={})
    assert path.read_bytes() == data[:-10]


def test_records_names_the_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _fill(AuditLog(path), 2)
    with path.open("a") as fh:
        fh.write("{not json\n")
    with pytest.raises(ValueError, match="line 3"):
        list(AuditLog(path).records())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"actor": "a", "action": "subject.erase", "target": "t", "details": {}}, "action"),
        ({"actor": "", "action": "export", "target": "t", "details": {}}, "actor"),
        ({"actor": "   ", "action": "export", "target": "t", "details": {}}, "actor"),
        ({"actor": "a", "action": "export", "target": "", "details": {}}, "target"),
        ({"actor": "a", "action": "export", "target": "t", "details": {"x": object()}}, "details"),
        ({"actor": "a", "action": "export", "target": "t", "details": {"x": float("nan")}}, "JSON|NaN|nan"),
        ({"actor": "a", "action": "export", "target": "t", "details": {}, "ts": float("inf")}, "ts"),
    ],
    ids=["action", "empty-actor", "blank-actor", "empty-target", "non-json", "nan", "inf-ts"],
)
def test_invalid_input_is_refused_and_nothing_written(tmp_path: Path, kwargs: dict, match: str) -> None:
    path = tmp_path / "audit.jsonl"
    with pytest.raises(ValueError, match=match):
        AuditLog(path).append(**kwargs)
    assert not path.exists()


def test_threads_do_not_fork_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"

    def worker(name: str) -> None:
        log = AuditLog(path)  # one instance per thread: the per-process lock is shared by path
        for i in range(50):
            log.append(actor=name, action="alert.review", target=f"alert-{i}", details={"i": i})

    threads = [threading.Thread(target=worker, args=(f"t{k}",)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    result = AuditLog(path).verify()
    assert (result.ok, result.records) == (True, 100), result.reason
    assert sorted(r.seq for r in AuditLog(path).records()) == list(range(100))


def _process_worker(path: str, name: str, n: int) -> None:
    log = AuditLog(Path(path))
    for i in range(n):
        log.append(actor=name, action="deployment.threshold", target="dep-1", details={"i": i})


def test_processes_do_not_fork_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    # fork, because --import-mode=importlib leaves this module unimportable by a spawned child
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_process_worker, args=(str(path), f"p{k}", 20)) for k in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0]

    result = AuditLog(path).verify()
    assert (result.ok, result.records) == (True, 40), result.reason
    records = list(AuditLog(path).records())
    assert sorted(r.seq for r in records) == list(range(40))
    assert {r.actor for r in records} == {"p0", "p1"}


def test_cli_audit_verify_reports_the_first_broken_link(tmp_path: Path) -> None:
    import subprocess
    import sys

    log = AuditLog(tmp_path / "audit.jsonl")
    for i in range(3):
        log.append(actor="officer-1", action="subject.enrol", target=f"s-{i}", details={"n": i})
    cmd = [sys.executable, "-m", "openlfr.cli", "audit", "verify", str(tmp_path / "audit.jsonl")]
    ok = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert ok.returncode == 0 and "3 record(s)" in ok.stdout
    lines = (tmp_path / "audit.jsonl").read_text().splitlines()
    lines[1] = lines[1].replace('"n":1', '"n":7')
    (tmp_path / "audit.jsonl").write_text("\n".join(lines) + "\n")
    bad = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 1 and "line 2" in bad.stdout and "hash" in bad.stdout
