"""Schemas 2 and 3 on a database that already holds data (SQLite and PostgreSQL). Schema 2: RPO answers get
the principal that obtained them, listings keep their periods, and the upgrade says what it did. Schema 3
(issue 14): each input file of an import on its own, every RPO answer kept with its file, notes beside
facts, and the moment each decision's row was written, while a log written before still verifies whole.

A database is built at schema 1 with the project's own first migration, filled the way rpoguard 1 filled
it, and then opened by the current store, which upgrades it. The rules being proven:
- with exactly one principal, every stored answer becomes that principal's (single-principal operators
  notice nothing, except one line saying so);
- with several, answers stay without a principal: kept and shown as "controller unknown", never used for a
  decision, and the upgrade names the files to import again with --principal;
- the listings of the old directory table become open listing periods; nothing else changes.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Iterator
from datetime import date, datetime
from itertools import count
from pathlib import Path
from typing import Any

import pytest

from rpoguard.audit import GENESIS_HASH, AuditEntry, canonical_evidence, chain_hash, verify_chain
from rpoguard.db import open_store
from rpoguard.db.copy import copy_database
from rpoguard.db.rows import CONTROLLER_UNKNOWN
from rpoguard.db.store import ImportMeta, RpoAnswer, Store
from rpoguard.policy.rpo import with_rpo_summary
from rpoguard.timeutil import parse_time, to_us
from support.aio import run_once
from support.pgfixtures import PgServer, _admin, with_database
from support.rawdb import RawDb
from support.schema1 import (
    CHECKED,
    CLEANSED_SHA,
    NUM,
    OTHER,
    REGISTERED_SHA,
    SUBMITTED_SHA,
    V1_ROWS,
    V2_CHECKED,
    V2_ROWS,
    Rows,
    v1_postgres,
    v1_sqlite,
    v2_postgres,
    v2_sqlite,
)

AT = parse_time("2026-11-24T11:00")
_names = count(1)


def t(text: str) -> datetime:
    return parse_time(text)


@pytest.fixture
def v1_database(backend: str, db_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., str]]:
    """Builds a schema-1 database with the given principals and rows (V1_ROWS); returns its --db value."""
    made: list[str] = []
    server: PgServer | None = request.getfixturevalue("pg_server") if backend == "postgres" else None

    def build(principals: list[str], rows: Rows = V1_ROWS) -> str:
        if server is None:
            return v1_sqlite(db_path, principals, rows)
        name = f"rpoguard_v1_{os.getpid()}_{next(_names)}"
        run_once(_admin(server.admin_url, f'CREATE DATABASE "{name}"'))
        url = with_database(server.admin_url, name)
        made.append(name)
        run_once(v1_postgres(url, principals, rows))
        return url

    yield build
    if server is not None:
        for name in made:
            run_once(_admin(server.admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def opened(run: Callable, url: str) -> Store:
    store = open_store(url)
    run(store.open())
    return store


def upgrade_notes(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "schema 2" in r.getMessage()]


def test_with_one_principal_the_stored_answers_become_its_own(
    v1_database: Callable[..., str], run: Callable, caplog: pytest.LogCaptureFixture
) -> None:
    url = v1_database(["acme"])
    caplog.set_level(logging.WARNING)
    store = opened(run, url)
    try:
        (note,) = upgrade_notes(caplog)
        assert "the 2 answer(s) already stored were given to principal acme, the only one" in note
        facts = with_rpo_summary(run(store.facts(NUM, "fixed", "acme-c", AT)), AT)
        assert facts.rpo is not None
        assert (facts.rpo.checked_at, facts.rpo.registered) == (CHECKED, False)
        # The old directory row is an open listing period from its old moment.
        assert facts.listing is not None and facts.listing.listed_at == CHECKED
        (answer,) = [i for i in run(store.evidence(NUM, None)) if i.kind == "rpo_answer"]
        assert (answer.principal_id, answer.detail["controller"]) == ("acme", "acme")
        # The import record is acme's too: the same file again is a repeat for acme.
        meta = ImportMeta(kind="rpo", file_name="answers-nov.csv", sha256="aa", checked_at=CHECKED, principal_id="acme")
        assert run(store.import_rpo([RpoAnswer(NUM, True)], meta)).already_imported
    finally:
        run(store.close())
    # Opening again upgrades nothing and says nothing.
    caplog.clear()
    store = opened(run, url)
    run(store.close())
    assert upgrade_notes(caplog) == []


def test_with_several_principals_the_stored_answers_are_kept_but_never_decide(
    v1_database: Callable[..., str], run: Callable, caplog: pytest.LogCaptureFixture
) -> None:
    url = v1_database(["acme", "beta"])
    caplog.set_level(logging.WARNING)
    store = opened(run, url)
    try:
        (note,) = upgrade_notes(caplog)
        assert "The 2 answer(s) already stored cannot be attributed, because 2 principals exist (acme, beta)" in note
        assert "controller unknown" in note and "rpo_not_checked" in note
        assert "--principal ID" in note and "answers-nov.csv checked 2026-11-20 00:00" in note
        # No decision uses them: for either principal the number was never checked.
        for campaign in ("acme-c", "beta-c"):
            assert with_rpo_summary(run(store.facts(NUM, "fixed", campaign, AT)), AT).rpo is None
        # The evidence keeps them, as "controller unknown", whatever principal is asked about.
        for principal in (None, "acme"):
            (answer,) = [i for i in run(store.evidence(NUM, principal)) if i.kind == "rpo_answer"]
            assert (answer.principal_id, answer.detail["controller"]) == (None, CONTROLLER_UNKNOWN)
            assert answer.detail["file_name"] == "answers-nov.csv"
        # They are due again for each principal.
        due = run(_collect(store.due_numbers(None, "beta", None, AT)))
        assert due == sorted([NUM, OTHER])
        # Imported again for acme: not a repeat of the unattributed import, and acme's decisions use it.
        meta = ImportMeta(kind="rpo", file_name="answers-nov.csv", sha256="aa", checked_at=CHECKED, principal_id="acme")
        again = run(store.import_rpo([RpoAnswer(NUM, False), RpoAnswer(OTHER, True)], meta))
        assert not again.already_imported
        assert with_rpo_summary(run(store.facts(NUM, "fixed", "acme-c", AT)), AT).rpo is not None
        assert with_rpo_summary(run(store.facts(NUM, "fixed", "beta-c", AT)), AT).rpo is None
        kinds = [(i.kind, i.principal_id) for i in run(store.evidence(NUM, None)) if i.kind == "rpo_answer"]
        assert sorted(kinds, key=str) == sorted([("rpo_answer", None), ("rpo_answer", "acme")], key=str)
    finally:
        run(store.close())


def test_without_answers_the_upgrade_is_silent(
    v1_database: Callable[..., str], run: Callable, caplog: pytest.LogCaptureFixture
) -> None:
    url = v1_database(["acme", "beta"], rows=[])
    caplog.set_level(logging.WARNING)
    store = opened(run, url)
    run(store.close())
    assert upgrade_notes(caplog) == []


async def _collect(numbers: Any) -> list[str]:
    return [n async for n in numbers]


# -- schema 3: history kept (issue 14) --------------------------------------------------------------------------


def v2_log(count: int) -> list[tuple[object, ...]]:
    """A decision log as the writer of schema 2 left it: no recording moment, hashed without one."""
    rows: list[tuple[object, ...]] = []
    prev = GENESIS_HASH
    for seq in range(1, count + 1):
        entry = AuditEntry(f"00000000-0000-4000-9000-{seq:012d}", to_us(AT) + seq, NUM, "06 4567 8901", "acme-c",
                           "acme", None, "allow", "", "listed", canonical_evidence({}), "cli", None, None)
        digest = chain_hash(seq, entry, prev)
        # A schema-2 row: the entry's fields without linkedid (added in schema 3 of the audit file).
        rows.append((seq, *dataclasses.astuple(entry)[:-1], prev, digest))
        prev = digest
    return rows


@pytest.fixture
def v2_database(backend: str, db_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., str]]:
    """Builds a database of schema 2 (with a decision log of `decisions` rows); returns its --db value."""
    made: list[str] = []
    server: PgServer | None = request.getfixturevalue("pg_server") if backend == "postgres" else None

    def build(decisions: int = 3, path: Path = db_path) -> str:
        log = v2_log(decisions)
        if server is None:
            return v2_sqlite(path, ["acme"], V2_ROWS, log)
        name = f"rpoguard_v2_{os.getpid()}_{next(_names)}"
        run_once(_admin(server.admin_url, f'CREATE DATABASE "{name}"'))
        made.append(name)
        url = with_database(server.admin_url, name)
        run_once(v2_postgres(url, ["acme"], V2_ROWS, log))
        return url

    yield build
    if server is not None:
        for name in made:
            run_once(_admin(server.admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_a_log_written_before_the_recording_moment_still_verifies_whole_after_appends(
    v2_database: Callable[..., str], run: Callable, make_entry: Callable[..., AuditEntry]
) -> None:
    store = opened(run, v2_database())
    try:
        old = run(_collect(store.audit_rows()))
        assert [r.recorded_us for r in old] == [None, None, None]
        added = [run(store.append_decision(make_entry())) for _ in range(2)]
        assert all(r.recorded_us is not None for r in added)
        assert added[0].prev_hash == old[-1].hash
        report = run(verify_chain(store.audit_rows()))
        assert (report.intact, report.rows, report.head_hash) == (True, 5, added[-1].hash)
        # A moment given to an old row afterwards, or one removed from a new row, breaks the chain there.
        raw = RawDb(store, run)
        try:
            raw.drop_append_only_guards()
            raw.execute("UPDATE audit_log SET recorded_us = ? WHERE seq = 2", (to_us(AT),))
            problems = run(verify_chain(store.audit_rows())).problems
            # Row 2 no longer matches its hash; row 3, without a moment after one that has it, cannot be
            # a row written since the upgrade.
            assert [(p.seq, "changed" in p.problem, "no recording moment" in p.problem) for p in problems] == [
                (2, True, False), (3, False, True)]
        finally:
            raw.close()
    finally:
        run(store.close())


def test_upgrade_keeps_every_fact_and_names_each_file_of_old_imports(
    v2_database: Callable[..., str], run: Callable
) -> None:
    store = opened(run, v2_database())
    try:
        raw = RawDb(store, run)
        try:
            files = raw.execute("SELECT import_id, position, role, file_name, file_size, sha256 FROM import_files"
                                " ORDER BY import_id, position").fetchall()
        finally:
            raw.close()
        assert files == [
            (1, 1, "file", "answers.csv", 64, "a" * 64),
            (2, 1, "submitted", "due.txt", None, SUBMITTED_SHA), (2, 2, "registered", "reg.txt", None, REGISTERED_SHA),
            (3, 1, "submitted", "due.txt", None, SUBMITTED_SHA), (3, 2, "cleansed", "clean.txt", None, CLEANSED_SHA),
            (4, 1, "file", "dir.txt", None, None)]
        (answer,) = [i for i in run(store.evidence(NUM, None)) if i.kind == "rpo_answer"]
        assert [f["name"] for f in answer.detail["files"]] == ["due.txt", "reg.txt"]  # type: ignore[union-attr]
        # The same pair of files is still recognised as imported.
        meta = ImportMeta(kind="rpo", file_name="due.txt + reg.txt", sha256=f"{SUBMITTED_SHA}+{REGISTERED_SHA}",
                          checked_at=V2_CHECKED, principal_id="acme")
        assert run(store.import_rpo([RpoAnswer(NUM, True)], meta)).already_imported
        # Another file answering for the same check time is stored beside the old answer; together they say
        # "registered" (it wins), and the old answer keeps its own file.
        other = ImportMeta(kind="rpo", file_name="late.csv", sha256="f" * 64, checked_at=V2_CHECKED,
                           principal_id="acme")
        run(store.import_rpo([RpoAnswer(NUM, True)], other))
        rpo = with_rpo_summary(run(store.facts(NUM, "fixed", "acme-c", AT)), AT).rpo
        assert rpo is not None and rpo.registered
        assert len([i for i in run(store.evidence(NUM, None)) if i.kind == "rpo_answer"]) == 2
        # A consent revoked before keeps its revocation; one said again is noted beside it.
        (again,) = run(store.revoke_consents(OTHER, "acme", parse_time("2026-11-15")))
        assert (again.first, again.revoked_at) == (False, parse_time("2026-11-10"))
        (consent,) = run(store.facts(OTHER, "mobile", "acme-c", AT)).consents
        assert consent.revoked_at == parse_time("2026-11-10")
        (contract,) = run(store.facts(OTHER, "mobile", "acme-c", AT)).contracts
        assert contract.end == date(2026, 6, 30)
    finally:
        run(store.close())


def test_db_copy_carries_files_notes_and_recording_moments(
    v2_database: Callable[..., str], run: Callable, tmp_path: Path, make_entry: Callable[..., AuditEntry]
) -> None:
    source_url = v2_database()
    store = opened(run, source_url)
    try:
        run(store.append_decision(make_entry()))
        run(store.revoke_consents(OTHER, "acme", parse_time("2026-11-15")))
        run(store.add_contract(OTHER, "acme", date(2026, 1, 1), date(2026, 5, 31)))
        before = {number: run(store.evidence(number, None)) for number in (NUM, OTHER)}
    finally:
        run(store.close())
    target = str(tmp_path / "copy.db")
    report = run(copy_database(source_url, target))
    assert report.target_chain.intact and report.target_chain.rows == 4
    assert report.counts["import_files"] == 6 and report.counts["fact_notes"] == 2
    copied = opened(run, target)
    try:
        assert {number: run(copied.evidence(number, None)) for number in (NUM, OTHER)} == before
        rows = run(_collect(copied.audit_rows()))
        assert [r.recorded_us is not None for r in rows] == [False, False, False, True]
        (contract,) = run(copied.facts(OTHER, "mobile", "acme-c", AT)).contracts
        assert contract.end == date(2026, 5, 31)
    finally:
        run(copied.close())

