"""rpoguard.db.sqlite: the one-round facts query, the RPO history recompute, atomic imports, migrations,
file permissions and the append-only audit table."""

from __future__ import annotations

import asyncio
import sqlite3
import stat
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from rpoguard.audit import AuditEntry, AuditRow
from rpoguard.db.sqlite import SqliteStore, _migrations, audit_path
from rpoguard.db.store import (
    CONTRACT_ENDED,
    CONTRACT_RECORDED,
    ConsentRecord,
    ImportMeta,
    ImportRejected,
    ImportSummary,
    NotFoundError,
    Revocation,
    RowProblem,
    RpoAnswer,
    Store,
)
from rpoguard.policy.model import Facts
from rpoguard.policy.rpo import with_rpo_summary
from rpoguard.timeutil import parse_time, to_us
from support.rawdb import RawDb

NUM = "+390645678901"
OTHER_NUM = "+393331234567"
CALLER_A = "+390699990000"
CALLER_B = "+390699990001"
NOW = parse_time("2026-11-24T11:00")  # a Tuesday, Europe/Rome
DAY_US = 86_400_000_000


def t(text: str) -> datetime:
    return parse_time(text)


def rpo_import(
    run: Callable, store: SqliteStore, checked_at: str, answers: Iterable[RpoAnswer], sha: str | None = None,
    principal: str = "acme",
) -> ImportSummary:
    meta = ImportMeta(kind="rpo", file_name="answers.csv", sha256=sha, checked_at=t(checked_at),
                      principal_id=principal)
    return run(store.import_rpo(answers, meta))


def end_of(day: str) -> datetime:
    """The last microsecond of a day in Rome: how a date-only registration bound is read."""
    return t(day) + timedelta(days=1) - timedelta(microseconds=1)


def facts(
    run: Callable, store: SqliteStore, number: str | None = NUM, campaign: str | None = "spring26", at: datetime = NOW
) -> Facts:
    # As the gate reads them: the RPO answers as they stand at `at`.
    return with_rpo_summary(run(store.facts(number, "fixed", campaign, at)), at)


AUDIT_TABLES = frozenset({"audit_log", "optouts"})


def raw_count(run: Callable, store: Store, table: str) -> int:
    """Rows in a table, read behind the store's back (on either backend)."""
    raw = RawDb(store, run)
    try:
        return raw.count(table)
    finally:
        raw.close()


def count_statements(run: Callable, store: Store, action: Callable[[], object]) -> list[str]:
    """The statements the store sends to its database while `action` runs."""
    statements: list[str] = []
    if isinstance(store, SqliteStore):
        probe = store._probe
        assert probe is not None
        probe.set_trace_callback(statements.append)
        try:
            action()
        finally:
            probe.set_trace_callback(None)
        return statements
    # PostgreSQL: every statement the pool's connections run (asyncpg's query loggers see each one).
    pool = store.pool  # type: ignore[attr-defined]

    async def attach(add: bool) -> None:
        for holder in pool._holders:
            con = holder._con
            if con is not None:
                (con.add_query_logger if add else con.remove_query_logger)(log_query)

    def log_query(record: object) -> None:
        statements.append(str(record.query))  # type: ignore[attr-defined]

    run(attach(True))
    try:
        action()
    finally:
        run(attach(False))
    return statements


@pytest.fixture
def acme(store: SqliteStore, run: Callable) -> SqliteStore:
    """Two principals (acme with two declared caller IDs, beta with one) and campaign spring26 for acme,
    capped at 3 calls per 7 days."""
    run(store.add_principal("acme", "ACME Energia S.p.A.", [CALLER_A, CALLER_B]))
    run(store.add_principal("beta", "Beta Telco", ["+390211111111"]))
    run(store.add_campaign("spring26", "acme", False, 3, 7))
    return store


# -- facts(): everything one decision needs, in one call -----------------------------------------------


