"""The public CLI contract (architecture.md §4) through the REAL console script on a temporary database:
the quick start from examples/, exit codes (0 ALLOW / 1 BLOCK / 2 usage or data error), `check --json`
fields, what is and is not recorded, audit verify/export, atomic imports and usage errors.

Every decision is taken at a fixed time (a Tuesday 11:00 Europe/Rome in November 2026) so that nothing
depends on today's date or hour: `check --at` for a simulation, and the command's own clock set with
libfaketime (`run_cli_at`) for a recorded decision, which is always for the moment it is made.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import sqlite3
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rpoguard.db.sqlite import audit_path
from support.fakeclock import ClockedCliRunner, clock_env

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"

AT = "2026-11-24T11:00"  # Tuesday, 11:00 Europe/Rome
AT_UTC = "2026-11-24T10:00:00.000000Z"
# A decision recorded by a command started at AT (run_cli_at): the command's clock runs on from there.
AT_UTC_MINUTE = "2026-11-24T10:00:"
CHECKED_AT = "2026-11-20"
SUNDAY = "2026-11-29T11:00"
CALLER = "06 9999 0000"

ROMA = "+390645678901"  # listed, not registered -> allow (listed)
MILANO = "+390212345678"  # listed, registered 2025-03-10, no consent -> block
MOBILE_OK = "+393331234567"  # unlisted, not registered, consent 2026-09-01 -> allow (consent)
MOBILE_REG = "+393477654321"  # unlisted, registered (no date), consent 2024 -> block
FIRENZE = "+390552345678"  # listed, not registered -> allow (listed)
UNCHECKED = "+393380001111"  # no RPO answer, unlisted -> block

# What the quick start decides for each number of examples/campaign-list.txt at AT without a caller ID.
QUICK_START = [
    ("06 4567 8901", ROMA, "allow", [], "listed"),
    ("02 1234 5678", MILANO, "block", ["rpo_registered"], None),
    ("333 123 4567", MOBILE_OK, "allow", [], "consent"),
    ("347 765 4321", MOBILE_REG, "block", ["rpo_registered", "unlisted_no_consent"], None),
    ("055 234 5678", FIRENZE, "allow", [], "listed"),
    ("338 000 1111", UNCHECKED, "block", ["rpo_not_checked", "unlisted_no_consent"], None),
]

SETUP = [
    ("principal", "add", "acme", "--name", "ACME Energia S.p.A.", "--caller-id", CALLER),
    ("principal", "add", "beta", "--name", "Beta Telco"),
    ("campaign", "add", "spring26", "--principal", "acme", "--max-attempts", "2", "--per-days", "7"),
    # Two principals: an RPO answer names the one that consulted the RPO.
    ("registry", "import", str(EXAMPLES / "rpo-answers.csv"), "--checked-at", CHECKED_AT, "--principal", "acme"),
    # The extract's own date: `check --at` before the import still sees the listings.
    ("directory", "import", str(EXAMPLES / "directory.txt"), "--listed-at", CHECKED_AT),
    ("consent", "import", str(EXAMPLES / "consents.csv")),
]

Cli = Callable[..., Any]


def aged(err: str) -> str:
    """Standard error without the warning an RPO answer gets when it is imported more than 15 days after its
    check: these tests' fixed dates age, and from 5 December 2026 the quick start's answers arrive expired."""
    return "".join(line for line in err.splitlines(keepends=True)
                   if not line.startswith("rpoguard: warning: these answers expired on "))


def check_json(run_cli: Cli, number: str, *extra: str, at: str = AT, campaign: str = "spring26") -> tuple[int, dict]:
    code, out, err = run_cli("check", number, "--campaign", campaign, "--at", at, "--json", *extra)
    assert code in (0, 1), err
    assert "Traceback" not in err
    return code, json.loads(out)


def record_json(run_cli_at: ClockedCliRunner, number: str, *extra: str, at: str = AT,
                campaign: str = "spring26") -> tuple[int, dict]:
    """A `check` recorded for the moment it is made, that moment being `at` on the command's clock."""
    code, out, err = run_cli_at(at, "check", number, "--campaign", campaign, "--json", *extra)
    assert code in (0, 1), err
    assert "Traceback" not in err
    result = json.loads(out)
    assert result["recorded"] is True, result
    return code, result


def export_jsonl(run_cli: Cli, *extra: str) -> list[dict]:
    code, out, err = run_cli("audit", "export", "--format", "jsonl", *extra)
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


@pytest.fixture(scope="module")
def seeded_template(tmp_path_factory: pytest.TempPathFactory, cli_script: str) -> Path:
    """The quick-start database, built once through the console script and copied for each test."""
    folder = tmp_path_factory.mktemp("quickstart")
    db = folder / "template.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RPOGUARD_")}
    env["RPOGUARD_DB"] = str(db)
    for args in SETUP:
        done = subprocess.run(
            [cli_script, *args], capture_output=True, text=True, env=env, cwd=folder, timeout=60, check=False
        )
        assert done.returncode == 0, (args, done.stdout, done.stderr)
    assert not Path(str(db) + "-wal").exists()  # closed cleanly: one file to copy
    return db


@pytest.fixture
def seeded(seeded_template: Path, db_path: Path) -> Path:
    shutil.copyfile(seeded_template, db_path)
    shutil.copyfile(audit_path(seeded_template), audit_path(db_path))
    db_path.chmod(0o600)
    return db_path


