"""Seeing what is stored, and output for scripts and people, through the real console script:
`principal|campaign|consent|contract|optout list` (tables and JSON Lines, filters, on SQLite and PostgreSQL),
`--json` on scrub, audit verify, every import and registry due (which writes to standard output without
-o), -q, the global options after the command, and progress on a terminal only."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TIMEOUT = 60

CliResult = Any  # conftest's CliResult: (code, out, err)
Cli = Callable[..., CliResult]

MOBILE_OK = "+393331234567"
MOBILE_REG = "+393477654321"
MILANO = "+390212345678"
AT = "2026-11-24T11:00"

CONSENT_FIELDS = {"id", "number", "principal", "given_at", "expires_at", "revoked_at", "automated", "evidence",
                  "purpose", "import_id", "created_at"}
IMPORT_FIELDS = {"import_id", "already_imported", "rows_read", "rows_stored", "rows_rejected", "details", "notes",
                 "rejected"}


def on(run_cli: Cli, db: str | Path) -> Cli:
    def runner(*args: Any, **kwargs: Any) -> CliResult:
        env = {"RPOGUARD_DB": str(db), **kwargs.pop("env", {})}
        return run_cli(*args, env=env, **kwargs)

    return runner


def ok(result: CliResult) -> str:
    assert result.code == 0, result.err
    assert "Traceback" not in result.err
    return result.out


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def seed(cli: Cli, write_file: Callable[..., Path]) -> None:
    ok(cli("principal", "add", "acme", "--name", "ACME Energia", "--caller-id", "06 9480 1234"))
    ok(cli("principal", "add", "beta", "--name", "Beta Telco"))
    ok(cli("campaign", "add", "autunno26", "--principal", "acme", "--max-attempts", "3", "--per-days", "7"))
    ok(cli("campaign", "add", "robot", "--principal", "beta", "--automated"))
    ok(cli("registry", "import", EXAMPLES / "rpo-answers.csv", "--checked-at", "2026-11-20", "--principal", "acme"))
    ok(cli("directory", "import", EXAMPLES / "directory.txt", "--listed-at", "2026-11-20"))
    ok(cli("consent", "import", EXAMPLES / "consents.csv"))
    ok(cli("consent", "add", "02 1234 5678", "--principal", "beta", "--given-at", "2026-06-01",
           "--evidence", "line one\nline two\x1b[31m"))
    ok(cli("consent", "revoke", "347 765 4321", "--principal", "acme", "--at", "2026-10-01T09:00"))
    ok(cli("contract", "add", "02 1234 5678", "--principal", "acme", "--start", "2026-01-01", "--end", "2026-10-31"))
    ok(cli("contract", "add", "333 123 4567", "--principal", "beta", "--start", "2026-11-01"))
    ok(cli("optout", "add", "333 123 4567", "--at", "2026-11-10T10:00"))
    ok(cli("optout", "import", write_file("optouts.csv", "number,at,principal,reference\n"
                                                         "02 1234 5678,2026-11-12T15:30,beta,call 77\n")))


@pytest.fixture
def cli(run_cli: Cli, store_url: str, write_file: Callable[..., Path]) -> Cli:
    """The console script on this test's database (SQLite and PostgreSQL), seeded with a bit of everything."""
    runner = on(run_cli, store_url)
    seed(runner, write_file)
    return runner


def table(out: str) -> tuple[list[str], list[list[str]], str]:
    """The header's column names, the rows' cells (split on the column starts) and the count line."""
    *lines, count = out.splitlines()
    header = lines[0]
    starts = [i for i, c in enumerate(header) if c != " " and (i == 0 or header[i - 2:i] == "  ")]
    cells = [[line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)] for line in lines[1:]]
    return [header[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)], cells, count


# -- the list commands ----------------------------------------------------------------------------------


