"""What the two front ends share: the AGI routes (FastAGI and classic AGI) and the ARI gate (ari.py).

Both ask the same gate and tell the dialplan the same things, so the gate interface they call and the
channel variables a verdict becomes live here, and neither front end imports the other.
"""

from __future__ import annotations

from typing import Final, Protocol

from rpoguard.constants import (
    CHANNEL_ALLOW,
    CHANNEL_BLOCK,
    VAR_DECISION,
    VAR_ID,
    VAR_NUMBER,
    VAR_REASON,
    VAR_REASONS,
)
from rpoguard.gate import CallRequest, OptoutRequest, OptoutResult, PendingVerdict, Verdict

# Asterisk's placeholder for a missing caller number (setup_env in res_agi.c).
UNKNOWN: Final = "unknown"


class GateLike(Protocol):
    """The part of rpoguard.gate.Gate the front ends use."""

    async def begin(self, call: CallRequest) -> PendingVerdict: ...

    async def optout(self, request: OptoutRequest) -> OptoutResult: ...


def detail_variables(verdict: Verdict) -> list[tuple[str, str]]:
    """Everything the dialplan learns about a verdict except the decision itself."""
    return [
        (VAR_REASON, verdict.reasons[0] if verdict.reasons else ""),
        (VAR_REASONS, ",".join(verdict.reasons)),
        (VAR_NUMBER, verdict.number or ""),
        (VAR_ID, verdict.decision_id or ""),
    ]


def decision_value(verdict: Verdict) -> str:
    """The value of RPOGUARD_DECISION for a verdict."""
    return CHANNEL_ALLOW if verdict.allowed else CHANNEL_BLOCK


def channel_variables(verdict: Verdict) -> list[tuple[str, str]]:
    """The variables for a verdict, in the order they must be set (decision last)."""
    return [*detail_variables(verdict), (VAR_DECISION, decision_value(verdict))]
