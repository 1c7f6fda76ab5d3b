"""principal add|list: the companies calls are made for (the data controllers)."""

from __future__ import annotations

import argparse

from rpoguard.cli import options
from rpoguard.cli.common import EXIT_OK, StoreCommand, Subcommands, command, group
from rpoguard.cli.listing import list_command, listing, when
from rpoguard.config import Config
from rpoguard.db.store import Store
from rpoguard.timeutil import iso


async def cmd_principal_add(args: argparse.Namespace, store: Store, config: Config) -> int:
    caller_ids = [options.caller_id(c) for c in args.caller_id or ()]
    before = await store.get_principal(args.id)
    created = await store.add_principal(args.id, args.name, caller_ids)
    info = await store.get_principal(args.id)
    assert info is not None
    print(f"principal {args.id} {'added' if created else 'updated'}: {info.name}; declared caller IDs: "
          f"{', '.join(info.caller_ids) or 'none (every call will be blocked with caller_id_invalid)'}")
    if before is not None:
        # Configuration, not a fact in time: it is updated, and the operator is told what changed.
        if before.name != info.name:
            print(f"  was: {before.name}")
        added = [c for c in info.caller_ids if c not in before.caller_ids]
        if added:
            print(f"  caller ID(s) added: {', '.join(added)} (declared caller IDs are only ever added)")
    return EXIT_OK


async def cmd_principal_list(args: argparse.Namespace, store: Store, config: Config) -> int:
    return await listing(args, store.list_principals(limit=args.limit), "principal", (
        ("ID", lambda p: p.id), ("NAME", lambda p: p.name), ("CALLER IDS", lambda p: ",".join(p.caller_ids)),
        ("ADDED", lambda p: when(p.created_at)),
    ), lambda p: {"id": p.id, "name": p.name, "caller_ids": list(p.caller_ids), "created_at": iso(p.created_at)})


def register(commands: Subcommands) -> None:
    principals = group(commands, "principal", "the companies you call for (the data controller, 'committente')")
    p = command(principals, "add", StoreCommand(cmd_principal_add, creates_database=True),
                "add or update a principal and the caller IDs it declared")
    p.add_argument("id", metavar="ID", help="short name used by campaigns, e.g. acme")
    p.add_argument("--name", required=True, help="the principal's legal name")
    p.add_argument("--caller-id", action="append", metavar="NUMBER",
                   help="a caller ID declared to the ROC/AGCOM for this principal (repeat for several)")
    list_command(principals, StoreCommand(cmd_principal_list), "list the principals and their declared caller IDs")
