"""consent add|revoke|import|list: documented consents to be called."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from rpoguard.cli import options
from rpoguard.cli.common import EXIT_OK, StoreCommand, Subcommands, UsageError, command, group
from rpoguard.cli.imports import csv_import
from rpoguard.cli.listing import iso_opt, known_principal, list_command, listing, when
from rpoguard.config import Config
from rpoguard.db.store import ConsentRecord, Store
from rpoguard.ingest import consents as consent_import
from rpoguard.ingest import plausible
from rpoguard.timeutil import human, iso


async def cmd_consent_add(args: argparse.Namespace, store: Store, config: Config) -> int:
    if not args.evidence.strip():
        raise UsageError("--evidence must name where the proof of consent is kept")
    if args.expires_at is not None and args.expires_at <= args.given_at:
        raise UsageError("--expires-at must be after --given-at")
    plausible.not_in_future(args.given_at, "--given-at")
    record = ConsentRecord(options.number(args.number), args.principal, args.given_at, args.evidence.strip(),
                           args.automated, args.expires_at, args.purpose)
    consent_id, created = await store.add_consent(record)
    print(f"consent #{consent_id} {'recorded' if created else 'was already recorded'}: {record.number} to "
          f"{record.principal_id} from {human(record.given_at)}"
          f"{' (covers automated calls)' if record.automated else ''}")
    return EXIT_OK


async def cmd_consent_revoke(args: argparse.Namespace, store: Store, config: Config) -> int:
    number = options.number(args.number)
    at = args.at or datetime.now(UTC)
    plausible.not_in_future(at, "--at")
    if await store.get_principal(args.principal) is None:
        raise UsageError(f"principal {args.principal!r} does not exist")
    revocations = await store.revoke_consents(number, args.principal, at)
    if not revocations:
        print(f"no consent of {number} to {args.principal} was given by {human(at)} and not expired then")
    for done in revocations:
        what = f"consent #{done.consent_id} of {number} to {args.principal}"
        if done.first:
            print(f"{what} revoked at {human(at)}")
            continue
        # The first revocation stands: a later one is noted beside it, never substituted.
        first = human(done.revoked_at)
        line = f"{what}: already revoked at {first}; this revocation (at {human(at)}) noted"
        if done.effective_at < done.revoked_at:
            line += (f"; it names an earlier moment, so decisions count the consent revoked from "
                     f"{human(done.effective_at)}")
        print(line)
    return EXIT_OK


cmd_consent_import = csv_import(consent_import.import_file, "consents")


async def cmd_consent_list(args: argparse.Namespace, store: Store, config: Config) -> int:
    rows = store.list_consents(number=options.number(args.number) if args.number else None,
                               principal_id=await known_principal(store, args.principal),
                               in_force_at=args.in_force_at, revoked=args.revoked, limit=args.limit)
    return await listing(args, rows, "consent", (
        ("ID", lambda c: c.id), ("NUMBER", lambda c: c.number), ("PRINCIPAL", lambda c: c.principal_id),
        ("GIVEN", lambda c: when(c.given_at)), ("EXPIRES", lambda c: when(c.expires_at)),
        ("REVOKED", lambda c: when(c.revoked_at)), ("AUTOMATED", lambda c: "yes" if c.automated else "no"),
        ("EVIDENCE", lambda c: c.evidence), ("PURPOSE", lambda c: c.purpose),
    ), lambda c: {"id": c.id, "number": c.number, "principal": c.principal_id, "given_at": iso(c.given_at),
                  "expires_at": iso_opt(c.expires_at), "revoked_at": iso_opt(c.revoked_at),
                  "automated": c.automated, "evidence": c.evidence, "purpose": c.purpose, "import_id": c.import_id,
                  "created_at": iso(c.created_at)})


def register(commands: Subcommands) -> None:
    consents = group(commands, "consent", "documented consents to be called (opt-in)")
    p = command(consents, "add", StoreCommand(cmd_consent_add, creates_database=True), "record one consent")
    p.add_argument("number", metavar="NUMBER")
    p.add_argument("--principal", required=True, metavar="ID", help="whom the consent was given to")
    p.add_argument("--given-at", required=True, type=options.time_arg, metavar="TIME", help="when it was given")
    p.add_argument("--evidence", required=True, metavar="REF",
                   help="where the proof is kept (recording id, signed form, web log...)")
    p.add_argument("--automated", action="store_true", help="the consent covers automated calls too")
    p.add_argument("--expires-at", type=options.time_arg, metavar="TIME", help="when the consent ends, if it does")
    p.add_argument("--purpose", help="what the consent was given for, as worded to the person")
    p = command(consents, "revoke", StoreCommand(cmd_consent_revoke, creates_database=True),
                "revoke the consents of a number to a principal")
    p.add_argument("number", metavar="NUMBER")
    p.add_argument("--principal", required=True, metavar="ID")
    p.add_argument("--at", type=options.time_arg, metavar="TIME", help="when it was revoked (default now)")
    p = command(consents, "import", StoreCommand(cmd_consent_import, creates_database=True),
                "import consents from a CSV with a header: number,principal,given_at,evidence"
                "[,automated,expires_at,purpose]")
    options.csv_import_options(p)
    p = list_command(consents, StoreCommand(cmd_consent_list),
                     "list the consents stored, in the order they were stored")
    p.add_argument("--number", metavar="NUMBER", help="only this number's consents")
    p.add_argument("--principal", metavar="ID", help="only the consents given to this principal")
    p.add_argument("--in-force-at", type=options.time_arg, metavar="TIME",
                   help="only those in force then: given by then, neither expired nor revoked by then")
    p.add_argument("--revoked", action="store_true", help="only those that were revoked")
