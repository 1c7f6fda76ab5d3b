"""dialplan audit: the routes that can reach a carrier without asking the gate (docs/bypass.md)."""

from __future__ import annotations

import argparse
import json

from rpoguard.bypass.ami import AmiSettingsError, AmiUnavailable, add_ami_options, ami_target
from rpoguard.bypass.dialplan_audit import AuditReport, DialplanError, audit, read_ami, read_conf
from rpoguard.bypass.match import TrunkPatterns
from rpoguard.cli.common import EXIT_BLOCK, EXIT_OK, OwnStoreCommand, Subcommands, UsageError, command, group
from rpoguard.config import Config

EXIT_FINDINGS = EXIT_BLOCK  # as `check` says BLOCK: something to act on


async def cmd_dialplan_audit(args: argparse.Namespace, config: Config) -> int:
    trunks = TrunkPatterns(config.watch.trunks)
    if not trunks:
        raise UsageError("no trunks to look for: set [watch] trunks in the config (channel-name patterns such as "
                         "\"PJSIP/carrier-*\")")
    try:
        if args.file:
            plan = read_conf(args.file)
        else:
            target = ami_target(config.ami, address=args.ami, user=args.ami_user, secret=args.ami_secret)
            plan = await read_ami(target, connect_timeout=config.ami.connect_timeout)
    except (DialplanError, AmiSettingsError, AmiUnavailable) as exc:
        raise UsageError(str(exc)) from None
    report = audit(plan, trunks)
    if args.json:
        print(json.dumps(report.as_dict(), ensure_ascii=False))
    else:
        _print(report, quiet=args.quiet)
    return EXIT_FINDINGS if report.findings else EXIT_OK


def _print(report: AuditReport, *, quiet: bool) -> None:
    for finding in report.findings:
        label = f"({finding.label})" if finding.label else ""
        where = f"{finding.where}: " if finding.where else ""
        place = f"{finding.extension},{finding.priority}{label}" if finding.extension else "switch"
        print(f"{where}[{finding.context}] {place}: {finding.line}\n  {finding.why}: {finding.text}")
        if finding.via:
            print(f"  reached past the gate from {finding.via}")
    if report.indirect and not quiet:
        print(f"note: {len(report.indirect)} Queue/FollowMe priorities ring members named outside the dialplan "
              "(queues.conf, followme.conf), not judged here; `watch` sees their calls. First: "
              f"{report.indirect[0]}")
    print(f"dialplan audit of {report.source}: {report.summary()}")


def register(commands: Subcommands) -> None:
    dialplan = group(commands, "dialplan", "the dialplan: routes that can reach a carrier without the gate")
    p = command(dialplan, "audit", OwnStoreCommand(cmd_dialplan_audit),
                "read the dialplan (extensions.conf, or a running Asterisk over AMI) and list every priority "
                "that dials a trunk ([watch] trunks) with no earlier GoSub(rpoguard-check,...) in its extension; "
                "exit 1 when there is one, 0 when none, 2 when the audit cannot run. Needs no database")
    p.add_argument("--file", metavar="EXTENSIONS_CONF",
                   help="read this file and its #include files instead of asking Asterisk over AMI")
    add_ami_options(p)
    p.add_argument("--json", action="store_true", help="print one JSON object: the counts and the findings")
