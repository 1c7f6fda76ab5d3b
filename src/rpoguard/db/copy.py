"""`rpoguard db copy`: everything from one database into another, SQLite or PostgreSQL either way.

An operator who outgrows one PBX moves to PostgreSQL without importing anything again: principals,
campaigns, caller IDs, import records with each input file, RPO answers (with the principal that obtained
them), listing periods, consents, contracts, the notes beside them, refusals and the decision log (with the
moment each row was written), row for row with their ids, so evidence keeps
naming the same import files and the hash chain (which covers sequence numbers and every field) still
verifies on the target. The target must be
empty; the copy is one transaction on it, so a failed copy leaves it empty.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any

from rpoguard.audit import AuditEntry, AuditRow, VerifyReport, verify_chain
from rpoguard.db import is_postgres_url, open_store
from rpoguard.db.rows import BATCH
from rpoguard.db.sqlite import SqliteStore
from rpoguard.db.store import Store, StoreError

log = logging.getLogger(__name__)


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
                        "prev_hash", "hash", "recorded_us"), {}, "seq"),
)


@dataclass(frozen=True, slots=True)
class CopyReport:
    counts: dict[str, int]
    source_chain: VerifyReport
    target_chain: VerifyReport


def _to_common(table: Table, row: tuple[Any, ...]) -> tuple[Any, ...]:
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


def _to_sqlite(table: Table, row: tuple[Any, ...]) -> tuple[Any, ...]:
    out = list(row)
    for i, column in enumerate(table.columns):
        kind, value = table.kinds.get(column), out[i]
        if value is None or kind is None:
            continue
        out[i] = int(value) if kind == BOOL else value.isoformat()
    return tuple(out)


def _sqlite_connection(store: SqliteStore) -> sqlite3.Connection:
    con = sqlite3.connect(store.path, isolation_level=None)
    con.execute("ATTACH DATABASE ? AS audit", (store.audit_path,))
    return con


def _sqlite_batches(con: sqlite3.Connection, table: Table) -> Iterator[list[tuple[Any, ...]]]:
    cursor = con.execute(f"SELECT {', '.join(table.columns)} FROM {table.name} ORDER BY {table.order}")
    while batch := cursor.fetchmany(BATCH):
        yield [_to_common(table, row) for row in batch]


async def _read_all(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the source. Read whole: rpoguard's databases are tens of millions of short rows at
    most, which fit in memory; a streaming copy between two engines would hold two transactions open."""
    data: dict[str, list[tuple[Any, ...]]] = {}
    if isinstance(store, SqliteStore):
        con = _sqlite_connection(store)
        try:
            con.execute("BEGIN")  # one snapshot of both files
            for table in TABLES:
                data[table.name] = [row for batch in _sqlite_batches(con, table) for row in batch]
            con.execute("COMMIT")
        finally:
            con.close()
        return data
    pool = store.pool  # type: ignore[attr-defined]
    async with pool.acquire() as pg, pg.transaction(isolation="repeatable_read", readonly=True):
        for table in TABLES:
            rows = await pg.fetch(f"SELECT {', '.join(table.columns)} FROM {table.name} ORDER BY {table.order}")
            data[table.name] = [_to_common(table, tuple(r)) for r in rows]
    return data


async def _target_is_empty(store: Store) -> str | None:
    """The first table of the target that has rows, or None."""
    if isinstance(store, SqliteStore):
        con = _sqlite_connection(store)
        try:
            for table in TABLES:
                if con.execute(f"SELECT 1 FROM {table.name} LIMIT 1").fetchone():
                    return table.name
        finally:
            con.close()
        return None
    pool = store.pool  # type: ignore[attr-defined]
    for table in TABLES:
        if await pool.fetchval(f"SELECT 1 FROM {table.name} LIMIT 1"):
            return table.name
    return None


async def _write_all(store: Store, data: dict[str, list[tuple[Any, ...]]]) -> None:
    if isinstance(store, SqliteStore):
        con = _sqlite_connection(store)
        try:
            con.execute("BEGIN IMMEDIATE")
            try:
                for table in TABLES:
                    marks = ", ".join("?" for _ in table.columns)
                    con.executemany(f"INSERT INTO {table.name} ({', '.join(table.columns)}) VALUES ({marks})",
                                    [_to_sqlite(table, row) for row in data[table.name]])
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        finally:
            con.close()
        return
    pool = store.pool  # type: ignore[attr-defined]
    async with pool.acquire() as pg, pg.transaction():
        for table in TABLES:
            await pg.copy_records_to_table(table.name, records=data[table.name], columns=list(table.columns))
            if table.identity:
                # New rows continue after the copied ids.
                await pg.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table.name}', '{table.identity}'),"
                    f" coalesce((SELECT max({table.identity}) FROM {table.name}), 0) + 1, false)")
        log_rows = data["audit_log"]
        if log_rows:
            last = log_rows[-1]
            await pg.execute("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1", last[0], last[16])


async def _rows(rows: list[tuple[Any, ...]]) -> AsyncIterator[AuditRow]:
    for r in rows:
        yield AuditRow(r[0], AuditEntry(*r[1:15]), r[15], r[16], r[17])


async def copy_database(source_url: str, target_url: str) -> CopyReport:
    """Copy everything from `source_url` into the empty database at `target_url`; raises StoreError when
    the target has data, or when the target's chain does not verify like the source's after the copy."""
    if source_url == target_url:
        raise StoreError("db copy: --from and --to name the same database")
    if not is_postgres_url(source_url) and not is_postgres_url(target_url):
        log.info("copying between two SQLite databases")
    # The source is only read: a mistyped --from must fail, never be copied as a new empty database.
    async with open_store(source_url, create=False) as source, open_store(target_url) as target:
        occupied = await _target_is_empty(target)
        if occupied is not None:
            raise StoreError(f"db copy: the target already has data (table {occupied}); copy into an empty "
                             "database")
        data = await _read_all(source)
        # The chain as read (the source may be serving while it is copied: what was read is what is copied).
        source_chain = await verify_chain(_rows(data["audit_log"]))
        await _write_all(target, data)
        target_chain = await verify_chain(target.audit_rows())
    if (target_chain.rows, target_chain.head_hash) != (source_chain.rows, source_chain.head_hash) or (
            target_chain.intact != source_chain.intact):
        raise StoreError(f"db copy: the copied decision log does not match the source ({target_chain.rows} rows, "
                         f"head {target_chain.head_hash}; source {source_chain.rows} rows, head "
                         f"{source_chain.head_hash})")
    return CopyReport({name: len(rows) for name, rows in data.items()}, source_chain, target_chain)
