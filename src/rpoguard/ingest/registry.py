"""RPO answers: the operator's own check results, the only form in which the register may be held.

Two input forms (architecture.md §4):
- one CSV `number,status[,registered_at]` (header optional), every row checked at --checked-at;
- the submitted list and the registered list the RPO sent back: every submitted number absent from the
  registered list is `not_registered` at the check date.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from rpoguard.db.store import ImportMeta, ImportResult, Progress, RowProblem, RpoAnswer, Store
from rpoguard.ingest.csvfile import fingerprint, meta_for, normalize_cell, read_rows, require_clean
from rpoguard.timeutil import TimeFormatError, parse_time

KIND = "rpo"

STATUS_WORDS = {
    "registered": True, "1": True, "y": True, "iscritto": True,
    "not_registered": False, "0": False, "n": False, "non_iscritto": False,
}
HEADER_WORDS = {"number", "numero", "msisdn", "telefono", "phone"}


def parse_status(text: str) -> bool:
    try:
        return STATUS_WORDS[text.strip().lower().replace("-", "_").replace(" ", "_")]
    except KeyError:
        raise ValueError(f"status {text[:30]!r} is not one of registered/not_registered, 1/0, Y/N, "
                         "iscritto/non_iscritto") from None


def answers_from_csv(path: str | Path, meta: ImportMeta, skip_invalid: bool) -> Iterator[RpoAnswer]:
    checked_at = meta.checked_at
    assert checked_at is not None
    for line, fields in read_rows(path, meta.rejected):
        if line == 1 and fields[0].lower() in HEADER_WORDS:
            continue
        try:
            if len(fields) < 2:
                raise ValueError("expected number,status[,registered_at]")
            number = normalize_cell(fields[0])
            registered = parse_status(fields[1])
            registered_at = None
            if len(fields) > 2 and fields[2]:
                if not registered:
                    raise ValueError("registered_at given for a number that is not registered")
                registered_at = parse_time(fields[2])
                if registered_at > checked_at:
                    raise ValueError("registered_at is after the check date")
        except (ValueError, TimeFormatError) as exc:
            meta.rejected.append(RowProblem(line, str(exc)))
            continue
        yield RpoAnswer(number, registered, registered_at)
    require_clean(meta.rejected, skip_invalid)


def numbers_from_list(path: str | Path, problems: list[RowProblem]) -> Iterator[str]:
    """E.164 numbers from a one-number-a-line file (or the first column of a CSV)."""
    for line, fields in read_rows(path, problems):
        if line == 1 and fields[0].lower() in HEADER_WORDS:
            continue
        try:
            yield normalize_cell(fields[0])
        except ValueError as exc:
            problems.append(RowProblem(line, str(exc)))


def answers_from_lists(submitted: str | Path, registered: str | Path, meta: ImportMeta,
                       skip_invalid: bool) -> Iterator[RpoAnswer]:
    """Every submitted number as not registered, every registered one as registered: the store keeps one
    answer per number and "registered" wins, so a submitted number absent from the registered list ends
    up not registered. Streams both files: no set of 30 million numbers in memory."""
    yield from (RpoAnswer(number, False) for number in numbers_from_list(submitted, meta.rejected))
    problems: list[RowProblem] = []
    yield from (RpoAnswer(number, True) for number in numbers_from_list(registered, problems))
    # Line numbers are per file: name the registered list in its problems.
    meta.rejected.extend(RowProblem(p.line, f"{Path(registered).name}: {p.message}") for p in problems)
    require_clean(meta.rejected, skip_invalid)


async def import_csv(store: Store, path: str | Path, checked_at: datetime, skip_invalid: bool,
                     progress: Progress | None = None) -> ImportResult:
    meta = meta_for(KIND, fingerprint(path), checked_at=checked_at)
    summary = await store.import_rpo(answers_from_csv(path, meta, skip_invalid), meta, progress)
    return summary, meta.rejected


async def import_lists(store: Store, submitted: str | Path, registered: str | Path, checked_at: datetime,
                       skip_invalid: bool, progress: Progress | None = None) -> ImportResult:
    sub, reg = fingerprint(submitted), fingerprint(registered)
    # The pair is one answer: its fingerprint is the two files' together.
    info = type(sub)(sub.path, sub.size + reg.size, f"{sub.sha256}+{reg.sha256}")
    meta = meta_for(KIND, info, checked_at=checked_at)
    summary = await store.import_rpo(answers_from_lists(submitted, registered, meta, skip_invalid), meta, progress)
    return summary, meta.rejected