def test_facts_returns_every_part_in_one_statement(
    acme: SqliteStore, run: Callable, make_entry: Callable[..., AuditEntry]
) -> None:
    store = acme
    rpo_import(run, store, "2026-11-20", [RpoAnswer(NUM, True, t("2025-03-10")), RpoAnswer(OTHER_NUM, False)])
    # Another principal's answer for the same number is never part of acme's facts.
    rpo_import(run, store, "2026-11-21", [RpoAnswer(NUM, False)], principal="beta")
    run(store.import_directory([NUM], ImportMeta(kind="directory", file_name="dir.txt", checked_at=t("2026-11-01")),
                               replace=True))
    mine_1 = run(store.add_consent(ConsentRecord(NUM, "acme", t("2026-01-10T10:00"), "rec:1")))[0]
    mine_2 = run(
        store.add_consent(
            ConsentRecord(
                NUM,
                "acme",
                t("2026-02-10T10:00"),
                "rec:2",
                automated=True,
                expires_at=t("2027-02-10"),
                purpose="luce e gas",
            )
        )
    )[0]
    run(store.add_consent(ConsentRecord(NUM, "beta", t("2026-01-10T10:00"), "rec:beta")))
    run(store.add_consent(ConsentRecord(OTHER_NUM, "acme", t("2026-01-10T10:00"), "rec:other-number")))
    contract_mine = run(store.add_contract(NUM, "acme", date(2026, 1, 1), date(2026, 6, 30))).contract_id
    run(store.add_contract(NUM, "beta", date(2026, 1, 1), None))
    optout_mine = run(store.add_optout(NUM, "acme", t("2026-11-01T12:00"), "cli", None))
    optout_all = run(store.add_optout(NUM, None, t("2026-11-02T12:00"), "fastagi", "1700000000.1"))
    run(store.add_optout(NUM, "beta", t("2026-11-03T12:00"), "cli", None))
    run(store.add_optout(OTHER_NUM, None, t("2026-11-03T12:00"), "cli", None))
    now_us = to_us(NOW)
    for entry in (
        make_entry(ts_us=now_us - DAY_US),  # counted
        make_entry(ts_us=now_us - 2 * DAY_US),  # counted
        make_entry(ts_us=now_us - 8 * DAY_US),  # outside the 7-day window
        make_entry(ts_us=now_us - DAY_US, decision="block", reasons="outside_hours", basis=None),
        make_entry(ts_us=now_us - DAY_US, principal_id="beta", campaign_id="beta1"),
        make_entry(ts_us=now_us - DAY_US, number=OTHER_NUM),
    ):
        run(store.append_decision(entry))

    statements = count_statements(run, store, lambda: facts(run, store))
    got = facts(run, store)
    assert len(statements) == 1, statements
    assert got.number == NUM
    assert got.line_type == "fixed"
    assert got.campaign is not None
    assert (got.campaign.id, got.campaign.principal_id, got.campaign.automated) == ("spring26", "acme", False)
    assert (got.campaign.max_attempts, got.campaign.per_days) == (3, 7)
    assert got.campaign.declared_caller_ids == frozenset({CALLER_A, CALLER_B})
    assert got.rpo is not None
    assert got.rpo.registered is True
    assert got.rpo.checked_at == t("2026-11-20")
    assert got.rpo.registered_at == t("2025-03-10")
    # The later of registered_at and the first registered check, a date read as its whole day.
    assert got.rpo.registration_bound == end_of("2026-11-20")
    assert got.listing is not None
    assert {c.id for c in got.consents} == {mine_1, mine_2}
    second = next(c for c in got.consents if c.id == mine_2)
    assert (second.evidence, second.automated, second.purpose) == ("rec:2", True, "luce e gas")
    assert second.given_at == t("2026-02-10T10:00")
    assert second.expires_at == t("2027-02-10")
    assert second.revoked_at is None
    assert [(c.id, c.start, c.end) for c in got.contracts] == [(contract_mine, date(2026, 1, 1), date(2026, 6, 30))]
    assert {(o.id, o.principal_id) for o in got.optouts} == {(optout_mine, "acme"), (optout_all, None)}
    assert got.recent_allows == 2


def test_facts_of_an_unknown_number_and_campaign(acme: SqliteStore, run: Callable) -> None:
    store = acme
    run(store.add_optout(NUM, None, t("2026-11-02T12:00"), "cli", None))
    run(store.add_optout(NUM, "acme", t("2026-11-02T12:00"), "cli", None))
    run(store.add_consent(ConsentRecord(NUM, "acme", t("2026-01-10T10:00"), "rec:1")))

    nothing = facts(run, store, number="+390212345678")
    assert nothing.campaign is not None
    assert (nothing.rpo, nothing.listing, nothing.consents, nothing.contracts, nothing.optouts) == (
        None,
        None,
        (),
        (),
        (),
    )
    assert nothing.recent_allows == 0

    # Without a campaign there is no principal: only the refusal that covers every principal applies.
    no_campaign = facts(run, store, campaign="nope")
    assert no_campaign.campaign is None
    assert no_campaign.consents == ()
    assert [o.principal_id for o in no_campaign.optouts] == [None]

    # number None: the campaign only (rule 1 already failed).
    only_campaign = facts(run, store, number=None)
    assert only_campaign.campaign is not None
    assert only_campaign.campaign.id == "spring26"
    assert (only_campaign.rpo, only_campaign.consents, only_campaign.optouts) == (None, (), ())


