"""Storage: the Store interface, schema migrations, and the SQLite and PostgreSQL implementations."""

from __future__ import annotations

from rpoguard.anchor import AnchorWriter
from rpoguard.db.sqlite import SqliteStore
from rpoguard.db.store import DatabaseNotFound, Store, StoreError
from rpoguard.db.urls import is_postgres_url


def open_store(url: str, *, create: bool = True, anchor: AnchorWriter | None = None) -> Store:
    """The store for a --db value: a postgresql:// (or postgres://) URL selects PostgreSQL, anything else
    is a SQLite file path (optionally written sqlite://PATH). `create=False` for whatever only reads: a
    mistyped path must fail ("database not found"), never answer from a new empty database. `anchor`
    anchors each group commit of the decision log (rpoguard.anchor.writer_from_config)."""
    if is_postgres_url(url):
        # Imported here: a SQLite-only installation never loads asyncpg.
        from rpoguard.db.postgres import PostgresStore  # noqa: PLC0415

        return PostgresStore(url, create=create, anchor=anchor)
    return SqliteStore(url.removeprefix("sqlite://"), create=create, anchor=anchor)


__all__ = ["DatabaseNotFound", "SqliteStore", "Store", "StoreError", "is_postgres_url", "open_store"]
