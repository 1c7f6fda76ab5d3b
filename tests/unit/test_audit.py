"""rpoguard.audit over the SQLite store: the hash chain holds, every kind of tampering is found at the
right row, and exports cut the right time range and are safe to open in a spreadsheet."""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import json
from collections.abc import AsyncIterable, Callable, Iterator

import pytest

from rpoguard.audit import (
    EXPORT_FIELDS,
    GENESIS_HASH,
    AuditEntry,
    AuditRow,
    VerifyReport,
    chain_hash,
    export_rows,
    spreadsheet_safe,
    verify_chain,
)
from rpoguard.db.sqlite import SqliteStore
from rpoguard.db.store import Store
from rpoguard.timeutil import parse_time, to_us
from support.rawdb import RawDb

T0 = to_us(parse_time("2026-11-24T11:00"))  # Tuesday, Europe/Rome
MINUTE = 60_000_000

COLUMNS = (
    "seq, decision_id, ts_us, number, raw_number, campaign_id, principal_id, caller_id, decision,"
    " reasons, basis, evidence, source, uniqueid, channel, prev_hash, hash, recorded_us, linkedid"
)


def verify(run: Callable, store: SqliteStore) -> VerifyReport:
    return run(verify_chain(store.audit_rows()))


def export(run: Callable, store: SqliteStore, fmt: str, start: int | None = None, end: int | None = None) -> str:
    out = io.StringIO()
    run(export_rows(store.audit_rows(start, end), out, fmt))
    return out.getvalue()


def first_problem(report: VerifyReport) -> tuple[int, str]:
    assert report.problems, "tampering was not detected"
    problem = report.problems[0]
    return problem.seq, problem.problem


@pytest.fixture
def log(store: SqliteStore, run: Callable, make_entry: Callable[..., AuditEntry]) -> list[AuditRow]:
    """Five decisions a minute apart, alternating allow and block."""
    rows = []
    for i in range(5):
        blocked = i % 2 == 1
        entry = make_entry(
            ts_us=T0 + i * MINUTE,
            decision="block" if blocked else "allow",
            reasons="rpo_registered,unlisted_no_consent" if blocked else "",
            basis=None if blocked else "listed",
            evidence=json.dumps({"rpo_result_id": i}),
        )
        rows.append(run(store.append_decision(entry)))
    return rows


@pytest.fixture
def attacker(store: Store, run: Callable, log: list[AuditRow]) -> Iterator[RawDb]:
    """A raw connection to the database with the append-only triggers dropped, as someone with write access
    to the file would do."""
    con = RawDb(store, run)
    con.drop_append_only_guards()
    yield con
    con.close()


def raw_row(con: RawDb, seq: int) -> tuple:
    return con.execute(f"SELECT {COLUMNS} FROM audit_log WHERE seq = ?", (seq,)).fetchone()


def test_empty_log_is_intact(store: SqliteStore, run: Callable) -> None:
    report = verify(run, store)
    assert report.intact
    assert (report.rows, report.head_hash) == (0, GENESIS_HASH)


def test_appended_decisions_form_an_intact_chain(store: SqliteStore, run: Callable, log: list[AuditRow]) -> None:
    assert [r.seq for r in log] == [1, 2, 3, 4, 5]
    assert log[0].prev_hash == GENESIS_HASH
    for before, after in itertools.pairwise(log):
        assert after.prev_hash == before.hash
    for row in log:
        assert row.recorded_us is not None
        assert row.hash == chain_hash(row.seq, row.entry, row.prev_hash, row.recorded_us)
    stored = run(_collect(store.audit_rows()))
    assert stored == log
    report = verify(run, store)
    assert report.intact
    assert (report.rows, report.head_hash) == (5, log[-1].hash)


async def _collect(rows: AsyncIterable[AuditRow]) -> list[AuditRow]:
    return [row async for row in rows]


def test_changed_field_is_found_at_its_row(store: SqliteStore, run: Callable, attacker: RawDb) -> None:
    attacker.execute("UPDATE audit_log SET decision = 'allow', reasons = '', basis = 'listed' WHERE seq = 4")
    report = verify(run, store)
    assert not report.intact
    assert [(p.seq, "changed" in p.problem) for p in report.problems] == [(4, True)]


def test_changed_field_with_its_hash_recomputed_breaks_the_next_link(
    store: SqliteStore, run: Callable, attacker: RawDb, log: list[AuditRow]
) -> None:
    forged = dataclasses.replace(log[1].entry, decision="allow", reasons="", basis="consent")
    attacker.execute(
        "UPDATE audit_log SET decision = ?, reasons = ?, basis = ?, hash = ? WHERE seq = 2",
        (forged.decision, forged.reasons, forged.basis, chain_hash(2, forged, log[1].prev_hash, log[1].recorded_us)),
    )
    report = verify(run, store)
    seq, problem = first_problem(report)
    assert seq == 3
    assert "previous-hash" in problem
    assert {p.seq for p in report.problems} == {3}


