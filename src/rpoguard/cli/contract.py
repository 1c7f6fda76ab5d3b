"""contract add|import|list: contracts for goods or services."""

from __future__ import annotations

import argparse

from rpoguard.cli import options
from rpoguard.cli.common import EXIT_OK, StoreCommand, Subcommands, UsageError, command, group
from rpoguard.cli.imports import csv_import
from rpoguard.cli.listing import known_principal, list_command, listing
from rpoguard.config import Config
from rpoguard.db.store import CONTRACT_CORRECTED, CONTRACT_ENDED, CONTRACT_RECORDED, CONTRACT_UNCHANGED, Store
from rpoguard.ingest import contracts as contract_import
from rpoguard.ingest import plausible
from rpoguard.timeutil import iso

cmd_contract_import = csv_import(contract_import.import_file, "contracts")


async def cmd_contract_add(args: argparse.Namespace, store: Store, config: Config) -> int:
    if args.end is not None and args.end < args.start:
        raise UsageError("--end is before --start")
    plausible.not_in_future(args.start, "--start")
    number = options.number(args.number)
    done = await store.add_contract(number, args.principal, args.start, args.end)
    what = f"contract #{done.contract_id}: {number} with {args.principal} from {args.start.isoformat()}"
    asked = args.end.isoformat() if args.end else None
    before = done.end_before.isoformat() if done.end_before else None
    effective = done.effective_end.isoformat() if done.effective_end else None
    if done.outcome == CONTRACT_RECORDED:
        print(f"{what} recorded{' to ' + asked if asked else ' (running)'}")
    elif done.outcome == CONTRACT_UNCHANGED:
        print(f"{what} was already recorded{' to ' + before if before else ' (running)'}; nothing changed")
    elif done.outcome == CONTRACT_ENDED:
        print(f"{what}: end {asked} recorded (it was running)")
    elif done.outcome == CONTRACT_CORRECTED:
        print(f"{what}: already ended {before}; end {asked} noted as a correction beside the record; it is "
              f"earlier, so decisions use it")
    else:
        # A later end, or none, would save consents for longer: noted for the evidence, never used.
        print(f"{what}: already ended {before}; {'end ' + asked if asked else 'no end'} noted beside the record, "
              f"not used (an end is never moved later or removed; decisions use {effective}; a renewal is a new "
              "contract with its own --start)")
    return EXIT_OK


async def cmd_contract_list(args: argparse.Namespace, store: Store, config: Config) -> int:
    rows = store.list_contracts(number=options.number(args.number) if args.number else None,
                                principal_id=await known_principal(store, args.principal),
                                running_at=args.running_at, limit=args.limit)
    return await listing(args, rows, "contract", (
        ("ID", lambda k: k.id), ("NUMBER", lambda k: k.number), ("PRINCIPAL", lambda k: k.principal_id),
        ("START", lambda k: k.start.isoformat()), ("END", lambda k: k.end.isoformat() if k.end else "running"),
    ), lambda k: {"id": k.id, "number": k.number, "principal": k.principal_id, "start": k.start.isoformat(),
                  "end": k.end.isoformat() if k.end else None, "created_at": iso(k.created_at)})


def register(commands: Subcommands) -> None:
    contracts = group(commands, "contract", "contracts for goods or services (consent survives RPO registration "
                                  "while they run and 30 days after)")
    p = command(contracts, "add", StoreCommand(cmd_contract_add, creates_database=True), "record a contract")
    p.add_argument("number", metavar="NUMBER")
    p.add_argument("--principal", required=True, metavar="ID")
    p.add_argument("--start", required=True, type=options.date_arg, metavar="DATE")
    p.add_argument("--end", type=options.date_arg, metavar="DATE", help="when it ended (omit while it runs)")

    p = command(contracts, "import", StoreCommand(cmd_contract_import, creates_database=True),
                "import contracts from a CSV with a header: number,principal,start[,end]")
    options.csv_import_options(p)
    p = list_command(contracts, StoreCommand(cmd_contract_list),
                     "list the contracts stored, in the order they were stored")
    p.add_argument("--number", metavar="NUMBER", help="only this number's contracts")
    p.add_argument("--principal", metavar="ID", help="only the contracts with this principal")
    p.add_argument("--running-at", type=options.date_arg, metavar="DATE",
                   help="only those running that day: started by then and not ended before it")
