"""RPO answers: the operator's own check results, the only form in which the register may be held.

Every answer belongs to the principal (data controller) that consulted the RPO: answers differ between
controllers, because a citizen may lift the opposition for some operators only.

Three input forms (architecture.md §4):
- one CSV `number,status[,registered_at]` (header optional), every row checked at --checked-at;
- the submitted list and the registered list the RPO sent back: every submitted number absent from the
  registered list is `not_registered` at the check date;
- the submitted list and the RPO's cleaned list (the numbers that may be called): every submitted number
  absent from the cleaned list is `registered`.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from rpoguard.db.store import (
    FILE_SUBMITTED,
    RPO_CLEANSED_LIST,
    RPO_REGISTERED_LIST,
    ImportFile,
    ImportMeta,
    ImportRejected,
    ImportResult,
    Progress,
    RowProblem,
    RpoAnswer,
    Store,
)
from rpoguard.ingest.csvfile import FileInfo, fingerprint, meta_for, normalize_cell, read_rows, require_clean
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
        yield RpoAnswer(number, registered, registered_at, line)
    require_clean(meta.rejected, skip_invalid)


def numbered_from_list(path: str | Path, problems: list[RowProblem]) -> Iterator[tuple[int, str]]:
    """(line, E.164 number) from a one-number-a-line file (or the first column of a CSV)."""
    for line, fields in read_rows(path, problems):
        if line == 1 and fields[0].lower() in HEADER_WORDS:
            continue
        try:
            yield line, normalize_cell(fields[0])
        except ValueError as exc:
            problems.append(RowProblem(line, str(exc)))


def numbers_from_list(path: str | Path, problems: list[RowProblem]) -> Iterator[str]:
    """E.164 numbers from a one-number-a-line file (or the first column of a CSV)."""
    return (number for _, number in numbered_from_list(path, problems))


def answers_from_lists(submitted: str | Path, answer_list: str | Path, meta: ImportMeta) -> Iterator[RpoAnswer]:
    """The submitted list's rows, then the answer list's: with --registered the list names the registered
    numbers, with --cleansed the numbers that are not registered; the store combines them into one answer
    per submitted number (db/rpo_import.py). Streams both files: no set of 30 million numbers in memory.

    Any unreadable row in either list refuses the whole import, --skip-invalid or not: a number that could
    not be read might be exactly the one the list names, and its absence would then answer wrongly."""
    cleansed = meta.rpo_form == RPO_CLEANSED_LIST
    yield from (RpoAnswer(number, cleansed, None, line, submitted=True)
                for line, number in numbered_from_list(submitted, meta.rejected))
    problems: list[RowProblem] = []
    yield from (RpoAnswer(number, not cleansed, None, line)
                for line, number in numbered_from_list(answer_list, problems))
    # Line numbers are per file: name the answer list in its problems.
    meta.rejected.extend(RowProblem(p.line, f"{Path(answer_list).name}: {p.message}") for p in problems)
    if meta.rejected:
        raise ImportRejected(meta.rejected, skippable=False)


async def import_csv(store: Store, path: str | Path, checked_at: datetime, principal_id: str, skip_invalid: bool,
                     progress: Progress | None = None) -> ImportResult:
    meta = meta_for(KIND, fingerprint(path), checked_at=checked_at, principal_id=principal_id)
    summary = await store.import_rpo(answers_from_csv(path, meta, skip_invalid), meta, progress)
    return summary, meta.rejected


async def import_lists(store: Store, submitted: str | Path, answer_list: str | Path, form: str, checked_at: datetime,
                       principal_id: str, progress: Progress | None = None) -> ImportResult:
    """A two-list answer: `form` is RPO_REGISTERED_LIST or RPO_CLEANSED_LIST."""
    sub, answer = fingerprint(submitted), fingerprint(answer_list)
    # The pair is one answer: the import's fingerprint is the two files' together (and the form, since the
    # same pair read the other way would be another answer), which recognises the same pair again. Each
    # file is also recorded on its own, with its own name, size and SHA-256, for the evidence.
    joined = f"{sub.sha256}+{answer.sha256}" if form == RPO_REGISTERED_LIST else f"{sub.sha256}+{form}:{answer.sha256}"
    info = FileInfo(Path(f"{sub.path.name} + {answer.path.name}"), sub.size + answer.size, joined)
    files = (ImportFile(FILE_SUBMITTED, sub.path.name, sub.size, sub.sha256),
             ImportFile(form, answer.path.name, answer.size, answer.sha256))
    meta = meta_for(KIND, info, checked_at=checked_at, principal_id=principal_id, rpo_form=form, files=files)
    summary = await store.import_rpo(answers_from_lists(submitted, answer_list, meta), meta, progress)
    return summary, meta.rejected