def test_deleted_row_is_found_at_the_row_after_it(
    store: SqliteStore, run: Callable, attacker: RawDb
) -> None:
    attacker.execute("DELETE FROM audit_log WHERE seq = 3")
    report = verify(run, store)
    assert report.rows == 4
    assert {p.seq for p in report.problems} == {4}
    messages = " | ".join(p.problem for p in report.problems)
    assert "jumps from 2 to 4" in messages
    assert "previous-hash" in messages


def test_row_inserted_in_the_middle_with_renumbering_is_found(
    store: SqliteStore,
    run: Callable,
    attacker: RawDb,
    log: list[AuditRow],
    make_entry: Callable[..., AuditEntry],
) -> None:
    # Shift rows 3..5 to 4..6 (two steps, so the primary key never collides), then put a well-formed row
    # with a correct hash and link into the gap at seq 3.
    attacker.execute("UPDATE audit_log SET seq = seq + 100 WHERE seq >= 3")
    attacker.execute("UPDATE audit_log SET seq = seq - 99 WHERE seq >= 100")
    forged = make_entry(ts_us=T0 + MINUTE + 30_000_000, decision="allow", reasons="", basis="consent")
    digest = chain_hash(3, forged, log[1].hash, log[1].recorded_us)
    attacker.execute(
        f"INSERT INTO audit_log ({COLUMNS}) VALUES ({','.join('?' * 19)})",
        (3, *dataclasses.astuple(forged)[:-1], log[1].hash, digest, log[1].recorded_us, forged.linkedid),
    )
    report = verify(run, store)
    assert report.rows == 6
    seq, problem = first_problem(report)
    # The forged row itself links and hashes correctly; the chain breaks where the old row 3 now sits.
    assert seq == 4
    assert "previous-hash" in problem
    assert 3 not in {p.seq for p in report.problems}
    # Every renumbered row no longer matches its hash (the sequence number is part of it).
    assert {p.seq for p in report.problems if "changed" in p.problem} == {4, 5, 6}


def test_row_inserted_without_a_valid_hash_is_found_at_itself(
    store: SqliteStore,
    run: Callable,
    attacker: RawDb,
    log: list[AuditRow],
    make_entry: Callable[..., AuditEntry],
) -> None:
    attacker.execute("UPDATE audit_log SET seq = seq + 100 WHERE seq >= 3")
    attacker.execute("UPDATE audit_log SET seq = seq - 99 WHERE seq >= 100")
    forged = make_entry(ts_us=T0 + MINUTE + 30_000_000)
    attacker.execute(
        f"INSERT INTO audit_log ({COLUMNS}) VALUES ({','.join('?' * 19)})",
        (3, *dataclasses.astuple(forged)[:-1], log[1].hash, "f" * 64, log[1].recorded_us, forged.linkedid),
    )
    seq, problem = first_problem(verify(run, store))
    assert seq == 3
    assert "changed" in problem


def test_two_rows_reordered_are_found_at_the_first(
    store: SqliteStore, run: Callable, attacker: RawDb
) -> None:
    attacker.execute("UPDATE audit_log SET seq = -2 WHERE seq = 2")
    attacker.execute("UPDATE audit_log SET seq = 2 WHERE seq = 3")
    attacker.execute("UPDATE audit_log SET seq = 3 WHERE seq = -2")
    report = verify(run, store)
    seq, _ = first_problem(report)
    assert seq == 2
    assert {p.seq for p in report.problems} == {2, 3, 4}
    assert report.rows == 5


def test_rows_swapped_in_place_keeping_their_numbers_are_found(
    store: SqliteStore, run: Callable, attacker: RawDb
) -> None:
    two, three = raw_row(attacker, 2), raw_row(attacker, 3)
    attacker.execute("DELETE FROM audit_log WHERE seq IN (2, 3)")
    placeholders = ",".join("?" * 19)
    attacker.execute(f"INSERT INTO audit_log ({COLUMNS}) VALUES ({placeholders})", (2, *three[1:]))
    attacker.execute(f"INSERT INTO audit_log ({COLUMNS}) VALUES ({placeholders})", (3, *two[1:]))
    seq, _ = first_problem(verify(run, store))
    assert seq == 2


def test_verify_stops_after_max_problems(store: SqliteStore, run: Callable, attacker: RawDb) -> None:
    attacker.execute("UPDATE audit_log SET raw_number = 'x'")
    report = run(verify_chain(store.audit_rows(), max_problems=2))
    assert [p.seq for p in report.problems] == [1, 2]


# -- export ---------------------------------------------------------------------------------------------


def test_export_jsonl_cuts_start_inclusive_end_exclusive(
    store: SqliteStore, run: Callable, log: list[AuditRow]
) -> None:
    text = export(run, store, "jsonl", T0 + MINUTE, T0 + 3 * MINUTE)
    records = [json.loads(line) for line in text.splitlines()]
    assert [r["seq"] for r in records] == [2, 3]
    assert set(records[0]) == set(EXPORT_FIELDS)
    assert records[0]["time"] == "2026-11-24T10:01:00.000000Z"
    assert records[0]["decision"] == "block"
    assert records[0]["reasons"] == "rpo_registered,unlisted_no_consent"
    assert records[0]["hash"] == log[1].hash
    assert records[0]["prev_hash"] == log[0].hash
    assert json.loads(records[0]["evidence"]) == {"rpo_result_id": 1}
    assert export(run, store, "jsonl", T0 + 5 * MINUTE, None) == ""
    assert len(export(run, store, "jsonl").splitlines()) == 5
    assert [json.loads(x)["seq"] for x in export(run, store, "jsonl", None, T0 + MINUTE + 1).splitlines()] == [1, 2]


