"""rpoguard.anchor over the real decision writer (SqliteStore.append_decision): one anchor line per group
commit, and an attacker with raw write access to the audit file who drops the append-only triggers is
caught by the anchors where the hash chain alone is not (rows removed from the end, a chain rewritten
with every hash recomputed). Forged anchor lines are caught by their HMAC; an anchor file that cannot be
written never holds up a decision and is logged once per cause."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from rpoguard import anchor
from rpoguard.anchor import (
    NO_ANCHORS_WARNING,
    WITNESS_LOGGER,
    AnchorReport,
    AnchorWriter,
    format_line,
    line_mac,
    load_key,
    parse_line,
    report_lines,
    verify_anchored,
    writer_from_config,
)
from rpoguard.audit import GENESIS_HASH, AuditEntry, AuditRow, VerifyReport, chain_hash, verify_chain
from rpoguard.config import AuditConfig, ConfigError, load_config
from rpoguard.db import open_store
from rpoguard.db.sqlite import SqliteStore
from rpoguard.db.store import Store
from support.rawdb import RawDb

KEY = b"0123456789abcdef0123456789abcdef"
COLUMNS = (
    "seq, decision_id, ts_us, number, raw_number, campaign_id, principal_id, caller_id, decision,"
    " reasons, basis, evidence, source, uniqueid, channel, prev_hash, hash, recorded_us"
)


@pytest.fixture
def anchor_file(tmp_path: Path) -> Path:
    folder = tmp_path / "log"  # a folder of its own, as /var/log/rpoguard beside /var/lib/rpoguard
    folder.mkdir()
    return folder / "anchors"


@pytest.fixture
def writer(anchor_file: Path) -> AnchorWriter:
    """Anchoring on, with a key."""
    return AnchorWriter(anchor_file, KEY)


@pytest.fixture
def open_anchored(store_url: str, run: Callable) -> Iterator[Callable[[AnchorWriter | None], Store]]:
    """Opens another store on this test's database whose decision writer anchors with the given writer (as
    the CLI builds it from the configuration); each is closed after the test."""
    opened: list[Store] = []

    def opener(writer: AnchorWriter | None) -> Store:
        store = open_store(store_url, anchor=writer)
        run(store.open())
        opened.append(store)
        return store

    try:
        yield opener
    finally:
        for store in reversed(opened):
            run(store.close())


@pytest.fixture
def anchored(open_anchored: Callable[[AnchorWriter | None], Store], writer: AnchorWriter) -> Store:
    """A store on this test's database that anchors every group commit with `writer`."""
    return open_anchored(writer)


def append(run: Callable, store: SqliteStore, entries: list[AuditEntry]) -> list[AuditRow]:
    """One group per entry (each append awaited before the next)."""
    return [run(store.append_decision(entry)) for entry in entries]


def append_group(run: Callable, store: SqliteStore, entries: list[AuditEntry]) -> list[AuditRow]:
    """All entries at once: they arrive together and are committed as one group."""

    async def together() -> list[AuditRow]:
        return list(await asyncio.gather(*(store.append_decision(e) for e in entries)))

    return run(together())


@pytest.fixture
def decisions(
    anchored: Store, run: Callable, make_entry: Callable[..., AuditEntry]
) -> list[AuditRow]:
    """Ten decisions: six groups of one, then one group of four."""
    rows = append(run, anchored, [make_entry() for _ in range(6)])
    rows += append_group(run, anchored, [make_entry(decision="block", reasons="rpo_registered", basis=None)
                                      for _ in range(4)])
    return rows


@pytest.fixture
def attacker(store: Store, run: Callable, decisions: list[AuditRow]) -> Iterator[RawDb]:
    """Someone with write access to the audit file, append-only triggers dropped."""
    con = RawDb(store, run)
    con.drop_append_only_guards()
    yield con
    con.close()


def stored_rows(con: RawDb) -> list[AuditRow]:
    return [AuditRow(r[0], AuditEntry(*r[1:15]), r[15], r[16], r[17])
            for r in con.execute(f"SELECT {COLUMNS} FROM audit_log ORDER BY seq")]


def rewrite_from(con: RawDb, first: int, change: Callable[[AuditEntry], AuditEntry]) -> None:
    """Change row `first` (and, through `change`, any later one) and recompute every hash from there on,
    exactly as rpoguard would have: the chain holds again."""
    rows = stored_rows(con)
    prev = rows[first - 2].hash if first > 1 else GENESIS_HASH
    for row in rows[first - 1:]:
        entry = change(row.entry) if row.seq == first else row.entry
        digest = chain_hash(row.seq, entry, prev, row.recorded_us)
        con.execute("UPDATE audit_log SET decision = ?, reasons = ?, basis = ?, prev_hash = ?, hash = ?"
                    " WHERE seq = ?", (entry.decision, entry.reasons, entry.basis, prev, digest, row.seq))
        prev = digest


