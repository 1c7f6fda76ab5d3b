"""`rpoguard db copy`: everything from one database into another, SQLite or PostgreSQL either way.

An operator who outgrows one PBX moves to PostgreSQL without importing anything again: principals,
campaigns, caller IDs, import records with each input file, RPO answers (with the principal that obtained
them), listing periods, consents, contracts, the notes beside them, refusals, the decision log (with the
moment each row was written), the console's users and its record of changes, row for row with their ids,
so evidence keeps naming the same import files and the hash chain (which covers sequence numbers and every
field) still verifies on the target. The target must be empty; the copy is one transaction on it, so a
failed copy leaves it empty.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from rpoguard.audit import AuditRow, VerifyReport, verify_chain
from rpoguard.db import is_postgres_url, open_store
from rpoguard.db.rows import audit_row
from rpoguard.db.store import StoreError
from rpoguard.db.tables import TABLES

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CopyReport:
    counts: dict[str, int]
    source_chain: VerifyReport
    target_chain: VerifyReport


async def _rows(rows: list[tuple[Any, ...]]) -> AsyncIterator[AuditRow]:
    for r in rows:
        yield audit_row(r)


async def copy_database(source_url: str, target_url: str) -> CopyReport:
    """Copy everything from `source_url` into the empty database at `target_url`; raises StoreError when
    the target has data, or when the target's chain does not verify like the source's after the copy."""
    if source_url == target_url:
        raise StoreError("db copy: --from and --to name the same database")
    if not is_postgres_url(source_url) and not is_postgres_url(target_url):
        log.info("copying between two SQLite databases")
    # The source is only read: a mistyped --from must fail, never be copied as a new empty database.
    async with open_store(source_url, create=False) as source, open_store(target_url) as target:
        occupied = await target.first_table_with_rows(TABLES)
        if occupied is not None:
            raise StoreError(f"db copy: the target already has data (table {occupied}); copy into an empty "
                             "database")
        data = await source.read_tables(TABLES)
        # The chain as read (the source may be serving while it is copied: what was read is what is copied).
        source_chain = await verify_chain(_rows(data["audit_log"]))
        await target.write_tables(TABLES, data)
        target_chain = await verify_chain(target.audit_rows())
    if (target_chain.rows, target_chain.head_hash) != (source_chain.rows, source_chain.head_hash) or (
            target_chain.intact != source_chain.intact):
        raise StoreError(f"db copy: the copied decision log does not match the source ({target_chain.rows} rows, "
                         f"head {target_chain.head_hash}; source {source_chain.rows} rows, head "
                         f"{source_chain.head_hash})")
    return CopyReport({name: len(rows) for name, rows in data.items()}, source_chain, target_chain)
