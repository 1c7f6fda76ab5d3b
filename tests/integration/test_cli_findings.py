"""`rpoguard findings list` through the real console script, on SQLite and PostgreSQL: the findings the watcher
stored (through the Store API here), as a table in Rome's time and as JSON Lines, filtered by time and kind,
limited; an empty store says so, and a missing database is an error that creates nothing."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rpoguard.constants import (
    BYPASS_DECISION_USED,
    BYPASS_NO_DECISION,
    BYPASS_NUMBER_UNKNOWN,
    BYPASS_TEXT,
    FINDING_BYPASS,
    FINDING_NOT_WATCHED,
)
from rpoguard.db import open_store
from rpoguard.db.store import StoredFinding
from rpoguard.timeutil import parse_time, to_us

CliResult = Any  # conftest's CliResult: (code, out, err)
Cli = Callable[..., CliResult]

NUM = "+393331234567"
MINUTE = 60_000_000
T0 = to_us(parse_time("2026-11-24T11:00"))  # 10:00 UTC
FOUND = to_us(parse_time("2026-11-24T11:30"))

FIELDS = {"id", "kind", "found_at", "at", "until", "why", "why_text", "channel", "number", "dialled", "uniqueid",
          "linkedid", "decision_id", "hung_up", "detail", "source"}
HEADINGS = ["ID", "FOUND", "AT", "KIND", "WHY", "CHANNEL", "NUMBER", "DECISION", "HUNG UP", "DETAIL"]

FINDINGS = (
    StoredFinding(kind=FINDING_BYPASS, at_us=T0, detail=BYPASS_TEXT[BYPASS_NO_DECISION], source="watch",
                  found_us=FOUND, why=BYPASS_NO_DECISION, channel="PJSIP/carrier-0000000d", number=NUM,
                  dialled="+393331234567@carrier", uniqueid="1764000000.13", linkedid="1764000000.10", hung_up=True),
    StoredFinding(kind=FINDING_NOT_WATCHED, at_us=T0 + 10 * MINUTE, detail="the AMI connection was lost",
                  source="watch", found_us=FOUND, until_us=T0 + 12 * MINUTE),
    StoredFinding(kind=FINDING_BYPASS, at_us=T0 + 20 * MINUTE, detail=BYPASS_TEXT[BYPASS_NUMBER_UNKNOWN],
                  source="watch", found_us=FOUND, why=BYPASS_NUMBER_UNKNOWN, channel="PJSIP/carrier-0000000e",
                  dialled="anonymous@carrier", uniqueid="1764000000.21", linkedid="1764000000.20",
                  decision_id="00000000-0000-4000-8000-000000000007"),
    StoredFinding(kind=FINDING_NOT_WATCHED, at_us=T0 + 30 * MINUTE, detail="watch stopped", source="watch",
                  found_us=FOUND, channel="rpoguard@127.0.0.1:5038"),
    StoredFinding(kind=FINDING_BYPASS, at_us=T0 + 40 * MINUTE, detail=BYPASS_TEXT[BYPASS_DECISION_USED],
                  source="watch", found_us=FOUND, why=BYPASS_DECISION_USED, channel="PJSIP/carrier-0000000f",
                  number=NUM, dialled="+393331234567@carrier", uniqueid="1764000000.31", linkedid="1764000000.30",
                  decision_id="00000000-0000-4000-8000-000000000009"),
    # As watch closes a period: the bounds are already in the detail.
    StoredFinding(kind=FINDING_NOT_WATCHED, at_us=T0 + 50 * MINUTE, source="watch", found_us=FOUND,
                  until_us=T0 + 55 * MINUTE, channel="rpoguard@127.0.0.1:5038",
                  detail="not watched from 2026-11-24T11:50:00+01:00 to 2026-11-24T11:55:00+01:00: AMI connection "
                         "lost; run `rpoguard reconcile` over this period"),
)


def on(run_cli: Cli, db: str | Path) -> Cli:
    def runner(*args: Any, **kwargs: Any) -> CliResult:
        return run_cli(*args, env={"RPOGUARD_DB": str(db)}, **kwargs)

    return runner


def ok(result: CliResult) -> str:
    assert result.code == 0, result.err
    assert result.err == ""
    return str(result.out)


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def table(out: str) -> tuple[list[str], list[list[str]], str]:
    """The header's column names, the rows' cells (split on the column starts) and the count line."""
    *lines, count = out.splitlines()
    header = lines[0]
    starts = [i for i, c in enumerate(header) if c != " " and (i == 0 or header[i - 2:i] == "  ")]
    ends = [*starts[1:], None]
    cells = [[line[a:b].strip() for a, b in zip(starts, ends, strict=True)] for line in lines[1:]]
    return [header[a:b].strip() for a, b in zip(starts, ends, strict=True)], cells, count


async def store_findings(url: str, findings: tuple[StoredFinding, ...]) -> list[int]:
    async with open_store(url) as store:
        return [await store.add_finding(finding) for finding in findings]


@pytest.fixture
def cli(run_cli: Cli, store_url: str, run: Callable[..., Any]) -> Cli:
    """The console script on a database holding FINDINGS (SQLite and PostgreSQL)."""
    assert run(store_findings(store_url, FINDINGS)) == [1, 2, 3, 4, 5, 6]
    return on(run_cli, store_url)


def test_the_table_shows_each_finding_in_romes_time(cli: Cli) -> None:
    headings, rows, count = table(ok(cli("findings", "list")))
    assert headings == HEADINGS
    assert count == "6 finding(s)"
    found = "2026-11-24T11:30:00+01:00"
    assert rows[0] == ["1", found, "2026-11-24T11:00:00+01:00", "bypass", "no_decision", "PJSIP/carrier-0000000d",
                       NUM, "-", "yes", BYPASS_TEXT[BYPASS_NO_DECISION]]
    # A period nobody watched: its bounds in the detail, nothing to hang up.
    assert rows[1] == ["2", found, "2026-11-24T11:10:00+01:00", "not_watched", "-", "-", "-", "-", "-",
                       "from 2026-11-24T11:10:00+01:00 until 2026-11-24T11:12:00+01:00: the AMI connection was lost"]
    # The number could not be read: what Asterisk dialled is shown instead.
    assert rows[2][4:9] == ["number_unknown", "PJSIP/carrier-0000000e", "dialled anonymous@carrier",
                            "00000000-0000-4000-8000-000000000007", "no"]
    assert rows[3][5] == "rpoguard@127.0.0.1:5038"  # the AMI connection that was not watched
    assert rows[3][9] == "from 2026-11-24T11:30:00+01:00 until not closed: watch stopped"
    assert rows[5][9] == FINDINGS[5].detail
    assert rows[4][4] == "decision_used" and rows[4][7] == "00000000-0000-4000-8000-000000000009"


def test_json_lines_in_utc(cli: Cli) -> None:
    records = json_lines(ok(cli("findings", "list", "--json")))
    assert [r["id"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert all(r.keys() == FIELDS for r in records)
    first, gap, unknown, still_open, _, closed = records
    assert first == {
        "id": 1, "kind": "bypass", "found_at": "2026-11-24T10:30:00.000000Z", "at": "2026-11-24T10:00:00.000000Z",
        "until": None, "why": "no_decision", "why_text": BYPASS_TEXT[BYPASS_NO_DECISION],
        "channel": "PJSIP/carrier-0000000d", "number": NUM, "dialled": "+393331234567@carrier",
        "uniqueid": "1764000000.13", "linkedid": "1764000000.10", "decision_id": None, "hung_up": True,
        "detail": BYPASS_TEXT[BYPASS_NO_DECISION], "source": "watch",
    }
    assert (gap["kind"], gap["at"], gap["until"], gap["why"], gap["why_text"], gap["hung_up"], gap["detail"]) == (
        "not_watched", "2026-11-24T10:10:00.000000Z", "2026-11-24T10:12:00.000000Z", None, None, False,
        "the AMI connection was lost")
    assert (unknown["number"], unknown["dialled"], unknown["hung_up"]) == (None, "anonymous@carrier", False)
    assert still_open["until"] is None
    assert (closed["until"], closed["detail"]) == ("2026-11-24T10:55:00.000000Z", FINDINGS[5].detail)


def test_filters_and_limit(cli: Cli) -> None:
    def listed(*filters: str) -> list[int]:
        return [r["id"] for r in json_lines(ok(cli("findings", "list", "--json", *filters)))]

    assert listed("--kind", "bypass") == [1, 3, 5]
    assert listed("--kind", "not_watched") == [2, 4, 6]
    # --since: the call or the period began then or later (Rome's time without an offset), or the period had
    # not ended by then (#2: 11:10 to 11:12; #4 still open).
    assert listed("--since", "2026-11-24T11:20") == [3, 4, 5, 6]
    assert listed("--since", "2026-11-24T10:20:00Z") == [3, 4, 5, 6]
    assert listed("--since", "2026-11-24T11:20:00.000001") == [4, 5, 6]
    assert listed("--since", "2026-11-24T11:11") == [2, 3, 4, 5, 6]
    assert listed("--since", "2026-11-24T11:05", "--kind", "not_watched") == [2, 4, 6]
    assert listed("--since", "2026-11-25") == [4]
    assert listed("--limit", "2") == [1, 2]
    assert listed("--limit", "1", "--kind", "bypass", "--since", "2026-11-24T11:01") == [3]
    out = ok(cli("findings", "list", "--kind", "bypass", "--limit", "2"))
    assert out.splitlines()[-1] == "2 finding(s) (the first 2: --limit)"
    assert len(out.splitlines()) == 4


@pytest.mark.parametrize("args", [("--kind", "bypasses"), ("--since", "yesterday"), ("--limit", "0")])
def test_bad_filters_are_usage_errors(cli: Cli, args: tuple[str, ...]) -> None:
    code, out, err = cli("findings", "list", *args)
    assert (code, out) == (2, "")
    assert "usage: rpoguard findings list" in err and "Traceback" not in err


def test_an_empty_store_says_so(run_cli: Cli, store_url: str) -> None:
    cli = on(run_cli, store_url)
    ok(cli("db", "migrate"))
    assert ok(cli("findings", "list")) == "0 finding(s)\n"
    assert ok(cli("findings", "list", "--json")) == ""


def test_a_missing_database_is_an_error_and_is_not_created(run_cli: Cli, db_path: Path) -> None:
    for args in (("findings", "list"), ("findings", "list", "--json")):
        code, out, err = run_cli(*args)
        assert (code, out) == (2, "")
        assert err.startswith("rpoguard: database not found") and "Traceback" not in err
    assert not db_path.exists()


def test_help_opens_no_database(run_cli: Cli, db_path: Path) -> None:
    code, out, err = run_cli("findings", "--help")
    assert (code, err) == (0, "")
    assert out.startswith("usage: rpoguard findings") and "list" in out
    code, out, err = run_cli("findings", "list", "--help")
    assert (code, err) == (0, "")
    for option in ("--since", "--kind", "--limit", "--json"):
        assert option in out
    assert "findings" in run_cli("--help").out
    assert not db_path.exists()


def test_a_reader_that_goes_away_stops_the_list_quietly(
    run: Callable[..., Any], db_path: Path, cli_env: dict[str, str], cli_script: str
) -> None:
    # More than the pipe and the output buffer hold: the reader is gone while rows are still being read.
    many = tuple(FINDINGS[0] for _ in range(400))
    run(store_findings(str(db_path), many))
    for args in (("--json",), ()):
        child = subprocess.Popen([cli_script, "findings", "list", *args], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, env=cli_env, cwd=db_path.parent)
        assert child.stdout is not None
        child.stdout.close()  # `| head -0`
        _, err = child.communicate(timeout=60)
        assert (child.returncode, err.decode()) == (141, ""), args
