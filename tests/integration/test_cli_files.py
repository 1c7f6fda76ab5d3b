"""Operators' files through the real `rpoguard` command: a campaign that does not exist, a list whose
number is not in the first column, what Excel saves in Italy (Windows-1252, semicolons), and dates that
cannot be true. Each mistake is one line on standard error and exit 2, with nothing written."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
AT = "2026-11-24T11:00"  # a Tuesday, inside the calling hours
CHECKED = "2026-11-20"

Cli = Callable[..., Any]

# A list as Excel saves it in Italy: semicolons, Windows-1252, the number in the third column.
LIST_1252 = (
    "cognome;nome;telefono\r\n"
    "Rossi;Niccolò;06 4567 8901\r\n"
    "D’Amico;Anna;02 1234 5678\r\n"
    "Bianchi;Lucia;338 000 1111\r\n"
).encode("cp1252")
EXCEL_HINT = "looks like Windows-1252 (what Excel saves in Italy): use --encoding cp1252"


def refused(result: Any, *words: str) -> str:
    code, out, err = result
    assert code == 2, (out, err)
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rpoguard: "), err
    for word in words:
        assert word in err, err
    return str(err)


def ok(result: Any) -> str:
    code, out, err = result
    assert code == 0, (out, err)
    return str(out)


@pytest.fixture
def acme(run_cli: Cli) -> None:
    for args in (("principal", "add", "acme", "--name", "ACME Energia"),
                 ("campaign", "add", "spring26", "--principal", "acme"),
                 ("registry", "import", EXAMPLES / "rpo-answers.csv", "--checked-at", CHECKED),
                 ("directory", "import", EXAMPLES / "directory.txt", "--listed-at", CHECKED)):
        ok(run_cli(*args))


def test_scrub_for_a_campaign_that_does_not_exist_is_one_error(run_cli: Cli, tmp_path: Path) -> None:
    assert run_cli("db", "migrate").code == 0
    out = tmp_path / "out.csv"
    refused(run_cli("scrub", EXAMPLES / "campaign-list.txt", "--campaign", "nosuch", "--at", AT, "-o", out),
            "campaign 'nosuch' does not exist")
    assert not out.exists()


def test_scrub_reads_the_number_column_of_an_excel_list(
    run_cli: Cli, acme: None, write_file: Callable[..., Path], tmp_path: Path
) -> None:
    source = write_file("lista.csv", LIST_1252)
    out = tmp_path / "out.csv"
    code, _, err = run_cli("scrub", source, "--campaign", "spring26", "--at", AT, "-o", out, "--encoding", "cp1252")
    assert code == 0, err
    assert "numbers read from column 3 'telefono' (named by the header)" in err
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    # Each output row names its input row: the line and the number as written.
    assert [(r["line"], r["input"], r["decision"]) for r in rows] == [
        ("2", "06 4567 8901", "allow"), ("3", "02 1234 5678", "block"), ("4", "338 000 1111", "block")]
    before = out.read_bytes()

    refused(run_cli("scrub", source, "--campaign", "spring26", "--at", AT, "-o", out),
            "lista.csv: line 2, byte offset", EXCEL_HINT)
    names = write_file("nomi.csv", "cognome;nome\nRossi;Mario\nVerdi;Anna\n")
    refused(run_cli("scrub", names, "--campaign", "spring26", "--at", AT, "-o", out),
            "no column holds telephone numbers", "1 'cognome', 2 'nome'")
    two = write_file("due.csv", "nome,telefono,cellulare\nRossi,06 4567 8901,333 123 4567\n")
    refused(run_cli("scrub", two, "--campaign", "spring26", "--at", AT, "-o", out),
            "several columns could hold the numbers", "--column")
    assert out.read_bytes() == before  # no failed run touched the previous output

    code, stdout, _ = run_cli("scrub", two, "--campaign", "spring26", "--at", AT, "--column", "cellulare")
    assert code == 0
    assert [r["input"] for r in csv.DictReader(io.StringIO(stdout))] == ["333 123 4567"]
    code, stdout, _ = run_cli("scrub", two, "--campaign", "spring26", "--at", AT, "--column", "2")
    assert [r["input"] for r in csv.DictReader(io.StringIO(stdout))] == ["06 4567 8901"]


def test_every_command_reading_a_file_takes_its_encoding(
    run_cli: Cli, acme: None, write_file: Callable[..., Path], tmp_path: Path
) -> None:
    def latin(name: str, text: str) -> Path:
        return write_file(name, text.encode("cp1252"))

    headed = "N° telefono;stato\n06 4567 8901;non iscritto\n"
    files = {
        "answers": latin("risposte.csv", headed),
        "submitted": latin("inviati.csv", "N° telefono\n06 4567 8901\n02 1234 5678\n"),
        "registered": latin("iscritti.csv", "N° telefono\n02 1234 5678\n"),
        "consents": latin("consensi.csv", "number;principal;given_at;evidence\n333 123 4567;acme;2026-09-01;"
                                          "ricevuta n° 5\n"),
        "contracts": latin("contratti.csv", "number;principal;start\n333 123 4567;acme;2026-01-01\n"
                                            "# “fornitura luce”;;\n"),
        "optouts": latin("rifiuti.csv", "number;at;reference\n347 765 4321;2026-11-02;chiamata “n. 5”\n"),
        "directory": latin("elenco.csv", "cognome;telefono\nRossi Niccolò;06 4567 8901\n"),
    }
    commands = [
        ("registry", "import", files["answers"], "--checked-at", CHECKED),
        ("registry", "import", "--submitted", files["submitted"], "--registered", files["registered"],
         "--checked-at", CHECKED),
        ("consent", "import", files["consents"]),
        ("contract", "import", files["contracts"], "--skip-invalid"),
        ("optout", "import", files["optouts"]),
        ("directory", "import", files["directory"], "--listed-at", CHECKED),
        ("registry", "due", "--from", files["directory"], "-o", tmp_path / "due.txt"),
    ]
    for args in commands:
        refused(run_cli(*args), "byte offset", "--encoding")
    for args in commands:
        code, out, err = run_cli(*args, "--encoding", "cp1252")
        assert code == 0, (args, out, err)
    # Told by the argument parser, like every other bad option value.
    code, _, err = run_cli("consent", "import", files["consents"], "--encoding", "nosuch")
    assert code == 2 and "argument --encoding: unknown encoding 'nosuch'" in err


def test_facts_dated_in_the_future_or_before_the_rpo_are_refused(run_cli: Cli, acme: None) -> None:
    next_year = (datetime.now(UTC) + timedelta(days=365)).date().isoformat()
    tomorrow = (datetime.now(UTC) + timedelta(days=2)).date().isoformat()
    refused(run_cli("consent", "add", "333 123 4567", "--principal", "acme", "--given-at", "2030-01-01",
                    "--evidence", "x"), "--given-at 2030-01-01", "in the future")
    refused(run_cli("consent", "revoke", "333 123 4567", "--principal", "acme", "--at", next_year),
            "--at", "in the future")
    refused(run_cli("optout", "add", "06 4567 8901", "--at", next_year), "in the future")
    refused(run_cli("contract", "add", "333 123 4567", "--principal", "acme", "--start", tomorrow),
            "--start", "in the future")
    refused(run_cli("registry", "import", EXAMPLES / "rpo-answers.csv", "--checked-at", "1970-01-01"),
            "before the RPO opened (2011-01-31)")
    # Nothing of it landed: the number is still called on the directory listing, without a refusal.
    code, out, _ = run_cli("check", "06 4567 8901", "--campaign", "spring26", "--at", AT, "--dry-run")
    assert code == 0, out


def test_an_answer_expired_on_arrival_warns_with_the_configured_validity(
    run_cli: Cli, acme: None, write_file: Callable[..., Path]
) -> None:
    twelve_days_ago = (datetime.now(UTC) - timedelta(days=12)).isoformat(timespec="seconds")
    answers = write_file("a.csv", "06 4567 8901,not_registered\n")
    code, out, err = run_cli("registry", "import", answers, "--checked-at", twelve_days_ago)
    assert (code, err) == (0, ""), out  # 15 days: still valid
    config = write_file("rpoguard.toml", "[policy]\nrpo_validity_days = 10\n")
    again = write_file("b.csv", "02 1234 5678,not_registered\n")
    code, out, err = run_cli("--config", config, "registry", "import", again, "--checked-at", twelve_days_ago)
    assert code == 0
    assert err.startswith("rpoguard: warning: these answers expired on ")
    assert "valid 10 days" in err and "rpo_expired" in err
    assert "  note: these answers expired on " in out