def test_allow_count_window_is_half_open_and_counts_only_allows(
    acme: SqliteStore, run: Callable, make_entry: Callable[..., AuditEntry]
) -> None:
    store = acme
    now_us = to_us(NOW)
    window = 7 * DAY_US
    for ts in (now_us - window, now_us - window + 1, now_us, now_us + 1):
        run(store.append_decision(make_entry(ts_us=ts)))
    for decision in ("block", "ALLOW", "allowed"):
        run(store.append_decision(make_entry(ts_us=now_us - 1, decision=decision)))
    # (now - 7 days, now]: the row exactly 7 days old and the one after `now` do not count.
    assert facts(run, store).recent_allows == 2
    # Seen from a day later, the first row inside the window slides out and the one after `now` comes in.
    assert facts(run, store, at=NOW + timedelta(days=1)).recent_allows == 2
    assert facts(run, store, at=NOW + timedelta(days=8)).recent_allows == 0


def test_allow_count_is_per_principal_across_its_campaigns(
    acme: SqliteStore, run: Callable, make_entry: Callable[..., AuditEntry]
) -> None:
    store = acme
    run(store.add_campaign("autumn26", "acme", False, 3, 7))
    now_us = to_us(NOW)
    run(store.append_decision(make_entry(ts_us=now_us - 10, campaign_id="autumn26")))
    run(store.append_decision(make_entry(ts_us=now_us - 10, campaign_id="spring26")))
    run(store.append_decision(make_entry(ts_us=now_us - 10, principal_id="beta", campaign_id="b")))
    assert facts(run, store).recent_allows == 2
    assert facts(run, store, campaign="autumn26").recent_allows == 2


# -- the RPO history and the registration bound ----------------------------------------------------------


def test_bound_is_the_later_of_registered_at_and_the_first_registered_check(acme: SqliteStore, run: Callable) -> None:
    # registered_at before the first registered check: the check bounds (a renewal in between is possible).
    rpo_import(run, acme, "2026-10-01T09:30", [RpoAnswer(NUM, True)])
    rpo_import(run, acme, "2026-11-20", [RpoAnswer(NUM, True, t("2026-09-15"))])
    got = facts(run, acme).rpo
    assert got is not None
    assert got.checked_at == t("2026-11-20")
    assert got.registered_at == t("2026-09-15")
    assert got.registration_bound == t("2026-10-01T09:30")
    # A registered_at later than the first check (a renewal the RPO reports) moves the bound forward.
    rpo_import(run, acme, "2026-11-22T08:00", [RpoAnswer(OTHER_NUM, True)])
    rpo_import(run, acme, "2026-11-23T08:00", [RpoAnswer(OTHER_NUM, True, t("2026-11-22T20:15"))])
    other = facts(run, acme, number=OTHER_NUM).rpo
    assert other is not None
    assert other.registration_bound == t("2026-11-22T20:15")


def test_a_date_without_a_time_bounds_at_the_end_of_its_day(acme: SqliteStore, run: Callable) -> None:
    # A date-only registered_at, and a date-only check: each stands for its whole day (Europe/Rome).
    rpo_import(run, acme, "2026-11-20T16:00", [RpoAnswer(NUM, True, t("2026-11-20"))])
    got = facts(run, acme).rpo
    assert got is not None
    assert got.registration_bound == end_of("2026-11-20")
    rpo_import(run, acme, "2026-11-21", [RpoAnswer(OTHER_NUM, True)])
    other = facts(run, acme, number=OTHER_NUM).rpo
    assert other is not None
    assert other.registration_bound == end_of("2026-11-21")


def test_bound_is_first_check_of_the_latest_unbroken_registered_run(acme: SqliteStore, run: Callable) -> None:
    for checked in ("2026-10-01", "2026-10-20", "2026-11-05"):
        rpo_import(run, acme, checked, [RpoAnswer(NUM, True)])
    got = facts(run, acme).rpo
    assert got is not None
    assert (got.checked_at, got.registered, got.registered_at) == (t("2026-11-05"), True, None)
    assert got.registration_bound == end_of("2026-10-01")


