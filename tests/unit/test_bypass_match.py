"""The matching rule of `watch` and `reconcile` (rpoguard.bypass.match): a trunk leg is covered only by an
ALLOW of its own call, for the number it dials, made shortly before it, used once; every other leg is a
bypass with the most specific reason. Also which channels are trunk legs, and how the dialled number is read.

Calls are written as Asterisk names them: a uniqueid per channel, the call's linkedid (the uniqueid of its
first channel) on every channel of the call.
"""

from __future__ import annotations

import pytest

from rpoguard.bypass.match import (
    SECOND_US,
    Allowed,
    Bypass,
    Covered,
    Matcher,
    TrunkLeg,
    TrunkPatterns,
    dialled_number,
)
from rpoguard.constants import (
    BYPASS_DECISION_STALE,
    BYPASS_DECISION_USED,
    BYPASS_NO_DECISION,
    BYPASS_NUMBER_UNKNOWN,
    BYPASS_OTHER_NUMBER,
)
from rpoguard.timeutil import parse_time, to_us

T0 = to_us(parse_time("2026-11-24T11:00"))
MAX_AGE = 60 * SECOND_US
SKEW = 2 * SECOND_US
NUM = "+393331234567"
OTHER = "+390645678901"
# One call: the agent's channel (first of the call, so its uniqueid is the linkedid), a Local channel pair
# the dialplan goes through, and the trunk channel.
AGENT = "1764000000.10"
LOCAL2 = "1764000000.12"
TRUNK = "1764000000.13"


def allow(decision_id: str, at_us: int, number: str = NUM, uniqueid: str | None = AGENT,
          linkedid: str | None = AGENT) -> Allowed:
    return Allowed(decision_id, at_us, number, uniqueid, linkedid)


def leg(at_us: int, number: str | None = NUM, caller: str | None = AGENT, linkedid: str | None = AGENT,
        uniqueid: str = TRUNK, until_us: int | None = None) -> TrunkLeg:
    return TrunkLeg(at_us=at_us, channel=f"PJSIP/carrier-{uniqueid[-2:]}", dialled=f"{number}@carrier",
                    number=number, caller_uniqueid=caller, linkedid=linkedid, uniqueid=uniqueid, until_us=until_us)


def matcher(*decisions: Allowed) -> Matcher:
    m = Matcher(max_age_us=MAX_AGE, skew_us=SKEW)
    m.add_all(decisions)
    return m


def covered_by(result: Covered | Bypass) -> str:
    assert isinstance(result, Covered), result
    return result.decision.decision_id


def bypass(result: Covered | Bypass) -> tuple[str, str | None]:
    assert isinstance(result, Bypass), result
    return result.why, result.decision_id


# -- the call's own decision --------------------------------------------------------------------------------


