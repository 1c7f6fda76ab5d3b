"""What is stored, as the `... list` commands read it: Store.list_principals / list_campaigns / list_consents /
list_contracts / list_optouts on both backends, with every filter, the order and the limit, and streaming."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

import pytest

from rpoguard.db.store import ConsentRecord, ImportMeta, Store
from rpoguard.timeutil import parse_time

T = TypeVar("T")

NUM = "+390645678901"
MOBILE = "+393331234567"
OTHER = "+390212345678"


def t(text: str) -> datetime:
    return parse_time(text)


async def collect(rows: AsyncIterator[T]) -> list[T]:
    return [row async for row in rows]


@pytest.fixture
def seeded(store: Store, run: Callable[..., Any]) -> Store:
    run(store.add_principal("beta", "Beta Telco", []))
    run(store.add_principal("acme", "ACME Energia", ["+390699990001", "+390699990000"]))
    # Byte order, as on SQLite: upper case before lower case.
    run(store.add_principal("Zeta", "Zeta S.r.l.", []))
    run(store.add_campaign("spring26", "acme", False, 3, 7))
    run(store.add_campaign("auto26", "acme", True, None, None))
    run(store.add_campaign("beta1", "beta", False, None, None))
    return store


def test_principals_and_campaigns_in_id_order_with_their_settings(seeded: Store, run: Callable[..., Any]) -> None:
    before = datetime.now(UTC)
    principals = run(collect(seeded.list_principals()))
    assert [(p.id, p.name, p.caller_ids) for p in principals] == [
        ("Zeta", "Zeta S.r.l.", ()),
        ("acme", "ACME Energia", ("+390699990000", "+390699990001")),
        ("beta", "Beta Telco", ()),
    ]
    assert all(before - timedelta(minutes=5) < p.created_at <= datetime.now(UTC) for p in principals)
    assert [p.id for p in run(collect(seeded.list_principals(limit=2)))] == ["Zeta", "acme"]

    campaigns = run(collect(seeded.list_campaigns()))
    assert [(c.id, c.principal_id, c.automated, c.max_attempts, c.per_days) for c in campaigns] == [
        ("auto26", "acme", True, None, None),
        ("beta1", "beta", False, None, None),
        ("spring26", "acme", False, 3, 7),
    ]
    assert [c.id for c in run(collect(seeded.list_campaigns(principal_id="acme")))] == ["auto26", "spring26"]
    assert run(collect(seeded.list_campaigns(principal_id="nosuch"))) == []


def test_consents_by_number_principal_moment_and_revocation(seeded: Store, run: Callable[..., Any]) -> None:
    add = seeded.add_consent
    first, _ = run(add(ConsentRecord(NUM, "acme", t("2026-01-10T10:00"), "form-1", purpose="offers")))
    expiring, _ = run(add(ConsentRecord(NUM, "acme", t("2026-02-01"), "form-2", automated=True,
                                        expires_at=t("2026-06-01"))))
    revoked, _ = run(add(ConsentRecord(MOBILE, "acme", t("2026-03-01"), "call-3")))
    later, _ = run(add(ConsentRecord(MOBILE, "beta", t("2026-09-01"), "web-4")))
    assert len(run(seeded.revoke_consents(MOBILE, "acme", t("2026-04-01T12:00")))) == 1

    def ids(**filters: Any) -> list[int]:
        return [c.id for c in run(collect(seeded.list_consents(**filters)))]

    assert ids() == [first, expiring, revoked, later]
    assert ids(number=NUM) == [first, expiring]
    assert ids(principal_id="beta") == [later]
    assert ids(number=MOBILE, principal_id="acme") == [revoked]
    # In force: given by then, not yet expired, not yet revoked (both ends as the decision reads them).
    assert ids(in_force_at=t("2026-03-15")) == [first, expiring, revoked]
    assert ids(in_force_at=t("2026-06-01")) == [first]
    assert ids(in_force_at=t("2026-04-01T12:00")) == [first, expiring]
    assert ids(in_force_at=t("2026-01-10T09:59")) == []
    assert ids(revoked=True) == [revoked]
    assert ids(revoked=True, in_force_at=t("2026-03-15")) == [revoked]
    assert ids(limit=2) == [first, expiring]

    stored = {c.id: c for c in run(collect(seeded.list_consents()))}
    one = stored[expiring]
    assert (one.number, one.principal_id, one.given_at, one.evidence, one.automated, one.expires_at,
            one.revoked_at, one.purpose, one.import_id) == (
        NUM, "acme", t("2026-02-01"), "form-2", True, t("2026-06-01"), None, None, None)
    assert stored[first].purpose == "offers"
    assert stored[revoked].revoked_at == t("2026-04-01T12:00")


def test_consents_of_an_import_name_it(seeded: Store, run: Callable[..., Any]) -> None:
    meta = ImportMeta(kind="consent", file_name="consents.csv", sha256="ab" * 32)
    summary = run(seeded.import_consents([ConsentRecord(OTHER, "beta", t("2026-05-05"), "paper 7")], meta))
    (consent,) = run(collect(seeded.list_consents(number=OTHER)))
    assert consent.import_id == summary.import_id is not None


def test_contracts_running_on_a_day(seeded: Store, run: Callable[..., Any]) -> None:
    ended = run(seeded.add_contract(NUM, "acme", date(2026, 1, 1), date(2026, 3, 31))).contract_id
    running = run(seeded.add_contract(NUM, "beta", date(2026, 3, 1), None)).contract_id
    other = run(seeded.add_contract(MOBILE, "acme", date(2026, 4, 1), date(2026, 4, 1))).contract_id

    def ids(**filters: Any) -> list[int]:
        return [c.id for c in run(collect(seeded.list_contracts(**filters)))]

    assert ids() == [ended, running, other]
    assert ids(number=NUM) == [ended, running]
    assert ids(principal_id="acme") == [ended, other]
    # Start and end days are both days of the contract.
    assert ids(running_at=date(2026, 3, 31)) == [ended, running]
    assert ids(running_at=date(2026, 4, 1)) == [running, other]
    assert ids(running_at=date(2025, 12, 31)) == []
    assert ids(limit=1) == [ended]
    stored = {c.id: c for c in run(collect(seeded.list_contracts()))}
    assert (stored[ended].start, stored[ended].end) == (date(2026, 1, 1), date(2026, 3, 31))
    assert (stored[running].number, stored[running].principal_id, stored[running].end) == (NUM, "beta", None)


def test_optouts_bind_their_principal_and_every_principal(seeded: Store, run: Callable[..., Any]) -> None:
    everyone = run(seeded.add_optout(NUM, None, t("2026-05-01T10:00"), "agi", "call 1"))
    acme = run(seeded.add_optout(MOBILE, "acme", t("2026-06-01T10:00"), "cli", None))
    beta = run(seeded.add_optout(NUM, "beta", t("2026-07-01T10:00"), "import", "list.csv"))

    def ids(**filters: Any) -> list[int]:
        return [o.id for o in run(collect(seeded.list_optouts(**filters)))]

    assert ids() == [everyone, acme, beta]
    assert ids(principal_id="acme") == [everyone, acme]
    assert ids(number=NUM, principal_id="beta") == [everyone, beta]
    assert ids(since=t("2026-06-01T10:00")) == [acme, beta]
    assert ids(limit=2) == [everyone, acme]
    stored = {o.id: o for o in run(collect(seeded.list_optouts()))}
    assert (stored[everyone].principal_id, stored[everyone].at, stored[everyone].source,
            stored[everyone].reference) == (None, t("2026-05-01T10:00"), "agi", "call 1")
    assert stored[acme].reference is None


def test_an_empty_store_lists_nothing(store: Store, run: Callable[..., Any]) -> None:
    for rows in (store.list_principals(), store.list_campaigns(), store.list_consents(), store.list_contracts(),
                 store.list_optouts()):
        assert run(collect(rows)) == []


def test_lists_stream_rows_as_they_are_read(
    seeded: Store, run: Callable[..., Any], backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large table is never read whole before the first row is handed out: the rows the driver has
    fetched when the first consent arrives are counted where each driver hands them over (aiosqlite's
    calls into its thread, asyncpg's cursor fetches)."""
    total = 25_000
    records = (ConsentRecord(f"+39333{i:07d}", "acme", t("2026-01-01"), f"ref {i}") for i in range(total))
    run(seeded.import_consents(records, ImportMeta(kind="consent", file_name="many.csv")))
    fetched = 0

    def counting(original: Callable[..., Any]) -> Callable[..., Any]:
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            nonlocal fetched
            result = await original(*args, **kwargs)
            if isinstance(result, list):
                fetched += len(result)
            return result

        return wrapper

    if backend == "sqlite":
        import aiosqlite

        monkeypatch.setattr(aiosqlite.Connection, "_execute", counting(aiosqlite.Connection._execute))
    else:
        import asyncpg.cursor

        for method in ("_bind_exec", "_exec"):  # the first fetch, the next ones
            monkeypatch.setattr(asyncpg.cursor.BaseCursor, method, counting(getattr(asyncpg.cursor.BaseCursor, method)))

    async def first_then_rest() -> tuple[int, int]:
        rows = seeded.list_consents()
        await anext(rows)
        after_first = fetched
        rest = 1 + len([row async for row in rows])
        return after_first, rest

    after_first, count = run(first_then_rest())
    assert count == total == fetched
    assert 0 < after_first <= 10_000  # one fetch (SQLite: 64 rows; PostgreSQL: the cursor's prefetch)
