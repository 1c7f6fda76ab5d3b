"""`reconcile`: the live watcher's matching, after the fact, over Asterisk's CDR or CEL file
(docs/bypass.md "## reconcile").

Streaming in bounded memory over millions of rows. cdr_csv writes a record when it ends, so a long call's
leg comes after many that began later: a first pass over the file notes only when each trunk leg began,
and from the back the earliest start of the legs still to come. The second pass matches leg by leg while
the decisions stream from the store in time order: a decision is kept from when the latest leg so far
could use it until no leg still to come can (Matcher.forget_before), exactly, whatever the file's order.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
import tempfile
from array import array
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import IO

from rpoguard.bypass.match import SECOND_US, Bypass, Matcher, TrunkPatterns
from rpoguard.bypass.records import NO_UNIQUEID, LegRecord, RecordReader, Unreadable
from rpoguard.db.store import Store

log = logging.getLogger(__name__)

# Evicting costs a walk over the decisions held: done once the window moved this far (or max_age if more).
_FORGET_STEP_US = 60 * SECOND_US
# One trunk leg may fill several CDR rows (a transfer or a bridge change forks the record); a row for a leg
# already matched this recently is the same leg, as the live watcher sees each channel once.
_SAME_LEG_US = 3600 * SECOND_US
# Unreadable records kept for the report; the rest are only counted.
MAX_UNREADABLE_KEPT = 200


class NotThatFormat(ValueError):
    """Not one record of the file could be read in the format asked for."""


@dataclass(slots=True)
class Summary:
    path: str
    fmt: str
    records: int = 0
    trunk_legs: int = 0  # in the period, read and matched
    covered: int = 0
    bypasses: Counter[str] = field(default_factory=Counter)
    not_legs: int = 0
    outside: int = 0  # trunk legs that began outside --from/--to
    repeated: int = 0  # rows repeating a leg already matched (a forked CDR)
    unreadable: int = 0
    unreadable_kept: list[Unreadable] = field(default_factory=list)
    without_uniqueid: int = 0
    decisions: int = 0  # ALLOW decisions read from the store

    @property
    def bypass_count(self) -> int:
        return sum(self.bypasses.values())

    @property
    def proven(self) -> bool:
        """Every trunk leg covered and every record read."""
        return self.bypass_count == 0 and self.unreadable == 0


@dataclass(frozen=True, slots=True)
class Period:
    """--from/--to in µs; None: open."""

    start_us: int | None = None
    end_us: int | None = None

    def holds(self, at_us: int) -> bool:
        return (self.start_us is None or at_us >= self.start_us) and (self.end_us is None or at_us < self.end_us)


@contextlib.contextmanager
def _rereadable(path: str) -> Iterator[str]:
    """A path that can be read twice: the file itself, or a pipe's content spooled to a temporary file."""
    if stat.S_ISREG(os.stat(path).st_mode):
        yield path
        return
    with tempfile.NamedTemporaryFile(prefix="rpoguard-reconcile-") as spool, open(path, "rb") as source:
        shutil.copyfileobj(source, spool)
        spool.flush()
        yield spool.name


def _open(path: str) -> IO[str]:
    # Asterisk writes what the channels carried; a stray byte must not stop the reading of a month.
    return open(path, encoding="utf-8", errors="replace", newline="")


