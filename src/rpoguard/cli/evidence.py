"""evidence: everything rpoguard knows about one number, for the DPO."""

from __future__ import annotations

import argparse
import dataclasses
import json
from datetime import UTC, datetime

from rpoguard.cli import options
from rpoguard.cli.common import EXIT_OK, StoreCommand, Subcommands, UsageError, declare, describe_file
from rpoguard.config import Config
from rpoguard.db.store import EvidenceItem, Store
from rpoguard.timeutil import TimeFormatError, human, iso, parse_time


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
        print(f"{human(item.at)}  {_describe_evidence(_humanised(item))}")
    return EXIT_OK


def _humanised(item: EvidenceItem) -> EvidenceItem:
    """The item with its stored moments (ISO 8601 UTC, as in --json) shown as a person reads them."""
    return dataclasses.replace(item, detail={k: _human_text(v) if k.endswith("_at") else v
                                             for k, v in item.detail.items()})


def _human_text(value: object) -> object:
    if not isinstance(value, str) or not value.endswith("Z"):
        return value
    try:
        return human(parse_time(value))
    except TimeFormatError:
        return value


def _describe_evidence(item: EvidenceItem) -> str:
    """One evidence item as a line; a value that is absent is left out, never printed as None."""
    d = item.detail
    who = f" [{item.principal_id}]" if item.principal_id else ""
    if item.kind == "rpo_answer":
        status = "REGISTERED" if d["registered"] else "not registered"
        since = f" since {d['registered_at']}" if d.get("registered_at") else ""
        whose = (f" obtained by [{item.principal_id}]" if item.principal_id else
                 " of controller unknown (stored before answers had a principal: no decision uses it; import "
                 "it again with --principal)")
        return f"RPO answer{whose}: {status}{since} (result #{d['result_id']}, {_describe_import(d)})"
    if item.kind == "directory_listing":
        until = f" until {d['ended_at']}" if d.get("ended_at") else " (still listed)"
        return f"listed in the public directory{until} ({_describe_import(d)})"
    if item.kind == "directory_listing_ended":
        return (f"no longer listed in the public directory: "
                f"{_describe_import(d, 'ended_by_import_id', 'ended_by_files')} replaced the listings without it"
                f"{', imported ' + str(d['ended_by_imported_at']) if d.get('ended_by_imported_at') else ''} "
                f"(listed since {_describe_import(d)})")
    if item.kind == "consent":
        extra = "".join(f", {k.replace('_', ' ')} {d[k]}" for k in ("expires_at", "revoked_at") if d.get(k))
        auto = ", covers automated calls" if d["automated"] else ""
        purpose = f", purpose {d['purpose']}" if d.get("purpose") else ""
        source = f" ({_describe_import(d)})" if d.get("import_id") is not None else ""
        return f"consent #{d['consent_id']}{who}: evidence {d['evidence']}{purpose}{auto}{extra}{source}"
    if item.kind == "contract":
        return f"contract #{d['contract_id']}{who}: from {d['start']}{' to ' + d['end'] if d['end'] else ' (running)'}"
    if item.kind in ("consent_revoked", "consent_revoked_again", "contract_ended", "contract_end_corrected"):
        return _describe_note(item)
    if item.kind == "optout":
        reference = f", reference {d['reference']}" if d.get("reference") else ""
        return f"refusal #{d['optout_id']} for {d['covers']} (source {d['source']}{reference})"
    reasons = ",".join(d["reasons"]) or "-"
    caller = f"caller ID {d['caller_id']}" if d.get("caller_id") is not None else "caller ID not checked"
    uniqueid = f" {d['uniqueid']}" if d.get("uniqueid") else ""
    recorded = f", recorded {d['recorded_at']}" if d.get("recorded_at") else ""
    return (f"decision {str(d['decision']).upper()}{who} campaign {d['campaign_id']}: reasons {reasons}, "
            f"basis {d['basis'] or '-'}, {caller}, {d['source']}{uniqueid} "
            f"(log row {d['seq']}{recorded}, id {d['decision_id']})")


def _describe_import(d: dict[str, object], id_key: str = "import_id", files_key: str = "files") -> str:
    """`import #N` and its input files, each with its own name, size and SHA-256."""
    files = d.get(files_key)
    described = "; ".join(
        describe_file(str(f["role"]), str(f["name"]), f.get("size"), f.get("sha256")) for f in files
    ) if isinstance(files, list) else ""
    return f"import #{d.get(id_key)}{': ' + described if described else ''}"


def _describe_note(item: EvidenceItem) -> str:
    """A note recorded beside a consent or a contract (their records are never changed)."""
    d = item.detail
    who = f" [{item.principal_id}]" if item.principal_id else ""
    by = (f"by {_describe_import(d)}" if d.get("import_id") is not None else f"by the command line ({d['source']})")
    if item.kind == "consent_revoked":
        return f"consent #{d['consent_id']}{who} revoked from {d['revoked_at']} (recorded {by})"
    if item.kind == "consent_revoked_again":
        effect = (f"it names an earlier moment, so decisions count the consent revoked from {d['revoked_at']}"
                  if d.get("earlier") else "the first revocation stands")
        return (f"consent #{d['consent_id']}{who}: revocation from {d['revoked_at']} noted, already revoked from "
                f"{d['first_revoked_at']}; {effect} (recorded {by})")
    if item.kind == "contract_ended":
        return f"contract #{d['contract_id']}{who}: end {d['end']} recorded, it was running (recorded {by})"
    asked = f"end {d['end']}" if d.get("end") else "no end"
    effect = ("it is earlier, so decisions use it" if d.get("earlier") else
              "not used: an end is never moved later or removed")
    return (f"contract #{d['contract_id']}{who}: {asked} noted, already ended {d['recorded_end']}; {effect} "
            f"(recorded {by})")


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
