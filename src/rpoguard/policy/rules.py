"""The decision table of docs/architecture.md §3, one small function per legal rule.

`decide` is pure: the same facts, context and time always give the same decision. Every rule that
fails adds its reason code; the first one is the primary reason. Rules that need a fact the call does
not have (a number that did not parse, a campaign that does not exist) are not evaluated: the call is
already blocked by the rule that found the missing fact.

Sources are cited by their numbers in docs/law.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from rpoguard.constants import (
    ALLOW,
    ATTEMPT_LIMIT,
    AUTOMATED_NO_CONSENT,
    BASIS_CONSENT,
    BASIS_CONTRACT,
    BASIS_LISTED,
    BLOCK,
    CALLER_ID_INVALID,
    CONTRACT_GRACE_DAYS,
    DEFAULT_RPO_VALIDITY_DAYS,
    OPTOUT,
    OUTSIDE_HOURS,
    RPO_EXPIRED,
    RPO_NOT_CHECKED,
    RPO_REGISTERED,
    UNKNOWN_CAMPAIGN,
    UNLISTED_NO_CONSENT,
)
from rpoguard.policy.attempts import within_cap
from rpoguard.policy.calendar import ROME, rome_date, within_calling_hours
from rpoguard.policy.model import ConsentFacts, ContractFacts, Decision, Facts, OptoutFacts, RpoAnswerFacts, RpoFacts
from rpoguard.policy.rpo import registration_bound
from rpoguard.timeutil import iso


@dataclass(frozen=True, slots=True)
class CallContext:
    """What the call itself brings, beside the stored facts."""

    at: datetime
    # Reason code from the number normaliser (rule 1), None when the number is a valid Italian one.
    number_error: str | None = None
    # Rule 10 is evaluated only when the front end presents a caller ID: the gate always does; the CLI
    # only with --caller-id. `caller_id` is the normalised E.164, None when withheld or unparseable.
    caller_id_checked: bool = True
    caller_id: str | None = None
    rpo_validity_days: int = DEFAULT_RPO_VALIDITY_DAYS


class _Evaluation:
    """The derived facts several rules share, computed once per decision."""

    def __init__(self, facts: Facts, ctx: CallContext) -> None:
        self.facts = facts
        self.ctx = ctx
        self.at = ctx.at
        self.call_day = rome_date(ctx.at)
        self.live_consents = tuple(c for c in facts.consents if _consent_in_force(c, self.at))
        self.live_contracts = tuple(k for k in facts.contracts if self._contract_alive(k))
        bound = _registration_bound(facts)
        # DPR 26/2022 art. 7 c.7; L. 5/2018 art. 1 [1][20][29][38]: registering in the RPO revokes every
        # consent given before it. Consent given to this principal after registration survives [28][29].
        # An automatic registration of an unlisted fixed number would not revoke (art. 7 c.10 [9]), but
        # the RPO's answer does not say which kind it was, so every registration is taken as revoking.
        self.post_registration_consents = tuple(
            c for c in self.live_consents if bound is None or c.given_at > bound
        )
        # L. 5/2018 art. 1; DPR 26/2022 art. 7 [19][20][29]: a consent given *within* a contract with this
        # principal survives registration while the contract runs and for 30 days after it ends. The
        # contract itself is no basis: only the consents given between its start and its end are saved.
        self.saving_contract: dict[int, ContractFacts] = {}
        for consent in self.live_consents:
            if consent in self.post_registration_consents:
                continue
            given_day = rome_date(consent.given_at)
            saver = next((k for k in self.live_contracts
                          if k.start <= given_day and (k.end is None or given_day <= k.end)), None)
            if saver is not None:
                self.saving_contract[consent.id] = saver
        self.refusal = next((o for o in facts.optouts if self._refusal_applies(o)), None)

    def _contract_alive(self, contract: ContractFacts) -> bool:
        # A contract running, or ended at most 30 days ago. Dates are calendar days in Europe/Rome.
        if contract.start > self.call_day:
            return False
        if contract.end is None:
            return True
        return self.call_day <= contract.end + timedelta(days=CONTRACT_GRACE_DAYS)

    def _refusal_applies(self, optout: OptoutFacts) -> bool:
        campaign = self.facts.campaign
        for_principal = optout.principal_id is None or (
            campaign is not None and optout.principal_id == campaign.principal_id
        )
        return for_principal and optout.at <= self.at

    def usable_consents(self) -> tuple[ConsentFacts, ...]:
        """Consents that stand despite any registration: given after it, or saved by a contract."""
        return tuple(c for c in self.live_consents
                     if c in self.post_registration_consents or c.id in self.saving_contract)

    def rpo_answer(self) -> RpoFacts | None:
        """The principal's answer in force at the call, if the rules may judge it: RPO answers belong to
        the campaign's principal, so without a campaign there is no answer to judge."""
        rpo = self.facts.rpo
        if rpo is None or self.facts.campaign is None or rpo.checked_at > self.at:
            return None
        return rpo