def test_lists_show_what_is_stored(cli: Cli) -> None:
    """One seeded database per backend, every list command and filter (each check is a function below)."""
    principal_and_campaign_lists(cli)
    consent_list_filters_and_json(cli)
    operator_text_cannot_break_the_table_or_the_terminal(cli)
    contract_and_optout_lists(cli)


def principal_and_campaign_lists(cli: Cli) -> None:
    headings, rows, count = table(ok(cli("principal", "list")))
    assert headings == ["ID", "NAME", "CALLER IDS", "ADDED"]
    assert [row[:3] for row in rows] == [["acme", "ACME Energia", "+390694801234"], ["beta", "Beta Telco", "-"]]
    assert count == "2 principal(s)"
    assert json_lines(ok(cli("principal", "list", "--json")))[0].keys() == {"id", "name", "caller_ids", "created_at"}

    headings, rows, count = table(ok(cli("campaign", "list")))
    assert headings == ["ID", "PRINCIPAL", "AUTOMATED", "ATTEMPT CAP", "ADDED"]
    assert [row[:4] for row in rows] == [["autunno26", "acme", "no", "3 per 7 day(s)"], ["robot", "beta", "yes", "-"]]
    assert [c["id"] for c in json_lines(ok(cli("campaign", "list", "--principal", "beta", "--json")))] == ["robot"]
    (campaign,) = json_lines(ok(cli("campaign", "list", "--json", "--limit", "1")))
    assert campaign == {"id": "autunno26", "principal": "acme", "automated": False, "max_attempts": 3, "per_days": 7,
                        "created_at": campaign["created_at"]}


def consent_list_filters_and_json(cli: Cli) -> None:
    everything = json_lines(ok(cli("consent", "list", "--json")))
    assert [(c["number"], c["principal"]) for c in everything] == [
        (MOBILE_OK, "acme"), (MOBILE_REG, "acme"), (MILANO, "beta")]
    assert all(c.keys() == CONSENT_FIELDS for c in everything)
    first = everything[0]
    assert (first["given_at"], first["evidence"], first["purpose"], first["automated"], first["expires_at"]) == (
        "2026-09-01T08:15:00.000000Z", "web-form:2026-09-01/8812", "offerte luce e gas", False, None)
    assert first["import_id"] is not None and everything[2]["import_id"] is None  # imported / added by hand
    assert everything[1]["revoked_at"] == "2026-10-01T07:00:00.000000Z"

    def numbers(*filters: str) -> list[str]:
        return [c["number"] for c in json_lines(ok(cli("consent", "list", "--json", *filters)))]

    assert numbers("--number", "347 765 4321") == [MOBILE_REG]
    assert numbers("--principal", "beta") == [MILANO]
    assert numbers("--revoked") == [MOBILE_REG]
    assert numbers("--in-force-at", "2026-11-24T11:00") == [MOBILE_OK, MILANO]
    assert numbers("--in-force-at", "2026-08-15") == [MOBILE_REG, MILANO]
    assert numbers("--principal", "acme", "--in-force-at", "2024-01-01") == []

    headings, rows, count = table(ok(cli("consent", "list", "--principal", "acme")))
    assert headings == ["ID", "NUMBER", "PRINCIPAL", "GIVEN", "EXPIRES", "REVOKED", "AUTOMATED", "EVIDENCE", "PURPOSE"]
    # People read Rome's time with its offset, to the second.
    assert rows[0][1:5] == [MOBILE_OK, "acme", "2026-09-01T10:15:00+02:00", "-"]
    assert rows[1][5] == "2026-10-01T09:00:00+02:00"
    assert count == "2 consent(s)"
    out = ok(cli("consent", "list", "--limit", "1"))
    assert out.splitlines()[-1] == "1 consent(s) (the first 1: --limit)"
    assert len(out.splitlines()) == 3


