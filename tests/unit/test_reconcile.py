"""The streaming match of `reconcile` (rpoguard.bypass.reconcile) on both backends: legs of a CDR file against
the ALLOW decisions in the store, whatever order cdr_csv wrote them in, --from/--to, a forked record seen once,
and memory bounded by the window the legs still to come can use."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from rpoguard.audit import AuditEntry
from rpoguard.bypass import reconcile as reconcile_module
from rpoguard.bypass.match import SECOND_US, Bypass, Matcher, TrunkPatterns
from rpoguard.bypass.reconcile import NotThatFormat, Period, Reconciler, Summary
from rpoguard.bypass.records import FORMAT_CDR, Unreadable
from rpoguard.constants import (
    ALLOW,
    BLOCK,
    BYPASS_DECISION_STALE,
    BYPASS_DECISION_USED,
    BYPASS_NO_DECISION,
    BYPASS_NUMBER_UNKNOWN,
    BYPASS_OTHER_NUMBER,
)
from rpoguard.db.store import Store
from rpoguard.timeutil import from_us

UTC_ZONE = ZoneInfo("UTC")
T0 = 1_795_000_000 * SECOND_US  # 2026-11-18, a whole second
NUM = "+393331234567"
OTHER = "+393471112222"


def u(n: int) -> str:
    """An Asterisk uniqueid."""
    return f"1795000000.{n}"


def stamp(us: int) -> str:
    return from_us(us).strftime("%Y-%m-%d %H:%M:%S")


def row(uid: str, at_us: int, *, number: str = NUM, seconds: int = 30, trunk: str = "PJSIP/carrier-0000000a",
        linkedid: str | None = None) -> list[str]:
    tail = [uid] if linkedid is None else [uid, "", "", linkedid, "1"]
    return ["", "0694801234", number[3:], "outbound", "", f"PJSIP/agent-{uid}", trunk, "Dial",
            f"PJSIP/{number}@carrier,30", stamp(at_us), "", stamp(at_us + seconds * SECOND_US), str(seconds), "0",
            "NO ANSWER", "DOCUMENTATION", *tail]


def write(path: Path, rows: list[list[str]]) -> str:
    out = io.StringIO()
    csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n").writerows(rows)
    path.write_text(out.getvalue())
    return str(path)


def allow(run: Callable[..., Any], store: Store, decision_id: str, at_us: int, *, number: str = NUM,
          uniqueid: str | None = None, linkedid: str | None = None, decision: str = ALLOW) -> None:
    run(store.append_decision(AuditEntry(
        decision_id, at_us, number, number, "c1", "acme", None, decision, "" if decision == ALLOW else "optout",
        "listed" if decision == ALLOW else None, "{}", "fastagi", uniqueid, "PJSIP/agent", linkedid)))


@pytest.fixture
def seeded(store: Store, run: Callable[..., Any]) -> Store:
    run(store.add_principal("acme", "ACME", []))
    run(store.add_campaign("c1", "acme", False, None, None))
    return store


def reconcile(run: Callable[..., Any], store: Store, path: str, period: Period | None = None,
              ) -> tuple[Summary, list[tuple[Bypass, int]], list[Unreadable]]:
    found: list[tuple[Bypass, int]] = []
    unreadable: list[Unreadable] = []
    reconciler = Reconciler(store, TrunkPatterns(["PJSIP/carrier-*"]), max_age_us=60 * SECOND_US,
                            skew_us=2 * SECOND_US, zone=UTC_ZONE, period=period or Period())
    summary = run(reconciler.run(path, FORMAT_CDR, lambda b, line: found.append((b, line)), unreadable.append))
    return summary, found, unreadable


def test_each_leg_is_matched_to_its_calls_decision_and_each_bypass_says_why(
        seeded: Store, run: Callable[..., Any], tmp_path: Path) -> None:
    allow(run, seeded, "d-ok", T0 - SECOND_US, uniqueid=u(1))
    allow(run, seeded, "d-link", T0 + 5 * SECOND_US, linkedid="L2")
    allow(run, seeded, "d-other", T0, uniqueid=u(3), number=OTHER)
    # Before the window any leg of the file can use: never read, so the leg had no decision.
    allow(run, seeded, "d-old", T0 - 120 * SECOND_US, uniqueid=u(4))
    allow(run, seeded, "d-late", T0 + 40 * SECOND_US, uniqueid=u(8))  # after u(8)'s leg had ended
    allow(run, seeded, "d-twice", T0, uniqueid=u(5))
    allow(run, seeded, "d-block", T0, uniqueid=u(6), decision=BLOCK)
    path = write(tmp_path / "Master.csv", [
        row(u(1), T0),
        row(u(2), T0 + 6 * SECOND_US, linkedid="L2"),
        row(u(3), T0),
        row(u(4), T0),
        row(u(5), T0 + SECOND_US, trunk="PJSIP/carrier-0000000b"),
        row(u(5), T0 + 2 * SECOND_US, trunk="PJSIP/carrier-0000000c"),
        row(u(6), T0),
        row(u(7), T0, number="+44"),
        row(u(9), T0 + 100 * SECOND_US),
        row(u(8), T0),
    ])
    summary, found, unreadable = reconcile(run, seeded, path)
    assert [(b.why, b.decision_id, line) for b, line in found] == [
        (BYPASS_OTHER_NUMBER, "d-other", 3), (BYPASS_NO_DECISION, None, 4), (BYPASS_DECISION_USED, "d-twice", 6),
        (BYPASS_NO_DECISION, None, 7), (BYPASS_NO_DECISION, None, 8), (BYPASS_NO_DECISION, None, 9),
        (BYPASS_DECISION_STALE, "d-late", 10)]
    assert (summary.records, summary.trunk_legs, summary.covered, summary.bypass_count) == (10, 10, 3, 7)
    assert summary.decisions == 5 and not unreadable and not summary.proven


def test_a_number_the_trunk_dialled_that_cannot_be_read_is_never_covered(
        seeded: Store, run: Callable[..., Any], tmp_path: Path) -> None:
    allow(run, seeded, "d1", T0, uniqueid=u(1))
    leg = row(u(1), T0)
    leg[8] = "PJSIP/00442012345678@carrier"
    _, found, _ = reconcile(run, seeded, write(tmp_path / "Master.csv", [leg]))
    assert [(b.why, b.decision_id) for b, _ in found] == [(BYPASS_NUMBER_UNKNOWN, "d1")]


def test_a_long_call_written_after_later_calls_still_finds_its_decision(
        seeded: Store, run: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # cdr_csv writes a record when its call ends: the 2-hour call that began first comes last.
    monkeypatch.setattr(reconcile_module, "_FORGET_STEP_US", SECOND_US)
    forgotten: list[int] = []
    real = Matcher.forget_before
    monkeypatch.setattr(Matcher, "forget_before", lambda self, at: (forgotten.append(at), real(self, at))[1])
    allow(run, seeded, "d-long", T0, uniqueid=u(9999))
    rows = []
    for i in range(1, 200):
        allow(run, seeded, f"d{i}", T0 + i * 30 * SECOND_US, uniqueid=u(i))
        rows.append(row(u(i), T0 + i * 30 * SECOND_US + SECOND_US))
    rows.append(row(u(9999), T0 + SECOND_US, seconds=7200))
    for i in range(200, 400):
        allow(run, seeded, f"d{i}", T0 + i * 30 * SECOND_US, uniqueid=u(i))
        rows.append(row(u(i), T0 + i * 30 * SECOND_US + SECOND_US))
    summary, found, _ = reconcile(run, seeded, write(tmp_path / "Master.csv", rows))
    assert (summary.trunk_legs, summary.covered, found) == (400, 400, [])
    # The window still moved on after it: memory is not held for the whole file.
    assert len(forgotten) >= 50 and forgotten[-1] > T0 + 3600 * SECOND_US


def test_memory_stays_bounded_by_the_window_the_legs_can_use(
        seeded: Store, run: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    held: list[int] = []
    real = Matcher.match
    monkeypatch.setattr(Matcher, "match", lambda self, leg: (held.append(len(self)), real(self, leg))[1])
    rows = []
    for i in range(600):
        allow(run, seeded, f"d{i}", T0 + i * 10 * SECOND_US, uniqueid=u(i))
        rows.append(row(u(i), T0 + i * 10 * SECOND_US, seconds=5))
    summary, found, _ = reconcile(run, seeded, write(tmp_path / "Master.csv", rows))
    assert summary.covered == 600 and not found
    # max_age (60 s) plus the forget step (60 s) of decisions one every 10 s, and the next one read ahead.
    assert max(held) <= 14


def test_from_to_keep_the_legs_that_began_in_the_period_and_their_earlier_decisions(
        seeded: Store, run: Callable[..., Any], tmp_path: Path) -> None:
    allow(run, seeded, "d1", T0 - 30 * SECOND_US, uniqueid=u(1))
    path = write(tmp_path / "Master.csv", [row(u(0), T0 - 3600 * SECOND_US), row(u(1), T0),
                                           row(u(2), T0 + 3600 * SECOND_US)])
    summary, found, _ = reconcile(run, seeded, path, Period(T0, T0 + 60 * SECOND_US))
    assert (summary.trunk_legs, summary.covered, summary.outside, found) == (1, 1, 2, [])


def test_a_leg_repeated_by_a_forked_record_is_matched_once(
        seeded: Store, run: Callable[..., Any], tmp_path: Path) -> None:
    allow(run, seeded, "d1", T0, uniqueid=u(1))
    path = write(tmp_path / "Master.csv", [row(u(1), T0), row(u(1), T0 + 40 * SECOND_US)])
    summary, found, _ = reconcile(run, seeded, path)
    assert (summary.trunk_legs, summary.covered, summary.repeated, found) == (1, 1, 1, [])


def test_unreadable_records_are_reported_and_a_file_of_another_kind_is_refused(
        seeded: Store, run: Callable[..., Any], tmp_path: Path) -> None:
    allow(run, seeded, "d1", T0, uniqueid=u(1))
    path = tmp_path / "Master.csv"
    write(path, [row(u(1), T0)])
    path.write_text(path.read_text() + '"half a record"\n')
    summary, found, unreadable = reconcile(run, seeded, str(path))
    assert (summary.covered, summary.unreadable, [u.line for u in unreadable]) == (1, 1, [2])
    assert not summary.proven and not found
    other = tmp_path / "other.csv"
    other.write_text("number,status\n+393331234567,registered\n")
    with pytest.raises(NotThatFormat, match=r"other.csv is not a cdr_csv Master.csv \(line 1: 2 columns"):
        reconcile(run, seeded, str(other))


def test_a_pipe_is_read_twice_through_a_spool(seeded: Store, run: Callable[..., Any], tmp_path: Path) -> None:
    import os
    import threading

    allow(run, seeded, "d1", T0, uniqueid=u(1))
    text = Path(write(tmp_path / "Master.csv", [row(u(1), T0), row(u(2), T0)])).read_text()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_text(text))
    writer.start()
    summary, found, _ = reconcile(run, seeded, str(fifo))
    writer.join()
    assert (summary.covered, [b.leg.caller_uniqueid for b, _ in found]) == (1, [u(2)])
