"""The matching rule shared by `watch` and `reconcile`: a trunk leg is covered by an ALLOW decision for the
same call, the same number, made shortly before, and not already used by another leg (docs/bypass.md).

Pure and in memory: the callers feed decisions in (from the store) and legs (from AMI events or CDR/CEL
rows), and evict what has aged out so memory stays bounded over a month of records.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass

from rpoguard.constants import (
    BYPASS_DECISION_STALE,
    BYPASS_DECISION_USED,
    BYPASS_NO_DECISION,
    BYPASS_NUMBER_UNKNOWN,
    BYPASS_OTHER_NUMBER,
)
from rpoguard.numbers import NumberError, normalize, normalize_fast

SECOND_US = 1_000_000


@dataclass(frozen=True, slots=True)
class Allowed:
    """An ALLOW decision as the matcher needs it."""

    decision_id: str
    at_us: int
    number: str  # E.164, as the gate told the dialplan to dial it
    uniqueid: str | None  # the channel that asked (agi_uniqueid, the ARI channel id)
    linkedid: str | None  # the call it belongs to, when the dialplan passed it


@dataclass(frozen=True, slots=True)
class TrunkLeg:
    """A channel that reached a carrier: an outbound leg on a trunk."""

    at_us: int  # when it began (live: when the dial was seen; CDR: the record's start)
    channel: str  # the trunk channel's name, e.g. PJSIP/carrier-00000003
    dialled: str  # what the trunk was asked to dial, as Asterisk reported it ("" when it did not say)
    number: str | None  # `dialled` in E.164, None when it cannot be read
    caller_uniqueid: str | None = None  # the channel that dialled it; None for an originate straight to it
    linkedid: str | None = None
    uniqueid: str | None = None  # the trunk leg's own
    # A record that spans the call (CDR): a decision up to its end still came before the dial.
    until_us: int | None = None


@dataclass(frozen=True, slots=True)
class Bypass:
    leg: TrunkLeg
    why: str  # a BYPASS_* code
    decision_id: str | None = None  # the nearest decision of the call, when there was one


@dataclass(frozen=True, slots=True)
class Covered:
    leg: TrunkLeg
    decision: Allowed


# The most specific reason wins: a leg whose call asked for this very number is explained by that.
_WHY_RANK = {BYPASS_NO_DECISION: 0, BYPASS_NUMBER_UNKNOWN: 1, BYPASS_OTHER_NUMBER: 2, BYPASS_DECISION_STALE: 3,
             BYPASS_DECISION_USED: 4}


class TrunkPatterns:
    """`[watch] trunks`: fnmatch patterns on channel names (PJSIP/carrier-*), compiled once."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = tuple(patterns)
        joined = "|".join(fnmatch.translate(p) for p in self.patterns)
        self._regex = re.compile(joined) if joined else None

    def __bool__(self) -> bool:
        return self._regex is not None

    def match(self, channel: str) -> bool:
        return self._regex is not None and self._regex.match(channel) is not None


def dialled_number(dialled: str, trunk_prefix: str = "") -> str | None:
    """The E.164 number a trunk leg dials, from what Asterisk shows of it: a dial string's resource
    ("+39333...@carrier", "carrier/sip:0333...@host", "0333..."), an extension or a URI. None when no Italian
    number can be read: the leg is then matched to nothing (fail closed)."""
    text = dialled.strip()
    if "/" in text:  # "endpoint/sip:NUMBER@host" (PJSIP) or "trunk/NUMBER" (chan_sip, IAX2)
        text = text.rsplit("/", 1)[1]
    raw = text.split("@", 1)[0].split(";", 1)[0].strip()
    for scheme in ("sips:", "sip:", "tel:"):
        if raw[:len(scheme)].lower() == scheme:  # URI schemes are case-insensitive (RFC 3261 19.1.4)
            raw = raw[len(scheme):]
            break
    if not raw:
        return None
    if not trunk_prefix:  # reconcile reads millions: libphonenumber only where the fast path is not sure
        fast = normalize_fast(raw)
        if fast is not None:
            return fast.e164
    try:
        return normalize(raw, trunk_prefix=trunk_prefix).e164
    except NumberError:
        return None


