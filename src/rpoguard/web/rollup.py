"""Counts the console shows on every overview, kept in the web process instead of asked of the store.

Counting a day of a 10 M-row decision log for each page view would cost seconds, and the log gets no index
for the console (each one costs every call's write). So DecisionRollup reads each decision once, in seq
order after the last one it saw (the primary key), and keeps allowed / blocked counts per hour and blocks per
reason for the last few days. FreshnessCache keeps how fresh each principal's RPO answers are, a query of
minutes over 30 M answers, refreshed in the background; a page shows its `as_of`, or "counting" before the
first result. Both are plain objects: the app runs their `run_forever` loops, never a request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, tzinfo
from typing import Protocol

from rpoguard.config import Config
from rpoguard.constants import ALLOW
from rpoguard.db.store import DecisionFilter, Freshness
from rpoguard.timeutil import ROME, from_us, to_us

log = logging.getLogger(__name__)

HOUR_US = 3_600_000_000
DAY_US = 24 * HOUR_US
TALLY_BATCH = 10_000
DECISIONS_INTERVAL_S = 5.0
FRESHNESS_INTERVAL_S = 300.0
HORIZONS_DAYS = (1, 3, 7)

Clock = Callable[[], int]  # now, in microseconds since the epoch


def wall_clock_us() -> int:
    return time.time_ns() // 1000


class DecisionReader(Protocol):
    async def decision_tally(self, after_seq: int, limit: int) -> list[tuple[int, int, str, str]]: ...

    async def first_seq_since(self, ts_us: int) -> int | None: ...

    async def decision_page(self, flt: DecisionFilter, *, before_seq: int | None, limit: int) -> list[object]: ...


class FreshnessReader(Protocol):
    async def principal_ids(self) -> list[str]: ...

    async def answer_freshness(self, principal_id: str, now_us: int, validity_us: int,
                               horizons_days: tuple[int, ...] = HORIZONS_DAYS) -> Freshness: ...


async def _forever(name: str, step: Callable[[], Awaitable[object]], interval: float) -> None:
    """Run `step` every `interval` seconds; a failure is logged (once per distinct message) and retried."""
    last_error = ""
    while True:
        try:
            await step()
            if last_error:
                log.info("%s: working again", name)
            last_error = ""
        except Exception as exc:  # the console keeps serving with the counts it has
            message = f"{type(exc).__name__}: {exc}"
            if message != last_error:
                log.error("%s failed, kept the previous counts and will retry in %.0f s: %s", name, interval, message)
            last_error = message
        await asyncio.sleep(interval)


class DecisionRollup:
    """Allowed / blocked per hour, and blocks per primary reason per hour, over the last `days` days."""

    def __init__(self, store: DecisionReader, *, days: int = 8, tz: tzinfo = ROME,
                 clock: Clock = wall_clock_us, batch: int = TALLY_BATCH) -> None:
        if days < 1:
            raise ValueError(f"DecisionRollup: days must be at least 1, not {days}")
        self._store = store
        self._days = days
        self._tz = tz
        self._clock = clock
        self._batch = batch
        self._after: int | None = None  # the last seq read; None before the first catch-up
        self._hours: dict[int, list[int]] = {}  # hour start -> [allowed, blocked]
        self._reasons: dict[int, Counter[str]] = {}  # hour start -> blocks per primary reason
        self._lock = asyncio.Lock()
        self._ready = False

    @property
    def ready(self) -> bool:
        """True once the first catch-up has finished: before, the counts are partial ("counting")."""
        return self._ready

    async def catch_up(self) -> int:
        """Read the decisions written since the last call; the number of rows read. Returns 0 at once while
        another catch-up runs (the background loop's first one reads days of decisions): a page that asks
        for the latest rows never waits for it, and shows the counts as they are ("counting" until ready)."""
        if self._lock.locked():
            return 0
        async with self._lock:
            now = self._clock()
            since = self._window_start(now)
            after = self._after
            if after is None:
                first = await self._store.first_seq_since(since)
                if first is None:
                    # Nothing in the window: go on from the newest row, never from the log's beginning.
                    newest = await self._store.decision_page(DecisionFilter(), before_seq=None, limit=1)
                    after = int(getattr(newest[0], "seq", 0)) if newest else 0
                else:
                    after = first - 1
            read = 0
            while True:
                rows = await self._store.decision_tally(after, self._batch)
                for seq, ts_us, decision, reason in rows:
                    after = seq
                    if ts_us < since:
                        continue  # a row written with the clock behind: outside the window
                    hour = ts_us - ts_us % HOUR_US
                    counts = self._hours.setdefault(hour, [0, 0])
                    if decision == ALLOW:
                        counts[0] += 1
                    else:
                        counts[1] += 1
                        self._reasons.setdefault(hour, Counter())[reason] += 1
                read += len(rows)
                # Published after each batch: a long first catch-up shows progress and resumes where it stopped.
                self._after = after
                if len(rows) < self._batch:
                    break
            self._prune(since)
            self._ready = True
            return read

    def _window_start(self, now_us: int) -> int:
        return now_us - self._days * DAY_US

    def _prune(self, since: int) -> None:
        for hour in [h for h in self._hours if h + HOUR_US <= since]:
            del self._hours[hour]
            self._reasons.pop(hour, None)

    def _sum(self, start_us: int) -> tuple[int, int]:
        allowed = blocked = 0
        for hour, (a, b) in self._hours.items():
            if hour >= start_us:
                allowed += a
                blocked += b
        return allowed, blocked

    def _midnight(self, days_back: int) -> int:
        """Local midnight `days_back` days before today, in the console's time zone."""
        local = from_us(self._clock()).astimezone(self._tz)
        day = local.date() - timedelta(days=days_back)
        return to_us(datetime(day.year, day.month, day.day, tzinfo=self._tz))

    def series(self, hours: int) -> list[tuple[int, int, int]]:
        """(hour start, allowed, blocked) for the last `hours` hours, the current one last, zeros included."""
        current = self._clock()
        current -= current % HOUR_US
        out = []
        for n in range(hours - 1, -1, -1):
            hour = current - n * HOUR_US
            allowed, blocked = self._hours.get(hour, (0, 0))
            out.append((hour, allowed, blocked))
        return out

    def today(self) -> tuple[int, int]:
        """(allowed, blocked) since local midnight."""
        return self._sum(self._midnight(0))

    def week(self) -> tuple[int, int]:
        """(allowed, blocked) over the last seven days: today and the six days before, from local midnight."""
        return self._sum(self._midnight(6))

    def blocks_by_reason(self, since_us: int) -> list[tuple[str, int]]:
        """Blocks per primary reason in the hours from the one holding `since_us`, most frequent first."""
        total: Counter[str] = Counter()
        start = since_us - since_us % HOUR_US
        for hour, reasons in self._reasons.items():
            if hour >= start:
                total.update(reasons)
        return sorted(total.items(), key=lambda item: (-item[1], item[0]))

    async def run_forever(self, interval: float = DECISIONS_INTERVAL_S) -> None:
        await _forever("decision counts", self.catch_up, interval)


class FreshnessCache:
    """How fresh each principal's RPO answers are, recomputed in the background."""

    def __init__(self, store: FreshnessReader, config: Config, *, clock: Clock = wall_clock_us,
                 horizons_days: tuple[int, ...] = HORIZONS_DAYS) -> None:
        self._store = store
        self._validity_us = config.rpo_validity_days * DAY_US
        self._clock = clock
        self._horizons = horizons_days
        self._result: list[Freshness] | None = None

    async def refresh(self) -> None:
        """Recompute every principal's figures; the previous ones serve until all are done."""
        now = self._clock()
        figures = [await self._store.answer_freshness(pid, now, self._validity_us, self._horizons)
                   for pid in await self._store.principal_ids()]
        self._result = figures

    def get(self) -> list[Freshness] | None:
        """The latest figures (each with its as_of_us), or None before the first refresh ends ("counting")."""
        return self._result

    async def run_forever(self, interval: float = FRESHNESS_INTERVAL_S) -> None:
        await _forever("answer freshness", self.refresh, interval)