def test_a_stale_registered_at_after_a_break_cannot_move_the_bound_back(acme: SqliteStore, run: Callable) -> None:
    rpo_import(run, acme, "2026-09-01", [RpoAnswer(NUM, True, t("2026-08-01"))])
    rpo_import(run, acme, "2026-10-01", [RpoAnswer(NUM, False)])
    # Registered again; the RPO repeats the old registration date.
    rpo_import(run, acme, "2026-10-20T10:00", [RpoAnswer(NUM, True, t("2026-08-01"))])
    got = facts(run, acme).rpo
    assert got is not None
    assert got.registration_bound == t("2026-10-20T10:00")


def test_not_registered_answer_in_between_breaks_the_run(acme: SqliteStore, run: Callable) -> None:
    rpo_import(run, acme, "2026-09-01", [RpoAnswer(NUM, True)])
    rpo_import(run, acme, "2026-10-01", [RpoAnswer(NUM, False)])
    rpo_import(run, acme, "2026-10-20", [RpoAnswer(NUM, True)])
    rpo_import(run, acme, "2026-11-05", [RpoAnswer(NUM, True)])
    got = facts(run, acme).rpo
    assert got is not None
    assert got.registration_bound == end_of("2026-10-20")


def test_leaving_the_register_keeps_the_bound_of_the_last_registration(acme: SqliteStore, run: Callable) -> None:
    rpo_import(run, acme, "2026-10-01", [RpoAnswer(NUM, False)])
    nothing = facts(run, acme).rpo
    assert nothing is not None
    assert nothing.registration_bound is None  # never registered
    rpo_import(run, acme, "2026-10-20", [RpoAnswer(NUM, True)])
    rpo_import(run, acme, "2026-11-05", [RpoAnswer(NUM, False)])
    got = facts(run, acme).rpo
    assert got is not None
    assert (got.checked_at, got.registered) == (t("2026-11-05"), False)
    assert got.registration_bound == end_of("2026-10-20")


def test_older_file_imported_late_keeps_the_newer_answer_but_moves_the_bound(acme: SqliteStore, run: Callable) -> None:
    rpo_import(run, acme, "2026-11-05", [RpoAnswer(NUM, True), RpoAnswer(OTHER_NUM, False)])
    first = facts(run, acme).rpo
    assert first is not None
    assert first.registration_bound == end_of("2026-11-05")

    # An older "registered" answer extends the run backwards.
    rpo_import(run, acme, "2026-10-20", [RpoAnswer(NUM, True), RpoAnswer(OTHER_NUM, True)])
    got = facts(run, acme).rpo
    assert got is not None
    assert (got.checked_at, got.registered, got.result_id) == (t("2026-11-05"), True, first.result_id)
    assert got.registration_bound == end_of("2026-10-20")
    # The other number's newer "not registered" stays current; its registration is still remembered.
    other = facts(run, acme, number=OTHER_NUM).rpo
    assert other is not None
    assert (other.checked_at, other.registered) == (t("2026-11-05"), False)
    assert other.registration_bound == end_of("2026-10-20")

    # An even older "not registered" answer changes nothing.
    rpo_import(run, acme, "2026-10-01", [RpoAnswer(NUM, False)])
    got = facts(run, acme).rpo
    assert got is not None
    assert got.registration_bound == end_of("2026-10-20")

    # A late "not registered" answer inside the run breaks it: the bound moves forward again.
    rpo_import(run, acme, "2026-10-25", [RpoAnswer(NUM, False)])
    got = facts(run, acme).rpo
    assert got is not None
    assert (got.checked_at, got.registered) == (t("2026-11-05"), True)
    assert got.registration_bound == end_of("2026-11-05")


def test_reimport_of_the_same_file_is_recognised_and_changes_nothing(
    acme: SqliteStore, run: Callable, db_path: Path
) -> None:
    answers = [RpoAnswer(NUM, True), RpoAnswer(OTHER_NUM, False)]
    first = rpo_import(run, acme, "2026-11-20", answers, sha="a" * 64)
    assert not first.already_imported
    assert (first.rows_read, first.rows_stored, first.rows_rejected) == (2, 2, 0)
    assert first.detail == {"registered": 1, "not_registered": 1}
    before = facts(run, acme).rpo

    again = rpo_import(run, acme, "2026-11-20", [RpoAnswer(NUM, False)], sha="a" * 64)
    assert again.already_imported
    assert again.import_id == first.import_id
    assert (again.rows_read, again.rows_stored) == (2, 2)
    assert facts(run, acme).rpo == before
    assert raw_count(run, acme, "imports") == 1
    assert raw_count(run, acme, "rpo_results") == 2

    # The same bytes answering for another check date are another answer.
    later = rpo_import(run, acme, "2026-11-27", answers, sha="a" * 64)
    assert not later.already_imported
    assert later.import_id != first.import_id
    assert raw_count(run, acme, "rpo_results") == 4


