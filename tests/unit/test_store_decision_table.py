"""The legal decision table (test_policy.py) through a real store, on SQLite and on PostgreSQL.

test_policy.py checks decide() on facts built in memory. Here every row's facts are first stored the way
an operator stores them (principal and campaign, RPO answers imported, the directory, consents, contracts,
refusals, earlier ALLOWs in the decision log), read back with store.facts() exactly as the gate reads
them, and decided: the answer must be the row's. The same rows run on both backends (the `backend`
fixture), so both give identical answers to the whole table.

A row whose facts no store could hold (say, a "registered" answer with no registration moment at all, the
policy's own fail-closed guard) would stay in test_policy.py alone; test_most_rows_are_storable keeps that
set small (today every row of the table is stored).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from test_policy import NUMBER, ORDER_ROWS, RULE_ROWS

from rpoguard.audit import AuditEntry
from rpoguard.db.store import ConsentRecord, ImportMeta, RpoAnswer, Store
from rpoguard.policy import CallContext, Facts, RpoFacts, decide
from rpoguard.policy.rpo import latest_moment_of, with_rpo_summary
from rpoguard.timeutil import to_us
from support.rawdb import RawDb

ROWS = RULE_ROWS + ORDER_ROWS


def storable_rpo(rpo: RpoFacts | None) -> bool:
    """Whether a history of imported answers summarises (policy/rpo.py) to exactly these facts."""
    if rpo is None:
        return True
    bound = rpo.registration_bound
    # Stored answers bound a registration by their first registered check (read as its whole day when it is
    # a date) or a later registered_at: a row whose bound is another moment has no history that gives it.
    if rpo.registered:
        return (bound is not None and bound <= rpo.checked_at and rpo.registered_at is None
                and latest_moment_of(bound) == bound)
    return rpo.registered_at is None and (
        bound is None or (bound < rpo.checked_at and latest_moment_of(bound) == bound))


STORABLE = [row for row in ROWS if storable_rpo(row.values[0].rpo)]


def test_most_rows_are_storable() -> None:
    assert len(STORABLE) >= len(ROWS) - 3, [row.id for row in ROWS if row not in STORABLE]


def rpo_history(rpo: RpoFacts) -> list[tuple[Any, RpoAnswer]]:
    """(check time, answer) pairs, oldest first, whose summary is `rpo`."""
    bound = rpo.registration_bound
    if rpo.registered:
        assert bound is not None
        if rpo.registered_at is not None or bound == rpo.checked_at:
            return [(rpo.checked_at, RpoAnswer(NUMBER, True, rpo.registered_at))]
        # A run of "registered" answers that started at the bound.
        return [(bound, RpoAnswer(NUMBER, True)), (rpo.checked_at, RpoAnswer(NUMBER, True))]
    if bound is None:
        return [(rpo.checked_at, RpoAnswer(NUMBER, False))]
    # Registered once (from the bound), not registered in the latest answer.
    return [(bound, RpoAnswer(NUMBER, True)), (rpo.checked_at, RpoAnswer(NUMBER, False))]


def store_facts(run: Callable, store: Store, f: Facts, ctx: CallContext) -> None:
    campaign = f.campaign
    principals = {o.principal_id for o in f.optouts if o.principal_id}
    if campaign is not None:
        run(store.add_principal(campaign.principal_id, campaign.principal_id.upper(), campaign.declared_caller_ids))
        run(store.add_campaign(campaign.id, campaign.principal_id, campaign.automated, campaign.max_attempts,
                               campaign.per_days))
    for principal in principals:
        if run(store.get_principal(principal)) is None:
            run(store.add_principal(principal, principal.upper(), []))
    # Consents, contracts and RPO answers belong to the campaign's principal (the store reads only those).
    owner = campaign.principal_id if campaign is not None else "acme"
    if (f.consents or f.contracts or f.rpo) and run(store.get_principal(owner)) is None:
        run(store.add_principal(owner, owner.upper(), []))
    if f.rpo is not None:
        for i, (checked_at, answer) in enumerate(rpo_history(f.rpo)):
            meta = ImportMeta(kind="rpo", file_name=f"answers-{i}.csv", checked_at=checked_at, principal_id=owner)
            run(store.import_rpo([answer], meta))
    if f.listing is not None:
        # An extract of the directory from well before the call: listed at the call time.
        listed_at = ctx.at - timedelta(days=60)
        run(store.import_directory([NUMBER], ImportMeta(kind="directory", file_name="dir.txt", checked_at=listed_at),
                                   replace=True))
    raw = RawDb(store, run)
    try:
        for c in f.consents:
            consent_id, _ = run(store.add_consent(ConsentRecord(NUMBER, owner, c.given_at, c.evidence, c.automated,
                                                                c.expires_at, c.purpose)))
            if c.revoked_at is not None:
                # This consent alone, at its own time (revoke_consents would revoke every consent in force).
                raw.execute("UPDATE consents SET revoked_us = ? WHERE id = ?", (to_us(c.revoked_at), consent_id))
    finally:
        raw.close()
    for k in f.contracts:
        run(store.add_contract(NUMBER, owner, k.start, k.end))
    for o in f.optouts:
        run(store.add_optout(NUMBER, o.principal_id, o.at, "cli", None))
    if campaign is not None and campaign.per_days and f.recent_allows:
        for i in range(f.recent_allows):
            ts = to_us(ctx.at - timedelta(minutes=1 + i))
            run(store.append_decision(AuditEntry(
                f"00000000-0000-4000-8000-{i:012d}", ts, NUMBER, NUMBER, campaign.id, campaign.principal_id, None,
                "allow", "", "listed", "{}", "cli", None, None)))


@pytest.mark.parametrize(("f", "ctx", "reasons", "basis"), STORABLE)
def test_stored_facts_give_the_tables_answer(
    store: Store, run: Callable, f: Facts, ctx: CallContext, reasons: tuple[str, ...], basis: str | None
) -> None:
    store_facts(run, store, f, ctx)
    campaign_id = f.campaign.id if f.campaign is not None else "spring-offers"
    # As the gate does: a number that failed normalisation never reaches the store.
    number = None if ctx.number_error else NUMBER
    stored = with_rpo_summary(run(store.facts(number, f.line_type, campaign_id, ctx.at)), ctx.at)

    decision = decide(stored, ctx)
    assert (decision.reasons, decision.basis if not decision.reasons else None) == (
        reasons, basis if not reasons else None)
    # The store read back what was stored, fact for fact (ids aside).
    if number is not None:
        assert stored.campaign == f.campaign
        if f.rpo is not None and f.campaign is not None:
            assert stored.rpo is not None
            assert replace(stored.rpo, result_id=0, import_id=None) == replace(f.rpo, result_id=0, import_id=None)
        else:
            assert stored.rpo is None
        assert (stored.listing is None) == (f.listing is None)
        assert sorted((c.given_at, c.evidence, c.automated, c.expires_at, c.revoked_at) for c in stored.consents) \
            == sorted((c.given_at, c.evidence, c.automated, c.expires_at, c.revoked_at) for c in f.consents)
        assert sorted((k.start, k.end) for k in stored.contracts) == sorted((k.start, k.end) for k in f.contracts)
