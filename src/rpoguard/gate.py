"""The gate: one call in, one recorded decision out.

Every front end (CLI `check`, FastAGI, classic AGI, ARI) hands a CallRequest to Gate.begin and acts on
the Verdict its PendingVerdict's final() gives. The gate normalises the number, asks the store for all
facts in one round, runs the pure policy and appends the decision to the audit log before it answers: a
call is only allowed once its decision is durable. Whatever goes wrong in between becomes BLOCK with `engine_error`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Protocol

from rpoguard.audit import AuditEntry, AuditRow, canonical_evidence
from rpoguard.config import Config
from rpoguard.constants import ALLOW, ATTEMPT_LIMIT, BLOCK, ENGINE_ERROR
from rpoguard.db.store import AttemptCap, AttemptCapReached, StoreUnavailable
from rpoguard.numbers import NumberError, is_withheld, normalize, normalize_caller_id, normalize_with_fast_path, redact
from rpoguard.policy import CallContext, CampaignFacts, Decision, Facts, decide, with_rpo_summary
from rpoguard.timeutil import to_us

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CallRequest:
    """One outbound call as a front end sees it, before any normalisation."""

    raw_number: str
    campaign_id: str | None
    # None: rule 10 is not evaluated (CLI without --caller-id). "" or a withheld marker: withheld.
    caller_id: str | None
    source: str
    uniqueid: str | None = None
    channel: str | None = None
    # The call this channel belongs to (Asterisk's linkedid), so a bypass check can match a trunk leg
    # dialled from another channel of the same call (docs/bypass.md).
    linkedid: str | None = None
    # Pre-normalisation input is kept for the audit log exactly as received.
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the front end tells the PBX. `reasons` is empty on ALLOW."""

    decision: str
    reasons: tuple[str, ...]
    number: str | None
    decision_id: str | None
    basis: str | None = None

    @property
    def allowed(self) -> bool:
        return self.decision == ALLOW


@dataclass(frozen=True, slots=True)
class OptoutRequest:
    """An in-call refusal: "non chiamatemi più"."""

    raw_number: str
    campaign_id: str | None
    source: str
    uniqueid: str | None = None
    channel: str | None = None


@dataclass(frozen=True, slots=True)
class OptoutResult:
    number: str
    principal_id: str | None
    optout_id: int


class PendingVerdict:
    """A decision taken and being recorded (Gate.begin). `provisional` is what the decision will be if
    its record lands as expected; only `final()` may be acted on."""

    def __init__(self, provisional: Verdict, recording: asyncio.Future[Verdict], *,
                 decision: Decision | None = None, facts: Facts | None = None) -> None:
        self.provisional = provisional
        # What the gate evaluated (its evidence, the campaign's principal), for a front end that shows it;
        # None from a stand-in gate.
        self.decision = decision
        self.facts = facts
        self._recording = recording
        # The front end may never ask (its peer left): the outcome is still collected, never reported
        # as "exception was never retrieved".
        recording.add_done_callback(_collect)

    @classmethod
    def settled(cls, verdict: Verdict, *, decision: Decision | None = None,
                facts: Facts | None = None) -> PendingVerdict:
        """A verdict that is already final (a simulation, an unrecorded BLOCK, or a test without a separate
        commit)."""
        done: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
        done.set_result(verdict)
        return cls(verdict, done, decision=decision, facts=facts)

    async def final(self) -> Verdict:
        """The verdict once its record is durable. Cancelling the caller cancels the recording too,
        so that a check whose caller gave up (deadline) is not recorded if its group has not started."""
        try:
            return await asyncio.shield(self._recording)
        except asyncio.CancelledError:
            self._recording.cancel()
            raise

    def abandon(self) -> None:
        """The caller gave up before asking for the final verdict (its session deadline passed)."""
        self._recording.cancel()


def _collect(future: asyncio.Future[Verdict]) -> None:
    if not future.cancelled():
        future.exception()


class GateError(Exception):
    """A request the gate cannot act on (bad number, unknown campaign); the message is safe to show."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class GateStore(Protocol):
    """What the gate needs from storage: a Store, or the server's SupervisedStore around one."""

    async def facts(self, number: str | None, line_type: str | None, campaign_id: str | None,
                    at: datetime) -> Facts: ...

    async def append_decision(self, entry: AuditEntry, cap: AttemptCap | None = None) -> AuditRow: ...

    def start_decision(self, entry: AuditEntry, cap: AttemptCap | None = None) -> asyncio.Future[AuditRow]: ...

    async def get_campaign(self, campaign_id: str) -> CampaignFacts | None: ...

    async def add_optout(self, number: str, principal_id: str | None, at: datetime, source: str,
                         reference: str | None) -> int: ...


