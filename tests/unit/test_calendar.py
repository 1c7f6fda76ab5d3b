"""rpoguard.policy.calendar: the calling hours of the Codice di condotta per il telemarketing, in Europe/Rome.

Weekdays 09:00-20:00; Saturdays and days before a public holiday 10:00-19:00; never on Sundays or public
holidays (architecture.md §3, docs/law.md §7). Windows are half-open. The national holidays come from the
`holidays` package; the first tests pin what it says against the law written out here by hand, so a release
that drops or adds a day fails with the date in the message.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import holidays
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rpoguard.policy import calendar
from rpoguard.policy.calendar import (
    REDUCED_WINDOW,
    WEEKDAY_WINDOW,
    allowed_window,
    is_pre_holiday,
    is_public_holiday,
    rome_date,
    within_calling_hours,
)

ROME = ZoneInfo("Europe/Rome")
NEW_YORK = ZoneInfo("America/New_York")
KIRITIMATI = timezone(timedelta(hours=14))
PROPERTY = settings(max_examples=300, deadline=None, derandomize=True)

# Easter Sunday, from the ecclesiastical tables; Pasquetta (Easter Monday) is the day after.
EASTER = {
    2024: date(2024, 3, 31),
    2025: date(2025, 4, 20),
    2026: date(2026, 4, 5),
    2027: date(2027, 3, 28),
    2028: date(2028, 4, 16),
    2029: date(2029, 4, 1),
    2030: date(2030, 4, 21),
}
YEARS = tuple(sorted(EASTER))


def national_holidays(year: int) -> set[date]:
    """Italy's national public holidays (L. 260/1949 as amended; L. 151/2025 restores 4 October from 2026)."""
    days = {
        date(year, 1, 1),  # Capodanno
        date(year, 1, 6),  # Epifania
        EASTER[year],  # Pasqua
        EASTER[year] + timedelta(days=1),  # Lunedì dell'Angelo
        date(year, 4, 25),  # Festa della Liberazione
        date(year, 5, 1),  # Festa del Lavoro
        date(year, 6, 2),  # Festa della Repubblica
        date(year, 8, 15),  # Ferragosto
        date(year, 11, 1),  # Ognissanti
        date(year, 12, 8),  # Immacolata
        date(year, 12, 25),  # Natale
        date(year, 12, 26),  # Santo Stefano
    }
    if year >= 2026:
        days.add(date(year, 10, 4))  # San Francesco d'Assisi, patrono d'Italia
    return days


def rome(y: int, m: int, d: int, hh: int = 0, mm: int = 0, ss: int = 0, us: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, ss, us, tzinfo=ROME)


def utc(y: int, m: int, d: int, hh: int = 0, mm: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=UTC)


# --- the holiday calendar itself --------------------------------------------------------------------------


def test_holidays_package_is_new_enough_for_legge_151_2025() -> None:
    major, minor = (int(part) for part in holidays.__version__.split(".")[:2])
    assert (major, minor) >= (0, 80), holidays.__version__


@pytest.mark.parametrize("year", YEARS)
def test_every_national_holiday_is_known(year: int) -> None:
    missing = {d for d in national_holidays(year) if not is_public_holiday(d)}
    assert not missing, f"holidays {holidays.__version__} lacks {sorted(missing)}"


@pytest.mark.parametrize("year", YEARS)
def test_no_weekday_is_closed_that_the_law_keeps_open(year: int) -> None:
    # The package also lists the Giornata dell'Unità nazionale on the first Sunday of November; that is not
    # a day off, but a Sunday is closed anyway. Any other extra day would wrongly close a working day.
    library = set(holidays.country_holidays("IT", years=year))
    extra = {d for d in library - national_holidays(year) if d.weekday() != calendar.SUNDAY}
    assert not extra, f"holidays {holidays.__version__} adds {sorted(extra)}"