# -- the quick start ------------------------------------------------------------------------------------


def test_quick_start_from_examples(run_cli: Cli, run_cli_at: ClockedCliRunner, db_path: Path) -> None:
    expected_out = [
        "principal acme added: ACME Energia S.p.A.; declared caller IDs: +390699990000",
        "principal beta added",
        "campaign spring26 added: principal acme",
        "5 row(s) read, 5 stored, 0 rejected",
        "3 row(s) read, 3 stored, 0 rejected",
        "2 row(s) read, 2 stored, 0 rejected",
    ]
    for args, text in zip(SETUP, expected_out, strict=True):
        code, out, err = run_cli(*args)
        assert (code, aged(err)) == (0, ""), (args, out, err)
        assert text in out, (args, out)
    assert db_path.exists()
    assert (db_path.stat().st_mode & 0o777) == 0o600

    # `check --at` is a simulation: the decision as of AT, never recorded.
    for raw, _, decision, reasons, basis in QUICK_START:
        code, result = check_json(run_cli, raw)
        assert code == (0 if decision == "allow" else 1), (raw, result)
        assert (result["decision"], result["reasons"], result["basis"]) == (decision, reasons, basis), raw
        assert (result["recorded"], result["decision_id"], result["at"]) == (False, None, AT_UTC)
    assert export_jsonl(run_cli) == []

    # `check` at AT itself (the command's clock set to it) decides the same and records each decision.
    decision_ids = []
    for raw, e164, decision, reasons, basis in QUICK_START:
        code, result = record_json(run_cli_at, raw)
        assert code == (0 if decision == "allow" else 1), (raw, result)
        assert result["decision"] == decision, (raw, result)
        assert result["reasons"] == reasons, (raw, result)
        assert result["basis"] == basis, (raw, result)
        assert result["number"] == e164
        assert result["campaign"] == "spring26"
        assert result["principal"] == "acme"
        assert result["at"].startswith(AT_UTC_MINUTE)
        assert result["caller_id_checked"] is False
        assert set(result["explanations"]) == set(reasons)
        assert str(uuid.UUID(result["decision_id"])) == result["decision_id"]
        decision_ids.append(result["decision_id"])
    assert len(set(decision_ids)) == len(QUICK_START)

    records = export_jsonl(run_cli)
    assert [r["decision_id"] for r in records] == decision_ids
    assert [r["decision"] for r in records] == [d for _, _, d, _, _ in QUICK_START]
    assert [r["reasons"] for r in records] == [",".join(r) for _, _, _, r, _ in QUICK_START]
    assert [r["raw_number"] for r in records] == [raw for raw, *_ in QUICK_START]
    assert {r["source"] for r in records} == {"cli"}
    code, out, _ = run_cli("audit", "verify")
    assert code == 0
    assert "intact: 6 decision(s)" in out


def test_principal_add_again_says_what_changed(run_cli: Cli, seeded: Path) -> None:
    # Configuration, not a fact in time: updated, and the operator is told what it was.
    code, out, _ = run_cli("principal", "add", "acme", "--name", "ACME Energia S.r.l.", "--caller-id", "06 9999 0001")
    assert code == 0
    assert "principal acme updated: ACME Energia S.r.l.;" in out
    assert "  was: ACME Energia S.p.A." in out
    assert "  caller ID(s) added: +390699990001" in out
    code, out, _ = run_cli("principal", "add", "acme", "--name", "ACME Energia S.r.l.")
    assert (code, "was:" in out, "added:" in out) == (0, False, False)


def test_reimport_is_recognised(run_cli: Cli, seeded: Path) -> None:
    code, out, _ = run_cli("registry", "import", EXAMPLES / "rpo-answers.csv", "--checked-at", CHECKED_AT,
                           "--principal", "acme")
    assert code == 0
    assert "already imported" in out
    assert "nothing changed" in out


def test_check_text_output(run_cli: Cli, run_cli_at: ClockedCliRunner, seeded: Path) -> None:
    code, out, err = run_cli_at(AT, "check", "06 4567 8901", "--campaign", "spring26")
    assert (code, err) == (0, "")
    assert out.startswith(f"ALLOW {ROMA} for campaign spring26 (principal acme)")
    assert "basis: listed" in out
    assert "caller ID not checked" in out
    assert "recorded in the audit log" in out

    code, out, err = run_cli("check", "06 4567 8901", "--campaign", "spring26", "--at", AT)
    assert (code, err) == (0, "")
    assert "simulation as of 2026-11-24T11:00:00+01:00: not recorded" in out
    assert "recorded in the audit log" not in out

    code, out, _ = run_cli("check", "347 765 4321", "--campaign", "spring26", "--at", AT, "--dry-run")
    assert code == 1
    assert out.startswith(f"BLOCK {MOBILE_REG}")
    assert out.index("rpo_registered:") < out.index("unlisted_no_consent:")
    assert "simulation as of 2026-11-24T11:00:00+01:00: not recorded" in out

    code, out, _ = run_cli("check", "347 765 4321", "--campaign", "spring26", "--dry-run")
    assert code == 1
    assert "not recorded (dry run)" in out


