"""The ``check`` route: ask the gate whether this call may go out and tell the dialplan.

    same => n,Set(RPOGUARD_DECISION=BLOCK)
    same => n,AGI(agi://127.0.0.1:4573/check?campaign=C,${EXTEN})
    same => n,GotoIf($["${AGISTATUS}" = "SUCCESS" & "${RPOGUARD_DECISION}" = "ALLOW"]?dial:reject)

Arguments: see routes/common.py (1 number, 2 campaign if not in the query, 3 caller ID).

Sets RPOGUARD_REASON, RPOGUARD_REASONS, RPOGUARD_NUMBER, RPOGUARD_ID and then RPOGUARD_DECISION, last:
the dialplan sets BLOCK before AGI(), so a session that dies anywhere before the last command leaves it
at BLOCK. None of the details can be left out, because a repeated check on the same channel must not
inherit the previous decision's details. Commands cannot be pipelined (protocol.py), so the details go
in one round trip (``EXEC MSet``, see AgiSession.set_variables) and they go while the decision's audit
record is being committed (Gate.begin): that commit is an fsync, and the details do not depend on it.
RPOGUARD_DECISION is sent only once the record is durable; if the final verdict differs from the
provisional one (attempt cap reached meanwhile, audit log out of reach), the details are sent again
first. Two round trips, and the fsync overlapped with one of them.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from rpoguard.agi.protocol import AgiRequest, AgiSession
from rpoguard.agi.routes.common import (
    GateLike,
    audit_extra,
    caller_id_of,
    campaign_of,
    number_of,
    source_of,
)
from rpoguard.constants import (
    CHANNEL_ALLOW,
    CHANNEL_BLOCK,
    VAR_DECISION,
    VAR_ID,
    VAR_NUMBER,
    VAR_REASON,
    VAR_REASONS,
)
from rpoguard.gate import CallRequest, Verdict
from rpoguard.numbers import redact

log = logging.getLogger(__name__)

ROUTE_CHECK: Final = "check"


def call_request(request: AgiRequest) -> CallRequest:
    return CallRequest(
        raw_number=number_of(request),
        campaign_id=campaign_of(request),
        # Never None: the gate always evaluates the caller ID rule for a live call.
        caller_id=caller_id_of(request),
        source=source_of(request),
        uniqueid=request.uniqueid,
        channel=request.channel,
        extra=audit_extra(request),
    )


def detail_variables(verdict: Verdict) -> list[tuple[str, str]]:
    """Everything the dialplan learns about a verdict except the decision itself."""
    return [
        (VAR_REASON, verdict.reasons[0] if verdict.reasons else ""),
        (VAR_REASONS, ",".join(verdict.reasons)),
        (VAR_NUMBER, verdict.number or ""),
        (VAR_ID, verdict.decision_id or ""),
    ]


def channel_variables(verdict: Verdict) -> list[tuple[str, str]]:
    """The variables for a verdict, in the order they must be set (decision last)."""
    return [*detail_variables(verdict), (VAR_DECISION, CHANNEL_ALLOW if verdict.allowed else CHANNEL_BLOCK)]


class CheckRoute:
    # A decision is for a call about to be dialled: if Asterisk already gave up on the call, none is taken
    # (dispatch.py), so the audit log never holds a decision for a call that could not go out.
    needs_live_call: Final = True

    def __init__(self, gate: GateLike) -> None:
        self._gate = gate

    async def __call__(self, request: AgiRequest, session: AgiSession) -> None:
        call = call_request(request)
        pending = await self._gate.begin(call)
        sent = detail_variables(pending.provisional)
        try:
            await session.set_variables(sent)
        except asyncio.CancelledError:
            # The session deadline passed: like a call whose peer left before the decision, it gets no
            # record unless its commit has already begun.
            pending.abandon()
            raise
        except Exception:
            # The peer is gone or misbehaves: the decision is still recorded (it was taken), and the
            # dialplan, which never got RPOGUARD_DECISION, blocks the call.
            await pending.final()
            raise
        verdict = await pending.final()
        log.debug(
            "check %s campaign %s on %s: %s %s",
            redact(call.raw_number),
            call.campaign_id,
            call.channel,
            verdict.decision,
            ",".join(verdict.reasons),
        )
        details = detail_variables(verdict)
        if details != sent:
            await session.set_variables(details)
        await session.set_variable(VAR_DECISION, CHANNEL_ALLOW if verdict.allowed else CHANNEL_BLOCK)
