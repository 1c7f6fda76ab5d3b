"""findings list: what the watcher stored (docs/bypass.md): calls that reached a carrier without an ALLOW for
them, and the periods nobody watched. Read-only: it never creates the database."""

from __future__ import annotations

import argparse

from rpoguard.cli import options
from rpoguard.cli.common import StoreCommand, Subcommands, group
from rpoguard.cli.listing import list_command, listing
from rpoguard.config import Config
from rpoguard.constants import BYPASS_TEXT, FINDING_BYPASS, FINDING_NOT_WATCHED
from rpoguard.db.store import Store, StoredFinding
from rpoguard.timeutil import from_us, human_us, iso, to_us

KINDS = (FINDING_BYPASS, FINDING_NOT_WATCHED)


def _iso_us(value: int | None) -> str | None:
    return iso(from_us(value)) if value is not None else None


def _detail(finding: StoredFinding) -> str:
    """A period not watched always shows its bounds (from the stored moments, which are what counts); a detail
    that already states them, as watch writes it, is shown as it is. Open: watching has not resumed."""
    if finding.kind != FINDING_NOT_WATCHED:
        return finding.detail
    start = human_us(finding.at_us)
    end = human_us(finding.until_us) if finding.until_us is not None else None
    if start in finding.detail and (end is None or end in finding.detail):
        return finding.detail
    return f"from {start} until {end or 'not closed'}: {finding.detail}"


def _number(finding: StoredFinding) -> str | None:
    """E.164; when it could not be read, what Asterisk showed of it (the operator needs something to look up)."""
    if finding.number is None and finding.dialled:
        return f"dialled {finding.dialled}"
    return finding.number


def _hung_up(finding: StoredFinding) -> str | None:
    if finding.kind == FINDING_NOT_WATCHED:
        return None  # nothing to hang up
    return "yes" if finding.hung_up else "no"


def _record(f: StoredFinding) -> dict[str, object]:
    return {"id": f.id, "kind": f.kind, "found_at": _iso_us(f.found_us), "at": _iso_us(f.at_us),
            "until": _iso_us(f.until_us), "why": f.why, "why_text": BYPASS_TEXT.get(f.why) if f.why else None,
            "channel": f.channel, "number": f.number, "dialled": f.dialled, "uniqueid": f.uniqueid,
            "linkedid": f.linkedid, "decision_id": f.decision_id, "hung_up": f.hung_up, "detail": f.detail,
            "source": f.source}


async def cmd_findings_list(args: argparse.Namespace, store: Store, config: Config) -> int:
    rows = store.list_findings(since_us=to_us(args.since) if args.since is not None else None, kind=args.kind,
                               limit=args.limit)
    return await listing(args, rows, "finding", (
        ("ID", lambda f: f.id), ("FOUND", lambda f: human_us(f.found_us)), ("AT", lambda f: human_us(f.at_us)),
        ("KIND", lambda f: f.kind), ("WHY", lambda f: f.why), ("CHANNEL", lambda f: f.channel),
        ("NUMBER", _number), ("DECISION", lambda f: f.decision_id),
        ("HUNG UP", _hung_up), ("DETAIL", _detail),
    ), _record)


def register(commands: Subcommands) -> None:
    findings = group(commands, "findings", "what the bypass watcher found: calls that reached a carrier without "
                                           "an ALLOW for them, and the periods it could not watch")
    p = list_command(findings, StoreCommand(cmd_findings_list),
                     "list the findings stored, in the order they were found")
    p.add_argument("--since", type=options.time_arg, metavar="TIME",
                   help="only the calls that began at or after TIME, and the unwatched periods not ended by then")
    p.add_argument("--kind", choices=KINDS,
                   help="only bypasses (calls that reached a carrier uncovered) or not_watched periods")