def operator_text_cannot_break_the_table_or_the_terminal(cli: Cli) -> None:
    out = ok(cli("consent", "list", "--number", "02 1234 5678"))
    assert "\x1b" not in out
    assert "line one\\nline two\\x1b[31m" in out
    assert len(out.splitlines()) == 3
    (consent,) = json_lines(ok(cli("consent", "list", "--number", "02 1234 5678", "--json")))
    assert consent["evidence"] == "line one\nline two\x1b[31m"


def contract_and_optout_lists(cli: Cli) -> None:
    def contracts(*filters: str) -> list[tuple[str, str, str, str | None]]:
        return [(k["number"], k["principal"], k["start"], k["end"])
                for k in json_lines(ok(cli("contract", "list", "--json", *filters)))]

    assert contracts() == [(MILANO, "acme", "2026-01-01", "2026-10-31"), (MOBILE_OK, "beta", "2026-11-01", None)]
    assert contracts("--running-at", "2026-10-31") == [(MILANO, "acme", "2026-01-01", "2026-10-31")]
    assert contracts("--running-at", "2026-11-24") == [(MOBILE_OK, "beta", "2026-11-01", None)]
    assert contracts("--principal", "beta", "--number", "02 1234 5678") == []
    headings, rows, count = table(ok(cli("contract", "list")))
    assert headings == ["ID", "NUMBER", "PRINCIPAL", "START", "END"]
    assert rows[1][4] == "running"
    assert count == "2 contract(s)"

    refusals = json_lines(ok(cli("optout", "list", "--json")))
    assert [(o["number"], o["principal"], o["at"], o["source"], o["reference"]) for o in refusals] == [
        (MOBILE_OK, None, "2026-11-10T09:00:00.000000Z", "cli", None),
        (MILANO, "beta", "2026-11-12T14:30:00.000000Z", "import", "call 77"),
    ]
    # A refusal for every principal binds acme too.
    assert [o["number"] for o in json_lines(ok(cli("optout", "list", "--principal", "acme", "--json")))] == [MOBILE_OK]
    assert [o["number"] for o in json_lines(ok(cli("optout", "list", "--since", "2026-11-11", "--json")))] == [MILANO]
    headings, rows, count = table(ok(cli("optout", "list")))
    assert [row[2] for row in rows] == ["every principal", "beta"]
    assert count == "2 refusal(s)"


def test_list_filters_that_cannot_match_are_errors(run_cli: Cli) -> None:
    cli = run_cli
    ok(cli("principal", "add", "acme", "--name", "ACME"))
    for args in (("consent", "list", "--principal", "acm"), ("campaign", "list", "--principal", "nosuch"),
                 ("optout", "list", "--principal", "acm")):
        code, out, err = cli(*args)
        assert (code, out) == (2, ""), args
        assert err == "rpoguard: principal 'acm' does not exist\n" or "'nosuch' does not exist" in err
    code, _, err = cli("contract", "list", "--number", "12")
    assert code == 2 and err.startswith("rpoguard: ")
    code, _, err = cli("consent", "list", "--in-force-at", "yesterday")
    assert code == 2 and "ISO 8601" in err


def test_an_empty_database_lists_nothing(run_cli: Cli, store_url: str) -> None:
    cli = on(run_cli, store_url)
    ok(cli("db", "migrate"))  # the list commands only read: they never create the database
    assert ok(cli("consent", "list")) == "0 consent(s)\n"
    assert ok(cli("principal", "list", "--json")) == ""


# -- global options, -q ---------------------------------------------------------------------------------