def test_number_forms_are_accepted(run_cli: Cli, seeded: Path) -> None:
    for raw in ("+39 06 4567 8901", "0039 06 4567 8901", "39 06 4567 8901", "06-4567-8901", "0645678901"):
        code, result = check_json(run_cli, raw, "--dry-run")
        assert (code, result["number"], result["decision"]) == (0, ROMA, "allow"), raw


# -- what is recorded --------------------------------------------------------------------------------------


def test_dry_run_records_nothing_and_a_normal_check_records(
    run_cli: Cli, run_cli_at: ClockedCliRunner, seeded: Path
) -> None:
    code, result = check_json(run_cli, "06 4567 8901", "--dry-run")
    assert code == 0
    assert result["decision"] == "allow"
    assert result["decision_id"] is None
    assert result["recorded"] is False
    assert export_jsonl(run_cli) == []
    code, out, _ = run_cli("audit", "export")
    assert (code, out.strip()) == (
        0,
        ",".join(
            [
                "seq",
                "decision_id",
                "time",
                "recorded_at",
                "number",
                "raw_number",
                "campaign_id",
                "principal_id",
                "caller_id",
                "decision",
                "reasons",
                "basis",
                "evidence",
                "source",
                "uniqueid",
                "channel",
                "prev_hash",
                "hash",
                "linkedid",
            ]
        ),
    )

    code, result = record_json(run_cli_at, "06 4567 8901")
    (record,) = export_jsonl(run_cli)
    assert record["decision_id"] == result["decision_id"]
    assert (record["number"], record["campaign_id"], record["principal_id"]) == (ROMA, "spring26", "acme")
    assert (record["decision"], record["basis"], record["time"]) == ("allow", "listed", result["at"])
    # The row also says when it was written: by the writer, after the decision was taken.
    assert record["time"] <= record["recorded_at"] and record["recorded_at"].startswith(AT_UTC_MINUTE)


def test_attempt_cap_counts_only_recorded_allows(run_cli: Cli, run_cli_at: ClockedCliRunner, seeded: Path) -> None:
    # spring26: at most 2 calls per 7 days per number.
    assert record_json(run_cli_at, "06 4567 8901", at="2026-11-23T10:00")[0] == 0  # attempt 1
    for _ in range(2):  # dry runs and simulations (--at) are no attempts
        assert check_json(run_cli, "06 4567 8901", "--dry-run", at="2026-11-23T11:00")[0] == 0
        assert check_json(run_cli, "06 4567 8901", at="2026-11-23T11:00")[1]["recorded"] is False
    code, result = record_json(run_cli_at, "06 4567 8901", at="2026-11-23T21:00")  # recorded BLOCK: no attempt
    assert (code, result["reasons"]) == (1, ["outside_hours"])
    code, result = record_json(run_cli_at, "06 4567 8901", "--caller-id", "06 1111 2222", at="2026-11-23T12:00")
    assert (code, result["reasons"]) == (1, ["caller_id_invalid"])
    assert record_json(run_cli_at, "06 4567 8901", at="2026-11-24T10:00")[0] == 0  # attempt 2
    code, result = record_json(run_cli_at, "06 4567 8901")
    assert (code, result["reasons"]) == (1, ["attempt_limit"])
    code, result = record_json(run_cli_at, "06 4567 8901", at="2026-11-24T12:00")  # the cap BLOCK is no attempt
    assert result["reasons"] == ["attempt_limit"]
    # A simulation sees the cap as the log stands.
    assert check_json(run_cli, "06 4567 8901", at="2026-11-24T12:30")[1]["reasons"] == ["attempt_limit"]
    # Another number of the same principal has its own count.
    assert record_json(run_cli_at, "055 234 5678")[0] == 0
    # Seven days after the first attempt it slides out of the window.
    code, result = record_json(run_cli_at, "06 4567 8901", at="2026-11-30T10:30")
    assert (code, result["decision"]) == (0, "allow")


# -- rule 10: the caller ID --------------------------------------------------------------------------------


def test_caller_id_checked_only_when_given(run_cli: Cli, seeded: Path) -> None:
    code, result = check_json(run_cli, "06 4567 8901", "--dry-run")
    assert (code, result["caller_id_checked"]) == (0, False)

    code, result = check_json(run_cli, "06 4567 8901", "--caller-id", "+39 06 9999 0000", "--dry-run")
    assert (code, result["decision"], result["caller_id_checked"]) == (0, "allow", True)

    for presented in ("06 1111 2222", "anonymous", "", "not-a-number"):
        code, result = check_json(run_cli, "06 4567 8901", "--caller-id", presented, "--dry-run")
        assert (code, result["reasons"]) == (1, ["caller_id_invalid"]), presented

    code, out, _ = run_cli("check", "06 4567 8901", "--campaign", "spring26", "--at", AT, "--caller-id", CALLER)
    assert code == 0
    assert "caller ID not checked" not in out


def test_reasons_come_in_rule_order(run_cli: Cli, seeded: Path) -> None:
    code, result = check_json(run_cli, "338 000 1111", "--caller-id", "06 1111 2222", "--dry-run", at=SUNDAY)
    assert code == 1
    assert result["reasons"] == ["rpo_not_checked", "unlisted_no_consent", "outside_hours", "caller_id_invalid"]
    assert result["basis"] is None

    # Without a campaign there is no principal, so no RPO answer is looked for (answers are per principal).
    code, result = check_json(run_cli, "338 000 1111", "--dry-run", campaign="nope")
    assert result["reasons"] == ["unknown_campaign"]
    assert result["principal"] is None


