"""Contracts in bulk: a CSV with a header naming the same fields as `rpoguard contract add`.

Required columns: number, principal, start. Optional: end (empty while the contract runs). The same
contract (number, principal, start) again is a duplicate. A running contract's end is set once; another
end for an ended contract is noted beside it as a correction (an earlier one counts for decisions, a later
one or none does not): the contract's record is never changed (db/history.py).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from rpoguard.db.store import ContractRecord, ImportResult, Progress, Store
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
from rpoguard.timeutil import parse_date

KIND = "contract"
REQUIRED = ("number", "principal", "start")
OPTIONAL = ("end",)


def _builder(known: set[str], now: datetime | None = None) -> Callable[[Callable[[str], str]], ContractRecord]:
    def build(cell: Callable[[str], str]) -> ContractRecord:
        start = parse_date(cell("start"))
        # A contract that has not started is not a fact yet; its end may be planned, so it is not checked.
        plausible.not_in_future(start, "start", now)
        end = parse_date(cell("end")) if cell("end") else None
        if end is not None and end < start:
            raise ValueError("end is before start")
        return ContractRecord(normalize_cell(cell("number")), known_principal(cell("principal"), known), start, end)

    return build


async def import_file(store: Store, path: str | Path, skip_invalid: bool,
                      encoding: str = DEFAULT_ENCODING, progress: Progress | None = None) -> ImportResult:
    meta = meta_for(KIND, fingerprint(path))
    build = _builder(await existing_principals(store, path, encoding), datetime.now(UTC))
    records = header_records(path, meta, REQUIRED, OPTIONAL, build, skip_invalid, encoding)
    return await store.import_contracts(counted(records, meta, progress), meta), meta.rejected
