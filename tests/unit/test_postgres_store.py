"""What only the PostgreSQL store has: several writers on one chain, the attempt cap across them, the
append-only guards, and the pool's single round trip. (Everything both stores share runs on both in
test_store.py, test_audit.py, test_anchor.py, test_ingest.py and test_store_decision_table.py.)"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from rpoguard.audit import AuditEntry, AuditRow, verify_chain
from rpoguard.db.postgres import PostgresStore
from rpoguard.db.store import AttemptCap, AttemptCapReached

NUM = "+390645678901"
DAY_US = 86_400_000_000


def two_writers(run: Callable, url: str) -> tuple[PostgresStore, PostgresStore]:
    """Two stores on one database: each with its own pool and its own audit writer, as two nodes have."""
    a, b = PostgresStore(url), PostgresStore(url)
    run(a.open())
    run(b.open())
    return a, b


@pytest.mark.parametrize("isolation", ["read committed", "repeatable read", "serializable"])
def test_two_writers_keep_one_chain_and_the_cap_exactly(
    pg_url: str, run: Callable, make_entry: Callable[..., AuditEntry], isolation: str
) -> None:
    """Whatever the database's default isolation, concurrent appends with a cap from two writers let
    exactly `max_allows` through, and the rows of both form one chain without gaps."""
    admin = PostgresStore(pg_url, pool_max=1)
    run(admin.open())
    database = pg_url.rsplit("/", 1)[1]
    run(admin.pool.execute(f"ALTER DATABASE \"{database}\" SET default_transaction_isolation = '{isolation}'"))
    run(admin.close())
    a, b = two_writers(run, pg_url)
    try:
        base = 1_795_514_400_000_000
        entries = [make_entry(ts_us=base + (i % 7) * 1000) for i in range(60)]

        async def all_at_once() -> list[AuditRow | BaseException]:
            def cap(entry: AuditEntry) -> AttemptCap:
                return AttemptCap(NUM, "acme", entry.ts_us - 7 * DAY_US, 4)

            return list(await asyncio.gather(
                *((a if i % 2 else b).append_decision(e, cap(e)) for i, e in enumerate(entries)),
                return_exceptions=True))

        results = run(all_at_once())
        appended = [r for r in results if isinstance(r, AuditRow)]
        refused = [r for r in results if isinstance(r, AttemptCapReached)]
        assert len(appended) == 4 and len(refused) == 56, [type(r).__name__ for r in results]
        # Blocks (no cap) from both writers continue the same chain.
        async def blocks() -> None:
            await asyncio.gather(*(w.append_decision(make_entry(decision="block", reasons="optout", basis=None))
                                   for w in (a, b, a, b)))

        run(blocks())
        report = run(verify_chain(a.audit_rows()))
        assert report.intact and report.rows == 8
        assert a._appender is not None and b._appender is not None
        assert a._appender.groups >= 1 and b._appender.groups >= 1
    finally:
        run(a.close())
        run(b.close())


def test_audit_log_refuses_update_delete_and_truncate(
    pg_url: str, run: Callable, make_entry: Callable[..., AuditEntry]
) -> None:
    """The twin of test_store.py::test_audit_log_refuses_update_and_delete (SQLite's triggers)."""
    import asyncpg

    store = PostgresStore(pg_url)
    run(store.open())
    try:
        run(store.append_decision(make_entry()))
        run(store.append_decision(make_entry()))
        for statement in ("UPDATE audit_log SET decision = 'block' WHERE seq = 1",
                          "DELETE FROM audit_log WHERE seq = 2", "TRUNCATE audit_log"):
            with pytest.raises(asyncpg.RaiseError, match="append-only"):
                run(store.pool.execute(statement))
        assert run(store.pool.fetchval("SELECT count(*) FROM audit_log")) == 2
    finally:
        run(store.close())