def _registration_bound(facts: Facts) -> datetime | None:
    """The moment a consent must postdate. The store derives it from the answer history; if a registered
    answer comes without one, its own dates bound it, read so as never to favour the call."""
    rpo = facts.rpo
    if rpo is None:
        return None
    if rpo.registration_bound is not None:
        return rpo.registration_bound
    if rpo.registered:
        return registration_bound([RpoAnswerFacts(rpo.result_id, rpo.checked_at, True, rpo.registered_at,
                                                  rpo.import_id)])
    return None


def _consent_in_force(consent: ConsentFacts, at: datetime) -> bool:
    # docs/architecture.md §3: a consent counts from given_at until expires_at or revoked_at, whichever first.
    if consent.given_at > at:
        return False
    ends = [t for t in (consent.expires_at, consent.revoked_at) if t is not None]
    return not ends or at < min(ends)


Rule = Callable[[_Evaluation], str | None]


def rule_campaign_known(ev: _Evaluation) -> str | None:
    # Codice di condotta art. 10 c.1 [34]: every campaign names its principal in a documented way; without
    # it no consent, refusal or caller ID can be attributed.
    return UNKNOWN_CAMPAIGN if ev.facts.campaign is None else None


def rule_no_refusal(ev: _Evaluation) -> str | None:
    # Garante, Edison Energia, 15 Dec 2022 [31]: a "no" said during a call is final at once and covers
    # future campaigns; no confirmation may be demanded.
    return OPTOUT if ev.refusal is not None else None


def rule_rpo_checked(ev: _Evaluation) -> str | None:
    # DPR 26/2022 art. 8 c.3 [2]: the register cannot be copied; only the operator's own per-number check
    # results exist, and a number without one must be refused (docs/law.md). The answer must be this
    # principal's own (RPO operator FAQ [99]: each data controller consults the RPO itself and may get
    # different answers), checked at or before the call time. Without a campaign there is no principal
    # whose answer could be looked for: rule 2 already blocks.
    if ev.facts.campaign is None:
        return None
    return RPO_NOT_CHECKED if ev.rpo_answer() is None else None


def rule_rpo_fresh(ev: _Evaluation) -> str | None:
    # DPR 26/2022 art. 8 c.2 [2]: a check result is valid 15 days for telephone marketing. The expiry is
    # wall-clock arithmetic in Europe/Rome, so a date-only check (00:00) expires at 00:00 fifteen days later
    # across a DST change too.
    rpo = ev.rpo_answer()
    if rpo is None:
        return None
    expires = rpo.checked_at.astimezone(ROME) + timedelta(days=ev.ctx.rpo_validity_days)
    # Compared as instants: two Europe/Rome datetimes compare by wall clock and would ignore DST's fold.
    return None if ev.at.astimezone(UTC) < expires.astimezone(UTC) else RPO_EXPIRED


def rule_not_registered(ev: _Evaluation) -> str | None:
    # Art. 130 c.3-bis Codice privacy [33]; DPR 26/2022 art. 7 c.7 [1]; L. 5/2018 art. 1 [20][29]: a
    # registered number may be called only with a consent to this principal given after registration, or
    # one given within a contract with it that is running or ended at most 30 days ago (Eni Plenitude
    # 2024 [27]). A contract without such a consent is no basis.
    rpo = ev.rpo_answer()
    if rpo is None or not rpo.registered:
        return None
    return None if ev.usable_consents() else RPO_REGISTERED


def rule_unlisted_needs_consent(ev: _Evaluation) -> str | None:
    # Garante Nov 2015 [36][37]; Codice di condotta art. 10 c.2 [34]: a number not in a public directory
    # (nearly every mobile) needs prior documented consent to this principal. Unknown listing = unlisted.
    if ev.facts.listing is not None or ev.facts.campaign is None:
        return None
    return None if ev.usable_consents() else UNLISTED_NO_CONSENT


def rule_automated_needs_consent(ev: _Evaluation) -> str | None:
    # Art. 130 c.1 Codice privacy [33]: calls without a live operator need consent, without exception; the
    # RPO registration revokes it too (DL 139/2021 art. 9 c.8 [30]).
    campaign = ev.facts.campaign
    if campaign is None or not campaign.automated:
        return None
    return None if any(c.automated for c in ev.usable_consents()) else AUTOMATED_NO_CONSENT


def rule_calling_hours(ev: _Evaluation) -> str | None:
    # Codice di condotta (Garante provv. 148/2024, in force 28 Sep 2024) [39][40][44].
    return None if within_calling_hours(ev.at) else OUTSIDE_HOURS


