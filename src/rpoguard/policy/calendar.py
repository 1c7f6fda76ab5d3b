"""Calling hours (Codice di condotta per il telemarketing, Garante provv. 148/2024, in force 28 Sep 2024).

Weekdays 09:00-20:00; Saturdays and days before a public holiday 10:00-19:00; never on Sundays or
public holidays. Windows are half-open: 09:00 <= t < 20:00 (docs/architecture.md §3).

Holidays come from the maintained `holidays` package (national calendar, no regional patron saints),
which includes 4 October (San Francesco d'Assisi) from 2026 under Legge 151/2025; the test suite pins that.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from functools import lru_cache

import holidays

from rpoguard.timeutil import ROME

WEEKDAY_WINDOW = (time(9, 0), time(20, 0))
REDUCED_WINDOW = (time(10, 0), time(19, 0))
SATURDAY = 5
SUNDAY = 6


@lru_cache(maxsize=64)
def _italian_holidays(year: int) -> frozenset[date]:
    # Built once per year and cached, so the per-call path only does a set lookup.
    return frozenset(holidays.country_holidays("IT", years=year))


def is_public_holiday(day: date) -> bool:
    return day in _italian_holidays(day.year)


def is_pre_holiday(day: date) -> bool:
    """True on the day before a public holiday ("prefestivo"), whatever weekday it falls on."""
    return is_public_holiday(day + timedelta(days=1))


@lru_cache(maxsize=64)
def allowed_window(day: date) -> tuple[time, time] | None:
    """The half-open calling window of a day in Europe/Rome, or None when no call is allowed.

    Cached: every call of a day asks about the same day, and the holiday lookups cost a few µs."""
    if day.weekday() == SUNDAY or is_public_holiday(day):
        return None
    if day.weekday() == SATURDAY or is_pre_holiday(day):
        return REDUCED_WINDOW
    return WEEKDAY_WINDOW


def within_calling_hours(at: datetime) -> bool:
    local = at.astimezone(ROME)
    window = allowed_window(local.date())
    if window is None:
        return False
    start, end = window
    return start <= local.time() < end


def rome_date(at: datetime) -> date:
    return at.astimezone(ROME).date()