def test_invalid_numbers_block_with_rule_1(run_cli: Cli, seeded: Path) -> None:
    for raw, reason in (
        ("abc", "invalid_number"),
        ("+33 1 23 45 67 89", "foreign_number"),
        ("800 123 456", "unsupported_number_type"),
    ):
        code, result = check_json(run_cli, raw, "--dry-run")
        assert (code, result["decision"], result["reasons"][0]) == (1, "block", reason), raw


# -- refusals, consents, contracts ---------------------------------------------------------------------------


def test_optout_per_principal_and_for_all(run_cli: Cli, seeded: Path) -> None:
    code, out, _ = run_cli("optout", "add", "06 4567 8901", "--principal", "acme", "--at", "2026-11-23T15:00")
    assert code == 0
    assert f"{ROMA} refuses calls from acme" in out
    code, result = check_json(run_cli, "06 4567 8901")
    assert (code, result["reasons"]) == (1, ["optout"])

    code, out, _ = run_cli("optout", "add", "055-234-5678", "--at", "2026-11-23T15:00")
    assert code == 0
    assert "every principal" in out
    assert check_json(run_cli, "055 234 5678")[1]["reasons"] == ["optout"]

    # Another principal's refusal does not block acme; a refusal said later does not block earlier calls.
    run_cli("optout", "add", "333 123 4567", "--principal", "beta", "--at", "2026-11-23T15:00")
    assert check_json(run_cli, "333 123 4567", "--dry-run")[0] == 0
    run_cli("optout", "add", "333 123 4567", "--at", "2026-11-24T11:30")
    assert check_json(run_cli, "333 123 4567", "--dry-run")[0] == 0
    assert check_json(run_cli, "333 123 4567", "--dry-run", at="2026-11-24T11:31")[1]["reasons"] == ["optout"]


def test_consent_add_and_revoke(run_cli: Cli, seeded: Path) -> None:
    assert check_json(run_cli, "333 123 4567")[0] == 0
    code, out, _ = run_cli("consent", "revoke", "333 123 4567", "--principal", "acme", "--at", "2026-11-23T09:00")
    assert code == 0
    assert f"consent #1 of {MOBILE_OK} to acme revoked at 2026-11-23T09:00:00+01:00" in out
    code, result = check_json(run_cli, "333 123 4567")
    assert (code, result["reasons"]) == (1, ["unlisted_no_consent"])
    # A second revocation does not replace the first: it is noted beside it.
    code, out, _ = run_cli("consent", "revoke", "333 123 4567", "--principal", "acme", "--at", "2026-11-23T10:00")
    assert code == 0
    assert ("already revoked at 2026-11-23T09:00:00+01:00; this revocation (at 2026-11-23T10:00:00+01:00) noted"
            in out)
    assert "earlier moment" not in out
    # Before any consent was given there was nothing to revoke.
    code, out, _ = run_cli("consent", "revoke", "333 123 4567", "--principal", "acme", "--at", "2026-01-01")
    assert (code, "no consent" in out) == (0, True)

    # A consent given after the registration makes a registered number callable.
    code, out, _ = run_cli(
        "consent",
        "add",
        "02 1234 5678",
        "--principal",
        "acme",
        "--given-at",
        "2026-11-21T10:00",
        "--evidence",
        "rec:2026-11-21/77",
    )
    assert code == 0
    assert "recorded" in out
    code, result = check_json(run_cli, "02 1234 5678")
    assert (code, result["basis"]) == (0, "consent")
    code, out, _ = run_cli(
        "consent",
        "add",
        "+390212345678",
        "--principal",
        "acme",
        "--given-at",
        "2026-11-21T10:00",
        "--evidence",
        "rec:2026-11-21/77",
    )
    assert (code, "already recorded" in out) == (0, True)


def test_contract_with_a_registered_number(run_cli: Cli, seeded: Path) -> None:
    assert check_json(run_cli, "347 765 4321")[1]["reasons"] == ["rpo_registered", "unlisted_no_consent"]
    code, out, _ = run_cli("contract", "add", "347 765 4321", "--principal", "acme", "--start", "2024-05-02")
    assert code == 0
    assert "recorded (running)" in out
    code, result = check_json(run_cli, "347 765 4321")
    assert (code, result["decision"], result["basis"]) == (0, "allow", "contract")

    # A contract alone is no basis (L. 5/2018 art. 1): it saves the consents given within it, and none was.
    code, _, _ = run_cli(
        "contract", "add", "02 1234 5678", "--principal", "acme", "--start", "2025-01-01", "--end", "2026-10-25"
    )
    assert code == 0
    assert check_json(run_cli, "02 1234 5678")[1]["reasons"] == ["rpo_registered"]
    code, _, _ = run_cli("consent", "add", "02 1234 5678", "--principal", "acme", "--given-at", "2025-06-01T10:00",
                         "--evidence", "contract-annex-7")
    assert code == 0
    code, result = check_json(run_cli, "02 1234 5678")
    assert (code, result["basis"], result["evidence"]["contract_id"]) == (0, "contract", 2)
    # A contract that ended more than 30 days before the call keeps nothing alive. The earlier end is a
    # correction noted beside the recorded one, and decisions use it.
    code, out, _ = run_cli("contract", "add", "02 1234 5678", "--principal", "acme", "--start", "2025-01-01",
                           "--end", "2026-10-20")
    assert code == 0
    assert "already ended 2026-10-25; end 2026-10-20 noted as a correction" in out
    assert check_json(run_cli, "02 1234 5678")[1]["reasons"] == ["rpo_registered"]
    # A later end would save consents for longer: noted, never used.
    code, out, _ = run_cli("contract", "add", "02 1234 5678", "--principal", "acme", "--start", "2025-01-01",
                           "--end", "2026-11-30")
    assert code == 0
    assert "end 2026-11-30 noted beside the record, not used" in out and "decisions use 2026-10-20" in out
    assert check_json(run_cli, "02 1234 5678")[1]["reasons"] == ["rpo_registered"]


