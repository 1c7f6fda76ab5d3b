"""registry due --check: a freshness alarm for cron and monitoring, from the numbers `registry due` lists."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fractions import Fraction

from rpoguard.cli.common import EXIT_BLOCK, EXIT_OK, UsageError
from rpoguard.constants import FRESHNESS_ALARM, FRESHNESS_OK
from rpoguard.db.store import Store
from rpoguard.timeutil import ROME, iso

log = logging.getLogger(__name__)

# Later than any answer can be checked: every number in scope counts as "checked at or before" it.
_END_OF_TIME = datetime(9999, 1, 1, tzinfo=UTC)


def max_share(text: str) -> Fraction:
    """--max-share: a share as 0.05 or 5%, from 0 to 1 (exact, so a share equal to it is never above it).
    Raised as UsageError, not argparse's error: one line, without the usage text."""
    given = text.strip()
    try:
        value = Fraction(given[:-1].strip()) / 100 if given.endswith("%") else Fraction(given)
    except (ValueError, ZeroDivisionError):
        raise UsageError(f"--max-share {text!r} is not a share (0.05 or 5%)") from None
    if not 0 <= value <= 1:
        raise UsageError(f"--max-share {text!r} is not a share between 0 and 1 (0% and 100%)")
    return value


@dataclass(frozen=True, slots=True)
class Tally:
    principal: str
    campaign: str | None
    numbers: int
    lacking: int

    def alarm(self, threshold: Fraction) -> bool:
        return self.lacking > threshold * self.numbers  # exact: lacking/numbers > threshold

    def share(self) -> float:
        return self.lacking / self.numbers if self.numbers else 0.0


async def _count(store: Store, principal: str, campaign: str | None, stale_before: datetime) -> int:
    count = 0
    async with contextlib.aclosing(store.due_numbers(None, principal, campaign, stale_before)) as numbers:
        async for _ in numbers:
            count += 1
    return count


async def tally(store: Store, principal: str, campaign: str | None, stale_before: datetime) -> Tally:
    # Both counts come from `registry due`'s own query, so "lacking" is exactly what it would list.
    return Tally(principal, campaign, await _count(store, principal, campaign, _END_OF_TIME),
                 await _count(store, principal, campaign, stale_before))


def _percent(value: float | Fraction) -> str:
    return f"{float(value) * 100:.2f}".rstrip("0").rstrip(".") + "%"


async def run_check(args: argparse.Namespace, store: Store, validity_days: int, principal: str | None) -> int:
    """One line per principal (or the campaign), exit 1 when any is above the threshold. `principal` is the
    one to check, or None for every principal (the campaign's when args.campaign is given)."""
    for flag, given in (("--from", args.source), ("-o", args.output), ("--national", args.national)):
        if given:
            raise UsageError(f"{flag} does not apply to --check (it counts, it writes no numbers)")
    threshold = max_share(args.max_share) if args.max_share is not None else Fraction(0)
    now = datetime.now(UTC)
    # The same wall-clock arithmetic as `registry due` and the decision's rule 5.
    stale_before = now.astimezone(ROME) + timedelta(days=args.within) - timedelta(days=validity_days)
    principals = [principal] if principal is not None else await store.principal_ids()
    if not principals:
        raise UsageError("no principal exists yet: nothing to check (add one with 'rpoguard principal add')")
    alarms = 0
    for pid in principals:
        counted = await tally(store, pid, args.campaign, stale_before)
        alarm = counted.alarm(threshold)
        alarms += alarm
        status = FRESHNESS_ALARM if alarm else FRESHNESS_OK
        if args.json:
            print(json.dumps({"status": status, "principal": pid, "campaign": args.campaign,
                              "numbers": counted.numbers, "lacking": counted.lacking,
                              "share": round(counted.share(), 6), "max_share": float(threshold),
                              "within_days": args.within, "as_of": iso(now)}))
        elif not args.quiet or alarm:
            scope = f"campaign {args.campaign} (principal {pid})" if args.campaign else f"principal {pid}"
            print(f"{status} {scope}: {counted.lacking} of {counted.numbers} number(s) lack a valid RPO answer "
                  f"within {args.within} day(s), {_percent(counted.share())} (at most {_percent(threshold)})")
    log.info("registry due --check: %d of %d alarm(s)", alarms, len(principals))
    return EXIT_BLOCK if alarms else EXIT_OK