def test_export_csv_cuts_the_same_range(store: SqliteStore, run: Callable, log: list[AuditRow]) -> None:
    text = export(run, store, "csv", T0 + MINUTE, T0 + 3 * MINUTE)
    reader = csv.DictReader(io.StringIO(text))
    assert tuple(reader.fieldnames or ()) == EXPORT_FIELDS
    rows = list(reader)
    assert [r["seq"] for r in rows] == ["2", "3"]
    assert rows[0]["number"] == "+390645678901"
    assert rows[0]["hash"] == log[1].hash
    assert rows[0]["uniqueid"] == ""
    # An empty range still gives the header, so a spreadsheet shows named empty columns.
    assert export(run, store, "csv", T0 + 10 * MINUTE, None).splitlines() == [",".join(EXPORT_FIELDS)]


def test_export_unknown_format_is_refused(store: SqliteStore, run: Callable) -> None:
    with pytest.raises(ValueError, match="csv or jsonl"):
        export(run, store, "xlsx")


FORMULAS = [
    "=1+1",
    "@SUM(A1:A9)",
    "+1+cmd|' /C calc'!A0",
    "-2+3",
    '=HYPERLINK("http://x")',
    "\t=1+1",
    "+39 06 4567 8901",
]


def test_export_csv_neutralises_formulas_but_keeps_plain_numbers(
    store: SqliteStore, run: Callable, make_entry: Callable[..., AuditEntry]
) -> None:
    for raw in FORMULAS:
        run(
            store.append_decision(
                make_entry(number=None, raw_number=raw, decision="block", reasons="invalid_number", basis=None)
            )
        )
    run(
        store.append_decision(
            make_entry(number="+390645678901", raw_number="+390645678901", caller_id="=cmd|' /C calc'!A0")
        )
    )
    run(store.append_decision(make_entry(number="+393331234567", raw_number="-5", channel="@evil")))

    rows = list(csv.DictReader(io.StringIO(export(run, store, "csv"))))
    assert [r["raw_number"] for r in rows[: len(FORMULAS)]] == ["'" + f for f in FORMULAS]
    plain = rows[len(FORMULAS)]
    assert (plain["number"], plain["raw_number"]) == ("+390645678901", "+390645678901")
    assert plain["caller_id"] == "'=cmd|' /C calc'!A0"
    last = rows[-1]
    assert (last["number"], last["raw_number"], last["channel"]) == ("+393331234567", "-5", "'@evil")
    for row in rows:
        for value in row.values():
            assert not value.startswith(("=", "@", "\t", "\r")), row

    # JSON Lines is for machines: values exactly as stored.
    records = [json.loads(line) for line in export(run, store, "jsonl").splitlines()]
    assert [r["raw_number"] for r in records[: len(FORMULAS)]] == FORMULAS
    assert records[len(FORMULAS)]["caller_id"] == "=cmd|' /C calc'!A0"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("+390645678901", "+390645678901"),
        ("-12", "-12"),
        ("12", "12"),
        ("=1+1", "'=1+1"),
        ("@SUM(1)", "'@SUM(1)"),
        ("+", "'+"),
        ("-", "'-"),
        ("+39\n=1", "'+39\n=1"),
        ("a=1", "a=1"),
        ("", ""),
        (7, 7),
        (None, None),
    ],
)
def test_spreadsheet_safe(value: object, expected: object) -> None:
    assert spreadsheet_safe(value) == expected


def test_export_csv_keeps_a_carriage_return_inside_its_cell(
    store: SqliteStore, run: Callable, make_entry: Callable[..., AuditEntry]
) -> None:
    # Regression: with lineterminator="\n" the csv module left a field holding a bare CR unquoted, so the row
    # split in a spreadsheet and the text after the CR started a new line un-neutralised.
    raws = ["06 4567\r=2+5*cmd|A0", "\r=1+1", "06\n=1+1"]
    for raw in raws:
        run(
            store.append_decision(
                make_entry(number=None, raw_number=raw, decision="block", reasons="invalid_number", basis=None)
            )
        )
    text = export(run, store, "csv")
    # Read as a spreadsheet does: CR, LF and CRLF all end a record outside quotes.
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert len(rows) == 1 + len(raws)
    assert all(len(row) == len(EXPORT_FIELDS) for row in rows)
    raw_column = EXPORT_FIELDS.index("raw_number")
    assert [row[raw_column] for row in rows[1:]] == [raws[0], "'" + raws[1], raws[2]]
    for row in rows[1:]:
        assert not any(cell.startswith(("=", "@", "\t", "\r")) for cell in row), row