def test_registry_lists_form(run_cli: Cli, seeded: Path, write_file: Callable[..., Path]) -> None:
    submitted = write_file("submitted.txt", "06 4567 8901\n338 000 1111\n")
    registered = write_file("registered.txt", "06 4567 8901\n")
    code, out, err = run_cli("registry", "import", "--submitted", submitted, "--registered", registered,
                             "--checked-at", "2026-11-23", "--principal", "acme")
    assert (code, aged(err)) == (0, "")
    assert "registered 1, not registered 1" in out
    assert check_json(run_cli, "06 4567 8901")[1]["reasons"] == ["rpo_registered"]
    assert check_json(run_cli, "338 000 1111")[1]["reasons"] == ["unlisted_no_consent"]


# -- scrub ----------------------------------------------------------------------------------------------


def test_scrub_writes_csv_and_records_nothing(
    run_cli: Cli, run_cli_at: ClockedCliRunner, seeded: Path, tmp_path: Path
) -> None:
    out_csv = tmp_path / "scrubbed.csv"
    code, out, err = run_cli(
        "scrub", EXAMPLES / "campaign-list.txt", "--campaign", "spring26", "--at", AT, "-o", out_csv
    )
    assert code == 0
    assert "6 number(s), 3 allowed, 3 blocked" in err
    assert "caller ID not checked" in err
    assert "nothing recorded" in err
    with out_csv.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["line"] for r in rows] == ["2", "3", "4", "5", "6", "7"]
    assert [(r["input"], r["number"], r["decision"], r["reasons"], r["basis"]) for r in rows] == [
        (raw, e164, decision, ",".join(reasons), basis or "") for raw, e164, decision, reasons, basis in QUICK_START
    ]
    assert export_jsonl(run_cli) == []
    # Scrub used no attempts: the cap of 2 still allows two recorded calls.
    for _ in range(2):
        assert record_json(run_cli_at, "06 4567 8901")[0] == 0

    code, out, _ = run_cli("scrub", EXAMPLES / "campaign-list.txt", "--campaign", "spring26", "--at", AT)
    assert code == 0
    assert out.splitlines()[0] == "line,input,number,decision,reasons,basis"
    assert len(out.splitlines()) == 7


def test_scrub_with_a_missing_input_keeps_the_previous_output(run_cli: Cli, seeded: Path, tmp_path: Path) -> None:
    out_csv = tmp_path / "scrubbed.csv"
    assert (
        run_cli("scrub", EXAMPLES / "campaign-list.txt", "--campaign", "spring26", "--at", AT, "-o", out_csv).code == 0
    )
    before = out_csv.read_text()
    # Regression: -o used to be truncated before the input was read.
    code, _, err = run_cli("scrub", tmp_path / "typo.txt", "--campaign", "spring26", "--at", AT, "-o", out_csv)
    assert code == 2
    assert "cannot read" in err
    assert out_csv.read_text() == before


def test_scrub_output_keeps_a_carriage_return_inside_its_cell(
    run_cli: Cli, seeded: Path, tmp_path: Path, write_file: Callable[..., Path]
) -> None:
    source = write_file("list.csv", 'number\n"06 4567 8901\r=1+1"\n333 123 4567\n')
    out_csv = tmp_path / "scrubbed.csv"
    code, _, err = run_cli("scrub", source, "--campaign", "spring26", "--at", AT, "-o", out_csv)
    assert code == 0, err
    # Regression: with lineterminator="\n" the cell holding a bare CR was not quoted, so the row split in a
    # spreadsheet and "=1+1" started a new line. Read it as a spreadsheet does (CR ends a record too).
    text = out_csv.read_bytes().decode()
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert [r["input"] for r in rows] == ["06 4567 8901\r=1+1", "333 123 4567"]
    assert [(r["decision"], r["reasons"]) for r in rows] == [("block", "invalid_number"), ("allow", "")]


# -- audit verify / export --------------------------------------------------------------------------------


def test_audit_verify_then_tamper(run_cli: Cli, run_cli_at: ClockedCliRunner, seeded: Path) -> None:
    for number in ("06 4567 8901", "02 1234 5678", "333 123 4567"):
        record_json(run_cli_at, number)
    code, out, _ = run_cli("audit", "verify")
    assert code == 0
    assert "audit log intact: 3 decision(s)" in out

    with sqlite3.connect(audit_path(seeded)) as con:
        con.execute("DROP TRIGGER audit_log_no_update")
        con.execute("UPDATE audit_log SET decision = 'allow', reasons = '', basis = 'listed' WHERE seq = 2")
    con.close()
    code, out, err = run_cli("audit", "verify")
    assert code == 1, (out, err)
    assert "BROKEN" in out
    assert "row 2:" in out
    assert "row 1:" not in out
    assert "row 3:" not in out