class _OncePerCause:
    """Logs an error the first time a cause appears and then at most once a minute: a database that is
    down fails every call the same way, and the log must say so once, not a thousand times a second."""

    INTERVAL = 60.0

    def __init__(self) -> None:
        self._last: dict[str, float] = {}

    def error(self, what: str, exc: BaseException) -> None:
        if isinstance(exc, StoreUnavailable):
            return  # the supervisor that found the cause has logged it once already
        cause = f"{type(exc).__name__}: {redact(exc)}"
        now = time.monotonic()
        if now - self._last.get(cause, -self.INTERVAL) >= self.INTERVAL:
            self._last[cause] = now
            log.error("%s: %s", what, cause)


class Gate:
    """Normalise, fetch facts in one round, decide, record. Shared by every front end.

    The clock is injected so tests can decide for another time; the servers and `check` pass nothing and
    use the real clock, since a recorded decision is always for the moment it is made (`check --at` is a
    simulation: begun with record=False, never recorded).
    """

    def __init__(self, store: GateStore, config: Config, clock: Callable[[], datetime] | None = None) -> None:
        self.store = store
        self.trunk_prefix = config.trunk_prefix
        self.rpo_validity_days = config.rpo_validity_days
        self.clock = clock or _now
        self._errors = _OncePerCause()
        self._recording: set[asyncio.Task[Verdict]] = set()

    async def evaluate(self, call: CallRequest, at: datetime | None = None) -> tuple[Decision, Facts]:
        """Decide without recording: what `scrub` uses, and the first step of begin()."""
        at = at or self.clock()
        number_error: str | None = None
        e164: str | None = None
        line_type: str | None = None
        try:
            # The fast path gives exactly normalize's answers at a twentieth of the cost (docs/performance.md,
            # "Number normalisation"); it does not know trunk prefixes.
            parsed = (normalize(call.raw_number, trunk_prefix=self.trunk_prefix) if self.trunk_prefix
                      else normalize_with_fast_path(call.raw_number))
            e164, line_type = parsed.e164, parsed.line_type
        except NumberError as exc:
            number_error, e164 = exc.reason, exc.e164
        caller_checked = call.caller_id is not None
        caller_e164: str | None = None
        if caller_checked and not is_withheld(call.caller_id):
            try:
                caller_e164 = normalize_caller_id(call.caller_id or "")
            except NumberError:
                caller_e164 = None
        stored = await self.store.facts(e164 if number_error is None else None, line_type,
                                        call.campaign_id, at)
        facts = with_rpo_summary(stored, at)
        ctx = CallContext(at=at, number_error=number_error, caller_id_checked=caller_checked,
                          caller_id=caller_e164, rpo_validity_days=self.rpo_validity_days)
        decision = decide(facts, ctx)
        # Keep the E.164 form of a foreign or unsupported number for the record; it did not reach the store.
        if e164 and facts.number is None:
            facts = replace(facts, number=e164)
        return decision, facts

    async def check(self, call: CallRequest, at: datetime | None = None) -> Verdict:
        """Decide and record. Never raises: anything that goes wrong is a recorded BLOCK if it can be
        recorded, and an unrecorded BLOCK (decision_id None) if even the log is out of reach."""
        return await (await self.begin(call, at)).final()

    async def begin(self, call: CallRequest, at: datetime | None = None, *, record: bool = True,
                    block_on_error: bool = True) -> PendingVerdict:
        """Decide, and start the durable append before returning (Store.start_decision), so the commit
        (an fsync) runs while the front end goes on. The front end may act on `provisional` only for
        what does not depend on the record (the ARI gate sets the details meanwhile); the decision
        itself comes from `final()`, which returns once the record is durable and may differ from the
        provisional verdict (attempt cap reached meanwhile, or the log out of reach).

        record=False: a simulation (`check --dry-run`, `check --at`), settled at once, never recorded and
        so never counted in an attempt cap. block_on_error=False: a failure to decide is raised instead of
        becoming BLOCK engine_error (a person at the command line is told what went wrong; a PBX must
        get an answer)."""
        at = at or self.clock()
        try:
            decision, facts = await self.evaluate(call, at)
        except Exception as exc:
            if not block_on_error:
                raise
            self._errors.error("cannot decide, call blocked", exc)
            decision = Decision(BLOCK, (ENGINE_ERROR,), None, {"error": type(exc).__name__},
                                call.caller_id is not None)
            facts = Facts(None, None, None)
        if not record:
            return PendingVerdict.settled(Verdict(decision.decision, decision.reasons, facts.number, None,
                                                  decision.basis), decision=decision, facts=facts)
        decision_id = str(uuid.uuid4())
        provisional = Verdict(decision.decision, decision.reasons, facts.number, decision_id, decision.basis)
        loop = asyncio.get_running_loop()
        try:
            entry, cap = _audit_entry(call, decision, facts, at, decision_id)
            # Started now, not from the task below: the commit runs while the front end talks to the PBX.
            written = self.store.start_decision(entry, cap)
        except Exception as exc:  # the store is unavailable
            self._errors.error("cannot record the decision, call blocked", exc)
            return PendingVerdict.settled(_unrecorded(decision, facts), decision=decision, facts=facts)
        task = loop.create_task(self._settle(decision, facts, entry, written))
        # A caller that gives up before the task ran still withdraws the record if its write has not begun.
        task.add_done_callback(functools.partial(_withdraw_if_cancelled, written))
        # The loop keeps only weak references to tasks: a record must not vanish with a front end that
        # dropped its PendingVerdict.
        self._recording.add(task)
        task.add_done_callback(self._recording.discard)
        return PendingVerdict(provisional, task, decision=decision, facts=facts)

    async def _settle(self, decision: Decision, facts: Facts, entry: AuditEntry,
                      written: Awaitable[AuditRow]) -> Verdict:
        """The verdict once the record is durable; a BLOCK if it cannot be made so."""
        try:
            try:
                await written
            except AttemptCapReached as reached:
                # Another call to this number took the last attempt while this one was decided.
                decision = replace(decision, decision=BLOCK, reasons=(ATTEMPT_LIMIT,), basis=None,
                                   evidence={**decision.evidence, "recent_allows": reached.allows})
                entry = replace(entry, decision=BLOCK, reasons=ATTEMPT_LIMIT, basis=None,
                                evidence=canonical_evidence(decision.evidence))
                await self.store.append_decision(entry)
        except Exception as exc:
            self._errors.error("cannot record the decision, call blocked", exc)
            return _unrecorded(decision, facts)
        return Verdict(decision.decision, decision.reasons, facts.number, entry.decision_id, decision.basis)

    async def optout(self, request: OptoutRequest, at: datetime | None = None) -> OptoutResult:
        """Record an in-call refusal for the campaign's principal, effective at once."""
        at = at or self.clock()
        try:
            number = normalize(request.raw_number, trunk_prefix=self.trunk_prefix).e164
        except NumberError as exc:
            if exc.e164 is None:
                raise GateError(exc.reason, str(exc)) from exc
            # A refusal is kept even for a number rpoguard would never allow: it costs nothing and
            # is what the person asked for.
            number = exc.e164
        principal: str | None = None
        if request.campaign_id:
            campaign = await self.store.get_campaign(request.campaign_id)
            if campaign is None:
                # The person said no: record it for every principal rather than lose it.
                log.warning("opt-out for unknown campaign %r recorded for all principals", request.campaign_id)
            else:
                principal = campaign.principal_id
        optout_id = await self.store.add_optout(number, principal, at, request.source, request.uniqueid)
        return OptoutResult(number, principal, optout_id)


