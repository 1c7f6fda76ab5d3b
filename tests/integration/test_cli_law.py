"""The law through the `rpoguard` command, scenario by scenario: what a compliance lawyer would try.

- RPO answers belong to the principal (data controller) that consulted the RPO: a call centre working for
  ACME and Beta never calls for Beta on ACME's answer;
- the three forms of an answer (rows, the registered list, the RPO's cleaned list), each read whole;
- a contract saves the consents given within it, never stands alone;
- `check --at` and `scrub --at` decide with the world as it stood then: the answers checked by then, the
  directory as it was listed then; they are simulations, never recorded and never counted;
- history is never rewritten: an empty directory file is refused, a replaced listing keeps its period, a
  second revocation is noted beside the first, every input file keeps its own name and SHA-256;
- a database of rpoguard 1 is upgraded and says what it did.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from support.fakeclock import ClockedCliRunner
from support.schema1 import NUM, OTHER, V1_ROWS, v1_sqlite

Cli = Callable[..., Any]

ROMA = "+390645678901"
MOBILE = "+393331234567"
MOBILE_TIM = "+393901000070"  # a 390 mobile whose digits after 39 also spell a Genoa number
CHECKED = "2026-11-20"
AT = "2026-11-24T11:00"  # a Tuesday, inside the calling hours


def ok(result: Any) -> str:
    code, out, err = result
    assert code == 0, (out, err)
    assert "Traceback" not in err
    return str(out)


def refused(result: Any, *words: str) -> str:
    code, out, err = result
    assert code == 2, (out, err)
    assert "Traceback" not in err
    for word in words:
        assert word in err, err
    return str(err)


def check(run_cli: Cli, number: str, campaign: str, at: str = AT, *extra: str) -> dict[str, Any]:
    code, out, err = run_cli("check", number, "--campaign", campaign, "--at", at, "--json", "--dry-run", *extra)
    assert code in (0, 1), err
    result: dict[str, Any] = json.loads(out)
    return result


@pytest.fixture
def two_principals(run_cli: Cli, write_file: Callable[..., Path]) -> None:
    """A call centre working for ACME and Beta: one campaign each, the directory listing ROMA."""
    for args in (("principal", "add", "acme", "--name", "ACME Energia"),
                 ("principal", "add", "beta", "--name", "Beta Telco"),
                 ("campaign", "add", "acme-c", "--principal", "acme"),
                 ("campaign", "add", "beta-c", "--principal", "beta"),
                 ("directory", "import", write_file("dir.txt", "06 4567 8901\n"), "--listed-at", CHECKED)):
        ok(run_cli(*args))


# -- answers per data controller ---------------------------------------------------------------------------


def test_a_call_for_beta_never_rests_on_acmes_answer(
    run_cli: Cli, two_principals: None, write_file: Callable[..., Path]
) -> None:
    answer = write_file("acme-answer.csv", "06 4567 8901,not_registered\n")
    out = ok(run_cli("registry", "import", answer, "--checked-at", CHECKED, "--principal", "acme"))
    assert "answers of principal acme" in out
    assert check(run_cli, ROMA, "acme-c")["decision"] == "allow"
    # The false ALLOW this prevents: Beta's call on ACME's "not registered".
    beta = check(run_cli, ROMA, "beta-c")
    assert (beta["decision"], beta["reasons"]) == ("block", ["rpo_not_checked"])
    # Beta's own answer may differ (the citizen lifted the opposition for ACME only).
    ok(run_cli("registry", "import", write_file("beta-answer.csv", "06 4567 8901,registered\n"),
               "--checked-at", CHECKED, "--principal", "beta"))
    assert check(run_cli, ROMA, "beta-c")["reasons"] == ["rpo_registered"]
    assert check(run_cli, ROMA, "acme-c")["decision"] == "allow"

    evidence = json.loads(ok(run_cli("evidence", "06 4567 8901", "--json")))["items"]
    answers = sorted((i["principal"], i["registered"]) for i in evidence if i["kind"] == "rpo_answer")
    assert answers == [("acme", False), ("beta", True)]
    text = ok(run_cli("evidence", "06 4567 8901", "--principal", "beta"))
    assert "RPO answer obtained by [beta]: REGISTERED" in text and "[acme]" not in text


def test_which_principal_an_import_belongs_to(
    run_cli: Cli, two_principals: None, write_file: Callable[..., Path]
) -> None:
    answer = write_file("answer.csv", "06 4567 8901,not_registered\n")
    refused(run_cli("registry", "import", answer, "--checked-at", CHECKED), "--principal is required",
            "2 principals exist (acme, beta)")
    refused(run_cli("registry", "import", answer, "--checked-at", CHECKED, "--principal", "gamma"),
            "principal 'gamma' does not exist")
    refused(run_cli("registry", "due", "-o", "due.txt"), "--principal is required")
    code, _, err = run_cli("registry", "due", "-o", "due.txt", "--principal", "acme", "--campaign", "beta-c")
    assert code == 2 and "not allowed with argument" in err


def test_with_one_principal_nothing_changes_for_the_operator(
    run_cli: Cli, write_file: Callable[..., Path], tmp_path: Path
) -> None:
    # No principal yet: an answer cannot belong to anyone.
    answer = write_file("answer.csv", "06 4567 8901,not_registered\n")
    refused(run_cli("registry", "import", answer, "--checked-at", CHECKED), "no principal exists yet")
    ok(run_cli("principal", "add", "acme", "--name", "ACME Energia"))
    ok(run_cli("campaign", "add", "acme-c", "--principal", "acme"))
    out = ok(run_cli("registry", "import", answer, "--checked-at", CHECKED))
    assert "1 row(s) read, 1 stored, 0 rejected" in out and "answers of principal acme" in out
    due = tmp_path / "due.txt"
    code, _, err = run_cli("registry", "due", "-o", due, "--within", "30")
    assert code == 0 and "for principal acme" in err
    assert due.read_text().split() == [ROMA]


def test_due_lists_what_each_controller_must_submit(
    run_cli: Cli, two_principals: None, write_file: Callable[..., Path], tmp_path: Path
) -> None:
    ok(run_cli("consent", "import", write_file("consents.csv", "number,principal,given_at,evidence\n"
                                                              "333 123 4567,beta,2026-10-01,form-1\n")))
    ok(run_cli("registry", "import", write_file("a.csv", "06 4567 8901,0\n"), "--checked-at", "2026-12-01",
               "--principal", "acme"))
    acme, beta, campaign = tmp_path / "acme.txt", tmp_path / "beta.txt", tmp_path / "campaign.txt"
    ok(run_cli("registry", "due", "--principal", "acme", "-o", acme))
    ok(run_cli("registry", "due", "--principal", "beta", "-o", beta))
    ok(run_cli("registry", "due", "--campaign", "beta-c", "-o", campaign))
    # acme holds a fresh answer for ROMA; beta holds none, and beta's consent names MOBILE.
    assert acme.read_text().split() == []
    assert beta.read_text().split() == [ROMA, MOBILE]
    assert campaign.read_text().split() == [MOBILE]


# -- the three forms of an answer --------------------------------------------------------------------------


def test_the_cleaned_list_form(run_cli: Cli, two_principals: None, write_file: Callable[..., Path]) -> None:
    submitted = write_file("submitted.txt", "06 4567 8901\n333 123 4567\n")
    cleansed = write_file("cleansed.txt", "333 123 4567\n")
    out = ok(run_cli("registry", "import", "--submitted", submitted, "--cleansed", cleansed, "--checked-at", CHECKED,
                     "--principal", "acme"))
    assert "registered 1, not registered 1" in out
    assert check(run_cli, ROMA, "acme-c")["reasons"] == ["rpo_registered"]
    assert check(run_cli, MOBILE, "acme-c")["reasons"] == ["unlisted_no_consent"]
    evidence = json.loads(ok(run_cli("evidence", "06 4567 8901", "--json")))["items"]
    (answer,) = [i for i in evidence if i["kind"] == "rpo_answer"]
    assert [(f["role"], f["name"]) for f in answer["files"]] == [("submitted", "submitted.txt"),
                                                                ("cleansed", "cleansed.txt")]


@pytest.mark.parametrize("form", ["--registered", "--cleansed"])
def test_a_two_list_answer_with_an_unreadable_row_is_refused_whole(
    run_cli: Cli, two_principals: None, write_file: Callable[..., Path], form: str
) -> None:
    submitted = write_file("submitted.txt", "06 4567 8901\n333 123 4567\n")
    answer = write_file("answer.txt", "333 123 4567\n333 12X 4567\n")
    base = ("registry", "import", "--submitted", submitted, form, answer, "--checked-at", CHECKED,
            "--principal", "acme")
    err = refused(run_cli(*base), "line 2", "answer.txt", "read whole or not at all")
    assert "--skip-invalid to import the rest" not in err
    refused(run_cli(*base, "--skip-invalid"), "--skip-invalid does not apply to a two-list answer", "line 2")
    assert check(run_cli, ROMA, "acme-c")["reasons"] == ["rpo_not_checked"]
    # With both lists clean, the flag is only a note: the answer lands.
    good = write_file("good.txt", "333 123 4567\n")
    code, out, err = run_cli("registry", "import", "--submitted", submitted, form, good, "--checked-at", CHECKED,
                             "--principal", "acme", "--skip-invalid")
    assert code == 0 and "does not apply" in err and "3 row(s) read, 2 stored, 0 rejected" in out
    refused(run_cli("registry", "import", "--submitted", submitted, "--registered", answer, "--cleansed", answer,
                    "--checked-at", CHECKED, "--principal", "acme"), "not both")


def test_opposite_answers_in_one_file_are_named(
    run_cli: Cli, two_principals: None, write_file: Callable[..., Path]
) -> None:
    answer = write_file("answer.csv", "number,status\n06 4567 8901,not_registered\n333 123 4567,0\n"
                                      "+39 06 4567 8901,registered\n")
    out = ok(run_cli("registry", "import", answer, "--checked-at", CHECKED, "--principal", "acme"))
    assert "opposite answers 1" in out
    assert "note: 1 number(s) answered both registered and not registered in this file: stored as registered" in out
    assert f"{ROMA} lines 4 (registered) and 2 (not registered)" in out
    assert check(run_cli, ROMA, "acme-c")["reasons"] == ["rpo_registered"]


# -- a contract saves the consents given within it -----------------------------------------------------------


def test_a_contract_alone_is_no_basis_for_a_registered_number(
    run_cli: Cli, two_principals: None, write_file: Callable[..., Path]
) -> None:
    ok(run_cli("registry", "import", write_file("a.csv", "06 4567 8901,registered,2025-03-10\n"),
               "--checked-at", CHECKED, "--principal", "acme"))
    ok(run_cli("contract", "add", "06 4567 8901", "--principal", "acme", "--start", "2025-01-01"))
    assert check(run_cli, ROMA, "acme-c")["reasons"] == ["rpo_registered"]
    # A consent given before the contract began is not saved by it.
    ok(run_cli("consent", "add", "06 4567 8901", "--principal", "acme", "--given-at", "2024-12-20T10:00",
               "--evidence", "rec-1"))
    assert check(run_cli, ROMA, "acme-c")["reasons"] == ["rpo_registered"]
    # One given within it is, and the decision cites both.
    ok(run_cli("consent", "add", "06 4567 8901", "--principal", "acme", "--given-at", "2025-02-01T10:00",
               "--evidence", "rec-2"))
    result = check(run_cli, ROMA, "acme-c")
    assert (result["decision"], result["basis"]) == ("allow", "contract")
    assert result["evidence"]["consent_evidence"] == "rec-2"
    # The contract and the consent are ACME's: Beta's campaign has neither (nor an answer).
    assert check(run_cli, ROMA, "beta-c")["reasons"] == ["rpo_not_checked"]


def test_the_registration_day_is_read_whole(run_cli: Cli, two_principals: None,
                                            write_file: Callable[..., Path]) -> None:
    # Registered since 20 November (a date): a consent of 10:00 that day cannot be shown to follow it.
    ok(run_cli("registry", "import", write_file("a.csv", f"06 4567 8901,registered,{CHECKED}\n"),
               "--checked-at", f"{CHECKED}T16:00", "--principal", "acme"))
    ok(run_cli("consent", "add", "06 4567 8901", "--principal", "acme", "--given-at", f"{CHECKED}T10:00",
               "--evidence", "rec-1"))
    assert check(run_cli, ROMA, "acme-c")["reasons"] == ["rpo_registered"]
    ok(run_cli("consent", "add", "06 4567 8901", "--principal", "acme", "--given-at", "2026-11-21T00:00",
               "--evidence", "rec-2"))
    assert check(run_cli, ROMA, "acme-c")["basis"] == "consent"


# -- decisions as of any moment ------------------------------------------------------------------------------


def test_check_and_scrub_at_a_past_moment_see_the_world_as_it_stood(
    run_cli: Cli, two_principals: None, write_file: Callable[..., Path], tmp_path: Path
) -> None:
    ok(run_cli("registry", "import", write_file("nov20.csv", "06 4567 8901,not_registered\n"),
               "--checked-at", CHECKED, "--principal", "acme"))
    ok(run_cli("registry", "import", write_file("nov26.csv", "06 4567 8901,registered\n"),
               "--checked-at", "2026-11-26", "--principal", "acme"))
    # A later directory extract no longer lists ROMA: its listing ends, it is not deleted.
    out = ok(run_cli("directory", "import", write_file("dir2.txt", "055 234 5678\n"), "--listed-at", "2026-11-25"))
    assert "ended 1" in out
    # On the 24th: the answer of the 20th (the one of the 26th was not yet checked), ROMA still listed.
    on_24 = check(run_cli, ROMA, "acme-c", "2026-11-24T11:00")
    assert (on_24["decision"], on_24["basis"]) == ("allow", "listed")
    assert on_24["evidence"]["rpo_checked_at"] == "2026-11-19T23:00:00.000000Z"
    # On the 27th: registered, and no longer listed.
    assert check(run_cli, ROMA, "acme-c", "2026-11-27T11:00")["reasons"] == ["rpo_registered",
                                                                            "unlisted_no_consent"]
    # Before the first answer and before the first extract: not checked yet, not yet known to be listed.
    assert check(run_cli, ROMA, "acme-c", "2026-11-19T11:00")["reasons"] == ["rpo_not_checked",
                                                                            "unlisted_no_consent"]
    # scrub --at decides the same way.
    scrubbed = tmp_path / "scrub.csv"
    ok(run_cli("scrub", write_file("list.txt", "06 4567 8901\n"), "--campaign", "acme-c", "--at", "2026-11-24T11:00",
               "-o", scrubbed))
    (row,) = list(csv.DictReader(io.StringIO(scrubbed.read_text())))
    assert (row["decision"], row["basis"]) == ("allow", "listed")
    # The evidence keeps the ended listing period.
    text = ok(run_cli("evidence", "06 4567 8901"))
    assert "listed in the public directory until" in text and "no longer listed in the public directory" in text


def test_an_answer_cannot_be_dated_after_its_import(
    run_cli: Cli, two_principals: None, write_file: Callable[..., Path]
) -> None:
    # A "registered" answer dated tomorrow would be ignored until then, leaving today's decisions on an older
    # "not registered" answer: refused. A day's slack was once allowed; a few minutes of clock skew remain.
    answer = write_file("a.csv", "06 4567 8901,registered\n")
    tomorrow = (datetime.now(UTC) + timedelta(hours=20)).isoformat(timespec="seconds")
    refused(run_cli("registry", "import", answer, "--checked-at", tomorrow, "--principal", "acme"), "in the future")
    soon = (datetime.now(UTC) + timedelta(minutes=2)).isoformat(timespec="seconds")
    ok(run_cli("registry", "import", answer, "--checked-at", soon, "--principal", "acme"))


def test_an_older_directory_extract_cannot_replace_a_newer_one(
    run_cli: Cli, two_principals: None, write_file: Callable[..., Path]
) -> None:
    refused(run_cli("directory", "import", write_file("old.txt", "055 234 5678\n"), "--listed-at", "2026-11-01"),
            "older than the directory already stored")
    refused(run_cli("directory", "import", write_file("future.txt", "055 234 5678\n"), "--listed-at", "2099-01-01"),
            "in the future")
    assert check(run_cli, ROMA, "acme-c", AT)["reasons"] == ["rpo_not_checked"]  # still listed: no unlisted


# -- every real Italian number -------------------------------------------------------------------------------


def test_a_390_mobile_is_read_as_national_everywhere(
    run_cli: Cli, two_principals: None, write_file: Callable[..., Path]
) -> None:
    out = ok(run_cli("registry", "import", write_file("a.csv", "3901000070,not_registered\n"), "--checked-at",
                     CHECKED, "--principal", "acme"))
    assert "1 stored, 0 rejected" in out
    ok(run_cli("consent", "add", "3901000070", "--principal", "acme", "--given-at", "2026-10-01",
               "--evidence", "form-9"))
    result = check(run_cli, "3901000070", "acme-c")
    assert (result["number"], result["decision"], result["basis"]) == (MOBILE_TIM, "allow", "consent")


# -- upgrading a database of rpoguard 1 ---------------------------------------------------------------------------


def test_an_rpoguard_1_database_is_upgraded_and_says_what_it_did(run_cli: Cli, db_path: Path) -> None:
    v1_sqlite(db_path, ["acme", "beta"], V1_ROWS)
    code, out, err = run_cli("db", "migrate")
    assert code == 0, err
    assert "schema up to date (version 5)" in out
    assert "cannot be attributed, because 2 principals exist (acme, beta)" in err
    assert "rpoguard registry import FILE --checked-at DATE --principal ID" in err
    # Said once: the next command finds nothing to upgrade.
    code, _, err = run_cli("db", "migrate")
    assert (code, err) == (0, "")
    text = ok(run_cli("evidence", NUM))
    assert "of controller unknown" in text
    assert check(run_cli, OTHER, "acme-c")["reasons"][0] == "rpo_not_checked"


# -- simulations are never recorded, and history is never rewritten (issue 14) -------------------------------------


def test_check_at_is_a_simulation_never_recorded_never_counted(
    run_cli: Cli, run_cli_at: ClockedCliRunner, two_principals: None, write_file: Callable[..., Path]
) -> None:
    ok(run_cli("campaign", "add", "capped", "--principal", "acme", "--max-attempts", "1", "--per-days", "7"))
    ok(run_cli("registry", "import", write_file("a.csv", "06 4567 8901,not_registered\n"), "--checked-at", CHECKED,
               "--principal", "acme"))
    # Without --dry-run, and twice: a decision as of another moment is never recorded, never counted.
    for _ in range(2):
        code, out, _ = run_cli("check", ROMA, "--campaign", "capped", "--at", AT, "--json")
        result = json.loads(out)
        assert (code, result["decision"], result["recorded"], result["decision_id"]) == (0, "allow", False, None)
    text = ok(run_cli("check", ROMA, "--campaign", "capped", "--at", "2026-11-26T11:00"))
    assert "simulation as of 2026-11-26T11:00:00+01:00: not recorded" in text
    assert ok(run_cli("audit", "export", "--format", "jsonl")) == ""
    # A check recorded at AT (its own clock) is the first attempt, one a minute later the cap's block.
    first = json.loads(ok(run_cli_at(AT, "check", ROMA, "--campaign", "capped", "--json")))
    assert (first["decision"], first["recorded"]) == ("allow", True)
    code, out, _ = run_cli_at("2026-11-24T11:01", "check", ROMA, "--campaign", "capped", "--json")
    assert (code, json.loads(out)["reasons"]) == (1, ["attempt_limit"])
    # Each row carries the call time and the moment it was written, in both export formats.
    rows = [json.loads(line) for line in ok(run_cli("audit", "export", "--format", "jsonl")).splitlines()]
    assert [r["decision"] for r in rows] == ["allow", "block"]
    assert all(r["time"].startswith(("2026-11-24T10:00:", "2026-11-24T10:01:")) and r["recorded_at"] >= r["time"]
               for r in rows)
    (header, *lines) = list(csv.reader(io.StringIO(ok(run_cli("audit", "export")))))
    assert header[2:4] == ["time", "recorded_at"]
    assert [line[3] for line in lines] == [r["recorded_at"] for r in rows]
    decisions = [i for i in json.loads(ok(run_cli("evidence", ROMA, "--json")))["items"] if i["kind"] == "decision"]
    assert [d["recorded_at"] for d in decisions] == [r["recorded_at"] for r in rows]
    assert "audit log intact: 2 decision(s)" in ok(run_cli("audit", "verify"))


@pytest.mark.parametrize("content", ["", "\n  \n\n", "numero\n", "number\r\n\r\n"])
def test_a_directory_file_without_a_number_is_refused(
    run_cli: Cli, two_principals: None, write_file: Callable[..., Path], content: str
) -> None:
    empty = write_file("empty.txt", content)
    before = ok(run_cli("evidence", ROMA))
    for extra in ((), ("--append",)):
        code, out, err = run_cli("directory", "import", empty, *extra)
        assert (code, out) == (2, "")
        assert err.startswith(f"rpoguard: {empty}: no number to import") and err.count("\n") == 1, err
        assert "--allow-empty" in err
    assert ok(run_cli("evidence", ROMA)) == before
    assert check(run_cli, ROMA, "acme-c")["reasons"] == ["rpo_not_checked"]  # still listed


def test_a_replacing_directory_import_says_what_it_ends_and_keeps_its_history(
    run_cli: Cli, two_principals: None, write_file: Callable[..., Path]
) -> None:
    out = ok(run_cli("directory", "import", write_file("dir2.txt", "055 234 5678\n"), "--listed-at", "2026-11-25"))
    assert "listings: 1 started, 0 kept, 1 ended" in out
    assert "file dir2.txt, 13 bytes, sha256 " in out
    # An empty directory is possible, but only when said so: it ends every listing, and they stay as periods.
    empty = write_file("empty.txt", "")
    out = ok(run_cli("directory", "import", empty, "--allow-empty", "--listed-at", "2026-11-26"))
    assert "listings: 0 started, 0 kept, 1 ended" in out
    for number, ended_by, since in ((ROMA, "dir2.txt", "dir.txt"), ("055 234 5678", "empty.txt", "dir2.txt")):
        text = ok(run_cli("evidence", number))
        (ended,) = [line for line in text.splitlines() if "no longer listed" in line]
        assert f"file {ended_by}" in ended and f"file {since}" in ended, ended
        assert "listed in the public directory until" in text
    assert hashlib.sha256(b"").hexdigest() in ok(run_cli("evidence", "055 234 5678"))
    # As the directory stood before, the earlier listings still count.
    assert check(run_cli, ROMA, "acme-c", "2026-11-24T11:00")["reasons"] == ["rpo_not_checked"]
    assert check(run_cli, ROMA, "acme-c", "2026-11-27T11:00")["reasons"] == ["rpo_not_checked",
                                                                            "unlisted_no_consent"]


def test_a_second_revocation_is_noted_never_substituted(
    run_cli: Cli, two_principals: None, write_file: Callable[..., Path]
) -> None:
    ok(run_cli("consent", "add", "333 123 4567", "--principal", "acme", "--given-at", "2026-10-01",
               "--evidence", "form-1"))
    out = ok(run_cli("consent", "revoke", "333 123 4567", "--principal", "acme", "--at", "2026-11-10T10:00"))
    assert "consent #1 of +393331234567 to acme revoked at 2026-11-10T10:00:00+01:00" in out
    out = ok(run_cli("consent", "revoke", "333 123 4567", "--principal", "acme", "--at", "2026-11-15T10:00"))
    assert "already revoked at 2026-11-10T10:00:00+01:00; this revocation (at 2026-11-15T10:00:00+01:00) noted" in out
    # One naming an earlier moment never favours the call: decisions count the consent revoked from then.
    out = ok(run_cli("consent", "revoke", "333 123 4567", "--principal", "acme", "--at", "2026-11-05T10:00"))
    assert "decisions count the consent revoked from 2026-11-05T10:00:00+01:00" in out
    # (No RPO answer: rpo_not_checked always; the consent decides unlisted_no_consent.)
    assert check(run_cli, MOBILE, "acme-c", "2026-11-04T11:00")["reasons"] == ["rpo_not_checked"]
    assert check(run_cli, MOBILE, "acme-c", "2026-11-06T11:00")["reasons"] == ["rpo_not_checked",
                                                                              "unlisted_no_consent"]
    items = json.loads(ok(run_cli("evidence", "333 123 4567", "--json")))["items"]
    (first,) = [i for i in items if i["kind"] == "consent" and i["consent_id"] == 1]
    assert first["revoked_at"] == "2026-11-10T09:00:00.000000Z"  # the record as first written
    assert [(i["kind"], i["revoked_at"], i["earlier"]) for i in items if i["kind"].startswith("consent_revoked")] == [
        ("consent_revoked", "2026-11-10T09:00:00.000000Z", False),
        ("consent_revoked_again", "2026-11-15T09:00:00.000000Z", False),
        ("consent_revoked_again", "2026-11-05T09:00:00.000000Z", True)]
    text = ok(run_cli("evidence", "333 123 4567"))
    assert "revocation from 2026-11-05T10:00:00+01:00 noted, already revoked from 2026-11-10T10:00:00+01:00" in text
    # A recorded consent is never changed: restated with other details, it is refused.
    refused(run_cli("consent", "add", "333 123 4567", "--principal", "acme", "--given-at", "2026-10-01",
                    "--evidence", "form-1", "--expires-at", "2027-01-01"),
            "consent #1", "is already recorded with expires_at none (asked 2027-01-01T00:00:00+01:00)",
            "never changed", "consent revoke")
    bad = write_file("c.csv", "number,principal,given_at,evidence,automated\n333 123 4567,acme,2026-10-01,form-1,yes\n")
    err = refused(run_cli("consent", "import", bad), "line 2: consent #1", "automated no (asked yes)")
    assert "nothing was imported" in err


def test_each_input_file_is_named_with_its_own_hash_and_nothing_prints_none(
    run_cli: Cli, two_principals: None, write_file: Callable[..., Path]
) -> None:
    submitted = write_file("due.txt", "06 4567 8901\n333 123 4567\n")
    registered = write_file("reg.txt", "333 123 4567\n")
    args = ("registry", "import", "--submitted", submitted, "--registered", registered, "--checked-at", CHECKED,
            "--principal", "acme")
    out = ok(run_cli(*args))
    sha = {f: hashlib.sha256(f.read_bytes()).hexdigest() for f in (submitted, registered)}
    assert (f"submitted file due.txt, {submitted.stat().st_size} bytes, sha256 {sha[submitted]}" in out)
    assert (f"registered file reg.txt, {registered.stat().st_size} bytes, sha256 {sha[registered]}" in out)
    # The same pair of files again is recognised.
    assert "already imported" in ok(run_cli(*args))
    ok(run_cli("optout", "add", "06 4567 8901", "--principal", "beta", "--at", "2026-11-21T10:00"))
    ok(run_cli("consent", "add", "06 4567 8901", "--principal", "acme", "--given-at", "2026-10-01",
               "--evidence", "form-1"))
    ok(run_cli("contract", "add", "06 4567 8901", "--principal", "acme", "--start", "2026-01-01"))
    text = ok(run_cli("evidence", ROMA))
    assert "None" not in text and "+" + sha[registered] not in text
    (answer_line,) = [line for line in text.splitlines() if "RPO answer" in line]
    assert f"submitted file due.txt, {submitted.stat().st_size} bytes, sha256 {sha[submitted]}" in answer_line
    assert f"registered file reg.txt, {registered.stat().st_size} bytes, sha256 {sha[registered]}" in answer_line
    (answer,) = [i for i in json.loads(ok(run_cli("evidence", ROMA, "--json")))["items"] if i["kind"] == "rpo_answer"]
    assert answer["files"] == [
        {"role": "submitted", "name": "due.txt", "size": submitted.stat().st_size, "sha256": sha[submitted]},
        {"role": "registered", "name": "reg.txt", "size": registered.stat().st_size, "sha256": sha[registered]}]
