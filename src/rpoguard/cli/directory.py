"""directory import: the numbers listed in a public telephone directory."""

from __future__ import annotations

import argparse

from rpoguard.cli import options
from rpoguard.cli.common import EXIT_OK, StoreCommand, Subcommands, command, group
from rpoguard.cli.imports import report_import
from rpoguard.cli.progress import ProgressDisplay
from rpoguard.config import Config
from rpoguard.db.store import Store
from rpoguard.ingest import directory as directory_import
from rpoguard.timeutil import iso


async def cmd_directory_import(args: argparse.Namespace, store: Store, config: Config) -> int:
    replace = not args.append
    with ProgressDisplay("importing directory listings", [args.file], args.quiet):
        summary, problems = await directory_import.import_file(store, args.file, replace, args.skip_invalid,
                                                               args.listed_at, args.allow_empty,
                                                               encoding=args.encoding, column=args.column)
    report_import(args, summary, problems, "directory listings",
                   listed_at=iso(args.listed_at) if args.listed_at else None, replace=replace)
    if replace and not summary.already_imported and not (args.json or args.quiet):
        detail = summary.detail
        print(f"  listings: {detail.get('newly_listed', 0)} started, {detail.get('still_listed', 0)} kept, "
              f"{detail.get('ended', 0)} ended (an ended listing stays in the evidence as a period, with the "
              f"import that ended it)")
    return EXIT_OK


def register(commands: Subcommands) -> None:
    directory = group(commands, "directory", "numbers listed in a public telephone directory (opt-out regime)")
    p = command(directory, "import", StoreCommand(cmd_directory_import, creates_database=True),
                "import the public-directory numbers; by default the file replaces the previous listings")
    p.add_argument("file", metavar="FILE", help="one number a line, or a CSV (, ; or tab) with a number column")
    p.add_argument("--append", action="store_true", help="add to the current listings instead of replacing them")
    p.add_argument("--listed-at", type=options.time_arg, metavar="TIME",
                   help="the date of the directory extract: its listings count from then (default: now). A "
                        "decision as of an earlier moment does not see them")
    p.add_argument("--skip-invalid", action="store_true", help="import the good rows and report the bad ones")
    p.add_argument("--allow-empty", action="store_true",
                   help="accept a file without any number (refused otherwise: replacing the directory with it "
                        "ends every listing)")
    options.json_option(p, "the import's summary (one object)")
    options.encoding_option(p)
    options.column_option(p)