def _audit_entry(call: CallRequest, decision: Decision, facts: Facts, at: datetime,
                 decision_id: str) -> tuple[AuditEntry, AttemptCap | None]:
    campaign = facts.campaign
    entry = AuditEntry(
        decision_id=decision_id,
        ts_us=to_us(at),
        number=facts.number,
        raw_number=call.raw_number,
        campaign_id=call.campaign_id,
        principal_id=campaign.principal_id if campaign else None,
        caller_id=call.caller_id,
        decision=decision.decision,
        reasons=",".join(decision.reasons),
        basis=decision.basis,
        # The channel's own words (presentation, raw arguments) go with the evidence, so a withheld
        # or odd caller ID can be shown as Asterisk reported it.
        evidence=canonical_evidence({**decision.evidence, "input": call.extra} if call.extra
                                    else decision.evidence),
        source=call.source,
        uniqueid=call.uniqueid,
        channel=call.channel,
        linkedid=call.linkedid,
    )
    return entry, _attempt_cap(decision, facts, at)


def _unrecorded(decision: Decision, facts: Facts) -> Verdict:
    """A call whose decision cannot be recorded is not placed (fail closed)."""
    return Verdict(BLOCK, tuple(dict.fromkeys((*decision.reasons, ENGINE_ERROR))), facts.number, None)


def _withdraw_if_cancelled(written: asyncio.Future[AuditRow], task: asyncio.Task[Verdict]) -> None:
    if task.cancelled():
        written.cancel()


def _attempt_cap(decision: Decision, facts: Facts, at: datetime) -> AttemptCap | None:
    campaign = facts.campaign
    if decision.decision != ALLOW or campaign is None or facts.number is None:
        return None
    if not campaign.max_attempts or not campaign.per_days:
        return None
    since = to_us(at) - campaign.per_days * 86_400_000_000
    return AttemptCap(facts.number, campaign.principal_id, since, campaign.max_attempts)


def _now() -> datetime:
    return datetime.now(UTC)
