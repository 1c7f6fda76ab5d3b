"""Schema 2 on a database that already holds data (SQLite and PostgreSQL): RPO answers get the principal
that obtained them, listings keep their periods, and the upgrade says what it did.

A database is built at schema 1 with the project's own first migration, filled the way rpoguard 1 filled
it, and then opened by the current store, which upgrades it. The rules being proven:
- with exactly one principal, every stored answer becomes that principal's (single-principal operators
  notice nothing, except one line saying so);
- with several, answers stay without a principal: kept and shown as "controller unknown", never used for a
  decision, and the upgrade names the files to import again with --principal;
- the listings of the old directory table become open listing periods; nothing else changes.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterator
from datetime import datetime
from itertools import count
from pathlib import Path
from typing import Any

import pytest

from pgfixtures import PgServer, _admin, with_database
from rpoguard.db import open_store
from rpoguard.db.rows import CONTROLLER_UNKNOWN
from rpoguard.db.store import ImportMeta, RpoAnswer, Store
from rpoguard.timeutil import parse_time
from schema1 import CHECKED, NUM, OTHER, V1_ROWS, Rows, v1_postgres, v1_sqlite

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
        asyncio.run(_admin(server.admin_url, f'CREATE DATABASE "{name}"'))
        url = with_database(server.admin_url, name)
        made.append(name)
        asyncio.run(v1_postgres(url, principals, rows))
        return url

    yield build
    if server is not None:
        for name in made:
            asyncio.run(_admin(server.admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


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
        facts = run(store.facts(NUM, "fixed", "acme-c", AT))
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
            assert run(store.facts(NUM, "fixed", campaign, AT)).rpo is None
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
        assert run(store.facts(NUM, "fixed", "acme-c", AT)).rpo is not None
        assert run(store.facts(NUM, "fixed", "beta-c", AT)).rpo is None
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
