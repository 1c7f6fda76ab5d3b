"""What a schema upgrade tells the operator: what it did to the stored facts, and what to do about it.

Both backends run the same queries after they applied an upgrade and log the note at WARNING, so that the
command (or the service) that upgraded the database says it once, where a person reads it.
"""

from __future__ import annotations

from dataclasses import dataclass

from rpoguard.timeutil import ROME, from_us

# Schema 2 gave every RPO answer its principal (migrations/*/0002).
ANSWERS_PER_PRINCIPAL = 2
ANSWER_COUNTS_SQL = "SELECT count(*), count(principal_id) FROM rpo_results"
PRINCIPALS_SQL = "SELECT id FROM principals ORDER BY id"
UNATTRIBUTED_FILES_SQL = ("SELECT file_name, checked_us FROM imports WHERE kind = 'rpo' AND principal_id IS NULL"
                          " ORDER BY id LIMIT 20")
FILES_SHOWN = 20


@dataclass(frozen=True, slots=True)
class AnswerOwnership:
    """The RPO answers right after the upgrade to schema 2."""

    answers: int
    attributed: int
    principals: list[str]
    # The import files whose answers have no principal: (file name, check time in µs).
    unattributed_files: list[tuple[str, int | None]]


def answers_owner_note(ownership: AnswerOwnership) -> str | None:
    """The sentence the upgrade to schema 2 logs; None when there were no answers to attribute."""
    if not ownership.answers:
        return None
    head = ("database upgraded to schema 2: RPO answers now belong to the principal (data controller) that "
            "consulted the RPO")
    unattributed = ownership.answers - ownership.attributed
    if not unattributed:
        return (f"{head}; the {ownership.answers} answer(s) already stored were given to principal "
                f"{ownership.principals[0]}, the only one")
    why = (f"{len(ownership.principals)} principals exist ({', '.join(ownership.principals)})"
           if ownership.principals else "no principal exists")
    files = "; ".join(
        f"{name} checked {from_us(checked).astimezone(ROME):%Y-%m-%d %H:%M}" if checked is not None else name
        for name, checked in ownership.unattributed_files[:FILES_SHOWN])
    return (f"{head}. The {unattributed} answer(s) already stored cannot be attributed, because {why}: they "
            "are kept and shown by 'rpoguard evidence' as 'controller unknown', and no decision uses them, so "
            "calls to those numbers are blocked with rpo_not_checked until the answers are imported again for "
            "the principal that submitted them: rpoguard registry import FILE --checked-at DATE --principal "
            f"ID. Files to import again: {files}")