def test_a_gated_call_is_covered_by_its_decision() -> None:
    decision = allow("d1", T0)
    m = matcher(decision, allow("other-call", T0, uniqueid="1764000000.50", linkedid="1764000000.50"))
    trunk_leg = leg(T0 + SECOND_US // 2)
    result = m.match(trunk_leg)
    assert isinstance(result, Covered)
    assert (result.leg, result.decision) == (trunk_leg, decision)


def test_an_originate_straight_to_the_trunk_has_no_decision() -> None:
    # Originate puts the trunk channel first: no channel dialled it, and the call's linkedid is its own.
    m = matcher(allow("d1", T0))
    result = m.match(leg(T0, caller=None, linkedid=TRUNK))
    assert bypass(result) == (BYPASS_NO_DECISION, None)
    assert bypass(matcher().match(leg(T0))) == (BYPASS_NO_DECISION, None)


def test_a_decision_without_a_call_covers_nothing() -> None:
    # `rpoguard check` records decisions with neither uniqueid nor linkedid: no call may claim them.
    m = matcher(allow("cli", T0, uniqueid=None, linkedid=None), allow("empty", T0, uniqueid="", linkedid=""))
    assert bypass(m.match(leg(T0))) == (BYPASS_NO_DECISION, None)
    assert len(m) == 2


def test_a_decision_of_another_call_for_the_same_number_covers_nothing() -> None:
    m = matcher(allow("elsewhere", T0, uniqueid="1764000000.50", linkedid="1764000000.50"))
    assert bypass(m.match(leg(T0))) == (BYPASS_NO_DECISION, None)


# -- retries and reuse --------------------------------------------------------------------------------------


def test_retries_checked_again_are_each_covered_by_their_own_decision() -> None:
    first, second = allow("d1", T0), allow("d2", T0 + 30 * SECOND_US)
    # Both decisions known before either leg (as reconcile reads them): each leg takes the latest that fits.
    m = matcher(first, second)
    assert covered_by(m.match(leg(T0 + SECOND_US // 5))) == "d1"
    assert covered_by(m.match(leg(T0 + 30 * SECOND_US + SECOND_US // 5, uniqueid="1764000000.20"))) == "d2"
    # A third attempt the route did not check again.
    assert bypass(m.match(leg(T0 + 45 * SECOND_US, uniqueid="1764000000.30"))) == (BYPASS_DECISION_USED, "d2")


def test_the_latest_fitting_decision_is_used_first() -> None:
    m = matcher(allow("early", T0), allow("late", T0 + SECOND_US))
    assert covered_by(m.match(leg(T0 + 3 * SECOND_US // 2))) == "late"
    assert covered_by(m.match(leg(T0 + 2 * SECOND_US, uniqueid="1764000000.20"))) == "early"
    assert bypass(m.match(leg(T0 + 3 * SECOND_US, uniqueid="1764000000.30")))[0] == BYPASS_DECISION_USED


def test_a_retry_without_a_new_check_reuses_the_decision() -> None:
    m = matcher(allow("d1", T0))
    assert covered_by(m.match(leg(T0 + SECOND_US))) == "d1"
    assert bypass(m.match(leg(T0 + 20 * SECOND_US, uniqueid="1764000000.20"))) == (BYPASS_DECISION_USED, "d1")


def test_one_decision_never_covers_two_parallel_legs() -> None:
    # Dial(PJSIP/n@carrier-a&PJSIP/n@carrier-b) after one check: the second leg is not covered.
    m = matcher(allow("d1", T0))
    assert covered_by(m.match(leg(T0 + 1, uniqueid="1764000000.13"))) == "d1"
    assert bypass(m.match(leg(T0 + 1, uniqueid="1764000000.14"))) == (BYPASS_DECISION_USED, "d1")


def test_a_decision_added_twice_is_still_used_once() -> None:
    decision = allow("d1", T0)
    m = matcher(decision, decision)
    assert covered_by(m.match(leg(T0))) == "d1"
    m.add(decision)
    assert len(m) == 1
    assert bypass(m.match(leg(T0, uniqueid="1764000000.20")))[0] == BYPASS_DECISION_USED


# -- several channels of one call ---------------------------------------------------------------------------


def test_a_local_channel_chain_is_one_call() -> None:
    # The agent's channel asked; the trunk was dialled from Local/...;2, which shares only the linkedid.
    m = matcher(allow("d1", T0, uniqueid=AGENT, linkedid=AGENT))
    assert covered_by(m.match(leg(T0 + SECOND_US, caller=LOCAL2, linkedid=AGENT))) == "d1"
    # A second trunk leg of the same call, to a number nobody asked about.
    second = leg(T0 + 2 * SECOND_US, number=OTHER, caller=LOCAL2, linkedid=AGENT, uniqueid="1764000000.14")
    assert bypass(m.match(second)) == (BYPASS_OTHER_NUMBER, "d1")


def test_a_decision_on_the_calls_first_channel_without_linkedid() -> None:
    # An older dialplan passed no linkedid; the asking channel was the call's first, so its uniqueid is the
    # call's linkedid and the trunk leg names it.
    m = matcher(allow("d1", T0, uniqueid=AGENT, linkedid=None))
    assert covered_by(m.match(leg(T0 + SECOND_US, caller=LOCAL2, linkedid=AGENT))) == "d1"


def test_a_decision_asked_on_a_later_channel_is_found_through_the_linkedid() -> None:
    m = matcher(allow("d1", T0, uniqueid=LOCAL2, linkedid=AGENT))
    assert covered_by(m.match(leg(T0 + SECOND_US, caller=LOCAL2, linkedid=None))) == "d1"
    m = matcher(allow("d2", T0, uniqueid=LOCAL2, linkedid=AGENT))
    assert covered_by(m.match(leg(T0 + SECOND_US, caller="1764000000.99", linkedid=AGENT))) == "d2"


def test_two_calls_to_the_same_number_each_use_their_own_decision_in_either_order() -> None:
    call_a, call_b = "1764000000.10", "1764000000.40"
    for order in ((0, 1), (1, 0)):
        m = matcher(allow("a", T0, uniqueid=call_a, linkedid=call_a),
                    allow("b", T0 + SECOND_US, uniqueid=call_b, linkedid=call_b))
        legs = [leg(T0 + SECOND_US // 2, caller=call_a, linkedid=call_a, uniqueid="1764000000.11"),
                leg(T0 + 3 * SECOND_US // 2, caller=call_b, linkedid=call_b, uniqueid="1764000000.41")]
        got = {i: covered_by(m.match(legs[i])) for i in order}
        assert got == {0: "a", 1: "b"}, order


def test_a_second_call_without_its_own_check_is_not_covered_by_the_first_calls_decision() -> None:
    m = matcher(allow("a", T0, uniqueid="1764000000.10", linkedid="1764000000.10"))
    assert bypass(m.match(leg(T0, caller="1764000000.40", linkedid="1764000000.40"))) == (BYPASS_NO_DECISION, None)
    assert covered_by(m.match(leg(T0, caller="1764000000.10", linkedid="1764000000.10"))) == "a"


# -- time ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("decided_at", "covered"), [
    (T0 + SKEW, True),  # the PBX's clock ahead of the gate's by up to clock_skew
    (T0 + SKEW + 1, False),
    (T0 - MAX_AGE, True),
    (T0 - MAX_AGE - 1, False),
    (T0, True),
])
def test_clock_skew_and_max_age_bound_the_decision(decided_at: int, covered: bool) -> None:
    result = matcher(allow("d1", decided_at)).match(leg(T0))
    if covered:
        assert covered_by(result) == "d1"
    else:
        assert bypass(result) == (BYPASS_DECISION_STALE, "d1")


def test_a_cdr_leg_counts_decisions_up_to_its_end() -> None:
    # A CDR spans the call: its start may be well before the dial, so a decision made before its end still
    # came before the dial; decisions older than max_age before its start still do not count.
    start, end = T0, T0 + 120 * SECOND_US
    assert covered_by(matcher(allow("d1", T0 + 90 * SECOND_US)).match(leg(start, until_us=end))) == "d1"
    assert covered_by(matcher(allow("d1", end + SKEW)).match(leg(start, until_us=end))) == "d1"
    assert bypass(matcher(allow("d1", end + SKEW + 1)).match(leg(start, until_us=end)))[0] == BYPASS_DECISION_STALE
    assert bypass(matcher(allow("d1", start - MAX_AGE - 1)).match(leg(start, until_us=end)))[0] == (
        BYPASS_DECISION_STALE)
    # Without until_us the same decision is too late.
    assert bypass(matcher(allow("d1", T0 + 90 * SECOND_US)).match(leg(start)))[0] == BYPASS_DECISION_STALE


# -- which reason ---------------------------------------------------------------------------------------------


def test_an_unreadable_number_matches_no_decision() -> None:
    m = matcher(allow("d1", T0))
    assert bypass(m.match(leg(T0, number=None))) == (BYPASS_NUMBER_UNKNOWN, "d1")
    # The decision was not spent on it.
    assert covered_by(m.match(leg(T0, uniqueid="1764000000.20"))) == "d1"


def test_the_most_specific_reason_wins() -> None:
    other = allow("other", T0, number=OTHER)
    stale = allow("stale", T0 - 2 * MAX_AGE)
    used = allow("used", T0 - SECOND_US)
    assert bypass(matcher(other).match(leg(T0))) == (BYPASS_OTHER_NUMBER, "other")
    assert bypass(matcher(other, stale).match(leg(T0))) == (BYPASS_DECISION_STALE, "stale")
    assert bypass(matcher(stale, other).match(leg(T0))) == (BYPASS_DECISION_STALE, "stale")
    m = matcher(used, stale, other)
    assert covered_by(m.match(leg(T0))) == "used"
    assert bypass(m.match(leg(T0, uniqueid="1764000000.20"))) == (BYPASS_DECISION_USED, "used")


def test_among_equal_reasons_the_nearest_decision_is_named() -> None:
    far, near = allow("far", T0 - 3 * MAX_AGE), allow("near", T0 - 2 * MAX_AGE)
    after = allow("after", T0 + 10 * MAX_AGE)
    for order in ((far, near, after), (after, near, far)):
        assert bypass(matcher(*order).match(leg(T0))) == (BYPASS_DECISION_STALE, "near")


# -- memory -------------------------------------------------------------------------------------------------


def test_forget_before_keeps_memory_bounded() -> None:
    m = matcher()
    calls = 10_000
    for i in range(calls):
        at = T0 + i * SECOND_US
        call = f"1764000000.{i}"
        m.add(allow(f"d{i}", at, uniqueid=call, linkedid=call))
        assert covered_by(m.match(leg(at + 1, caller=call, linkedid=call, uniqueid=f"{call}.t"))) == f"d{i}"
        m.forget_before(at - MAX_AGE)
    assert len(m) == MAX_AGE // SECOND_US + 1
    # Every index shrinks with it: the call keys and the used marks of what was forgotten.
    assert len(m._by_call) == len(m)
    assert len(m._used) == len(m)


def test_a_forgotten_decision_covers_nothing_even_when_read_again() -> None:
    decision = allow("d1", T0)
    m = matcher(decision)
    assert covered_by(m.match(leg(T0))) == "d1"
    m.forget_before(T0 + 1)
    assert len(m) == 0
    assert bypass(m.match(leg(T0, uniqueid="1764000000.20"))) == (BYPASS_NO_DECISION, None)
    # Read again (an overlapping read of the log): its used mark is gone, so it must stay out.
    m.add(decision)
    assert len(m) == 0
    assert bypass(m.match(leg(T0, uniqueid="1764000000.20"))) == (BYPASS_NO_DECISION, None)
    # A horizon never moves back; decisions after it are kept.
    m.forget_before(T0 - MAX_AGE)
    m.add(allow("d0", T0))
    assert len(m) == 0
    m.add(allow("d2", T0 + 1))
    assert covered_by(m.match(leg(T0 + 1, uniqueid="1764000000.30"))) == "d2"


def test_forget_before_keeps_what_a_later_leg_may_still_use() -> None:
    m = matcher(allow("old", T0 - 1), allow("d1", T0), allow("d2", T0 + 1, uniqueid="1764000000.50",
                                                                linkedid="1764000000.50"))
    m.forget_before(T0)
    assert len(m) == 2
    assert covered_by(m.match(leg(T0 + SECOND_US))) == "d1"


# -- which channels are trunk legs ----------------------------------------------------------------------------


def test_trunk_patterns_pick_the_carrier_channels_only() -> None:
    trunks = TrunkPatterns(["PJSIP/carrier-*", "SIP/backup.it-*"])
    assert trunks
    assert trunks.match("PJSIP/carrier-0000000d")
    assert trunks.match("SIP/backup.it-00000001")
    for channel in ("Local/+393331234567@rpoguard-out-00000001;2", "PJSIP/agent-0000000a", "PJSIP/carrier",
                    "PJSIP/carrier2-00000001", "SIP/backupXit-00000001", "pjsip/carrier-0000000d",
                    "X-PJSIP/carrier-0000000d", ""):
        assert not trunks.match(channel), channel
    # Nothing configured: nothing is a trunk (watch and reconcile refuse to run on that).
    empty = TrunkPatterns([])
    assert not empty
    assert not empty.match("PJSIP/carrier-0000000d")
    assert TrunkPatterns(["PJSIP/carrier-0000000?"]).match("PJSIP/carrier-0000000d")
    assert not TrunkPatterns(["PJSIP/carrier-0000000?"]).match("PJSIP/carrier-0000000dd")


# -- what the trunk dialled -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("dialled", "prefix", "number"), [
    ("+393331234567@carrier", "", NUM),
    ("+393331234567", "", NUM),
    ("3331234567", "", NUM),
    ("0645678901", "", OTHER),
    ("00390645678901@carrier", "", OTHER),
    ("carrier/sip:+393331234567@sip.carrier.it", "", NUM),
    ("carrier/sip:0645678901@sip.carrier.it:5060;transport=tcp", "", OTHER),
    ("PJSIP/carrier/sip:3331234567@10.0.0.1", "", NUM),
    ("sip:+393331234567@sip.carrier.it", "", NUM),
    ("SIP:+393331234567@sip.carrier.it", "", NUM),
    ("sips:+393331234567@sip.carrier.it", "", NUM),
    ("tel:+39-333-123-4567", "", NUM),
    ("tel:+393331234567;phone-context=+39", "", NUM),
    ("+393331234567;user=phone@carrier", "", NUM),
    ("trunk/0645678901", "", OTHER),  # chan_sip, IAX2
    ("user:secret@peer/3331234567", "", NUM),  # IAX2 with credentials
    ("  +39 333 123 4567@carrier ", "", NUM),
    ("93331234567@carrier", "9", NUM),  # the PBX's trunk-access prefix, stripped once
    ("9+393331234567", "9", NUM),
    ("+393331234567@carrier", "9", NUM),  # without the prefix: read as it is
    ("", "", None),
    ("   ", "", None),
    ("carrier/", "", None),
    ("carrier/sip:sip.carrier.it", "", None),
    ("@carrier", "", None),
    ("s@rpoguard-out", "", None),
    ("anonymous@carrier", "", None),
    ("12", "", None),
    ("+4930123456@carrier", "", None),  # not Italian
    ("800123456@carrier", "", None),  # toll-free: not a number the gate decides on
    ("+39333\x00@carrier", "", None),
])
def test_dialled_number_forms(dialled: str, prefix: str, number: str | None) -> None:
    assert dialled_number(dialled, prefix) == number
