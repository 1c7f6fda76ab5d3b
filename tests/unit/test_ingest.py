"""rpoguard.ingest: RPO answers (CSV and submitted/registered lists), directory listings and consents read
from operators' files into the store: spellings, delimiters, encodings, every bad row by line number,
atomicity and --skip-invalid."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rpoguard.db.sqlite import SqliteStore
from rpoguard.db.store import RPO_CLEANSED_LIST, RPO_REGISTERED_LIST, ImportRejected, RowProblem
from rpoguard.ingest import consents as consent_import
from rpoguard.ingest import directory as directory_import
from rpoguard.ingest import registry as registry_import
from rpoguard.ingest.csvfile import MAX_FIELD, FileError
from rpoguard.policy.model import Facts
from rpoguard.policy.rpo import with_rpo_summary
from rpoguard.timeutil import parse_time

CHECKED = parse_time("2026-11-20")
NOW = parse_time("2026-11-24T11:00")
ROMA = "+390645678901"
MILANO = "+390212345678"
MOBILE = "+393331234567"
MOBILE2 = "+393477654321"

Writer = Callable[..., Path]


def t(text: str) -> datetime:
    return parse_time(text)


def facts(run: Callable, store: SqliteStore, number: str, campaign: str | None = "spring26") -> Facts:
    # After every import of the test: directory files without --listed-at count from their import.
    at = datetime.now(UTC) + timedelta(days=1)
    return with_rpo_summary(run(store.facts(number, None, campaign, at)), at)


def rpo_state(run: Callable, store: SqliteStore, number: str) -> tuple[bool, datetime, datetime | None] | None:
    rpo = facts(run, store, number).rpo
    return None if rpo is None else (rpo.registered, rpo.checked_at, rpo.registered_at)


def import_rpo(
    run: Callable, store: SqliteStore, path: Path, skip_invalid: bool = False, checked_at: datetime = CHECKED
) -> tuple:
    return run(registry_import.import_csv(store, path, checked_at, "acme", skip_invalid))


def import_lists(run: Callable, store: SqliteStore, submitted: Path, answer_list: Path,
                 form: str = RPO_REGISTERED_LIST, principal: str = "acme") -> tuple:
    return run(registry_import.import_lists(store, submitted, answer_list, form, CHECKED, principal))


def lines_of(problems: list[RowProblem]) -> list[int]:
    return [p.line for p in problems]


@pytest.fixture
def acme(store: SqliteStore, run: Callable) -> SqliteStore:
    run(store.add_principal("acme", "ACME Energia", ["+390699990000"]))
    run(store.add_principal("beta", "Beta Telco", []))
    run(store.add_campaign("spring26", "acme", False, None, None))
    return store


# -- RPO answers: CSV -------------------------------------------------------------------------------------


def test_rpo_csv_with_and_without_header_give_the_same_answers(
    acme: SqliteStore, run: Callable, write_file: Writer
) -> None:
    body = "+39 06 4567 8901,registered,2025-03-10\n02 1234 5678,not_registered,\n333 123 4567,registered\n"
    with_header = write_file("with.csv", "number,status,registered_at\n" + body)
    summary, problems = import_rpo(run, acme, with_header)
    assert problems == []
    assert (summary.rows_read, summary.rows_stored, summary.rows_rejected) == (3, 3, 0)
    assert summary.detail == {"registered": 2, "not_registered": 1}
    expected = {
        ROMA: (True, CHECKED, t("2025-03-10")),
        MILANO: (False, CHECKED, None),
        MOBILE: (True, CHECKED, None),
    }
    assert {n: rpo_state(run, acme, n) for n in expected} == expected

    later = t("2026-11-21")
    summary, problems = import_rpo(run, acme, write_file("without.csv", body), checked_at=later)
    assert problems == []
    assert summary.rows_stored == 3
    assert {n: rpo_state(run, acme, n)[1:] for n in expected} == {n: (later, v[2]) for n, v in expected.items()}


@pytest.mark.parametrize("header", ["Numero;Stato", "NUMBER,STATUS", "msisdn,status", "telefono,stato", "phone,status"])
def test_rpo_header_words_are_recognised(acme: SqliteStore, run: Callable, write_file: Writer, header: str) -> None:
    sep = ";" if ";" in header else ","
    summary, problems = import_rpo(run, acme, write_file("h.csv", f"{header}\n{ROMA}{sep}1\n"))
    assert problems == []
    assert summary.rows_stored == 1


REGISTERED_SPELLINGS = ["registered", "REGISTERED", "Registered", "1", "Y", "y", "iscritto", "ISCRITTO", " Iscritto "]
NOT_REGISTERED_SPELLINGS = [
    "not_registered",
    "NOT_REGISTERED",
    "Not_Registered",
    "not-registered",
    "not registered",
    "0",
    "N",
    "n",
    "non_iscritto",
    "NON_ISCRITTO",
    "Non Iscritto",
    "non-iscritto",
]


@pytest.mark.parametrize(
    ("spelling", "registered"),
    [(s, True) for s in REGISTERED_SPELLINGS] + [(s, False) for s in NOT_REGISTERED_SPELLINGS],
)
def test_rpo_status_spellings(
    acme: SqliteStore, run: Callable, write_file: Writer, spelling: str, registered: bool
) -> None:
    summary, problems = import_rpo(run, acme, write_file("s.csv", f"{ROMA},{spelling}\n"))
    assert problems == []
    assert summary.detail == {"registered": int(registered), "not_registered": int(not registered)}
    assert rpo_state(run, acme, ROMA) == (registered, CHECKED, None)


@pytest.mark.parametrize("status", ["yes", "no", "true", "2", "registrato", "", "registered!"])
def test_rpo_unknown_status_is_a_bad_row(acme: SqliteStore, run: Callable, write_file: Writer, status: str) -> None:
    with pytest.raises(ImportRejected) as caught:
        import_rpo(run, acme, write_file("s.csv", f"number,status\n{ROMA},registered\n{MILANO},{status}\n"))
    assert lines_of(caught.value.problems) == [3]
    assert rpo_state(run, acme, ROMA) is None


def test_rpo_semicolon_delimiter_and_bom(acme: SqliteStore, run: Callable, write_file: Writer) -> None:
    content = "\ufeffnumber;status;registered_at\r\n06 4567 8901;iscritto;2025-03-10T09:30\r\n333 1234567;N;\r\n"
    summary, problems = import_rpo(run, acme, write_file("semi.csv", content))
    assert problems == []  # the BOM does not turn the header into a bad row
    assert summary.rows_stored == 2
    assert rpo_state(run, acme, ROMA) == (True, CHECKED, t("2025-03-10T09:30"))
    assert rpo_state(run, acme, MOBILE) == (False, CHECKED, None)


def test_rpo_bom_without_header(acme: SqliteStore, run: Callable, write_file: Writer) -> None:
    summary, problems = import_rpo(run, acme, write_file("bom.csv", "\ufeff+390645678901,1\n"))
    assert problems == []
    assert summary.rows_stored == 1


def test_rpo_registered_at_checks(acme: SqliteStore, run: Callable, write_file: Writer) -> None:
    content = (
        "number,status,registered_at\n"
        f"{ROMA},registered,2026-11-20\n"  # 2: the check date itself: fine
        f"{MILANO},registered,2026-11-21\n"  # 3: after the check date
        f"{MOBILE},registered,2026-11-20T00:00:01\n"  # 4: one second after the check
        f"{MOBILE2},not_registered,2025-01-01\n"  # 5: a date for a number that is not registered
        "+390552345678,registered,10/03/2025\n"  # 6: not ISO 8601
    )
    with pytest.raises(ImportRejected) as caught:
        import_rpo(run, acme, write_file("r.csv", content))
    problems = caught.value.problems
    assert lines_of(problems) == [3, 4, 5, 6]
    assert "after the check date" in problems[0].message
    assert "after the check date" in problems[1].message
    assert "not registered" in problems[2].message
    assert "ISO 8601" in problems[3].message
    assert rpo_state(run, acme, ROMA) is None


def test_every_bad_row_is_reported_by_its_line_number_and_nothing_lands(
    acme: SqliteStore, run: Callable, write_file: Writer
) -> None:
    content = (
        "number,status\r\n"  # 1
        f"{ROMA},registered\r\n"  # 2
        "06 ABC,registered\r\n"  # 3: not a number
        "\r\n"  # 4: blank, skipped but counted
        f"{MILANO},perhaps\r\n"  # 5: bad status
        f"{MOBILE}\r\n"  # 6: no status
        "+33 1 23 45 67 89,registered\r\n"  # 7: a foreign number
        "800 123 456,0\r\n"  # 8: toll-free
        f"{MOBILE2},1\r\n"  # 9: fine
        "12,Y\r\n"  # 10: too short
    )
    with pytest.raises(ImportRejected) as caught:
        import_rpo(run, acme, write_file("bad.csv", content))
    problems = caught.value.problems
    assert lines_of(problems) == [3, 5, 6, 7, 8, 10]
    assert "ABC" in problems[0].message
    assert "perhaps" in problems[1].message
    assert "number,status" in problems[2].message
    assert str(problems[0]).startswith("line 3: ")
    assert str(caught.value) == "6 bad row(s); nothing was imported"
    for number in (ROMA, MOBILE2):
        assert rpo_state(run, acme, number) is None


def test_skip_invalid_imports_the_good_rows_and_reports_the_bad(
    acme: SqliteStore, run: Callable, write_file: Writer
) -> None:
    content = f"number,status\n{ROMA},registered\nxyz,registered\n{MILANO},maybe\n{MOBILE},0\n"
    summary, problems = import_rpo(run, acme, write_file("skip.csv", content), skip_invalid=True)
    assert lines_of(problems) == [3, 4]
    assert (summary.rows_read, summary.rows_stored, summary.rows_rejected) == (4, 2, 2)
    assert rpo_state(run, acme, ROMA) == (True, CHECKED, None)
    assert rpo_state(run, acme, MOBILE) == (False, CHECKED, None)
    assert rpo_state(run, acme, MILANO) is None


def test_rejected_file_can_be_imported_afterwards_with_skip_invalid(
    acme: SqliteStore, run: Callable, write_file: Writer
) -> None:
    path = write_file("twice.csv", f"{ROMA},registered\nnope,registered\n")
    with pytest.raises(ImportRejected):
        import_rpo(run, acme, path)
    summary, problems = import_rpo(run, acme, path, skip_invalid=True)
    assert not summary.already_imported  # the rejected attempt left no trace
    assert lines_of(problems) == [2]
    assert rpo_state(run, acme, ROMA) == (True, CHECKED, None)


def test_reimport_of_the_same_file_is_recognised(acme: SqliteStore, run: Callable, write_file: Writer) -> None:
    path = write_file("a.csv", f"{ROMA},registered\n{MILANO},0\n")
    first, _ = import_rpo(run, acme, path)
    again, problems = import_rpo(run, acme, path)
    assert again.already_imported
    assert again.import_id == first.import_id
    assert problems == []
    # Same content under another name is the same file.
    copy, _ = import_rpo(run, acme, write_file("copy.csv", path.read_text()))
    assert copy.already_imported


def test_non_utf8_file_is_a_clear_file_error(acme: SqliteStore, run: Callable, write_file: Writer) -> None:
    latin1 = write_file(
        "latin1.csv", "numero,stato\n+390645678901,iscritto\n+390212345678,non iscritto \xe8\n", encoding="latin-1"
    )
    with pytest.raises(FileError, match="UTF-8") as caught:
        import_rpo(run, acme, latin1)
    assert "latin1.csv" in str(caught.value)
    assert rpo_state(run, acme, ROMA) is None


def test_non_utf8_byte_far_into_the_file_is_a_clear_file_error(
    acme: SqliteStore, run: Callable, write_file: Writer
) -> None:
    good = "".join(f"+39333{i:07d},registered\n" for i in range(1000))  # ~23 KB, past the delimiter sample
    path = write_file("late.csv", good.encode() + b"+390645678901,non_iscritt\xf2\n")
    with pytest.raises(FileError, match="UTF-8") as caught:
        import_rpo(run, acme, path)
    # Exactly where: the text reader decodes ahead of the CSV reader (it used to say "after line 983"), so
    # the byte is found again in the raw file.
    offset = len(good.encode()) + len("+390645678901,non_iscritt")
    assert f"line 1001, byte offset {offset} (0xF2)" in str(caught.value)
    assert "--encoding" in str(caught.value)
    assert rpo_state(run, acme, "+393330000000") is None  # the rows before it did not land


def test_missing_file_is_a_file_error(acme: SqliteStore, run: Callable, tmp_path: Path) -> None:
    with pytest.raises(FileError, match="cannot read"):
        import_rpo(run, acme, tmp_path / "nope.csv")


def test_nul_byte_and_huge_fields_are_bad_rows(acme: SqliteStore, run: Callable, write_file: Writer) -> None:
    content = (
        "number,status\n"  # 1
        f"{ROMA},registered\n"  # 2
        "+39021234\x005678,registered\n"  # 3: NUL byte
        f"{MILANO},{'r' * (MAX_FIELD + 1)}\n"  # 4: longer than MAX_FIELD
        f"{MOBILE},{'x' * (MAX_FIELD * 5)}\n"  # 5: beyond the csv module's field limit
        f"{MOBILE2},registered\n"  # 6: fine again
    )
    with pytest.raises(ImportRejected) as caught:
        import_rpo(run, acme, write_file("nul.csv", content))
    problems = caught.value.problems
    assert lines_of(problems) == [3, 4, 5]
    assert "NUL" in problems[0].message
    assert "longer than" in problems[1].message
    summary, problems = import_rpo(run, acme, write_file("nul.csv", content), skip_invalid=True)
    assert lines_of(problems) == [3, 4, 5]
    assert summary.rows_stored == 2
    assert rpo_state(run, acme, MOBILE2) == (True, CHECKED, None)


def test_unterminated_quote_is_reported_not_crashed(acme: SqliteStore, run: Callable, write_file: Writer) -> None:
    content = f'{ROMA},registered\n"{MILANO},registered\n{MOBILE},registered\n'
    with pytest.raises(ImportRejected) as caught:
        import_rpo(run, acme, write_file("q.csv", content))
    assert "malformed CSV" in caught.value.problems[-1].message


def test_contradicting_answers_for_one_number_in_one_file_do_not_fail_open(
    acme: SqliteStore, run: Callable, write_file: Writer
) -> None:
    path = write_file("dup.csv", f"number,status\n{ROMA},registered\n06 4567 8901,not_registered\n{MOBILE},0\n")
    # Regression: the last row used to win, so "registered" then "not_registered" stored not registered.
    summary, problems = import_rpo(run, acme, path)
    assert problems == []
    assert rpo_state(run, acme, ROMA) == (True, CHECKED, None)
    # ... and it was silent: the import now says how many and where.
    assert summary.detail == {"registered": 1, "not_registered": 1, "opposite_answers": 1}
    (note,) = summary.notes
    assert f"{ROMA} lines 2 (registered) and 3 (not registered)" in note
    # And the other way round; of two registration dates the later is kept (it revokes more consents).
    other = write_file("dup2.csv", f"{MILANO},0\n{MILANO},1,2025-03-10\n{MILANO},1,2025-01-10\n")
    summary, _ = import_rpo(run, acme, other)
    assert rpo_state(run, acme, MILANO) == (True, CHECKED, t("2025-03-10"))
    assert summary.detail["opposite_answers"] == 1
    assert "lines 2 (registered) and 1 (not registered)" in summary.notes[0]


def test_many_contradicting_numbers_are_counted_and_the_first_ten_named(
    acme: SqliteStore, run: Callable, write_file: Writer
) -> None:
    rows = "".join(f"+3933300000{i:02d},registered\n+3933300000{i:02d},not_registered\n" for i in range(25))
    summary, _ = import_rpo(run, acme, write_file("many.csv", rows))
    assert summary.detail["opposite_answers"] == 25
    assert summary.notes[0].count(" (not registered)") == 10
    assert "and 15 more" in summary.notes[0]
    assert summary.notes[0].index("lines 1 ") < summary.notes[0].index("lines 3 ")


# -- RPO answers: submitted and registered lists --------------------------------------------------------------


def test_submitted_and_registered_lists(acme: SqliteStore, run: Callable, write_file: Writer) -> None:
    submitted = write_file("submitted.txt", "number\n06 4567 8901\n02 1234 5678\n333 123 4567\n06-4567-8901\n")
    registered = write_file("registered.txt", "+39 02 1234 5678\n")
    summary, problems = import_lists(run, acme, submitted, registered)
    assert problems == []
    assert summary.detail == {"registered": 1, "not_registered": 2}
    assert rpo_state(run, acme, ROMA) == (False, CHECKED, None)
    assert rpo_state(run, acme, MOBILE) == (False, CHECKED, None)
    assert rpo_state(run, acme, MILANO) == (True, CHECKED, None)

    again, _ = import_lists(run, acme, submitted, registered)
    assert again.already_imported


def test_submitted_and_cleansed_lists(acme: SqliteStore, run: Callable, write_file: Writer) -> None:
    # The RPO's cleaned list names the numbers that may be called: every other submitted number is registered.
    submitted = write_file("submitted.txt", "06 4567 8901\n02 1234 5678\n333 123 4567\n")
    cleansed = write_file("cleansed.txt", "+39 06 4567 8901\n333-123-4567\n")
    summary, problems = import_lists(run, acme, submitted, cleansed, RPO_CLEANSED_LIST)
    assert problems == []
    assert summary.detail == {"registered": 1, "not_registered": 2}
    assert rpo_state(run, acme, ROMA) == (False, CHECKED, None)
    assert rpo_state(run, acme, MOBILE) == (False, CHECKED, None)
    assert rpo_state(run, acme, MILANO) == (True, CHECKED, None)
    # The same two files read the other way are another answer, never a repeat of this one.
    other, _ = import_lists(run, acme, submitted, cleansed, RPO_REGISTERED_LIST)
    assert not other.already_imported


def test_an_empty_cleansed_list_makes_every_submitted_number_registered(
    acme: SqliteStore, run: Callable, write_file: Writer
) -> None:
    submitted = write_file("submitted.txt", "06 4567 8901\n02 1234 5678\n")
    summary, _ = import_lists(run, acme, submitted, write_file("cleansed.txt", ""), RPO_CLEANSED_LIST)
    assert summary.detail == {"registered": 2, "not_registered": 0}


@pytest.mark.parametrize("form", [RPO_REGISTERED_LIST, RPO_CLEANSED_LIST])
def test_a_number_in_the_answer_list_that_was_not_submitted_refuses_the_pair(
    acme: SqliteStore, run: Callable, write_file: Writer, form: str
) -> None:
    # Two files that are not one submission: the absence of the others from the list would prove nothing.
    submitted = write_file("submitted.txt", "06 4567 8901\n02 1234 5678\n")
    answer = write_file("answer.txt", "02 1234 5678\n347 765 4321\n")
    with pytest.raises(ImportRejected) as caught:
        import_lists(run, acme, submitted, answer, form)
    assert caught.value.skippable is False
    assert lines_of(caught.value.problems) == [2]
    assert MOBILE2 in caught.value.problems[0].message
    assert "not in the submitted list" in caught.value.problems[0].message
    assert rpo_state(run, acme, ROMA) is None
    assert rpo_state(run, acme, MILANO) is None


@pytest.mark.parametrize("form", [RPO_REGISTERED_LIST, RPO_CLEANSED_LIST])
def test_list_problems_name_the_file_and_line_and_refuse_the_pair_whole(
    acme: SqliteStore, run: Callable, write_file: Writer, form: str
) -> None:
    submitted = write_file("submitted.txt", "06 4567 8901\nnot a number\n02 1234 5678\n")
    answer = write_file("answer.txt", "02 1234 5678\n\n12\n")
    with pytest.raises(ImportRejected) as caught:
        import_lists(run, acme, submitted, answer, form)
    problems = caught.value.problems
    assert sorted((p.line, p.message.startswith("answer.txt: ")) for p in problems) == [(2, False), (3, True)]
    # No row may be skipped: an unreadable row might be the very number the list names.
    assert caught.value.skippable is False
    assert rpo_state(run, acme, ROMA) is None
    assert rpo_state(run, acme, MILANO) is None


def test_answers_belong_to_the_principal_that_consulted_the_rpo(
    acme: SqliteStore, run: Callable, write_file: Writer
) -> None:
    run(acme.add_campaign("beta-promo", "beta", False, None, None))
    path = write_file("answers.csv", f"{ROMA},not_registered\n")
    import_rpo(run, acme, path)
    assert rpo_state(run, acme, ROMA) == (False, CHECKED, None)
    assert facts(run, acme, ROMA, campaign="beta-promo").rpo is None
    # The same file obtained by beta is beta's own answer, not a repeat of acme's.
    summary, _ = run(registry_import.import_csv(acme, path, CHECKED, "beta", False))
    assert not summary.already_imported
    assert facts(run, acme, ROMA, campaign="beta-promo").rpo is not None


# -- directory listings ----------------------------------------------------------------------------------------


def test_directory_replace_and_append(acme: SqliteStore, run: Callable, write_file: Writer) -> None:
    first = write_file("dir1.txt", "number\n06 4567 8901\n02 1234 5678\n")
    second = write_file("dir2.txt", "333 123 4567\n")
    summary, problems = run(directory_import.import_file(acme, first, True, False))
    assert (summary.rows_stored, problems) == (2, [])
    summary, _ = run(directory_import.import_file(acme, second, True, False))
    assert summary.detail["ended"] == 2
    assert facts(run, acme, ROMA).listing is None
    assert facts(run, acme, MOBILE).listing is not None

    third = write_file("dir3.txt", "06 4567 8901\n")
    run(directory_import.import_file(acme, third, False, False))  # append
    assert facts(run, acme, ROMA).listing is not None
    assert facts(run, acme, MOBILE).listing is not None
    assert facts(run, acme, MILANO).listing is None


def test_directory_first_column_of_a_csv_and_bad_lines(acme: SqliteStore, run: Callable, write_file: Writer) -> None:
    path = write_file("dir.csv", "numero;nome\n06 4567 8901;Rossi\nRossi;06 1\n02 1234 5678;Bianchi\n")
    with pytest.raises(ImportRejected) as caught:
        run(directory_import.import_file(acme, path, True, False))
    assert lines_of(caught.value.problems) == [3]
    assert facts(run, acme, ROMA).listing is None
    summary, problems = run(directory_import.import_file(acme, path, True, True))
    assert lines_of(problems) == [3]
    assert summary.rows_stored == 2


def test_rejected_directory_replace_keeps_the_old_listings(
    acme: SqliteStore, run: Callable, write_file: Writer
) -> None:
    run(directory_import.import_file(acme, write_file("ok.txt", "06 4567 8901\n"), True, False))
    with pytest.raises(ImportRejected):
        run(directory_import.import_file(acme, write_file("bad.txt", "333 123 4567\nbad\n"), True, False))
    assert facts(run, acme, ROMA).listing is not None
    assert facts(run, acme, MOBILE).listing is None


def test_directory_reimport_of_an_earlier_file_replaces_again(
    acme: SqliteStore, run: Callable, write_file: Writer
) -> None:
    first = write_file("dir1.txt", "06 4567 8901\n")
    second = write_file("dir2.txt", "333 123 4567\n")
    run(directory_import.import_file(acme, first, True, False))
    run(directory_import.import_file(acme, second, True, False))
    # Regression: the third import used to be skipped as "already imported; nothing changed".
    summary, _ = run(directory_import.import_file(acme, first, True, False))
    assert not summary.already_imported
    assert facts(run, acme, ROMA).listing is not None
    assert facts(run, acme, MOBILE).listing is None
    # Appending a file twice in a row is a true repeat: nothing to add.
    third = write_file("dir3.txt", "02 1234 5678\n")
    run(directory_import.import_file(acme, third, False, False))
    again, _ = run(directory_import.import_file(acme, third, False, False))
    assert again.already_imported
    assert facts(run, acme, MILANO).listing is not None


def test_directory_append_after_a_replace_adds_the_numbers_again(
    acme: SqliteStore, run: Callable, write_file: Writer
) -> None:
    first = write_file("dir1.txt", "06 4567 8901\n")
    extra = write_file("extra.txt", "333 123 4567\n")
    run(directory_import.import_file(acme, first, True, False))
    run(directory_import.import_file(acme, extra, False, False))  # append
    run(directory_import.import_file(acme, first, True, False))  # replace: extra's number is gone
    assert facts(run, acme, MOBILE).listing is None
    run(directory_import.import_file(acme, extra, False, False))  # append it again
    assert facts(run, acme, MOBILE).listing is not None


# -- consents ------------------------------------------------------------------------------------------------


CONSENT_HEADER = "number,principal,given_at,evidence,automated,expires_at,purpose\n"


def test_consent_csv_with_every_column(acme: SqliteStore, run: Callable, write_file: Writer) -> None:
    content = (
        "Number,PRINCIPAL,Given_At,evidence,automated,expires_at,purpose\n"
        "333 123 4567,acme,2026-09-01T10:15,web-form:8812,no,,offerte luce e gas\n"
        "333 123 4567,acme,2026-10-01T10:15,rec:1193,sì,2027-10-01,robocall\n"
        "347 765 4321,beta,2026-09-01,rec:1,1,,\n"
    )
    summary, problems = run(consent_import.import_file(acme, write_file("c.csv", content), False))
    assert problems == []
    assert (summary.rows_read, summary.rows_stored, summary.detail["duplicates"]) == (3, 3, 0)
    consents = sorted(facts(run, acme, MOBILE).consents, key=lambda c: c.given_at)
    assert [(c.evidence, c.automated, c.expires_at, c.purpose) for c in consents] == [
        ("web-form:8812", False, None, "offerte luce e gas"),
        ("rec:1193", True, t("2027-10-01"), "robocall"),
    ]
    assert consents[0].given_at == t("2026-09-01T10:15")
    assert facts(run, acme, MOBILE2).consents == ()  # beta's consent is not acme's
    run(acme.add_campaign("beta1", "beta", True, None, None))
    (beta,) = facts(run, acme, MOBILE2, campaign="beta1").consents
    assert beta.automated


def test_consent_csv_missing_required_column_is_a_clear_error(
    acme: SqliteStore, run: Callable, write_file: Writer
) -> None:
    path = write_file("c.csv", "number,principal,given_at\n333 123 4567,acme,2026-09-01\n")
    with pytest.raises(FileError) as caught:
        run(consent_import.import_file(acme, path, False))
    message = str(caught.value)
    assert "line 1" in message
    assert "missing: evidence" in message
    assert facts(run, acme, MOBILE).consents == ()


def test_consent_csv_unknown_column_and_empty_file(acme: SqliteStore, run: Callable, write_file: Writer) -> None:
    path = write_file("c.csv", "number,principal,given_at,evidence,channel\n333 123 4567,acme,2026-09-01,x,web\n")
    with pytest.raises(FileError, match="unknown column"):
        run(consent_import.import_file(acme, path, False))
    with pytest.raises(FileError, match="empty file"):
        run(consent_import.import_file(acme, write_file("empty.csv", ""), False))


def test_consent_rows_are_checked_one_by_one(acme: SqliteStore, run: Callable, write_file: Writer) -> None:
    content = CONSENT_HEADER + (
        "333 123 4567,acme,2026-09-01,rec:1,no,,\n"  # 2 fine
        "333 123 4567,nobody,2026-09-01,rec:2,no,,\n"  # 3 unknown principal
        "333 123 4567,acme,2026-09-01,,no,,\n"  # 4 no evidence
        "333 123 4567,acme,yesterday,rec:3,no,,\n"  # 5 bad time
        "333 123 4567,acme,2026-09-01,rec:4,maybe,,\n"  # 6 bad flag
        "333 123 4567,acme,2026-09-01,rec:5,no,2026-08-01,\n"  # 7 expires before given
        "abc,acme,2026-09-01,rec:6,no,,\n"  # 8 bad number
        "347 765 4321,acme,2026-09-01,rec:7,no,,\n"  # 9 fine
    )
    path = write_file("c.csv", content)
    with pytest.raises(ImportRejected) as caught:
        run(consent_import.import_file(acme, path, False))
    problems = caught.value.problems
    assert lines_of(problems) == [3, 4, 5, 6, 7, 8]
    assert "'nobody' does not exist" in problems[0].message
    assert "evidence is empty" in problems[1].message
    assert facts(run, acme, MOBILE).consents == ()

    summary, problems = run(consent_import.import_file(acme, path, True))
    assert lines_of(problems) == [3, 4, 5, 6, 7, 8]
    assert (summary.rows_stored, summary.rows_rejected) == (2, 6)
    assert [c.evidence for c in facts(run, acme, MOBILE).consents] == ["rec:1"]


def test_duplicate_consents_are_idempotent(acme: SqliteStore, run: Callable, write_file: Writer) -> None:
    row = "333 123 4567,acme,2026-09-01T10:15,web-form:8812,no,,\n"
    first, _ = run(consent_import.import_file(acme, write_file("a.csv", CONSENT_HEADER + row + row), False))
    assert (first.rows_read, first.rows_stored, first.detail["duplicates"]) == (2, 1, 1)
    # Another file (other bytes) with the same consent written differently adds nothing.
    same = "+39 333 1234567,acme,2026-09-01T10:15:00+02:00,web-form:8812,0,,\n"
    second, _ = run(consent_import.import_file(acme, write_file("b.csv", CONSENT_HEADER + same), False))
    assert not second.already_imported
    assert (second.rows_stored, second.detail["duplicates"]) == (0, 1)
    again, _ = run(consent_import.import_file(acme, write_file("a.csv", CONSENT_HEADER + row + row), False))
    assert again.already_imported
    assert len(facts(run, acme, MOBILE).consents) == 1


def test_consent_file_not_utf8(acme: SqliteStore, run: Callable, write_file: Writer) -> None:
    path = write_file(
        "c.csv", CONSENT_HEADER + "333 123 4567,acme,2026-09-01,ricevuta n\xb0 1,no,,\n", encoding="latin-1"
    )
    with pytest.raises(FileError, match="UTF-8"):
        run(consent_import.import_file(acme, path, False))
