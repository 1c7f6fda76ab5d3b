"""A database as rpoguard 1 (schema 1), or the release before issue 14 (schema 2), left it, built with the
project's own migrations: what the upgrade tests open with the current store or the current command."""

from __future__ import annotations

import sqlite3
from datetime import date
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




# -- schema 2 (rpoguard before issue 14): answers per principal, listing periods; no import files, no notes,
# no recording moment on decisions ------------------------------------------------------------------------------

SUBMITTED_SHA = "1" * 64
REGISTERED_SHA = "2" * 64
CLEANSED_SHA = "3" * 64
V2_CHECKED = parse_time("2026-11-20")

# What rpoguard left in a schema-2 database: a one-file RPO import, two two-list imports (their SHA-256
# joined with '+', the cleaned-list form marked, their names joined with ' + ', their sizes summed), a
# directory import without a fingerprint, an answer, a listing, a revoked consent and an ended contract.
V2_ROWS: Rows = [
    ("INSERT INTO imports (kind, file_name, file_size, sha256, checked_us, principal_id, imported_us)"
     " VALUES ('rpo', 'answers.csv', 64, ?, ?, 'acme', ?)", ("a" * 64, to_us(V2_CHECKED), to_us(V2_CHECKED))),
    ("INSERT INTO imports (kind, file_name, file_size, sha256, checked_us, principal_id, imported_us)"
     " VALUES ('rpo', 'due.txt + reg.txt', 100, ?, ?, 'acme', ?)",
     (f"{SUBMITTED_SHA}+{REGISTERED_SHA}", to_us(V2_CHECKED), to_us(V2_CHECKED))),
    ("INSERT INTO imports (kind, file_name, file_size, sha256, checked_us, principal_id, imported_us)"
     " VALUES ('rpo', 'due.txt + clean.txt', 90, ?, ?, 'acme', ?)",
     (f"{SUBMITTED_SHA}+cleansed:{CLEANSED_SHA}", to_us(V2_CHECKED), to_us(V2_CHECKED))),
    ("INSERT INTO imports (kind, file_name, imported_us) VALUES ('directory', 'dir.txt', ?)", (to_us(V2_CHECKED),)),
    ("INSERT INTO rpo_results (number, principal_id, checked_us, registered, registered_us, import_id)"
     " VALUES (?, 'acme', ?, ?, NULL, 2)", (NUM, to_us(V2_CHECKED), False)),
    ("INSERT INTO listings (number, import_id, listed_us) VALUES (?, 4, ?)", (NUM, to_us(V2_CHECKED))),
    ("INSERT INTO consents (number, principal_id, given_us, evidence, automated, revoked_us, created_us)"
     " VALUES (?, 'acme', ?, 'form-1', ?, ?, 0)", (OTHER, to_us(parse_time("2026-10-01")), False,
                                                 to_us(parse_time("2026-11-10")))),
    ("INSERT INTO contracts (number, principal_id, start_date, end_date, created_us) VALUES (?, 'acme', ?, ?, 0)",
     (OTHER, date(2026, 1, 1), date(2026, 6, 30))),
]


def v2_sqlite(path: Path, principals: list[str], rows: Rows, audit_rows: list[tuple[Any, ...]]) -> str:
    """A SQLite database at data schema 2 and audit schema 1 holding `rows` and the decision log
    `audit_rows` (seq, the 14 fields of a decision, prev_hash, hash), as rpoguard then wrote them."""
    for kind, target, version in (("data", path, 2), ("audit", audit_path(path), 1)):
        con = sqlite3.connect(target, isolation_level=None)
        try:
            con.execute("PRAGMA journal_mode = WAL")
            for number, sql in _migrations(kind):
                if number <= version:
                    con.executescript(sql)
            con.execute(f"PRAGMA user_version = {version}")
            con.execute("BEGIN")
            if kind == "data":
                for principal in principals:
                    con.execute("INSERT INTO principals (id, name, created_us) VALUES (?, ?, 0)",
                                (principal, principal))
                    con.execute("INSERT INTO campaigns (id, principal_id, created_us) VALUES (?, ?, 0)",
                                (f"{principal}-c", principal))
                for statement, params in rows:
                    con.execute(statement, tuple(_sqlite_value(p) for p in params))
            else:
                con.executemany(f"INSERT INTO audit_log ({V2_AUDIT_COLUMNS}) VALUES ({','.join('?' * 17)})",
                                audit_rows)
            con.execute("COMMIT")
        finally:
            con.close()
    return str(path)


def _sqlite_value(value: Any) -> Any:
    """SQLite keeps flags as 0/1 and dates as ISO text (the sqlite3 module's date adapter is deprecated)."""
    if isinstance(value, bool):
        return int(value)
    return value.isoformat() if isinstance(value, date) else value


V2_AUDIT_COLUMNS = ("seq, decision_id, ts_us, number, raw_number, campaign_id, principal_id, caller_id, decision,"
                    " reasons, basis, evidence, source, uniqueid, channel, prev_hash, hash")


async def v2_postgres(url: str, principals: list[str], rows: Rows, audit_rows: list[tuple[Any, ...]]) -> None:
    import asyncpg

    folder = resources.files("rpoguard.db") / "migrations" / "postgres"
    scripts = [(folder / name).read_text("utf-8") for name in ("0001_initial.sql", "0002_answers_per_principal.sql")]
    con = await asyncpg.connect(url, timeout=10)
    try:
        async with con.transaction():
            for script in scripts:
                await con.execute(script)
            await con.execute("CREATE TABLE rpoguard_schema (version INTEGER PRIMARY KEY,"
                              " applied_us BIGINT NOT NULL)")
            await con.execute("INSERT INTO rpoguard_schema VALUES (1, 0), (2, 0)")
            for principal in principals:
                await con.execute("INSERT INTO principals (id, name, created_us) VALUES ($1, $1, 0)", principal)
                await con.execute("INSERT INTO campaigns (id, principal_id, created_us) VALUES ($1, $2, 0)",
                                  f"{principal}-c", principal)
            for statement, params in rows:
                counter = iter(range(1, len(params) + 1))
                pg = "".join(f"${next(counter)}" if ch == "?" else ch for ch in statement)
                await con.execute(pg, *params)
            await con.executemany(f"INSERT INTO audit_log ({V2_AUDIT_COLUMNS}) VALUES "
                                  f"({', '.join(f'${i}' for i in range(1, 18))})", audit_rows)
            if audit_rows:
                await con.execute("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1", audit_rows[-1][0],
                                  audit_rows[-1][-1])
    finally:
        await con.close()
