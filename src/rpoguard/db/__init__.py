"""Storage: the Store interface, schema migrations and the SQLite implementation."""

from __future__ import annotations

from rpoguard.db.sqlite import SqliteStore
from rpoguard.db.store import StoreError


def open_store(url: str) -> SqliteStore:
    """The store for a --db value. A PostgreSQL URL will select the PostgreSQL store (issue 8)."""
    if url.startswith(("postgresql://", "postgres://")):
        raise StoreError("PostgreSQL is not supported yet: use a SQLite file path for --db")
    return SqliteStore(url.removeprefix("sqlite://"))


__all__ = ["SqliteStore", "StoreError", "open_store"]