def test_global_options_before_or_after_the_command(run_cli: Cli, tmp_path: Path) -> None:
    first, second = tmp_path / "first.db", tmp_path / "second.db"
    ok(run_cli("--db", first, "principal", "add", "one", "--name", "One"))
    ok(run_cli("principal", "add", "two", "--name", "Two", "--db", second))

    def ids(*args: Any, **kwargs: Any) -> list[str]:
        return [p["id"] for p in json_lines(ok(run_cli(*args, **kwargs)))]

    assert ids("--db", first, "principal", "list", "--json") == ["one"]
    assert ids("principal", "list", "--json", "--db", second) == ["two"]
    assert ids("principal", "--db", second, "list", "--json") == ["two"]
    # Given before and not after, the value stands; given after too, the later one wins.
    assert ids("--db", second, "principal", "list", "--json", "-v") == ["two"]
    assert ids("--db", first, "principal", "list", "--json", "--db", second) == ["two"]
    config = tmp_path / "rpoguard.toml"
    config.write_text(f'[database]\npath = "{second}"\n', encoding="utf-8")
    assert ids("principal", "list", "--json", "--config", config, env={"RPOGUARD_DB": ""}) == ["two"]


def test_quiet_keeps_results_and_errors_only(run_cli: Cli, write_file: Callable[..., Path]) -> None:
    ok(run_cli("principal", "add", "acme", "--name", "ACME"))
    assert run_cli("consent", "import", EXAMPLES / "consents.csv", "-q") == (0, "", "")
    rpo = ("registry", "import", EXAMPLES / "rpo-answers.csv", "--checked-at", "2026-11-20")
    assert run_cli("-q", *rpo) == (0, "", "")
    bad = write_file("bad.csv", "number,principal,given_at,evidence\n12,acme,2026-01-01,x\n")
    code, out, err = run_cli("-q", "consent", "import", bad)
    assert (code, out) == (2, "")
    assert "line 2" in err and "import rejected" in err
    # Rows left out on request are still said: the data is incomplete.
    code, out, err = run_cli("consent", "import", bad, "--skip-invalid", "--quiet")
    assert (code, out) == (0, "")
    assert "skipped: line 2" in err
    # Errors still print under -q.
    code, out, err = run_cli("scrub", EXAMPLES / "campaign-list.txt", "--campaign", "nosuch", "-q")
    assert (code, out) == (2, "")
    assert "campaign 'nosuch' does not exist" in err


# -- --json elsewhere -----------------------------------------------------------------------------------


def test_every_import_summary_as_one_json_object(
    run_cli: Cli, store_url: str, write_file: Callable[..., Path]
) -> None:
    cli = on(run_cli, store_url)
    ok(cli("principal", "add", "acme", "--name", "ACME"))

    def summary(*args: Any) -> dict[str, Any]:
        result = cli(*args, "--json")
        (document,) = json_lines(ok(result))
        assert document.keys() >= IMPORT_FIELDS
        assert result.err == ""
        return document

    answers = summary("registry", "import", EXAMPLES / "rpo-answers.csv", "--checked-at", "2026-11-20")
    assert (answers["rows_read"], answers["rows_stored"], answers["rows_rejected"], answers["already_imported"]) == (
        5, 5, 0, False)
    assert answers["details"] == {"registered": 2, "not_registered": 3}
    assert (answers["principal"], answers["checked_at"]) == ("acme", "2026-11-19T23:00:00.000000Z")
    again = summary("registry", "import", EXAMPLES / "rpo-answers.csv", "--checked-at", "2026-11-20")
    assert (again["already_imported"], again["import_id"]) == (True, answers["import_id"])

    listings = summary("directory", "import", EXAMPLES / "directory.txt", "--listed-at", "2026-11-20")
    assert listings["details"]["newly_listed"] == 3 and listings["replace"] is True

    mixed = write_file("consents.csv", "number,principal,given_at,evidence\n333 123 4567,acme,2026-09-01,form 1\n"
                                       "not a number,acme,2026-09-01,form 2\n347 765 4321,nosuch,2026-09-01,x\n")
    consents = summary("consent", "import", mixed, "--skip-invalid")
    assert (consents["rows_read"], consents["rows_stored"], consents["rows_rejected"]) == (3, 1, 2)
    assert [r["line"] for r in consents["rejected"]] == [3, 4]
    assert "does not exist" in consents["rejected"][1]["problem"]

    contracts = summary("contract", "import",
                        write_file("k.csv", "number,principal,start\n06 4567 8901,acme,2026-01-01\n"))
    assert contracts["rows_stored"] == 1
    refusals = summary("optout", "import", write_file("o.csv", "number,at\n06 4567 8901,2026-11-01\n"))
    assert (refusals["rows_stored"], refusals["rejected"]) == (1, [])


