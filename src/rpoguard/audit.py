"""The decision log: every decision appended as evidence, hash-chained, verifiable and exportable.

Each row's hash covers its own fields and the previous row's hash, so changing, removing, inserting or
reordering a row breaks the chain from that point on. The store appends rows inside its write
transaction (it alone knows the previous hash); this module owns the hash, verification and export.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import re
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, fields
from typing import IO

from rpoguard.timeutil import from_us, iso

log = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """A decision to append; the store gives it a sequence number and its place in the chain."""

    decision_id: str
    ts_us: int
    number: str | None
    raw_number: str
    campaign_id: str | None
    principal_id: str | None
    caller_id: str | None
    decision: str
    reasons: str  # comma-separated reason codes, in rule order
    basis: str | None
    evidence: str  # canonical JSON
    source: str
    uniqueid: str | None
    channel: str | None
    # The call the decision was made for (the dialplan passes ${CHANNEL(linkedid)}); None when not passed.
    linkedid: str | None = None


@dataclass(frozen=True, slots=True)
class AuditRow:
    seq: int
    entry: AuditEntry
    prev_hash: str
    hash: str
    # The wall-clock moment the writer wrote the row (µs), beside the decision's own time (entry.ts_us).
    # Assigned by the store, like seq and prev_hash; None for rows written before schema 3 (audit v2).
    recorded_us: int | None = None


def canonical_evidence(evidence: dict[str, object]) -> str:
    return json.dumps(evidence, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


_ENTRY_FIELDS = tuple(field.name for field in fields(AuditEntry))


def chain_hash(seq: int, entry: AuditEntry, prev_hash: str, recorded_us: int | None = None) -> str:
    """SHA-256 over the previous hash, the sequence number, the moment the row was written and every
    field, in a fixed canonical form. A row written before the log kept that moment (recorded_us None)
    hashes exactly as it did then, so an upgraded log still verifies; on every later row the moment is
    covered like any field (removing it changes the hash too)."""
    # Every field is a str, an int or None, so reading them directly gives what dataclasses.asdict would
    # (and the same hashes) at a fraction of its cost, on every decision's commit (docs/performance.md).
    payload_fields = {"seq": seq, "prev": prev_hash, **{name: getattr(entry, name) for name in _ENTRY_FIELDS}}
    if entry.linkedid is None:
        # Rows from before the log kept the call's linkedid hash exactly as they did then.
        del payload_fields["linkedid"]
    if recorded_us is not None:
        payload_fields["recorded_us"] = recorded_us
    payload = json.dumps(payload_fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class ChainProblem:
    seq: int
    problem: str


@dataclass(frozen=True, slots=True)
class VerifyReport:
    rows: int
    problems: tuple[ChainProblem, ...]
    head_hash: str

    @property
    def intact(self) -> bool:
        return not self.problems


async def verify_chain(rows: AsyncIterable[AuditRow], max_problems: int = 100) -> VerifyReport:
    """Walk the log in sequence order and report every place where the chain does not hold."""
    problems: list[ChainProblem] = []
    expected_seq = 1
    prev_hash = GENESIS_HASH
    count = 0
    timed = False  # a row with its recording moment was seen: every later row has one too
    async for row in rows:
        count += 1
        if row.recorded_us is not None:
            timed = True
        elif timed:
            problems.append(ChainProblem(row.seq, "row has no recording moment, after rows that have one: since "
                                                  "the log keeps it, every row written has it"))
        if row.seq != expected_seq:
            what = "missing" if row.seq > expected_seq else "out of order or duplicated"
            problems.append(ChainProblem(row.seq, f"sequence jumps from {expected_seq - 1} to {row.seq}: "
                                                  f"rows {what}"))
        if row.prev_hash != prev_hash:
            problems.append(ChainProblem(row.seq, "previous-hash link does not match the row before: a row "
                                                  "was removed, inserted or reordered here"))
        if chain_hash(row.seq, row.entry, row.prev_hash, row.recorded_us) != row.hash:
            problems.append(ChainProblem(row.seq, "row content does not match its hash: the row was changed"))
        prev_hash = row.hash
        expected_seq = row.seq + 1
        if len(problems) >= max_problems:
            break
    return VerifyReport(count, tuple(problems), prev_hash)


# `time` is the moment the decision is for (the call); `recorded_at` the moment its row was written (empty
# for rows written before the log kept it).
EXPORT_FIELDS = (
    "seq", "decision_id", "time", "recorded_at", "number", "raw_number", "campaign_id", "principal_id",
    "caller_id", "decision", "reasons", "basis", "evidence", "source", "uniqueid", "channel", "prev_hash", "hash",
    # Added with schema 3 of the log: last, so that a reader of the older columns by position still works.
    "linkedid",
)


def export_record(row: AuditRow) -> dict[str, object]:
    entry = row.entry
    return {
        "seq": row.seq,
        "decision_id": entry.decision_id,
        "time": iso(from_us(entry.ts_us)),
        "recorded_at": iso(from_us(row.recorded_us)) if row.recorded_us is not None else None,
        "number": entry.number,
        "raw_number": entry.raw_number,
        "campaign_id": entry.campaign_id,
        "principal_id": entry.principal_id,
        "caller_id": entry.caller_id,
        "decision": entry.decision,
        "reasons": entry.reasons,
        "basis": entry.basis,
        "evidence": entry.evidence,
        "source": entry.source,
        "uniqueid": entry.uniqueid,
        "channel": entry.channel,
        "prev_hash": row.prev_hash,
        "hash": row.hash,
        "linkedid": entry.linkedid,
    }


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?[0-9]+")


def spreadsheet_safe(value: object) -> object:
    """Prefix a quote to text a spreadsheet would run as a formula (OWASP CSV injection). A plain signed
    number such as an E.164 '+39...' stays as it is: a spreadsheet reads it as a number, runs nothing."""
    if isinstance(value, str) and value.startswith(_FORMULA_START) and not _PLAIN_NUMBER.fullmatch(value):
        return "'" + value
    return value


async def export_rows(rows: AsyncIterator[AuditRow] | AsyncIterable[AuditRow], out: IO[str], fmt: str) -> int:
    """Write rows as CSV or JSON Lines; returns the count. JSON Lines keeps values exactly as stored."""
    count = 0
    if fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=EXPORT_FIELDS)
        writer.writeheader()
        async for row in rows:
            writer.writerow({k: spreadsheet_safe(v) for k, v in export_record(row).items()})
            count += 1
    elif fmt == "jsonl":
        async for row in rows:
            out.write(json.dumps(export_record(row), ensure_ascii=False) + "\n")
            count += 1
    else:
        raise ValueError(f"unknown export format {fmt!r}; use csv or jsonl")
    return count

