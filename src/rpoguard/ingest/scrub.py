"""Pre-scrub a campaign list: the gate's decision for every number, without placing or recording a call.

Scrub results are not recorded in the audit log: they are planning, not calls, and recording them would
count as attempts. Caller ID (rule 10) is not evaluated: the list does not say which line will call.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO

from rpoguard.audit import spreadsheet_safe
from rpoguard.constants import ALLOW, SOURCE_CLI
from rpoguard.db.store import RowProblem
from rpoguard.gate import CallRequest, Gate
from rpoguard.ingest.csvfile import DEFAULT_ENCODING
from rpoguard.ingest.numberlist import NumberColumn, find_number_column, numbered_rows
from rpoguard.policy import Decision
from rpoguard.timeutil import iso

OUTPUT_FIELDS = ("line", "input", "number", "decision", "reasons", "basis")


@dataclass(slots=True)
class ScrubSummary:
    rows: int = 0
    allowed: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    problems: list[RowProblem] = field(default_factory=list)
    column: NumberColumn | None = None


def _json_lines(out: IO[str], campaign_id: str, at: datetime) -> Callable[[int, str, str | None, Decision], None]:
    """One JSON object a number (JSON Lines), with the same fields as the CSV and the decision's context."""
    moment = iso(at)

    def write(line: int, raw: str, number: str | None, decision: Decision) -> None:
        out.write(json.dumps({"line": line, "input": raw, "number": number, "decision": decision.decision,
                              "reasons": list(decision.reasons), "basis": decision.basis, "campaign": campaign_id,
                              "at": moment}, ensure_ascii=False) + "\n")

    return write


def _csv_rows(out: IO[str]) -> Callable[[int, str, str | None, Decision], None]:
    # The default "\r\n" terminator (RFC 4180) makes csv quote a cell with a bare CR, so no cell can
    # spill into a new row.
    writer = csv.writer(out)
    writer.writerow(OUTPUT_FIELDS)

    def write(line: int, raw: str, number: str | None, decision: Decision) -> None:
        writer.writerow([spreadsheet_safe(v) for v in (line, raw, number or "", decision.decision,
                                                        ",".join(decision.reasons), decision.basis or "")])

    return write


async def scrub(gate: Gate, path: str | Path, campaign_id: str, at: datetime, out: IO[str], *,
                json_lines: bool = False, encoding: str = DEFAULT_ENCODING,
                column: str | None = None) -> ScrubSummary:
    """Every row of the list decided for the campaign; the output names each row by its line and the input
    as written. `column`: --column NAME|N (default: found from the header or the rows, numberlist.py)."""
    summary = ScrubSummary()
    # Before the header is written: a file whose number column cannot be told leaves no output at all.
    summary.column = where = find_number_column(path, encoding, column)
    write = _json_lines(out, campaign_id, at) if json_lines else _csv_rows(out)
    # An empty number cell is answered too (invalid_number), so every data row has its line in the output.
    for line, raw in numbered_rows(path, summary.problems, where, encoding, empty_is_problem=False):
        call = CallRequest(raw_number=raw, campaign_id=campaign_id, caller_id=None, source=SOURCE_CLI)
        decision, facts = await gate.evaluate(call, at)
        summary.rows += 1
        if decision.decision == ALLOW:
            summary.allowed += 1
        summary.reasons.update(decision.reasons)
        write(line, raw, facts.number, decision)
    return summary
