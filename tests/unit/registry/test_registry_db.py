"""The registry's SQLite database: WAL, foreign keys, schema version, threads."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from openlfr.registry.db import SCHEMA_VERSION, RegistryDb
from openlfr.registry.exceptions import RegistryDbError


def _watchlist(db: RegistryDb, watchlist_id: str) -> None:
    with db.transaction() as conn:
        conn.execute(
            "INSERT INTO watchlists (id, name, description, created_by, created_ts, updated_ts) "
            "VALUES (?, ?, '', 'a', 0, 0)",
            (watchlist_id, watchlist_id),
        )


def test_a_file_database_uses_wal_and_foreign_keys(tmp_path: Path) -> None:
    db = RegistryDb(tmp_path / "sub" / "registry.sqlite3")
    assert db.one("PRAGMA journal_mode")[0] == "wal"
    assert db.one("PRAGMA foreign_keys")[0] == 1
    assert db.schema_version == SCHEMA_VERSION
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"), db.transaction() as conn:
        conn.execute(
            "INSERT INTO subjects (id, watchlist_id, display_name, category, reason, legal_basis, added_by, status, "
            "expires_ts, created_ts, updated_ts) VALUES ('s', 'nope', 'n', 'wanted', 'r', 'l', 'a', 'active', 1, 0, 0)"
        )
    db.close()


def test_reopening_keeps_the_rows_and_the_version(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite3"
    db = RegistryDb(path)
    _watchlist(db, "wl-1")
    db.close()
    again = RegistryDb(path)
    assert [r["id"] for r in again.all("SELECT id FROM watchlists")] == ["wl-1"]
    # One row per version applied when it was created; reopening applies none again.
    versions = [r["version"] for r in again.all("SELECT version FROM schema_version ORDER BY version")]
    assert versions == list(range(1, SCHEMA_VERSION + 1))
    again.close()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite3"
    RegistryDb(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO schema_version VALUES (?, 0)", (SCHEMA_VERSION + 1,))
    with pytest.raises(RegistryDbError, match=f"schema version {SCHEMA_VERSION + 1} is newer"):
        RegistryDb(path)


def test_a_failed_transaction_is_rolled_back_and_checks_hold() -> None:
    db = RegistryDb(":memory:")
    with pytest.raises(RuntimeError), db.transaction() as conn:
        conn.execute("INSERT INTO watchlists (id, name, description, created_by, created_ts, updated_ts) "
                     "VALUES ('wl-1', 'n', '', 'a', 0, 0)")
        raise RuntimeError("boom")
    assert db.all("SELECT * FROM watchlists") == []
    _watchlist(db, "wl-1")
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"), db.transaction() as conn:
        conn.execute(
            "INSERT INTO subjects VALUES ('s', 'wl-1', 'n', 'shoplifter', 'r', 'l', 'a', 'active', 1, 0, 0)"
        )
    assert db.ready() == (True, "ok")
    db.close()


def test_threads_share_one_connection(tmp_path: Path) -> None:
    db = RegistryDb(tmp_path / "registry.sqlite3")
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            for i in range(20):
                _watchlist(db, f"wl-{k}-{i}")
                db.all("SELECT COUNT(*) FROM watchlists")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert db.one("SELECT COUNT(*) AS n FROM watchlists")["n"] == 80
    db.close()
