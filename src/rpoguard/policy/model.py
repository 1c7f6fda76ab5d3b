"""The facts a decision rests on, and the decision itself. Plain data: no I/O, no SQL."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime


@dataclass(frozen=True, slots=True)
class CampaignFacts:
    id: str
    principal_id: str
    automated: bool
    max_attempts: int | None
    per_days: int | None
    # E.164 caller IDs the principal declared (ROC / AGCOM); rule 10 accepts only these.
    declared_caller_ids: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class RpoAnswerFacts:
    """One answer of the RPO for one number, as imported by one principal (the data controller)."""

    result_id: int
    checked_at: datetime
    registered: bool
    registered_at: datetime | None
    import_id: int | None


@dataclass(frozen=True, slots=True)
class RpoFacts:
    """The latest RPO answer one principal obtained for a number at the call time, plus what its answers
    until then say about registration (policy/rpo.py)."""

    result_id: int
    checked_at: datetime
    registered: bool
    registered_at: datetime | None
    import_id: int | None
    # Upper bound of the moment of the latest registration this number ever had, from the latest unbroken
    # run of "registered" answers, never favouring the call (policy/rpo.py). None if no answer ever said
    # "registered". A consent given at or before it was revoked by that registration, even if the number
    # has left the register since, unless a contract saves it (rule 6).
    registration_bound: datetime | None


@dataclass(frozen=True, slots=True)
class ListingFacts:
    """The number is in the public directory; `import_id` names the directory file it came from."""

    import_id: int | None
    listed_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ConsentFacts:
    id: int
    given_at: datetime
    evidence: str
    automated: bool
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    purpose: str | None = None


@dataclass(frozen=True, slots=True)
class ContractFacts:
    id: int
    start: date
    end: date | None = None


@dataclass(frozen=True, slots=True)
class OptoutFacts:
    id: int
    principal_id: str | None  # None: the refusal covers every principal
    at: datetime


@dataclass(frozen=True, slots=True)
class Facts:
    """Everything the store knows that matters for one call, fetched in one round."""

    number: str | None
    line_type: str | None
    campaign: CampaignFacts | None
    rpo: RpoFacts | None = None
    listing: ListingFacts | None = None
    consents: tuple[ConsentFacts, ...] = ()
    contracts: tuple[ContractFacts, ...] = ()
    optouts: tuple[OptoutFacts, ...] = ()
    # ALLOW decisions recorded for this number and the campaign's principal inside the cap window.
    recent_allows: int = 0
    # Every RPO answer the campaign's principal obtained for the number, as stored; `rpo` is what they say
    # at the call time (policy.rpo.summarize_rpo, applied by the gate: storage does not read the law).
    rpo_answers: tuple[RpoAnswerFacts, ...] = ()


@dataclass(frozen=True, slots=True)
class Decision:
    decision: str
    reasons: tuple[str, ...]
    basis: str | None
    # Which stored facts the decision used, by id: what a DPO shows the Garante.
    evidence: dict[str, object] = field(default_factory=dict)
    caller_id_checked: bool = True

    @property
    def primary_reason(self) -> str | None:
        return self.reasons[0] if self.reasons else None
