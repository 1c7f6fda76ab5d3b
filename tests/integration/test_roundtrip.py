"""The round trip an operator makes with the shipped example data, through the REAL console script:

    registry due -> (the RPO answers) -> registry import -> check / serve -> evidence

plus the other imports that feed a decision (`contract import`, `optout import`). `registry due` uses
the real clock, so check dates are taken relative to today (Europe/Rome). Every `check --at` is at 11:00
on the first day after today when calls are allowed, so ALLOW/BLOCK below never hinge on calling hours;
the FastAGI sessions use the real clock, and there only reasons unrelated to the hour are asserted.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any

import pytest

from rpoguard.constants import (
    CHANNEL_BLOCK,
    OPTOUT,
    RPO_EXPIRED,
    RPO_NOT_CHECKED,
    RPO_REGISTERED,
    UNLISTED_NO_CONSENT,
    VAR_DECISION,
    VAR_NUMBER,
    VAR_REASONS,
)
from rpoguard.db.sqlite import audit_path
from rpoguard.policy.calendar import allowed_window
from rpoguard.timeutil import ROME
from support.agi_fakes import make_env, play
from support.aio import run_once
from support.fakeclock import ClockedCliRunner
from support.serve_process import running_serve

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
Cli = Callable[..., Any]

ROMA = "+390645678901"  # listed
MILANO = "+390212345678"  # listed
FIRENZE = "+390552345678"  # listed
MOBILE_OK = "+393331234567"  # unlisted, consent to acme 2026-09-01
MOBILE_REG = "+393477654321"  # unlisted, consent to acme 2024-05-02
UNKNOWN = "+393380001111"  # only in examples/campaign-list.txt
# Every number rpoguard knows from examples/directory.txt and examples/consents.csv, in E.164 order.
KNOWN = sorted([ROMA, MILANO, FIRENZE, MOBILE_OK, MOBILE_REG])
NATIONAL = {ROMA: "0645678901", MILANO: "0212345678", FIRENZE: "0552345678", MOBILE_OK: "3331234567",
            MOBILE_REG: "3477654321", UNKNOWN: "3380001111"}

SETUP = [
    ("principal", "add", "acme", "--name", "ACME Energia S.p.A.", "--caller-id", "06 9480 1234"),
    ("principal", "add", "beta", "--name", "Beta Telco"),
    ("campaign", "add", "autunno26", "--principal", "acme"),
    ("directory", "import", str(EXAMPLES / "directory.txt")),
    ("consent", "import", str(EXAMPLES / "consents.csv")),
]


def today() -> date:
    return datetime.now(ROME).date()


def days_ago(days: int) -> str:
    return (today() - timedelta(days=days)).isoformat()


def _call_day() -> date:
    """The first day after today on which 11:00 is inside the calling hours (not a Sunday or holiday)."""
    day = today() + timedelta(days=1)
    while True:
        window = allowed_window(day)
        if window is not None and window[0] <= dtime(11, 0) < window[1]:
            return day
        day += timedelta(days=1)


CALL_DAY = _call_day()
CALL_AT = f"{CALL_DAY.isoformat()}T11:00"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def check_json(run_cli: Cli, number: str, *extra: str, at: str | None = CALL_AT,
               campaign: str = "autunno26") -> tuple[int, dict[str, Any]]:
    """`check --at` (a simulation); with `at` None, `check` now, which records the decision."""
    when = ("--at", at) if at is not None else ()
    code, out, err = run_cli("check", number, "--campaign", campaign, *when, "--json", *extra)
    assert code in (0, 1), err
    result = json.loads(out)
    assert code == (0 if result["decision"] == "allow" else 1)
    assert result["recorded"] is (at is None and "--dry-run" not in extra)
    return code, result


def evidence_json(run_cli: Cli, number: str, *extra: str) -> list[dict[str, Any]]:
    code, out, err = run_cli("evidence", number, "--json", *extra)
    assert code == 0, err
    items: list[dict[str, Any]] = json.loads(out)["items"]
    times = [item["time"] for item in items]
    assert times == sorted(times), "evidence items are not in time order"
    return items


def ok(result: Any) -> str:
    code, out, err = result
    assert code == 0, (out, err)
    assert "Traceback" not in err
    return str(out)


@pytest.fixture(scope="module")
def seeded_template(tmp_path_factory: pytest.TempPathFactory, cli_script: str) -> Path:
    """Principals, a campaign, the directory and the consents of examples/, and no RPO answer yet."""
    folder = tmp_path_factory.mktemp("roundtrip")
    db = folder / "template.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RPOGUARD_")}
    env["RPOGUARD_DB"] = str(db)
    for args in SETUP:
        done = subprocess.run([cli_script, *args], capture_output=True, text=True, env=env, cwd=folder,
                              timeout=60, check=False)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
    for file in (db, audit_path(db)):
        assert file.exists() and not Path(f"{file}-wal").exists()  # closed cleanly: the files are whole
    return db


@pytest.fixture
def seeded(seeded_template: Path, db_path: Path) -> Path:
    for source, target in ((seeded_template, db_path), (audit_path(seeded_template), audit_path(db_path))):
        shutil.copyfile(source, target)
        target.chmod(0o600)
    return db_path


# -- registry due -----------------------------------------------------------------------------------------


def test_due_lists_every_known_number_until_answers_are_imported(
    run_cli: Cli, seeded: Path, tmp_path: Path, write_file: Callable[..., Path]
) -> None:
    due = tmp_path / "due.txt"
    code, _, err = run_cli("registry", "due", "--principal", "acme", "-o", due)
    assert code == 0, err
    assert lines(due) == KNOWN
    assert "5 number(s)" in err

    code, _, err = run_cli("registry", "due", "--principal", "acme", "-o", due, "--national")
    assert code == 0, err
    assert lines(due) == sorted(NATIONAL[n] for n in KNOWN)

    # Answers for three of them: only the other two are still due.
    partial = write_file("partial.csv", f"number,status\n{ROMA},not_registered\n{MILANO},registered\n"
                                        f"{MOBILE_OK},0\n")
    ok(run_cli("registry", "import", "--principal", "acme", partial, "--checked-at", today().isoformat()))
    ok(run_cli("registry", "due", "--principal", "acme", "-o", due))
    assert lines(due) == sorted([FIRENZE, MOBILE_REG])

    ok(run_cli("registry", "import", "--principal", "acme", EXAMPLES / "rpo-answers.csv", "--checked-at", days_ago(1)))
    code, _, err = run_cli("registry", "due", "--principal", "acme", "-o", due)
    assert code == 0, err
    assert lines(due) == []
    assert "0 number(s)" in err


def test_due_within_brings_back_answers_about_to_expire(run_cli: Cli, seeded: Path, tmp_path: Path) -> None:
    # Checked 10 days ago at 00:00 (Rome): valid 15 days, so it expires at 00:00 five days from today.
    ok(run_cli("registry", "import", "--principal", "acme", EXAMPLES / "rpo-answers.csv", "--checked-at", days_ago(10)))
    due = tmp_path / "due.txt"
    for within, expected in ((None, []), ("3", []), ("4", []), ("5", KNOWN), ("7", KNOWN)):
        extra = ("--within", within) if within else ()
        ok(run_cli("registry", "due", "--principal", "acme", "-o", due, *extra))
        assert lines(due) == expected, f"--within {within}"

    # An older (expired) answer imported afterwards does not hide the newer one.
    ok(run_cli("registry", "import", "--principal", "acme", EXAMPLES / "rpo-answers.csv", "--checked-at", days_ago(16)))
    ok(run_cli("registry", "due", "--principal", "acme", "-o", due))
    assert lines(due) == []  # the newer answer (10 days old) is what counts


def test_due_after_only_expired_answers(run_cli: Cli, seeded: Path, tmp_path: Path) -> None:
    ok(run_cli("registry", "import", "--principal", "acme", EXAMPLES / "rpo-answers.csv", "--checked-at", days_ago(15)))
    due = tmp_path / "due.txt"
    ok(run_cli("registry", "due", "--principal", "acme", "-o", due))
    assert lines(due) == KNOWN
    # It expired at 00:00 today (Rome): valid until the minute before.
    assert check_json(run_cli, ROMA, "--dry-run", at=f"{today().isoformat()}T00:00")[1]["reasons"][:1] == [
        RPO_EXPIRED]
    late = check_json(run_cli, ROMA, "--dry-run", at=f"{days_ago(1)}T23:59")[1]["reasons"]
    assert RPO_EXPIRED not in late and RPO_NOT_CHECKED not in late


def test_due_from_a_campaign_list(
    run_cli: Cli, seeded: Path, tmp_path: Path, write_file: Callable[..., Path]
) -> None:
    listing = (EXAMPLES / "campaign-list.txt").read_text(encoding="utf-8")
    # The same number twice in other forms, and two rows that are not numbers (lines 9 and 11).
    campaign_list = write_file("list.txt", listing + "0039 347 765 4321\nnot a number\n+39 333-123-4567\n12345\n")
    due = tmp_path / "due.txt"
    code, _, err = run_cli("registry", "due", "--principal", "acme", "--from", campaign_list, "-o", due)
    assert code == 2, err
    assert "line 9" in err and "line 11" in err
    assert sorted(lines(due)) == lines(due) == sorted({*KNOWN, UNKNOWN})

    ok(run_cli("registry", "import", "--principal", "acme", EXAMPLES / "rpo-answers.csv",
               "--checked-at", today().isoformat()))
    code, _, err = run_cli("registry", "due", "--principal", "acme", "--from", campaign_list, "-o", due,
                           "--national")
    assert code == 2, err
    assert lines(due) == [NATIONAL[UNKNOWN]]

    # Only the list's numbers are considered: a known number without an answer is not in it.
    ok(run_cli("contract", "import", write_file("c.csv", "number,principal,start\n0961 123456,acme,2026-01-01\n")))
    short = write_file("short.txt", "338 000 1111\n06 4567 8901\n")
    ok(run_cli("registry", "due", "--principal", "acme", "--from", short, "-o", due))
    assert lines(due) == [UNKNOWN]
    ok(run_cli("registry", "due", "--principal", "acme", "-o", due))
    assert lines(due) == ["+390961123456"]


def test_due_for_a_campaign(run_cli: Cli, seeded: Path, tmp_path: Path) -> None:
    due = tmp_path / "due.txt"
    code, _, err = run_cli("registry", "due", "--campaign", "nosuch", "-o", due)
    assert code == 2
    assert "nosuch" in err and "Traceback" not in err
    assert not due.exists()

    # The campaign's numbers: its principal's consents and contracts, and the numbers it called.
    ok(run_cli("registry", "due", "--campaign", "autunno26", "-o", due))
    assert lines(due) == sorted([MOBILE_OK, MOBILE_REG])
    check_json(run_cli, UNKNOWN, at=None)  # a recorded call: the campaign called it
    ok(run_cli("registry", "due", "--campaign", "autunno26", "-o", due))
    assert lines(due) == sorted([MOBILE_OK, MOBILE_REG, UNKNOWN])


def test_due_without_a_campaign_includes_every_campaigns_numbers(run_cli: Cli, seeded: Path, tmp_path: Path) -> None:
    assert RPO_NOT_CHECKED in check_json(run_cli, UNKNOWN, at=None)[1]["reasons"]
    by_campaign, everything = tmp_path / "campaign.txt", tmp_path / "all.txt"
    ok(run_cli("registry", "due", "--campaign", "autunno26", "-o", by_campaign))
    assert UNKNOWN in lines(by_campaign)
    ok(run_cli("registry", "due", "--principal", "acme", "-o", everything))
    assert set(lines(by_campaign)) <= set(lines(everything))
    assert lines(everything) == sorted([*KNOWN, UNKNOWN])


# -- the round trip with the RPO's lists ---------------------------------------------------------------------


class Answered:
    def __init__(self, due: Path, registered: Path) -> None:
        self.due = due
        self.registered = registered


@pytest.fixture
def answered(run_cli: Cli, seeded: Path, tmp_path: Path, write_file: Callable[..., Path]) -> Answered:
    """`registry due` -> the RPO registers two of the submitted numbers -> `registry import` of both lists."""
    due = tmp_path / "due.txt"
    ok(run_cli("registry", "due", "--principal", "acme", "--national", "-o", due))
    submitted = lines(due)
    assert submitted == sorted(NATIONAL[n] for n in KNOWN)
    # The RPO answers with the registered ones, in its own order and format.
    registered = write_file("registered.txt", "".join(
        f"{n[:3]} {n[3:]}\n" for n in (NATIONAL[MOBILE_REG], NATIONAL[MILANO])))
    out = ok(run_cli("registry", "import", "--principal", "acme", "--submitted", due, "--registered", registered,
                     "--checked-at", today().isoformat()))
    assert "5 stored" in out and "registered 2, not registered 3" in out
    after = tmp_path / "after.txt"
    ok(run_cli("registry", "due", "--principal", "acme", "-o", after))
    assert lines(after) == []
    return Answered(due, registered)


def test_round_trip_decisions_follow_the_rpo_answer(run_cli: Cli, answered: Answered) -> None:
    for number in (MILANO, MOBILE_REG):
        code, result = check_json(run_cli, number)
        assert code == 1 and result["reasons"][0] == RPO_REGISTERED, result
    assert check_json(run_cli, MOBILE_REG)[1]["reasons"] == [RPO_REGISTERED, UNLISTED_NO_CONSENT]
    for number, basis in ((ROMA, "listed"), (FIRENZE, "listed"), (MOBILE_OK, "consent")):
        code, result = check_json(run_cli, number)
        assert (code, result["decision"], result["reasons"], result["basis"]) == (0, "allow", [], basis), result
    # Not submitted, so not answered.
    assert RPO_NOT_CHECKED in check_json(run_cli, UNKNOWN)[1]["reasons"]


def test_evidence_names_the_rpo_files_and_every_record_in_time_order(
    run_cli: Cli, run_cli_at: ClockedCliRunner, answered: Answered, write_file: Callable[..., Path]
) -> None:
    contract_start = days_ago(60)
    ok(run_cli("contract", "import", write_file("contracts.csv", "number,principal,start,end\n"
                                                                 f"347 765 4321,beta,{contract_start},\n")))
    yesterday = days_ago(1)
    ok(run_cli("optout", "import", write_file("optouts.csv", "number,at,principal,reference\n"
                                                             f"347 765 4321,{yesterday}T10:00,beta,call-77\n")))
    # Two recorded calls, each for its own moment (the commands' clocks set to it).
    first = check_json(lambda *args: run_cli_at(CALL_AT, *args), MOBILE_REG, at=None)[1]
    assert first["reasons"] == [RPO_REGISTERED, UNLISTED_NO_CONSENT]  # beta's refusal is not acme's
    ok(run_cli_at(f"{CALL_DAY}T11:30", "optout", "import", write_file("optouts2.csv", "number,at,principal\n"
                                                                  f"347 765 4321,{CALL_DAY}T11:30,acme\n")))
    second = check_json(lambda *args: run_cli_at(f"{CALL_DAY}T12:00", *args), MOBILE_REG, at=None)[1]
    assert second["reasons"][0] == OPTOUT

    items = evidence_json(run_cli, "347 765 4321")
    assert [i["kind"] for i in items] == [
        "consent", "contract", "optout", "rpo_answer", "decision", "optout", "decision"]
    consent, contract, refusal_beta, answer, decision1, refusal_acme, decision2 = items
    assert consent["principal"] == "acme" and consent["evidence"] == "rec:2024-05-02/1193"
    assert contract["principal"] == "beta" and contract["start"] == contract_start and contract["end"] is None
    assert refusal_beta["principal"] == "beta" and refusal_beta["reference"] == "call-77"
    assert refusal_acme["principal"] == "acme"
    # The RPO answer names the principal that obtained it and the import: for the lists form, each file
    # with its own name, size and SHA-256.
    assert answer["registered"] is True
    assert (answer["principal"], answer["controller"]) == ("acme", "acme")
    assert answer["files"] == [
        {"role": role, "name": f.name, "size": f.stat().st_size, "sha256": sha256(f)}
        for role, f in (("submitted", answered.due), ("registered", answered.registered))]
    assert "file_name" not in answer and "sha256" not in answer
    assert answer["time"] == datetime.combine(today(), dtime(0), ROME).astimezone(UTC).strftime(
        "%Y-%m-%dT%H:%M:%S.000000Z")
    for item, check in ((decision1, first), (decision2, second)):
        assert item["decision_id"] == check["decision_id"]
        assert (item["decision"], item["reasons"], item["campaign_id"]) == ("block", check["reasons"], "autunno26")
        assert item["time"] == check["at"] and item["recorded_at"] >= item["time"]

    # The text form lists the same records, oldest first.
    out = ok(run_cli("evidence", "347 765 4321"))
    header, *rows = out.splitlines()
    assert f"{len(items)} record(s)" in header
    assert len(rows) == len(items)
    assert [r[:19] for r in rows] == sorted(r[:19] for r in rows)
    assert "RPO answer obtained by [acme]: REGISTERED" in rows[3]
    for f in (answered.due, answered.registered):
        assert f"file {f.name}, {f.stat().st_size} bytes, sha256 {sha256(f)}" in rows[3]
    assert "decision BLOCK" in rows[4] and "rpo_registered,unlisted_no_consent" in rows[4]
    assert "reasons optout" in rows[6]
    assert "refusal" in rows[2] and "contract" in rows[1] and "consent" in rows[0]

    assert [i["kind"] for i in evidence_json(run_cli, "347 765 4321", "--principal", "acme")] == [
        "consent", "rpo_answer", "decision", "optout", "decision"]
    # acme's RPO answer is acme's: beta's evidence does not show it (answers are per data controller).
    assert [i["kind"] for i in evidence_json(run_cli, "347 765 4321", "--principal", "beta")] == [
        "contract", "optout"]
    code, _, err = run_cli("evidence", "347 765 4321", "--principal", "nosuch")
    assert code == 2 and "nosuch" in err


def test_evidence_of_a_csv_import_names_the_file(run_cli: Cli, seeded: Path) -> None:
    ok(run_cli("registry", "import", "--principal", "acme", EXAMPLES / "rpo-answers.csv", "--checked-at", days_ago(2)))
    # Checked two days ago, listed (the directory import) today: the answer comes first.
    answer, listing = evidence_json(run_cli, "06 4567 8901")
    assert (answer["kind"], listing["kind"]) == ("rpo_answer", "directory_listing")
    assert listing["file_name"] == "directory.txt"
    assert listing["sha256"] == sha256(EXAMPLES / "directory.txt")
    assert answer["registered"] is False
    assert answer["file_name"] == "rpo-answers.csv"
    assert answer["file_size"] == (EXAMPLES / "rpo-answers.csv").stat().st_size
    assert answer["sha256"] == sha256(EXAMPLES / "rpo-answers.csv")
    [milano] = [i for i in evidence_json(run_cli, MILANO) if i["kind"] == "rpo_answer"]
    assert milano["registered"] is True and milano["registered_at"] == "2025-03-09T23:00:00.000000Z"


def _snapshot(run_cli: Cli) -> tuple[str, list[Any]]:
    """Every decision for the campaign list (scrub records nothing) and the evidence of two numbers."""
    code, out, err = run_cli("scrub", EXAMPLES / "campaign-list.txt", "--campaign", "autunno26", "--at", CALL_AT)
    assert code == 0, err
    assert out.count("\n") == 7 and "rpo_registered" in out
    return out, [evidence_json(run_cli, number) for number in (MILANO, ROMA)]


def test_reimporting_the_same_file_changes_nothing(run_cli: Cli, answered: Answered) -> None:
    ok(run_cli("registry", "import", "--principal", "acme", EXAMPLES / "rpo-answers.csv",
               "--checked-at", days_ago(1)))
    before = _snapshot(run_cli)
    out = ok(run_cli("registry", "import", "--principal", "acme", "--submitted", answered.due,
                     "--registered", answered.registered, "--checked-at", today().isoformat()))
    assert "already imported" in out
    out = ok(run_cli("registry", "import", "--principal", "acme", EXAMPLES / "rpo-answers.csv",
                     "--checked-at", days_ago(1)))
    assert "already imported" in out
    assert _snapshot(run_cli) == before


# -- contracts and refusals ----------------------------------------------------------------------------------


@pytest.fixture
def registered_listed(run_cli: Cli, seeded: Path, write_file: Callable[..., Path]) -> None:
    """Both listed fixed numbers of the examples registered today: only a consent given within a contract can
    let them through (a contract alone is no basis)."""
    answers = write_file("answers.csv", f"{MILANO},registered\n{FIRENZE},registered\n{ROMA},not_registered\n")
    ok(run_cli("registry", "import", "--principal", "acme", answers, "--checked-at", today().isoformat()))
    for number in (MILANO, FIRENZE):
        assert check_json(run_cli, number, "--dry-run")[1]["reasons"] == [RPO_REGISTERED]


def test_contract_import(run_cli: Cli, registered_listed: None, write_file: Callable[..., Path]) -> None:
    code, _, err = run_cli("contract", "import", write_file("nostart.csv", "number,principal\n02 1234 5678,acme\n"))
    assert code == 2 and "start" in err.split("missing:")[-1]
    code, _, err = run_cli("contract", "import", write_file("noheader.csv", "02 1234 5678,acme,2025-01-01\n"))
    assert code == 2 and "missing" in err

    ended_30 = (CALL_DAY - timedelta(days=30)).isoformat()
    ended_31 = (CALL_DAY - timedelta(days=31)).isoformat()
    good = f"02 1234 5678,acme,2025-01-01,{ended_30}\n055 234 5678,acme,2025-01-01,{ended_31}\n"
    bad = write_file("bad.csv", "number,principal,start,end\n" + good.splitlines()[0] + "\n"
                     "12345,acme,2025-01-01,\n"  # line 3: not a number
                     "06 4567 8901,nosuch,2025-01-01,\n"  # line 4: unknown principal
                     + good.splitlines()[1] + "\n"
                     "06 4567 8901,acme,2025-02-01,2025-01-01\n")  # line 6: ends before it starts
    code, _, err = run_cli("contract", "import", bad)
    assert code == 2
    assert [n for n in (3, 4, 6) if f"line {n}:" in err] == [3, 4, 6] and "line 2:" not in err
    assert "line 5:" not in err
    for number in (MILANO, FIRENZE):
        assert [i for i in evidence_json(run_cli, number) if i["kind"] == "contract"] == []
        assert check_json(run_cli, number, "--dry-run")[1]["reasons"] == [RPO_REGISTERED]

    out = ok(run_cli("contract", "import", bad, "--skip-invalid"))
    assert "2 stored, 3 rejected" in out
    assert check_json(run_cli, MILANO)[1]["reasons"] == [RPO_REGISTERED]  # no consent within it yet
    ok(run_cli("consent", "import", write_file("within.csv", "number,principal,given_at,evidence\n"
                                               "02 1234 5678,acme,2025-06-01T10:00,contract-form-1\n"
                                               "055 234 5678,acme,2025-06-01T10:00,contract-form-2\n")))
    # Ended 30 days before the call: still covers it. Ended 31 days before: no longer.
    code, result = check_json(run_cli, MILANO)
    assert (code, result["decision"], result["basis"]) == (0, "allow", "contract"), result
    assert check_json(run_cli, FIRENZE)[1]["reasons"] == [RPO_REGISTERED]

    # The same contracts again, written differently: nothing new is stored.
    again = write_file("again.csv", "start,end,number,principal\n" + f"2025-01-01,{ended_31},+39 055 234 5678,acme\n"
                       f"2025-01-01,{ended_30},0212345678,acme\n")
    out = ok(run_cli("contract", "import", again))
    assert "0 stored" in out and "duplicates 2" in out
    assert len([i for i in evidence_json(run_cli, MILANO) if i["kind"] == "contract"]) == 1


def test_optout_import(run_cli: Cli, registered_listed: None, write_file: Callable[..., Path]) -> None:
    code, _, err = run_cli("optout", "import", write_file("noat.csv", "number,principal\n06 4567 8901,acme\n"))
    assert code == 2 and "at" in err.split("missing:")[-1]
    before = check_json(run_cli, ROMA, "--dry-run")[1]
    assert (before["decision"], before["basis"]) == ("allow", "listed")

    yesterday = days_ago(1)
    bad = write_file("bad.csv", "number,at,principal,reference\n"
                     f"06 4567 8901,{yesterday}T18:00,acme,call-1\n"
                     f"06 1,{yesterday}T18:00,,\n"  # line 3: not a number
                     f"333 123 4567,{yesterday}T18:00,nosuch,\n"  # line 4: unknown principal
                     "333 123 4567,yesterday,,\n"  # line 5: not a time
                     f"333 123 4567,{yesterday}T19:00,beta,letter-9\n")
    code, _, err = run_cli("optout", "import", bad)
    assert code == 2
    assert all(f"line {n}:" in err for n in (3, 4, 5)) and "line 2:" not in err and "line 6:" not in err
    assert check_json(run_cli, ROMA, "--dry-run")[1]["decision"] == "allow"
    assert [i for i in evidence_json(run_cli, ROMA) if i["kind"] == "optout"] == []

    out = ok(run_cli("optout", "import", bad, "--skip-invalid"))
    assert "2 stored, 3 rejected" in out
    out = ok(run_cli("optout", "import", bad, "--skip-invalid"))  # the same file again
    assert "already imported" in out or " 0 stored" in out
    code, result = check_json(run_cli, ROMA)
    assert code == 1 and result["reasons"] == [OPTOUT]
    # A refusal to beta does not block acme's campaign.
    assert OPTOUT not in check_json(run_cli, MOBILE_OK)[1]["reasons"]

    again = write_file("again.csv", "reference,principal,number,at\n"
                       f"call-1,acme,+390645678901,{yesterday}T18:00\n"
                       f"letter-9,beta,3331234567,{yesterday}T19:00\n")
    out = ok(run_cli("optout", "import", again))
    assert "0 stored" in out and "duplicates 2" in out
    assert len([i for i in evidence_json(run_cli, ROMA) if i["kind"] == "optout"]) == 1

    # A refusal without a principal covers every principal.
    ok(run_cli("optout", "import", write_file("all.csv", f"number,at\n055 234 5678,{yesterday}T09:00\n")))
    assert check_json(run_cli, FIRENZE)[1]["reasons"][0] == OPTOUT
    kinds = [i["kind"] for i in evidence_json(run_cli, FIRENZE, "--principal", "beta")]
    assert sorted(kinds) == ["directory_listing", "optout"]  # acme's RPO answer is not beta's


# -- the FastAGI gate sees what is imported while it runs -------------------------------------------------


@pytest.fixture
def server(seeded: Path, tmp_path: Path, cli_env: dict[str, str], cli_script: str) -> Iterator[int]:
    with running_serve(cli_script, cli_env, tmp_path) as (_, port):
        yield port


def _session(port: int, number: str) -> tuple[str, list[str]]:
    transcript = run_once(play(port, make_env("check?campaign=autunno26", (number,))))
    assert transcript.agistatus == "SUCCESS" and not transcript.failure, transcript.written
    assert transcript.variables[VAR_NUMBER] == number
    return transcript.variables[VAR_DECISION], transcript.variables[VAR_REASONS].split(",")


def test_serve_answers_from_data_imported_after_it_started(
    run_cli: Cli, server: int, write_file: Callable[..., Path]
) -> None:
    for number in (MILANO, ROMA, MOBILE_OK):
        assert RPO_NOT_CHECKED in _session(server, number)[1]

    ok(run_cli("registry", "import", "--principal", "acme", EXAMPLES / "rpo-answers.csv", "--checked-at", days_ago(1)))
    decision, reasons = _session(server, MILANO)
    assert decision == CHANNEL_BLOCK and reasons[0] == RPO_REGISTERED and RPO_NOT_CHECKED not in reasons
    for number in (ROMA, MOBILE_OK):
        reasons = _session(server, number)[1]
        assert not {RPO_NOT_CHECKED, RPO_REGISTERED, RPO_EXPIRED, UNLISTED_NO_CONSENT} & set(reasons), reasons

    ok(run_cli("optout", "import", write_file("o.csv", f"number,at,principal\n06 4567 8901,{days_ago(1)},acme\n")))
    assert _session(server, ROMA)[1][0] == OPTOUT

    # Every session was recorded, and the gate's decisions show in the evidence.
    decisions = [i for i in evidence_json(run_cli, MILANO) if i["kind"] == "decision"]
    assert [(d["source"], d["reasons"][0]) for d in decisions] == [
        ("fastagi", RPO_NOT_CHECKED), ("fastagi", RPO_REGISTERED)]
    ok(run_cli("audit", "verify"))
