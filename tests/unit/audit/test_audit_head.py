"""The head of the chain kept elsewhere: ``verify(expect=...)`` catches a cut tail and a re-chained
rewrite that the chain alone cannot show, and a writer refuses to chain onto a file it finds cut,
altered or short of its anchored head (issue 11, failure 5)."""

from __future__ import annotations

import json
import multiprocessing
import resource
import signal
from pathlib import Path

import pytest

from openlfr.audit import metrics
from openlfr.audit.log import GENESIS_HASH, AuditLog, AuditLogError, AuditLogTamperedError, AuditRecord, Head


def _fill(log: AuditLog, n: int) -> list[AuditRecord]:
    return [
        log.append(actor="officer-1", action="deployment.threshold", target="dep-1", details={"i": i})
        for i in range(n)
    ]


def _head(record: AuditRecord) -> Head:
    return Head(count=record.seq + 1, hash=record.hash)


def _cut(path: Path, records: int) -> None:
    """Drop the last ``records`` whole lines, as an attacker who wants no broken link would."""
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-records]))


def _rechain(path: Path, *, edit_seq: int, key: bytes | None = None) -> None:
    """Edit one record and rebuild every hash after it: a chain that verifies on its own."""
    out, prev = [], GENESIS_HASH
    for line in path.read_bytes().splitlines():
        rec = AuditRecord.model_validate_json(line)
        details = {"i": 7} if rec.seq == edit_seq else rec.details  # same length
        rec = rec.model_copy(update={"details": details, "prev_hash": prev})
        rec = rec.model_copy(update={"hash": rec.compute_hash(key)})
        prev = rec.hash
        out.append(rec.to_line())
    path.write_bytes(b"".join(out))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ab" * 32 + ":7", Head(count=7, hash="ab" * 32)),
        (" " + "0f" * 32 + ":1\n", Head(count=1, hash="0f" * 32)),
        ("ab" * 32, ValueError),
        ("ab" * 32 + ":0", ValueError),
        ("ab" * 32 + ":-3", ValueError),
        ("AB" * 32 + ":3", ValueError),
        ("abc:3", ValueError),
        (":3", ValueError),
    ],
    ids=["ok", "spaces", "no-count", "zero", "negative", "upper-hex", "short-hash", "no-hash"],
)
def test_head_parses_hash_colon_count(text: str, expected: Head | type[Exception]) -> None:
    if isinstance(expected, Head):
        assert Head.parse(text) == expected and Head.parse(str(expected)) == expected
    else:
        with pytest.raises(expected, match="HASH:COUNT"):
            Head.parse(text)


