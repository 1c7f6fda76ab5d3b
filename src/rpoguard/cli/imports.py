"""What every import prints, and the handler of the plain CSV imports (consents, contracts, opt-outs)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable, Sequence

from rpoguard.cli.common import EXIT_OK, Handler, print_problems
from rpoguard.cli.progress import ProgressDisplay
from rpoguard.config import Config
from rpoguard.db.store import ImportResult, ImportSummary, RowProblem, Store
from rpoguard.evidence_text import describe_file


def print_import(summary: ImportSummary, problems: list[RowProblem], what: str) -> None:
    if summary.already_imported:
        print(f"{what}: this file was already imported (import #{summary.import_id}); nothing changed")
        return
    print_problems(problems, stored=True)
    details = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in summary.detail.items())
    print(f"{what}: import #{summary.import_id}: {summary.rows_read} row(s) read, {summary.rows_stored} stored, "
          f"{summary.rows_rejected} rejected{'; ' + details if details else ''}")
    for file in summary.files:
        print(f"  {describe_file(file.role, file.name, file.size, file.sha256)}")
    for note in summary.notes:
        print(f"  note: {note}")



def report_import(args: argparse.Namespace, summary: ImportSummary, problems: list[RowProblem], what: str,
                   **context: object) -> None:
    """Every import's outcome: with --json one object on standard output (`context` adds the command's
    own fields); else print_import's lines, of which -q keeps only the rows skipped."""
    if args.json:
        print(json.dumps(import_json(summary, problems, context), ensure_ascii=False))
    elif args.quiet:
        if not summary.already_imported:
            print_problems(problems, stored=True)
    else:
        print_import(summary, problems, what)


def import_json(summary: ImportSummary, problems: Sequence[RowProblem],
                 context: dict[str, object]) -> dict[str, object]:
    return {
        "import_id": summary.import_id,
        "already_imported": summary.already_imported,
        "rows_read": summary.rows_read,
        "rows_stored": summary.rows_stored,
        "rows_rejected": summary.rows_rejected,
        "details": summary.detail,
        "notes": summary.notes,
        # The rows --skip-invalid left out, each with its line.
        "rejected": [] if summary.already_imported else [{"line": p.line, "problem": p.message} for p in problems],
        **context,
    }



def csv_import(importer: Callable[[Store, str, bool, str], Awaitable[ImportResult]], what: str) -> Handler:
    """The handler of a `... import FILE [--skip-invalid]` command for headed CSV records."""

    async def handler(args: argparse.Namespace, store: Store, config: Config) -> int:
        with ProgressDisplay(f"importing {what}", [args.file], args.quiet):
            summary, problems = await importer(store, args.file, args.skip_invalid, args.encoding)
        report_import(args, summary, problems, what)
        return EXIT_OK

    return handler