def _kill_if_running(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()


def test_parallel_checks_keep_one_intact_chain(
    run_cli: Cli, seeded: Path, cli_script: str, cli_env: dict[str, str], tmp_path: Path
) -> None:
    numbers = ["06 4567 8901", "02 1234 5678", "333 123 4567", "347 765 4321", "055 234 5678", "338 000 1111"]
    # Recorded decisions, each for its own moment: every command's clock starts at AT (libfaketime).
    at_clock = {**cli_env, **clock_env(AT)}
    with contextlib.ExitStack() as running:
        # Each one killed if still running and waited for on the way out, even when a wait below fails.
        procs = [
            running.enter_context(subprocess.Popen(
                [cli_script, "check", number, "--campaign", "spring26", "--json"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=at_clock,
                cwd=tmp_path,
            ))
            for number in numbers
        ]
        for proc in procs:
            running.callback(_kill_if_running, proc)
        results = [proc.communicate(timeout=60) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 1, 0, 1, 0, 1], results
    ids = {json.loads(out)["decision_id"] for out, _ in results}
    code, out, _ = run_cli("audit", "verify")
    assert code == 0
    assert "intact: 6 decision(s)" in out
    records = export_jsonl(run_cli)
    assert [r["seq"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert {r["decision_id"] for r in records} == ids


def test_audit_export_range_csv_and_jsonl(run_cli: Cli, run_cli_at: ClockedCliRunner, seeded: Path,
                                         tmp_path: Path) -> None:
    for at in ("2026-11-24T10:00", "2026-11-24T11:00", "2026-11-24T12:00"):
        record_json(run_cli_at, "333 123 4567", at=at, campaign="other")  # unknown campaign: recorded BLOCKs
    # --from inclusive, --to exclusive; an explicit offset means the same instant.
    records = export_jsonl(run_cli, "--from", "2026-11-24T10:00Z", "--to", "2026-11-24T12:00")
    assert [r["time"][:17] for r in records] == [AT_UTC_MINUTE]
    assert [r["seq"] for r in records] == [2]
    # Each row gives the call time and the moment it was written.
    assert records[0]["recorded_at"] >= records[0]["time"]

    out_csv = tmp_path / "audit.csv"
    code, out, err = run_cli(
        "audit",
        "export",
        "--from",
        "2026-11-24T10:00",
        "--to",
        "2026-11-24T11:30",
        "--format",
        "csv",
        "-o",
        out_csv,
    )
    assert code == 0
    assert out == ""
    assert "2 decision(s) written" in err
    with out_csv.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["seq"] for r in rows] == ["1", "2"]
    assert [r["reasons"].split(",")[0] for r in rows] == ["unknown_campaign"] * 2
    assert all(r["recorded_at"] >= r["time"] for r in rows)

    assert export_jsonl(run_cli, "--from", "2026-11-25") == []
    assert len(export_jsonl(run_cli, "--to", "2026-11-25")) == 3


def test_audit_export_neutralises_formula_input(run_cli: Cli, seeded: Path) -> None:
    # Recorded now: what is asserted does not depend on the hour (rule 1 comes first).
    for raw in ("=1+1", "@SUM(A1)", "+390645678901"):
        code, out, err = run_cli("check", raw, "--campaign", "spring26", "--json")
        assert code in (0, 1), err
        assert json.loads(out)["recorded"] is True
        if raw != "+390645678901":
            assert json.loads(out)["reasons"][0] == "invalid_number"
    code, out, _ = run_cli("audit", "export")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out, newline="")))
    assert [r["raw_number"] for r in rows] == ["'=1+1", "'@SUM(A1)", "+390645678901"]
    assert rows[2]["number"] == "+390645678901"


# -- imports are atomic -------------------------------------------------------------------------------------


def test_malformed_registry_import_is_rejected_whole(
    run_cli: Cli, seeded: Path, write_file: Callable[..., Path]
) -> None:
    bad = write_file(
        "answers-22.csv",
        (
            "number,status\n"
            "06 4567 8901,registered\n"  # 2: would block the number if it landed
            "06 4567 89XX,registered\n"  # 3
            "055 234 5678,registered\n"  # 4
            "333 123 4567,forse\n"  # 5
            "\n"  # 6
            "12,0\n"  # 7
        ),
    )
    code, out, err = run_cli("registry", "import", bad, "--checked-at", "2026-11-22", "--principal", "acme")
    assert code == 2
    assert out == ""
    for line in (3, 5, 7):
        assert f"line {line}:" in err
    for line in (2, 4, 6):
        assert f"line {line}:" not in err
    assert "3 bad row(s); nothing was imported" in err
    assert "--skip-invalid" in err
    assert "Traceback" not in err

    code, result = check_json(run_cli, "06 4567 8901")  # still the old answer
    assert (code, result["basis"]) == (0, "listed")

    code, out, err = run_cli("registry", "import", bad, "--checked-at", "2026-11-22", "--skip-invalid",
                             "--principal", "acme")
    assert code == 0
    assert "skipped: line 3:" in err
    assert "6 row(s) read" not in out
    assert "2 stored, 3 rejected" in out
    assert check_json(run_cli, "06 4567 8901")[1]["reasons"] == ["rpo_registered"]


