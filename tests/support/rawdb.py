"""Raw access to a test's database behind the store's back, on either backend: what someone with write
access to the database (not through rpoguard) could do. SQL is written with '?' placeholders and the
portable subset both engines share."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from rpoguard.db.sqlite import SqliteStore, audit_path
from rpoguard.db.store import Store


class RawResult:
    def __init__(self, rows: Sequence[tuple[Any, ...]]) -> None:
        self.rows = list(rows)

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self.rows)

    def fetchone(self) -> tuple[Any, ...] | None:
        return self.rows[0] if self.rows else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self.rows


class RawDb:
    def __init__(self, store: Store, run: Callable[..., Any]) -> None:
        self.store = store
        self.run = run
        self.sqlite: sqlite3.Connection | None = None
        if isinstance(store, SqliteStore):
            # Unqualified names are looked up in the data file, then in the attached audit file.
            self.sqlite = sqlite3.connect(store.path, isolation_level=None)
            self.sqlite.execute("ATTACH DATABASE ? AS audit", (str(audit_path(store.path)),))

    def execute(self, sql: str, params: Sequence[Any] = ()) -> RawResult:
        if self.sqlite is not None:
            return RawResult(self.sqlite.execute(sql, tuple(params)).fetchall())
        counter = iter(range(1, len(params) + 1))
        pg_sql = re.sub(r"\?", lambda _: f"${next(counter)}", sql)
        pool = self.store.pool  # type: ignore[attr-defined]
        rows = self.run(pool.fetch(pg_sql, *params))
        return RawResult([tuple(r) for r in rows])

    def drop_append_only_guards(self) -> None:
        if self.sqlite is not None:
            self.sqlite.execute("DROP TRIGGER audit.audit_log_no_update")
            self.sqlite.execute("DROP TRIGGER audit.audit_log_no_delete")
        else:
            self.run(self.store.pool.execute("ALTER TABLE audit_log DISABLE TRIGGER USER"))  # type: ignore[attr-defined]

    def count(self, table: str) -> int:
        row = self.execute(f"SELECT count(*) FROM {table}").fetchone()
        assert row is not None
        return int(row[0])

    def close(self) -> None:
        if self.sqlite is not None:
            self.sqlite.close()
