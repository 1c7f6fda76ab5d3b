"""The benchmark store: N distinct Italian numbers, their RPO answers, directory listings and consents,
written through the product's own commands and Store imports (so a schema change reaches the benchmarks
too). Shared by bench_gate, bench_load, bench_pg and bench_asterisk."""

from __future__ import annotations

import asyncio
import bisect
import random
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from pathlib import Path

from common import MOBILE_PREFIXES, remove_db, venv_bin

CAMPAIGN = "bench"
PRINCIPAL = "acme"
CALLER_ID = "0694801234"
MAX_ATTEMPTS, PER_DAYS = 3, 7
CONSENTS = 1_000_000
FIXED_AREAS = ("02", "06")  # 8 subscriber digits: 10-digit national numbers
MOBILE_SHARE = 0.6
REGISTERED_PER_MILLE = 120
DATED_PER_MILLE = 700
LISTED_PER_MILLE = 333


def _jitter(j: int, step: int) -> int:
    return ((j * 2654435761) >> 7) % step if step > 1 else 0


@dataclass(frozen=True, slots=True)
class Layout:
    """N distinct valid Italian numbers in E.164 order: number g is a pure function of g, so the store can
    be written in key order without holding it and queries can be drawn at random from it."""

    size: int
    prefixes: tuple[str, ...]  # national prefix of each block, blocks in E.164 order
    digits: tuple[int, ...]
    starts: tuple[int, ...]  # first g of each block
    steps: tuple[int, ...]

    @classmethod
    def of(cls, size: int) -> Layout:
        blocks = [(p, 7, MOBILE_SHARE / len(MOBILE_PREFIXES)) for p in MOBILE_PREFIXES]
        blocks += [(a, 8, (1 - MOBILE_SHARE) / len(FIXED_AREAS)) for a in FIXED_AREAS]
        blocks.sort(key=lambda b: "+39" + b[0])
        counts = [int(size * share) for _, _, share in blocks]
        counts[-1] += size - sum(counts)
        starts, steps, at = [], [], 0
        for (_, digits, _), count in zip(blocks, counts, strict=True):
            starts.append(at)
            steps.append(max(1, 10**digits // max(count, 1)))
            at += count
        return cls(size, tuple(b[0] for b in blocks), tuple(b[1] for b in blocks), tuple(starts), tuple(steps))

    def national(self, g: int) -> str:
        block = bisect.bisect_right(self.starts, g) - 1
        j = g - self.starts[block]
        step = self.steps[block]
        return self.prefixes[block] + str(j * step + _jitter(j, step)).zfill(self.digits[block])

    def iter_national(self) -> Iterator[tuple[int, str]]:
        ends = (*self.starts[1:], self.size)
        for block, prefix in enumerate(self.prefixes):
            step, digits = self.steps[block], self.digits[block]
            start = self.starts[block]
            for j in range(ends[block] - start):
                yield start + j, prefix + str(j * step + _jitter(j, step)).zfill(digits)


def call_time() -> datetime:
    """A call time inside the calling hours, at most a few days ago: 11:00 Rome of the latest working day
    (Mon-Sat, not a holiday). The engine decides at this time; the store's answers are a day older."""
    from rpoguard.policy.calendar import is_public_holiday  # noqa: PLC0415
    from rpoguard.timeutil import ROME  # noqa: PLC0415

    now = datetime.now(ROME)
    day = now.date() if now.time() >= dtime(11, 0) else now.date() - timedelta(days=1)
    while day.weekday() == 6 or is_public_holiday(day):
        day -= timedelta(days=1)
    return datetime.combine(day, dtime(11, 0), tzinfo=ROME).astimezone(UTC)


@dataclass(slots=True)
class Store:
    path: Path
    layout: Layout
    at: datetime
    build_s: float
    size_bytes: int
    rows: dict[str, int]


def build_store(path: Path, size: int, at: datetime, env: dict[str, str]) -> Store:
    started = time.perf_counter()
    remove_db(path)
    rpoguard = venv_bin("rpoguard")
    base = [rpoguard, "--db", str(path)]
    subprocess.run([*base, "principal", "add", PRINCIPAL, "--name", "ACME Energia S.p.A.", "--caller-id", CALLER_ID],
                   env=env, check=True, capture_output=True)
    subprocess.run([*base, "campaign", "add", CAMPAIGN, "--principal", PRINCIPAL, "--max-attempts",
                    str(MAX_ATTEMPTS), "--per-days", str(PER_DAYS)], env=env, check=True, capture_output=True)
    layout = Layout.of(size)
    rows = asyncio.run(fill_store(path, layout, at))
    return Store(path, layout, at, time.perf_counter() - started, path.stat().st_size, rows)


async def fill_store(path: Path, layout: Layout, at: datetime) -> dict[str, int]:
    """The RPO answers, the directory and the consents, through the store's own imports (so the benchmark
    follows the schema): answers checked a day before the call time, listings and consents a month old."""
    from rpoguard.db import open_store  # noqa: PLC0415
    from rpoguard.db.store import ConsentRecord, ImportMeta, RpoAnswer  # noqa: PLC0415

    first_registration = datetime(2022, 7, 27, tzinfo=UTC)
    month_ago = at - timedelta(days=30)

    def answers() -> Iterator[RpoAnswer]:
        for g, national in layout.iter_national():
            h = (g * 2654435761) & 0xFFFFFFFF
            if h % 1000 < REGISTERED_PER_MILLE:
                dated = (h >> 10) % 1000 < DATED_PER_MILLE
                since = first_registration + timedelta(days=(h >> 20) % 1000) if dated else None
                yield RpoAnswer("+39" + national, True, since)
            else:
                yield RpoAnswer("+39" + national, False)

    # Position i (from 1) in number order picks the listed numbers and every `every`-th one for a consent.
    def listed() -> Iterator[str]:
        for i, (_, national) in enumerate(layout.iter_national(), start=1):
            if (i * 40503) % 1000 < LISTED_PER_MILLE:
                yield "+39" + national

    every = max(1, layout.size // CONSENTS)

    def consents() -> Iterator[ConsentRecord]:
        for i, (_, national) in enumerate(layout.iter_national(), start=1):
            if (i - 1) % every == 0 and (i - 1) // every < CONSENTS:
                yield ConsentRecord("+39" + national, PRINCIPAL, month_ago, f"bench-form-{i}", purpose="marketing")

    store = open_store(str(path))
    await store.open()
    try:
        rpo = await store.import_rpo(answers(), ImportMeta(kind="rpo", file_name="bench-rpo.csv",
                                                           checked_at=at - timedelta(days=1), principal_id=PRINCIPAL))
        directory = await store.import_directory(listed(), ImportMeta(kind="directory", file_name="bench-dir.txt",
                                                                      checked_at=month_ago), replace=False)
        consented = await store.import_consents(consents(), ImportMeta(kind="consent", file_name="bench-consents.csv"))
    finally:
        await store.close()
    return {"rpo_results": rpo.rows_stored, "listings": directory.rows_stored, "consents": consented.rows_stored}


def draw_numbers(layout: Layout, count: int, seed: int) -> list[str]:
    """Numbers drawn at random from the store, national form (as ${EXTEN} carries them), valid only."""
    from rpoguard.numbers import normalize_fast  # noqa: PLC0415

    rng = random.Random(seed)
    drawn: list[str] = []
    while len(drawn) < count:
        national = layout.national(rng.randrange(layout.size))
        if normalize_fast(national) is not None:  # drops the few Vatican City (06 698...) numbers
            drawn.append(national)
    return drawn
