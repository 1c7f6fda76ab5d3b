"""audit verify|anchor|export: the decision log."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys

from rpoguard.anchor import (
    DEFAULT_LOG_INTERVAL,
    AnchorError,
    AnchorReport,
    AnchorWriter,
    load_key,
    report_lines,
    verify_anchored,
)
from rpoguard.audit import VerifyReport, export_rows
from rpoguard.cli import options
from rpoguard.cli.common import EXIT_BLOCK, EXIT_OK, StoreCommand, Subcommands, UsageError, command, group, output
from rpoguard.config import Config
from rpoguard.db.store import Store
from rpoguard.timeutil import to_us


def _anchor_options(args: argparse.Namespace, config: Config) -> tuple[str | None, bytes | None]:
    """The anchor file and key: the options, else the configuration ([audit])."""
    path = args.anchors or config.audit.anchor_file
    # The configured key also for another file: an off-machine copy is signed with the same key.
    key_file = args.anchor_key or config.audit.anchor_key_file
    if key_file and not path:
        raise UsageError("--anchor-key checks the lines of an anchor file: give --anchors FILE too")
    return path, load_key(key_file) if key_file else None


async def cmd_audit_verify(args: argparse.Namespace, store: Store, config: Config) -> int:
    path, key = _anchor_options(args, config)
    try:
        async with contextlib.aclosing(store.audit_rows()) as rows:
            chain, anchors = await verify_anchored(rows, path, key)
    except AnchorError as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        print(json.dumps(_verify_json(chain, anchors), ensure_ascii=False))
    else:
        for line in report_lines(chain, anchors):
            print(line)
    return EXIT_OK if chain.intact and (anchors is None or anchors.intact) else EXIT_BLOCK


def _verify_json(chain: VerifyReport, anchors: AnchorReport | None) -> dict[str, object]:
    """`audit verify --json`: the chain walk and, when an anchor file was checked, what it proved."""
    anchor_part: dict[str, object] | None = None
    if anchors is not None:
        last = anchors.last
        anchor_part = {
            "file": anchors.path,
            "intact": anchors.intact,
            "lines": anchors.lines,
            "matched": anchors.matched,
            "hmac_checked": anchors.keyed,
            "unchecked_hmacs": anchors.unchecked_macs,
            "last": {"line": last.line, "row": last.seq, "hash": last.hash, "at": last.at} if last else None,
            # Rows after the last anchor: covered by the hash chain only.
            "unanchored_rows": anchors.unanchored,
            "complete": anchors.log_end is not None,
            "problems": [{"line": p.line or None, "row": p.seq, "problem": p.problem} for p in anchors.problems],
        }
    return {
        "intact": chain.intact and (anchors is None or anchors.intact),
        "rows": chain.rows,
        "head": chain.head_hash,
        "problems": [{"row": p.seq, "problem": p.problem} for p in chain.problems],
        # null: no anchor file was checked, so rows removed from the end or a rewritten chain cannot show.
        "anchors": anchor_part,
    }


async def cmd_audit_anchor(args: argparse.Namespace, store: Store, config: Config) -> int:
    path, key = _anchor_options(args, config)
    if not path:
        raise UsageError("no anchor file: give --anchors FILE or set [audit] anchor_file")
    # Anchoring a log that does not verify would vouch for the tampering.
    try:
        async with contextlib.aclosing(store.audit_rows()) as rows:
            chain, anchors = await verify_anchored(rows, path, key, missing_ok=True)
    except AnchorError as exc:
        raise UsageError(str(exc)) from None
    if not chain.intact or (anchors is not None and not anchors.intact):
        for line in report_lines(chain, anchors):
            print(line)
        print(f"not anchored: the log does not verify against {path}")
        return EXIT_BLOCK
    if chain.rows == 0:
        print("the audit log is empty: nothing to anchor")
        return EXIT_OK
    # This command's anchor writer, so that the head also goes to the system log like the gate's.
    writer = AnchorWriter(path, key, DEFAULT_LOG_INTERVAL)
    try:
        written = writer.append(chain.rows, chain.head_hash)
    except OSError as exc:
        raise UsageError(f"cannot append to anchor file {path}: {exc}") from None
    writer.log_head(chain.rows, chain.head_hash)
    print(f"{'anchored' if written else 'already anchored (by this or a later row)'}: row {chain.rows} "
          f"head {chain.head_hash} in {path}{' with HMAC' if key else ''}")
    return EXIT_OK


async def cmd_audit_export(args: argparse.Namespace, store: Store, config: Config) -> int:
    start = to_us(args.since) if args.since else None
    end = to_us(args.until) if args.until else None
    with output(args.output) as out:
        # Closed here, before the store: a reader that went away must not leave the query half read.
        async with contextlib.aclosing(store.audit_rows(start, end)) as rows:
            count = await export_rows(rows, out, args.format)
    if args.output and not args.quiet:
        print(f"{count} decision(s) written to {args.output}", file=sys.stderr)
    return EXIT_OK


def register(commands: Subcommands) -> None:
    audit = group(commands, "audit", "the decision log: verify its hash chain, export it")
    p = command(audit, "verify", StoreCommand(cmd_audit_verify),
                "check that no decision was changed, removed, inserted or reordered (exit 1 if so)")
    p.description = (
        "Check that no decision was changed, removed, inserted or reordered: exit 0 intact, 1 if not. The hash "
        "chain alone cannot show rows removed from the end, or a chain rewritten from some row on with every "
        "hash recomputed; the anchor file can. Every anchor line must be well formed, carry a valid HMAC "
        "(with a key), come after the line before it, name a row the log still has, with the hash the log "
        "has for it. An auditor uses a copy of the anchor file taken from where the gate's users cannot "
        "rewrite it, and compares the head printed with the last 'audit chain head' line in the system log "
        "(journalctl -u rpoguard). README: 'What an auditor checks'.")
    p.add_argument("--anchors", metavar="FILE",
                   help="the anchor file to check the log against (default: [audit] anchor_file)")
    p.add_argument("--anchor-key", metavar="FILE",
                   help="the key file its lines are signed with (default: [audit] anchor_key_file); "
                        "without it, forged lines cannot be told apart")
    options.json_option(p, "the result (one object: intact, rows, head, problems, anchors)")
    p = command(audit, "anchor", StoreCommand(cmd_audit_anchor),
                "verify the log, then append its current head to the anchor file (once after enabling "
                "anchors on an existing log, or from cron to a second anchor file kept elsewhere)")
    p.add_argument("--anchors", metavar="FILE", help="the anchor file (default: [audit] anchor_file)")
    p.add_argument("--anchor-key", metavar="FILE", help="sign the line with this key (default: [audit] "
                                                        "anchor_key_file)")
    p = command(audit, "export", StoreCommand(cmd_audit_export), "write decisions as CSV or JSON Lines")
    p.add_argument("--from", dest="since", type=options.time_arg, metavar="TIME", help="from this time (inclusive)")
    p.add_argument("--to", dest="until", type=options.time_arg, metavar="TIME", help="up to this time (exclusive)")
    p.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    p.add_argument("-o", "--output", metavar="FILE", help="default: standard output")
