"""Contracts in bulk: a CSV with a header naming the same fields as `rpoguard contract add`.

Required columns: number, principal, start. Optional: end (empty while the contract runs). The same
contract (number, principal, start) again is a duplicate. A running contract's end is set once; another
end for an ended contract is noted beside it as a correction (an earlier one counts for decisions, a later
one or none does not): the contract's record is never changed (db/history.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rpoguard.db.store import ContractRecord, ImportResult, Store
from rpoguard.ingest.csvfile import (
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


def _builder(known: set[str]) -> Callable[[Callable[[str], str]], ContractRecord]:
    def build(cell: Callable[[str], str]) -> ContractRecord:
        start = parse_date(cell("start"))
        end = parse_date(cell("end")) if cell("end") else None
        if end is not None and end < start:
            raise ValueError("end is before start")
        return ContractRecord(normalize_cell(cell("number")), known_principal(cell("principal"), known), start, end)

    return build


async def import_file(store: Store, path: str | Path, skip_invalid: bool) -> ImportResult:
    meta = meta_for(KIND, fingerprint(path))
    build = _builder(await existing_principals(store, path))
    records = header_records(path, meta, REQUIRED, OPTIONAL, build, skip_invalid)
    return await store.import_contracts(records, meta), meta.rejected