@pytest.mark.parametrize(
    ("day", "holiday"),
    [
        pytest.param(date(2025, 10, 4), False, id="4 Oct 2025: not yet a holiday"),
        pytest.param(date(2026, 10, 4), True, id="4 Oct 2026: San Francesco, L. 151/2025"),
        pytest.param(date(2027, 10, 4), True, id="4 Oct 2027"),
        pytest.param(date(2024, 10, 4), False, id="4 Oct 2024"),
        pytest.param(date(2026, 4, 25), True, id="25 Apr"),
        pytest.param(date(2026, 6, 2), True, id="2 Jun"),
        pytest.param(date(2026, 4, 6), True, id="Easter Monday 2026"),
        pytest.param(date(2025, 4, 21), True, id="Easter Monday 2025"),
        pytest.param(date(2026, 4, 5), True, id="Easter Sunday 2026"),
        pytest.param(date(2026, 12, 26), True, id="Santo Stefano"),
        pytest.param(date(2026, 11, 4), False, id="4 Nov: national day, not a holiday"),
        pytest.param(date(2026, 12, 24), False, id="Christmas Eve is not a holiday"),
        pytest.param(date(2026, 6, 29), False, id="Rome's patron saint: regional, not national"),
        pytest.param(date(2026, 12, 7), False, id="Milan's Sant'Ambrogio: regional, not national"),
        pytest.param(date(2026, 5, 12), False, id="an ordinary Tuesday"),
    ],
)
def test_is_public_holiday(day: date, holiday: bool) -> None:
    assert is_public_holiday(day) is holiday


@pytest.mark.parametrize(
    ("day", "pre"),
    [
        pytest.param(date(2025, 12, 24), True, id="24 Dec (Wed)"),
        pytest.param(date(2025, 12, 25), True, id="25 Dec: day before Santo Stefano"),
        pytest.param(date(2025, 12, 31), True, id="31 Dec: next year's 1 Jan"),
        pytest.param(date(2026, 12, 31), True, id="31 Dec 2026"),
        pytest.param(date(2026, 10, 3), True, id="3 Oct 2026"),
        pytest.param(date(2025, 10, 3), False, id="3 Oct 2025: 4 Oct not yet a holiday"),
        pytest.param(date(2025, 8, 14), True, id="14 Aug 2025"),
        pytest.param(date(2026, 4, 4), True, id="Saturday before Easter 2026"),
        pytest.param(date(2026, 4, 5), True, id="Easter Sunday, before Pasquetta"),
        pytest.param(date(2026, 4, 24), True, id="Fri 24 Apr 2026"),
        pytest.param(date(2026, 6, 1), True, id="Mon 1 Jun 2026"),
        pytest.param(date(2026, 1, 5), True, id="Mon 5 Jan 2026"),
        pytest.param(date(2026, 5, 9), False, id="an ordinary Saturday is not pre-holiday"),
        pytest.param(date(2026, 5, 12), False, id="an ordinary Tuesday"),
    ],
)
def test_is_pre_holiday(day: date, pre: bool) -> None:
    assert is_pre_holiday(day) is pre


# --- the window of each kind of day -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "window"),
    [
        pytest.param(date(2026, 5, 12), WEEKDAY_WINDOW, id="Tuesday"),
        pytest.param(date(2026, 5, 15), WEEKDAY_WINDOW, id="Friday"),
        pytest.param(date(2026, 5, 16), REDUCED_WINDOW, id="Saturday"),
        pytest.param(date(2026, 5, 17), None, id="Sunday"),
        pytest.param(date(2025, 12, 24), REDUCED_WINDOW, id="24 Dec 2025 (Wed): pre-holiday"),
        pytest.param(date(2025, 12, 31), REDUCED_WINDOW, id="31 Dec 2025 (Wed): pre-holiday"),
        pytest.param(date(2026, 8, 14), REDUCED_WINDOW, id="14 Aug 2026 (Fri): pre-holiday"),
        pytest.param(date(2025, 8, 14), REDUCED_WINDOW, id="14 Aug 2025 (Thu): pre-holiday"),
        pytest.param(date(2026, 4, 24), REDUCED_WINDOW, id="24 Apr 2026 (Fri): before a Saturday holiday"),
        pytest.param(date(2026, 4, 25), None, id="25 Apr 2026 (Sat): holiday"),
        pytest.param(date(2025, 4, 25), None, id="25 Apr 2025 (Fri): holiday"),
        pytest.param(date(2026, 6, 2), None, id="2 Jun 2026 (Tue): holiday"),
        pytest.param(date(2026, 4, 6), None, id="Easter Monday 2026"),
        pytest.param(date(2026, 4, 4), REDUCED_WINDOW, id="Saturday before Easter"),
        pytest.param(date(2026, 10, 3), REDUCED_WINDOW, id="3 Oct 2026 (Sat)"),
        pytest.param(date(2026, 10, 4), None, id="4 Oct 2026 (Sun, holiday)"),
        pytest.param(date(2025, 10, 3), WEEKDAY_WINDOW, id="3 Oct 2025 (Fri): ordinary"),
        pytest.param(date(2025, 10, 4), REDUCED_WINDOW, id="4 Oct 2025 (Sat): ordinary Saturday"),
        pytest.param(date(2027, 10, 1), WEEKDAY_WINDOW, id="1 Oct 2027 (Fri)"),
        pytest.param(date(2027, 10, 2), REDUCED_WINDOW, id="2 Oct 2027 (Sat)"),
        pytest.param(date(2027, 10, 4), None, id="4 Oct 2027 (Mon): holiday"),
        pytest.param(date(2027, 10, 5), WEEKDAY_WINDOW, id="5 Oct 2027 (Tue)"),
        pytest.param(date(2026, 3, 29), None, id="DST starts (Sun)"),
        pytest.param(date(2026, 10, 25), None, id="DST ends (Sun)"),
    ],
)
def test_allowed_window(day: date, window: tuple[time, time] | None) -> None:
    assert allowed_window(day) == window