def test_scrub_as_json_lines(run_cli: Cli) -> None:
    cli = run_cli
    ok(cli("principal", "add", "acme", "--name", "ACME"))
    ok(cli("campaign", "add", "autunno26", "--principal", "acme"))
    ok(cli("registry", "import", EXAMPLES / "rpo-answers.csv", "--checked-at", "2026-11-20"))
    ok(cli("directory", "import", EXAMPLES / "directory.txt", "--listed-at", "2026-11-20"))
    result = cli("scrub", EXAMPLES / "campaign-list.txt", "--campaign", "autunno26", "--at", AT, "--json")
    rows = json_lines(ok(result))
    assert [(r["line"], r["input"], r["number"], r["decision"], r["reasons"], r["basis"]) for r in rows[:2]] == [
        (2, "06 4567 8901", "+390645678901", "allow", [], "listed"),
        (3, "02 1234 5678", MILANO, "block", ["rpo_registered"], None),
    ]
    assert {(r["campaign"], r["at"]) for r in rows} == {("autunno26", "2026-11-24T10:00:00.000000Z")}
    assert len(rows) == 6
    assert "scrub for campaign autunno26" in result.err


def test_audit_verify_as_one_json_object(run_cli: Cli, tmp_path: Path) -> None:
    cli = run_cli
    ok(cli("principal", "add", "acme", "--name", "ACME"))
    ok(cli("campaign", "add", "c1", "--principal", "acme"))
    assert cli("check", "06 4567 8901", "--campaign", "c1").code == 1  # recorded: no --at
    document = json.loads(ok(cli("audit", "verify", "--json")))
    assert document == {"intact": True, "rows": 1, "head": document["head"], "problems": [], "anchors": None}
    assert len(document["head"]) == 64

    result = cli("audit", "verify", "--json", "--anchors", tmp_path / "anchors")
    assert result.code == 1
    document = json.loads(result.out)
    assert (document["intact"], document["rows"], document["problems"]) == (False, 1, [])
    anchors = document["anchors"]
    assert (anchors["intact"], anchors["lines"], anchors["last"], anchors["complete"]) == (False, 0, None, True)
    (problem,) = anchors["problems"]
    assert (problem["line"], problem["row"]) == (None, None)
    assert "does not exist" in problem["problem"]


def test_registry_due_writes_to_standard_output_without_o(run_cli: Cli, tmp_path: Path) -> None:
    ok(run_cli("principal", "add", "acme", "--name", "ACME"))
    ok(run_cli("consent", "import", EXAMPLES / "consents.csv"))
    code, out, err = run_cli("registry", "due")
    assert (code, out) == (0, f"{MOBILE_OK}\n{MOBILE_REG}\n")
    assert err.startswith("2 number(s) for principal acme") and err.endswith("written to standard output\n")
    assert json_lines(ok(run_cli("registry", "due", "--json"))) == [
        {"number": MOBILE_OK, "national": "3331234567", "principal": "acme"},
        {"number": MOBILE_REG, "national": "3477654321", "principal": "acme"},
    ]
    assert run_cli("registry", "due", "--national", "-q") == (0, "3331234567\n3477654321\n", "")
    code, out, err = run_cli("registry", "due", "-o", tmp_path / "due.txt")
    assert (code, out) == (0, "")
    assert (tmp_path / "due.txt").read_text(encoding="utf-8") == f"{MOBILE_OK}\n{MOBILE_REG}\n"


# -- progress: on a terminal only -----------------------------------------------------------------------


