"""registry import|due: the RPO's answers, and the numbers to submit to it next."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from datetime import UTC, datetime, timedelta

from rpoguard.cli import due_check, options
from rpoguard.cli.common import (
    EXIT_ERROR,
    EXIT_OK,
    StoreCommand,
    Subcommands,
    UsageError,
    command,
    group,
    output,
    print_problems,
)
from rpoguard.cli.imports import report_import
from rpoguard.cli.progress import ProgressDisplay
from rpoguard.config import Config
from rpoguard.db.store import RPO_CLEANSED_LIST, RPO_REGISTERED_LIST, RowProblem, Store
from rpoguard.ingest import plausible
from rpoguard.ingest import registry as registry_import
from rpoguard.numbers import national_form
from rpoguard.timeutil import ROME, human, iso


async def cmd_registry_import(args: argparse.Namespace, store: Store, config: Config) -> int:
    plausible.rpo_checked_at(args.checked_at)
    lists = [flag for flag, given in (("--submitted", args.submitted), ("--registered", args.registered),
                                      ("--cleansed", args.cleansed)) if given]
    if args.file and lists:
        raise UsageError(f"give either FILE or --submitted with --registered or --cleansed, not both (FILE and "
                         f"{' '.join(lists)})")
    if args.registered and args.cleansed:
        raise UsageError("give --registered (the registered numbers) or --cleansed (the cleaned list), not both")
    if not args.file and not (args.submitted and (args.registered or args.cleansed)):
        raise UsageError("give the RPO answer FILE, or --submitted with --registered or --cleansed")
    if not args.file and args.skip_invalid and not args.quiet:
        # Not an error (a script may always pass it), but never in effect: see ImportRejected.skippable.
        print("rpoguard: --skip-invalid does not apply to a two-list answer: absence from a list proves nothing "
              "unless both lists are read whole", file=sys.stderr)
    principal = await registry_import.rpo_principal(store, args.principal)
    expired = plausible.expired_on_arrival(args.checked_at, config.rpo_validity_days)
    if expired is not None:
        print(f"rpoguard: warning: {expired}", file=sys.stderr)
    started = time.monotonic()
    with ProgressDisplay("importing RPO answers", [args.file, args.submitted, args.registered, args.cleansed],
                   args.quiet) as progress:
        read = {"encoding": args.encoding, "validity_days": config.rpo_validity_days}
        if args.file:
            summary, problems = await registry_import.import_csv(store, args.file, args.checked_at, principal,
                                                                 args.skip_invalid, progress, **read)
        else:
            form, answer_list = ((RPO_REGISTERED_LIST, args.registered) if args.registered
                                 else (RPO_CLEANSED_LIST, args.cleansed))
            summary, problems = await registry_import.import_lists(store, args.submitted, answer_list, form,
                                                                   args.checked_at, principal, progress, **read)
    seconds = time.monotonic() - started
    report_import(args, summary, problems, f"RPO answers checked at {human(args.checked_at)}",
                   principal=principal, checked_at=iso(args.checked_at), seconds=round(seconds, 3))
    if args.json or args.quiet:
        return EXIT_OK
    print(f"  answers of principal {principal}: its decisions read them, no other principal's do")
    if not summary.already_imported:
        print(f"  {seconds:.1f} s")
    return EXIT_OK


async def cmd_registry_due(args: argparse.Namespace, store: Store, config: Config) -> int:
    if args.max_share is not None and not args.check:
        raise UsageError("--max-share applies only with --check")
    if args.check:
        due_check.max_share(args.max_share or "0")  # a bad share is refused before anything is counted
    if args.campaign:
        campaign = await store.get_campaign(args.campaign)
        if campaign is None:
            raise UsageError(f"campaign {args.campaign!r} does not exist")
        principal = campaign.principal_id
    elif args.check:
        # Without --principal the check covers every principal, one line each.
        principal = await registry_import.rpo_principal(store, args.principal) if args.principal else None
    else:
        principal = await registry_import.rpo_principal(store, args.principal)
    if args.check:
        return await due_check.run_check(args, store, config.rpo_validity_days, principal)
    assert principal is not None
    now = datetime.now(UTC)
    # A result is still good at `horizon` only if checked after horizon - validity (wall clock, Rome),
    # the same arithmetic as the decision's rule 5.
    horizon = now.astimezone(ROME) + timedelta(days=args.within)
    stale_before = horizon - timedelta(days=config.rpo_validity_days)
    problems: list[RowProblem] = []
    candidates = (registry_import.numbers_from_list(args.source, problems, args.encoding, args.column)
                  if args.source else None)
    count = 0
    with output(args.output) as out:
        async with contextlib.aclosing(store.due_numbers(candidates, principal, args.campaign, stale_before)) as due:
            async for number in due:
                if args.json:
                    out.write(json.dumps({"number": number, "national": national_form(number),
                                          "principal": principal}) + "\n")
                else:
                    out.write((national_form(number) if args.national else number) + "\n")
                count += 1
    print_problems(problems, stored=False)
    if args.quiet:
        return EXIT_ERROR if problems else EXIT_OK
    scope = (f"the numbers of {args.source}" if args.source else
             f"the numbers of campaign {args.campaign}" if args.campaign else "every number rpoguard knows")
    print(f"{count} number(s) for principal {principal} to submit to the RPO ({scope}: no valid answer of its "
          f"own, or one that expires within {args.within} day(s)) written to {args.output or 'standard output'}",
          file=sys.stderr)
    return EXIT_ERROR if problems else EXIT_OK


def register(commands: Subcommands) -> None:
    registry = group(commands, "registry", "answers from the Registro Pubblico delle Opposizioni (RPO)")
    p = command(registry, "import", StoreCommand(cmd_registry_import, creates_database=True),
                "import the RPO's answer for the numbers a principal submitted; each answer is valid 15 days "
                "(or the shorter [policy] rpo_validity_days) and serves only that principal's campaigns")
    p.add_argument("file", nargs="?", metavar="FILE",
                   help="CSV number,status[,registered_at]; status registered/not_registered (also 1/0, Y/N, "
                        "iscritto/non_iscritto)")
    p.add_argument("--submitted", metavar="FILE", help="the list you sent to the RPO (one number a line)")
    p.add_argument("--registered", metavar="FILE",
                   help="the RPO's list of registered numbers; every other submitted number is not registered")
    p.add_argument("--cleansed", metavar="FILE",
                   help="the RPO's cleaned list (the numbers that may be called); every other submitted number "
                        "is registered")
    p.add_argument("--principal", metavar="ID",
                   help="the principal (data controller) that consulted the RPO; required when more than one "
                        "principal exists")
    p.add_argument("--checked-at", required=True, type=options.time_arg, metavar="DATE",
                   help="when the RPO checked the list (a date alone means 00:00 Europe/Rome)")
    p.add_argument("--skip-invalid", action="store_true", help="import the good rows and report the bad ones "
                   "(default: a file with any bad row is rejected whole; never for a two-list answer)")
    options.json_option(p, "the import's summary (one object)")
    options.encoding_option(p)

    p = command(registry, "due", StoreCommand(cmd_registry_due),
                "write the numbers to submit to the RPO: no valid answer, or one that expires soon")
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("--principal", metavar="ID",
                       help="the principal whose answers are due (required when more than one principal exists)")
    scope.add_argument("--campaign", metavar="ID",
                       help="only the numbers of this campaign's calls and its principal's consents and contracts "
                            "(the campaign's principal)")
    p.add_argument("--within", type=options.non_negative_int, default=0, metavar="DAYS",
                   help="also numbers whose answer expires within DAYS days (default 0: already expired)")
    p.add_argument("--from", dest="source", metavar="FILE",
                   help="answer for the numbers of this list (one a line, or a CSV's number column) instead of "
                        "every number known")
    options.encoding_option(p)
    options.column_option(p)
    p.add_argument("-o", "--output", metavar="FILE",
                   help="the file to submit, one number a line (default: standard output; the summary goes to "
                        "standard error)")
    p.add_argument("--national", action="store_true", help="write 0612345678 instead of +390612345678")
    p.add_argument("--json", action="store_true",
                   help="one JSON object a number (JSON Lines): number (E.164), national, principal; with --check "
                        "one object a principal (status, principal, campaign, numbers, lacking, share, max_share, "
                        "within_days, as_of)")
    p.add_argument("--check", action="store_true",
                   help="write no numbers: one line a principal (every principal unless --principal or "
                        "--campaign) with how many of its numbers lack a valid answer now or within --within "
                        "days, OK or ALARM; exit 1 when any is ALARM (for cron and monitoring)")
    p.add_argument("--max-share", metavar="P",
                   help="with --check: ALARM only when more than P of the numbers lack one (0.05 or 5%%; "
                        "default 0: any number lacking one)")