def test_windows_are_the_codes() -> None:
    assert (time(9, 0), time(20, 0)) == WEEKDAY_WINDOW
    assert (time(10, 0), time(19, 0)) == REDUCED_WINDOW


@pytest.mark.parametrize("year", YEARS)
def test_allowed_window_matches_the_law_every_day(year: int) -> None:
    law = national_holidays(year) | {date(year + 1, 1, 1)}
    day = date(year, 1, 1)
    while day.year == year:
        if day.weekday() == calendar.SUNDAY or day in law:
            expected = None
        elif day.weekday() == calendar.SATURDAY or day + timedelta(days=1) in law:
            expected = REDUCED_WINDOW
        else:
            expected = WEEKDAY_WINDOW
        assert allowed_window(day) == expected, day
        day += timedelta(days=1)


# --- boundaries, to the minute and the microsecond -------------------------------------------------------

WEEKDAY = (2026, 5, 12)  # Tuesday
SATURDAY = (2026, 5, 16)
PRE_HOLIDAYS = [
    pytest.param((2025, 12, 24), id="24 Dec"),
    pytest.param((2025, 12, 31), id="31 Dec"),
    pytest.param((2026, 10, 3), id="3 Oct 2026"),
    pytest.param((2025, 8, 14), id="14 Aug 2025"),
    pytest.param((2026, 8, 14), id="14 Aug 2026"),
    pytest.param((2026, 4, 4), id="Saturday before Easter"),
    pytest.param((2026, 4, 24), id="Friday before 25 Apr 2026"),
    pytest.param((2026, 6, 1), id="Monday before 2 Jun 2026"),
]
CLOSED_DAYS = [
    pytest.param((2026, 5, 17), id="Sunday"),
    pytest.param((2026, 4, 25), id="25 Apr 2026 (Sat)"),
    pytest.param((2025, 4, 25), id="25 Apr 2025 (Fri)"),
    pytest.param((2026, 6, 2), id="2 Jun 2026 (Tue)"),
    pytest.param((2026, 4, 6), id="Easter Monday 2026"),
    pytest.param((2025, 4, 21), id="Easter Monday 2025"),
    pytest.param((2026, 10, 4), id="4 Oct 2026"),
    pytest.param((2027, 10, 4), id="4 Oct 2027 (Mon)"),
    pytest.param((2025, 12, 25), id="Christmas"),
    pytest.param((2025, 12, 26), id="Santo Stefano (Fri)"),
    pytest.param((2026, 1, 1), id="New Year"),
    pytest.param((2026, 1, 6), id="Epiphany"),
    pytest.param((2025, 8, 15), id="Ferragosto (Fri)"),
    pytest.param((2026, 12, 8), id="Immacolata (Tue)"),
    pytest.param((2026, 3, 29), id="DST starts"),
    pytest.param((2026, 10, 25), id="DST ends"),
]


def edge(hh: int, mm: int, allowed: bool) -> object:
    return pytest.param((hh, mm), allowed, id=f"{hh:02d}:{mm:02d} {'open' if allowed else 'closed'}")


WEEKDAY_EDGES = [edge(0, 0, False), edge(8, 59, False), edge(9, 0, True), edge(12, 0, True),
                 edge(19, 59, True), edge(20, 0, False), edge(23, 59, False)]
