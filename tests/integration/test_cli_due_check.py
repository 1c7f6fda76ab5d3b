"""`registry due --check`, the freshness alarm, through the real console script on SQLite and PostgreSQL: a
store whose answers are fresh, expiring, expired and missing; the threshold's boundary, --within, --json,
every principal at once, a campaign, and bad --max-share values."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from support.fakeclock import ClockedCliRunner

NOW = "2026-11-24T11:00"  # Europe/Rome; an answer is valid 15 days after its check
FRESH = "+393331234567"  # checked today
EXPIRING = "+393477654321"  # checked 11-11: valid until 11-26 00:00, within 2 days but not 1
EXPIRED = "+393351112233"  # checked 11-01: expired 11-16
MISSING = "+393401234567"  # a consent of acme's, never submitted
BETA_FRESH = "+390612345678"

Cli = Callable[..., Any]


@pytest.fixture
def cli(run_cli_at: ClockedCliRunner, store_url: str, write_file: Callable[..., Path]) -> Cli:
    """The console script at NOW on this test's database, with acme (one number of each kind, campaign
    autunno26) and beta (one fresh answer)."""

    def runner(*args: Any) -> Any:
        return run_cli_at(NOW, *args, env={"RPOGUARD_DB": store_url})

    def ok(*args: Any) -> None:
        result = runner(*args)
        assert result.code == 0, result.err

    ok("principal", "add", "acme", "--name", "ACME")
    ok("principal", "add", "beta", "--name", "Beta")
    ok("campaign", "add", "autunno26", "--principal", "acme")
    for name, number, checked in (("fresh", FRESH, "2026-11-24"), ("expiring", EXPIRING, "2026-11-11"),
                                  ("expired", EXPIRED, "2026-11-01")):
        ok("registry", "import", write_file(f"{name}.csv", f"{number},not_registered\n"), "--checked-at", checked,
           "--principal", "acme")
    ok("registry", "import", write_file("beta.csv", f"{BETA_FRESH},not_registered\n"), "--checked-at", "2026-11-20",
       "--principal", "beta")
    ok("consent", "add", MISSING, "--principal", "acme", "--given-at", "2026-06-01", "--evidence", "form 12")
    ok("contract", "add", FRESH, "--principal", "acme", "--start", "2026-01-01")
    return runner


def lines(result: Any) -> list[str]:
    assert "Traceback" not in result.err
    return result.out.splitlines()


def test_share_exactly_the_threshold_is_ok_and_above_it_is_an_alarm(cli: Cli) -> None:
    # Now: EXPIRED and MISSING lack a valid answer, 2 of 4.
    result = cli("registry", "due", "--check", "--principal", "acme", "--max-share", "0.5")
    assert result.code == 0, result.err
    assert lines(result) == ["OK principal acme: 2 of 4 number(s) lack a valid RPO answer within 0 day(s), 50% "
                             "(at most 50%)"]
    assert cli("registry", "due", "--check", "--principal", "acme", "--max-share", "50%").code == 0
    result = cli("registry", "due", "--check", "--principal", "acme", "--max-share", "49.9%")
    assert result.code == 1
    assert lines(result)[0].startswith("ALARM principal acme: 2 of 4 ")
    # The default threshold is 0: any number lacking an answer is an alarm.
    assert cli("registry", "due", "--check", "--principal", "acme").code == 1
    assert cli("registry", "due", "--check", "--principal", "beta").code == 0


def test_within_counts_the_answers_expiring_by_then(cli: Cli) -> None:
    for within, lacking in (("1", 2), ("2", 3), ("16", 4)):
        result = cli("registry", "due", "--check", "--principal", "acme", "--within", within, "--json")
        (line,) = lines(result)
        assert json.loads(line)["lacking"] == lacking, within
    assert cli("registry", "due", "--check", "--principal", "acme", "--max-share", "0.5", "--within", "1").code == 0
    assert cli("registry", "due", "--check", "--principal", "acme", "--max-share", "0.5", "--within", "2").code == 1
    # The lacking numbers are exactly those `registry due` lists for the same --within.
    listed = cli("registry", "due", "--principal", "acme", "--within", "2", "-q")
    assert listed.out.split() == sorted([EXPIRING, EXPIRED, MISSING])


def test_json_one_object_per_principal(cli: Cli) -> None:
    result = cli("registry", "due", "--check", "--json", "--max-share", "5%", "--within", "2")
    assert result.code == 1
    acme, beta = (json.loads(line) for line in lines(result))
    as_of = acme.pop("as_of")
    assert as_of.startswith("2026-11-24T10:00") and as_of.endswith("Z")
    assert acme == {"status": "ALARM", "principal": "acme", "campaign": None, "numbers": 4, "lacking": 3,
                    "share": 0.75, "max_share": 0.05, "within_days": 2}
    beta.pop("as_of")
    assert beta == {"status": "OK", "principal": "beta", "campaign": None, "numbers": 1, "lacking": 0,
                    "share": 0.0, "max_share": 0.05, "within_days": 2}


def test_every_principal_one_line_each_and_one_failing_fails_the_run(cli: Cli) -> None:
    result = cli("registry", "due", "--check")
    assert result.code == 1
    assert [line.split(":")[0] for line in lines(result)] == ["ALARM principal acme", "OK principal beta"]
    # -q keeps only the alarms: cron mails nothing while every principal is OK.
    quiet = cli("registry", "due", "--check", "-q")
    assert (quiet.code, [line.split(":")[0] for line in lines(quiet)]) == (1, ["ALARM principal acme"])
    assert cli("registry", "due", "--check", "-q", "--principal", "beta")[:2] == (0, "")
    assert cli("registry", "due", "--check", "--max-share", "1").code == 0


def test_a_campaign_counts_its_own_numbers(cli: Cli) -> None:
    # autunno26's numbers are acme's consents and contracts (no calls yet): FRESH and MISSING.
    result = cli("registry", "due", "--check", "--campaign", "autunno26", "--max-share", "0.5")
    assert result.code == 0, result.err
    assert lines(result) == ["OK campaign autunno26 (principal acme): 1 of 2 number(s) lack a valid RPO answer "
                             "within 0 day(s), 50% (at most 50%)"]
    assert cli("registry", "due", "--check", "--campaign", "autunno26", "--max-share", "0.4").code == 1


@pytest.mark.parametrize(("given", "message"), [
    ("-0.1", "--max-share '-0.1' is not a share between 0 and 1"),
    ("1.01", "--max-share '1.01' is not a share between 0 and 1"),
    ("101%", "--max-share '101%' is not a share between 0 and 1"),
    ("five", "--max-share 'five' is not a share (0.05 or 5%)"),
    ("nan", "--max-share 'nan' is not a share (0.05 or 5%)"),
])
def test_a_bad_max_share_is_one_line_and_exit_2(cli: Cli, given: str, message: str) -> None:
    result = cli("registry", "due", "--check", f"--max-share={given}")
    assert (result.code, result.out) == (2, "")
    assert result.err.startswith(f"rpoguard: {message}") and result.err.count("\n") == 1, result.err


@pytest.mark.parametrize(("args", "message"), [
    (("--max-share", "5%"), "--max-share applies only with --check"),
    (("--check", "-o", "due.txt"), "-o does not apply to --check"),
    (("--check", "--national"), "--national does not apply to --check"),
    (("--check", "--principal", "gamma"), "principal 'gamma' does not exist"),
    (("--check", "--campaign", "inverno"), "campaign 'inverno' does not exist"),
])
def test_usage_errors_exit_2_with_one_line(cli: Cli, args: tuple[str, ...], message: str) -> None:
    result = cli("registry", "due", *args)
    assert (result.code, result.out) == (2, "")
    assert result.err.startswith(f"rpoguard: {message}") and result.err.count("\n") == 1, result.err


def test_no_principal_is_an_error_not_an_ok(run_cli_at: ClockedCliRunner, store_url: str) -> None:
    assert run_cli_at(NOW, "db", "migrate", env={"RPOGUARD_DB": store_url}).code == 0
    result = run_cli_at(NOW, "registry", "due", "--check", env={"RPOGUARD_DB": store_url})
    assert result.code == 2
    assert "no principal exists" in result.err and "Traceback" not in result.err