def to_allow(entry: AuditEntry) -> AuditEntry:
    return dataclasses.replace(entry, decision="allow", reasons="", basis="consent")


def check(run: Callable, store: SqliteStore, anchors: Path | None,
          key: bytes | None = KEY) -> tuple[VerifyReport, AnchorReport]:
    chain, report = run(verify_anchored(store.audit_rows(), anchors, key))
    assert report is not None
    return chain, report


def lines_of(path: Path) -> list[str]:
    return path.read_text(encoding="ascii").splitlines()


# -- writing --------------------------------------------------------------------------------------------


def test_one_line_per_group_commit_for_its_last_row(
    anchored: SqliteStore, anchor_file: Path, decisions: list[AuditRow]
) -> None:
    assert anchored._appender is not None
    lines = [parse_line(text, n) for n, text in enumerate(lines_of(anchor_file), start=1)]
    assert len(lines) == anchored._appender.groups == 7
    assert [line.seq for line in lines] == [1, 2, 3, 4, 5, 6, 10]
    assert [line.hash for line in lines] == [r.hash for r in decisions[:6]] + [decisions[-1].hash]
    for line in lines:
        assert line.mac == line_mac(KEY, line.signed)
        assert line.signed == f"{line.seq} {line.hash} {line.at}"


def test_intact_log_verifies_against_every_anchor(
    store: SqliteStore, run: Callable, anchor_file: Path, decisions: list[AuditRow]
) -> None:
    chain, report = check(run, store, anchor_file)
    assert chain.intact and report.intact
    assert (report.lines, report.matched, report.unanchored) == (7, 7, 0)
    assert report.last is not None and report.last.seq == 10
    text = report_lines(chain, report)
    assert text[0] == f"audit log intact: 10 decision(s), head {decisions[-1].hash}"
    assert "7 matched the log, HMACs checked; last anchor: row 10" in text[1]
    assert NO_ANCHORS_WARNING not in text


def test_anchor_file_is_created_not_writable_by_others(anchor_file: Path, decisions: list[AuditRow]) -> None:
    # Not a secret (hashes only), but not for everyone to write: 0640 at most.
    assert anchor_file.stat().st_mode & 0o777 & ~0o640 == 0


# -- the attacks ------------------------------------------------------------------------------------------


def test_rows_removed_from_the_end_pass_the_chain_but_not_the_anchors(
    store: SqliteStore, run: Callable, attacker: RawDb, anchor_file: Path
) -> None:
    attacker.execute("DELETE FROM audit_log WHERE seq > 7")
    assert run(verify_chain(store.audit_rows())).intact  # what the chain alone cannot see

    chain, report = check(run, store, anchor_file)
    assert chain.intact
    assert [(p.line, p.seq) for p in report.problems] == [(7, 10)]
    assert "the log ends at row 7: rows were removed from the end" in report.problems[0].problem
    text = report_lines(chain, report)
    assert text[0].startswith("audit log BROKEN: the hash chain holds (7 decision(s)")
    assert "  line 7 (row 10): row 10 was anchored at " in text[1]


def test_every_row_removed_is_caught(
    store: SqliteStore, run: Callable, attacker: RawDb, anchor_file: Path
) -> None:
    attacker.execute("DELETE FROM audit_log")
    chain, report = check(run, store, anchor_file)
    assert chain.intact and chain.rows == 0
    assert [p.seq for p in report.problems] == [1, 2, 3, 4, 5, 6, 10]


def test_chain_rewritten_from_row_k_passes_the_chain_but_not_the_anchors(
    store: SqliteStore, run: Callable, attacker: RawDb, anchor_file: Path
) -> None:
    # Row 4 and every row after it rewritten consistently: row 4 turned into an ALLOW, all hashes redone.
    rewrite_from(attacker, 4, to_allow)
    without = run(verify_chain(store.audit_rows()))
    assert without.intact, "the chain alone cannot see a consistent rewrite: that is why anchors exist"
    chain_only, none = run(verify_anchored(store.audit_rows(), None))
    assert none is None and NO_ANCHORS_WARNING in report_lines(chain_only, none)

    chain, report = check(run, store, anchor_file)
    assert chain.intact
    assert [(p.line, p.seq) for p in report.problems] == [(4, 4), (5, 5), (6, 6), (7, 10)]
    assert "rows 4 to 4 were changed and the chain rewritten" in report.problems[0].problem
    assert report.matched == 3