REDUCED_EDGES = [edge(9, 0, False), edge(9, 59, False), edge(10, 0, True), edge(15, 0, True),
                 edge(18, 59, True), edge(19, 0, False), edge(19, 59, False)]


@pytest.mark.parametrize(("hhmm", "allowed"), WEEKDAY_EDGES)
def test_weekday_window(hhmm: tuple[int, int], allowed: bool) -> None:
    assert within_calling_hours(rome(*WEEKDAY, *hhmm)) is allowed


@pytest.mark.parametrize(("hhmm", "allowed"), REDUCED_EDGES)
def test_saturday_window(hhmm: tuple[int, int], allowed: bool) -> None:
    assert within_calling_hours(rome(*SATURDAY, *hhmm)) is allowed


@pytest.mark.parametrize("day", PRE_HOLIDAYS)
@pytest.mark.parametrize(("hhmm", "allowed"), REDUCED_EDGES)
def test_pre_holiday_window(day: tuple[int, int, int], hhmm: tuple[int, int], allowed: bool) -> None:
    assert within_calling_hours(rome(*day, *hhmm)) is allowed


@pytest.mark.parametrize("day", CLOSED_DAYS)
@pytest.mark.parametrize("hhmm", [(0, 0), (9, 0), (10, 0), (12, 0), (18, 59), (19, 59), (23, 59)],
                         ids=lambda v: f"{v[0]:02d}:{v[1]:02d}")
def test_closed_all_day(day: tuple[int, int, int], hhmm: tuple[int, int]) -> None:
    assert not within_calling_hours(rome(*day, *hhmm))


@pytest.mark.parametrize(
    ("at", "allowed"),
    [
        pytest.param(rome(*WEEKDAY, 8, 59, 59, 999_999), False, id="weekday 08:59:59.999999"),
        pytest.param(rome(*WEEKDAY, 19, 59, 59, 999_999), True, id="weekday 19:59:59.999999"),
        pytest.param(rome(*SATURDAY, 9, 59, 59, 999_999), False, id="Saturday 09:59:59.999999"),
        pytest.param(rome(*SATURDAY, 18, 59, 59, 999_999), True, id="Saturday 18:59:59.999999"),
    ],
)
def test_windows_are_half_open_to_the_microsecond(at: datetime, allowed: bool) -> None:
    assert within_calling_hours(at) is allowed


