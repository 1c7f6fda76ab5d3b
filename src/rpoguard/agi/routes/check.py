"""The ``check`` route: ask the gate whether this call may go out and tell the dialplan.

    same => n,Set(RPOGUARD_DECISION=BLOCK)
    same => n,AGI(agi://127.0.0.1:4573/check?campaign=C,${EXTEN})
    same => n,GotoIf($["${AGISTATUS}" = "SUCCESS" & "${RPOGUARD_DECISION}" = "ALLOW"]?dial:reject)

Arguments: see routes/common.py (1 number, 2 campaign if not in the query, 3 caller ID).

Sets RPOGUARD_REASON, RPOGUARD_REASONS, RPOGUARD_NUMBER, RPOGUARD_ID and then RPOGUARD_DECISION, last:
the dialplan sets BLOCK before AGI(), so a session that dies anywhere before the last command leaves it
at BLOCK. None of the details can be left out, because a repeated check on the same channel must not
inherit the previous decision's details. Commands cannot be pipelined (protocol.py), so all five go in
one round trip, ``EXEC MSet "A=..,B=..,RPOGUARD_DECISION=.."`` (AgiSession.set_variables; one SET
VARIABLE each, in the same order, when a value is unsafe for MSet or Asterisk has no MSet), sent once the
decision's audit record is durable.

The details are not sent while the record commits: the commit outlasts a round trip through Asterisk,
so the decision's command would wait for it anyway, and the extra round trip costs CPU per call
(docs/performance.md, "One round trip after the commit"). The commit itself starts before the route
awaits it (Gate.begin).
"""

from __future__ import annotations

import logging
from typing import Final

from rpoguard.agi.protocol import AgiRequest, AgiSession
from rpoguard.agi.routes.common import audit_extra, caller_id_of, campaign_of, linkedid_of, number_of, source_of
from rpoguard.agi.shared import GateLike, channel_variables
from rpoguard.gate import CallRequest
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
        linkedid=linkedid_of(request),
        extra=audit_extra(request),
    )


class CheckRoute:
    # A decision is for a call about to be dialled: if Asterisk already gave up on the call, none is taken
    # (dispatch.py), so the audit log never holds a decision for a call that could not go out.
    needs_live_call: Final = True

    def __init__(self, gate: GateLike) -> None:
        self._gate = gate

    async def __call__(self, request: AgiRequest, session: AgiSession) -> None:
        call = call_request(request)
        # Gate.begin has already started the durable append; a deadline that cancels final() withdraws
        # the record if its commit has not begun.
        verdict = await (await self._gate.begin(call)).final()
        log.debug(
            "check %s campaign %s on %s: %s %s",
            redact(call.raw_number),
            call.campaign_id,
            call.channel,
            verdict.decision,
            ",".join(verdict.reasons),
        )
        await session.set_variables(channel_variables(verdict))
