"""RPO answers: the operator's own check results, the only form in which the register may be held.

Every answer belongs to the principal (data controller) that consulted the RPO: answers differ between
controllers, because a citizen may lift the opposition for some operators only.

Three input forms (docs/architecture.md §4):
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
    ImportSummary,
    Progress,
    RowProblem,
    RpoAnswer,
    Store,
)
from rpoguard.ingest import plausible
from rpoguard.ingest.csvfile import (
    DEFAULT_ENCODING,
    FileInfo,
    fingerprint,
    meta_for,
    normalize_cell,
    read_rows,
    require_clean,
)
from rpoguard.ingest.numberlist import NUMBER_HEADERS, NumberColumn, find_number_column, header_key, numbered_rows
from rpoguard.timeutil import TimeFormatError, parse_time

KIND = "rpo"

STATUS_WORDS = {
    "registered": True, "1": True, "y": True, "iscritto": True,
    "not_registered": False, "0": False, "n": False, "non_iscritto": False,
}


def parse_status(text: str) -> bool:
    try:
        return STATUS_WORDS[text.strip().lower().replace("-", "_").replace(" ", "_")]
    except KeyError:
        raise ValueError(f"status {text[:30]!r} is not one of registered/not_registered, 1/0, Y/N, "
                         "iscritto/non_iscritto") from None


def answers_from_csv(path: str | Path, meta: ImportMeta, skip_invalid: bool,
                     encoding: str = DEFAULT_ENCODING) -> Iterator[RpoAnswer]:
    checked_at = meta.checked_at
    assert checked_at is not None
    for line, fields in read_rows(path, meta.rejected, encoding):
        # The same header names as a list's number column ('N° telefono;stato' too).
        if line == 1 and header_key(fields[0]) in NUMBER_HEADERS:
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
                plausible.rpo_registered_at(registered_at, checked_at)
        except (ValueError, TimeFormatError) as exc:
            meta.rejected.append(RowProblem(line, str(exc)))
            continue
        yield RpoAnswer(number, registered, registered_at, line)
    require_clean(meta.rejected, skip_invalid)


def numbered_from_list(path: str | Path, problems: list[RowProblem], encoding: str = DEFAULT_ENCODING,
                       column: str | None = None, where: NumberColumn | None = None) -> Iterator[tuple[int, str]]:
    """(line, E.164 number) from a one-number-a-line file or a CSV's number column (numberlist.py). The
    column is found when this is called, so a file whose column cannot be told is refused before any row
    is read; `where` gives a column already found."""
    found = where or find_number_column(path, encoding, column)

    def rows() -> Iterator[tuple[int, str]]:
        for line, cell in numbered_rows(path, problems, found, encoding):
            try:
                yield line, normalize_cell(cell)
            except ValueError as exc:
                problems.append(RowProblem(line, str(exc)))

    return rows()


def numbers_from_list(path: str | Path, problems: list[RowProblem], encoding: str = DEFAULT_ENCODING,
                      column: str | None = None) -> Iterator[str]:
    """E.164 numbers from a one-number-a-line file or a CSV's number column."""
    return (number for _, number in numbered_from_list(path, problems, encoding, column))


def answers_from_lists(submitted: str | Path, answer_list: str | Path, meta: ImportMeta,
                       encoding: str = DEFAULT_ENCODING,
                       columns: tuple[NumberColumn, NumberColumn] | None = None) -> Iterator[RpoAnswer]:
    """The submitted list's rows, then the answer list's: with --registered the list names the registered
    numbers, with --cleansed the numbers that are not registered; the store combines them into one answer
    per submitted number (db/rpo_import.py). Streams both files: no set of 30 million numbers in memory.

    Any unreadable row in either list refuses the whole import, --skip-invalid or not: a number that could
    not be read might be exactly the one the list names, and its absence would then answer wrongly."""
    cleansed = meta.rpo_form == RPO_CLEANSED_LIST
    sub_column, answer_column = columns or (None, None)
    submitted_rows = numbered_from_list(submitted, meta.rejected, encoding, where=sub_column)
    problems: list[RowProblem] = []
    answer_rows = numbered_from_list(answer_list, problems, encoding, where=answer_column)
    yield from (RpoAnswer(number, cleansed, None, line, submitted=True) for line, number in submitted_rows)
    yield from (RpoAnswer(number, not cleansed, None, line) for line, number in answer_rows)
    # Line numbers are per file: name the answer list in its problems.
    meta.rejected.extend(RowProblem(p.line, f"{Path(answer_list).name}: {p.message}") for p in problems)
    if meta.rejected:
        raise ImportRejected(meta.rejected, skippable=False)


