"""The ``optout`` route: record an in-call refusal ("non chiamatemi più") for the number and principal.

    same => n,Set(RPOGUARD_OPTOUT=)
    same => n,AGI(agi://127.0.0.1:4573/optout?campaign=C,${NUMBER})
    same => n,GotoIf($["${AGISTATUS}" = "SUCCESS" & "${RPOGUARD_OPTOUT}" = "OK"]?done:retry)

Arguments: see routes/common.py (1 number, 2 campaign if not in the query). The refusal is on record once
RPOGUARD_OPTOUT is OK; a request the gate rejects (bad number, unknown campaign) answers ``failure``.
"""

from __future__ import annotations

from typing import Final

from rpoguard.agi.protocol import AgiFailure, AgiRequest, AgiSession
from rpoguard.agi.routes.common import campaign_of, number_of, source_of
from rpoguard.agi.shared import GateLike
from rpoguard.constants import OPTOUT_OK, VAR_OPTOUT
from rpoguard.gate import GateError, OptoutRequest

ROUTE_OPTOUT: Final = "optout"


def optout_request(request: AgiRequest) -> OptoutRequest:
    return OptoutRequest(
        raw_number=number_of(request),
        campaign_id=campaign_of(request),
        source=source_of(request),
        uniqueid=request.uniqueid,
        channel=request.channel,
    )


class OptoutRoute:
    def __init__(self, gate: GateLike) -> None:
        self._gate = gate

    async def __call__(self, request: AgiRequest, session: AgiSession) -> None:
        try:
            await self._gate.optout(optout_request(request))
        except GateError as exc:
            raise AgiFailure(f"{exc.reason}: {exc}") from exc
        await session.set_variable(VAR_OPTOUT, OPTOUT_OK)
