"""optout add|import|list: refusals ("do not call me again")."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from rpoguard.cli import options
from rpoguard.cli.common import EXIT_OK, StoreCommand, Subcommands, command, group
from rpoguard.cli.imports import csv_import
from rpoguard.cli.listing import known_principal, list_command, listing, when
from rpoguard.config import Config
from rpoguard.constants import SOURCE_CLI
from rpoguard.db.store import Store
from rpoguard.ingest import optouts as optout_import
from rpoguard.ingest import plausible
from rpoguard.timeutil import human, iso

cmd_optout_import = csv_import(optout_import.import_file, "opt-outs")


async def cmd_optout_add(args: argparse.Namespace, store: Store, config: Config) -> int:
    number = options.number(args.number)
    at = args.at or datetime.now(UTC)
    plausible.not_in_future(at, "--at")
    optout_id = await store.add_optout(number, args.principal, at, SOURCE_CLI, None)
    print(f"opt-out #{optout_id} recorded: {number} refuses calls from "
          f"{args.principal or 'every principal'} from {human(at)}")
    return EXIT_OK


async def cmd_optout_list(args: argparse.Namespace, store: Store, config: Config) -> int:
    rows = store.list_optouts(number=options.number(args.number) if args.number else None,
                              principal_id=await known_principal(store, args.principal), since=args.since,
                              limit=args.limit)
    return await listing(args, rows, "refusal", (
        ("ID", lambda o: o.id), ("NUMBER", lambda o: o.number),
        ("PRINCIPAL", lambda o: o.principal_id or "every principal"), ("AT", lambda o: when(o.at)),
        ("SOURCE", lambda o: o.source), ("REFERENCE", lambda o: o.reference),
    ), lambda o: {"id": o.id, "number": o.number, "principal": o.principal_id, "at": iso(o.at), "source": o.source,
                  "reference": o.reference, "created_at": iso(o.created_at)})


def register(commands: Subcommands) -> None:
    optouts = group(commands, "optout", "refusals: 'do not call me again' (final at once)")
    p = command(optouts, "add", StoreCommand(cmd_optout_add, creates_database=True), "record a refusal")
    p.add_argument("number", metavar="NUMBER")
    p.add_argument("--principal", metavar="ID", help="the principal refused (default: every principal)")
    p.add_argument("--at", type=options.time_arg, metavar="TIME", help="when it was said (default now)")

    p = command(optouts, "import", StoreCommand(cmd_optout_import, creates_database=True),
                "import refusals from a CSV with a header: number,at[,principal,reference]")
    options.csv_import_options(p)
    p = list_command(optouts, StoreCommand(cmd_optout_list), "list the refusals stored, in the order they were stored")
    p.add_argument("--number", metavar="NUMBER", help="only this number's refusals")
    p.add_argument("--principal", metavar="ID",
                   help="only the refusals that bind this principal: its own and those for every principal")
    p.add_argument("--since", type=options.time_arg, metavar="TIME", help="only those said at or after TIME")