class PrincipalError(ValueError):
    """No principal, or no way to tell which one an RPO answer belongs to."""


async def rpo_principal(store: Store, given: str | None) -> str:
    """The principal whose RPO answers an import stores or `registry due` reads: the one given, or the only
    one there is. Answers differ between data controllers, so with several principals no default is safe."""
    principals = await store.principal_ids()
    if given is not None:
        if given not in principals:
            raise PrincipalError(f"principal {given!r} does not exist; add it with 'rpoguard principal add'")
        return given
    if len(principals) == 1:
        return principals[0]
    if not principals:
        raise PrincipalError("no principal exists yet: RPO answers belong to the principal (data controller) that "
                             "consulted the RPO; add it first with 'rpoguard principal add ID --name NAME'")
    raise PrincipalError(f"--principal is required: {len(principals)} principals exist ({', '.join(principals)}) "
                         "and each consults the RPO for itself (a citizen may lift the opposition for some of them "
                         "only)")


def _expiry_note(summary: ImportSummary, checked_at: datetime, validity_days: int | None) -> ImportSummary:
    if validity_days is not None:
        note = plausible.expired_on_arrival(checked_at, validity_days)
        if note is not None:
            summary.notes.append(note)
    return summary


async def import_csv(store: Store, path: str | Path, checked_at: datetime, principal_id: str, skip_invalid: bool,
                     progress: Progress | None = None, *, encoding: str = DEFAULT_ENCODING,
                     validity_days: int | None = None) -> ImportResult:
    """`validity_days` (the configured [policy] rpo_validity_days): say when the answers are already expired."""
    plausible.rpo_checked_at(checked_at)
    meta = meta_for(KIND, fingerprint(path), checked_at=checked_at, principal_id=principal_id)
    summary = await store.import_rpo(answers_from_csv(path, meta, skip_invalid, encoding), meta, progress)
    return _expiry_note(summary, checked_at, validity_days), meta.rejected


async def import_lists(store: Store, submitted: str | Path, answer_list: str | Path, form: str, checked_at: datetime,
                       principal_id: str, progress: Progress | None = None, *, encoding: str = DEFAULT_ENCODING,
                       validity_days: int | None = None) -> ImportResult:
    """A two-list answer: `form` is RPO_REGISTERED_LIST or RPO_CLEANSED_LIST."""
    plausible.rpo_checked_at(checked_at)
    sub, answer = fingerprint(submitted), fingerprint(answer_list)
    # The pair is one answer: the import's fingerprint is the two files' together (and the form, since the
    # same pair read the other way would be another answer), which recognises the same pair again. Each
    # file is also recorded on its own, with its own name, size and SHA-256, for the evidence.
    joined = f"{sub.sha256}+{answer.sha256}" if form == RPO_REGISTERED_LIST else f"{sub.sha256}+{form}:{answer.sha256}"
    info = FileInfo(Path(f"{sub.path.name} + {answer.path.name}"), sub.size + answer.size, joined)
    files = (ImportFile(FILE_SUBMITTED, sub.path.name, sub.size, sub.sha256),
             ImportFile(form, answer.path.name, answer.size, answer.sha256))
    meta = meta_for(KIND, info, checked_at=checked_at, principal_id=principal_id, rpo_form=form, files=files)
    # Both columns are found before the store is asked: a list whose column cannot be told refuses the pair
    # before anything is written.
    columns = (find_number_column(submitted, encoding), find_number_column(answer_list, encoding))
    answers = answers_from_lists(submitted, answer_list, meta, encoding, columns)
    summary = await store.import_rpo(answers, meta, progress)
    for path, where in zip((submitted, answer_list), columns, strict=True):
        note = where.note()
        if note is not None and not summary.already_imported:
            summary.notes.append(f"{Path(path).name}: {note}")
    return _expiry_note(summary, checked_at, validity_days), meta.rejected
