"""The store's part in proving that no call bypassed the gate, on both backends: the ALLOW decisions as
`reconcile` (allowed_between) and `watch` (allowed_after) read them, the findings `watch` stores and
`findings list` shows, the call's linkedid kept with each decision under the hash chain, and `db copy`
carrying both either way."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import fields
from pathlib import Path
from time import time_ns
from typing import Any, TypeVar

import pytest

from rpoguard.audit import AuditEntry, AuditRow, verify_chain
from rpoguard.bypass.match import Allowed
from rpoguard.constants import BYPASS_DECISION_USED, BYPASS_NO_DECISION, FINDING_BYPASS, FINDING_NOT_WATCHED
from rpoguard.db import open_store
from rpoguard.db.copy import copy_database
from rpoguard.db.store import Store, StoredFinding
from rpoguard.timeutil import parse_time, to_us
from support.rawdb import RawDb

T = TypeVar("T")

T0 = to_us(parse_time("2026-11-24T11:00"))
MINUTE = 60_000_000
NUM = "+393331234567"
OTHER = "+390645678901"

Entry = Callable[..., AuditEntry]


async def collect(rows: AsyncIterator[T]) -> list[T]:
    return [row async for row in rows]


def decide(run: Callable[..., Any], store: Store, make_entry: Entry, minute: int, decision: str = "allow",
           **fields: Any) -> AuditRow:
    blocked = decision == "block"
    entry = make_entry(ts_us=T0 + minute * MINUTE, decision=decision, reasons="rpo_registered" if blocked else "",
                       basis=None if blocked else "listed", **fields)
    return run(store.append_decision(entry))


def ids(allowed: list[Allowed]) -> list[str]:
    return [a.decision_id for a in allowed]


@pytest.fixture
def log(store: Store, run: Callable[..., Any], make_entry: Entry) -> list[AuditRow]:
    """Decisions appended out of time order (the log's order is the order they were written), some blocked."""
    return [
        decide(run, store, make_entry, 2, number=NUM, uniqueid="1764000000.20", linkedid="1764000000.19"),
        decide(run, store, make_entry, 0, number=OTHER, uniqueid="1764000000.10"),
        decide(run, store, make_entry, 1, "block", uniqueid="1764000000.15", linkedid="1764000000.15"),
        decide(run, store, make_entry, 3, number=NUM, uniqueid=None, linkedid="1764000000.30"),
        decide(run, store, make_entry, 1, number=NUM, uniqueid="1764000000.16", linkedid="1764000000.16"),
    ]


# -- the ALLOW decisions ----------------------------------------------------------------------------------


def test_allowed_between_gives_allows_in_time_order(store: Store, run: Callable[..., Any], log: list[AuditRow]) -> None:
    every = run(collect(store.allowed_between(T0, T0 + 10 * MINUTE)))
    two, other, _, three, one = (row.entry.decision_id for row in log)
    assert ids(every) == [other, one, two, three]
    assert every[2] == Allowed(two, T0 + 2 * MINUTE, NUM, "1764000000.20", "1764000000.19")
    assert every[0] == Allowed(other, T0, OTHER, "1764000000.10", None)
    assert every[3] == Allowed(three, T0 + 3 * MINUTE, NUM, None, "1764000000.30")
    # start <= time < end
    assert ids(run(collect(store.allowed_between(T0 + MINUTE, T0 + 3 * MINUTE)))) == [one, two]
    assert ids(run(collect(store.allowed_between(T0 + MINUTE + 1, T0 + 3 * MINUTE + 1)))) == [two, three]
    assert run(collect(store.allowed_between(T0 + 4 * MINUTE, T0 + 10 * MINUTE))) == []
    assert run(collect(store.allowed_between(T0, T0))) == []


def test_allowed_after_follows_the_log_by_sequence(store: Store, run: Callable[..., Any], log: list[AuditRow]) -> None:
    two, other, blocked, three, one = log
    assert [seq for seq, _ in run(store.allowed_after(0, 0, 100))] == [two.seq, other.seq, three.seq, one.seq]
    after = run(store.allowed_after(other.seq, 0, 100))
    assert [(seq, a.decision_id) for seq, a in after] == [(three.seq, three.entry.decision_id),
                                                            (one.seq, one.entry.decision_id)]
    # The blocked row is skipped, not a stop: the next ALLOW after it comes.
    assert [seq for seq, _ in run(store.allowed_after(blocked.seq - 1, 0, 1))] == [three.seq]
    # since: made at or after that moment, whatever its place in the log.
    assert [seq for seq, _ in run(store.allowed_after(0, T0 + 2 * MINUTE, 100))] == [two.seq, three.seq]
    assert [seq for seq, _ in run(store.allowed_after(0, T0 + MINUTE, 2))] == [two.seq, three.seq]
    assert run(store.allowed_after(one.seq, 0, 100)) == []
    seq, first = run(store.allowed_after(0, 0, 1))[0]
    assert (seq, first) == (two.seq, Allowed(two.entry.decision_id, T0 + 2 * MINUTE, NUM, "1764000000.20",
                                             "1764000000.19"))


def test_an_empty_log_has_no_allows(store: Store, run: Callable[..., Any]) -> None:
    assert run(collect(store.allowed_between(0, T0 * 2))) == []
    assert run(store.allowed_after(0, 0, 10)) == []


# -- findings -----------------------------------------------------------------------------------------------


def bypass_finding(at_us: int, **fields: Any) -> StoredFinding:
    values: dict[str, Any] = {
        "kind": FINDING_BYPASS, "at_us": at_us, "detail": "no ALLOW decision for this call", "source": "watch",
        "why": BYPASS_NO_DECISION, "channel": "PJSIP/carrier-0000000d", "number": NUM,
        "dialled": "+393331234567@carrier", "uniqueid": "1764000000.13", "linkedid": "1764000000.10",
    }
    values.update(fields)
    return StoredFinding(**values)


def test_findings_are_stored_closed_and_listed(store: Store, run: Callable[..., Any]) -> None:
    before = time_ns() // 1000
    first = run(store.add_finding(bypass_finding(T0 + 5 * MINUTE, hung_up=True)))
    gap = run(store.add_finding(StoredFinding(kind=FINDING_NOT_WATCHED, at_us=T0, detail="AMI connection lost",
                                              source="watch")))
    used = run(store.add_finding(bypass_finding(T0 + 9 * MINUTE, why=BYPASS_DECISION_USED, decision_id="d-1",
                                                number=None, dialled="anonymous@carrier", found_us=T0 + 10 * MINUTE)))
    after = time_ns() // 1000
    assert len({first, gap, used}) == 3
    run(store.close_finding(gap, T0 + 7 * MINUTE, "AMI connection lost; watching again"))

    stored = run(collect(store.list_findings()))
    assert [f.id for f in stored] == [first, gap, used]  # the order they were stored
    one, period, reused = stored
    assert one == bypass_finding(T0 + 5 * MINUTE, hung_up=True, id=first, found_us=one.found_us)
    assert before <= one.found_us <= after  # set by the store when not given
    assert one.hung_up is True and period.hung_up is False and reused.hung_up is False
    assert (period.kind, period.at_us, period.until_us, period.detail, period.why, period.channel) == (
        FINDING_NOT_WATCHED, T0, T0 + 7 * MINUTE, "AMI connection lost; watching again", None, None)
    assert (reused.found_us, reused.why, reused.decision_id, reused.number, reused.dialled, reused.until_us) == (
        T0 + 10 * MINUTE, BYPASS_DECISION_USED, "d-1", None, "anonymous@carrier", None)

    def listed(**filters: Any) -> list[int | None]:
        return [f.id for f in run(collect(store.list_findings(**filters)))]

    assert listed(kind=FINDING_BYPASS) == [first, used]
    assert listed(kind=FINDING_NOT_WATCHED) == [gap]
    # since: the leg or the period began then or later, or the period had not ended by then (T0 to T0 + 7').
    assert listed(since_us=T0 + 5 * MINUTE) == [first, gap, used]
    assert listed(since_us=T0 + 5 * MINUTE + 1) == [gap, used]
    assert listed(since_us=T0 + 7 * MINUTE) == [gap, used]
    assert listed(since_us=T0 + 7 * MINUTE + 1) == [used]
    assert listed(since_us=T0, kind=FINDING_NOT_WATCHED) == [gap]
    assert listed(since_us=T0 + 8 * MINUTE, kind=FINDING_NOT_WATCHED) == []
    assert listed(limit=2) == [first, gap]
    assert listed(limit=1, kind=FINDING_BYPASS, since_us=T0 + 6 * MINUTE) == [used]
    assert listed(kind="nosuch") == []


def test_closing_one_finding_leaves_the_others(store: Store, run: Callable[..., Any]) -> None:
    gaps = [run(store.add_finding(StoredFinding(kind=FINDING_NOT_WATCHED, at_us=T0 + i, detail=f"gap {i}",
                                                source="watch"))) for i in range(3)]
    run(store.close_finding(gaps[1], T0 + MINUTE, "closed"))
    assert [(f.until_us, f.detail) for f in run(collect(store.list_findings()))] == [
        (None, "gap 0"), (T0 + MINUTE, "closed"), (None, "gap 2")]
    # A period still open is unwatched at any later moment; a bypass before `since` is not listed.
    run(store.add_finding(bypass_finding(T0)))
    later = [f.detail for f in run(collect(store.list_findings(since_us=T0 + 60 * MINUTE)))]
    assert later == ["gap 0", "gap 2"]


def test_an_empty_store_has_no_findings(store: Store, run: Callable[..., Any]) -> None:
    assert run(collect(store.list_findings())) == []


# -- the call's linkedid under the hash chain ---------------------------------------------------------------


def old_chain_hash(row: AuditRow) -> str:
    """The hash as the log computed it before decisions kept their linkedid."""
    payload: dict[str, Any] = {"seq": row.seq, "prev": row.prev_hash,
                               **{f.name: getattr(row.entry, f.name) for f in fields(AuditEntry)}}
    del payload["linkedid"]
    if row.recorded_us is not None:
        payload["recorded_us"] = row.recorded_us
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def test_linkedid_is_stored_and_covered_by_the_chain(
    store: Store, run: Callable[..., Any], log: list[AuditRow]
) -> None:
    stored = run(collect(store.audit_rows()))
    assert stored == log
    assert [row.entry.linkedid for row in stored] == ["1764000000.19", None, "1764000000.15", "1764000000.30",
                                                      "1764000000.16"]
    # A row without a linkedid hashes exactly as rows did before it was kept: old logs still verify.
    assert stored[1].hash == old_chain_hash(stored[1])
    assert stored[0].hash != old_chain_hash(stored[0])
    report = run(verify_chain(store.audit_rows()))
    assert report.intact and report.rows == 5

    raw = RawDb(store, run)
    try:
        raw.drop_append_only_guards()
        for seq, forged in ((1, "1764000000.99"), (1, None), (2, "1764000000.10")):
            original = raw.execute("SELECT linkedid FROM audit_log WHERE seq = ?", (seq,)).fetchone()
            assert original is not None
            raw.execute("UPDATE audit_log SET linkedid = ? WHERE seq = ?", (forged, seq))
            report = run(verify_chain(store.audit_rows()))
            assert [p.seq for p in report.problems][:1] == [seq], (seq, forged)
            raw.execute("UPDATE audit_log SET linkedid = ? WHERE seq = ?", (original[0], seq))
        assert run(verify_chain(store.audit_rows())).intact
    finally:
        raw.close()


# -- db copy ------------------------------------------------------------------------------------------------


async def contents(url: str) -> tuple[list[AuditRow], list[StoredFinding]]:
    async with open_store(url, create=False) as store:
        return await collect(store.audit_rows()), await collect(store.list_findings())


def test_db_copy_carries_linkedid_and_findings_both_ways(
    pg_url: str, tmp_path: Path, run: Callable[..., Any], make_entry: Entry
) -> None:
    source = str(tmp_path / "source.db")
    opened = open_store(source)
    run(opened.open())
    try:
        decide(run, opened, make_entry, 0, uniqueid="1764000000.10", linkedid="1764000000.10")
        decide(run, opened, make_entry, 1, uniqueid="1764000000.20")
        run(opened.add_finding(bypass_finding(T0 + MINUTE, hung_up=True)))
        gap = run(opened.add_finding(StoredFinding(kind=FINDING_NOT_WATCHED, at_us=T0, detail="down",
                                                   source="watch")))
        run(opened.close_finding(gap, T0 + 2 * MINUTE, "down for 2 minutes"))
        run(opened.add_finding(bypass_finding(T0 + 3 * MINUTE, hung_up=False, why=BYPASS_DECISION_USED,
                                              decision_id="d-9")))
    finally:
        run(opened.close())
    rows, findings = run(contents(source))
    assert [r.entry.linkedid for r in rows] == ["1764000000.10", None]
    assert [f.hung_up for f in findings] == [True, False, False]

    report = run(copy_database(source, pg_url))
    assert report.counts["bypass_findings"] == 3 and report.target_chain.intact
    assert run(contents(pg_url)) == (rows, findings)
    back = str(tmp_path / "back.db")
    run(copy_database(pg_url, back))
    assert run(contents(back)) == (rows, findings)

    # The copies go on: new findings take new ids after the copied ones.
    for url in (pg_url, back):
        target = open_store(url, create=False)
        run(target.open())
        try:
            new = run(target.add_finding(bypass_finding(T0 + 4 * MINUTE)))
            assert new not in {f.id for f in findings}
            assert [f.id for f in run(collect(target.list_findings()))][-1] == new
        finally:
            run(target.close())