def _answers_then_fail(count: int, error: BaseException) -> Iterator[RpoAnswer]:
    for i in range(count):
        yield RpoAnswer(f"+39333{i:07d}", i % 2 == 0)
    yield RpoAnswer(NUM, False)
    raise error


@pytest.mark.parametrize(
    "error",
    [RuntimeError("disk went away"), ImportRejected([RowProblem(3, "bad"), RowProblem(9, "worse")])],
    ids=["reader-crash", "rejected-at-end"],
)
def test_import_whose_rows_raise_midway_stores_nothing(
    acme: SqliteStore, run: Callable, db_path: Path, error: BaseException
) -> None:
    rpo_import(run, acme, "2026-11-20", [RpoAnswer(NUM, True)])
    before = facts(run, acme).rpo
    counts = {table: raw_count(run, acme, table) for table in ("imports", "rpo_results")}

    # More than one batch (10 000 rows) goes to the database before the reader fails.
    with pytest.raises(type(error)):
        rpo_import(run, acme, "2026-11-25", _answers_then_fail(12_345, error))

    assert facts(run, acme).rpo == before
    assert {table: raw_count(run, acme, table) for table in counts} == counts
    # The connection is not left inside a transaction: the next import lands.
    rpo_import(run, acme, "2026-11-26", [RpoAnswer(NUM, False)])
    after = facts(run, acme, at=t("2026-11-27T11:00")).rpo
    assert after is not None
    assert (after.checked_at, after.registered) == (t("2026-11-26"), False)


def test_failed_directory_and_consent_imports_store_nothing(acme: SqliteStore, run: Callable, db_path: Path) -> None:
    run(acme.import_directory([NUM], ImportMeta(kind="directory", file_name="d1", checked_at=t("2026-11-01")),
                              replace=True))

    def numbers() -> Iterator[str]:
        yield OTHER_NUM
        raise ImportRejected([RowProblem(2, "bad")])

    with pytest.raises(ImportRejected):
        run(acme.import_directory(numbers(), ImportMeta(kind="directory", file_name="d2",
                                                        checked_at=t("2026-11-02")), replace=True))
    assert facts(run, acme).listing is not None  # the replace was rolled back too
    assert facts(run, acme, number=OTHER_NUM).listing is None

    def consents() -> Iterator[ConsentRecord]:
        yield ConsentRecord(NUM, "acme", t("2026-01-01"), "rec:1")
        raise ImportRejected([RowProblem(3, "bad")])

    with pytest.raises(ImportRejected):
        run(acme.import_consents(consents(), ImportMeta(kind="consent", file_name="c")))
    assert facts(run, acme).consents == ()
    assert raw_count(run, acme, "imports") == 1


def directory(run: Callable, store: Store, numbers: list[str], name: str, listed_at: str, replace: bool = True
              ) -> ImportSummary:
    meta = ImportMeta(kind="directory", file_name=name, checked_at=t(listed_at))
    return run(store.import_directory(numbers, meta, replace))


def test_directory_replace_and_append_keep_every_listing_period(acme: SqliteStore, run: Callable) -> None:
    first = directory(run, acme, [NUM, "+390212345678", NUM], "a", "2026-11-01")
    assert (first.rows_read, first.rows_stored) == (3, 2)
    assert first.detail == {"newly_listed": 2, "still_listed": 0, "duplicates": 1, "ended": 0}
    second = directory(run, acme, [OTHER_NUM, "+390212345678"], "b", "2026-11-10")
    assert second.detail == {"newly_listed": 1, "still_listed": 1, "ended": 1}
    # Now: NUM is no longer listed, OTHER_NUM is.
    assert facts(run, acme).listing is None
    assert facts(run, acme, number=OTHER_NUM).listing is not None
    # As the directory stood on 5 November: NUM listed (since file a), OTHER_NUM not yet.
    before = facts(run, acme, at=t("2026-11-05T11:00"))
    assert before.listing is not None
    assert before.listing.listed_at == t("2026-11-01")
    assert facts(run, acme, number=OTHER_NUM, at=t("2026-11-05T11:00")).listing is None
    # Before any extract: nothing was listed.
    assert facts(run, acme, at=t("2026-10-30T11:00")).listing is None
    # The end is exclusive: at the replacing file's moment NUM is already unlisted.
    assert facts(run, acme, at=t("2026-11-10")).listing is None
    assert facts(run, acme, at=t("2026-11-10") - timedelta(microseconds=1)).listing is not None

    third = directory(run, acme, [NUM], "c", "2026-11-12", replace=False)
    assert third.detail == {"newly_listed": 1, "still_listed": 0}
    assert facts(run, acme).listing is not None
    assert facts(run, acme, number=OTHER_NUM).listing is not None
    assert raw_count(run, acme, "listings") == 4  # two periods for NUM, one each for the others

    # The evidence shows both periods of NUM, with the file that ended the first one.
    items = [i for i in run(acme.evidence(NUM, None)) if i.kind.startswith("directory_listing")]
    assert [(i.kind, i.at, i.detail["file_name"]) for i in items] == [
        ("directory_listing", t("2026-11-01"), "a"),
        ("directory_listing_ended", t("2026-11-10"), "a"),
        ("directory_listing", t("2026-11-12"), "c"),
    ]
    assert items[0].detail["ended_by_import_id"] == second.import_id
    assert items[2].detail["ended_at"] is None