def test_a_cut_tail_verifies_alone_but_not_against_its_head(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    written = _fill(AuditLog(path), 6)
    _cut(path, 2)

    assert AuditLog(path).verify().ok  # the chain alone cannot tell: why the head lives elsewhere
    result = AuditLog(path).verify(expect=[_head(written[2]), _head(written[-1])])
    assert (result.ok, result.records, result.first_broken, result.anchored) == (False, 4, 5, 1)
    assert "held 6" in result.reason and "at least 2 record(s) were cut" in result.reason
    assert result.head == _head(written[3])


def test_a_rechained_rewrite_verifies_alone_but_not_against_its_heads(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    written = _fill(AuditLog(path), 6)
    _rechain(path, edit_seq=1)

    assert AuditLog(path).verify().ok
    result = AuditLog(path).verify(expect=[_head(written[0]), _head(written[3]), _head(written[5])])
    assert (result.ok, result.first_broken, result.records, result.anchored) == (False, 4, 3, 1)
    assert "rewritten" in result.reason
    # Heads the rewrite left alone (before the edit) still hold.
    assert AuditLog(path).verify(expect=[_head(written[0])]).ok


def test_expected_heads_that_disagree_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _fill(AuditLog(path), 2)
    with pytest.raises(ValueError, match="disagree at count 2"):
        AuditLog(path).verify(expect=[Head(count=2, hash="ab" * 32), Head(count=2, hash="cd" * 32)])


def test_the_writer_refuses_to_chain_after_its_tail_was_cut(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    _fill(log, 5)
    before = metrics.REFUSED.labels("truncated")._value.get()
    _cut(path, 2)
    cut = path.read_bytes()

    with pytest.raises(AuditLogTamperedError, match="cut from its end") as refused:
        log.append(actor="officer-1", action="export", target="report-1", details={})
    assert refused.value.kind == "truncated"
    assert path.read_bytes() == cut  # nothing chained onto the cut log
    assert metrics.INTACT._value.get() == 0
    assert metrics.REFUSED.labels("truncated")._value.get() == before + 1
    # For good in this process, whichever AuditLog of the file asks, even once the file grows back.
    with pytest.raises(AuditLogTamperedError, match="cut from its end"):
        AuditLog(path).append(actor="officer-1", action="export", target="report-2", details={})
    assert path.read_bytes() == cut


def test_the_writer_refuses_to_chain_onto_an_altered_record(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    _fill(log, 4)
    size = path.stat().st_size
    _rechain(path, edit_seq=2)  # same length, every hash from seq 2 on rebuilt
    assert path.stat().st_size == size and AuditLog(path).verify().ok

    with pytest.raises(AuditLogTamperedError, match="altered") as refused:
        log.append(actor="officer-1", action="export", target="report-1", details={})
    assert refused.value.kind == "altered"
    assert len(path.read_bytes().splitlines()) == 4


def test_a_writer_checks_the_whole_chain_and_its_anchor_before_its_first_append(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    written = _fill(AuditLog(path), 5)
    anchor = _head(written[-1])
    _cut(path, 1)
    fresh = tmp_path / "copy.jsonl"  # a file this process has never touched: as a restarted service
    fresh.write_bytes(path.read_bytes())

    log = AuditLog(fresh)
    log.anchor([anchor])
    with pytest.raises(AuditLogTamperedError, match="held 5") as refused:
        log.check()
    assert refused.value.kind == "truncated"
    with pytest.raises(AuditLogTamperedError):
        log.append(actor="officer-1", action="export", target="report-1", details={})


def test_a_deleted_log_with_an_anchor_is_refused(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "gone.jsonl")
    log.anchor([Head(count=3, hash="ab" * 32)])
    with pytest.raises(AuditLogTamperedError, match="held 3"):
        log.append(actor="officer-1", action="export", target="report-1", details={})
    assert not log.path.exists()


def test_an_anchored_log_that_holds_its_head_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    written = _fill(AuditLog(path), 3)
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(path.read_bytes())
    log = AuditLog(copy)
    log.anchor([_head(written[0]), _head(written[2])])
    assert log.check() == _head(written[2])
    record = log.append(actor="officer-1", action="export", target="report-1", details={})
    assert record.seq == 3 and record.prev_hash == written[2].hash
    assert AuditLog(copy).verify(expect=[_head(written[2]), _head(record)]).ok


def test_hmac_keyed_chain_cannot_be_rebuilt_without_the_key(tmp_path: Path) -> None:
    key = b"k" * 32
    path = tmp_path / "audit.jsonl"
    written = _fill(AuditLog(path, key=key), 3)

    assert AuditLog(path, key=key).verify().ok
    unkeyed = AuditLog(path).verify()
    assert not unkeyed.ok and unkeyed.first_broken == 1 and "HMAC-keyed" in unkeyed.reason
    _rechain(path, edit_seq=1)  # an attacker without the key rebuilds with plain SHA-256
    forged = AuditLog(path, key=key).verify()
    assert (forged.ok, forged.first_broken) == (False, 1)
    assert written[0].hash == AuditRecord.model_validate_json(json.dumps(written[0].model_dump())).compute_hash(key)
    with pytest.raises(ValueError, match="at least 16 bytes"):
        AuditLog(path, key=b"short")


def _write_over_the_limit(path: str) -> None:
    log = AuditLog(Path(path))
    log.check()
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write then fails with EFBIG, as on a full disk
    resource.setrlimit(resource.RLIMIT_FSIZE, (Path(path).stat().st_size + 40, resource.RLIM_INFINITY))
    try:
        log.append(actor="officer-1", action="export", target="report-1", details={"pad": "x" * 200})
    except AuditLogError as exc:
        raise SystemExit(3 if "could not be written" in str(exc) else 4) from exc
    raise SystemExit(0)


def test_a_failed_write_leaves_no_partial_record_and_the_chain_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _fill(AuditLog(path), 2)
    before = path.read_bytes()
    child = multiprocessing.get_context("fork").Process(target=_write_over_the_limit, args=(str(path),))
    child.start()
    child.join(timeout=60)

    assert child.exitcode == 3  # refused as a write failure, not as tampering
    assert path.read_bytes() == before  # the partial line was cut off again
    assert AuditLog(path).append(actor="officer-1", action="export", target="r", details={}).seq == 2


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    from openlfr.cli import main

    code = main(["audit", "verify", *argv])
    return code, capsys.readouterr().out


def test_cli_verify_fails_on_a_missing_or_empty_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "audit.jsonl"
    code, out = _cli(capsys, str(path))
    assert code == 1 and "NOT VERIFIED: no such file" in out
    path.touch()
    code, out = _cli(capsys, str(path))
    assert code == 1 and "NOT VERIFIED: empty file" in out


def test_cli_verify_with_expect_head_catches_a_cut_tail(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "audit.jsonl"
    _fill(AuditLog(path), 5)
    code, out = _cli(capsys, str(path))
    head = out.split("head ")[1].split()[0].rstrip(";,")  # printed for the operator to keep elsewhere
    assert code == 0 and Head.parse(head).count == 5
    _cut(path, 2)

    code, out = _cli(capsys, str(path))
    assert code == 0  # the chain alone: intact
    code, out = _cli(capsys, str(path), "--expect-head", head)
    assert code == 1 and "BROKEN at line 4" in out and "at least 2 record(s) were cut" in out
    with pytest.raises(SystemExit) as bad:
        _cli(capsys, str(path), "--expect-head", "not-a-head")
    assert bad.value.code == 2