def test_one_row_edited_and_later_hashes_recomputed_is_caught(
    store: SqliteStore, run: Callable, attacker: RawDb, anchor_file: Path
) -> None:
    # Row 8 sits inside the last group: no line names it, the group's line (row 10) covers it.
    rewrite_from(attacker, 8, to_allow)
    assert run(verify_chain(store.audit_rows())).intact
    chain, report = check(run, store, anchor_file)
    assert chain.intact
    assert [(p.line, p.seq) for p in report.problems] == [(7, 10)]
    assert "rows 7 to 10 were changed" in report.problems[0].problem


def test_rewrite_with_forged_anchor_lines_is_caught_by_the_hmac(
    store: SqliteStore, run: Callable, attacker: RawDb, anchor_file: Path
) -> None:
    rewrite_from(attacker, 4, to_allow)
    rows = stored_rows(attacker)
    # The attacker can write the anchor file too, but has no key: re-signed with a guess, and unsigned.
    lines = lines_of(anchor_file)
    now = datetime.now(UTC)
    lines[3] = format_line(4, rows[3].hash, now, b"guessed-key-guessed-key")
    lines[4] = format_line(5, rows[4].hash, now, None)
    del lines[5:]
    anchor_file.write_text("\n".join(lines) + "\n", encoding="ascii")

    chain, report = check(run, store, anchor_file)
    assert chain.intact
    assert [(p.line, p.seq) for p in report.problems] == [(4, 4), (5, 5)]
    assert "HMAC does not match" in report.problems[0].problem
    assert "no HMAC although a key was given" in report.problems[1].problem

    # Without the key the forged lines look right: the HMAC is what stops them. Verify says so.
    chain, unkeyed = check(run, store, anchor_file, key=None)
    assert unkeyed.intact and unkeyed.unchecked_macs == 4
    assert any("HMAC that was not checked" in line for line in report_lines(chain, unkeyed))


def test_lines_out_of_order_and_garbage_are_reported_with_their_line_number(
    store: SqliteStore, run: Callable, anchor_file: Path, decisions: list[AuditRow]
) -> None:
    lines = lines_of(anchor_file)
    lines[1], lines[2] = lines[2], lines[1]
    lines.insert(4, "not an anchor")
    anchor_file.write_text("\n".join(lines) + "\n", encoding="ascii")
    _, report = check(run, store, anchor_file)
    assert [(p.line, p.seq) for p in report.problems] == [(3, 2), (5, None)]
    assert "comes after row 3 (line 2)" in report.problems[0].problem
    assert "not an anchor line" in report.problems[1].problem


def test_anchor_file_missing_or_emptied_while_the_log_has_rows(
    store: SqliteStore, run: Callable, anchor_file: Path, decisions: list[AuditRow]
) -> None:
    anchor_file.write_bytes(b"")
    _, report = check(run, store, anchor_file)
    assert [(p.line, "holds no anchor line" in p.problem) for p in report.problems] == [(0, True)]
    anchor_file.unlink()
    _, report = check(run, store, anchor_file)
    assert "does not exist" in report.problems[0].problem
    assert report_lines(*check(run, store, anchor_file))[1].startswith("  anchor file: the anchor file does not")


def test_empty_log_and_no_anchor_file_is_intact(store: SqliteStore, run: Callable, anchor_file: Path) -> None:
    chain, report = check(run, store, anchor_file)
    assert chain.intact and report.intact and report.lines == 0


def test_rows_after_the_last_anchor_are_noted_not_failed(
    store: SqliteStore, run: Callable, anchor_file: Path, make_entry: Callable[..., AuditEntry],
    decisions: list[AuditRow]
) -> None:
    # `store` has no anchor writer: e.g. an operator's command run without the configuration.
    append(run, store, [make_entry(), make_entry()])
    chain, report = check(run, store, anchor_file)
    assert chain.intact and report.intact and report.unanchored == 2
    assert any(line.startswith("note: 2 row(s) after the last anchor") for line in report_lines(chain, report))


