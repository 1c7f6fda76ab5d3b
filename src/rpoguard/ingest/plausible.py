"""Dates that cannot be true, refused wherever a fact enters: options of the `add` commands and rows of
every import file alike, so that one rule holds for both.

A fact is something that already happened: a consent given, a refusal said, a contract started, an RPO
check made. One dated later than the moment it is recorded is a typing mistake or another machine's
clock, and it would not even count until its date (decisions read the facts of their own moment), leaving
an older state in force meanwhile: a refusal dated next year would not block today. So it is refused,
with a few minutes' leeway for a clock that runs ahead. Dates that only describe the future by nature (a
consent's `expires_at`, a contract's planned `end`) are not facts and are not checked here.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from rpoguard.timeutil import ROME, human

# How far ahead of this machine's clock a fact may be dated (another machine's clock).
CLOCK_LEEWAY = timedelta(minutes=10)

# The Registro Pubblico delle Opposizioni took its first registrations on 31 January 2011 (DPR 178/2010;
# the RPO's FAQ, docs/law.md §1): no check of it, and no registration in it, can be older.
RPO_OPENED = datetime(2011, 1, 31, tzinfo=ROME)


class ImplausibleDate(ValueError):
    """A date that cannot be true for what it dates; the message names the field and the date."""


def _shown(moment: datetime | date) -> str:
    return human(moment) if isinstance(moment, datetime) else moment.isoformat()


def _start_of(moment: datetime | date) -> datetime:
    """A date stands for its whole day: it is in the future only once its first moment is."""
    if isinstance(moment, datetime):
        return moment
    return datetime.combine(moment, time(0, 0), tzinfo=ROME)


def not_in_future(moment: datetime | date, what: str, now: datetime | None = None) -> None:
    """Refuse a fact dated after `now` (default: this machine's clock) plus the leeway."""
    reference = now or datetime.now(UTC)
    if _start_of(moment) > reference + CLOCK_LEEWAY:
        raise ImplausibleDate(f"{what} {_shown(moment)} is in the future (it is now "
                              f"{human(reference)}): a fact is recorded once it "
                              "has happened, dated when it happened")


def rpo_checked_at(moment: datetime, what: str = "--checked-at", now: datetime | None = None) -> None:
    """An RPO check: not later than its import, not before the RPO existed."""
    if moment < RPO_OPENED:
        raise ImplausibleDate(f"{what} {_shown(moment)} is before the RPO opened ({RPO_OPENED:%Y-%m-%d}): no "
                              "check can be that old")
    # The RPO answered before the file reached us. A check dated later would be ignored by decisions until
    # then (they read answers checked by their own moment), leaving an older "not registered" answer in
    # force; and a mistyped year would keep the answers "fresh" for as long.
    not_in_future(moment, what, now)


def rpo_registered_at(moment: datetime, checked_at: datetime) -> None:
    """A registration date an RPO answer gives: between the RPO's opening and the check that reported it."""
    if moment < RPO_OPENED:
        raise ImplausibleDate(f"registered_at {_shown(moment)} is before the RPO opened ({RPO_OPENED:%Y-%m-%d})")
    if moment > checked_at:
        raise ImplausibleDate("registered_at is after the check date")


def expired_on_arrival(checked_at: datetime, validity_days: int, now: datetime | None = None) -> str | None:
    """A sentence for the operator when answers checked at `checked_at` are already past their validity:
    they are stored (they are evidence of what the RPO said), but no decision may rest on them."""
    reference = now or datetime.now(UTC)
    # The same wall-clock arithmetic in Europe/Rome as the decision's rule 5 (policy/rules.py).
    expires = checked_at.astimezone(ROME) + timedelta(days=validity_days)
    if reference.astimezone(UTC) < expires.astimezone(UTC):
        return None
    return (f"these answers expired on {expires:%Y-%m-%d %H:%M} (checked {checked_at.astimezone(ROME):%Y-%m-%d}, "
            f"valid {validity_days} days): they are stored as evidence, but decisions from now on block their "
            "numbers as not checked (rpo_expired); submit them to the RPO again (registry due)")
