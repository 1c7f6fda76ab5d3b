"""The console's counts kept in the web process (web/rollup.py): DecisionRollup catches up from the log in
seq order, hour by hour in the window, and FreshnessCache keeps each principal's answer freshness; both keep
going on a store error."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from rpoguard.audit import AuditEntry
from rpoguard.config import Config
from rpoguard.db.store import DecisionFilter, Freshness, ImportMeta, RpoAnswer, Store, StoreError
from rpoguard.timeutil import from_us, parse_time, to_us
from rpoguard.web.rollup import DAY_US, HOUR_US, DecisionRollup, FreshnessCache

Run = Callable[..., Any]

# 2026-11-24 (a Tuesday) 15:30 in Rome; midnight there is 23:00 UTC the day before.
NOW = to_us(parse_time("2026-11-24T15:30"))
MIDNIGHT = to_us(parse_time("2026-11-24T00:00"))


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def seeded(store: Store, run: Run) -> Store:
    run(store.add_principal("acme", "ACME Energia", []))
    run(store.add_principal("beta", "Beta Telco", []))
    run(store.add_campaign("spring26", "acme", False, None, None))
    return store


def decide(store: Store, run: Run, make_entry: Callable[..., AuditEntry], ts_us: int, reasons: str = "") -> int:
    entry = make_entry(ts_us=ts_us, decision="block" if reasons else "allow", reasons=reasons,
                       basis=None if reasons else "listed")
    return int(run(store.append_decision(entry)).seq)


def test_catch_up_counts_the_window_by_hour_day_week_and_reason(seeded: Store, run: Run,
                                                                make_entry: Callable[..., AuditEntry]) -> None:
    decide(seeded, run, make_entry, NOW - 9 * DAY_US)  # before the 8-day window: never read
    decide(seeded, run, make_entry, NOW - 7 * DAY_US, "rpo_registered")  # 7 days ago: in the window, not the week
    decide(seeded, run, make_entry, NOW - 6 * DAY_US - 15 * HOUR_US)  # 6 days ago at 00:30: in the week
    decide(seeded, run, make_entry, MIDNIGHT - 1, "outside_hours")  # yesterday, a microsecond before midnight
    decide(seeded, run, make_entry, MIDNIGHT)  # today
    decide(seeded, run, make_entry, NOW - HOUR_US, "rpo_registered,unlisted_no_consent")
    decide(seeded, run, make_entry, NOW - 1, "unlisted_no_consent")
    clock = Clock(NOW)
    rollup = DecisionRollup(seeded, clock=clock, batch=2)
    assert not rollup.ready
    assert run(rollup.catch_up()) == 6  # the first catch-up starts at the first row in the window
    assert rollup.ready
    assert rollup.today() == (1, 2)
    assert rollup.week() == (2, 3)
    assert rollup.blocks_by_reason(NOW - 8 * DAY_US) == [("rpo_registered", 2), ("outside_hours", 1),
                                                         ("unlisted_no_consent", 1)]
    assert rollup.blocks_by_reason(MIDNIGHT) == [("rpo_registered", 1), ("unlisted_no_consent", 1)]
    hour = NOW - NOW % HOUR_US
    assert rollup.series(3) == [(hour - 2 * HOUR_US, 0, 0), (hour - HOUR_US, 0, 1), (hour, 0, 1)]

    # Later decisions are read once, after the last seq seen; nothing twice.
    decide(seeded, run, make_entry, NOW + 10)
    clock.now = NOW + 20
    assert run(rollup.catch_up()) == 1
    assert run(rollup.catch_up()) == 0
    assert rollup.today() == (2, 2)


def test_a_row_written_with_the_clock_behind_counts_in_its_own_hour(seeded: Store, run: Run,
                                                                    make_entry: Callable[..., AuditEntry]) -> None:
    decide(seeded, run, make_entry, NOW - 10)
    rollup = DecisionRollup(seeded, clock=Clock(NOW))
    run(rollup.catch_up())
    decide(seeded, run, make_entry, NOW - 2 * HOUR_US, "optout")
    decide(seeded, run, make_entry, NOW - 20 * DAY_US)  # far behind: outside the window, skipped
    assert run(rollup.catch_up()) == 2
    hour = NOW - NOW % HOUR_US
    assert rollup.series(3) == [(hour - 2 * HOUR_US, 0, 1), (hour - HOUR_US, 0, 0), (hour, 1, 0)]
    assert rollup.week() == (1, 1)


def test_an_old_log_is_not_read_from_its_beginning(seeded: Store, run: Run,
                                                   make_entry: Callable[..., AuditEntry]) -> None:
    last = 0
    for n in range(3):
        last = decide(seeded, run, make_entry, NOW - 30 * DAY_US + n)
    reader = CountingReader(seeded)
    rollup = DecisionRollup(reader, clock=Clock(NOW))
    assert run(rollup.catch_up()) == 0
    assert reader.tally_after == [last]
    assert rollup.today() == (0, 0) and rollup.series(1)[0][1:] == (0, 0)
    decide(seeded, run, make_entry, NOW)
    assert run(rollup.catch_up()) == 1
    assert rollup.today() == (1, 0)


def test_hours_leave_the_window_as_time_passes(seeded: Store, run: Run, make_entry: Callable[..., AuditEntry]) -> None:
    decide(seeded, run, make_entry, NOW - 7 * DAY_US, "rpo_registered")
    clock = Clock(NOW)
    rollup = DecisionRollup(seeded, days=8, clock=clock)
    run(rollup.catch_up())
    assert rollup.blocks_by_reason(0) == [("rpo_registered", 1)]
    clock.now = NOW + 2 * DAY_US
    run(rollup.catch_up())
    assert rollup.blocks_by_reason(0) == []
    with pytest.raises(ValueError, match="days must be at least 1"):
        DecisionRollup(seeded, days=0)


@dataclass
class CountingReader:
    store: Store
    fail: int = 0

    def __post_init__(self) -> None:
        self.tally_after: list[int] = []

    async def decision_tally(self, after_seq: int, limit: int) -> list[tuple[int, int, str, str]]:
        self.tally_after.append(after_seq)
        if self.fail:
            self.fail -= 1
            raise StoreError("database unavailable: test")
        return await self.store.decision_tally(after_seq, limit)

    async def first_seq_since(self, ts_us: int) -> int | None:
        return await self.store.first_seq_since(ts_us)

    async def decision_page(self, flt: DecisionFilter, *, before_seq: int | None, limit: int) -> list[Any]:
        return await self.store.decision_page(flt, before_seq=before_seq, limit=limit)


def test_run_forever_logs_a_store_error_and_keeps_going(seeded: Store, run: Run, caplog: pytest.LogCaptureFixture,
                                                        make_entry: Callable[..., AuditEntry]) -> None:
    decide(seeded, run, make_entry, NOW - 5)
    reader = CountingReader(seeded, fail=2)
    rollup = DecisionRollup(reader, clock=Clock(NOW))

    async def until_ready() -> None:
        task = asyncio.ensure_future(rollup.run_forever(0.001))
        try:
            for _ in range(100_000):  # bounded: a loop that never recovers fails the assertion below
                if rollup.ready:
                    break
                await asyncio.sleep(0.001)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    with caplog.at_level(logging.INFO, logger="rpoguard.web.rollup"):
        run(until_ready())
    assert rollup.today() == (1, 0)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1  # the same failure twice is logged once
    assert "decision counts failed" in errors[0].getMessage() and "database unavailable" in errors[0].getMessage()
    assert any("working again" in r.getMessage() for r in caplog.records)


def test_freshness_cache_is_none_until_the_first_refresh_then_one_per_principal(seeded: Store, run: Run) -> None:
    meta = ImportMeta(kind="rpo", file_name="a.csv", checked_at=from_us(NOW - 14 * DAY_US - 12 * HOUR_US),
                      principal_id="acme")
    run(seeded.import_rpo([RpoAnswer("+393331234567", False), RpoAnswer("+393331234568", True)], meta))
    cache = FreshnessCache(seeded, Config(rpo_validity_days=15), clock=Clock(NOW))
    assert cache.get() is None
    run(cache.refresh())
    figures = cache.get()
    assert figures is not None
    assert [f.principal_id for f in figures] == ["acme", "beta"]
    acme = figures[0]
    assert (acme.numbers, acme.expired, acme.none, acme.expiring, acme.as_of_us) == (2, 0, 0, {1: 2, 3: 2, 7: 2}, NOW)
    # A shorter validity chosen in the configuration: the same answers have expired.
    short = FreshnessCache(seeded, Config(rpo_validity_days=10), clock=Clock(NOW))
    run(short.refresh())
    assert short.get() is not None and short.get()[0].expired == 2  # type: ignore[index]


class FailingFreshness:
    """Fails on its second and third rounds."""

    def __init__(self) -> None:
        self.calls = 0

    async def principal_ids(self) -> list[str]:
        self.calls += 1
        if self.calls in (2, 3):
            raise StoreError("database unavailable: gone")
        return ["acme"]

    async def answer_freshness(self, principal_id: str, now_us: int, validity_us: int,
                               horizons_days: tuple[int, ...] = (1, 3, 7)) -> Freshness:
        return Freshness(principal_id, self.calls, {d: 0 for d in horizons_days}, 0, now_us)


def test_a_failed_refresh_keeps_the_previous_figures_and_the_loop_goes_on(
        run: Run, caplog: pytest.LogCaptureFixture) -> None:
    reader = FailingFreshness()
    cache = FreshnessCache(reader, Config(), clock=Clock(NOW))
    run(cache.refresh())
    with pytest.raises(StoreError):
        run(cache.refresh())
    figures = cache.get()
    assert figures is not None and figures[0].numbers == 1

    async def until_refreshed() -> None:
        task = asyncio.ensure_future(cache.run_forever(0.001))
        try:
            for _ in range(100_000):
                if reader.calls >= 4:
                    break
                await asyncio.sleep(0.001)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    with caplog.at_level(logging.ERROR, logger="rpoguard.web.rollup"):
        run(until_refreshed())
    figures = cache.get()
    assert figures is not None and figures[0].numbers == 4
    assert [r.getMessage() for r in caplog.records if "answer freshness failed" in r.getMessage()] != []


class SlowReader(CountingReader):
    """Holds its first tally until released: a long first catch-up in the background."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.release = asyncio.Event()
        self.started = asyncio.Event()

    async def decision_tally(self, after_seq: int, limit: int) -> list[tuple[int, int, str, str]]:
        self.started.set()
        await self.release.wait()
        return await super().decision_tally(after_seq, limit)


def test_a_page_never_waits_for_a_catch_up_running_in_the_background(seeded: Store, run: Run,
                                                                    make_entry: Callable[..., AuditEntry]) -> None:
    decide(seeded, run, make_entry, NOW - 5)

    async def scenario() -> tuple[int, bool, tuple[int, int], int]:
        reader = SlowReader(seeded)
        rollup = DecisionRollup(reader, clock=Clock(NOW))
        background = asyncio.ensure_future(rollup.catch_up())
        await reader.started.wait()
        from_page = await rollup.catch_up()  # returns at once: the background one holds the counts' lock
        ready_then = rollup.ready
        reader.release.set()
        return from_page, ready_then, rollup.today(), await background

    from_page, ready_then, today_then, read = run(scenario())
    assert (from_page, ready_then, today_then, read) == (0, False, (0, 0), 1)
