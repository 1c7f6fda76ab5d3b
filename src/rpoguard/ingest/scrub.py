"""Pre-scrub a campaign list: the gate's decision for every number, without placing or recording a call.

Scrub results are not recorded in the audit log: they are planning, not calls, and recording them would
count as attempts. Caller ID (rule 10) is not evaluated: the list does not say which line will call.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO

from rpoguard.audit import spreadsheet_safe
from rpoguard.constants import ALLOW, SOURCE_CLI
from rpoguard.db.store import RowProblem
from rpoguard.gate import CallRequest, Gate
from rpoguard.ingest.csvfile import read_rows
from rpoguard.ingest.registry import HEADER_WORDS

OUTPUT_FIELDS = ("line", "input", "number", "decision", "reasons", "basis")


@dataclass(slots=True)
class ScrubSummary:
    rows: int = 0
    allowed: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    problems: list[RowProblem] = field(default_factory=list)


def _inputs(path: str | Path, problems: list[RowProblem]) -> Iterator[tuple[int, str]]:
    for line, fields in read_rows(path, problems):
        if line == 1 and fields[0].lower() in HEADER_WORDS:
            continue
        yield line, fields[0]


async def scrub(gate: Gate, path: str | Path, campaign_id: str, at: datetime, out: IO[str]) -> ScrubSummary:
    summary = ScrubSummary()
    # The default "\r\n" terminator (RFC 4180) makes csv quote a cell with a bare CR, so no cell can
    # spill into a new row.
    writer = csv.writer(out)
    writer.writerow(OUTPUT_FIELDS)
    for line, raw in _inputs(path, summary.problems):
        call = CallRequest(raw_number=raw, campaign_id=campaign_id, caller_id=None, source=SOURCE_CLI)
        decision, facts = await gate.evaluate(call, at)
        summary.rows += 1
        if decision.decision == ALLOW:
            summary.allowed += 1
        summary.reasons.update(decision.reasons)
        writer.writerow([spreadsheet_safe(v) for v in (line, raw, facts.number or "", decision.decision,
                                                        ",".join(decision.reasons), decision.basis or "")])
    return summary