def run_on_terminal(cli_script: str, env: Mapping[str, str], cwd: Path, *args: Any) -> tuple[int, str, str]:
    """Run the console script with standard error on a pseudo-terminal (what an operator's shell gives it)
    and standard output on a pipe; returns (exit code, standard output, what the terminal received)."""
    master, slave = pty.openpty()
    received: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                return
            if not data:
                return
            received.append(data)

    env = {**env, "TERM": "xterm-256color", "COLUMNS": "150"}
    with subprocess.Popen([cli_script, *map(str, args)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=slave, env=env, cwd=cwd) as child:
        os.close(slave)
        reader = threading.Thread(target=drain)
        reader.start()
        out, _ = child.communicate(timeout=TIMEOUT)
        reader.join(timeout=TIMEOUT)
    os.close(master)
    return child.returncode, out.decode(), b"".join(received).decode(errors="replace")


@pytest.fixture
def terminal_env(cli_env: dict[str, str], run_cli: Cli) -> dict[str, str]:
    ok(run_cli("principal", "add", "acme", "--name", "ACME"))
    ok(run_cli("campaign", "add", "c1", "--principal", "acme"))
    return {k: v for k, v in cli_env.items() if k != "NO_COLOR"}


def test_progress_bar_with_rate_and_time_left_on_a_terminal(
    terminal_env: dict[str, str], cli_script: str, tmp_path: Path
) -> None:
    code, out, seen = run_on_terminal(cli_script, terminal_env, tmp_path, "registry", "import",
                                      EXAMPLES / "rpo-answers.csv", "--checked-at", "2026-11-20")
    assert code == 0, seen
    assert "5 stored" in out
    assert "importing RPO answers" in seen
    assert "left" in seen and "/s" in seen  # the time left and the rate
    assert "\x1b[" in seen  # drawn and erased with terminal controls
    assert "\x1b[3" in seen  # in colour

    code, out, seen = run_on_terminal(cli_script, terminal_env, tmp_path, "scrub", EXAMPLES / "campaign-list.txt",
                                      "--campaign", "c1", "--at", AT)
    assert code == 0, seen
    assert out.startswith("line,input,number")
    assert "scrubbing" in seen and "\x1b[" in seen

    code, out, seen = run_on_terminal(cli_script, terminal_env, tmp_path, "consent", "import",
                                      EXAMPLES / "consents.csv")
    assert code == 0, seen
    assert "importing consents" in seen


def test_no_colour_under_no_color_and_no_progress_with_quiet(
    terminal_env: dict[str, str], cli_script: str, tmp_path: Path
) -> None:
    args = ("directory", "import", EXAMPLES / "directory.txt", "--listed-at", "2026-11-20")
    code, _, seen = run_on_terminal(cli_script, {**terminal_env, "NO_COLOR": "1"}, tmp_path, *args)
    assert code == 0, seen
    assert "importing directory listings" in seen
    assert "\x1b[3" not in seen and "\x1b[9" not in seen  # no foreground colour
    code, out, seen = run_on_terminal(cli_script, terminal_env, tmp_path, "-q", *args, "--append")
    assert (code, out, seen) == (0, "", "")


def test_no_control_characters_when_not_on_a_terminal(run_cli: Cli, write_file: Callable[..., Path]) -> None:
    ok(run_cli("principal", "add", "acme", "--name", "ACME"))
    ok(run_cli("campaign", "add", "c1", "--principal", "acme"))
    for args in (("registry", "import", EXAMPLES / "rpo-answers.csv", "--checked-at", "2026-11-20"),
                 ("directory", "import", EXAMPLES / "directory.txt"),
                 ("consent", "import", EXAMPLES / "consents.csv"),
                 ("scrub", EXAMPLES / "campaign-list.txt", "--campaign", "c1", "--at", AT),
                 ("consent", "list")):
        code, out, err = run_cli(*args)
        assert code == 0, err
        assert "\x1b" not in out + err, args
        assert "\r" not in err, args  # (scrub's CSV ends its lines with CRLF, as RFC 4180 says)
