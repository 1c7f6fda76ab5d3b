"""Anchors through the REAL console script: `check` anchors each decision in the file named by
`[audit] anchor_file`, and `audit verify` (from the configuration or `--anchors`/`--anchor-key`) exits 1
on every kind of rewrite an attacker with raw write access to the audit file can make, naming the
anchor line and the row; without anchors it says what it cannot see."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from rpoguard.anchor import AnchorWriter, format_line
from rpoguard.audit import GENESIS_HASH, AuditEntry, AuditRow, chain_hash
from rpoguard.db.sqlite import SqliteStore, audit_path

Cli = Callable[..., Any]
KEY = b"an-anchor-key-of-32-bytes-000000"
# The console script here runs on the test's SQLite file (RPOGUARD_DB) and the attacks edit that file;
# the same anchor checks on PostgreSQL's chain are in tests/unit/test_anchor.py (both backends).
pytestmark = pytest.mark.sqlite_only
COLUMNS = (
    "seq, decision_id, ts_us, number, raw_number, campaign_id, principal_id, caller_id, decision,"
    " reasons, basis, evidence, source, uniqueid, channel, prev_hash, hash, recorded_us"
)


@pytest.fixture
def anchors(tmp_path: Path) -> Path:
    folder = tmp_path / "log"
    folder.mkdir()
    return folder / "anchors"


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "etc" / "anchor.key"
    path.parent.mkdir()
    path.write_bytes(KEY + b"\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def config(write_file: Callable[..., Path], anchors: Path, key_file: Path) -> Path:
    return write_file("rpoguard.toml", f'[audit]\nanchor_file = "{anchors}"\nanchor_key_file = "{key_file}"\n')


@pytest.fixture
def logged(store: SqliteStore, run: Callable, make_entry: Callable[..., AuditEntry],
           anchors: Path) -> Iterator[list[AuditRow]]:
    """Eight decisions through the store's real writer, each its own group, anchored with the key."""
    anchored = SqliteStore(store.path, anchor=AnchorWriter(anchors, KEY))
    run(anchored.open())
    try:
        yield [run(anchored.append_decision(make_entry())) for _ in range(8)]
    finally:
        run(anchored.close())


def attacker(db: Path) -> sqlite3.Connection:
    con = sqlite3.connect(audit_path(db), isolation_level=None)
    con.execute("DROP TRIGGER IF EXISTS audit_log_no_update")
    con.execute("DROP TRIGGER IF EXISTS audit_log_no_delete")
    return con


def rewrite_from(con: sqlite3.Connection, first: int) -> None:
    """Turn row `first` into an ALLOW on consent and recompute every hash from it on."""
    rows = [AuditRow(r[0], AuditEntry(*r[1:15]), r[15], r[16], r[17])
            for r in con.execute(f"SELECT {COLUMNS} FROM audit_log ORDER BY seq")]
    prev = rows[first - 2].hash if first > 1 else GENESIS_HASH
    for row in rows[first - 1:]:
        entry = row.entry
        if row.seq == first:
            entry = dataclasses.replace(entry, decision="allow", reasons="", basis="consent")
        digest = chain_hash(row.seq, entry, prev, row.recorded_us)
        con.execute("UPDATE audit_log SET decision = ?, reasons = ?, basis = ?, prev_hash = ?, hash = ?"
                    " WHERE seq = ?", (entry.decision, entry.reasons, entry.basis, prev, digest, row.seq))
        prev = digest


def verify(run_cli: Cli, *extra: str | Path, config: Path | None = None) -> tuple[int, str]:
    code, out, err = run_cli(*(("--config", config) if config else ()), "audit", "verify", *extra)
    assert "Traceback" not in err, err
    return code, out


def test_checks_are_anchored_and_verify_reads_the_configuration(
    run_cli: Cli, config: Path, anchors: Path
) -> None:
    for args in (("principal", "add", "acme", "--name", "ACME"),
                 ("campaign", "add", "spring26", "--principal", "acme")):
        assert run_cli("--config", config, *args).code == 0
    for n, number in enumerate(("06 4567 8901", "02 1234 5678", "333 123 4567"), start=1):
        # Recorded now (a simulation with --at would record nothing): the decision itself does not matter.
        code, out, err = run_cli("--config", config, "check", number, "--campaign", "spring26", "--json")
        assert code in (0, 1), err
        assert json.loads(out)["recorded"] is True
        # The second witness reaches the system log (stderr under systemd) without -v.
        assert f"INFO rpoguard.audit.anchor: audit chain head: row {n} hash " in err
    lines = anchors.read_text(encoding="ascii").splitlines()
    assert [line.split(" ")[0] for line in lines] == ["1", "2", "3"]
    assert all(len(line.split(" ")) == 4 for line in lines)  # seq hash time hmac

    code, out = verify(run_cli, config=config)
    assert code == 0, out
    assert out.startswith("audit log intact: 3 decision(s), head ")
    assert f"anchors: 3 line(s) in {anchors}, 3 matched the log, HMACs checked; last anchor: row 3" in out
    assert "WARNING" not in out

    # A copy shipped off the machine is checked with the configured key too.
    copy = anchors.with_name("offsite-copy")
    copy.write_bytes(anchors.read_bytes())
    code, out = verify(run_cli, "--anchors", copy, config=config)
    assert code == 0, out
    assert f"anchors: 3 line(s) in {copy}, 3 matched the log, HMACs checked" in out


