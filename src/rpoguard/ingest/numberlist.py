"""Lists of numbers: one number a line, or a column of a CSV (what `scrub`, `directory import`, `registry due
--from` and the two-list RPO answer read).

Which column holds the numbers is decided once, from the first rows, before anything is read for real:
`--column NAME|N` when given; else the column the header names (telefono, cellulare, numero, phone...);
else the only column holding telephone numbers. A file where no column holds numbers, or where several
could, is refused with the columns that were looked at: reading the wrong column would scrub names, or
list and submit the wrong numbers, without a word.
"""

from __future__ import annotations

import contextlib
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rpoguard.db.store import RowProblem
from rpoguard.ingest.csvfile import DEFAULT_ENCODING, FileError, normalize_cell, read_rows

# Header names of a number column, compared without case, accents, spaces or punctuation.
NUMBER_HEADERS = frozenset({
    "telefono", "tel", "telef", "ntel", "ntelefono", "numtel", "numerotelefono", "numeroditelefono", "telefonono",
    "numero", "numeri", "cellulare", "cell", "cellnumber", "recapito", "recapitotelefonico", "utenza",
    "phone", "phonenumber", "telephone", "mobile", "mobilenumber", "cellphone", "number", "msisdn", "e164",
})
# The rows a column is judged on: enough to see past a few bad cells, few enough to read at once.
SAMPLE_ROWS = 200
_PHONE_LIKE = re.compile(r"\+?[\d\s().\-/]+")
_MIN_DIGITS = 6


def header_key(text: str) -> str:
    """A header cell as compared with NUMBER_HEADERS: 'N° Telefono' and 'numero_telefono' read alike."""
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^a-z0-9]", "", plain.lower())


def _phone_like(cell: str) -> bool:
    """Written like a telephone number (digits and separators), valid or not."""
    return _PHONE_LIKE.fullmatch(cell) is not None and sum(c.isdigit() for c in cell) >= _MIN_DIGITS


def _valid(cell: str) -> bool:
    try:
        normalize_cell(cell)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class NumberColumn:
    """Where a list's numbers are: the column (0-based) and the header line to skip (None: no header)."""

    index: int
    header_line: int | None
    name: str | None
    how: str
    columns: int

    def describe(self) -> str:
        named = f" {self.name!r}" if self.name else ""
        return f"column {self.index + 1}{named} ({self.how})"

    def note(self) -> str | None:
        """What an import summary says about the choice: only when there was one to make."""
        return f"numbers read from {self.describe()}" if self.columns > 1 else None


def _header(fields: list[str]) -> bool:
    """The first row is a header when it names a number column, or holds no digit at all: a row with
    digits is data (a mistyped number stays a bad row, never skipped as a header)."""
    return (any(header_key(f) in NUMBER_HEADERS for f in fields)
            or not any(ch.isdigit() for f in fields for ch in f))


def _columns_seen(header: list[str] | None, width: int) -> str:
    if header:
        return ", ".join(f"{i + 1} {name!r}" for i, name in enumerate(header))
    return f"{width} column(s), no header"


def find_number_column(path: str | Path, encoding: str = DEFAULT_ENCODING, column: str | None = None) -> NumberColumn:
    """Decide which column of `path` holds the numbers; FileError when it cannot be told for sure."""
    header: list[str] | None = None
    header_line: int | None = None
    sample: list[list[str]] = []
    with contextlib.closing(read_rows(path, [], encoding)) as rows:
        for line, fields in rows:
            if header_line is None and not sample and _header(fields):
                header, header_line = fields, line
                continue
            sample.append(fields)
            if len(sample) >= SAMPLE_ROWS:
                break
    width = max([len(header or [])] + [len(f) for f in sample]) if header or sample else 1

    if column is not None:
        return _given_column(path, column, header, header_line, width)
    if header:
        named = [i for i, name in enumerate(header) if header_key(name) in NUMBER_HEADERS]
        if len(named) == 1:
            return NumberColumn(named[0], header_line, header[named[0]], "named by the header", width)
        if len(named) > 1:
            which = ", ".join(f"{i + 1} {header[i]!r}" for i in named)
            raise FileError(f"{path}: several columns could hold the numbers ({which}): choose one with --column "
                            "NAME or --column N")
    if width == 1 or not sample:
        # One column (or nothing to read): nothing to choose; its bad cells are reported row by row.
        if sample and not any(_phone_like(f[0]) or _valid(f[0]) for f in sample if f):
            raise FileError(f"{path}: no telephone number in its first {len(sample)} row(s) (looked at "
                            f"{_columns_seen(header, width)}): is it the right file?")
        name = header[0] if header else None
        return NumberColumn(0, header_line, name, "the only column", width)
    return _column_by_content(path, sample, header, header_line, width)