def test_other_malformed_imports_exit_2(run_cli: Cli, seeded: Path, write_file: Callable[..., Path]) -> None:
    directory = write_file("dir.txt", "06 4567 8901\nRossi Mario\n")
    code, _, err = run_cli("directory", "import", directory)
    assert code == 2
    assert "line 2:" in err
    # Not replaced: a number missing from the rejected file is still listed.
    assert check_json(run_cli, "055 234 5678", "--dry-run")[1]["basis"] == "listed"

    consents = write_file("c.csv", "number,principal,given_at\n333 123 4567,acme,2026-09-01\n")
    code, _, err = run_cli("consent", "import", consents)
    assert code == 2
    assert "missing: evidence" in err

    consents = write_file(
        "c2.csv",
        "number,principal,given_at,evidence\n347 765 4321,acme,2026-11-21,x\n347 765 4321,nobody,2026-11-21,y\n",
    )
    code, _, err = run_cli("consent", "import", consents)
    assert code == 2
    assert "line 3: principal 'nobody' does not exist" in err
    assert check_json(run_cli, "347 765 4321")[0] == 1  # the good row did not land either

    latin1 = write_file("l1.csv", "numero,stato\n06 4567 8901,non iscritto \xe8\n", encoding="latin-1")
    code, _, err = run_cli("registry", "import", latin1, "--checked-at", "2026-11-22", "--principal", "acme")
    assert code == 2
    assert "UTF-8" in err
    assert "Traceback" not in err

    code, _, err = run_cli("registry", "import", "missing.csv", "--checked-at", "2026-11-22", "--principal", "acme")
    assert code == 2
    assert "cannot read missing.csv" in err


# -- usage errors ----------------------------------------------------------------------------------------------


USAGE_ERRORS = [
    (("check", "06 4567 8901"), "--campaign"),
    (("check", "06 4567 8901", "--campaign", "spring26", "--at", "2026-13-01"), "ISO 8601"),
    (("check", "06 4567 8901", "--campaign", "spring26", "--at", "24/11/2026 11:00"), "ISO 8601"),
    (("check", "--campaign", "spring26"), "NUMBER"),
    (("registry", "import", str(EXAMPLES / "rpo-answers.csv")), "--checked-at"),
    (("registry", "import", "--checked-at", "2026-11-20"), "give the RPO answer FILE"),
    (
        ("registry", "import", "a.csv", "--submitted", "b.txt", "--registered", "c.txt", "--checked-at", "2026-11-20"),
        "not both",
    ),
    (("registry", "import", "--submitted", "b.txt", "--checked-at", "2026-11-20"), "--registered"),
    (("optout", "add", "abc"), "not a telephone number"),
    (("optout", "add", "06 4567 8901", "--principal", "nobody"), "does not exist"),
    (("consent", "add", "12", "--principal", "acme", "--given-at", "2026-11-01", "--evidence", "x"), "12"),
    (("consent", "add", ROMA, "--principal", "acme", "--given-at", "yesterday", "--evidence", "x"), "ISO 8601"),
    (("consent", "add", ROMA, "--principal", "acme", "--given-at", "2026-11-01", "--evidence", " "), "--evidence"),
    (
        (
            "consent",
            "add",
            ROMA,
            "--principal",
            "acme",
            "--given-at",
            "2026-11-01",
            "--evidence",
            "x",
            "--expires-at",
            "2026-10-01",
        ),
        "--expires-at",
    ),
    (("consent", "add", ROMA, "--principal", "acme", "--given-at", "2026-11-01"), "--evidence"),
    (("contract", "add", ROMA, "--principal", "acme", "--start", "2026-02-30"), "ISO 8601"),
    (("contract", "add", ROMA, "--principal", "acme", "--start", "2026-02-01", "--end", "2026-01-01"), "before"),
    (("contract", "add", "+33 1 23 45 67 89", "--principal", "acme", "--start", "2026-02-01"), "not an Italian"),
    (("principal", "add", "x", "--name", "X", "--caller-id", "abc"), "caller ID"),
    (("principal", "add", "x"), "--name"),
    (("campaign", "add", "c", "--principal", "nobody"), "does not exist"),
    (("campaign", "add", "c", "--principal", "acme", "--max-attempts", "2"), "go together"),
    (("campaign", "add", "c", "--principal", "acme", "--max-attempts", "0", "--per-days", "7"), "1 or more"),
    (("campaign", "add", "c", "--principal", "acme", "--max-attempts", "two", "--per-days", "7"), "whole number"),
    (("audit", "export", "--format", "xml"), "invalid choice"),
    (("audit", "export", "--from", "soon"), "ISO 8601"),
    (("audit",), "ACTION"),
    (("frobnicate",), "invalid choice"),
    ((), "COMMAND"),
    (("--config", "/nonexistent/rpoguard.toml", "audit", "verify"), "cannot read config file"),
]


@pytest.mark.parametrize(("args", "message"), USAGE_ERRORS, ids=[" ".join(a) or "(none)" for a, _ in USAGE_ERRORS])
def test_usage_errors_exit_2_with_a_clear_message(
    run_cli: Cli, seeded: Path, args: tuple[str, ...], message: str
) -> None:
    code, out, err = run_cli(*args)
    assert code == 2, (out, err)
    assert message in err, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("rpoguard"), err