@pytest.mark.parametrize(
    ("attack", "expected"),
    [
        ("tail", ["line 8 (row 8): row 8 was anchored at ",
                  "but the log ends at row 5: rows were removed from the end"]),
        ("rewrite", ["line 3 (row 3): row 3 does not have the hash anchored at ",
                     "rows 3 to 3 were changed and the chain rewritten", "line 8 (row 8)"]),
        ("edit", ["line 6 (row 6): row 6 does not have the hash anchored", "rows 6 to 6 were changed",
                  "line 8 (row 8)"]),
    ],
)
def test_verify_with_anchors_catches_what_the_chain_alone_misses(
    run_cli: Cli, db_path: Path, logged: list[AuditRow], anchors: Path, key_file: Path, attack: str,
    expected: list[str]
) -> None:
    con = attacker(db_path)
    try:
        if attack == "tail":
            con.execute("DELETE FROM audit_log WHERE seq > 5")
        else:
            # "rewrite": the whole chain from row 3 on; "edit": one row, every later hash recomputed.
            rewrite_from(con, 3 if attack == "rewrite" else 6)
    finally:
        con.close()

    code, out = verify(run_cli)
    assert code == 0, "the hash chain alone cannot see this, which is why anchors are needed"
    assert "only the hash chain was checked" in out

    code, out = verify(run_cli, "--anchors", anchors, "--anchor-key", key_file)
    assert code == 1, out
    assert out.startswith("audit log BROKEN: the hash chain holds")
    for text in expected:
        assert text in out, out


def test_forged_anchor_line_is_caught_only_with_the_key(
    run_cli: Cli, db_path: Path, logged: list[AuditRow], anchors: Path, key_file: Path
) -> None:
    con = attacker(db_path)
    try:
        con.execute("DELETE FROM audit_log WHERE seq > 6")
    finally:
        con.close()
    # Hide the removal: drop the lines past row 6 and vouch for the new end with a line of one's own.
    lines = anchors.read_text(encoding="ascii").splitlines()[:5]
    forged = format_line(6, logged[5].hash, datetime.now(UTC), b"a-guess-at-the-key-000000000000")
    anchors.write_text("\n".join([*lines, forged]) + "\n", encoding="ascii")

    code, out = verify(run_cli, "--anchors", anchors, "--anchor-key", key_file)
    assert code == 1, out
    assert "line 6 (row 6): HMAC does not match: the line was forged or altered" in out

    code, out = verify(run_cli, "--anchors", anchors)
    assert code == 0, out
    assert "6 line(s) carry an HMAC that was not checked: give --anchor-key" in out


def test_a_missing_anchor_folder_does_not_hold_up_decisions(
    run_cli: Cli, write_file: Callable[..., Path], tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere" / "anchors"
    config = write_file("broken.toml", f'[audit]\nanchor_file = "{missing}"\n')
    assert run_cli("--config", config, "principal", "add", "acme", "--name", "ACME").code == 0
    assert run_cli("--config", config, "campaign", "add", "spring26", "--principal", "acme").code == 0
    code, out, err = run_cli("--config", config, "check", "06 4567 8901", "--campaign", "spring26", "--json")
    assert code in (0, 1), err
    assert json.loads(out)["recorded"] is True
    assert err.count("cannot write the audit anchor") == 1
    assert "Decisions are still recorded and answered" in err

    # The configured protection did not work: verify says so and fails, naming the file.
    code, out = verify(run_cli, config=config)
    assert code == 1, out
    assert "anchor file: the anchor file does not exist, yet the log has 1 row(s)" in out


def test_audit_anchor_anchors_an_existing_log_once_and_refuses_a_tampered_one(
    run_cli: Cli, db_path: Path, store: SqliteStore, run: Callable, make_entry: Callable[..., AuditEntry],
    anchors: Path, key_file: Path
) -> None:
    rows = [run(store.append_decision(make_entry())) for _ in range(4)]  # no anchors configured
    code, out, err = run_cli("audit", "anchor", "--anchors", anchors, "--anchor-key", key_file)
    assert code == 0, (out, err)
    assert f"anchored: row 4 head {rows[-1].hash} in {anchors} with HMAC" in out
    assert "audit chain head: row 4" in err
    code, out, _ = run_cli("audit", "anchor", "--anchors", anchors, "--anchor-key", key_file)
    assert (code, out.startswith("already anchored")) == (0, True)
    assert len(anchors.read_text(encoding="ascii").splitlines()) == 1
    assert verify(run_cli, "--anchors", anchors, "--anchor-key", key_file)[0] == 0

    con = attacker(db_path)
    try:
        rewrite_from(con, 2)
    finally:
        con.close()
    code, out, _ = run_cli("audit", "anchor", "--anchors", anchors, "--anchor-key", key_file)
    assert code == 1
    assert f"not anchored: the log does not verify against {anchors}" in out
    assert len(anchors.read_text(encoding="ascii").splitlines()) == 1


def test_anchor_option_errors(run_cli: Cli, config: Path, key_file: Path, anchors: Path) -> None:
    assert run_cli("db", "migrate").code == 0  # the audit commands only read: they need a database
    code, _, err = run_cli("audit", "verify", "--anchor-key", key_file)
    assert code == 2
    assert "give --anchors FILE too" in err
    code, _, err = run_cli("audit", "anchor")
    assert code == 2
    assert "no anchor file" in err
    key_file.chmod(0o644)
    code, _, err = run_cli("--config", config, "audit", "verify")
    assert code == 2
    assert "chmod 600" in err
    assert "Traceback" not in err


def test_verify_help_says_what_an_auditor_checks(run_cli: Cli) -> None:
    code, out, _ = run_cli("audit", "verify", "--help")
    assert code == 0
    flat = " ".join(out.split())
    for text in ("--anchors FILE", "--anchor-key FILE", "rows removed from the end", "valid HMAC",
                 "journalctl -u rpoguard", "What an auditor checks"):
        assert text in flat, text
    code, out, _ = run_cli("audit", "--help")
    assert "anchor" in out
