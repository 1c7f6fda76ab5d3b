"""History is never rewritten: what both stores do when a stored fact is said again, differently.

A fact in time (a consent, its revocation, a contract and its end) keeps the record it was first written
with. What is said about it later is either refused (a consent restated with other details: it is ended
with a revocation, or a different consent has its own evidence reference) or kept as a note beside it
(table fact_notes), with when it was recorded and by which command or import. Decisions read the notes
only where the reading that never favours the call needs them: the earliest revocation moment, and the
earliest end date, any record or note names (docs/law.md, "History is never rewritten").

The SQL differs between SQLite and PostgreSQL; these rules do not, so they live here once.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import date, datetime
from typing import Any

from rpoguard.db.rows import opt_dt, opt_us
from rpoguard.db.store import (
    CONTRACT_CORRECTED,
    CONTRACT_ENDED,
    CONTRACT_NOTED,
    CONTRACT_UNCHANGED,
    FACT_CONTRACT,
    NOTE_END_CORRECTED,
    NOTE_END_SET,
    NOTE_REVOKED,
    NOTE_REVOKED_AGAIN,
    ConsentRecord,
    ImportMeta,
    ImportRejected,
    Revocation,
    RowProblem,
)
from rpoguard.timeutil import from_us, human_us, to_us


def consent_differences(purpose: str | None, automated: object, expires_us: int | None,
                        record: ConsentRecord) -> list[str]:
    """How `record` differs from the consent stored with the same number, principal, given_at and
    evidence (its purpose, automated flag and expiry as stored)."""
    differences = []
    if (purpose or None) != (record.purpose or None):
        differences.append(f"purpose {_text(purpose)} (asked {_text(record.purpose)})")
    if bool(automated) != record.automated:
        differences.append(f"automated {'yes' if automated else 'no'} (asked {'yes' if record.automated else 'no'})")
    if expires_us != opt_us(record.expires_at):
        differences.append(f"expires_at {_shown(expires_us)} (asked {_shown(opt_us(record.expires_at))})")
    return differences


def _shown(value_us: int | None) -> str:
    """A stored moment in a message for people: Rome time with its offset, or "none"."""
    return human_us(value_us) if value_us is not None else "none"


def _text(value: str | None) -> str:
    return repr(value) if value else "none"


def consent_conflict(consent_id: int, record: ConsentRecord, differences: Iterable[str]) -> str:
    return (f"consent #{consent_id} of {record.number} to {record.principal_id} given at "
            f"{_shown(opt_us(record.given_at))} with evidence {record.evidence!r} is already recorded with "
            f"{'; '.join(differences)}: a recorded consent is never changed. To end it, use 'rpoguard consent "
            "revoke --at TIME'; a different consent needs its own evidence reference")


def contract_change(stored_end: date | None, noted_ends: Iterable[date | None],
                    asked_end: date | None) -> tuple[str, str | None, date | None]:
    """What a contract restated with `asked_end` becomes: (outcome, the note to record or None, the end
    decisions read afterwards). A running contract's end is set once; another end for an ended contract
    is a correction, noted once: an earlier one counts (it never favours the call), a later one or none
    does not (it would save consents for longer)."""
    noted = list(noted_ends)
    effective = min([d for d in (stored_end, *noted) if d is not None], default=None)
    if stored_end is None:
        if asked_end is None:
            return CONTRACT_UNCHANGED, None, None
        return CONTRACT_ENDED, NOTE_END_SET, asked_end
    if asked_end == stored_end or asked_end in noted:
        return CONTRACT_UNCHANGED, None, effective
    if asked_end is not None and (effective is None or asked_end < effective):
        return CONTRACT_CORRECTED, NOTE_END_CORRECTED, asked_end
    return CONTRACT_NOTED, NOTE_END_CORRECTED, effective


# -- imports: the same SQL on both backends (:name parameters; PostgreSQL's store numbers them) --------------

_SAME_CONSENT = ("{a}.number = {b}.number AND {a}.principal_id = {b}.principal_id AND {a}.given_us = {b}.given_us"
                 " AND {a}.evidence = {b}.evidence")
_OTHER_DETAILS = ("(coalesce({a}.purpose, '') <> coalesce({b}.purpose, '') OR {a}.automated <> {b}.automated"
                  " OR coalesce({a}.expires_us, -1) <> coalesce({b}.expires_us, -1))")
_ASKED = "s.number, s.principal_id, s.given_us, s.evidence, s.purpose, s.automated, s.expires_us"

# Staged rows (table staged_consents) restating a stored consent with other details: line, the consent's
# id, what is stored, what the row asks.
CONSENT_CONFLICTS_SQL = (
    f"SELECT s.line, c.id, c.purpose, c.automated, c.expires_us, {_ASKED}"
    f" FROM staged_consents s JOIN consents c ON {_SAME_CONSENT.format(a='c', b='s')}"
    f" WHERE {_OTHER_DETAILS.format(a='c', b='s')} ORDER BY s.line")
# Staged rows restating an earlier row of their file (a consent not yet stored) with other details: line,
# the earlier row's line, what it says, what the row asks.
CONSENT_FILE_CONFLICTS_SQL = (
    f"SELECT s.line, f.line, f.purpose, f.automated, f.expires_us, {_ASKED}"
    f" FROM staged_consents s JOIN staged_consents f ON {_SAME_CONSENT.format(a='f', b='s')}"
    f" AND f.line = (SELECT min(g.line) FROM staged_consents g WHERE {_SAME_CONSENT.format(a='g', b='s')})"
    f" WHERE s.line > f.line AND {_OTHER_DETAILS.format(a='f', b='s')}"
    f" AND NOT EXISTS (SELECT 1 FROM consents c WHERE {_SAME_CONSENT.format(a='c', b='s')}) ORDER BY s.line")


def consent_conflicts(rows: Iterable[Sequence[Any]]) -> Iterator[tuple[int, int, ConsentRecord, list[str]]]:
    """(line, the stored consent's id or the earlier line, the row's consent, how it differs) from the
    rows of CONSENT_CONFLICTS_SQL or CONSENT_FILE_CONFLICTS_SQL."""
    for line, other, purpose, automated, expires_us, number, principal, given_us, evidence, asked_purpose, \
            asked_automated, asked_expires in rows:
        record = ConsentRecord(number, principal, from_us(given_us), evidence, bool(asked_automated),
                               opt_dt(asked_expires), asked_purpose, line)
        yield int(line), int(other), record, consent_differences(purpose, automated, expires_us, record)


_SAME_CONTRACT = "{a}.number = {b}.number AND {a}.principal_id = {b}.principal_id AND {a}.start_date = {b}.start_date"

# New contracts from the staged rows (staged_contracts): the file's first row of each, with its end.
CONTRACTS_NEW_SQL = (
    "INSERT INTO contracts (number, principal_id, start_date, end_date, created_us)"
    " SELECT s.number, s.principal_id, s.start_date, s.end_date, CAST(:now AS BIGINT) FROM staged_contracts s"
    f" WHERE s.line = (SELECT min(f.line) FROM staged_contracts f WHERE {_SAME_CONTRACT.format(a='f', b='s')})"
    f" AND NOT EXISTS (SELECT 1 FROM contracts k WHERE {_SAME_CONTRACT.format(a='k', b='s')}) ORDER BY s.line")
# Running contracts the file gives an end: the file's first end for each (into the temp table contract_ends).
CONTRACT_ENDS_SQL = (
    "INSERT INTO contract_ends (id, number, principal_id, end_date)"
    " SELECT k.id, k.number, k.principal_id, (SELECT e.end_date FROM staged_contracts e"
    f"  WHERE {_SAME_CONTRACT.format(a='e', b='k')} AND e.end_date IS NOT NULL ORDER BY e.line LIMIT 1)"
    " FROM (SELECT DISTINCT number, principal_id, start_date FROM staged_contracts WHERE end_date IS NOT NULL) s"
    f" JOIN contracts k ON {_SAME_CONTRACT.format(a='k', b='s')} WHERE k.end_date IS NULL")
# Ended contracts the file gives another end, or none (into the temp table contract_corrections), each
# (contract, end) once and never twice across imports; `earlier` when it is earlier than the recorded end.
# A contract the file itself creates or ends is not "asked to run again" by the file's rows without an end.
CONTRACT_CORRECTIONS_SQL = (
    "INSERT INTO contract_corrections (id, number, principal_id, end_date, earlier)"
    " SELECT k.id, k.number, k.principal_id, s.end_date, (s.end_date IS NOT NULL AND s.end_date < k.end_date)"
    " FROM (SELECT DISTINCT number, principal_id, start_date, end_date FROM staged_contracts) s"
    f" JOIN contracts k ON {_SAME_CONTRACT.format(a='k', b='s')} WHERE k.end_date IS NOT NULL"
    " AND ((s.end_date IS NOT NULL AND s.end_date <> k.end_date)"
    "      OR (s.end_date IS NULL AND k.id <= :last_id AND k.id NOT IN (SELECT id FROM contract_ends)))"
    f" AND NOT EXISTS (SELECT 1 FROM fact_notes n WHERE n.fact = '{FACT_CONTRACT}' AND n.fact_id = k.id"
    "  AND (n.end_date = s.end_date OR (n.end_date IS NULL AND s.end_date IS NULL)))")


def contract_detail(read: int, new: int, ended: int, corrected: int, noted: int) -> dict[str, int]:
    """A contract import's counts: new contracts are its rows stored; running contracts it ended; ended
    contracts it gave an earlier end (corrected) or a later one or none (noted); the rest repeat what is
    stored."""
    return {"ended": ended, "corrected": corrected, "noted": noted,
            "duplicates": max(read - new - ended - corrected - noted, 0)}


def contract_notes(corrected: int, noted: int) -> list[str]:
    notes = []
    if corrected:
        notes.append(f"{corrected} ended contract(s) given an earlier end than the one recorded: noted beside "
                     "the record, and decisions use the earliest end named")
    if noted:
        notes.append(f"{noted} ended contract(s) given a later end, or none: noted beside the record, not used "
                     "(an end is never moved later; a renewal is a new contract with its own start)")
    return notes


def consent_problems(stored: Iterable[Sequence[Any]], in_file: Iterable[Sequence[Any]]) -> list[RowProblem]:
    """A consent is recorded once and never changed: a row restating a stored consent (rows of
    CONSENT_CONFLICTS_SQL), or an earlier row of the file (CONSENT_FILE_CONFLICTS_SQL), with other details is
    a bad row (a consent is ended with a revocation). In line order."""
    problems = [RowProblem(line, consent_conflict(cid, record, differences))
                for line, cid, record, differences in consent_conflicts(stored)]
    problems += [RowProblem(line, f"restates line {first} with other details: {'; '.join(differences)}")
                 for line, first, _, differences in consent_conflicts(in_file)]
    problems.sort(key=lambda p: p.line)
    return problems


def keep_refused(meta: ImportMeta, problems: list[RowProblem]) -> bool:
    """Rows the store finds bad: the import is rejected whole (ImportRejected), or with --skip-invalid they
    are listed like the reader's and True says to drop them from the staged rows."""
    if not problems:
        return False
    meta.rejected.extend(problems)
    if not meta.skip_invalid:
        raise ImportRejected(meta.rejected)
    return True


def revocations(consents: Iterable[Sequence[Any]], at: datetime) -> tuple[list[int], list[tuple[int, str]],
                                                                          list[Revocation]]:
    """What `consent revoke` at `at` does to each consent (id, revoked_us, earliest noted revocation): the
    ids whose first revocation this is (set once, never changed afterwards), the note for every consent,
    and what the command reports."""
    at_us = to_us(at)
    first: list[int] = []
    notes: list[tuple[int, str]] = []
    done: list[Revocation] = []
    for consent_id, revoked_us, noted_us in consents:
        if revoked_us is None:
            first.append(int(consent_id))
            notes.append((int(consent_id), NOTE_REVOKED))
            done.append(Revocation(int(consent_id), True, at, at))
        else:
            # Noted beside the first; decisions read the earliest moment any revocation names.
            notes.append((int(consent_id), NOTE_REVOKED_AGAIN))
            effective = min(u for u in (revoked_us, noted_us, at_us) if u is not None)
            done.append(Revocation(int(consent_id), False, from_us(revoked_us), from_us(effective)))
    return first, notes, done