def test_verify_without_anchors_says_what_it_cannot_see(store: SqliteStore, run: Callable) -> None:
    chain, report = run(verify_anchored(store.audit_rows(), None))
    assert report is None
    text = report_lines(chain, report)
    assert text[-1] == NO_ANCHORS_WARNING
    assert "only the hash chain was checked" in NO_ANCHORS_WARNING
    assert "removed from the end" in NO_ANCHORS_WARNING
    assert "rewritten" in NO_ANCHORS_WARNING


# -- failures of the anchor write -----------------------------------------------------------------------


def test_anchor_folder_missing_blocks_no_decision_and_is_logged_once(
    store: SqliteStore, run: Callable, tmp_path: Path, make_entry: Callable[..., AuditEntry],
    caplog: pytest.LogCaptureFixture, open_anchored: Callable[[AnchorWriter | None], Store]
) -> None:
    target = tmp_path / "missing" / "anchors"
    writing = open_anchored(AnchorWriter(target, KEY))
    with caplog.at_level(logging.WARNING, logger="rpoguard.anchor"):
        rows = append(run, writing, [make_entry() for _ in range(3)])
        assert [r.seq for r in rows] == [1, 2, 3]
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1
        assert "cannot write the audit anchor for row 1" in errors[0].getMessage()
        assert "still recorded and answered" in errors[0].getMessage()

        target.parent.mkdir()
        append(run, writing, [make_entry()])
        recovered = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(recovered) == 1
        assert "again from row 4; rows 1 to 3" in recovered[0].getMessage()
    assert run(verify_chain(store.audit_rows())).intact
    _, report = check(run, store, target)
    assert report.intact and report.lines == 1 and report.matched == 1


def test_unwritable_anchor_file_and_any_other_failure_never_fail_a_decision(
    store: SqliteStore, run: Callable, tmp_path: Path, make_entry: Callable[..., AuditEntry],
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
    open_anchored: Callable[[AnchorWriter | None], Store]
) -> None:
    target = tmp_path / "is-a-folder"
    target.mkdir()  # cannot be opened for writing, even by root
    failing = AnchorWriter(target, KEY)
    writing = open_anchored(failing)
    with caplog.at_level(logging.ERROR, logger="rpoguard.anchor"):
        append(run, writing, [make_entry() for _ in range(2)])

        def broken(*_: object) -> bool:
            raise RuntimeError("unexpected")

        monkeypatch.setattr(failing, "append", broken)
        append(run, writing, [make_entry() for _ in range(2)])
    assert [r.getMessage().split(": ", 1)[0] for r in caplog.records] == [
        f"cannot write the audit anchor for row 1 to {target}",
        f"cannot write the audit anchor for row 3 to {target}",
    ]
    assert run(verify_chain(store.audit_rows())).rows == 4


def test_writer_never_writes_a_row_already_covered(anchor_file: Path) -> None:
    writer = AnchorWriter(anchor_file, KEY)
    assert writer.append(5, "a" * 64)
    assert not writer.append(5, "a" * 64)
    assert not writer.append(3, "b" * 64)  # another process anchored a later row: that line covers this one
    assert writer.append(6, "c" * 64)
    assert [parse_line(t, 0).seq for t in lines_of(anchor_file)] == [5, 6]


def test_a_forged_last_line_does_not_stop_anchoring(anchor_file: Path) -> None:
    writer = AnchorWriter(anchor_file, KEY)
    writer.append(5, "a" * 64)
    with anchor_file.open("a", encoding="ascii") as fh:
        fh.write(format_line(999_999, "f" * 64, datetime.now(UTC), b"not-the-key-not-the-key") + "\n")
    assert writer.append(6, "c" * 64)


def test_a_cut_short_last_line_is_left_on_its_own_line(
    store: SqliteStore, anchored: Store, run: Callable, anchor_file: Path, make_entry: Callable[..., AuditEntry],
    decisions: list[AuditRow]
) -> None:
    with anchor_file.open("a", encoding="ascii") as fh:
        fh.write("11 abc")  # what a write cut short by a crash would leave
    append(run, anchored, [make_entry()])
    lines = lines_of(anchor_file)
    assert lines[-2] == "11 abc"
    assert parse_line(lines[-1], 0).seq == 11
    _, report = check(run, store, anchor_file)
    assert [(p.line, p.seq) for p in report.problems] == [(8, None)]
    assert report.matched == 8


# -- the system-log witness -----------------------------------------------------------------------------


