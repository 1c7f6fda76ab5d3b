"""Reading operators' files: encoding, delimiter, header, per-line errors, and the file's fingerprint.

Every reader yields (line number, fields) and never raises for a bad row: the caller records the row as
a RowProblem with its line number, so one import can report every bad row at once.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypeVar

from rpoguard.db.store import ImportMeta, ImportRejected, RowProblem, Store
from rpoguard.numbers import NumberError, normalize_for_import
from rpoguard.timeutil import TimeFormatError

T = TypeVar("T")

# A cell longer than this is not a phone number, a date or an evidence reference: reject the row.
MAX_FIELD = 4_096
MAX_PROBLEMS_KEPT = 10_000


# Told about the byte stream of every file read_rows opens, so that a progress display can follow how far
# the reading got (the CLI's, on a terminal); None: nobody watches.
read_observer: ContextVar[Callable[[IO[bytes]], None] | None] = ContextVar("read_observer", default=None)


class FileError(Exception):
    """The file as a whole cannot be read (missing, unreadable, wrong encoding, no header)."""


@dataclass(frozen=True, slots=True)
class FileInfo:
    path: Path
    size: int
    sha256: str


def fingerprint(path: str | Path) -> FileInfo:
    """Size and SHA-256, read once before the import so a re-import of the same file is recognised."""
    file = Path(path)
    digest = hashlib.sha256()
    try:
        with file.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
        size = file.stat().st_size
    except OSError as exc:
        raise FileError(f"cannot read {path}: {exc.strerror}") from exc
    return FileInfo(file, size, digest.hexdigest())


def read_rows(path: str | Path, problems: list[RowProblem]) -> Iterator[tuple[int, list[str]]]:
    """Yield (line number, stripped fields) of every non-empty row; bad rows go to `problems`."""
    csv.field_size_limit(MAX_FIELD * 4)
    try:
        fh = open(path, encoding="utf-8-sig", newline="")  # noqa: SIM115 - closed in finally
    except OSError as exc:
        raise FileError(f"cannot read {path}: {exc.strerror}") from exc
    observer = read_observer.get()
    if observer is not None:
        observer(fh.buffer)
    try:
        sample = fh.read(8192)
        fh.seek(0)
        delimiter = ";" if sample.count(";") > sample.count(",") else ","
        reader = csv.reader(fh, delimiter=delimiter, strict=True)
        line = 0
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except UnicodeDecodeError as exc:
                raise FileError(f"{path}: not UTF-8 text after line {reader.line_num} ({exc.reason}); save the "
                                "file as UTF-8 CSV") from None
            except csv.Error as exc:
                line = reader.line_num
                problems.append(RowProblem(line, f"malformed CSV: {exc}"))
                continue
            line = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            bad = next((c for c in row if "\x00" in c or len(c) > MAX_FIELD), None)
            if bad is not None:
                what = "a NUL byte" if "\x00" in bad else f"a field longer than {MAX_FIELD} characters"
                problems.append(RowProblem(line, f"row contains {what}"))
                continue
            yield line, [cell.strip() for cell in row]
    except UnicodeDecodeError as exc:
        raise FileError(f"{path}: not UTF-8 text ({exc.reason}); save the file as UTF-8 CSV") from None
    finally:
        fh.close()


def require_clean(problems: list[RowProblem], skip_invalid: bool) -> None:
    """Called after the last row: with bad rows and no --skip-invalid, abort so nothing lands."""
    if problems and not skip_invalid:
        raise ImportRejected(problems)


def normalize_cell(value: str) -> str:
    """A number from an operator's file, as E.164; raises ValueError with a reason for the row."""
    try:
        return normalize_for_import(value).e164
    except NumberError as exc:
        raise ValueError(str(exc)) from None


def meta_for(kind: str, info: FileInfo, **extra: object) -> ImportMeta:
    return ImportMeta(kind=kind, file_name=info.path.name, file_size=info.size, sha256=info.sha256,
                      **extra)  # type: ignore[arg-type]


def header_records(path: str | Path, meta: ImportMeta, required: tuple[str, ...], optional: tuple[str, ...],
                   build: Callable[[Callable[[str], str]], T], skip_invalid: bool) -> Iterator[T]:
    """Records from a CSV whose first line names its columns. `build(cell)` makes one record, where
    `cell(name)` is the row's value for a column ('' when absent); a ValueError rejects the row."""
    columns: dict[str, int] | None = None
    for line, fields in read_rows(path, meta.rejected):
        if columns is None:
            names = [f.lower() for f in fields]
            missing = [c for c in required if c not in names]
            if missing:
                raise FileError(f"{path}: line {line}: the header must name the columns {', '.join(required)} "
                                f"(optional: {', '.join(optional) or 'none'}); missing: {', '.join(missing)}")
            unknown = [n for n in names if n not in required + optional]
            if unknown:
                raise FileError(f"{path}: line {line}: unknown column(s) {', '.join(unknown)}")
            columns = {name: i for i, name in enumerate(names)}
            continue

        def cell(name: str, fields: list[str] = fields, columns: dict[str, int] = columns) -> str:
            index = columns.get(name)
            return fields[index] if index is not None and index < len(fields) else ""

        try:
            for name in required:
                if not cell(name):
                    raise ValueError(f"{name} is empty")
            record = build(cell)
        except (ValueError, TimeFormatError) as exc:
            meta.rejected.append(RowProblem(line, str(exc)))
            continue
        # Records that carry their line let the store name a row it refuses (a consent restated otherwise).
        yield dataclasses.replace(record, line=line) if hasattr(record, "line") else record  # type: ignore[type-var]
    if columns is None:
        if meta.rejected:
            # Every line was unreadable (a UTF-16 file shows as NUL bytes): say so, not "empty".
            raise FileError(f"{path}: no readable header line; {meta.rejected[0]} (save the file as UTF-8 CSV "
                            f"with a header naming {', '.join(required)})")
        raise FileError(f"{path}: empty file; expected a header line naming {', '.join(required)}")
    require_clean(meta.rejected, skip_invalid)


async def existing_principals(store: Store, path: str | Path) -> set[str]:
    """The principals a headed CSV names that exist: looked up once each, before the write transaction."""
    names: set[str] = set()
    column: int | None = None
    # A first look at the file, not the import's reading: a progress display follows the import's pass.
    with unobserved():
        for _line, fields in read_rows(path, []):
            if column is None:
                lowered = [f.lower() for f in fields]
                if "principal" not in lowered:
                    return set()
                column = lowered.index("principal")
                continue
            if column < len(fields) and fields[column]:
                names.add(fields[column])
    return {name for name in names if await store.get_principal(name) is not None}


@contextlib.contextmanager
def unobserved() -> Iterator[None]:
    """Files read meanwhile are not shown to the read_observer."""
    token = read_observer.set(None)
    try:
        yield
    finally:
        read_observer.reset(token)


def known_principal(name: str, known: set[str]) -> str:
    if name not in known:
        raise ValueError(f"principal {name[:40]!r} does not exist; add it with 'rpoguard principal add'")
    return name