class Matcher:
    """Decisions waiting for their trunk leg, indexed by the call they belong to.

    A decision belongs to a call through the channel that asked (its uniqueid) or the call's linkedid; a leg
    names its call through the channel that dialled it and its linkedid. A decision made on the call's first
    channel has that channel's uniqueid as the call's linkedid, so that counts too.
    """

    def __init__(self, *, max_age_us: int, skew_us: int) -> None:
        self.max_age_us = max_age_us
        self.skew_us = skew_us
        self._by_call: dict[str, list[Allowed]] = {}
        self._known: dict[str, Allowed] = {}
        self._used: set[str] = set()
        # What forget_before dropped stays dropped: a used decision read again must not cover a second leg.
        self._horizon_us: int | None = None

    def __len__(self) -> int:
        return len(self._known)

    def add(self, decision: Allowed) -> None:
        if decision.decision_id in self._known:
            return
        if self._horizon_us is not None and decision.at_us < self._horizon_us:
            return
        self._known[decision.decision_id] = decision
        for key in {decision.uniqueid, decision.linkedid} - {None, ""}:
            self._by_call.setdefault(key, []).append(decision)  # type: ignore[arg-type]

    def add_all(self, decisions: Iterable[Allowed]) -> None:
        for decision in decisions:
            self.add(decision)

    def _candidates(self, leg: TrunkLeg) -> list[Allowed]:
        seen: dict[str, Allowed] = {}
        for key in (leg.caller_uniqueid, leg.linkedid):
            if key:
                for decision in self._by_call.get(key, ()):
                    seen[decision.decision_id] = decision
        return list(seen.values())

    def match(self, leg: TrunkLeg) -> Covered | Bypass:
        """Cover `leg` with the latest fitting decision of its call and mark it used; else say why not."""
        candidates = self._candidates(leg)
        if not candidates:
            return Bypass(leg, BYPASS_NO_DECISION)
        earliest = leg.at_us - self.max_age_us
        latest = (leg.until_us if leg.until_us is not None else leg.at_us) + self.skew_us
        best_why, best_id, best_distance = BYPASS_NO_DECISION, None, 0
        fitting: list[Allowed] = []
        for decision in candidates:
            if leg.number is None:
                why = BYPASS_NUMBER_UNKNOWN
            elif decision.number != leg.number:
                why = BYPASS_OTHER_NUMBER
            elif not earliest <= decision.at_us <= latest:
                why = BYPASS_DECISION_STALE
            elif decision.decision_id in self._used:
                why = BYPASS_DECISION_USED
            else:
                fitting.append(decision)
                continue
            # Between equally specific reasons, name the decision nearest the leg in time.
            distance = abs(decision.at_us - leg.at_us)
            if _WHY_RANK[why] > _WHY_RANK[best_why] or (
                    _WHY_RANK[why] == _WHY_RANK[best_why] and distance < best_distance):
                best_why, best_id, best_distance = why, decision.decision_id, distance
        if not fitting:
            return Bypass(leg, best_why, best_id)
        chosen = max(fitting, key=lambda d: d.at_us)
        self._used.add(chosen.decision_id)
        return Covered(leg, chosen)

    def forget_before(self, at_us: int) -> None:
        """Drop decisions made before `at_us` (no leg still to come can use them): bounded memory. A decision
        made before `at_us` that is added again later is ignored."""
        if self._horizon_us is None or at_us > self._horizon_us:
            self._horizon_us = at_us
        old = [d for d in self._known.values() if d.at_us < at_us]
        for decision in old:
            del self._known[decision.decision_id]
            self._used.discard(decision.decision_id)
            for key in {decision.uniqueid, decision.linkedid} - {None, ""}:
                bucket = self._by_call.get(key)  # type: ignore[arg-type]
                if bucket is not None:
                    bucket[:] = [d for d in bucket if d.decision_id != decision.decision_id]
                    if not bucket:
                        del self._by_call[key]  # type: ignore[arg-type]
