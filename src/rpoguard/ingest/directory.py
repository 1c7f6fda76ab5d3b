"""Public-directory listings (elenchi telefonici pubblici): the opt-out regime applies only to these.

By default a file is the whole directory: numbers missing from it become unlisted and need consent,
which fails closed. `--append` adds to the current listings instead. Listings have periods: a listing
counts from the moment the file describes (`--listed-at`, the date of the directory extract; default the
import itself), and a replacing file ends the listings it no longer names at its own moment. Nothing is
deleted, so a decision as of an earlier moment sees the directory as it stood then.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from rpoguard.db.store import ImportMeta, ImportResult, Store
from rpoguard.ingest.csvfile import fingerprint, meta_for, require_clean
from rpoguard.ingest.registry import numbers_from_list

KIND = "directory"


def _numbers(path: str | Path, meta: ImportMeta, skip_invalid: bool) -> Iterator[str]:
    yield from numbers_from_list(path, meta.rejected)
    require_clean(meta.rejected, skip_invalid)


async def import_file(store: Store, path: str | Path, replace: bool, skip_invalid: bool,
                      listed_at: datetime | None = None) -> ImportResult:
    meta = meta_for(KIND, fingerprint(path), checked_at=listed_at)
    summary = await store.import_directory(_numbers(path, meta, skip_invalid), meta, replace)
    return summary, meta.rejected