def test_an_older_directory_extract_cannot_replace_a_newer_one(acme: SqliteStore, run: Callable) -> None:
    directory(run, acme, [NUM], "new", "2026-11-10")
    with pytest.raises(ValueError, match="older than the directory already stored"):
        directory(run, acme, [OTHER_NUM], "old", "2026-11-01")
    assert facts(run, acme).listing is not None
    assert raw_count(run, acme, "imports") == 1
    # Added to the current listings it may be.
    directory(run, acme, [OTHER_NUM], "old", "2026-11-01", replace=False)
    assert facts(run, acme, number=OTHER_NUM, at=t("2026-11-05T11:00")).listing is not None


# -- reference data ----------------------------------------------------------------------------------------


def test_principal_and_campaign_add_update(store: SqliteStore, run: Callable) -> None:
    assert run(store.add_principal("acme", "ACME", [CALLER_A])) is True
    assert run(store.add_principal("acme", "ACME S.p.A.", [CALLER_B])) is False
    info = run(store.get_principal("acme"))
    assert info is not None
    assert info.name == "ACME S.p.A."
    assert info.caller_ids == (CALLER_A, CALLER_B)  # added, never removed
    assert run(store.get_principal("nobody")) is None

    with pytest.raises(NotFoundError):
        run(store.add_campaign("c1", "nobody", False, None, None))
    assert run(store.add_campaign("c1", "acme", False, None, None)) is True
    assert run(store.add_campaign("c1", "acme", True, 2, 5)) is False
    campaign = run(store.get_campaign("c1"))
    assert campaign is not None
    assert (campaign.automated, campaign.max_attempts, campaign.per_days) == (True, 2, 5)
    assert run(store.get_campaign("c2")) is None


def test_consent_is_stored_once_and_revoked(acme: SqliteStore, run: Callable) -> None:
    record = ConsentRecord(NUM, "acme", t("2026-01-10T10:00"), "rec:1")
    first_id, created = run(acme.add_consent(record))
    assert created
    assert run(acme.add_consent(record)) == (first_id, False)
    with pytest.raises(NotFoundError):
        run(acme.add_consent(ConsentRecord(NUM, "nobody", t("2026-01-10T10:00"), "rec:1")))

    assert run(acme.revoke_consents(NUM, "acme", t("2026-01-01"))) == []  # not yet given then
    assert run(acme.revoke_consents(NUM, "acme", t("2026-11-01"))) == [
        Revocation(first_id, True, t("2026-11-01"), t("2026-11-01"))]
    (consent,) = facts(run, acme).consents
    assert consent.revoked_at == t("2026-11-01")


def test_optout_for_unknown_principal_is_refused(acme: SqliteStore, run: Callable) -> None:
    with pytest.raises(NotFoundError):
        run(acme.add_optout(NUM, "nobody", NOW, "cli", None))
    with pytest.raises(NotFoundError):
        run(acme.add_contract(NUM, "nobody", date(2026, 1, 1), None))


def test_contract_add_then_update(acme: SqliteStore, run: Callable) -> None:
    first = run(acme.add_contract(NUM, "acme", date(2026, 1, 1), None))
    assert first.outcome == CONTRACT_RECORDED
    # A running contract's end is set once.
    ended = run(acme.add_contract(NUM, "acme", date(2026, 1, 1), date(2026, 6, 30)))
    assert (ended.contract_id, ended.outcome, ended.end_before, ended.effective_end) == (
        first.contract_id, CONTRACT_ENDED, None, date(2026, 6, 30))
    (contract,) = facts(run, acme).contracts
    assert contract.end == date(2026, 6, 30)