def _given_column(path: str | Path, column: str, header: list[str] | None, header_line: int | None,
                  width: int) -> NumberColumn:
    text = column.strip()
    if text.isdigit():
        index = int(text) - 1
        if index < 0:
            raise FileError("--column counts from 1")
        if index >= width:
            raise FileError(f"{path}: --column {text}, but its rows have at most {width} column(s)")
        return NumberColumn(index, header_line, header[index] if header and index < len(header) else None,
                            "--column", width)
    if not header:
        raise FileError(f"{path}: --column {text!r}: the file has no header line naming its columns (its first row "
                        "holds digits); give the column's number instead, e.g. --column 3")
    matches = [i for i, name in enumerate(header) if header_key(name) == header_key(text)]
    if len(matches) != 1:
        what = "no column" if not matches else "several columns"
        raise FileError(f"{path}: --column {text!r}: {what} of that name (the header has "
                        f"{_columns_seen(header, width)})")
    return NumberColumn(matches[0], header_line, header[matches[0]], "--column", width)


def _column_by_content(path: str | Path, sample: list[list[str]], header: list[str] | None, header_line: int | None,
                       width: int) -> NumberColumn:
    valid = [0] * width
    phone_like = [0] * width
    for fields in sample:
        for i, cell in enumerate(fields):
            if not cell:
                continue
            if _valid(cell):
                valid[i] += 1
            elif _phone_like(cell):
                phone_like[i] += 1
    # Valid numbers decide; without any, numbers the gate would refuse (foreign, toll-free) still show
    # which column the list keeps its numbers in.
    for counts, kind in ((valid, "the column holding numbers"), (phone_like, "the column holding numbers")):
        holding = [i for i in range(width) if counts[i]]
        if len(holding) == 1:
            i = holding[0]
            return NumberColumn(i, header_line, header[i] if header and i < len(header) else None, kind, width)
        if len(holding) > 1:
            which = ", ".join(f"{i + 1} ({counts[i]} of {len(sample)} rows)" for i in holding)
            raise FileError(f"{path}: several columns hold telephone numbers ({which}): choose one with "
                            "--column N" + (" or --column NAME" if header else ""))
    raise FileError(f"{path}: no column holds telephone numbers in its first {len(sample)} row(s) (looked at "
                    f"{_columns_seen(header, width)}): choose one with --column, or check that it is the right file")


def numbered_rows(path: str | Path, problems: list[RowProblem], where: NumberColumn,
                  encoding: str = DEFAULT_ENCODING, *, empty_is_problem: bool = True) -> Iterator[tuple[int, str]]:
    """(line, the raw cell) of every data row of a list. A row whose number cell is empty or missing is a
    problem, or (`empty_is_problem=False`, for scrub, which answers every row) yielded as ''."""
    for line, fields in read_rows(path, problems, encoding):
        if line == where.header_line:
            continue
        cell = fields[where.index] if where.index < len(fields) else ""
        if not cell and empty_is_problem:
            problems.append(RowProblem(line, f"no number in {where.describe()}"))
            continue
        yield line, cell
