"""History is never rewritten (issue 14), on both backends: a fact in time keeps the record it was first
written with, and what is said about it later is refused or noted beside it, with its own recorded time.

- a consent's first revocation stands; a later one is a note (it counts for decisions only if it names an
  earlier moment: the reading that never favours the call);
- a consent restated with other details is refused (it is ended with a revocation, never edited);
- a contract's end is set once, when a running contract ends; another end is a noted correction (an
  earlier one counts, a later one or none never does), by command and by import alike;
- two files answering the RPO for the same check time keep their own answers, each with its file;
- every input file of an import is kept with its own name, size and SHA-256;
- every decision's row carries the moment it was written, covered by the hash.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Callable
from datetime import date, datetime
from typing import Any

import pytest

from rpoguard.audit import AuditEntry, AuditRow, chain_hash, verify_chain
from rpoguard.db.store import (
    CONTRACT_CORRECTED,
    CONTRACT_ENDED,
    CONTRACT_NOTED,
    CONTRACT_RECORDED,
    CONTRACT_UNCHANGED,
    FILE_SUBMITTED,
    RPO_REGISTERED_LIST,
    ConsentRecord,
    ContractRecord,
    ImportFile,
    ImportMeta,
    ImportRejected,
    RecordConflict,
    RpoAnswer,
    Store,
)
from rpoguard.policy.rpo import with_rpo_summary
from rpoguard.timeutil import parse_time, to_us
from support.rawdb import RawDb

NUM = "+390645678901"
OTHER = "+393331234567"
NOW = parse_time("2026-11-24T11:00")


def t(text: str) -> datetime:
    return parse_time(text)


@pytest.fixture
def acme(store: Store, run: Callable) -> Store:
    run(store.add_principal("acme", "ACME Energia", []))
    run(store.add_campaign("c", "acme", False, None, None))
    return store


def raw(run: Callable, store: Store, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    db = RawDb(store, run)
    try:
        return db.execute(sql, params).fetchall()
    finally:
        db.close()


def evidence_kinds(run: Callable, store: Store, number: str = NUM) -> list[tuple[str, dict[str, Any]]]:
    return [(i.kind, i.detail) for i in run(store.evidence(number, None))]


# -- consents ----------------------------------------------------------------------------------------------


def test_the_first_revocation_stands_and_later_ones_are_noted(acme: Store, run: Callable) -> None:
    consent_id, _ = run(acme.add_consent(ConsentRecord(NUM, "acme", t("2026-01-10"), "form-1")))
    (first,) = run(acme.revoke_consents(NUM, "acme", t("2026-11-05")))
    assert (first.first, first.revoked_at, first.effective_at) == (True, t("2026-11-05"), t("2026-11-05"))
    # A second revocation, later: noted; the first stands, for the record and for decisions.
    (again,) = run(acme.revoke_consents(NUM, "acme", t("2026-11-20")))
    assert (again.consent_id, again.first, again.revoked_at, again.effective_at) == (
        consent_id, False, t("2026-11-05"), t("2026-11-05"))
    (consent,) = run(acme.facts(NUM, "fixed", "c", NOW)).consents
    assert consent.revoked_at == t("2026-11-05")
    # One naming an earlier moment: noted too, the record unchanged, but decisions count the consent
    # revoked from the earlier moment (never in favour of the call).
    (earlier,) = run(acme.revoke_consents(NUM, "acme", t("2026-11-01")))
    assert (earlier.first, earlier.revoked_at, earlier.effective_at) == (False, t("2026-11-05"), t("2026-11-01"))
    (consent,) = run(acme.facts(NUM, "fixed", "c", NOW)).consents
    assert consent.revoked_at == t("2026-11-01")
    assert raw(run, acme, "SELECT revoked_us FROM consents WHERE id = ?", consent_id) == [(to_us(t("2026-11-05")),)]
    # The evidence shows the record as first written and every revocation with when it was recorded.
    items = evidence_kinds(run, acme)
    (record,) = [d for k, d in items if k == "consent"]
    assert record["revoked_at"] == "2026-11-04T23:00:00.000000Z"
    notes = [(k, d["revoked_at"], d.get("earlier")) for k, d in items if k.startswith("consent_revoked")]
    assert notes == [("consent_revoked", "2026-11-04T23:00:00.000000Z", False),
                     ("consent_revoked_again", "2026-11-19T23:00:00.000000Z", False),
                     ("consent_revoked_again", "2026-10-31T23:00:00.000000Z", True)]
    assert all(d["recorded_at"] for k, d in items if k.startswith("consent_revoked"))


def test_a_consent_restated_with_other_details_is_refused(acme: Store, run: Callable) -> None:
    record = ConsentRecord(NUM, "acme", t("2026-01-10"), "form-1", purpose="luce")
    consent_id, _ = run(acme.add_consent(record))
    for changed in (ConsentRecord(NUM, "acme", t("2026-01-10"), "form-1", expires_at=t("2027-01-10"), purpose="luce"),
                    ConsentRecord(NUM, "acme", t("2026-01-10"), "form-1", automated=True, purpose="luce"),
                    ConsentRecord(NUM, "acme", t("2026-01-10"), "form-1", purpose="gas")):
        with pytest.raises(RecordConflict, match=f"consent #{consent_id} .* already recorded with .*never changed"):
            run(acme.add_consent(changed))
    assert run(acme.add_consent(record)) == (consent_id, False)
    # (False == 0: SQLite's flag and PostgreSQL's boolean alike.)
    assert raw(run, acme, "SELECT expires_us, automated, purpose FROM consents") == [(None, False, "luce")]


def test_a_consent_import_refuses_rows_restating_a_consent_otherwise(acme: Store, run: Callable) -> None:
    run(acme.add_consent(ConsentRecord(NUM, "acme", t("2026-01-10"), "form-1")))
    rows = [ConsentRecord(NUM, "acme", t("2026-01-10"), "form-1", line=2),  # the same: a duplicate
            ConsentRecord(NUM, "acme", t("2026-01-10"), "form-1", expires_at=t("2027-01-01"), line=3),
            ConsentRecord(OTHER, "acme", t("2026-02-01"), "form-2", line=4),
            ConsentRecord(OTHER, "acme", t("2026-02-01"), "form-2", automated=True, line=5)]
    with pytest.raises(ImportRejected) as rejected:
        run(acme.import_consents(rows, ImportMeta(kind="consent", file_name="c.csv", sha256="c1")))
    assert [p.line for p in rejected.value.problems] == [3, 5]
    assert "never changed" in rejected.value.problems[0].message
    assert "restates line 4 with other details: automated no (asked yes)" in rejected.value.problems[1].message
    assert raw(run, acme, "SELECT count(*) FROM consents") == [(1,)]
    # With --skip-invalid the others land and the two are listed.
    meta = ImportMeta(kind="consent", file_name="c.csv", sha256="c1", skip_invalid=True)
    summary = run(acme.import_consents(rows, meta))
    assert [p.line for p in meta.rejected] == [3, 5]
    assert (summary.rows_stored, summary.rows_rejected, summary.detail["duplicates"]) == (1, 2, 1)
    assert raw(run, acme, "SELECT number, expires_us FROM consents ORDER BY id") == [(NUM, None), (OTHER, None)]


# -- contracts ---------------------------------------------------------------------------------------------


def test_a_contract_end_is_set_once_and_corrections_are_noted(acme: Store, run: Callable) -> None:
    start = date(2026, 1, 1)
    added = run(acme.add_contract(NUM, "acme", start, None))
    assert added.outcome == CONTRACT_RECORDED
    assert run(acme.add_contract(NUM, "acme", start, None)).outcome == CONTRACT_UNCHANGED
    ended = run(acme.add_contract(NUM, "acme", start, date(2026, 6, 30)))
    assert (ended.outcome, ended.end_before, ended.effective_end) == (CONTRACT_ENDED, None, date(2026, 6, 30))
    # A later end, or none, would save consents for longer: noted, never used.
    for asked in (date(2026, 9, 30), None):
        later = run(acme.add_contract(NUM, "acme", start, asked))
        assert (later.outcome, later.end_before, later.effective_end) == (
            CONTRACT_NOTED, date(2026, 6, 30), date(2026, 6, 30))
        (contract,) = run(acme.facts(NUM, "fixed", "c", NOW)).contracts
        assert contract.end == date(2026, 6, 30)
    # Said again, it is not noted twice.
    assert run(acme.add_contract(NUM, "acme", start, date(2026, 9, 30))).outcome == CONTRACT_UNCHANGED
    # An earlier end is a correction that counts; the record keeps its first end.
    earlier = run(acme.add_contract(NUM, "acme", start, date(2026, 5, 31)))
    assert (earlier.outcome, earlier.end_before, earlier.effective_end) == (
        CONTRACT_CORRECTED, date(2026, 6, 30), date(2026, 5, 31))
    (contract,) = run(acme.facts(NUM, "fixed", "c", NOW)).contracts
    assert contract.end == date(2026, 5, 31)
    assert [str(r[0]) for r in raw(run, acme, "SELECT end_date FROM contracts")] == ["2026-06-30"]
    notes = [(k, d["end"], d["earlier"]) for k, d in evidence_kinds(run, acme) if k.startswith("contract_end")]
    assert notes == [("contract_ended", "2026-06-30", False), ("contract_end_corrected", "2026-09-30", False),
                     ("contract_end_corrected", None, False), ("contract_end_corrected", "2026-05-31", True)]


def test_a_contract_import_sets_ends_once_and_notes_corrections(acme: Store, run: Callable) -> None:
    running = run(acme.add_contract(NUM, "acme", date(2026, 1, 1), None)).contract_id
    ended = run(acme.add_contract(NUM, "acme", date(2025, 1, 1), date(2025, 12, 31))).contract_id
    other = run(acme.add_contract(OTHER, "acme", date(2025, 1, 1), date(2025, 6, 30))).contract_id
    rows = [ContractRecord(NUM, "acme", date(2026, 1, 1), date(2026, 8, 31), line=2),  # ends the running one
            ContractRecord(NUM, "acme", date(2025, 1, 1), date(2026, 3, 31), line=3),  # later: noted, unused
            ContractRecord(OTHER, "acme", date(2025, 1, 1), date(2025, 5, 31), line=4),  # earlier: counts
            ContractRecord(OTHER, "acme", date(2025, 1, 1), date(2025, 5, 31), line=5),  # the same again
            ContractRecord(NUM, "acme", date(2026, 9, 1), None, line=6),  # new, running
            ContractRecord(NUM, "acme", date(2026, 9, 1), date(2026, 10, 31), line=7)]  # and ended in the file
    summary = run(acme.import_contracts(rows, ImportMeta(kind="contract", file_name="k.csv", sha256="k1")))
    assert summary.rows_stored == 1
    assert summary.detail == {"ended": 2, "corrected": 1, "noted": 1, "duplicates": 1}
    assert any("earlier end" in n for n in summary.notes) and any("not used" in n for n in summary.notes)
    ends = {c.id: c.end for c in run(acme.facts(NUM, "fixed", "c", NOW)).contracts}
    assert ends[running] == date(2026, 8, 31)
    assert ends[ended] == date(2025, 12, 31)
    (new_id,) = set(ends) - {running, ended}
    assert ends[new_id] == date(2026, 10, 31)
    (kept,) = run(acme.facts(OTHER, "mobile", "c", NOW)).contracts
    assert (kept.id, kept.end) == (other, date(2025, 5, 31))
    stored = {r[0]: str(r[1]) for r in raw(run, acme, "SELECT id, end_date FROM contracts")}
    assert (stored[ended], stored[other]) == ("2025-12-31", "2025-06-30")  # the records as first written
    # Another file saying the same corrections notes nothing twice.
    again = run(acme.import_contracts(rows[1:4], ImportMeta(kind="contract", file_name="k2.csv", sha256="k2")))
    assert again.detail == {"ended": 0, "corrected": 0, "noted": 0, "duplicates": 3}
    assert raw(run, acme, "SELECT count(*) FROM fact_notes") == [(4,)]


# -- RPO answers and import files ------------------------------------------------------------------------------


def test_two_files_answering_one_check_time_keep_their_own_answers(acme: Store, run: Callable) -> None:
    checked = t("2026-11-20")
    first = run(acme.import_rpo([RpoAnswer(NUM, False)], ImportMeta(
        kind="rpo", file_name="a.csv", file_size=10, sha256="a" * 64, checked_at=checked, principal_id="acme")))
    second = run(acme.import_rpo([RpoAnswer(NUM, True, t("2026-03-01"))], ImportMeta(
        kind="rpo", file_name="b.csv", file_size=20, sha256="b" * 64, checked_at=checked, principal_id="acme")))
    assert raw(run, acme, "SELECT registered, import_id FROM rpo_results ORDER BY id") == [
        (False, first.import_id), (True, second.import_id)]
    # Taken together, as one file's two answers always were: "registered" wins.
    rpo = with_rpo_summary(run(acme.facts(NUM, "fixed", "c", NOW)), NOW).rpo
    assert rpo is not None
    assert (rpo.registered, rpo.registered_at, rpo.import_id) == (True, t("2026-03-01"), second.import_id)
    answers = [d for k, d in evidence_kinds(run, acme) if k == "rpo_answer"]
    assert [(d["registered"], d["file_name"], d["sha256"]) for d in answers] == [
        (False, "a.csv", "a" * 64), (True, "b.csv", "b" * 64)]


def test_each_input_file_of_an_import_is_kept(acme: Store, run: Callable) -> None:
    files = (ImportFile(FILE_SUBMITTED, "due.txt", 120, "1" * 64),
             ImportFile(RPO_REGISTERED_LIST, "reg.txt", 40, "2" * 64))

    def meta() -> ImportMeta:
        return ImportMeta(kind="rpo", file_name="due.txt + reg.txt", file_size=160, sha256="1" * 64 + "+" + "2" * 64,
                          checked_at=t("2026-11-20"), principal_id="acme", rpo_form=RPO_REGISTERED_LIST, files=files)

    answers = [RpoAnswer(NUM, False, None, 1, submitted=True), RpoAnswer(NUM, True, None, 1)]
    summary = run(acme.import_rpo(answers, meta()))
    assert summary.files == files
    (answer,) = [d for k, d in evidence_kinds(run, acme) if k == "rpo_answer"]
    assert answer["files"] == [{"role": "submitted", "name": "due.txt", "size": 120, "sha256": "1" * 64},
                               {"role": "registered", "name": "reg.txt", "size": 40, "sha256": "2" * 64}]
    # Flat file keys only name a one-file import: never the two files joined.
    assert "file_name" not in answer and "sha256" not in answer
    # The same pair of files again is recognised.
    again = run(acme.import_rpo(answers, meta()))
    assert (again.already_imported, again.import_id) == (True, summary.import_id)


# -- the decision log --------------------------------------------------------------------------------------------


def test_every_row_carries_the_moment_it_was_written_and_the_hash_covers_it(
    acme: Store, run: Callable, make_entry: Callable[..., AuditEntry]
) -> None:
    before = to_us(datetime.now().astimezone())

    async def group() -> list[AuditRow]:
        return list(await asyncio.gather(*(acme.append_decision(make_entry()) for _ in range(3))))

    rows = run(group())
    after = to_us(datetime.now().astimezone())
    stored = run(_collect(acme.audit_rows()))
    assert [r.recorded_us for r in stored] == [r.recorded_us for r in rows]
    assert all(r.recorded_us is not None and before <= r.recorded_us <= after for r in stored)
    # One clock read for the group written at once; the call time stays each decision's own.
    assert len({r.recorded_us for r in stored}) == 1
    assert all(r.entry.ts_us != r.recorded_us for r in stored)
    assert all(r.hash == chain_hash(r.seq, r.entry, r.prev_hash, r.recorded_us) for r in stored)
    assert run(verify_chain(acme.audit_rows())).intact
    # Moving the recorded moment, or removing it, breaks the chain at that row.
    db = RawDb(acme, run)
    try:
        db.drop_append_only_guards()
        db.execute("UPDATE audit_log SET recorded_us = recorded_us - 1000000 WHERE seq = 2")
        report = run(verify_chain(acme.audit_rows()))
        assert [(p.seq, "changed" in p.problem) for p in report.problems] == [(2, True)]
        db.execute("UPDATE audit_log SET recorded_us = NULL WHERE seq = 2")
        report = run(verify_chain(acme.audit_rows()))
        assert {p.seq for p in report.problems} == {2}
        assert any("no recording moment" in p.problem for p in report.problems)
    finally:
        db.close()


async def _collect(rows: AsyncIterable[AuditRow]) -> list[AuditRow]:
    return [row async for row in rows]
