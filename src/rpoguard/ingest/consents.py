"""Consents in bulk: a CSV with a header naming the same fields as `rpoguard consent add`.

Required columns: number, principal, given_at, evidence. Optional: automated, expires_at, purpose.
The evidence reference is mandatory: a consent that cannot be shown to the Garante is no consent (2015
decision [37]; E.ON 2025 [65]). A consent already recorded (same number, principal, given_at and evidence)
is a duplicate; restated with another purpose, automated flag or expiry it is a bad row: a recorded
consent is never changed (it is ended with `consent revoke`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from rpoguard.db.store import ConsentRecord, ImportResult, Progress, Store
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


def _builder(known: set[str], now: datetime | None = None) -> Callable[[Callable[[str], str]], ConsentRecord]:
    def build(cell: Callable[[str], str]) -> ConsentRecord:
        principal = known_principal(cell("principal"), known)
        given_at = parse_time(cell("given_at"))
        # A consent not given yet is no consent: dated ahead, it would also not count until then.
        plausible.not_in_future(given_at, "given_at", now)
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

    return build


async def import_file(store: Store, path: str | Path, skip_invalid: bool,
                      encoding: str = DEFAULT_ENCODING, progress: Progress | None = None) -> ImportResult:
    # The store refuses a row restating a recorded consent with other details: skipped like a bad row.
    meta = meta_for(KIND, fingerprint(path), skip_invalid=skip_invalid)
    build = _builder(await existing_principals(store, path, encoding), datetime.now(UTC))
    records = header_records(path, meta, REQUIRED, OPTIONAL, build, skip_invalid, encoding)
    summary = await store.import_consents(counted(records, meta, progress), meta)
    return summary, meta.rejected