def rule_caller_id(ev: _Evaluation) -> str | None:
    # L. 5/2018 art. 2 [53]; Codice di condotta art. 7 c.1-2 [35]; AGCOM 156/18/CIR [51]: present an
    # identifiable, call-back-able number declared to the ROC; never anonymous.
    campaign = ev.facts.campaign
    if not ev.ctx.caller_id_checked or campaign is None:
        return None
    caller = ev.ctx.caller_id
    return None if caller is not None and caller in campaign.declared_caller_ids else CALLER_ID_INVALID


def rule_attempt_cap(ev: _Evaluation) -> str | None:
    # No Italian statutory cap is known (docs/law.md: UNCONFIRMED); the campaign may set its own. TIM
    # 2020 [47][68] was fined for calling one number 155 times a month. Only ALLOW decisions count.
    campaign = ev.facts.campaign
    if campaign is None or not campaign.max_attempts or not campaign.per_days:
        return None
    return None if within_cap(ev.facts.recent_allows, campaign.max_attempts) else ATTEMPT_LIMIT


# Rules 2-11 in the order of docs/architecture.md §3; rule 1 (the number) is decided by the normaliser.
RULES: tuple[Rule, ...] = (
    rule_campaign_known,
    rule_no_refusal,
    rule_rpo_checked,
    rule_rpo_fresh,
    rule_not_registered,
    rule_unlisted_needs_consent,
    rule_automated_needs_consent,
    rule_calling_hours,
    rule_caller_id,
    rule_attempt_cap,
)

# Rules that still mean something for a call whose number could not be normalised.
_RULES_WITHOUT_NUMBER = frozenset({rule_campaign_known, rule_calling_hours, rule_caller_id})


def decide(facts: Facts, ctx: CallContext) -> Decision:
    """Decide one call. Pure: no clock, no I/O; `ctx.at` is the call time."""
    ev = _Evaluation(facts, ctx)
    reasons: list[str] = [ctx.number_error] if ctx.number_error else []
    for rule in RULES:
        if ctx.number_error and rule not in _RULES_WITHOUT_NUMBER:
            continue
        reason = rule(ev)
        if reason is not None:
            reasons.append(reason)
    evidence = _evidence(ev)
    if reasons:
        return Decision(BLOCK, tuple(reasons), None, evidence, ctx.caller_id_checked)
    basis, basis_evidence = _basis(ev)
    evidence.update(basis_evidence)
    return Decision(ALLOW, (), basis, evidence, ctx.caller_id_checked)


def _basis(ev: _Evaluation) -> tuple[str, dict[str, object]]:
    """The legal ground an ALLOW rests on, and the record that proves it."""
    facts = ev.facts
    campaign = facts.campaign
    rpo = ev.rpo_answer()
    automated = campaign is not None and campaign.automated
    registered = rpo is not None and rpo.registered
    if facts.listing is not None and not automated and not registered:
        return BASIS_LISTED, {}
    # Rules 6-8 passed on a consent: one consent that satisfies all of them at once (it survives any
    # registration, and covers automated calls when the campaign is automated). A consent given after
    # registration is the stronger ground, so it is preferred over one a contract saves.
    candidates = [c for c in ev.usable_consents() if c.automated or not automated]
    post = [c for c in candidates if c in ev.post_registration_consents]
    chosen = max(post or candidates, key=lambda c: (c.given_at, c.id))
    cited: dict[str, object] = {"consent_id": chosen.id, "consent_evidence": chosen.evidence}
    if post:
        return BASIS_CONSENT, cited
    return BASIS_CONTRACT, {"contract_id": ev.saving_contract[chosen.id].id, **cited}


def _evidence(ev: _Evaluation) -> dict[str, object]:
    facts = ev.facts
    evidence: dict[str, object] = {}
    rpo = ev.rpo_answer()
    if rpo is not None:
        evidence["rpo_result_id"] = rpo.result_id
        evidence["rpo_import_id"] = rpo.import_id
        evidence["rpo_checked_at"] = iso(rpo.checked_at)
        evidence["rpo_registered"] = rpo.registered
    if facts.listing is not None:
        evidence["listing_import_id"] = facts.listing.import_id
    if ev.refusal is not None:
        evidence["optout_id"] = ev.refusal.id
    if ev.live_contracts:
        # Cited on a BLOCK too: a DPO asked why a customer with a contract was not called sees the contract,
        # and that no consent was given within it. An ALLOW on a contract cites the one that saved it.
        evidence["contract_id"] = ev.live_contracts[0].id
    if facts.campaign is not None and facts.campaign.max_attempts:
        evidence["recent_allows"] = facts.recent_allows
    return evidence
