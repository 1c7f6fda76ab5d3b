"""An evidence item in one line of English, as `rpoguard evidence` prints it and the console's exports carry
it: a value that is absent is left out, never printed as None."""

from __future__ import annotations

import dataclasses

from rpoguard.db.store import FILE_ONLY, EvidenceItem
from rpoguard.timeutil import TimeFormatError, human, parse_time


def describe(item: EvidenceItem) -> str:
    """The item as a person reads it: its stored moments in Europe/Rome."""
    return describe_evidence(humanised(item))


def describe_file(role: str, name: str, size: int | None, sha256: str | None) -> str:
    """One input file of an import: its role (for a two-list answer), name, size and SHA-256, each only when
    known (an import stored before files were kept one by one may lack a size)."""
    parts = [f"{'' if role == FILE_ONLY else role + ' '}file {name}"]
    if size is not None:
        parts.append(f"{size} bytes")
    if sha256:
        parts.append(f"sha256 {sha256}")
    return ", ".join(parts)



def humanised(item: EvidenceItem) -> EvidenceItem:
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


def describe_evidence(item: EvidenceItem) -> str:
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
