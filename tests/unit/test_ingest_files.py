"""Operators' files as they really come: Windows-1252 and UTF-16 from Excel, lists with the number in any
column, dates that cannot be true. Every reader (RPO answers in rows and in lists, directory, consents,
contracts, refusals, scrub's lists) goes through the same code, tested here through the importers."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rpoguard.db.store import RPO_REGISTERED_LIST, ImportRejected, RowProblem, Store
from rpoguard.ingest import consents as consent_import
from rpoguard.ingest import contracts as contract_import
from rpoguard.ingest import directory as directory_import
from rpoguard.ingest import optouts as optout_import
from rpoguard.ingest import registry as registry_import
from rpoguard.ingest.csvfile import FileError, encoding_name, read_rows
from rpoguard.ingest.numberlist import find_number_column
from rpoguard.ingest.plausible import RPO_OPENED, ImplausibleDate, expired_on_arrival, not_in_future
from rpoguard.policy.model import Facts
from rpoguard.policy.rpo import with_rpo_summary
from rpoguard.timeutil import ROME, parse_time

CHECKED = parse_time("2026-11-20")
ROMA = "+390645678901"
MILANO = "+390212345678"
MOBILE = "+393331234567"

Writer = Callable[..., Path]


def facts(run: Callable, store: Store, number: str) -> Facts:
    at = datetime.now(UTC) + timedelta(days=1)
    return with_rpo_summary(run(store.facts(number, None, "spring26", at)), at)


def lines_of(problems: list[RowProblem]) -> list[int]:
    return [p.line for p in problems]


@pytest.fixture
def acme(store: Store, run: Callable) -> Store:
    run(store.add_principal("acme", "ACME Energia", ["+390699990000"]))
    run(store.add_campaign("spring26", "acme", False, None, None))
    return store


# -- encodings (finding 7) ------------------------------------------------------------------------------------


CONSENTS_1252 = (
    "number;principal;given_at;evidence;purpose\r\n"
    "333 123 4567;acme;2026-09-01;ricevuta n° 17;offerte “luce e gas” – clienti\r\n"
).encode("cp1252")


def test_a_windows_1252_file_names_its_encoding_and_imports_with_it(
    acme: Store, run: Callable, write_file: Writer
) -> None:
    path = write_file("consensi.csv", CONSENTS_1252)
    with pytest.raises(FileError) as caught:
        run(consent_import.import_file(acme, path, False))
    message = str(caught.value)
    offset = CONSENTS_1252.index(b"\xb0")  # the degree sign of "n°", line 2
    assert f"{path}: line 2, byte offset {offset} (0xB0): not UTF-8 text" in message
    # The curly quotes and the dash (0x93 0x94 0x96) are Windows-1252's own: what Excel saves in Italy.
    assert "looks like Windows-1252 (what Excel saves in Italy): use --encoding cp1252" in message

    summary, problems = run(consent_import.import_file(acme, path, False, "cp1252"))
    assert (summary.rows_stored, problems) == (1, [])
    (consent,) = facts(run, acme, MOBILE).consents
    assert (consent.evidence, consent.purpose) == ("ricevuta n° 17", "offerte “luce e gas” – clienti")


def test_latin_1_is_named_when_no_windows_1252_byte_shows(acme: Store, run: Callable, write_file: Writer) -> None:
    path = write_file("r.csv", "N° telefono;stato\n06 4567 8901;iscritto\n".encode("latin-1"))
    with pytest.raises(FileError, match=r"line 1, byte offset 1 \(0xB0\).*use --encoding latin-1"):
        run(registry_import.import_csv(acme, path, CHECKED, "acme", False))
    summary, problems = run(registry_import.import_csv(acme, path, CHECKED, "acme", False, encoding="iso8859-1"))
    assert (summary.rows_stored, problems) == (1, [])  # the header is recognised in Latin-1 too
    # The import's fingerprint is the file's own bytes, whatever they were read as.
    (answer,) = [i for i in run(acme.evidence(ROMA, None)) if i.kind == "rpo_answer"]
    assert answer.detail["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_utf16_with_and_without_byte_order_mark(acme: Store, run: Callable, write_file: Writer) -> None:
    text = "numero\r\n06 4567 8901\r\n02 1234 5678\r\n"
    with_bom = write_file("dir16.txt", text.encode("utf-16"))
    with pytest.raises(FileError, match=r"byte-order mark.*use --encoding utf-16"):
        run(directory_import.import_file(acme, with_bom, True, False))
    assert facts(run, acme, ROMA).listing is None
    summary, problems = run(directory_import.import_file(acme, with_bom, True, False, encoding="utf-16"))
    assert (summary.rows_stored, problems) == (2, [])

    without = write_file("dir16le.txt", text.encode("utf-16-le"))
    # Read as UTF-8 it would be rows of NUL bytes; it is named instead.
    with pytest.raises(FileError, match=r"every other byte is NUL.*use --encoding utf-16-le"):
        run(directory_import.import_file(acme, without, True, False))


def test_utf8_read_as_windows_1252_is_refused_before_it_turns_into_mojibake(
    acme: Store, run: Callable, write_file: Writer
) -> None:
    path = write_file("c.csv", "number,principal,given_at,evidence\n333 123 4567,acme,2026-09-01,ricevuta n° 1\n")
    with pytest.raises(FileError, match=r"not Windows-1252 text; looks like UTF-8.*without --encoding"):
        run(consent_import.import_file(acme, path, False, "cp1252"))
    assert facts(run, acme, MOBILE).consents == ()


def test_a_utf8_byte_order_mark_is_accepted_by_default(write_file: Writer) -> None:
    path = write_file("bom.csv", "\ufeffnumero;nome\n06 4567 8901;Rossi\n")
    assert list(read_rows(path, [])) == [(1, ["numero", "nome"]), (2, ["06 4567 8901", "Rossi"])]


@pytest.mark.parametrize(("given", "name"), [("UTF8", "utf-8"), ("CP1252", "cp1252"), ("latin-1", "iso8859-1"),
                                             ("windows-1252", "cp1252"), ("utf_16", "utf-16")])
def test_encoding_names(given: str, name: str) -> None:
    assert encoding_name(given) == name


@pytest.mark.parametrize("given", ["nosuch", "rot13", "base64"])
def test_encoding_names_refused(given: str) -> None:
    with pytest.raises(ValueError, match=given):
        encoding_name(given)


# -- the number column (finding 6) -----------------------------------------------------------------------------


COLUMN_CASES = [
    pytest.param("nome;cognome;telefono\nRossi;Mario;06 4567 8901\n", None, (2, 1, "telefono"), id="header"),
    pytest.param("Nome,Città,N° Cellulare\nRossi,Roma,333 123 4567\n", None, (2, 1, "N° Cellulare"),
                 id="header-accents"),
    pytest.param("Rossi\tMario\t06 4567 8901\nBianchi\tAnna\t333 123 4567\n", None, (2, None, None),
                 id="tab-no-header"),
    pytest.param("nome;cognome;contatto\nRossi;Mario;06 4567 8901\n", None, (2, 1, "contatto"),
                 id="unknown-header-by-content"),
    pytest.param("06 4567 8901\n02 1234 5678\n", None, (0, None, None), id="one-column"),
    pytest.param("nome;tel;cell\nRossi;06 4567 8901;333 123 4567\n", "cell", (2, 1, "cell"), id="column-name"),
    pytest.param("nome;tel;cell\nRossi;06 4567 8901;333 123 4567\n", "2", (1, 1, "tel"), id="column-number"),
    pytest.param("Rossi;+33 1 23 45 67 89\n", None, (1, None, None), id="foreign-numbers-still-a-column"),
]


@pytest.mark.parametrize(("content", "column", "expected"), COLUMN_CASES)
def test_the_number_column_is_found(write_file: Writer, content: str, column: str | None,
                                    expected: tuple[int, int | None, str | None]) -> None:
    found = find_number_column(write_file("list.csv", content), column=column)
    assert (found.index, found.header_line, found.name) == expected


REFUSED_COLUMNS = [
    pytest.param("nome;cognome\nRossi;Mario\nBianchi;Anna\n", None,
                 "no column holds telephone numbers in its first 2 row(s) (looked at 1 'nome', 2 'cognome')",
                 id="no-numbers"),
    pytest.param("Rossi;Via Roma 12\nBianchi;Via Po 3\n", None, "looked at 2 column(s), no header", id="no-header"),
    pytest.param("nome;telefono;cellulare\nRossi;06 4567 8901;333 123 4567\n", None,
                 "several columns could hold the numbers (2 'telefono', 3 'cellulare')", id="two-named"),
    pytest.param("Rossi;06 4567 8901;333 123 4567\n", None, "several columns hold telephone numbers (2 (1 of 1 "
                 "rows), 3 (1 of 1 rows))", id="two-by-content"),
    pytest.param("06 4567 8901;Rossi\n", "telefono", "no header line naming its columns", id="name-without-header"),
    pytest.param("nome;tel\nRossi;06 4567 8901\n", "cell", "no column of that name (the header has 1 'nome', "
                 "2 'tel')", id="unknown-name"),
    pytest.param("nome;tel\nRossi;06 4567 8901\n", "3", "at most 2 column(s)", id="number-too-large"),
    pytest.param("Rossi\nBianchi\n12\n", None, "no telephone number in its first", id="one-column-of-names"),
]


@pytest.mark.parametrize(("content", "column", "message"), REFUSED_COLUMNS)
def test_a_list_whose_column_cannot_be_told_is_refused(write_file: Writer, content: str, column: str | None,
                                                        message: str) -> None:
    with pytest.raises(FileError) as caught:
        find_number_column(write_file("list.csv", content), column=column)
    assert message in str(caught.value)
    assert str(caught.value).startswith(str(write_file("list.csv", content)))


def test_directory_import_reads_the_named_column_not_the_first(
    acme: Store, run: Callable, write_file: Writer
) -> None:
    path = write_file("elenco.csv", "cognome;nome;telefono\nRossi;Mario;06 4567 8901\nBianchi;Anna;02 1234 5678\n")
    summary, problems = run(directory_import.import_file(acme, path, True, False))
    assert (summary.rows_stored, problems) == (2, [])
    assert summary.notes == ["numbers read from column 3 'telefono' (named by the header)"]
    assert facts(run, acme, ROMA).listing is not None
    # A row with the column empty is a bad row, named by its line.
    gap = write_file("gap.csv", "cognome;telefono\nRossi;06 4567 8901\nVerdi;\n")
    with pytest.raises(ImportRejected) as caught:
        run(directory_import.import_file(acme, gap, True, False))
    assert [str(p) for p in caught.value.problems] == ["line 3: no number in column 2 'telefono' (named by the "
                                                       "header)"]


def test_a_directory_file_with_no_number_column_changes_nothing(
    acme: Store, run: Callable, write_file: Writer
) -> None:
    run(directory_import.import_file(acme, write_file("ok.txt", "06 4567 8901\n"), True, False))
    with pytest.raises(FileError, match="no column holds telephone numbers"):
        run(directory_import.import_file(acme, write_file("names.csv", "Rossi;Mario\nVerdi;Anna\n"), True, False))
    assert facts(run, acme, ROMA).listing is not None


def test_a_two_list_answer_reads_each_lists_number_column(acme: Store, run: Callable, write_file: Writer) -> None:
    submitted = write_file("inviati.csv", "nome,telefono\nRossi,06 4567 8901\nBianchi,02 1234 5678\n")
    registered = write_file("iscritti.txt", "06 4567 8901\n")
    summary, problems = run(registry_import.import_lists(acme, submitted, registered, RPO_REGISTERED_LIST, CHECKED,
                                                         "acme"))
    assert problems == []
    assert summary.detail == {"registered": 1, "not_registered": 1}
    assert "inviati.csv: numbers read from column 2 'telefono' (named by the header)" in summary.notes
    ambiguous = write_file("due.csv", "tel,cell\n06 4567 8901,333 123 4567\n")
    with pytest.raises(FileError, match="several columns could hold the numbers"):
        run(registry_import.import_lists(acme, ambiguous, registered, RPO_REGISTERED_LIST, CHECKED, "acme"))


# -- dates that cannot be true (finding 8) --------------------------------------------------------------------


def _future(days: int = 400) -> str:
    return (datetime.now(ROME) + timedelta(days=days)).date().isoformat()


def test_future_facts_in_import_rows_are_bad_rows(acme: Store, run: Callable, write_file: Writer) -> None:
    consents = write_file("c.csv", "number,principal,given_at,evidence\n"
                                   f"333 123 4567,acme,2026-09-01,r1\n333 123 4567,acme,{_future()},r2\n")
    with pytest.raises(ImportRejected) as caught:
        run(consent_import.import_file(acme, consents, False))
    assert lines_of(caught.value.problems) == [3]
    assert "given_at" in caught.value.problems[0].message and "in the future" in caught.value.problems[0].message

    optouts = write_file("o.csv", f"number,at\n333 123 4567,{_future()}\n02 1234 5678,2026-11-01\n")
    with pytest.raises(ImportRejected) as caught:
        run(optout_import.import_file(acme, optouts, False))
    assert lines_of(caught.value.problems) == [2]

    tomorrow = _future(1)
    contracts = write_file("k.csv", f"number,principal,start,end\n333 123 4567,acme,{tomorrow},\n"
                                    f"02 1234 5678,acme,2026-01-01,{_future()}\n")
    with pytest.raises(ImportRejected) as caught:
        run(contract_import.import_file(acme, contracts, False))
    # A contract starting tomorrow is not a fact yet; one whose end is planned is.
    assert lines_of(caught.value.problems) == [2]
    assert "start" in caught.value.problems[0].message


def test_rpo_dates_that_cannot_be_true(acme: Store, run: Callable, write_file: Writer) -> None:
    answers = write_file("a.csv", f"{ROMA},registered,2009-05-01\n{MILANO},registered,2011-02-01\n")
    with pytest.raises(ImportRejected) as caught:
        run(registry_import.import_csv(acme, answers, CHECKED, "acme", False))
    assert lines_of(caught.value.problems) == [1]
    assert "before the RPO opened (2011-01-31)" in caught.value.problems[0].message
    with pytest.raises(ImplausibleDate, match="before the RPO opened"):
        run(registry_import.import_csv(acme, answers, parse_time("1970-01-01"), "acme", False))
    with pytest.raises(ImplausibleDate, match="in the future"):
        run(registry_import.import_lists(acme, answers, answers, RPO_REGISTERED_LIST, parse_time(_future()), "acme"))
    assert facts(run, acme, MILANO).rpo is None


def test_an_answer_expired_on_arrival_is_stored_with_a_note_using_the_configured_validity(
    acme: Store, run: Callable, write_file: Writer
) -> None:
    twelve_days_ago = datetime.now(UTC) - timedelta(days=12)
    path = write_file("a.csv", f"{ROMA},not_registered\n")
    summary, _ = run(registry_import.import_csv(acme, path, twelve_days_ago, "acme", False, validity_days=15))
    assert summary.notes == []
    again = write_file("b.csv", f"{MILANO},not_registered\n")
    summary, _ = run(registry_import.import_csv(acme, again, twelve_days_ago, "acme", False, validity_days=10))
    (note,) = summary.notes
    assert "valid 10 days" in note and "rpo_expired" in note
    assert facts(run, acme, MILANO).rpo is not None  # stored: it is what the RPO said


def test_the_date_checks_themselves() -> None:
    now = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
    not_in_future(now + timedelta(minutes=9), "x", now)  # another machine's clock
    with pytest.raises(ImplausibleDate, match=r"x 2026-12-03T11:11:00\+01:00"):
        not_in_future(now + timedelta(minutes=11), "x", now)
    not_in_future(now.date(), "start", now)  # today's date is no future fact
    with pytest.raises(ImplausibleDate):
        not_in_future(now.date() + timedelta(days=1), "start", now)
    # Expiry: the decision's own wall-clock arithmetic (15 days from 00:00 Rome).
    checked = parse_time("2026-11-19")
    assert expired_on_arrival(checked, 15, now) is None
    assert expired_on_arrival(checked, 15, parse_time("2026-12-04T00:00")) is not None
    assert expired_on_arrival(checked, 15, parse_time("2026-12-03T23:59")) is None
    assert "valid 10 days" in str(expired_on_arrival(checked, 10, now))
    assert RPO_OPENED.isoformat() == "2011-01-31T00:00:00+01:00"
