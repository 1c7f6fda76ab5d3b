"""The decision engine: pure rules over facts, the calling-hours calendar, and the decision types."""

from __future__ import annotations

from rpoguard.policy.model import (
    CampaignFacts,
    ConsentFacts,
    ContractFacts,
    Decision,
    Facts,
    ListingFacts,
    OptoutFacts,
    RpoAnswerFacts,
    RpoFacts,
)
from rpoguard.policy.rpo import summarize_rpo, with_rpo_summary
from rpoguard.policy.rules import CallContext, decide

__all__ = [
    "CallContext",
    "CampaignFacts",
    "ConsentFacts",
    "ContractFacts",
    "Decision",
    "Facts",
    "ListingFacts",
    "OptoutFacts",
    "RpoAnswerFacts",
    "RpoFacts",
    "decide",
    "summarize_rpo",
    "with_rpo_summary",
]
