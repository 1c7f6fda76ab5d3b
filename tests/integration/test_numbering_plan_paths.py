"""The national numbering plan (tests/support/numbering_plan.py) through every door a number comes in by: each
importer (RPO answers in rows and in lists, directory, consents, contracts, refusals), `registry due
--from`, `scrub`, and the gate's own Gate.evaluate (with and without a trunk prefix).

tests/unit/test_numbering_plan.py proves normalize, normalize_fast and normalize_for_import row by row;
this proves that nothing between a file and the store reads a number differently: every valid row lands
as its E.164 number (a 2-million-row answer file over the same plan lands whole: bench_import.py
--numbering-plan), and every refused row is rejected with its own line number and reason.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rpoguard.audit import spreadsheet_safe
from rpoguard.config import Config
from rpoguard.constants import SOURCE_CLI
from rpoguard.db import open_store
from rpoguard.gate import CallRequest, Gate
from rpoguard.timeutil import parse_time
from support.aio import run_once
from support.numbering_plan import PLAN, PlanRow, refused_rows, valid_rows

Cli = Callable[..., Any]
CHECKED = "2026-11-20"
AT = "2026-11-24T11:00"

VALID = valid_rows()
# Rows an importer reads as a number at all: blank lines are no rows, and CSV cannot carry every junk text.
REFUSED = [r for r in refused_rows() if r.raw.strip()]
DISTINCT = sorted({r.e164 for r in VALID if r.e164})
CHUNK = 150


def ok(result: Any) -> str:
    code, out, err = result
    assert code == 0, (out[-2000:], err[-2000:])
    return str(out)


def rejected_lines(err: str) -> list[int]:
    return sorted(int(line.split("line ")[1].split(":")[0]) for line in err.splitlines() if "bad row: line " in line)


@pytest.fixture
def acme(run_cli: Cli) -> None:
    ok(run_cli("principal", "add", "acme", "--name", "ACME"))
    ok(run_cli("campaign", "add", "c", "--principal", "acme"))


def test_every_valid_row_lands_as_its_number_through_every_importer(
    run_cli: Cli, run_cli_at: Any, acme: None, write_file: Callable[..., Path], tmp_path: Path
) -> None:
    rows = len(VALID)
    out = ok(run_cli("registry", "import", write_file("answers.csv", "".join(f"{r.raw},0\n" for r in VALID)),
                     "--checked-at", CHECKED))
    assert f"{rows} row(s) read, {len(DISTINCT)} stored, 0 rejected" in out
    out = ok(run_cli("registry", "import", "--submitted", write_file("sub.txt", "".join(f"{r.raw}\n" for r in VALID)),
                     "--cleansed", write_file("clean.txt", "".join(f"{r.raw}\n" for r in VALID[::2])),
                     "--checked-at", "2026-11-21"))
    assert f"{len(DISTINCT)} stored, 0 rejected" in out
    out = ok(run_cli("directory", "import", write_file("dir.txt", "".join(f"{r.raw}\n" for r in VALID)),
                     "--listed-at", CHECKED))
    assert f"{rows} row(s) read, {len(DISTINCT)} stored, 0 rejected" in out
    out = ok(run_cli("consent", "import", write_file("consents.csv", "number,principal,given_at,evidence\n" + "".join(
        f"{r.raw},acme,2026-10-01,form-{i}\n" for i, r in enumerate(VALID)))))
    assert f"{rows} stored, 0 rejected" in out
    out = ok(run_cli("contract", "import", write_file("contracts.csv", "number,principal,start\n" + "".join(
        f"{r.raw},acme,2025-01-01\n" for r in VALID))))
    assert "0 rejected" in out and f"duplicates {rows - len(DISTINCT)}" in out
    out = ok(run_cli("optout", "import", write_file("optouts.csv", "number,at,principal\n" + "".join(
        # After AT, so that the scrub below still allows every number; not after the import (a fact).
        f"{r.raw},2026-11-25T10:00,acme\n" for r in VALID))))
    assert "0 rejected" in out

    # scrub reads every row as the number the table says, and finds what was stored under it.
    scrubbed = tmp_path / "scrub.csv"
    ok(run_cli("scrub", write_file("list.txt", "".join(f"{r.raw}\n" for r in VALID)), "--campaign", "c",
               "--at", AT, "-o", scrubbed))
    got = list(csv.DictReader(io.StringIO(scrubbed.read_text(encoding="utf-8"))))
    assert [(g["input"], g["number"]) for g in got] == [(spreadsheet_safe(r.raw), r.e164) for r in VALID]
    assert all(g["decision"] == "allow" for g in got), [g for g in got if g["decision"] != "allow"][:5]

    # registry due --from: every row names a number checked on the 21st, so none is due.
    due = tmp_path / "due.txt"
    # On a day those answers are still valid, whatever today is (libfaketime).
    ok(run_cli_at("2026-11-24T11:00", "registry", "due", "--from",
                  write_file("from.txt", "".join(f"{r.raw}\n" for r in VALID)), "-o", due))
    assert due.read_text() == ""


def test_every_refused_row_is_named_with_its_line_and_reason(
    run_cli: Cli, acme: None, write_file: Callable[..., Path], tmp_path: Path
) -> None:
    # Every refused row between two valid ones: the file is rejected whole, each refused line named (in
    # chunks, since the command lists at most 200 bad rows).
    good = VALID[0].raw
    for start in range(0, len(REFUSED), CHUNK):
        chunk = REFUSED[start:start + CHUNK]
        lines = [good, *[r.raw for r in chunk], good]
        expected = list(range(2, len(chunk) + 2))
        code, _, err = run_cli("registry", "import", write_file("answers.csv", "".join(f"{raw},0\n" for raw in lines)),
                               "--checked-at", CHECKED)
        assert code == 2 and rejected_lines(err) == expected, err[-3000:]
        code, _, err = run_cli("directory", "import", write_file("dir.txt", "".join(f"{raw}\n" for raw in lines)))
        assert code == 2 and rejected_lines(err) == expected
        code, _, err = run_cli("consent", "import", write_file(
            "consents.csv", "number,principal,given_at,evidence\n" + "".join(f"{raw},acme,2026-10-01,f\n"
                                                                             for raw in lines)))
        assert code == 2 and rejected_lines(err) == [n + 1 for n in expected]  # after the header line

    # The gate's answer for each, through scrub: blocked with the row's own reason code first.
    scrubbed = tmp_path / "scrub.csv"
    run_cli("scrub", write_file("list.txt", "".join(f"{r.raw}\n" for r in REFUSED)), "--campaign", "c", "--at", AT,
            "-o", scrubbed)
    got = list(csv.DictReader(io.StringIO(scrubbed.read_text(encoding="utf-8"))))
    by_input = {g["input"]: g for g in got}
    for row in REFUSED:
        key = spreadsheet_safe(row.raw.strip())
        if row.group == "junk" and key not in by_input:
            continue  # junk the CSV reader itself refuses (NUL bytes and the like) never reaches the gate
        result = by_input[key]
        assert (result["decision"], result["reasons"].split(",")[0]) == ("block", row.reason), (row, result)


@pytest.mark.parametrize("trunk", ["", "9"])
def test_the_gate_reads_every_row_as_the_table_says(db_path: Path, trunk: str) -> None:
    async def decide_all() -> list[tuple[PlanRow, Any]]:
        store = open_store(str(db_path))
        await store.open()
        try:
            await store.add_principal("acme", "ACME", [])
            await store.add_campaign("c", "acme", False, None, None)
            gate = Gate(store, Config(trunk_prefix=trunk))
            out = []
            for row in PLAN:
                call = CallRequest(raw_number=trunk + row.raw, campaign_id="c", caller_id=None, source=SOURCE_CLI)
                decision, facts = await gate.evaluate(call, parse_time(AT))
                out.append((row, (decision, facts)))
            return out
        finally:
            await store.close()

    for row, (decision, facts) in run_once(decide_all()):
        if row.reason is None:
            # A valid number: the gate looks it up as its E.164 form (and blocks it for want of an answer).
            assert (facts.number, decision.reasons[:1]) == (row.e164, ("rpo_not_checked",)), row
        else:
            assert decision.reasons[0] == row.reason, (row, decision.reasons)