class Reconciler:
    """One run over one file. `on_bypass` and `on_unreadable` are called as they are found (for output as
    the file is read); the Summary is returned at the end."""

    def __init__(self, store: Store, patterns: TrunkPatterns, *, max_age_us: int, skew_us: int, zone: tzinfo,
                 trunk_prefix: str = "", period: Period = Period()) -> None:
        if not patterns:
            raise ValueError("no trunk patterns: [watch] trunks is empty")
        self.store = store
        self.patterns = patterns
        self.max_age_us = max_age_us
        self.skew_us = skew_us
        self.zone = zone
        self.trunk_prefix = trunk_prefix
        self.period = period

    def _reader(self, fmt: str, fh: IO[str], *, numbers: bool = True) -> RecordReader:
        return RecordReader(fh, fmt, self.patterns, self.zone, self.trunk_prefix, numbers=numbers)

    async def run(self, path: str, fmt: str, on_bypass: Callable[[Bypass, int], None],
                  on_unreadable: Callable[[Unreadable], None]) -> Summary:
        with _rereadable(path) as readable:
            starts, low, high = self._first_pass(readable, fmt, path)
            summary = Summary(path, fmt)
            await self._second_pass(readable, fmt, summary, starts, low, high, on_bypass, on_unreadable)
        return summary

    def _first_pass(self, path: str, fmt: str, shown: str) -> tuple[array[int], int, int]:
        """When each leg of the period began (as the file orders them), each replaced by the earliest start
        of it and the legs after it; and the span of decisions the legs can use."""
        starts: array[int] = array("q")
        low, high = 0, 0
        with _open(path) as fh:
            reader = self._reader(fmt, fh, numbers=False)
            for item in reader:
                if isinstance(item, LegRecord) and self.period.holds(item.leg.at_us):
                    leg = item.leg
                    end = leg.until_us if leg.until_us is not None else leg.at_us
                    if not starts:
                        low, high = leg.at_us, end
                    low, high = min(low, leg.at_us), max(high, end)
                    starts.append(leg.at_us)
        if reader.records and not reader.readable and reader.first_problem is not None:
            first = reader.first_problem
            raise NotThatFormat(f"{shown} is not a {'cdr_csv' if fmt == 'cdr' else 'cel_custom'} Master.csv "
                                f"(line {first.line}: {first.reason})")
        for i in range(len(starts) - 2, -1, -1):
            starts[i] = min(starts[i], starts[i + 1])
        return starts, low - self.max_age_us, high + self.skew_us + 1

    async def _second_pass(self, path: str, fmt: str, summary: Summary, starts: array[int], low: int, high: int,
                           on_bypass: Callable[[Bypass, int], None],
                           on_unreadable: Callable[[Unreadable], None]) -> None:
        matcher = Matcher(max_age_us=self.max_age_us, skew_us=self.skew_us)
        forget_step = max(self.max_age_us, _FORGET_STEP_US)
        forgotten = low
        seen: dict[tuple[str, str], int] = {}  # (trunk channel, the call's channel) -> when the leg began
        index = 0
        decisions = self.store.allowed_between(low, high) if starts else None
        pending = None
        with _open(path) as fh:
            reader = self._reader(fmt, fh)
            async with contextlib.aclosing(decisions) if decisions is not None else contextlib.nullcontext():
                for item in reader:
                    if isinstance(item, Unreadable):
                        summary.unreadable += 1
                        if len(summary.unreadable_kept) < MAX_UNREADABLE_KEPT:
                            summary.unreadable_kept.append(item)
                        on_unreadable(item)
                        continue
                    leg = item.leg
                    if not self.period.holds(leg.at_us):
                        summary.outside += 1
                        continue
                    watermark = starts[index] - self.max_age_us
                    index += 1
                    if watermark - forgotten >= forget_step:
                        matcher.forget_before(watermark)
                        forgotten = watermark
                        old = watermark - _SAME_LEG_US
                        seen = {k: v for k, v in seen.items() if v >= old}
                    key = (leg.channel, leg.caller_uniqueid or leg.uniqueid or "")
                    if key in seen and leg.at_us - seen[key] <= _SAME_LEG_US:
                        summary.repeated += 1
                        continue
                    seen[key] = leg.at_us
                    needed = (leg.until_us if leg.until_us is not None else leg.at_us) + self.skew_us
                    assert decisions is not None
                    while True:
                        if pending is None:
                            pending = await anext(decisions, None)
                            if pending is None:
                                break
                            summary.decisions += 1
                        if pending.at_us > needed:
                            break
                        matcher.add(pending)
                        pending = None
                    summary.trunk_legs += 1
                    result = matcher.match(leg)
                    if isinstance(result, Bypass):
                        summary.bypasses[result.why] += 1
                        on_bypass(result, item.line)
                    else:
                        summary.covered += 1
        summary.records = reader.records
        summary.not_legs = reader.not_legs
        summary.without_uniqueid = reader.without_uniqueid


__all__ = ["MAX_UNREADABLE_KEPT", "NO_UNIQUEID", "NotThatFormat", "Period", "Reconciler", "Summary"]
