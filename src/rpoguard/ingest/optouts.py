"""Refusals in bulk: a CSV with a header naming the same fields as `rpoguard optout add`.

Required columns: number, at. Optional: principal (empty: every principal), reference (where the
refusal was recorded: a call id, a letter). A refusal already on record is a duplicate.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from rpoguard.db.store import ImportResult, OptoutRecord, Progress, Store
from rpoguard.ingest import plausible
from rpoguard.ingest.csvfile import (
    DEFAULT_ENCODING,
    counted,
    existing_principals,
    fingerprint,
    header_records,
    known_principal,
    meta_for,
    normalize_cell,
)
from rpoguard.timeutil import parse_time

KIND = "optout"
REQUIRED = ("number", "at")
OPTIONAL = ("principal", "reference")


def _builder(known: set[str], now: datetime | None = None) -> Callable[[Callable[[str], str]], OptoutRecord]:
    def build(cell: Callable[[str], str]) -> OptoutRecord:
        principal = known_principal(cell("principal"), known) if cell("principal") else None
        at = parse_time(cell("at"))
        # Dated ahead, a refusal would not block until then.
        plausible.not_in_future(at, "at", now)
        return OptoutRecord(normalize_cell(cell("number")), principal, at, cell("reference") or None)

    return build


async def import_file(store: Store, path: str | Path, skip_invalid: bool,
                      encoding: str = DEFAULT_ENCODING, progress: Progress | None = None) -> ImportResult:
    meta = meta_for(KIND, fingerprint(path))
    build = _builder(await existing_principals(store, path, encoding), datetime.now(UTC))
    records = header_records(path, meta, REQUIRED, OPTIONAL, build, skip_invalid, encoding)
    return await store.import_optouts(counted(records, meta, progress), meta), meta.rejected