def test_heads_are_logged_at_most_every_interval_and_the_last_at_close(
    db_path: Path, run: Callable, anchor_file: Path, make_entry: Callable[..., AuditEntry],
    caplog: pytest.LogCaptureFixture
) -> None:
    store = SqliteStore(db_path, anchor=AnchorWriter(anchor_file, None, log_interval=3600))
    run(store.open())
    with caplog.at_level(logging.INFO, logger=WITNESS_LOGGER):
        rows = append(run, store, [make_entry() for _ in range(3)])
        assert [r.getMessage() for r in caplog.records] == [f"audit chain head: row 1 hash {rows[0].hash}"]
        run(store.close())
        assert caplog.records[-1].getMessage() == f"audit chain head: row 3 hash {rows[2].hash}"
        assert {r.name for r in caplog.records} == {WITNESS_LOGGER}
        assert len(caplog.records) == 2


def test_witness_logger_gets_through_a_warning_level_setup(anchor_file: Path) -> None:
    witness = logging.getLogger(WITNESS_LOGGER)
    witness.setLevel(logging.NOTSET)  # as a process starts
    try:
        AnchorWriter(anchor_file, None, log_interval=0)  # no witness: the logger is left alone
        assert witness.level == logging.NOTSET
        AnchorWriter(anchor_file, None, log_interval=60)
        assert witness.level == logging.INFO
    finally:
        witness.setLevel(logging.NOTSET)


# -- lines and keys -------------------------------------------------------------------------------------


def test_line_format_round_trips() -> None:
    at = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
    text = format_line(42, "ab" * 32, at, KEY)
    line = parse_line(text, 7)
    assert (line.line, line.seq, line.hash, line.at) == (7, 42, "ab" * 32, "2026-11-24T10:00:00.000000Z")
    assert line.mac == line_mac(KEY, f"42 {'ab' * 32} 2026-11-24T10:00:00.000000Z")
    assert parse_line(format_line(42, "ab" * 32, at, None), 1).mac is None
    for bad in ("", "42", f"0 {'ab' * 32} 2026-11-24T10:00:00.000000Z", f"42 {'AB' * 32} 2026-11-24T10:00:00Z",
                text + " extra"):
        with pytest.raises(ValueError, match="not an anchor line"):
            parse_line(bad, 1)


def test_key_file_must_be_owner_only_and_long_enough(tmp_path: Path) -> None:
    key = tmp_path / "anchor.key"
    key.write_bytes(KEY + b"\n")
    key.chmod(0o600)
    assert load_key(key) == KEY
    key.chmod(0o640)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_key(key)
    key.write_bytes(b"short\n")
    key.chmod(0o400)
    with pytest.raises(ConfigError, match="at least 16"):
        load_key(key)
    with pytest.raises(ConfigError, match="cannot read anchor key file"):
        load_key(tmp_path / "none")


def test_audit_section_of_the_configuration(tmp_path: Path, write_file: Callable[..., Path]) -> None:
    config = load_config(str(write_file("a.toml", '[audit]\nanchor_file = "/var/log/rpoguard/anchors"\n'
                                                  'anchor_key_file = "/etc/rpoguard/anchor.key"\n'
                                                  "anchor_log_interval = 30\n")))
    assert config.audit == AuditConfig("/var/log/rpoguard/anchors", "/etc/rpoguard/anchor.key", 30.0)
    assert load_config(str(write_file("b.toml", ""))).audit == AuditConfig()
    for text, message in [
        ('[audit]\nanchor = "x"\n', "unknown key"),
        ('[audit]\nanchor_key_file = "k"\n', "set anchor_file too"),
        ("[audit]\nanchor_log_interval = -1\n", "0 \\(off\\) or more"),
        ("[audit]\nanchor_file = 3\n", "must be str"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_config(str(write_file("c.toml", text)))


def test_writer_from_config(tmp_path: Path, anchor_file: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = str(tmp_path / "data" / "rpoguard.db")
    assert writer_from_config(AuditConfig(), db) is None
    writer = writer_from_config(AuditConfig(str(anchor_file)), db)
    assert writer is not None and writer.path == anchor_file and writer.key is None
    assert writer.log_interval == anchor.DEFAULT_LOG_INTERVAL
    journal_only = writer_from_config(AuditConfig(anchor_log_interval=10), db)
    assert journal_only is not None and journal_only.path is None
    quiet = writer_from_config(AuditConfig(str(anchor_file), anchor_log_interval=0), db)
    assert quiet is not None and quiet.log_interval == 0
    assert not caplog.records
    with caplog.at_level(logging.WARNING, logger="rpoguard.anchor"):
        writer_from_config(AuditConfig(str(tmp_path / "data" / "anchors")), db)
    assert "in the database's folder" in caplog.records[0].getMessage()
