"""What is stored, listed: `principal|campaign|consent|contract|optout list` as an aligned table, or JSON
Lines with --json."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from typing import IO, Any

from rpoguard.cli.common import EXIT_OK, Command, Subcommands, UsageError, declare
from rpoguard.cli.options import positive_int
from rpoguard.db.store import Store
from rpoguard.timeutil import human, iso

# The first rows set the table's column widths; a longer value further down only pushes its own line out.
TABLE_SAMPLE = 500

Column = tuple[str, Callable[[Any], object]]


def when(moment: datetime | None) -> str | None:
    """A stored moment for people: Europe/Rome with its offset, to the second."""
    return human(moment) if moment is not None else None


def _cell(value: object) -> str:
    """One table cell on one line: operators' text (evidence, names, references) may hold line breaks or
    terminal control characters, shown escaped."""
    text = "-" if value is None or value == "" else str(value)
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


async def _write_table(rows: AsyncIterator[Any], columns: Sequence[Column], out: IO[str]) -> int:
    """An aligned table with a header, written as the rows come (a large table is never held whole)."""
    widths: list[int] = []
    pending: list[list[str]] = []

    def emit(cells: Sequence[str]) -> None:
        out.write("  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip() + "\n")

    def start() -> None:
        headings = [heading for heading, _ in columns]
        widths.extend(max(len(cells[i]) for cells in [headings, *pending]) for i in range(len(columns)))
        emit(headings)
        for cells in pending:
            emit(cells)
        pending.clear()

    count = 0
    async for row in rows:
        count += 1
        cells = [_cell(value(row)) for _, value in columns]
        if widths:
            emit(cells)
            continue
        pending.append(cells)
        if len(pending) == TABLE_SAMPLE:
            start()
    if pending:
        start()
    return count


async def listing(args: argparse.Namespace, rows: AsyncIterator[Any], noun: str, columns: Sequence[Column],
                   record: Callable[[Any], dict[str, object]]) -> int:
    """Text: the table and a count line; --json: one object a record (JSON Lines), nothing else."""
    # Closed here, while the store is open: a reader gone mid-list (`| head`) must not leave the rows to be
    # closed at exit on a closed connection (an asyncio error on standard error).
    async with contextlib.aclosing(rows):  # type: ignore[type-var]
        if args.json:
            async for row in rows:
                sys.stdout.write(json.dumps(record(row), ensure_ascii=False) + "\n")
            return EXIT_OK
        count = await _write_table(rows, columns, sys.stdout)
    limited = f" (the first {count}: --limit)" if args.limit is not None and count == args.limit else ""
    print(f"{count} {noun}(s){limited}")
    return EXIT_OK


async def known_principal(store: Store, principal: str | None) -> str | None:
    """A --principal filter must name a principal: a typo would list nothing and look like "none stored"."""
    if principal is not None and await store.get_principal(principal) is None:
        raise UsageError(f"principal {principal!r} does not exist")
    return principal


def iso_opt(moment: datetime | None) -> str | None:
    return iso(moment) if moment is not None else None



def list_command(where: Subcommands, run: Command, help_text: str) -> argparse.ArgumentParser:
    """A `... list` command: what is stored, as an aligned table or JSON Lines."""
    sub = where.add_parser("list", help=help_text, description=help_text + ". Times in Europe/Rome; with --json "
                           "one object a line, numbers in E.164, times in UTC (ISO 8601).")
    declare(sub, run)
    sub.add_argument("--limit", type=positive_int, metavar="N", help="at most N rows")
    sub.add_argument("--json", action="store_true", help="one JSON object a line (JSON Lines) instead of a table")
    return sub

