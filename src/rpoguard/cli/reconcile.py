"""reconcile: prove from Asterisk's own records (CDR or CEL) that every call that reached a carrier had its
ALLOW decision (docs/bypass.md "## reconcile"). Exit 0: every trunk leg covered; 1: a bypass, or a record
that cannot be read; 2: a usage or input error."""

from __future__ import annotations

import argparse
import json
import sys
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from rpoguard.bypass.match import SECOND_US, Bypass, TrunkPatterns
from rpoguard.bypass.reconcile import MAX_UNREADABLE_KEPT, NotThatFormat, Period, Reconciler, Summary
from rpoguard.bypass.records import FORMAT_CDR, FORMAT_CEL, NO_UNIQUEID, Unreadable
from rpoguard.cli.common import EXIT_BLOCK, EXIT_OK, StoreCommand, Subcommands, UsageError, declare, error
from rpoguard.cli.options import time_arg
from rpoguard.config import Config
from rpoguard.constants import BYPASS_TEXT, FINDING_BYPASS, TIMEZONE
from rpoguard.db.store import Store
from rpoguard.timeutil import from_us, human_us, iso, to_us


def timezone_arg(text: str) -> ZoneInfo:
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a time zone (e.g. Europe/Rome, or UTC for a PBX "
                                         "with usegmtime = yes)") from None


def _bypass_record(bypass: Bypass, line: int) -> dict[str, object]:
    leg = bypass.leg
    return {"kind": FINDING_BYPASS, "line": line, "at": iso(from_us(leg.at_us)), "channel": leg.channel,
            "dialled": leg.dialled, "number": leg.number, "why": bypass.why, "text": BYPASS_TEXT[bypass.why],
            "decision_id": bypass.decision_id, "caller_uniqueid": leg.caller_uniqueid, "linkedid": leg.linkedid,
            "uniqueid": leg.uniqueid}


def _print_bypass(bypass: Bypass, line: int) -> None:
    leg = bypass.leg
    nearest = f"; nearest decision {bypass.decision_id}" if bypass.decision_id else ""
    print(f"BYPASS {human_us(leg.at_us)}  {leg.channel}  {leg.number or leg.dialled or '(number unknown)'}  "
          f"{bypass.why}: {BYPASS_TEXT[bypass.why]}{nearest} (line {line})")


def _summary_record(s: Summary) -> dict[str, object]:
    return {"kind": "summary", "file": s.path, "format": s.fmt, "records": s.records, "trunk_legs": s.trunk_legs,
            "covered": s.covered, "bypasses": s.bypass_count, "bypasses_by_why": dict(sorted(s.bypasses.items())),
            "not_trunk_legs": s.not_legs, "outside_period": s.outside, "repeated_rows": s.repeated,
            "unreadable": s.unreadable,
            "unreadable_lines": [{"line": u.line, "error": u.reason} for u in s.unreadable_kept],
            "without_uniqueid": s.without_uniqueid, "proven": s.proven}


def _print_summary(s: Summary) -> None:
    whys = ", ".join(f"{why} {count}" for why, count in sorted(s.bypasses.items()))
    print(f"{s.path} ({s.fmt.upper()}): {s.records} record(s) read; {s.trunk_legs} trunk leg(s): {s.covered} "
          f"covered, {s.bypass_count} bypass(es){' (' + whys + ')' if whys else ''}\n  {s.not_legs} not trunk "
          f"legs; {s.outside} trunk leg(s) outside --from/--to; {s.unreadable} unreadable"
          f"{' (lines ' + ', '.join(str(u.line) for u in s.unreadable_kept) + ')' if s.unreadable else ''}"
          f"{' ...' if s.unreadable > MAX_UNREADABLE_KEPT else ''}")
    if s.repeated:
        print(f"  {s.repeated} row(s) repeat a trunk leg already matched (a forked CDR), not counted again")
    if s.proven:
        print("every trunk leg had its ALLOW decision")


async def cmd_reconcile(args: argparse.Namespace, store: Store, config: Config) -> int:
    patterns = TrunkPatterns(config.watch.trunks)
    if not patterns:
        raise UsageError("no trunks to check: set [watch] trunks in the configuration file (channel-name "
                         "patterns such as \"PJSIP/carrier-*\")")
    fmt, path = (FORMAT_CDR, args.cdr) if args.cdr is not None else (FORMAT_CEL, args.cel)
    period = Period(to_us(args.start) if args.start else None, to_us(args.end) if args.end else None)
    if period.start_us is not None and period.end_us is not None and period.end_us <= period.start_us:
        raise UsageError("--to must be later than --from")
    reconciler = Reconciler(store, patterns, max_age_us=round(config.watch.max_age * SECOND_US),
                            skew_us=round(config.watch.clock_skew * SECOND_US), zone=args.timezone,
                            trunk_prefix=config.trunk_prefix, period=period)
    shown = 0

    def on_bypass(bypass: Bypass, line: int) -> None:
        if args.json:
            sys.stdout.write(json.dumps(_bypass_record(bypass, line), ensure_ascii=False) + "\n")
        else:
            _print_bypass(bypass, line)

    def on_unreadable(item: Unreadable) -> None:
        nonlocal shown
        if args.json or shown >= MAX_UNREADABLE_KEPT:
            return
        shown += 1
        print(f"UNREADABLE line {item.line}: {item.reason}")

    try:
        summary = await reconciler.run(path, fmt, on_bypass, on_unreadable)
    except NotThatFormat as exc:
        raise UsageError(str(exc)) from None
    if summary.without_uniqueid:
        error(f"warning: {summary.without_uniqueid} trunk leg(s) in {path}: {NO_UNIQUEID}")
    if args.json:
        sys.stdout.write(json.dumps(_summary_record(summary), ensure_ascii=False) + "\n")
    elif not args.quiet or not summary.proven:
        _print_summary(summary)
    return EXIT_OK if summary.proven else EXIT_BLOCK


def register(commands: Subcommands) -> None:
    text = "prove from Asterisk's CDR or CEL file that every call that reached a carrier had its ALLOW decision"
    p = commands.add_parser(
        "reconcile", help=text,
        description=text[0].upper() + text[1:] + ". A trunk leg is a channel matching [watch] trunks; it is "
                    "covered by an ALLOW for the same call and number made shortly before it, used once. Prints "
                    "each leg not covered and a summary. Exit 0: every trunk leg covered; 1: a bypass or an "
                    "unreadable record (it may be a trunk leg); 2: a usage or input error. Reads only.")
    declare(p, StoreCommand(cmd_reconcile))
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--cdr", metavar="FILE", help="cdr_csv's Master.csv (cdr.conf [csv] loguniqueid = yes; "
                                                      "newcdrcolumns = yes adds the call's linkedid)")
    source.add_argument("--cel", metavar="FILE", help="cel_custom's Master.csv in the layout of Asterisk's sample "
                                                      "cel_custom.conf (cel.conf: events CHAN_START, APP_START; "
                                                      "apps = dial)")
    p.add_argument("--from", dest="start", type=time_arg, metavar="TIME",
                   help="only trunk legs that began at or after TIME (ISO 8601; no offset: Europe/Rome)")
    p.add_argument("--to", dest="end", type=time_arg, metavar="TIME", help="only trunk legs that began before TIME")
    p.add_argument("--timezone", type=timezone_arg, default=ZoneInfo(TIMEZONE), metavar="TZ",
                   help=f"the zone the PBX wrote its times in (default {TIMEZONE}; UTC with cdr.conf usegmtime "
                        "= yes)")
    p.add_argument("--json", action="store_true", help="JSON Lines: one object a bypass, then one summary")
