"""policy/rpo.py: what one principal's RPO answers say at a given moment, and a registration bound that
never favours the call.

Each test is a scenario a compliance lawyer would put: the answers the principal imported, the moment of the
call, and what the gate must conclude. The decisions go through `decide`, so the rules and the summary are
judged together.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from rpoguard import constants as c
from rpoguard.policy import (
    CallContext,
    CampaignFacts,
    ConsentFacts,
    Facts,
    ListingFacts,
    RpoAnswerFacts,
    decide,
    summarize_rpo,
)
from rpoguard.policy.rpo import latest_moment_of
from rpoguard.timeutil import ROME, parse_time

MICRO = timedelta(microseconds=1)
NUMBER = "+393331234567"
CAMPAIGN = CampaignFacts("autunno", "acme", False, None, None, frozenset())


def t(text: str) -> datetime:
    return parse_time(text)


def answer(checked: str, registered: bool, registered_at: str | None = None, rid: int = 0) -> RpoAnswerFacts:
    return RpoAnswerFacts(rid, t(checked), registered, t(registered_at) if registered_at else None, 1)


def history(*answers: RpoAnswerFacts) -> list[RpoAnswerFacts]:
    # Ids in import order, as the store gives them.
    return [RpoAnswerFacts(i + 1, a.checked_at, a.registered, a.registered_at, a.import_id)
            for i, a in enumerate(answers)]


def decide_at(answers: list[RpoAnswerFacts], at: str, consents: tuple[ConsentFacts, ...] = (),
              listed: bool = True) -> tuple[str, ...]:
    moment = t(at)
    facts = Facts(NUMBER, c.LINE_MOBILE, CAMPAIGN, summarize_rpo(answers, moment),
                  ListingFacts(1) if listed else None, consents)
    return decide(facts, CallContext(moment, caller_id_checked=False)).reasons


def consent_at(text: str) -> ConsentFacts:
    return ConsentFacts(1, t(text), "rec:1", False)


# -- a date stands for its whole day as a bound -------------------------------------------------------------


@pytest.mark.parametrize(
    ("moment", "bound"),
    [
        pytest.param("2026-11-20", "2026-11-20T23:59:59.999999", id="a date: its last microsecond"),
        pytest.param("2026-11-20T00:00:00.000001", "2026-11-20T00:00:00.000001", id="a time just after midnight"),
        pytest.param("2026-11-20T10:00", "2026-11-20T10:00", id="a time: itself"),
        pytest.param("2026-03-29", "2026-03-29T23:59:59.999999", id="the day DST starts (23 hours long)"),
        pytest.param("2026-10-25", "2026-10-25T23:59:59.999999", id="the day DST ends (25 hours long)"),
        pytest.param("2026-11-19T23:00:00+00:00", "2026-11-20T23:59:59.999999",
                     id="midnight Rome written in UTC is still a date"),
    ],
)
def test_latest_moment_of(moment: str, bound: str) -> None:
    assert latest_moment_of(t(moment)) == t(bound)


def test_a_consent_on_the_day_of_a_date_only_registration_cannot_be_shown_to_follow_it() -> None:
    # Checked at 16:00 on the 20th: "registered since 20 November", no time given.
    answers = history(answer("2026-11-20T16:00", True, registered_at="2026-11-20"))
    # The call on 26 November; consents given on the 20th at 10:00 and at 23:59:59, and at 00:00 on the 21st.
    assert decide_at(answers, "2026-11-26T11:00", (consent_at("2026-11-20T10:00"),)) == (c.RPO_REGISTERED,)
    assert decide_at(answers, "2026-11-26T11:00", (consent_at("2026-11-20T23:59:59"),)) == (c.RPO_REGISTERED,)
    assert decide_at(answers, "2026-11-26T11:00", (consent_at("2026-11-21T00:00"),)) == ()


def test_a_consent_on_the_day_of_the_first_date_only_registered_check() -> None:
    # No registered_at: the first "registered" check (a date) bounds the registration at the end of its day.
    answers = history(answer("2026-11-20", True), answer("2026-11-24", True))
    assert decide_at(answers, "2026-11-26T11:00", (consent_at("2026-11-20T10:00"),)) == (c.RPO_REGISTERED,)
    assert decide_at(answers, "2026-11-26T11:00", (consent_at("2026-11-21T09:00"),)) == ()


def test_the_bound_is_the_later_of_registered_at_and_the_first_registered_check() -> None:
    # The RPO says registered since 1 October; our first check saying so was on 10 November at 15:00. A
    # renewal in between would have revoked a consent of 1 November, so it cannot carry the call.
    answers = history(answer("2026-11-10T15:00", True), answer("2026-11-24T09:00", True, registered_at="2026-10-01"))
    summary = summarize_rpo(answers, t("2026-11-26T11:00"))
    assert summary is not None
    assert summary.registration_bound == t("2026-11-10T15:00")
    assert decide_at(answers, "2026-11-26T11:00", (consent_at("2026-11-01T10:00"),)) == (c.RPO_REGISTERED,)
    assert decide_at(answers, "2026-11-26T11:00", (consent_at("2026-11-10T15:01"),)) == ()


def test_a_stale_registered_at_repeated_after_leaving_the_register_cannot_move_the_bound_back() -> None:
    answers = history(
        answer("2026-09-01T09:00", True, registered_at="2026-08-01"),
        answer("2026-10-01T09:00", False),
        # Registered again; the answer still carries the old date.
        answer("2026-11-05T09:00", True, registered_at="2026-08-01"),
    )
    summary = summarize_rpo(answers, t("2026-11-10T11:00"))
    assert summary is not None
    assert summary.registration_bound == t("2026-11-05T09:00")
    # A consent of October (after the first registration, before the second) was revoked by the second.
    assert decide_at(answers, "2026-11-10T11:00", (consent_at("2026-10-15T10:00"),)) == (c.RPO_REGISTERED,)


# -- decisions as of any moment: the latest answer checked at or before it --------------------------------


def test_an_answer_checked_after_the_moment_does_not_hide_the_one_before() -> None:
    answers = history(answer("2026-11-01T09:00", False), answer("2026-11-20T09:00", True))
    # On 10 November the principal held a valid "not registered" answer: a listed number may be called.
    assert decide_at(answers, "2026-11-10T11:00") == ()
    summary = summarize_rpo(answers, t("2026-11-10T11:00"))
    assert summary is not None
    assert (summary.checked_at, summary.registered, summary.registration_bound) == (t("2026-11-01T09:00"), False,
                                                                                    None)
    # On 21 November the newer answer applies.
    assert decide_at(answers, "2026-11-21T11:00") == (c.RPO_REGISTERED,)


def test_before_the_first_check_there_was_no_answer() -> None:
    answers = history(answer("2026-11-20T09:00", False))
    assert summarize_rpo(answers, t("2026-11-20T08:59")) is None
    assert decide_at(answers, "2026-11-19T11:00") == (c.RPO_NOT_CHECKED,)
    # At the check's own instant the answer exists.
    assert summarize_rpo(answers, t("2026-11-20T09:00")) is not None


def test_a_registration_learnt_after_the_moment_is_not_applied_to_it() -> None:
    # The world as it stood: on 10 November only "not registered" answers existed.
    answers = history(answer("2026-11-01T09:00", False), answer("2026-11-15T09:00", True))
    summary = summarize_rpo(answers, t("2026-11-10T11:00"))
    assert summary is not None
    assert summary.registration_bound is None


def test_an_older_file_imported_late_extends_the_run_backwards() -> None:
    # Ids follow import order; checks follow time. The run is judged in time order.
    answers = [
        RpoAnswerFacts(1, t("2026-11-05"), True, None, 1),
        RpoAnswerFacts(2, t("2026-10-20"), True, None, 2),
    ]
    summary = summarize_rpo(answers, t("2026-11-10T11:00"))
    assert summary is not None
    assert (summary.result_id, summary.registration_bound) == (1, latest_moment_of(t("2026-10-20")))


def test_the_summary_depends_on_the_instant_not_its_zone() -> None:
    answers = history(answer("2026-11-01T09:00", False), answer("2026-11-20T09:00", True))
    moment = t("2026-11-20T09:00")
    assert summarize_rpo(answers, moment) == summarize_rpo(answers, moment.astimezone(UTC))
    assert summarize_rpo(answers, moment - MICRO) == summarize_rpo(answers, (moment - MICRO).astimezone(ROME))
