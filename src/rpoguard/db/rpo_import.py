"""How an RPO import turns the rows it staged into one answer per number, on either backend.

Both stores stage the rows of an import in a temp table `staged_rpo (number, registered, registered_us,
line, submitted)` (0/1 integers, so the same SQL runs on SQLite and PostgreSQL), group them with
`grouped_sql`, and then ask the two questions below of `grouped_rpo`. The legal rules live here once:

- one answer per number, and an unclear one never favours the call: two rows of one file giving opposite
  answers make the number registered (and the import says so, with the lines); of several registration
  dates the latest is kept, since a later registration revokes more consents;
- `--registered`: a submitted number is registered when the registered list names it;
- `--cleansed` (the RPO's "cleaned list"): a submitted number is registered unless the cleaned list names it;
- in a two-list import every number of the answer list must have been submitted: a stray one means the two
  files are not one submission, so the absence of the others from the list proves nothing either, and
  the import is refused whole.
"""

from __future__ import annotations

from rpoguard.db.store import RPO_ANSWERS, RPO_CLEANSED_LIST, RPO_REGISTERED_LIST, ImportRejected, RowProblem

# The staged rows grouped by number; `registered` by the form's rule (see the module docstring).
_COMBINE = {RPO_ANSWERS: "max", RPO_REGISTERED_LIST: "max", RPO_CLEANSED_LIST: "min"}
_LIST_NAMES = {RPO_REGISTERED_LIST: "registered list", RPO_CLEANSED_LIST: "cleaned list"}

OPPOSITE_COUNT_SQL = ("SELECT count(*) FROM grouped_rpo WHERE yes_line IS NOT NULL AND no_line IS NOT NULL")
OPPOSITE_FIRST_SQL = ("SELECT number, yes_line, no_line FROM grouped_rpo"
                      " WHERE yes_line IS NOT NULL AND no_line IS NOT NULL"
                      " ORDER BY CASE WHEN yes_line < no_line THEN yes_line ELSE no_line END LIMIT 10")
STRAYS_SQL = ("SELECT number, coalesce(yes_line, no_line) AS line FROM grouped_rpo WHERE submitted = 0"
              " ORDER BY line LIMIT 10000")
COUNTS_SQL = "SELECT count(*), coalesce(sum(registered), 0) FROM grouped_rpo"


def grouped_sql(form: str) -> str:
    """SELECT one row per number from staged_rpo, in number order (sorted keys insert several times
    faster into the keyed answer table)."""
    combine = _COMBINE[form]
    return (f"SELECT number, {combine}(registered) AS registered, max(registered_us) AS registered_us,"
            " max(submitted) AS submitted,"
            " min(CASE WHEN registered = 1 AND submitted = 0 THEN line END) AS yes_line,"
            " min(CASE WHEN registered = 0 AND submitted = 0 THEN line END) AS no_line"
            " FROM staged_rpo GROUP BY number ORDER BY number")


def opposite_answers_note(count: int, first: list[tuple[str, int, int]]) -> str | None:
    """The import's note on numbers a file answers both ways ("registered" was kept: fail closed)."""
    if not count:
        return None
    shown = "; ".join(f"{number} lines {yes} (registered) and {no} (not registered)" for number, yes, no in first)
    more = f"; and {count - len(first)} more" if count > len(first) else ""
    return (f"{count} number(s) answered both registered and not registered in this file: stored as registered "
            f"(an unclear answer never favours the call): {shown}{more}")


def refuse_strays(form: str, strays: list[tuple[str, int]]) -> None:
    """Raise ImportRejected (not skippable) when the answer list names numbers that were not submitted."""
    if form == RPO_ANSWERS or not strays:
        return
    name = _LIST_NAMES[form]
    problems = [RowProblem(line, f"{name}: {number} is not in the submitted list; are these the two files of one "
                                 "submission? (a list that does not match its submission proves nothing)")
                for number, line in strays]
    raise ImportRejected(problems, skippable=False)
