"""What the web console reads: Store.decision_page / decision_rows / decision_tally / first_seq_since /
import_history / answer_freshness on both backends, with every filter, the order and the keyset."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import pytest

from rpoguard.audit import AuditEntry, AuditRow
from rpoguard.db.store import DecisionFilter, ImportFile, ImportMeta, RpoAnswer, Store
from rpoguard.timeutil import from_us, parse_time, to_us

T = TypeVar("T")
Run = Callable[..., Any]

SECOND = 1_000_000
DAY = 86_400 * SECOND
T0 = to_us(parse_time("2026-11-24T11:00"))
NUM = "+393331234567"
OTHER = "+390645678901"


async def collect(rows: AsyncIterator[T]) -> list[T]:
    return [row async for row in rows]


@pytest.fixture
def seeded(store: Store, run: Run) -> Store:
    run(store.add_principal("acme", "ACME Energia", []))
    run(store.add_principal("beta", "Beta Telco", []))
    run(store.add_campaign("spring26", "acme", False, None, None))
    run(store.add_campaign("beta1", "beta", False, None, None))
    return store


@pytest.fixture
def logged(seeded: Store, run: Run, make_entry: Callable[..., AuditEntry]) -> list[AuditRow]:
    """Eight decisions a minute apart; the seventh was made with the clock stepped back an hour."""
    specs: list[dict[str, object]] = [
        {"number": NUM},
        {"number": OTHER, "decision": "block", "reasons": "rpo_registered,unlisted_no_consent", "basis": None},
        {"number": NUM, "campaign_id": "beta1", "principal_id": "beta", "source": "fastagi"},
        {"number": NUM, "decision": "block", "reasons": "unlisted_no_consent", "basis": None},
        {"number": OTHER, "decision": "block", "reasons": "rpo_expired", "basis": None, "source": "fastagi"},
        {"number": None, "raw_number": "xyz", "decision": "block", "reasons": "invalid_number", "basis": None},
        {"number": NUM, "ts_us": T0 - 3600 * SECOND},
        {"number": OTHER},
    ]
    rows = []
    for i, spec in enumerate(specs):
        fields: dict[str, object] = {"ts_us": T0 + i * 60 * SECOND, **spec}
        rows.append(run(seeded.append_decision(make_entry(**fields))))
    return rows


def newest_first(rows: list[AuditRow]) -> list[int]:
    return [r.seq for r in sorted(rows, key=lambda r: (r.entry.ts_us, r.seq), reverse=True)]


def pages(store: Store, run: Run, flt: DecisionFilter, limit: int) -> list[list[int]]:
    out: list[list[int]] = []
    before: int | None = None
    while True:
        page = run(store.decision_page(flt, before_seq=before, limit=limit))
        if not page:
            return out
        out.append([r.seq for r in page])
        before = page[-1].seq


def test_decision_pages_are_newest_first_by_time(seeded: Store, logged: list[AuditRow], run: Run) -> None:
    page = run(seeded.decision_page(DecisionFilter(), before_seq=None, limit=50))
    assert [r.seq for r in page] == [8, 6, 5, 4, 3, 2, 1, 7]
    # The row written with the clock stepped back sits at its own time, not at its seq.
    assert page[-1].entry.ts_us == T0 - 3600 * SECOND


@pytest.mark.parametrize("limit", [1, 3, 8, 50])
def test_keyset_pages_cover_the_log_in_order(seeded: Store, logged: list[AuditRow], run: Run, limit: int) -> None:
    walked = pages(seeded, run, DecisionFilter(), limit)
    assert [seq for page in walked for seq in page] == newest_first(logged)
    assert all(len(page) == limit for page in walked[:-1])
    full = run(seeded.decision_page(DecisionFilter(), before_seq=None, limit=50))
    assert full[0] == logged[7]  # whole rows, as stored
    assert full[0].entry == logged[7].entry and full[0].hash == logged[7].hash


def test_a_page_after_a_row_that_does_not_exist_is_empty(seeded: Store, logged: list[AuditRow], run: Run) -> None:
    assert run(seeded.decision_page(DecisionFilter(), before_seq=999, limit=10)) == []


@pytest.mark.parametrize(("flt", "expected"), [
    (DecisionFilter(number=NUM), [1, 3, 4, 7]),
    (DecisionFilter(campaign_id="beta1"), [3]),
    (DecisionFilter(principal_id="acme"), [1, 2, 4, 5, 6, 7, 8]),
    (DecisionFilter(decision="block"), [2, 4, 5, 6]),
    (DecisionFilter(reason="unlisted_no_consent"), [2, 4]),
    (DecisionFilter(reason="rpo_registered"), [2]),
    (DecisionFilter(reason="rpo"), []),  # a whole code, never a part of one
    (DecisionFilter(reason="rpo_expire_"), []),  # LIKE's wildcards are plain characters here
    (DecisionFilter(reason="rpo_expired"), [5]),
    (DecisionFilter(source="fastagi"), [3, 5]),
    # Half-open on the decision's time: [T0 + 1 min, T0 + 4 min).
    (DecisionFilter(start_us=T0 + 60 * SECOND, end_us=T0 + 240 * SECOND), [2, 3, 4]),
    (DecisionFilter(end_us=T0), [7]),
    (DecisionFilter(number=NUM, decision="allow", start_us=T0 - DAY), [1, 3, 7]),
])
def test_every_filter(seeded: Store, logged: list[AuditRow], run: Run, flt: DecisionFilter,
                      expected: list[int]) -> None:
    wanted = [seq for seq in newest_first(logged) if seq in expected]
    assert [seq for page in pages(seeded, run, flt, 2) for seq in page] == wanted
    # The export streams the same rows, oldest first.
    assert [r.seq for r in run(collect(seeded.decision_rows(flt)))] == wanted[::-1]


def test_decision_rows_stream_the_whole_log_oldest_first(seeded: Store, logged: list[AuditRow], run: Run) -> None:
    rows = run(collect(seeded.decision_rows(DecisionFilter())))
    assert [r.seq for r in rows] == newest_first(logged)[::-1]
    assert rows[0].entry.ts_us == T0 - 3600 * SECOND


def test_tally_reads_after_a_seq_in_seq_order_with_the_primary_reason(seeded: Store, logged: list[AuditRow],
                                                                       run: Run) -> None:
    tally = run(seeded.decision_tally(0, 100))
    assert tally == [(r.seq, r.entry.ts_us, r.entry.decision, r.entry.reasons.split(",")[0]) for r in logged]
    assert tally[1] == (2, T0 + 60 * SECOND, "block", "rpo_registered")
    assert tally[0][3] == ""
    assert [t[0] for t in run(seeded.decision_tally(3, 2))] == [4, 5]
    assert run(seeded.decision_tally(8, 10)) == []


def test_first_seq_since_finds_the_first_decision_at_or_after_a_time(seeded: Store, logged: list[AuditRow],
                                                                     run: Run) -> None:
    assert run(seeded.first_seq_since(0)) == 7  # the earliest decision in time
    assert run(seeded.first_seq_since(T0)) == 1
    assert run(seeded.first_seq_since(T0 + 1)) == 2
    assert run(seeded.first_seq_since(T0 + 120 * SECOND)) == 3
    assert run(seeded.first_seq_since(T0 + 420 * SECOND + 1)) is None


def test_first_seq_since_on_an_empty_log(seeded: Store, run: Run) -> None:
    assert run(seeded.first_seq_since(0)) is None
    assert run(seeded.decision_tally(0, 10)) == []
    assert run(seeded.decision_page(DecisionFilter(), before_seq=None, limit=10)) == []


def _import_rpo(store: Store, run: Run, principal: str, checked: int, numbers: list[str], name: str) -> int:
    meta = ImportMeta(kind="rpo", file_name=name, sha256=name.encode().hex().ljust(64, "0")[:64],
                      checked_at=from_us(checked), principal_id=principal)
    summary = run(store.import_rpo([RpoAnswer(n, False) for n in numbers], meta))
    assert summary.import_id is not None
    return summary.import_id


def test_import_history_newest_first_with_files_kind_and_keyset(seeded: Store, run: Run) -> None:
    first = _import_rpo(seeded, run, "acme", T0 - DAY, [NUM], "a.csv")
    directory = run(seeded.import_directory([OTHER], ImportMeta(kind="directory", file_name="dir.txt",
                                                                checked_at=from_us(T0 - DAY)), replace=False))
    second = _import_rpo(seeded, run, "beta", T0, [NUM, OTHER], "b.csv")
    history = run(seeded.import_history(limit=10))
    assert [i.id for i in history] == [second, directory.import_id, first]
    newest = history[0]
    assert (newest.kind, newest.principal_id, newest.checked_us, newest.rows_read, newest.rows_stored,
            newest.rows_rejected) == ("rpo", "beta", T0, 2, 2, 0)
    assert newest.files == (ImportFile("file", "b.csv", None, newest.files[0].sha256),)
    assert isinstance(newest.detail, dict) and newest.detail
    assert newest.imported_us > T0 - 365 * DAY
    assert history[1].kind == "directory" and history[1].principal_id is None
    assert [i.id for i in run(seeded.import_history(limit=2))] == [second, directory.import_id]
    assert [i.id for i in run(seeded.import_history(limit=10, before_id=second))] == [directory.import_id, first]
    assert [i.id for i in run(seeded.import_history(limit=10, kind="rpo"))] == [second, first]
    assert run(seeded.import_history(limit=10, kind="consent")) == []


def test_import_history_of_an_empty_store(seeded: Store, run: Run) -> None:
    assert run(seeded.import_history(limit=5)) == []


def test_answer_freshness_counts_what_registry_due_would_list(seeded: Store, run: Run,
                                                            make_entry: Callable[..., AuditEntry]) -> None:
    validity = 15 * DAY
    now = T0
    fresh = ["+393330000001", "+393330000002"]  # checked today: valid 15 days
    soon = ["+393330000003"]  # checked 13.5 days ago: expires within 3 days, not within 1
    tomorrow = ["+393330000004"]  # checked 14.5 days ago: expires within 1 day
    old = ["+393330000005", "+393330000006"]  # checked 20 days ago: expired
    _import_rpo(seeded, run, "acme", now - 20 * DAY, old + soon, "old.csv")
    _import_rpo(seeded, run, "acme", now - 27 * DAY // 2, soon, "soon.csv")
    _import_rpo(seeded, run, "acme", now - 29 * DAY // 2, tomorrow, "tomorrow.csv")
    _import_rpo(seeded, run, "acme", now, fresh, "fresh.csv")
    # Another principal's answer never counts for acme; a number acme called without an answer is due.
    _import_rpo(seeded, run, "beta", now, ["+393330000009"], "beta.csv")
    run(seeded.append_decision(make_entry(number="+393330000007", ts_us=now - DAY)))
    got = run(seeded.answer_freshness("acme", now, validity))
    assert (got.principal_id, got.numbers, got.none, got.expired, got.as_of_us) == ("acme", 7, 1, 2, now)
    assert got.expiring == {1: 1, 3: 2, 7: 2}
    assert got.due == 3
    # The same numbers as `registry due` lists at that moment.
    due = run(collect(seeded.due_numbers(None, "acme", None, from_us(now - validity))))
    assert len(due) == got.due
    beta = run(seeded.answer_freshness("beta", now, validity, (2,)))
    assert (beta.numbers, beta.none, beta.expired, beta.expiring) == (1, 0, 0, {2: 0})


def test_answer_freshness_of_a_principal_with_nothing(seeded: Store, run: Run) -> None:
    got = run(seeded.answer_freshness("beta", T0, 15 * DAY))
    assert (got.numbers, got.none, got.expired, got.expiring) == (0, 0, 0, {1: 0, 3: 0, 7: 0})


def search_all(store: Store, run: Run, flt: DecisionFilter, limit: int, scan: int) -> tuple[list[int], int]:
    """Every match, following next_before page after page; and how many searches it took."""
    found: list[int] = []
    before: int | None = None
    searches = 0
    while True:
        page = run(store.decision_search(flt, before_seq=before, limit=limit, scan_limit=scan))
        searches += 1
        found += [r.seq for r in page.rows]
        assert len(page.rows) <= limit
        if page.next_before is None:
            return found, searches
        before = page.next_before


@pytest.mark.parametrize(("flt", "expected"), [
    (DecisionFilter(), [8, 6, 5, 4, 3, 2, 1, 7]),
    (DecisionFilter(decision="block"), [6, 5, 4, 2]),
    (DecisionFilter(campaign_id="beta1"), [3]),
    (DecisionFilter(campaign_id="nosuch"), []),
    (DecisionFilter(number=NUM, decision="allow"), [3, 1, 7]),
    (DecisionFilter(reason="rpo_registered", start_us=T0), [2]),
])
@pytest.mark.parametrize(("limit", "scan"), [(2, 1), (2, 3), (3, 100), (50, 2)])
def test_a_bounded_search_finds_every_match_in_order_page_after_page(seeded: Store, logged: list[AuditRow],
                                                                     run: Run, flt: DecisionFilter,
                                                                     expected: list[int], limit: int,
                                                                     scan: int) -> None:
    found, _ = search_all(seeded, run, flt, limit, scan)
    assert found == expected


def test_a_bounded_search_looks_at_no_more_rows_than_its_budget(seeded: Store, logged: list[AuditRow],
                                                               run: Run) -> None:
    # Nothing matches: each search looks at two rows and says where the next one goes on from.
    page = run(seeded.decision_search(DecisionFilter(campaign_id="nosuch"), before_seq=None, limit=5, scan_limit=2))
    assert (page.rows, page.next_before, page.partial) == ([], 6, True)
    page = run(seeded.decision_search(DecisionFilter(campaign_id="nosuch"), before_seq=6, limit=5, scan_limit=2))
    assert (page.rows, page.next_before, page.partial) == ([], 4, True)
    _, searches = search_all(seeded, run, DecisionFilter(campaign_id="nosuch"), 5, 2)
    assert searches == 5  # eight rows, two at a time, and the last search finds the range's end
    # A full page goes on from its last row; a page that reached the range's end has nowhere to go.
    full = run(seeded.decision_search(DecisionFilter(decision="block"), before_seq=None, limit=2, scan_limit=50))
    assert ([r.seq for r in full.rows], full.next_before, full.partial) == ([6, 5], 5, False)
    end = run(seeded.decision_search(DecisionFilter(decision="block"), before_seq=5, limit=5, scan_limit=50))
    assert ([r.seq for r in end.rows], end.next_before, end.partial) == ([4, 2], None, False)
    # The budget counts the rows of the walked range only (a number's rows, a time range).
    mine = run(seeded.decision_search(DecisionFilter(number=OTHER, decision="block"), before_seq=None, limit=5,
                                      scan_limit=2))
    assert ([r.seq for r in mine.rows], mine.next_before, mine.partial) == ([5], 5, True)
    assert run(seeded.decision_search(DecisionFilter(), before_seq=999, limit=5, scan_limit=5)).rows == []
    with pytest.raises(ValueError, match="scan_limit"):
        run(seeded.decision_search(DecisionFilter(), before_seq=None, limit=5, scan_limit=0))