def test_contract_update_on_the_same_connection_is_not_reported_as_created(acme: SqliteStore, run: Callable) -> None:
    # Regression: cursor.lastrowid after an UPSERT that only updates kept the connection's previous insert
    # rowid (this very contract), so the update was reported as a new contract.
    run(acme.add_contract(NUM, "acme", date(2026, 1, 1), None))
    assert run(acme.add_contract(NUM, "acme", date(2026, 1, 1), date(2026, 6, 30))).outcome == CONTRACT_ENDED
    other = run(acme.add_contract(NUM, "acme", date(2026, 7, 1), None))
    assert other.outcome == CONTRACT_RECORDED
    assert len(facts(run, acme).contracts) == 2
    assert other.contract_id in {c.id for c in facts(run, acme).contracts}


# -- schema, file, audit table -------------------------------------------------------------------------------


def test_migrations_set_the_schema_version_and_reopen_is_idempotent(db_path: Path, run: Callable) -> None:
    latest = max(version for version, _ in _migrations("data"))
    latest_audit = max(version for version, _ in _migrations("audit"))
    first = SqliteStore(db_path)
    run(first.open())
    try:
        assert run(first.schema_version()) == latest
        run(first.add_principal("acme", "ACME", [CALLER_A]))
    finally:
        run(first.close())
    with sqlite3.connect(db_path) as con:
        assert con.execute("PRAGMA user_version").fetchone()[0] == latest
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"principals", "campaigns", "imports", "rpo_results", "listings", "consents", "contracts"} <= tables
    assert "directory" not in tables  # its rows moved into listings (schema 2)
    with sqlite3.connect(audit_path(db_path)) as con:
        assert con.execute("PRAGMA user_version").fetchone()[0] == latest_audit
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"optouts", "audit_log"} <= tables

    for _ in range(2):
        again = SqliteStore(db_path)
        run(again.open())
        try:
            assert run(again.schema_version()) == latest
            info = run(again.get_principal("acme"))
            assert info is not None
            assert info.caller_ids == (CALLER_A,)
        finally:
            run(again.close())


@pytest.mark.sqlite_only
def test_database_file_is_created_owner_only(db_path: Path, store: SqliteStore, run: Callable) -> None:
    run(store.add_principal("acme", "ACME", []))  # something in the WAL too
    for base in (db_path, audit_path(db_path)):
        assert base.exists()
        for suffix in ("", "-wal", "-shm"):
            path = Path(str(base) + suffix)
            # SQLite removes -wal and -shm when its last connection closes: their absence is caught, not
            # checked before the stat (it can come in between).
            try:
                mode = stat.S_IMODE(path.stat().st_mode)
            except FileNotFoundError:
                assert suffix, f"{path} missing"
                continue
            assert mode == 0o600, path


@pytest.mark.sqlite_only
def test_audit_log_refuses_update_and_delete(
    store: SqliteStore, run: Callable, db_path: Path, make_entry: Callable[..., AuditEntry]
) -> None:
    first = run(store.append_decision(make_entry()))
    second = run(store.append_decision(make_entry()))
    assert (first.seq, second.seq) == (1, 2)
    assert second.prev_hash == first.hash
    with sqlite3.connect(audit_path(db_path)) as con:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            con.execute("UPDATE audit_log SET decision = 'allow', reasons = '' WHERE seq = 1")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            con.execute("DELETE FROM audit_log WHERE seq = 2")
        assert con.execute("SELECT count(*) FROM audit_log").fetchone()[0] == 2
    # The store's own connection is refused the same way.
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        run(store.audit_db.execute("DELETE FROM audit_log"))


# -- the attempt cap under concurrent calls ----------------------------------------------------------------


def test_attempt_cap_holds_for_concurrent_checks(acme: SqliteStore, run: Callable) -> None:
    from rpoguard.config import Config
    from rpoguard.gate import CallRequest, Gate

    run(acme.add_campaign("capped", "acme", False, 2, 7))
    rpo_import(run, acme, "2026-11-20", [RpoAnswer(NUM, False)])
    directory(run, acme, [NUM], "d", "2026-11-20")
    gate = Gate(acme, Config())
    call = CallRequest(raw_number=NUM, campaign_id="capped", caller_id=None, source="cli")

    async def five_at_once() -> list[str]:
        verdicts = await asyncio.gather(*(gate.check(call, NOW) for _ in range(5)))
        return [v.decision for v in verdicts]

    decisions = run(five_at_once())
    assert decisions.count("allow") == 2, decisions