def test_database_in_a_missing_folder_is_a_clear_error(run_cli: Cli, tmp_path: Path) -> None:
    code, _, err = run_cli("--db", tmp_path / "missing" / "x.db", "audit", "verify")
    assert code == 2
    assert f"database not found: {tmp_path / 'missing' / 'x.db'}" in err
    code, _, err = run_cli("--db", tmp_path / "missing" / "x.db", "db", "migrate")
    assert code == 2
    assert f"cannot open database {tmp_path / 'missing' / 'x.db'}" in err
    assert "Traceback" not in err


def test_database_that_cannot_be_opened_is_a_clear_error(run_cli: Cli, tmp_path: Path) -> None:
    folder = tmp_path / "a-folder.db"
    folder.mkdir()
    code, _, err = run_cli("--db", folder, "db", "migrate")
    assert code == 2
    assert f"rpoguard: cannot open database {folder}" in err
    # Not asserted here: the Python tracebacks that may follow the message (a race, see
    # tests/unit/test_store.py::test_failed_open_does_not_leave_the_sqlite_thread_behind).


def test_not_a_database_is_a_clear_error(run_cli: Cli, write_file: Callable[..., Path]) -> None:
    text = write_file("notes.txt", "these are my notes, not a database\n" * 20)
    code, _, err = run_cli("--db", text, "audit", "verify")
    assert code == 2
    assert "not a database" in err
    assert text.read_text() == "these are my notes, not a database\n" * 20


def test_db_flag_overrides_the_environment(run_cli: Cli, seeded: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    code, out, _ = run_cli("--db", other, "principal", "add", "zeta", "--name", "Zeta")
    assert (code, "added" in out) == (0, True)
    assert other.exists()
    code, out, _ = run_cli("principal", "add", "zeta", "--name", "Zeta")  # RPOGUARD_DB: the seeded one
    assert "added" in out
    code, out, _ = run_cli("principal", "add", "zeta", "--name", "Zeta", env={"RPOGUARD_DB": str(other)})
    assert "updated" in out


# -- help ---------------------------------------------------------------------------------------------------


GROUPS = {
    "principal": ["add"],
    "campaign": ["add"],
    "registry": ["import"],
    "directory": ["import"],
    "consent": ["add", "revoke", "import"],
    "contract": ["add"],
    "optout": ["add"],
    "audit": ["verify", "export"],
}


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_help_of_each_command_group(run_cli: Cli, group: str, db_path: Path) -> None:
    code, out, err = run_cli(group, "--help")
    assert (code, err) == (0, "")
    assert out.startswith(f"usage: rpoguard {group}")
    for action in GROUPS[group]:
        assert action in out
        code, out_action, err = run_cli(group, action, "--help")
        assert (code, err) == (0, "")
        assert out_action.startswith(f"usage: rpoguard {group} {action}")
    assert not db_path.exists()  # --help opens no database


def test_top_level_help_and_version(run_cli: Cli, db_path: Path) -> None:
    code, out, _ = run_cli("--help")
    assert code == 0
    for command in [*GROUPS, "check", "scrub"]:
        assert command in out
    for command in ("check", "scrub"):
        code, out, _ = run_cli(command, "--help")
        assert (code, out.startswith(f"usage: rpoguard {command}")) == (0, True)
    code, out, _ = run_cli("check", "--help")
    for option in ("--campaign", "--at", "--caller-id", "--json", "--dry-run"):
        assert option in out
    code, out, _ = run_cli("--version")
    assert (code, out.startswith("rpoguard ")) == (0, True)
    assert not db_path.exists()


def test_scrub_with_an_unreadable_row_writes_the_rest_and_exits_2(
    run_cli: Cli, seeded: Path, tmp_path: Path
) -> None:
    listing = tmp_path / "list.csv"
    listing.write_text('number\n06 4567 8901\n"unterminated\n', encoding="utf-8")
    out_csv = tmp_path / "out.csv"
    code, _, err = run_cli("scrub", listing, "--campaign", "spring26", "--at", AT, "-o", out_csv)
    assert code == 2
    assert "unreadable row" in err
    assert "06 4567 8901" in out_csv.read_text(encoding="utf-8")


def test_campaign_add_again_says_what_changed(run_cli: Cli, seeded: Path) -> None:
    assert run_cli("campaign", "add", "robo", "--principal", "acme", "--automated").code == 0
    code, out, _ = run_cli("campaign", "add", "robo", "--principal", "acme")
    assert code == 0
    assert "updated: principal acme, with live operators" in out
    assert "was: principal acme, automated" in out


def test_registry_import_refuses_a_check_date_in_the_future(run_cli: Cli, seeded: Path) -> None:
    code, _, err = run_cli("registry", "import", EXAMPLES / "rpo-answers.csv", "--checked-at", "2099-01-01",
                           "--principal", "acme")
    assert code == 2
    assert "in the future" in err


def test_consent_revoke_for_an_unknown_principal_is_an_error(run_cli: Cli, seeded: Path) -> None:
    code, _, err = run_cli("consent", "revoke", "333 123 4567", "--principal", "nobody")
    assert code == 2
    assert "'nobody' does not exist" in err
