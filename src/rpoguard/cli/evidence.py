"""evidence: everything rpoguard knows about one number, for the DPO."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime

from rpoguard.cli import options
from rpoguard.cli.common import EXIT_OK, StoreCommand, Subcommands, UsageError, declare
from rpoguard.config import Config
from rpoguard.db.store import Store
from rpoguard.evidence_text import describe
from rpoguard.timeutil import human, iso


async def cmd_evidence(args: argparse.Namespace, store: Store, config: Config) -> int:
    number = options.number(args.number)
    if args.principal and await store.get_principal(args.principal) is None:
        raise UsageError(f"principal {args.principal!r} does not exist")
    items = await store.evidence(number, args.principal)
    if args.json:
        print(json.dumps({"number": number, "principal": args.principal, "generated_at": iso(datetime.now(UTC)),
                          "items": [{"time": iso(i.at), "kind": i.kind, "principal": i.principal_id, **i.detail}
                                    for i in items]}, ensure_ascii=False))
        return EXIT_OK
    print(f"Evidence for {number}{' and principal ' + args.principal if args.principal else ''}: "
          f"{len(items)} record(s), oldest first (times in Europe/Rome)")
    for item in items:
        print(f"{human(item.at)}  {describe(item)}")
    return EXIT_OK


def register(commands: Subcommands) -> None:
    p = commands.add_parser("evidence", help="everything rpoguard knows about one number, for the DPO",
                            description="Everything rpoguard knows about one number, oldest first: RPO answers "
                                        "with each of their files and its hash, directory listing periods, "
                                        "consents, contracts, what was noted about them later (a second "
                                        "revocation, a corrected end), refusals, and every decision with its "
                                        "reasons and the moment it was recorded.")
    declare(p, StoreCommand(cmd_evidence))
    p.add_argument("number", metavar="NUMBER")
    p.add_argument("--principal", metavar="ID", help="only what concerns this principal")
    p.add_argument("--json", action="store_true", help="print one JSON object")