@pytest.mark.parametrize(
    ("at", "allowed"),
    [
        # Friday before DST starts: Rome is UTC+1.
        pytest.param(utc(2026, 3, 27, 7, 59), False, id="Fri 27 Mar 07:59Z = 08:59 CET"),
        pytest.param(utc(2026, 3, 27, 8, 0), True, id="Fri 27 Mar 08:00Z = 09:00 CET"),
        pytest.param(utc(2026, 3, 27, 18, 59), True, id="Fri 27 Mar 18:59Z = 19:59 CET"),
        pytest.param(utc(2026, 3, 27, 19, 0), False, id="Fri 27 Mar 19:00Z = 20:00 CET"),
        # Saturday before DST starts, then Monday after it: UTC+2.
        pytest.param(utc(2026, 3, 28, 8, 59), False, id="Sat 28 Mar 08:59Z = 09:59 CET"),
        pytest.param(utc(2026, 3, 28, 9, 0), True, id="Sat 28 Mar 09:00Z = 10:00 CET"),
        pytest.param(utc(2026, 3, 28, 17, 59), True, id="Sat 28 Mar 17:59Z = 18:59 CET"),
        pytest.param(utc(2026, 3, 28, 18, 0), False, id="Sat 28 Mar 18:00Z = 19:00 CET"),
        pytest.param(utc(2026, 3, 29, 1, 0), False, id="Sun 29 Mar 01:00Z: the switch itself"),
        pytest.param(utc(2026, 3, 29, 10, 0), False, id="Sun 29 Mar midday"),
        pytest.param(utc(2026, 3, 30, 6, 59), False, id="Mon 30 Mar 06:59Z = 08:59 CEST"),
        pytest.param(utc(2026, 3, 30, 7, 0), True, id="Mon 30 Mar 07:00Z = 09:00 CEST"),
        pytest.param(utc(2026, 3, 30, 17, 59), True, id="Mon 30 Mar 17:59Z = 19:59 CEST"),
        pytest.param(utc(2026, 3, 30, 18, 0), False, id="Mon 30 Mar 18:00Z = 20:00 CEST"),
        # Around the end of DST.
        pytest.param(utc(2026, 10, 24, 7, 59), False, id="Sat 24 Oct 07:59Z = 09:59 CEST"),
        pytest.param(utc(2026, 10, 24, 8, 0), True, id="Sat 24 Oct 08:00Z = 10:00 CEST"),
        pytest.param(utc(2026, 10, 24, 16, 59), True, id="Sat 24 Oct 16:59Z = 18:59 CEST"),
        pytest.param(utc(2026, 10, 24, 17, 0), False, id="Sat 24 Oct 17:00Z = 19:00 CEST"),
        pytest.param(utc(2026, 10, 25, 1, 30), False, id="Sun 25 Oct 01:30Z: the repeated hour"),
        pytest.param(utc(2026, 10, 26, 7, 59), False, id="Mon 26 Oct 07:59Z = 08:59 CET"),
        pytest.param(utc(2026, 10, 26, 8, 0), True, id="Mon 26 Oct 08:00Z = 09:00 CET"),
        pytest.param(utc(2026, 10, 26, 18, 59), True, id="Mon 26 Oct 18:59Z = 19:59 CET"),
        pytest.param(utc(2026, 10, 26, 19, 0), False, id="Mon 26 Oct 19:00Z = 20:00 CET"),
        # Same UTC clock reading, different answer by season.
        pytest.param(utc(2026, 1, 13, 18, 30), True, id="winter 18:30Z = 19:30 CET"),
        pytest.param(utc(2026, 7, 14, 18, 30), False, id="summer 18:30Z = 20:30 CEST"),
        # Any offset is converted to Rome first.
        pytest.param(datetime(2026, 5, 12, 3, 0, tzinfo=NEW_YORK), True, id="03:00 New York = 09:00 Rome"),
        pytest.param(datetime(2026, 5, 12, 2, 59, tzinfo=NEW_YORK), False, id="02:59 New York = 08:59 Rome"),
        pytest.param(datetime(2026, 5, 16, 7, 0, tzinfo=KIRITIMATI), True, id="Sat 07:00+14 = Fri 19:00 Rome"),
        pytest.param(datetime(2026, 5, 17, 9, 0, tzinfo=KIRITIMATI), False, id="Sun 09:00+14 = Sat 21:00 Rome"),
    ],
)
def test_calling_hours_are_rome_wall_clock(at: datetime, allowed: bool) -> None:
    assert within_calling_hours(at) is allowed


@pytest.mark.parametrize(
    ("at", "day"),
    [
        pytest.param(utc(2026, 5, 12, 21, 59), date(2026, 5, 12), id="summer 21:59Z = 23:59 CEST"),
        pytest.param(utc(2026, 5, 12, 22, 0), date(2026, 5, 13), id="summer 22:00Z = next day 00:00"),
        pytest.param(utc(2026, 1, 12, 22, 59), date(2026, 1, 12), id="winter 22:59Z = 23:59 CET"),
        pytest.param(utc(2026, 1, 12, 23, 0), date(2026, 1, 13), id="winter 23:00Z = next day 00:00"),
        pytest.param(utc(2025, 12, 31, 23, 0), date(2026, 1, 1), id="New Year's Eve in UTC is New Year in Rome"),
        pytest.param(rome(2026, 10, 25, 2, 30), date(2026, 10, 25), id="Rome in the repeated hour"),
    ],
)
def test_rome_date(at: datetime, day: date) -> None:
    assert rome_date(at) == day


# --- properties -------------------------------------------------------------------------------------------

instants = st.datetimes(
    min_value=datetime(2024, 1, 1), max_value=datetime(2030, 12, 31), timezones=st.just(UTC)
)


@PROPERTY
@given(instants, st.sampled_from([ROME, NEW_YORK, timezone(timedelta(hours=5, minutes=30)), UTC]))
def test_hours_depend_only_on_the_instant(at: datetime, zone: ZoneInfo | timezone) -> None:
    assert within_calling_hours(at.astimezone(zone)) is within_calling_hours(at)


@PROPERTY
@given(instants)
def test_hours_agree_with_the_window_of_the_rome_day(at: datetime) -> None:
    window = allowed_window(rome_date(at))
    local = at.astimezone(ROME).time()
    expected = window is not None and window[0] <= local < window[1]
    assert within_calling_hours(at) is expected
