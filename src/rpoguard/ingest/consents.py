"""Consents in bulk: a CSV with a header naming the same fields as `rpoguard consent add`.

Required columns: number, principal, given_at, evidence. Optional: automated, expires_at, purpose.
The evidence reference is mandatory: a consent that cannot be shown to the Garante is no consent (2015
decision [37]; E.ON 2025 [65]).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from rpoguard.db.store import ConsentRecord, ImportMeta, ImportResult, RowProblem, Store
from rpoguard.ingest.csvfile import FileError, fingerprint, meta_for, normalize_cell, read_rows, require_clean
from rpoguard.timeutil import TimeFormatError, parse_time

KIND = "consent"
REQUIRED = ("number", "principal", "given_at", "evidence")
OPTIONAL = ("automated", "expires_at", "purpose")
TRUE_WORDS = {"1", "true", "yes", "y", "si", "sì"}
FALSE_WORDS = {"", "0", "false", "no", "n"}


def parse_flag(text: str) -> bool:
    value = text.strip().lower()
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
        return False
    raise ValueError(f"automated must be yes/no (or 1/0, true/false), not {text[:20]!r}")


def records(
    path: str | Path, meta: ImportMeta, known_principals: set[str], skip_invalid: bool
) -> Iterator[ConsentRecord]:
    columns: dict[str, int] | None = None
    for line, fields in read_rows(path, meta.rejected):
        if columns is None:
            names = [f.lower() for f in fields]
            missing = [c for c in REQUIRED if c not in names]
            if missing:
                raise FileError(f"{path}: line {line}: the header must name the columns {', '.join(REQUIRED)} "
                                f"(optional: {', '.join(OPTIONAL)}); missing: {', '.join(missing)}")
            unknown = [n for n in names if n not in REQUIRED + OPTIONAL]
            if unknown:
                raise FileError(f"{path}: line {line}: unknown column(s) {', '.join(unknown)}")
            columns = {name: i for i, name in enumerate(names)}
            continue
        try:
            record = _record(fields, columns, known_principals)
        except (ValueError, TimeFormatError) as exc:
            meta.rejected.append(RowProblem(line, str(exc)))
            continue
        yield record
    if columns is None:
        raise FileError(f"{path}: empty file; expected a header line naming {', '.join(REQUIRED)}")
    require_clean(meta.rejected, skip_invalid)


def _record(fields: list[str], columns: dict[str, int], known_principals: set[str]) -> ConsentRecord:
    def cell(name: str) -> str:
        index = columns.get(name)
        return fields[index] if index is not None and index < len(fields) else ""

    for name in REQUIRED:
        if not cell(name):
            raise ValueError(f"{name} is empty")
    principal = cell("principal")
    if principal not in known_principals:
        raise ValueError(f"principal {principal[:40]!r} does not exist; add it with 'rpoguard principal add'")
    given_at = parse_time(cell("given_at"))
    expires_at = parse_time(cell("expires_at")) if cell("expires_at") else None
    if expires_at is not None and expires_at <= given_at:
        raise ValueError("expires_at is not after given_at")
    return ConsentRecord(
        number=normalize_cell(cell("number")),
        principal_id=principal,
        given_at=given_at,
        evidence=cell("evidence"),
        automated=parse_flag(cell("automated")),
        expires_at=expires_at,
        purpose=cell("purpose") or None,
    )


async def import_file(store: Store, path: str | Path, skip_invalid: bool) -> ImportResult:
    meta = meta_for(KIND, fingerprint(path))
    known = await _principals_in(store, path)
    summary = await store.import_consents(records(path, meta, known, skip_invalid), meta)
    return summary, meta.rejected


async def _principals_in(store: Store, path: str | Path) -> set[str]:
    """The principals the file names that exist: looked up once each, before the write transaction."""
    names: set[str] = set()
    column: int | None = None
    for _line, fields in read_rows(path, []):
        if column is None:
            lowered = [f.lower() for f in fields]
            if "principal" not in lowered:
                return set()
            column = lowered.index("principal")
            continue
        if column < len(fields):
            names.add(fields[column])
    return {name for name in names if await store.get_principal(name) is not None}