@pytest.mark.sqlite_only
def test_sqlite_starts_a_decisions_commit_before_the_front_end_awaits_it(acme: SqliteStore, run: Callable) -> None:
    from rpoguard.config import Config
    from rpoguard.gate import CallRequest, Gate

    gate = Gate(acme, Config())
    call = CallRequest(raw_number=NUM, campaign_id="spring26", caller_id=None, source="cli")

    async def scenario() -> bool:
        pending = await gate.begin(call, NOW)
        # One pass of the loop, as when the front end writes to the PBX and waits for its reply: the
        # commit is already running in the writer thread.
        await asyncio.sleep(0)
        started = acme._appender is not None and acme._appender._in_flight is not None
        await pending.final()
        return started

    assert run(scenario())


def test_failed_open_does_not_leave_the_sqlite_thread_behind(
    tmp_path: Path, run: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    import aiosqlite.core

    from rpoguard.db.store import StoreError

    stops: list[asyncio.Future[object] | None] = []
    original_stop = aiosqlite.core.Connection.stop

    def recording_stop(self: aiosqlite.core.Connection) -> asyncio.Future[object] | None:
        future = original_stop(self)
        stops.append(future)
        return future

    monkeypatch.setattr(aiosqlite.core.Connection, "stop", recording_stop)
    folder = tmp_path / "a-folder.db"
    folder.mkdir()

    async def attempt() -> list[bool]:
        with pytest.raises(StoreError, match="cannot open database"):
            await SqliteStore(folder).open()
        # Checked before the loop runs again: a stop nobody awaited is still pending here, and would be
        # delivered to a closed loop by the CLI.
        return [future.done() for future in stops if future is not None]

    assert all(run(attempt()))


def test_concurrent_decisions_share_commits_and_keep_one_chain(
    store: SqliteStore, run: Callable, make_entry: Callable[..., AuditEntry]
) -> None:
    from rpoguard.audit import verify_chain

    entries = [make_entry() for _ in range(60)]

    async def all_at_once() -> list[AuditRow]:
        return list(await asyncio.gather(*(store.append_decision(e) for e in entries)))

    rows = run(all_at_once())
    assert sorted(r.seq for r in rows) == list(range(1, 61))
    assert {r.entry.decision_id for r in rows} == {e.decision_id for e in entries}
    appender = store._appender
    assert appender is not None
    # Group commit: 60 decisions, far fewer transactions (each an fsync), none dropped.
    assert appender.groups < 30, appender.groups

    async def collect() -> object:
        return await verify_chain(store.audit_rows())

    report = run(collect())
    assert report.intact and report.rows == 60


def test_a_decision_whose_caller_gave_up_before_its_commit_is_not_written(
    store: SqliteStore, run: Callable, make_entry: Callable[..., AuditEntry]
) -> None:
    kept, dropped = make_entry(), make_entry()

    async def scenario() -> None:
        first = asyncio.ensure_future(store.append_decision(kept))
        second = asyncio.ensure_future(store.append_decision(dropped))
        # Both queue their decision; the group writer is scheduled but has not started yet.
        await asyncio.sleep(0)
        second.cancel()
        await first
        with pytest.raises(asyncio.CancelledError):
            await second

    run(scenario())
    ids = [row.entry.decision_id for row in run(_collect(store.audit_rows()))]
    assert ids == [kept.decision_id]


async def _collect(rows: AsyncIterator[AuditRow]) -> list[AuditRow]:
    return [row async for row in rows]


@pytest.mark.sqlite_only
def test_a_decision_whose_caller_gave_up_while_the_log_was_locked_is_not_written(
    store: SqliteStore, db_path: Path, run: Callable, make_entry: Callable[..., AuditEntry]
) -> None:
    # Another writer holds the decision log; the caller's deadline passes while the group writer waits
    # for the lock (up to the busy timeout). Once the lock is released, nothing is written for it.
    late, later = make_entry(), make_entry()
    locker = sqlite3.connect(audit_path(db_path), isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")

    async def scenario() -> None:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await store.append_decision(late)
        locker.execute("ROLLBACK")
        # The writer, still in the same group, now gets the lock; a later decision is written as usual.
        await store.append_decision(later)

    try:
        run(scenario())
    finally:
        locker.close()
    ids = [row.entry.decision_id for row in run(_collect(store.audit_rows()))]
    assert ids == [later.decision_id]
