"""check and scrub: deciding calls from the command line, one (recorded unless a simulation) or a list."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime

from rpoguard.cli import options
from rpoguard.cli.common import (
    EXIT_BLOCK,
    EXIT_ERROR,
    EXIT_OK,
    StoreCommand,
    Subcommands,
    UsageError,
    declare,
    output,
    print_problems,
)
from rpoguard.cli.progress import ProgressDisplay, on_terminal
from rpoguard.config import Config
from rpoguard.constants import ALLOW, SOURCE_CLI, reason_text
from rpoguard.db.store import Store
from rpoguard.gate import CallRequest, Gate, Verdict
from rpoguard.ingest.scrub import scrub
from rpoguard.timeutil import human, iso


def _check_json(verdict: Verdict, call: CallRequest, at: datetime, recorded: bool, principal: str | None,
                evidence: dict[str, object], validity_days: int) -> dict[str, object]:
    return {
        "decision": verdict.decision,
        "reasons": list(verdict.reasons),
        "basis": verdict.basis,
        "number": verdict.number,
        "campaign": call.campaign_id,
        "principal": principal,
        "decision_id": verdict.decision_id,
        "recorded": recorded,
        "at": iso(at),
        "caller_id_checked": call.caller_id is not None,
        "explanations": {code: reason_text(code, validity_days) for code in verdict.reasons},
        "evidence": evidence,
    }


async def cmd_check(args: argparse.Namespace, store: Store, config: Config) -> int:
    gate = Gate(store, config)
    # A recorded decision is always for the moment it is made: with --at the check is a simulation, never
    # recorded and never counted in an attempt cap (a decision dated another day would be false evidence,
    # and one dated ahead would use up tomorrow's attempts).
    simulated = args.at is not None
    at = args.at or datetime.now(UTC)
    call = CallRequest(raw_number=args.number, campaign_id=args.campaign, caller_id=args.caller_id,
                       source=SOURCE_CLI)
    # The gate's own path, as FastAGI and ARI take it; a failure to decide is reported to the operator
    # (exit 2) rather than answered with engine_error as a PBX must be.
    pending = await gate.begin(call, at, record=not (args.dry_run or simulated), block_on_error=False)
    verdict = await pending.final()
    decision, facts = pending.decision, pending.facts
    assert decision is not None and facts is not None  # a real Gate always says what it evaluated
    principal = facts.campaign.principal_id if facts.campaign else None
    recorded = verdict.decision_id is not None
    if args.json:
        print(json.dumps(_check_json(verdict, call, at, recorded, principal, decision.evidence,
                                      config.rpo_validity_days), ensure_ascii=False))
    else:
        _print_check(verdict, call, at, recorded, principal, simulated, config.rpo_validity_days)
    return EXIT_OK if verdict.decision == ALLOW else EXIT_BLOCK


def _print_check(verdict: Verdict, call: CallRequest, at: datetime, recorded: bool, principal: str | None,
                 simulated: bool, validity_days: int) -> None:
    word = "ALLOW" if verdict.decision == ALLOW else "BLOCK"
    print(f"{word} {verdict.number or call.raw_number!s} for campaign {call.campaign_id}"
          f"{' (principal ' + principal + ')' if principal else ''} at {human(at)}")
    if verdict.basis:
        print(f"  basis: {verdict.basis}")
    for code in verdict.reasons:
        print(f"  {code}: {reason_text(code, validity_days)}")
    if call.caller_id is None:
        print("  caller ID not checked (give --caller-id to check rule 10, as the gate always does)")
    if recorded:
        print(f"  decision {verdict.decision_id} recorded in the audit log")
    elif simulated:
        print(f"  simulation as of {human(at)}: not recorded")
    else:
        print("  not recorded (dry run)")


async def cmd_scrub(args: argparse.Namespace, store: Store, config: Config) -> int:
    if await store.get_campaign(args.campaign) is None:
        # Before any row: every row would only say unknown_campaign.
        raise UsageError(f"campaign {args.campaign!r} does not exist; add it with 'rpoguard campaign add'")
    gate = Gate(store, config)
    at = args.at or datetime.now(UTC)
    # No progress while the results stream onto the same screen: the bar would garble them.
    hidden = args.quiet or (args.output is None and on_terminal(sys.stdout))
    with output(args.output) as out, ProgressDisplay("scrubbing", [args.file], hidden):
        summary = await scrub(gate, args.file, args.campaign, at, out, json_lines=args.json,
                              encoding=args.encoding, column=args.column)
    print_problems(summary.problems, stored=False)
    if args.quiet:
        return EXIT_ERROR if summary.problems else EXIT_OK
    reasons = ", ".join(f"{code} {n}" for code, n in summary.reasons.most_common())
    unread = f"; {len(summary.problems)} unreadable row(s) listed above" if summary.problems else ""
    if summary.column is not None and summary.column.columns > 1:
        print(f"scrub: numbers read from {summary.column.describe()}", file=sys.stderr)
    print(f"scrub for campaign {args.campaign} at {human(at)}: {summary.rows} number(s), "
          f"{summary.allowed} allowed, {summary.rows - summary.allowed} blocked"
          f"{' (' + reasons + ')' if reasons else ''}; caller ID not checked; nothing recorded{unread}",
          file=sys.stderr)
    return EXIT_ERROR if summary.problems else EXIT_OK


def register(commands: Subcommands) -> None:
    p = commands.add_parser("check", help="decide one call now and record the decision (--at: a simulation)",
                            description="Decide one call as the gate would, now, and record the decision in the "
                                        "audit log (unless --dry-run). With --at it is a simulation for that "
                                        "moment: never recorded, never counted in an attempt cap. Exit code 0 "
                                        "ALLOW, 1 BLOCK, 2 error.")
    declare(p, StoreCommand(cmd_check))
    p.add_argument("number", metavar="NUMBER")
    p.add_argument("--campaign", required=True, metavar="ID")
    p.add_argument("--at", type=options.time_arg, metavar="TIME",
                   help="decide as of this moment instead of now: a simulation, never recorded")
    p.add_argument("--caller-id", metavar="NUMBER",
                   help="the caller ID the call would present (rule 10 is checked only when given)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--dry-run", action="store_true", help="do not record the decision in the audit log")

    p = commands.add_parser("scrub", help="pre-check a campaign list; writes a CSV with every decision",
                            description="Decide every number of a list for a campaign, without recording them.")
    declare(p, StoreCommand(cmd_scrub))
    p.add_argument("file", metavar="FILE", help="one number a line, or a CSV (, ; or tab) with a number column")
    p.add_argument("--campaign", required=True, metavar="ID")
    p.add_argument("--at", type=options.time_arg, metavar="TIME", help="decide for this time instead of now")
    p.add_argument("-o", "--output", metavar="OUT.csv", help="write the results here (default: standard output)")
    p.add_argument("--json", action="store_true",
                   help="one JSON object a number (JSON Lines: line, input, number, decision, reasons, basis, "
                        "campaign, at) instead of CSV")
    options.encoding_option(p)
    options.column_option(p)
