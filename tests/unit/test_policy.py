"""rpoguard.policy.decide: the decision table of architecture.md §3, rule by rule and boundary by boundary.

Each row reads like a line of the law: the facts the store found, the call, and what the engine must say.
The call happens, unless a row says otherwise, on Tuesday 12 May 2026 at 11:00 in Rome: an ordinary
working day with no holiday near, inside the calling window. The default facts make a clean ALLOW on a
directory number (`listed`): every row changes only what its rule is about.

Lead's semantics where architecture.md is silent: every failing rule adds its code in table order; a number
that failed normalisation leaves only the campaign, hours and caller-ID rules; an unknown campaign skips the
rules that need its principal (a refusal for all principals still blocks).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from rpoguard import constants as c
from rpoguard.policy import (
    CallContext,
    CampaignFacts,
    ConsentFacts,
    ContractFacts,
    Decision,
    Facts,
    ListingFacts,
    OptoutFacts,
    RpoFacts,
    decide,
)

ROME = ZoneInfo("Europe/Rome")
PROPERTY = settings(max_examples=300, deadline=None, derandomize=True)

NUMBER = "+393312345678"
PRINCIPAL = "acme"
OTHER_PRINCIPAL = "globex"
CALLER = "+390280001234"  # declared to the ROC by ACME
UNDECLARED_CALLER = "+390699999999"

MINUTE = timedelta(minutes=1)
MICRO = timedelta(microseconds=1)
DAY = timedelta(days=1)


def rome(y: int, m: int, d: int, hh: int = 0, mm: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=ROME)


def utc(y: int, m: int, d: int, hh: int = 0, mm: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=UTC)


NOW = rome(2026, 5, 12, 11, 0)  # Tuesday
TODAY = date(2026, 5, 12)
REGISTERED_ON = rome(2026, 3, 1, 9, 30)  # upper bound of the (latest) RPO registration


# --- builders: one per kind of fact -----------------------------------------------------------------------


def campaign(*, automated: bool = False, max_attempts: int | None = None, per_days: int | None = None,
             principal: str = PRINCIPAL, caller_ids: Iterable[str] = (CALLER,)) -> CampaignFacts:
    return CampaignFacts("spring-offers", principal, automated, max_attempts, per_days, frozenset(caller_ids))


def checked(at: datetime = NOW - 3 * DAY, *, registered: bool = False, registered_at: datetime | None = None,
            bound: datetime | None = None, result_id: int = 101) -> RpoFacts:
    """An RPO answer. `bound`: upper bound of the latest registration the number ever had."""
    return RpoFacts(result_id, at, registered, registered_at, 7, bound)


def registered(bound: datetime | None = REGISTERED_ON, *, at: datetime = NOW - 3 * DAY,
               registered_at: datetime | None = None) -> RpoFacts:
    return checked(at, registered=True, registered_at=registered_at, bound=bound)


def left_register(bound: datetime = REGISTERED_ON) -> RpoFacts:
    """Registered once (so earlier consents were revoked), 'not registered' in the latest answer."""
    return checked(registered=False, bound=bound)


def consent(given_at: datetime, *, id: int = 201, automated: bool = False,
            expires_at: datetime | None = None, revoked_at: datetime | None = None) -> ConsentFacts:
    return ConsentFacts(id, given_at, f"rec-{id}.wav", automated, expires_at, revoked_at, "marketing")


def contract(start: date, end: date | None = None, *, id: int = 301) -> ContractFacts:
    return ContractFacts(id, start, end)


def refusal(at: datetime = NOW - DAY, *, principal: str | None = PRINCIPAL, id: int = 401) -> OptoutFacts:
    return OptoutFacts(id, principal, at)


def date_in_2025() -> datetime:
    """A moment inside the contracts that start on 1 Jan 2025 and before REGISTERED_ON."""
    return rome(2025, 9, 15, 10, 0)


# A registration after a contract ended on 12 April (30 days before TODAY).
LATE_REGISTRATION = rome(2026, 4, 20, 9, 0)


CAP_3_PER_WEEK = campaign(max_attempts=3, per_days=7)
LISTED = ListingFacts(501)
UNLISTED = None
NO_CAMPAIGN = None
NOT_CHECKED = None


def facts(*, campaign: CampaignFacts | None = campaign(), rpo: RpoFacts | None = checked(),  # noqa: B008
          listing: ListingFacts | None = LISTED, consents: Iterable[ConsentFacts] = (),
          contracts: Iterable[ContractFacts] = (), optouts: Iterable[OptoutFacts] = (),
          recent_allows: int = 0) -> Facts:
    return Facts(NUMBER, c.LINE_MOBILE, campaign, rpo, listing, tuple(consents), tuple(contracts),
                 tuple(optouts), recent_allows)


def call(at: datetime = NOW, *, caller_id: str | None = CALLER, caller_id_checked: bool = True,
         number_error: str | None = None, validity: int = c.DEFAULT_RPO_VALIDITY_DAYS) -> CallContext:
    return CallContext(at, number_error, caller_id_checked, caller_id, validity)


def case(name: str, f: Facts, reasons: tuple[str, ...] = (), basis: str | None = None, *,
         ctx: CallContext | None = None) -> object:
    """One row: facts, call, and the reasons (in order) or, for an ALLOW, the basis."""
    if not reasons:
        assert basis is not None, name
    return pytest.param(f, ctx or call(), reasons, basis, id=name)


# --- the table: every rule on its own, pass and fail ------------------------------------------------------

RULE_ROWS = [
    # 0. the baseline
    case("directory number, not registered, fresh check -> allow (listed)", facts(), basis=c.BASIS_LISTED),
    # 1. number (from the normaliser): only the campaign, hours and caller-ID rules still run
    case("invalid number", facts(), (c.INVALID_NUMBER,), ctx=call(number_error=c.INVALID_NUMBER)),
    case("foreign number", facts(), (c.FOREIGN_NUMBER,), ctx=call(number_error=c.FOREIGN_NUMBER)),
    case("toll-free/premium number", facts(), (c.UNSUPPORTED_NUMBER_TYPE,),
         ctx=call(number_error=c.UNSUPPORTED_NUMBER_TYPE)),
    case("invalid number: refusal, missing RPO, unlisted, automated, cap are not looked at",
         facts(campaign=campaign(automated=True, max_attempts=1, per_days=7), rpo=NOT_CHECKED, listing=UNLISTED,
               optouts=[refusal(principal=None)], recent_allows=5),
         (c.INVALID_NUMBER,), ctx=call(number_error=c.INVALID_NUMBER)),
    case("invalid number, unknown campaign, at night, caller withheld",
         facts(campaign=NO_CAMPAIGN), (c.INVALID_NUMBER, c.UNKNOWN_CAMPAIGN, c.OUTSIDE_HOURS),
         ctx=call(rome(2026, 5, 12, 22, 0), caller_id=None, number_error=c.INVALID_NUMBER)),
    case("invalid number, known campaign, at night, caller withheld",
         facts(), (c.INVALID_NUMBER, c.OUTSIDE_HOURS, c.CALLER_ID_INVALID),
         ctx=call(rome(2026, 5, 12, 22, 0), caller_id=None, number_error=c.INVALID_NUMBER)),
    # 2. campaign: unknown -> the rules needing its principal are skipped
    case("unknown campaign", facts(campaign=NO_CAMPAIGN), (c.UNKNOWN_CAMPAIGN,)),
    case("unknown campaign: registered, unlisted, withheld caller are not judged without a principal",
         facts(campaign=NO_CAMPAIGN, rpo=registered(), listing=UNLISTED),
         (c.UNKNOWN_CAMPAIGN,), ctx=call(caller_id=None)),
    # RPO answers belong to the campaign's principal: without a campaign there is no answer to judge.
    case("unknown campaign, RPO never checked: no principal whose answer could be missing",
         facts(campaign=NO_CAMPAIGN, rpo=NOT_CHECKED), (c.UNKNOWN_CAMPAIGN,)),
    case("unknown campaign, RPO expired, Sunday: the answer is not judged, the hours are",
         facts(campaign=NO_CAMPAIGN, rpo=checked(NOW - 20 * DAY)),
         (c.UNKNOWN_CAMPAIGN, c.OUTSIDE_HOURS), ctx=call(rome(2026, 5, 17, 11, 0))),
    case("unknown campaign, refusal for every principal",
         facts(campaign=NO_CAMPAIGN, optouts=[refusal(principal=None)]), (c.UNKNOWN_CAMPAIGN, c.OPTOUT)),
    case("unknown campaign, refusal to one principal cannot be attributed",
         facts(campaign=NO_CAMPAIGN, optouts=[refusal(principal=PRINCIPAL)]), (c.UNKNOWN_CAMPAIGN,)),
    # 3. in-call refusal
    case("refusal to this principal yesterday", facts(optouts=[refusal(NOW - DAY)]), (c.OPTOUT,)),
    case("refusal to this principal at the very instant of the call", facts(optouts=[refusal(NOW)]), (c.OPTOUT,)),
    case("refusal recorded one microsecond after the call -> not yet", facts(optouts=[refusal(NOW + MICRO)]),
         basis=c.BASIS_LISTED),
    case("refusal dated tomorrow -> not yet", facts(optouts=[refusal(NOW + DAY)]), basis=c.BASIS_LISTED),
    case("refusal covering every principal", facts(optouts=[refusal(principal=None)]), (c.OPTOUT,)),
    case("refusal to another principal does not block this one",
         facts(optouts=[refusal(principal=OTHER_PRINCIPAL)]), basis=c.BASIS_LISTED),
    case("refusal to ACME blocks a campaign of ACME's, not one of another principal's",
         facts(campaign=campaign(principal=OTHER_PRINCIPAL), optouts=[refusal(principal=PRINCIPAL)]),
         basis=c.BASIS_LISTED),
    case("refusal is final: a consent given after it does not lift it",
         facts(listing=UNLISTED, consents=[consent(NOW - DAY)], optouts=[refusal(NOW - 2 * DAY)]), (c.OPTOUT,)),
    # 4. an RPO result exists
    case("never checked against the RPO", facts(rpo=NOT_CHECKED), (c.RPO_NOT_CHECKED,)),
    case("never checked, even with consent", facts(rpo=NOT_CHECKED, listing=UNLISTED, consents=[consent(NOW - DAY)]),
         (c.RPO_NOT_CHECKED,)),
    # 5. fresh (boundaries in test_rpo_validity)
    case("checked 15 days ago to the minute", facts(rpo=checked(NOW - 15 * DAY)), (c.RPO_EXPIRED,)),
    case("checked 14 days ago", facts(rpo=checked(NOW - 14 * DAY)), basis=c.BASIS_LISTED),
    case("expired and registered: both reasons",
         facts(rpo=registered(at=NOW - 16 * DAY)), (c.RPO_EXPIRED, c.RPO_REGISTERED)),
    # 6. registered
    case("registered, no consent, no contract", facts(rpo=registered()), (c.RPO_REGISTERED,)),
    case("registered, consent given after registration",
         facts(rpo=registered(), consents=[consent(REGISTERED_ON + MINUTE)]), basis=c.BASIS_CONSENT),
    case("registered, open-ended contract and no consent: a contract alone is no basis",
         facts(rpo=registered(), contracts=[contract(date(2025, 1, 1))]), (c.RPO_REGISTERED,)),
    case("registered, consent given within an open-ended contract, before registration",
         facts(rpo=registered(), consents=[consent(REGISTERED_ON - DAY)], contracts=[contract(date(2025, 1, 1))]),
         basis=c.BASIS_CONTRACT),
    # 7. unlisted
    case("unlisted, no consent", facts(listing=UNLISTED), (c.UNLISTED_NO_CONSENT,)),
    case("unlisted, consent", facts(listing=UNLISTED, consents=[consent(NOW - DAY)]), basis=c.BASIS_CONSENT),
    case("unlisted, a contract alone is not consent", facts(listing=UNLISTED, contracts=[contract(date(2025, 1, 1))]),
         (c.UNLISTED_NO_CONSENT,)),
    # 8. automated
    case("automated, listed, no consent", facts(campaign=campaign(automated=True)), (c.AUTOMATED_NO_CONSENT,)),
    case("automated, consent to live calls only",
         facts(campaign=campaign(automated=True), consents=[consent(NOW - DAY, automated=False)]),
         (c.AUTOMATED_NO_CONSENT,)),
    case("automated, consent covering automated calls",
         facts(campaign=campaign(automated=True), consents=[consent(NOW - DAY, automated=True)]),
         basis=c.BASIS_CONSENT),
    # 9. hours (boundaries in test_calendar.py and test_hours_through_decide)
    case("08:59 on a weekday", facts(), (c.OUTSIDE_HOURS,), ctx=call(rome(2026, 5, 12, 8, 59))),
    case("Sunday", facts(), (c.OUTSIDE_HOURS,), ctx=call(rome(2026, 5, 17, 11, 0))),
    # 10. caller ID
    case("caller ID declared by the principal", facts(), basis=c.BASIS_LISTED, ctx=call(caller_id=CALLER)),
    case("caller ID withheld", facts(), (c.CALLER_ID_INVALID,), ctx=call(caller_id=None)),
    case("caller ID not declared", facts(), (c.CALLER_ID_INVALID,), ctx=call(caller_id=UNDECLARED_CALLER)),
    case("caller ID of another principal's declaration",
         facts(campaign=campaign(caller_ids=[UNDECLARED_CALLER])), (c.CALLER_ID_INVALID,)),
    case("principal declared no caller ID at all", facts(campaign=campaign(caller_ids=())), (c.CALLER_ID_INVALID,)),
    case("caller ID not checked (CLI without --caller-id), withheld", facts(), basis=c.BASIS_LISTED,
         ctx=call(caller_id=None, caller_id_checked=False)),
    case("caller ID not checked, undeclared", facts(), basis=c.BASIS_LISTED,
         ctx=call(caller_id=UNDECLARED_CALLER, caller_id_checked=False)),
    # 11. attempt cap
    case("cap 3 per 7 days, 2 calls allowed so far (N-1)", facts(campaign=CAP_3_PER_WEEK, recent_allows=2),
         basis=c.BASIS_LISTED),
    case("cap 3 per 7 days, 3 calls allowed so far (N)", facts(campaign=CAP_3_PER_WEEK, recent_allows=3),
         (c.ATTEMPT_LIMIT,)),
    case("cap 3 per 7 days, 4 calls (over the cap)", facts(campaign=CAP_3_PER_WEEK, recent_allows=4),
         (c.ATTEMPT_LIMIT,)),
    case("cap 0 is no cap", facts(campaign=campaign(max_attempts=0, per_days=7), recent_allows=5),
         basis=c.BASIS_LISTED),
    case("cap 1 per day, none yet", facts(campaign=campaign(max_attempts=1, per_days=1), recent_allows=0),
         basis=c.BASIS_LISTED),
    case("cap 1 per day, one already", facts(campaign=campaign(max_attempts=1, per_days=1), recent_allows=1),
         (c.ATTEMPT_LIMIT,)),
    case("no cap set", facts(recent_allows=1000), basis=c.BASIS_LISTED),
    case("max attempts without a period is no cap", facts(campaign=campaign(max_attempts=1), recent_allows=5),
         basis=c.BASIS_LISTED),
    case("period without max attempts is no cap", facts(campaign=campaign(per_days=7), recent_allows=5),
         basis=c.BASIS_LISTED),
]

# --- order and multiplicity -------------------------------------------------------------------------------

EVERYTHING_WRONG = facts(
    campaign=campaign(automated=True, max_attempts=2, per_days=30),
    rpo=registered(at=NOW - 30 * DAY),
    listing=UNLISTED,
    optouts=[refusal(principal=None)],
    recent_allows=2,
)
ORDER_ROWS = [
    case("every rule fails: all codes, in table order", EVERYTHING_WRONG,
         (c.OPTOUT, c.RPO_EXPIRED, c.RPO_REGISTERED, c.UNLISTED_NO_CONSENT, c.AUTOMATED_NO_CONSENT,
          c.OUTSIDE_HOURS, c.CALLER_ID_INVALID, c.ATTEMPT_LIMIT),
         ctx=call(rome(2026, 5, 17, 23, 0), caller_id=None)),
    case("every rule fails, RPO never checked",
         replace(EVERYTHING_WRONG, rpo=NOT_CHECKED),
         (c.OPTOUT, c.RPO_NOT_CHECKED, c.UNLISTED_NO_CONSENT, c.AUTOMATED_NO_CONSENT,
          c.OUTSIDE_HOURS, c.CALLER_ID_INVALID, c.ATTEMPT_LIMIT),
         ctx=call(rome(2026, 5, 17, 23, 0), caller_id=UNDECLARED_CALLER)),
    case("registered and unlisted without consent: both", facts(rpo=registered(), listing=UNLISTED),
         (c.RPO_REGISTERED, c.UNLISTED_NO_CONSENT)),
    case("registered with a contract, unlisted, no consent: a contract alone carries neither rule",
         facts(rpo=registered(), listing=UNLISTED, contracts=[contract(date(2025, 1, 1))]),
         (c.RPO_REGISTERED, c.UNLISTED_NO_CONSENT)),
    case("unlisted automated without consent: both consent reasons",
         facts(campaign=campaign(automated=True), listing=UNLISTED),
         (c.UNLISTED_NO_CONSENT, c.AUTOMATED_NO_CONSENT)),
    case("unlisted automated with a live-call consent: only automated",
         facts(campaign=campaign(automated=True), listing=UNLISTED, consents=[consent(NOW - DAY)]),
         (c.AUTOMATED_NO_CONSENT,)),
    case("outside hours and withheld caller and cap", facts(campaign=campaign(max_attempts=1, per_days=1),
                                                             recent_allows=1),
         (c.OUTSIDE_HOURS, c.CALLER_ID_INVALID, c.ATTEMPT_LIMIT), ctx=call(rome(2026, 5, 12, 20, 0), caller_id=None)),
    case("refusal and never checked", facts(rpo=NOT_CHECKED, optouts=[refusal()]), (c.OPTOUT, c.RPO_NOT_CHECKED)),
    case("foreign number first, then unknown campaign", facts(campaign=NO_CAMPAIGN),
         (c.FOREIGN_NUMBER, c.UNKNOWN_CAMPAIGN), ctx=call(number_error=c.FOREIGN_NUMBER)),
]


@pytest.mark.parametrize(("f", "ctx", "reasons", "basis"), RULE_ROWS + ORDER_ROWS)
def test_decision_table(f: Facts, ctx: CallContext, reasons: tuple[str, ...], basis: str | None) -> None:
    d = decide(f, ctx)
    assert d.reasons == reasons
    assert d.decision == (c.BLOCK if reasons else c.ALLOW)
    assert d.basis == (None if reasons else basis)
    assert d.primary_reason == (reasons[0] if reasons else None)


def test_every_reason_code_is_reachable() -> None:
    # engine_error is never produced by decide(): it is the gate's answer when decide (or the store) fails.
    seen = {code for row in RULE_ROWS + ORDER_ROWS for code in row.values[2]}
    assert seen == set(c.REASON_CODES) - {c.ENGINE_ERROR}


def test_reasons_follow_reason_codes_order() -> None:
    index = {code: i for i, code in enumerate(c.REASON_CODES)}
    for row in RULE_ROWS + ORDER_ROWS:
        reasons = row.values[2]
        assert list(reasons) == sorted(reasons, key=index.__getitem__), row.id


# --- rule 5: 15 days of validity, wall clock in Europe/Rome -----------------------------------------------


def rpo_expired(rpo: RpoFacts, at: datetime, validity: int = c.DEFAULT_RPO_VALIDITY_DAYS) -> bool:
    return c.RPO_EXPIRED in decide(facts(rpo=rpo), call(at, validity=validity)).reasons


CHECK = rome(2026, 5, 1, 10, 0)
DATE_ONLY_SPRING = rome(2026, 3, 20)  # 00:00 CET; fifteen days later DST is on
DATE_ONLY_AUTUMN = rome(2026, 10, 20)  # 00:00 CEST; fifteen days later DST is off


@pytest.mark.parametrize(
    ("checked_at", "at", "validity", "expired"),
    [
        pytest.param(CHECK, CHECK, 15, False, id="at the check itself"),
        pytest.param(CHECK, CHECK + 15 * DAY - MINUTE, 15, False, id="C+15d-1min: valid"),
        pytest.param(CHECK, CHECK + 15 * DAY - MICRO, 15, False, id="C+15d-1us: valid"),
        pytest.param(CHECK, CHECK + 15 * DAY, 15, True, id="C+15d: expired"),
        pytest.param(CHECK, CHECK + 40 * DAY, 15, True, id="C+40d: expired"),
        pytest.param(CHECK.astimezone(UTC), CHECK + 15 * DAY - MINUTE, 15, False, id="check stored in UTC: C+15d-1min"),
        pytest.param(CHECK.astimezone(UTC), (CHECK + 15 * DAY).astimezone(UTC), 15, True, id="all UTC: C+15d"),
        pytest.param(CHECK, CHECK + 29 * DAY, 30, False, id="validity 30: C+29d valid"),
        pytest.param(CHECK, CHECK + 30 * DAY - MINUTE, 30, False, id="validity 30: C+30d-1min valid"),
        pytest.param(CHECK, CHECK + 30 * DAY, 30, True, id="validity 30: C+30d expired"),
        pytest.param(CHECK, CHECK + 15 * DAY, 30, False, id="validity 30: C+15d still valid"),
        pytest.param(CHECK, CHECK + DAY - MINUTE, 1, False, id="validity 1: C+1d-1min valid"),
        pytest.param(CHECK, CHECK + DAY, 1, True, id="validity 1: C+1d expired"),
        # A date-only check (00:00 Rome) across the start of DST: expires at 00:00 CEST, 14 d 23 h later.
        pytest.param(DATE_ONLY_SPRING, rome(2026, 4, 3, 23, 59), 15, False, id="spring date-only: 3 Apr 23:59 valid"),
        pytest.param(DATE_ONLY_SPRING, rome(2026, 4, 4, 0, 0), 15, True, id="spring date-only: 4 Apr 00:00 expired"),
        pytest.param(DATE_ONLY_SPRING.astimezone(UTC), utc(2026, 4, 3, 21, 59), 15, False,
                     id="spring date-only, stored in UTC: 21:59Z valid"),
        pytest.param(DATE_ONLY_SPRING.astimezone(UTC), utc(2026, 4, 3, 22, 0), 15, True,
                     id="spring date-only, stored in UTC: 22:00Z (= 00:00 CEST) expired"),
        pytest.param(DATE_ONLY_SPRING, DATE_ONLY_SPRING.astimezone(UTC) + timedelta(days=14, hours=23, minutes=30),
                     15, True,
                     id="spring: 14d23h30m of real time is already past the wall-clock expiry"),
        # Across the end of DST: expires at 00:00 CET, 15 d 1 h later.
        pytest.param(DATE_ONLY_AUTUMN, rome(2026, 11, 3, 23, 59), 15, False, id="autumn date-only: 3 Nov 23:59 valid"),
        pytest.param(DATE_ONLY_AUTUMN, rome(2026, 11, 4, 0, 0), 15, True, id="autumn date-only: 4 Nov 00:00 expired"),
        pytest.param(DATE_ONLY_AUTUMN.astimezone(UTC), utc(2026, 11, 3, 22, 59), 15, False,
                     id="autumn date-only, stored in UTC: 22:59Z (= 23:59 CET) valid"),
        pytest.param(DATE_ONLY_AUTUMN.astimezone(UTC), utc(2026, 11, 3, 23, 0), 15, True,
                     id="autumn date-only, stored in UTC: 23:00Z (= 00:00 CET) expired"),
        pytest.param(DATE_ONLY_AUTUMN, DATE_ONLY_AUTUMN.astimezone(UTC) + timedelta(days=15, minutes=30), 15, False,
                     id="autumn: 15d30m of real time is still before the wall-clock expiry"),
    ],
)
def test_rpo_validity(checked_at: datetime, at: datetime, validity: int, expired: bool) -> None:
    assert rpo_expired(checked(checked_at), at, validity) is expired


def test_default_validity_is_fifteen_days() -> None:
    assert c.DEFAULT_RPO_VALIDITY_DAYS == 15
    assert call().rpo_validity_days == 15


# Architecture §1: "the same facts and time always give the same decision". A call instant must not be
# judged differently because the caller handed it over in Rome time rather than UTC. rule_rpo_fresh
# computes the expiry in Europe/Rome (`checked_at.astimezone(ROME) + timedelta(days)`) and compares it with
# `ctx.at`; when ctx.at is also a Europe/Rome datetime Python compares the two as naive wall-clock times
# (same tzinfo object: fold and the DST gap are ignored), when ctx.at is UTC it compares real instants.
# The two disagree when the wall-clock expiry falls in the repeated or the skipped hour of a DST change.
DST_EDGE_CASES = [
    pytest.param(
        # checked Sat 10 Oct 2026 02:30 CEST -> expiry 25 Oct 02:30, the first (CEST) pass = 00:30Z.
        utc(2026, 10, 10, 0, 30), utc(2026, 10, 25, 1, 15),  # = 02:15 CET, the second pass, 45 min later
        id="autumn: call in the repeated hour after a CEST expiry",
    ),
    pytest.param(
        # checked Sat 14 Mar 2026 02:30 CET -> expiry 29 Mar 02:30, which does not exist (read as 01:30Z).
        utc(2026, 3, 14, 1, 30), utc(2026, 3, 29, 1, 10),  # = 03:10 CEST
        id="spring: call just after a skipped-hour expiry",
    ),
]


@pytest.mark.parametrize(("checked_at", "at"), DST_EDGE_CASES)
def test_rpo_expiry_depends_on_the_instant_not_its_zone(checked_at: datetime, at: datetime) -> None:
    f = facts(rpo=checked(checked_at))
    in_utc = decide(f, call(at.astimezone(UTC), caller_id_checked=False))
    in_rome = decide(f, call(at.astimezone(ROME), caller_id_checked=False))
    assert in_rome.reasons == in_utc.reasons


# --- rule 6: consent dates against the registration ------------------------------------------------------


def blocks(f: Facts, ctx: CallContext | None = None) -> tuple[str, ...]:
    return decide(f, ctx or call()).reasons


@pytest.mark.parametrize(
    ("rpo", "consents", "contracts", "reasons"),
    [
        pytest.param(registered(), [consent(REGISTERED_ON - MINUTE)], [], (c.RPO_REGISTERED,),
                     id="consent one minute before the registration bound: revoked"),
        pytest.param(registered(), [consent(REGISTERED_ON)], [], (c.RPO_REGISTERED,),
                     id="consent at the registration bound exactly: revoked (must be later)"),
        pytest.param(registered(), [consent(REGISTERED_ON + MICRO)], [], (),
                     id="consent one microsecond after the bound: counts"),
        pytest.param(registered(), [consent(REGISTERED_ON + MINUTE)], [], (),
                     id="consent one minute after the bound: counts"),
        pytest.param(registered(), [consent(rome(2024, 1, 1)), consent(REGISTERED_ON + DAY, id=202)], [], (),
                     id="an old revoked consent and a new one: the new one counts"),
        pytest.param(registered(registered_at=rome(2026, 2, 10, 15, 0), bound=rome(2026, 2, 10, 15, 0)),
                     [consent(rome(2026, 2, 10, 14, 59))], [], (c.RPO_REGISTERED,),
                     id="registered_at given: consent a minute before it"),
        pytest.param(registered(registered_at=rome(2026, 2, 10, 15, 0), bound=rome(2026, 2, 10, 15, 0)),
                     [consent(rome(2026, 2, 10, 15, 1))], [], (),
                     id="registered_at given: consent a minute after it"),
        pytest.param(registered(), [consent(REGISTERED_ON + DAY, revoked_at=NOW - DAY)], [], (c.RPO_REGISTERED,),
                     id="consent after registration, revoked since"),
        pytest.param(registered(), [consent(REGISTERED_ON + DAY, expires_at=NOW)], [], (c.RPO_REGISTERED,),
                     id="consent after registration, expiring at the call instant"),
        pytest.param(registered(), [consent(NOW + MINUTE)], [], (c.RPO_REGISTERED,),
                     id="consent dated after the call does not count yet"),
        pytest.param(registered(), [consent(REGISTERED_ON - DAY)], [contract(date(2025, 6, 1))], (),
                     id="consent before registration, given within a live contract: the contract saves it"),
        pytest.param(registered(), [consent(rome(2025, 5, 31, 23, 59))], [contract(date(2025, 6, 1))],
                     (c.RPO_REGISTERED,), id="consent the evening before the contract started: not within it"),
        pytest.param(registered(), [consent(rome(2025, 6, 1, 0, 0))], [contract(date(2025, 6, 1))], (),
                     id="consent at 00:00 on the contract's first day: within it"),
        pytest.param(registered(LATE_REGISTRATION), [consent(rome(2026, 4, 12, 23, 59))],
                     [contract(date(2025, 6, 1), TODAY - 30 * DAY)], (),
                     id="consent on the last day of a contract that ended 30 days ago: saved"),
        pytest.param(registered(LATE_REGISTRATION), [consent(rome(2025, 9, 1))],
                     [contract(date(2025, 6, 1), TODAY - 31 * DAY)],
                     (c.RPO_REGISTERED,), id="consent within a contract that ended 31 days ago: revoked"),
        pytest.param(registered(LATE_REGISTRATION), [consent(rome(2026, 4, 17, 10, 0))],
                     [contract(date(2025, 6, 1), TODAY - 30 * DAY)], (c.RPO_REGISTERED,),
                     id="consent given after the contract ended (within its 30 days): not within it, revoked"),
        pytest.param(registered(), [consent(REGISTERED_ON - DAY)], [contract(date(2026, 3, 2))],
                     (c.RPO_REGISTERED,), id="consent before a contract that started later: not saved by it"),
        pytest.param(registered(), [consent(REGISTERED_ON - DAY)], [contract(date(2025, 1, 1), id=301),
                                                                    contract(TODAY + DAY, id=302)],
                     (), id="one live contract is enough, another not yet started is ignored"),
        pytest.param(left_register(), [], [], (),
                     id="left the register, listed: no consent needed"),
        pytest.param(left_register(), [consent(REGISTERED_ON - DAY)], [], (),
                     id="left the register, listed, old consent: still listed basis"),
    ],
)
def test_registered_listed_number(rpo: RpoFacts, consents: list[ConsentFacts], contracts: list[ContractFacts],
                                  reasons: tuple[str, ...]) -> None:
    assert blocks(facts(rpo=rpo, consents=consents, contracts=contracts)) == reasons


@pytest.mark.parametrize(
    ("rpo", "consents", "contracts", "reasons"),
    [
        pytest.param(checked(), [consent(rome(2020, 1, 1))], [], (), id="never registered: an old consent counts"),
        pytest.param(left_register(), [consent(REGISTERED_ON - MINUTE)], [], (c.UNLISTED_NO_CONSENT,),
                     id="left the register: consent given before the registration stays revoked"),
        pytest.param(left_register(), [consent(REGISTERED_ON)], [], (c.UNLISTED_NO_CONSENT,),
                     id="left the register: consent at the bound stays revoked"),
        pytest.param(left_register(), [consent(REGISTERED_ON + MINUTE)], [], (),
                     id="left the register: consent given after the registration counts"),
        pytest.param(left_register(), [consent(REGISTERED_ON - DAY)], [contract(date(2025, 1, 1))], (),
                     id="left the register: a live contract keeps the old consent"),
        pytest.param(left_register(), [consent(REGISTERED_ON - DAY)], [contract(date(2025, 1, 1), TODAY - 31 * DAY)],
                     (c.UNLISTED_NO_CONSENT,), id="left the register: contract ended 31 days ago keeps nothing"),
        pytest.param(registered(), [consent(REGISTERED_ON - DAY)], [], (c.RPO_REGISTERED, c.UNLISTED_NO_CONSENT),
                     id="registered: old consent revoked for both rules"),
        pytest.param(registered(), [consent(REGISTERED_ON + DAY)], [], (),
                     id="registered: consent after registration satisfies both rules"),
        pytest.param(registered(), [consent(REGISTERED_ON - DAY)], [contract(date(2025, 1, 1))], (),
                     id="registered: live contract carries rule 6 and keeps the consent for rule 7"),
        pytest.param(registered(), [], [contract(date(2025, 1, 1))], (c.RPO_REGISTERED, c.UNLISTED_NO_CONSENT),
                     id="registered: live contract without any consent is neither a basis nor opt-in"),
    ],
)
def test_unlisted_number_and_registration(rpo: RpoFacts, consents: list[ConsentFacts],
                                          contracts: list[ContractFacts], reasons: tuple[str, ...]) -> None:
    assert blocks(facts(rpo=rpo, listing=UNLISTED, consents=consents, contracts=contracts)) == reasons


@pytest.mark.parametrize("rpo", [
    pytest.param(registered(bound=None, registered_at=REGISTERED_ON), id="registered_at set, bound missing"),
    pytest.param(checked(registered=True), id="registered, no date, no bound"),
])
def test_registered_without_a_bound_fails_closed(rpo: RpoFacts) -> None:
    # A consent older than anything we know about the registration must not carry a registered number.
    assert blocks(facts(rpo=rpo, consents=[consent(REGISTERED_ON - 30 * DAY)])) == (c.RPO_REGISTERED,)


# --- consent in force: given_at <= at < min(expires_at, revoked_at) --------------------------------------


@pytest.mark.parametrize(
    ("given", "kwargs", "in_force"),
    [
        pytest.param(NOW, {}, True, id="given at the call instant"),
        pytest.param(NOW + MICRO, {}, False, id="given one microsecond after the call"),
        pytest.param(NOW - DAY, {"expires_at": NOW}, False, id="expires at the call instant"),
        pytest.param(NOW - DAY, {"expires_at": NOW + MICRO}, True, id="expires one microsecond after"),
        pytest.param(NOW - DAY, {"expires_at": NOW - MICRO}, False, id="expired one microsecond before"),
        pytest.param(NOW - DAY, {"revoked_at": NOW}, False, id="revoked at the call instant"),
        pytest.param(NOW - DAY, {"revoked_at": NOW + MICRO}, True, id="revoked one microsecond after"),
        pytest.param(NOW - DAY, {"expires_at": NOW + DAY, "revoked_at": NOW}, False, id="revoked now, expires later"),
        pytest.param(NOW - DAY, {"expires_at": NOW, "revoked_at": NOW + DAY}, False, id="expires now, revoked later"),
        pytest.param(NOW - DAY, {"expires_at": NOW + DAY, "revoked_at": NOW + DAY}, True, id="both later"),
        pytest.param(NOW - DAY, {"expires_at": (NOW + MINUTE).astimezone(UTC)}, True, id="expiry given in UTC"),
    ],
)
def test_consent_in_force(given: datetime, kwargs: dict[str, datetime], in_force: bool) -> None:
    reasons = blocks(facts(listing=UNLISTED, consents=[consent(given, **kwargs)]))
    assert reasons == (() if in_force else (c.UNLISTED_NO_CONSENT,))


# --- contracts: running, or ended at most 30 days ago (calendar days in Rome) ----------------------------


@pytest.mark.parametrize(
    ("contracts", "alive"),
    [
        pytest.param([contract(date(2024, 1, 1))], True, id="open-ended, started long ago"),
        pytest.param([contract(TODAY)], True, id="started today"),
        pytest.param([contract(TODAY + DAY)], False, id="starts tomorrow"),
        pytest.param([contract(date(2024, 1, 1), TODAY + 90 * DAY)], True, id="ends in the future"),
        pytest.param([contract(date(2024, 1, 1), TODAY)], True, id="ended today"),
        pytest.param([contract(date(2024, 1, 1), TODAY - 30 * DAY)], True, id="ended 30 days ago"),
        pytest.param([contract(date(2024, 1, 1), TODAY - 31 * DAY)], False, id="ended 31 days ago"),
        pytest.param([contract(date(2024, 1, 1), TODAY - 400 * DAY)], False, id="ended last year"),
        pytest.param([contract(date(2024, 1, 1), TODAY - 31 * DAY), contract(TODAY + DAY, id=302)], False,
                     id="one ended 31 days ago, one not started"),
        pytest.param([contract(date(2024, 1, 1), TODAY - 31 * DAY), contract(date(2025, 1, 1), id=302)], True,
                     id="an old one and a running one"),
    ],
)
def test_contract_alive(contracts: list[ContractFacts], alive: bool) -> None:
    # A consent given within each contract (09:00 on its first day) and a registration just before the
    # call: only a live contract can save the consent.
    consents = [consent(datetime.combine(k.start, time(9, 0), tzinfo=ROME), id=500 + i)
                for i, k in enumerate(contracts)]
    d = decide(facts(rpo=registered(NOW - MINUTE), consents=consents, contracts=contracts), call())
    assert d.reasons == (() if alive else (c.RPO_REGISTERED,))
    assert d.basis == (c.BASIS_CONTRACT if alive else None)


@pytest.mark.parametrize(
    ("at", "end", "alive"),
    [
        # 00:30 on 13 May in Rome is still 12 May in UTC: the engine must count Rome calendar days.
        pytest.param(rome(2026, 5, 13, 0, 30).astimezone(UTC), date(2026, 4, 13), True,
                     id="13 May 00:30 Rome (12 May UTC), ended 13 Apr = 30 days"),
        pytest.param(rome(2026, 5, 13, 0, 30).astimezone(UTC), date(2026, 4, 12), False,
                     id="13 May 00:30 Rome (12 May UTC), ended 12 Apr = 31 days"),
        pytest.param(rome(2026, 5, 12, 23, 59), date(2026, 4, 12), True, id="12 May 23:59 Rome, ended 12 Apr"),
    ],
)
def test_contract_days_are_rome_days(at: datetime, end: date, alive: bool) -> None:
    reasons = blocks(facts(rpo=registered(), consents=[consent(rome(2024, 6, 1, 10, 0))],
                           contracts=[contract(date(2024, 1, 1), end)]), call(at))
    assert (c.RPO_REGISTERED not in reasons) is alive


def test_contract_grace_is_thirty_days() -> None:
    assert c.CONTRACT_GRACE_DAYS == 30


# --- rule 8: automated campaigns ------------------------------------------------------------------------

AUTOMATED = campaign(automated=True)


@pytest.mark.parametrize(
    ("f", "reasons"),
    [
        pytest.param(facts(campaign=AUTOMATED, consents=[consent(NOW - DAY, automated=True)]), (),
                     id="listed, automated consent"),
        pytest.param(facts(campaign=AUTOMATED, consents=[consent(NOW - DAY, automated=False)]),
                     (c.AUTOMATED_NO_CONSENT,), id="listed, live-call consent only"),
        pytest.param(facts(campaign=AUTOMATED, consents=[consent(NOW - 2 * DAY, automated=True, revoked_at=NOW - DAY),
                                                         consent(NOW - DAY, id=202)]),
                     (c.AUTOMATED_NO_CONSENT,), id="automated consent revoked, live-call consent left"),
        pytest.param(facts(campaign=AUTOMATED, listing=UNLISTED, consents=[consent(NOW - DAY, automated=True)]), (),
                     id="unlisted, automated consent satisfies both"),
        pytest.param(facts(campaign=AUTOMATED, rpo=left_register(),
                           consents=[consent(REGISTERED_ON - DAY, automated=True)]),
                     (c.AUTOMATED_NO_CONSENT,), id="automated consent revoked by an earlier registration"),
        pytest.param(facts(campaign=AUTOMATED, rpo=left_register(),
                           consents=[consent(REGISTERED_ON - DAY, automated=True)],
                           contracts=[contract(date(2025, 1, 1))]),
                     (), id="same, given within a live contract: saved"),
        pytest.param(facts(campaign=AUTOMATED, rpo=left_register(),
                           consents=[consent(REGISTERED_ON - DAY, automated=True)], contracts=[contract(TODAY)]),
                     (c.AUTOMATED_NO_CONSENT,), id="same, but given before the contract began: not saved"),
        pytest.param(facts(campaign=AUTOMATED, rpo=registered(), contracts=[contract(date(2025, 1, 1))]),
                     (c.RPO_REGISTERED, c.AUTOMATED_NO_CONSENT),
                     id="registered with contract: a contract is neither a basis nor automated consent"),
        pytest.param(facts(campaign=AUTOMATED, rpo=registered(),
                           consents=[consent(REGISTERED_ON - DAY), consent(rome(2025, 3, 1), id=203, automated=True)],
                           contracts=[contract(date(2025, 1, 1))]),
                     (), id="registered: an automated consent saved by the contract carries rules 6 and 8"),
        pytest.param(facts(campaign=AUTOMATED, rpo=registered(),
                           consents=[consent(REGISTERED_ON + DAY, automated=True)]),
                     (), id="registered, automated consent after registration"),
        pytest.param(facts(campaign=AUTOMATED, rpo=registered(),
                           consents=[consent(REGISTERED_ON - DAY, automated=True)]),
                     (c.RPO_REGISTERED, c.AUTOMATED_NO_CONSENT), id="registered, automated consent before it"),
    ],
)
def test_automated_campaign(f: Facts, reasons: tuple[str, ...]) -> None:
    assert blocks(f) == reasons


# --- rule 9 through decide: the calendar's boundaries reach the decision ----------------------------------


@pytest.mark.parametrize(
    ("at", "open_"),
    [
        pytest.param(rome(2026, 5, 12, 8, 59), False, id="Tue 08:59"),
        pytest.param(rome(2026, 5, 12, 9, 0), True, id="Tue 09:00"),
        pytest.param(rome(2026, 5, 12, 19, 59), True, id="Tue 19:59"),
        pytest.param(rome(2026, 5, 12, 20, 0), False, id="Tue 20:00"),
        pytest.param(rome(2026, 5, 16, 9, 59), False, id="Sat 09:59"),
        pytest.param(rome(2026, 5, 16, 10, 0), True, id="Sat 10:00"),
        pytest.param(rome(2026, 5, 16, 18, 59), True, id="Sat 18:59"),
        pytest.param(rome(2026, 5, 16, 19, 0), False, id="Sat 19:00"),
        pytest.param(rome(2025, 12, 24, 9, 59), False, id="24 Dec 09:59"),
        pytest.param(rome(2025, 12, 24, 10, 0), True, id="24 Dec 10:00"),
        pytest.param(rome(2025, 12, 31, 18, 59), True, id="31 Dec 18:59"),
        pytest.param(rome(2025, 12, 31, 19, 0), False, id="31 Dec 19:00"),
        pytest.param(rome(2026, 8, 14, 19, 0), False, id="14 Aug 2026 19:00"),
        pytest.param(rome(2026, 4, 24, 19, 30), False, id="Fri 24 Apr 2026 19:30 (before a Saturday holiday)"),
        pytest.param(rome(2026, 5, 17, 12, 0), False, id="Sunday"),
        pytest.param(rome(2026, 4, 25, 12, 0), False, id="25 Apr 2026"),
        pytest.param(rome(2026, 6, 2, 12, 0), False, id="2 Jun 2026"),
        pytest.param(rome(2026, 4, 6, 12, 0), False, id="Easter Monday 2026"),
        pytest.param(rome(2027, 10, 4, 12, 0), False, id="Mon 4 Oct 2027"),
        pytest.param(rome(2025, 10, 4, 12, 0), True, id="Sat 4 Oct 2025: not a holiday yet"),
        pytest.param(rome(2025, 10, 3, 19, 30), True, id="Fri 3 Oct 2025 19:30: not a pre-holiday"),
        pytest.param(utc(2026, 3, 30, 7, 0), True, id="Mon after DST starts, 07:00Z = 09:00"),
        pytest.param(utc(2026, 10, 26, 7, 59), False, id="Mon after DST ends, 07:59Z = 08:59"),
    ],
)
def test_hours_through_decide(at: datetime, open_: bool) -> None:
    f = facts(rpo=checked(at - DAY))
    assert blocks(f, call(at)) == (() if open_ else (c.OUTSIDE_HOURS,))


# --- what an ALLOW carries --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("f", "basis", "evidence"),
    [
        pytest.param(facts(), c.BASIS_LISTED, {"rpo_result_id": 101, "listing_import_id": 501}, id="listed"),
        pytest.param(facts(listing=UNLISTED, consents=[consent(NOW - DAY, id=211)]), c.BASIS_CONSENT,
                     {"consent_id": 211, "consent_evidence": "rec-211.wav"}, id="unlisted: consent"),
        pytest.param(facts(campaign=AUTOMATED, consents=[consent(NOW - DAY, id=212, automated=True)]),
                     c.BASIS_CONSENT, {"consent_id": 212, "listing_import_id": 501}, id="listed automated: consent"),
        pytest.param(facts(rpo=registered(), consents=[consent(REGISTERED_ON + DAY, id=213)]), c.BASIS_CONSENT,
                     {"consent_id": 213, "rpo_registered": True}, id="registered: post-registration consent"),
        pytest.param(facts(rpo=registered(), consents=[consent(date_in_2025(), id=210)],
                           contracts=[contract(date(2025, 1, 1), id=311)]), c.BASIS_CONTRACT,
                     {"contract_id": 311, "consent_id": 210, "rpo_registered": True},
                     id="registered: a consent given within the contract"),
        pytest.param(facts(rpo=registered(), consents=[consent(REGISTERED_ON - DAY)],
                           contracts=[contract(date(2025, 1, 1), id=312)]),
                     c.BASIS_CONTRACT, {"contract_id": 312}, id="registered: old consent, the contract saves it"),
        pytest.param(facts(rpo=registered(), consents=[consent(REGISTERED_ON - DAY, id=223),
                                                       consent(REGISTERED_ON + DAY, id=224)],
                           contracts=[contract(date(2025, 1, 1), id=314)]),
                     c.BASIS_CONSENT, {"consent_id": 224}, id="registered: a post-registration consent is preferred"),
        pytest.param(facts(rpo=registered(), listing=UNLISTED, consents=[consent(REGISTERED_ON - DAY, id=214)],
                           contracts=[contract(date(2025, 1, 1), id=313)]),
                     c.BASIS_CONTRACT, {"contract_id": 313, "consent_id": 214},
                     id="registered unlisted: contract + kept consent, both cited"),
        pytest.param(facts(rpo=left_register(), listing=UNLISTED, consents=[consent(REGISTERED_ON + DAY, id=215)]),
                     c.BASIS_CONSENT, {"consent_id": 215, "rpo_registered": False}, id="left the register: consent"),
        pytest.param(facts(listing=UNLISTED, consents=[consent(NOW - 3 * DAY, id=216), consent(NOW - DAY, id=217),
                                                       consent(NOW - 2 * DAY, id=218)]),
                     c.BASIS_CONSENT, {"consent_id": 217}, id="several consents: the latest is cited"),
        pytest.param(facts(campaign=AUTOMATED, listing=UNLISTED,
                           consents=[consent(NOW - 3 * DAY, id=219, automated=True), consent(NOW - DAY, id=220)]),
                     c.BASIS_CONSENT, {"consent_id": 219}, id="automated: the automated consent is cited"),
        pytest.param(facts(listing=UNLISTED, consents=[consent(NOW - 3 * DAY, id=221),
                                                       consent(NOW - DAY, id=222, revoked_at=NOW - MINUTE)]),
                     c.BASIS_CONSENT, {"consent_id": 221}, id="a revoked consent is never cited"),
        pytest.param(facts(campaign=campaign(max_attempts=3, per_days=7), recent_allows=2), c.BASIS_LISTED,
                     {"recent_allows": 2}, id="cap: the count is in the evidence"),
    ],
)
def test_allow_basis_and_evidence(f: Facts, basis: str, evidence: dict[str, object]) -> None:
    d = decide(f, call())
    assert (d.decision, d.reasons, d.basis) == (c.ALLOW, (), basis)
    assert {k: d.evidence.get(k) for k in evidence} == evidence
    assert f.rpo is not None
    assert d.evidence["rpo_result_id"] == f.rpo.result_id
    if basis == c.BASIS_LISTED:
        assert "consent_id" not in d.evidence
        assert "contract_id" not in d.evidence


def test_evidence_on_block() -> None:
    f = facts(rpo=registered(at=rome(2026, 5, 10, 8, 0)), optouts=[refusal(id=411), refusal(NOW + DAY, id=412)])
    d = decide(f, call())
    assert d.decision == c.BLOCK
    assert d.basis is None
    assert d.evidence["optout_id"] == 411
    assert d.evidence["rpo_result_id"] == 101
    assert d.evidence["rpo_registered"] is True
    assert d.evidence["rpo_checked_at"] == "2026-05-10T06:00:00.000000Z"
    assert "consent_id" not in d.evidence


def test_the_refusal_that_applies_is_cited() -> None:
    f = facts(optouts=[refusal(principal=OTHER_PRINCIPAL, id=421), refusal(NOW + DAY, id=422),
                       refusal(principal=None, id=423)])
    assert decide(f, call()).evidence["optout_id"] == 423


def test_caller_id_checked_flag_is_carried() -> None:
    assert decide(facts(), call()).caller_id_checked is True
    assert decide(facts(), call(caller_id_checked=False)).caller_id_checked is False


def test_decide_is_pure() -> None:
    f, ctx = EVERYTHING_WRONG, call(rome(2026, 5, 17, 23, 0), caller_id=None)
    assert decide(f, ctx) == decide(f, ctx)
    ok = facts(listing=UNLISTED, consents=[consent(NOW - DAY)])
    assert decide(ok, call()) == decide(ok, call())


# --- properties over arbitrary facts ----------------------------------------------------------------------

REF = datetime(2026, 5, 12, 9, 0, tzinfo=UTC)
PRINCIPALS = [PRINCIPAL, OTHER_PRINCIPAL]
CALLERS = [CALLER, UNDECLARED_CALLER]
NUMBER_CODES = [c.INVALID_NUMBER, c.FOREIGN_NUMBER, c.UNSUPPORTED_NUMBER_TYPE]

# Mostly within a few weeks of REF (where the rules interact), sometimes years away; always UTC, as stored.
near = st.integers(-60 * 24 * 60, 60 * 24 * 60).map(lambda m: REF + timedelta(minutes=m))
far = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2032, 12, 31), timezones=st.just(UTC))
moments = st.one_of(near, near, far)
days = moments.map(lambda t: t.astimezone(ROME).date())
ids = st.integers(1, 10_000)

campaigns = st.builds(
    CampaignFacts, id=st.just("c1"), principal_id=st.sampled_from(PRINCIPALS), automated=st.booleans(),
    max_attempts=st.none() | st.integers(0, 5), per_days=st.none() | st.integers(0, 30),
    declared_caller_ids=st.frozensets(st.sampled_from(CALLERS), max_size=2),
)
rpos = st.builds(
    RpoFacts, result_id=ids, checked_at=moments, registered=st.booleans(), registered_at=st.none() | moments,
    import_id=st.none() | ids, registration_bound=st.none() | moments,
)
consents = st.builds(
    ConsentFacts, id=ids, given_at=moments, evidence=st.just("ref"), automated=st.booleans(),
    expires_at=st.none() | moments, revoked_at=st.none() | moments, purpose=st.none() | st.just("marketing"),
)
contracts = st.builds(ContractFacts, id=ids, start=days, end=st.none() | days)
optouts = st.builds(OptoutFacts, id=ids, principal_id=st.none() | st.sampled_from(PRINCIPALS), at=moments)
all_facts = st.builds(
    Facts, number=st.just(NUMBER), line_type=st.sampled_from([c.LINE_MOBILE, c.LINE_FIXED]),
    campaign=st.none() | campaigns, rpo=st.none() | rpos, listing=st.none() | st.builds(ListingFacts, ids),
    consents=st.lists(consents, max_size=3, unique_by=lambda k: k.id).map(tuple),
    contracts=st.lists(contracts, max_size=2, unique_by=lambda k: k.id).map(tuple),
    optouts=st.lists(optouts, max_size=2).map(tuple), recent_allows=st.integers(0, 6),
)
contexts = st.builds(
    CallContext, at=moments, number_error=st.none() | st.sampled_from(NUMBER_CODES),
    caller_id_checked=st.booleans(), caller_id=st.none() | st.sampled_from(CALLERS),
    rpo_validity_days=st.integers(1, 30),
)


@PROPERTY
@given(all_facts, contexts)
def test_decide_never_raises_and_is_well_formed(f: Facts, ctx: CallContext) -> None:
    d = decide(f, ctx)
    assert isinstance(d, Decision)
    assert d == decide(f, ctx)  # deterministic
    assert d.decision in (c.ALLOW, c.BLOCK)
    assert set(d.reasons) <= set(c.REASON_CODES)
    assert c.ENGINE_ERROR not in d.reasons
    assert len(set(d.reasons)) == len(d.reasons)
    index = {code: i for i, code in enumerate(c.REASON_CODES)}
    assert list(d.reasons) == sorted(d.reasons, key=index.__getitem__)
    assert (d.reasons == ()) is (d.decision == c.ALLOW)
    assert (d.basis is not None) is (d.decision == c.ALLOW)
    assert d.basis in (None, c.BASIS_LISTED, c.BASIS_CONSENT, c.BASIS_CONTRACT)
    assert d.primary_reason == (d.reasons[0] if d.reasons else None)
    assert d.caller_id_checked is ctx.caller_id_checked
    if ctx.number_error:
        assert d.reasons[0] == ctx.number_error
        assert set(d.reasons) <= {ctx.number_error, c.UNKNOWN_CAMPAIGN, c.OUTSIDE_HOURS, c.CALLER_ID_INVALID}
    if f.campaign is None:
        assert c.UNKNOWN_CAMPAIGN in d.reasons
        # Without a campaign there is no principal, and every one of these needs it (RPO answers included).
        assert not set(d.reasons) & {c.RPO_NOT_CHECKED, c.RPO_EXPIRED, c.RPO_REGISTERED, c.UNLISTED_NO_CONSENT,
                                     c.AUTOMATED_NO_CONSENT, c.CALLER_ID_INVALID, c.ATTEMPT_LIMIT}


# A callable setting (fresh check, working hours, no refusal, caller ID not checked, no cap) in which only
# rules 6-8 decide, so that ALLOW and BLOCK are both common; checked against the lead's semantics as plain code.
CALL_AT = NOW.astimezone(UTC)
consent_rules_facts = st.builds(
    Facts, number=st.just(NUMBER), line_type=st.just(c.LINE_MOBILE), campaign=campaigns,
    rpo=st.builds(RpoFacts, result_id=ids, checked_at=st.integers(0, 14 * 24 * 60).map(lambda m: CALL_AT - MINUTE * m),
                  registered=st.booleans(), registered_at=st.none() | near, import_id=st.none(),
                  registration_bound=st.none() | near),
    listing=st.none() | st.builds(ListingFacts, ids),
    consents=st.lists(consents, max_size=3, unique_by=lambda k: k.id).map(tuple),
    contracts=st.lists(contracts, max_size=2, unique_by=lambda k: k.id).map(tuple),
)


def whole_day_if_date(moment: datetime) -> datetime:
    """A stored date (00:00 Rome) as the last microsecond of its day; any other moment as it is."""
    local = moment.astimezone(ROME)
    if (local.hour, local.minute, local.second, local.microsecond) != (0, 0, 0, 0):
        return moment
    return datetime(local.year, local.month, local.day, tzinfo=ROME) + DAY - MICRO


def lead_semantics(f: Facts, at: datetime) -> tuple[tuple[str, ...], str | None]:
    """Rules 6-8 and the basis as the lead wrote them down, independently of rules.py."""
    assert f.campaign is not None and f.rpo is not None
    day = at.astimezone(ROME).date()
    live = [k for k in f.consents
            if k.given_at <= at and all(at < end for end in (k.expires_at, k.revoked_at) if end is not None)]
    alive = [k for k in f.contracts if k.start <= day and (k.end is None or day <= k.end + timedelta(days=30))]
    bound = f.rpo.registration_bound
    if bound is None and f.rpo.registered:
        # Fail closed on inconsistent facts: the answer's own dates bound the registration, dates whole.
        bound = max(whole_day_if_date(t) for t in (f.rpo.checked_at, f.rpo.registered_at) if t is not None)
    after = [k for k in live if bound is None or k.given_at > bound]

    def within_a_contract(k: ConsentFacts) -> bool:
        given = k.given_at.astimezone(ROME).date()
        return any(x.start <= given and (x.end is None or given <= x.end) for x in alive)

    saved = [k for k in live if k not in after and within_a_contract(k)]
    usable = after + saved
    reasons = []
    if f.rpo.registered and not usable:
        reasons.append(c.RPO_REGISTERED)
    if f.listing is None and not usable:
        reasons.append(c.UNLISTED_NO_CONSENT)
    if f.campaign.automated and not any(k.automated for k in usable):
        reasons.append(c.AUTOMATED_NO_CONSENT)
    if reasons:
        return tuple(reasons), None
    if f.listing is not None and not f.campaign.automated and not f.rpo.registered:
        return (), c.BASIS_LISTED
    qualifying = [k for k in usable if k.automated or not f.campaign.automated]
    if any(k in after for k in qualifying):
        return (), c.BASIS_CONSENT
    return (), c.BASIS_CONTRACT


@PROPERTY
@given(consent_rules_facts)
def test_consent_rules_match_the_lead_semantics(f: Facts) -> None:
    assert f.campaign is not None
    f = replace(f, campaign=replace(f.campaign, max_attempts=None))
    d = decide(f, call(CALL_AT, caller_id_checked=False))
    assert (d.reasons, d.basis) == lead_semantics(f, CALL_AT)
    if d.basis == c.BASIS_CONTRACT:
        # The contract that saved the consent cited: the consent was given within it.
        saver = next(k for k in f.contracts if k.id == d.evidence["contract_id"])
        cited = next(k for k in f.consents if k.id == d.evidence["consent_id"])
        given = cited.given_at.astimezone(ROME).date()
        assert saver.start <= given and (saver.end is None or given <= saver.end)
    if d.basis in (c.BASIS_CONSENT, c.BASIS_CONTRACT):
        cited = next(k for k in f.consents if k.id == d.evidence["consent_id"])
        assert cited.given_at <= CALL_AT
        if f.campaign is not None and f.campaign.automated:
            assert cited.automated


@PROPERTY
@given(all_facts, contexts, st.sampled_from([UTC, timezone(timedelta(hours=-5)), timezone(timedelta(hours=9))]))
def test_decision_depends_on_the_instant_not_its_offset(f: Facts, ctx: CallContext, zone: timezone) -> None:
    moved = replace(ctx, at=ctx.at.astimezone(zone))
    assert decide(f, moved) == decide(f, ctx)


@PROPERTY
@given(all_facts, contexts)
def test_rome_and_utc_call_times_agree_away_from_dst_folds(f: Facts, ctx: CallContext) -> None:
    if f.rpo is not None:
        expiry = f.rpo.checked_at.astimezone(ROME) + timedelta(days=ctx.rpo_validity_days)
        assume(expiry.utcoffset() == expiry.replace(fold=1 - expiry.fold).utcoffset())
    assert decide(f, replace(ctx, at=ctx.at.astimezone(ROME))) == decide(f, ctx)


@PROPERTY
@given(all_facts, contexts)
def test_more_facts_against_never_unblock(f: Facts, ctx: CallContext) -> None:
    # Adding a refusal for everyone, in the past, always blocks with optout (unless the number is invalid).
    d = decide(replace(f, optouts=(*f.optouts, OptoutFacts(9999, None, ctx.at - DAY))), ctx)
    assert d.decision == c.BLOCK
    if not ctx.number_error:
        assert c.OPTOUT in d.reasons


@pytest.mark.parametrize(
    ("checked_at", "expected"),
    [
        pytest.param(NOW, (), id="checked at the very call time: valid"),
        pytest.param(NOW + MINUTE, (c.RPO_NOT_CHECKED,), id="checked after the call: no evidence at call time"),
    ],
)
def test_an_answer_from_after_the_call_is_no_evidence_for_it(checked_at: datetime, expected: tuple[str, ...]) -> None:
    assert blocks(facts(rpo=checked(checked_at))) == expected
