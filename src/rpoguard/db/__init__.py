"""Storage: the Store interface, schema migrations, and the SQLite and PostgreSQL implementations."""

from __future__ import annotations

from rpoguard.db.sqlite import SqliteStore
from rpoguard.db.store import Store, StoreError
from rpoguard.db.urls import is_postgres_url


def open_store(url: str) -> Store:
    """The store for a --db value: a postgresql:// (or postgres://) URL selects PostgreSQL, anything else
    is a SQLite file path (optionally written sqlite://PATH)."""
    if is_postgres_url(url):
        # Imported here: a SQLite-only installation never loads asyncpg.
        from rpoguard.db.postgres import PostgresStore  # noqa: PLC0415

        return PostgresStore(url)
    return SqliteStore(url.removeprefix("sqlite://"))


__all__ = ["SqliteStore", "Store", "StoreError", "is_postgres_url", "open_store"]
