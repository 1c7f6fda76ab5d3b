"""Every table of an rpoguard database, as `db copy` moves it between the backends.

Same names and columns in both schemas (migrations/data, audit, postgres). A row crosses as Python values
independent of the engine (bool, date, str for JSON); each store turns them into its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

# Columns whose SQLite and PostgreSQL types differ: SQLite keeps booleans as 0/1 and dates as ISO text.
BOOL = "bool"
DATE = "date"


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    columns: tuple[str, ...]
    kinds: dict[str, str]
    order: str
    # The identity column PostgreSQL must continue after the copied ids.
    identity: str | None = None


# In foreign-key order. Same names and columns in both schemas (migrations/data, audit, postgres).
TABLES = (
    Table("principals", ("id", "name", "created_us"), {}, "id"),
    Table("principal_caller_ids", ("principal_id", "number"), {}, "principal_id, number"),
    Table("campaigns", ("id", "principal_id", "automated", "max_attempts", "per_days", "created_us"),
          {"automated": BOOL}, "id"),
    Table("imports", ("id", "kind", "file_name", "file_size", "sha256", "checked_us", "principal_id",
                      "imported_us", "rows_read", "rows_stored", "rows_rejected", "detail"), {}, "id", "id"),
    Table("import_files", ("id", "import_id", "position", "role", "file_name", "file_size", "sha256"), {}, "id",
          "id"),
    Table("rpo_results", ("id", "number", "principal_id", "checked_us", "registered", "registered_us", "import_id"),
          {"registered": BOOL}, "id", "id"),
    Table("listings", ("id", "number", "import_id", "listed_us", "ended_us", "ended_by"), {}, "id", "id"),
    Table("consents", ("id", "number", "principal_id", "given_us", "evidence", "purpose", "automated",
                       "expires_us", "revoked_us", "import_id", "created_us"), {"automated": BOOL}, "id", "id"),
    Table("contracts", ("id", "number", "principal_id", "start_date", "end_date", "created_us"),
          {"start_date": DATE, "end_date": DATE}, "id", "id"),
    Table("fact_notes", ("id", "fact", "fact_id", "number", "principal_id", "kind", "at_us", "end_date", "source",
                         "import_id", "recorded_us"), {"end_date": DATE}, "id", "id"),
    Table("optouts", ("id", "number", "principal_id", "at_us", "source", "reference", "created_us"), {}, "id", "id"),
    Table("audit_log", ("seq", "decision_id", "ts_us", "number", "raw_number", "campaign_id", "principal_id",
                        "caller_id", "decision", "reasons", "basis", "evidence", "source", "uniqueid", "channel",
                        "prev_hash", "hash", "recorded_us", "linkedid"), {}, "seq"),
    Table("bypass_findings", ("id", "kind", "found_us", "at_us", "until_us", "why", "channel", "number", "dialled",
                              "uniqueid", "linkedid", "decision_id", "detail", "source", "hung_up"),
          {"hung_up": BOOL}, "id", "id"),
    Table("console_users", ("name", "role", "password_hash", "disabled", "created_us", "changed_us"),
          {"disabled": BOOL}, "name"),
    Table("console_changes", ("id", "at_us", "user_name", "action", "target", "detail"), {}, "id", "id"),
)


def to_common(table: Table, row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A row as Python values independent of the engine: bool, date, str for JSON."""
    if not table.kinds:
        return tuple(row)
    out = list(row)
    for i, column in enumerate(table.columns):
        kind, value = table.kinds.get(column), out[i]
        if value is None or kind is None:
            continue
        if kind == BOOL:
            out[i] = bool(value)
        elif kind == DATE and isinstance(value, str):
            out[i] = date.fromisoformat(value)
    return tuple(out)


def to_sqlite(table: Table, row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A row of engine-independent values as SQLite stores it: booleans 0/1, dates ISO text."""
    out = list(row)
    for i, column in enumerate(table.columns):
        kind, value = table.kinds.get(column), out[i]
        if value is None or kind is None:
            continue
        out[i] = int(value) if kind == BOOL else value.isoformat()
    return tuple(out)


def select_sql(table: Table) -> str:
    """Every row of the table, in a stable order (its key)."""
    return f"SELECT {', '.join(table.columns)} FROM {table.name} ORDER BY {table.order}"


# Rows of every table by name, engine-independent (to_common).
TableRows = dict[str, list[tuple[Any, ...]]]
