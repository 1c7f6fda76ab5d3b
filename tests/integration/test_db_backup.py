"""`rpoguard db backup FILE`: an online copy of the SQLite database and its decision log, and the restore drill.

A backup opens with `--db FILE` and verifies with `audit verify`; one taken while decisions are appended by
another process verifies and is a prefix of the live log; restored in place of the database, `check` works and
the next decision chains onto the backup's head. Refusals (existing FILE, PostgreSQL, unwritable folder) are one
line and exit 2.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import sqlite3
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rpoguard.audit import AuditEntry
from rpoguard.db.sqlite import SqliteStore, audit_path
from support.serve_process import prepare_db

Cli = Callable[..., Any]
HEAD = re.compile(r"head ([0-9a-f]{64})")


def verify(run_cli: Cli, db: Path) -> tuple[int, str]:
    """`audit verify --json` on db: (rows, head); fails the test unless the log is intact."""
    result = run_cli("--db", db, "audit", "verify", "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["intact"] is True, report
    return report["rows"], report["head"]


def export(run_cli: Cli, db: Path) -> list[dict[str, Any]]:
    result = run_cli("--db", db, "audit", "export", "--format", "jsonl")
    assert result.code == 0, result.err
    return [json.loads(line) for line in result.out.splitlines()]


def record_check(run_cli: Cli, db: Path, number: str = "06 4567 8901") -> None:
    result = run_cli("--db", db, "check", number, "--campaign", "autunno26", "--json")
    assert result.code in (0, 1), result.err
    assert json.loads(result.out)["recorded"] is True


def backup(run_cli: Cli, db: Path, target: Path, *extra: str) -> Any:
    return run_cli("--db", db, "db", "backup", target, *extra)


def test_backup_opens_and_verifies_with_the_same_head(run_cli: Cli, tmp_path: Path, db_path: Path) -> None:
    prepare_db(run_cli, db_path)
    for number in ("06 4567 8901", "333 123 4567", "02 1234 5678"):
        record_check(run_cli, db_path, number)
    rows, head = verify(run_cli, db_path)
    assert rows == 3
    target = tmp_path / "copies" / "monday.db"
    target.parent.mkdir()

    result = backup(run_cli, db_path, target)

    assert result.code == 0, result.err
    assert str(target) in result.out and str(audit_path(target)) in result.out
    assert f"3 row(s), head {head}, intact" in result.out
    for path in (target, audit_path(target)):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert f"({path.stat().st_size} bytes)" in result.out
    # Only the two files: no temporary or write-ahead file left behind.
    assert sorted(p.name for p in target.parent.iterdir()) == ["monday.audit.db", "monday.db"]
    assert verify(run_cli, target) == (rows, head)
    # The facts came along: the same decision for the same call, from the copy.
    listed = run_cli("--db", target, "principal", "list")
    assert listed.code == 0, listed.err
    assert "acme" in listed.out
    assert export(run_cli, target) == export(run_cli, db_path)


def _append_until(db: Path, stop: threading.Event, written: list[int], errors: list[BaseException],
                  make_entry: Callable[..., AuditEntry]) -> None:
    """Another writer of the database (its own store, its own event loop, in a thread): decisions appended one
    after the other until told to stop."""
    async def main() -> None:
        store = SqliteStore(db, create=False)
        await store.open()
        try:
            while not stop.is_set():
                await store.append_decision(make_entry(campaign_id="autunno26"))
                written.append(1)
        finally:
            await store.close()

    try:
        asyncio.run(main())
    except BaseException as exc:  # reported by the test, not lost in the thread
        errors.append(exc)


def test_backup_during_appends_verifies_and_is_a_prefix(run_cli: Cli, tmp_path: Path, db_path: Path,
                                                        make_entry: Callable[..., AuditEntry]) -> None:
    prepare_db(run_cli, db_path)
    stop, written, errors = threading.Event(), [], []
    writer = threading.Thread(target=_append_until, args=(db_path, stop, written, errors, make_entry))
    writer.start()
    try:
        while len(written) < 50 and not errors and writer.is_alive():
            stop.wait(0.01)
        before = len(written)
        target = tmp_path / "during.db"
        result = backup(run_cli, db_path, target)
        after = len(written)
        # Keep writing for a while after the backup: the live log moves on past the copy.
        while len(written) < after + 50 and not errors and writer.is_alive():
            stop.wait(0.01)
    finally:
        stop.set()
        writer.join()
    assert not errors, errors
    assert result.code == 0, result.err
    rows, head = verify(run_cli, target)
    assert before <= rows <= after
    assert f"{rows} row(s), head {head}, intact" in result.out
    live = export(run_cli, db_path)
    assert len(live) > rows
    # The copy is the live log as it stood at one moment: every row identical, the head one of the live rows.
    assert export(run_cli, target) == live[:rows]
    assert live[rows - 1]["hash"] == head


def test_restore_drill(run_cli: Cli, tmp_path: Path, db_path: Path) -> None:
    prepare_db(run_cli, db_path)
    record_check(run_cli, db_path)
    record_check(run_cli, db_path, "333 123 4567")
    target = tmp_path / "backup" / "rpoguard.db"
    target.parent.mkdir()
    assert backup(run_cli, db_path, target).code == 0
    rows, head = verify(run_cli, target)
    # Decisions after the backup: lost by the restore, as the operator is told in the README.
    record_check(run_cli, db_path, "02 1234 5678")

    # The drill: stop using the original (moved aside), put the backup in its place, both files.
    lost = tmp_path / "lost"
    lost.mkdir()
    for path in (db_path, audit_path(db_path)):
        shutil.move(path, lost / path.name)
    shutil.move(target, db_path)
    shutil.move(audit_path(target), audit_path(db_path))

    assert verify(run_cli, db_path) == (rows, head)
    record_check(run_cli, db_path, "02 1234 5678")
    new_rows, _ = verify(run_cli, db_path)
    assert new_rows == rows + 1
    last = export(run_cli, db_path)[-1]
    assert (last["seq"], last["prev_hash"]) == (rows + 1, head)


def test_a_broken_log_is_copied_as_it_is_and_exits_1(run_cli: Cli, tmp_path: Path, db_path: Path) -> None:
    prepare_db(run_cli, db_path)
    record_check(run_cli, db_path)
    record_check(run_cli, db_path, "333 123 4567")
    con = sqlite3.connect(audit_path(db_path))
    with con:
        con.execute("DROP TRIGGER audit_log_no_update")
        con.execute("UPDATE audit_log SET raw_number = 'changed' WHERE seq = 1")
    con.close()
    target = tmp_path / "copy.db"

    result = backup(run_cli, db_path, target)

    assert result.code == 1, result.err
    assert "2 row(s)" in result.out and "NOT INTACT" in result.out
    # Kept as evidence: the copy shows the same break.
    assert run_cli("--db", target, "audit", "verify").code == 1
    assert export(run_cli, target) == export(run_cli, db_path)


def test_existing_file_refused_without_force(run_cli: Cli, tmp_path: Path, db_path: Path) -> None:
    prepare_db(run_cli, db_path)
    target = tmp_path / "copy.db"
    assert backup(run_cli, db_path, target).code == 0
    record_check(run_cli, db_path)
    before = target.read_bytes()

    refused = backup(run_cli, db_path, target)
    assert refused.code == 2
    assert refused.err.strip() == f"rpoguard: db backup: {target} already exists; give --force to replace it"
    assert target.read_bytes() == before
    # The log alone beside the name counts too: it would be overwritten.
    target.unlink()
    assert backup(run_cli, db_path, target).code == 2
    assert not target.exists()

    forced = backup(run_cli, db_path, target, "--force")
    assert forced.code == 0, forced.err
    assert verify(run_cli, target) == verify(run_cli, db_path)
    assert verify(run_cli, target)[0] == 1


def test_a_database_in_use_is_never_replaced(run_cli: Cli, tmp_path: Path, db_path: Path) -> None:
    prepare_db(run_cli, db_path)
    target = tmp_path / "copy.db"
    assert backup(run_cli, db_path, target).code == 0
    before = target.read_bytes()
    # A write-ahead log beside it: something has it open (or it was not closed cleanly).
    wal = audit_path(target).with_name(audit_path(target).name + "-wal")
    wal.write_bytes(b"")

    result = backup(run_cli, db_path, target, "--force")

    assert result.code == 2
    assert result.err.strip().splitlines() == [
        f"rpoguard: db backup: {wal} exists: the database at {target} is in use or was not closed cleanly; "
        "stop what uses it or name another file"]
    assert target.read_bytes() == before


def test_the_database_itself_is_never_the_destination(run_cli: Cli, db_path: Path) -> None:
    prepare_db(run_cli, db_path)
    record_check(run_cli, db_path)
    before = verify(run_cli, db_path)
    result = backup(run_cli, db_path, db_path, "--force")
    assert result.code == 2
    assert "is the database being backed up" in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert verify(run_cli, db_path) == before


def test_postgresql_refused_with_the_pg_dump_hint(run_cli: Cli, tmp_path: Path) -> None:
    result = run_cli("--db", "postgresql://rpoguard:s3cret@127.0.0.1:1/rpoguard", "db", "backup",
                     tmp_path / "x.db")
    assert result.code == 2
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert "pg_dump --format=custom" in lines[0]
    assert "s3cret" not in result.err
    assert not (tmp_path / "x.db").exists()


def test_unwritable_destination_is_one_line(run_cli: Cli, tmp_path: Path, db_path: Path) -> None:
    prepare_db(run_cli, db_path)
    not_a_folder = tmp_path / "plain.txt"
    not_a_folder.write_text("x")
    for target in (not_a_folder / "backup.db", tmp_path / "missing" / "backup.db"):
        result = backup(run_cli, db_path, target)
        assert result.code == 2
        lines = result.err.strip().splitlines()
        assert len(lines) == 1, result.err
        assert lines[0].startswith(f"rpoguard: db backup: cannot write beside {target}: "), lines[0]
        assert "Traceback" not in result.err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["plain.txt", db_path.name, audit_path(db_path).name])


def test_failed_copy_leaves_no_file(run_cli: Cli, tmp_path: Path) -> None:
    broken = tmp_path / "broken.db"
    broken.write_bytes(b"not a database at all" * 100)
    audit_path(broken).write_bytes(b"not a database either" * 100)
    out = tmp_path / "out"
    out.mkdir()
    result = backup(run_cli, broken, out / "copy.db")
    assert result.code == 2
    assert len(result.err.strip().splitlines()) == 1, result.err
    assert "Traceback" not in result.err
    # Neither the name given nor a temporary file: an interrupted or failed backup leaves nothing.
    assert list(out.iterdir()) == []


def test_missing_database_is_not_created(run_cli: Cli, tmp_path: Path) -> None:
    result = backup(run_cli, tmp_path / "nothing.db", tmp_path / "copy.db")
    assert result.code == 2
    assert "database not found" in result.err
    assert sorted(p.name for p in tmp_path.iterdir()) == []
