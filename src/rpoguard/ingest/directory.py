"""Public-directory listings (elenchi telefonici pubblici): the opt-out regime applies only to these.

By default a file is the whole directory: numbers missing from it become unlisted and need consent,
which fails closed. `--append` adds to the current listings instead. Listings have periods: a listing
counts from the moment the file describes (`--listed-at`, the date of the directory extract; default the
import itself), and a replacing file ends the listings it no longer names at its own moment. Nothing is
deleted, so a decision as of an earlier moment sees the directory as it stood then. A file without a
number is refused unless `--allow-empty`: as a replacement it would end every listing.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from rpoguard.db.store import ImportMeta, ImportResult, Progress, Store
from rpoguard.ingest import plausible
from rpoguard.ingest.csvfile import DEFAULT_ENCODING, FileError, counted, fingerprint, meta_for, require_clean
from rpoguard.ingest.numberlist import NumberColumn, find_number_column
from rpoguard.ingest.registry import numbered_from_list

KIND = "directory"


def _numbers(path: str | Path, meta: ImportMeta, skip_invalid: bool, replace: bool, allow_empty: bool,
             encoding: str, where: NumberColumn) -> Iterator[str]:
    count = 0
    for _, number in numbered_from_list(path, meta.rejected, encoding, where=where):
        count += 1
        yield number
    require_clean(meta.rejected, skip_invalid)
    if not count and not allow_empty:
        # Raised while the store reads the rows, inside its transaction: nothing is stored or ended.
        skipped = f", or every row of it was skipped ({len(meta.rejected)})" if meta.rejected else ""
        effect = ("a replacing import would end every listing in the directory" if replace
                  else "an appending import would add nothing")
        raise FileError(f"{path}: no number to import (the file is empty, blank or a header only{skipped}); "
                        f"{effect}. Give --allow-empty if the directory really lists no number")


async def import_file(store: Store, path: str | Path, replace: bool, skip_invalid: bool,
                      listed_at: datetime | None = None, allow_empty: bool = False, *,
                      encoding: str = DEFAULT_ENCODING, column: str | None = None,
                      progress: Progress | None = None) -> ImportResult:
    """Import one directory file. A file without a number is refused unless `allow_empty`: replacing the
    directory with it would end every listing, which is rarely what an operator meant. `column`: --column
    NAME|N, the list's number column (default: found from the header or the rows)."""
    if listed_at is not None:
        plausible.not_in_future(listed_at, "--listed-at")
    meta = meta_for(KIND, fingerprint(path), checked_at=listed_at)
    # Found before the store is asked: a replacing file read in the wrong column would end every listing.
    where = find_number_column(path, encoding, column)
    numbers = _numbers(path, meta, skip_invalid, replace, allow_empty, encoding, where)
    summary = await store.import_directory(counted(numbers, meta, progress), meta, replace)
    note = where.note()
    if note is not None and not summary.already_imported:
        summary.notes.append(note)
    return summary, meta.rejected
