"""A database as rpoguard 1 (schema 1) left it, built with the project's own first migration: what the
upgrade tests open with the current store or the current command."""

from __future__ import annotations

import sqlite3
from importlib import resources
from pathlib import Path
from typing import Any

from rpoguard.db.sqlite import _migrations, audit_path
from rpoguard.timeutil import parse_time, to_us

NUM = "+390645678901"
OTHER = "+393331234567"
CHECKED = parse_time("2026-11-20")

# The rows rpoguard 1 stored: one RPO import with two answers, a directory import listing one number. Ids
# come from the tables themselves, in this order (imports 1 and 2), as they did.
V1_ROWS: list[tuple[str, tuple[Any, ...]]] = [
    ("INSERT INTO imports (kind, file_name, file_size, sha256, checked_us, imported_us, rows_read, rows_stored)"
     " VALUES ('rpo', 'answers-nov.csv', 64, 'aa', ?, ?, 2, 2)", (to_us(CHECKED), to_us(CHECKED))),
    ("INSERT INTO imports (kind, file_name, imported_us) VALUES ('directory', 'dir.txt', ?)", (to_us(CHECKED),)),
    ("INSERT INTO rpo_results (number, checked_us, registered, registered_us, import_id) VALUES (?, ?, ?, NULL, 1)",
     (NUM, to_us(CHECKED), False)),
    ("INSERT INTO rpo_results (number, checked_us, registered, registered_us, import_id) VALUES (?, ?, ?, NULL, 1)",
     (OTHER, to_us(CHECKED), True)),
    ("INSERT INTO directory (number, import_id, listed_us) VALUES (?, 2, ?)", (NUM, to_us(CHECKED))),
]


Rows = list[tuple[str, tuple[Any, ...]]]


def v1_sqlite(path: Path, principals: list[str], rows: Rows) -> str:
    """A SQLite database at schema 1 holding V1_ROWS and the given principals (with a campaign each)."""
    for kind, target in (("data", path), ("audit", audit_path(path))):
        version, sql = _migrations(kind)[0]
        assert version == 1
        con = sqlite3.connect(target, isolation_level=None)
        try:
            con.execute("PRAGMA journal_mode = WAL")
            con.executescript(sql)
            con.execute("PRAGMA user_version = 1")
            if kind == "data":
                con.execute("BEGIN")
                for principal in principals:
                    con.execute("INSERT INTO principals (id, name, created_us) VALUES (?, ?, 0)",
                                (principal, principal))
                    con.execute("INSERT INTO campaigns (id, principal_id, created_us) VALUES (?, ?, 0)",
                                (f"{principal}-c", principal))
                for statement, params in rows:
                    con.execute(statement, tuple(int(p) if isinstance(p, bool) else p for p in params))
                con.execute("COMMIT")
        finally:
            con.close()
    return str(path)


async def v1_postgres(url: str, principals: list[str], rows: Rows) -> None:
    import asyncpg

    sql = (resources.files("rpoguard.db") / "migrations" / "postgres" / "0001_initial.sql").read_text("utf-8")
    con = await asyncpg.connect(url, timeout=10)
    try:
        async with con.transaction():
            await con.execute(sql)
            await con.execute("CREATE TABLE rpoguard_schema (version INTEGER PRIMARY KEY,"
                              " applied_us BIGINT NOT NULL)")
            await con.execute("INSERT INTO rpoguard_schema VALUES (1, 0)")
            for principal in principals:
                await con.execute("INSERT INTO principals (id, name, created_us) VALUES ($1, $1, 0)", principal)
                await con.execute("INSERT INTO campaigns (id, principal_id, created_us) VALUES ($1, $2, 0)",
                                  f"{principal}-c", principal)
            for statement, params in rows:
                counter = iter(range(1, len(params) + 1))
                pg = "".join(f"${next(counter)}" if ch == "?" else ch for ch in statement)
                await con.execute(pg, *params)
    finally:
        await con.close()


