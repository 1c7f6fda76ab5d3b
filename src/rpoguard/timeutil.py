"""Time parsing and storage helpers: ISO 8601 in, Europe/Rome when no offset, microseconds at rest."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from rpoguard.constants import TIMEZONE

ROME = ZoneInfo(TIMEZONE)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class TimeFormatError(ValueError):
    """A time or date that is not ISO 8601; the message quotes it."""


def parse_time(text: str) -> datetime:
    """ISO 8601 date or date-time; no offset means Europe/Rome; a bare date means 00:00 Europe/Rome."""
    value = text.strip()
    if not value:
        raise TimeFormatError("empty time")
    try:
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), time(0, 0), tzinfo=ROME)
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    except ValueError:
        raise TimeFormatError(f"{text[:40]!r} is not an ISO 8601 date or time (e.g. 2026-11-28 or "
                              "2026-11-28T14:30 or 2026-11-28T14:30+01:00)") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=ROME)


def parse_date(text: str) -> date:
    value = text.strip()
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise TimeFormatError(f"{text[:40]!r} is not an ISO 8601 date (e.g. 2026-11-28)") from None


def to_us(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


def iso(moment: datetime) -> str:
    """The form times take in output and in the audit hash: UTC with microseconds."""
    # isoformat is C code and gives the same text as strftime("%Y-%m-%dT%H:%M:%S.%fZ") at a fraction of
    # its cost (docs/performance.md); it is on every decision's evidence and audit hash.
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def human(moment: datetime) -> str:
    """How a time is shown to a person: Europe/Rome with its offset, to the second (2026-11-24T11:00:00+01:00).
    Machine output (JSON, CSV exports, the audit hash) keeps iso()."""
    return moment.astimezone(ROME).isoformat(timespec="seconds")


def human_us(value: int) -> str:
    return human(from_us(value))
