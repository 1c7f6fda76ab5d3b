"""The attempt cap: how many ALLOWs one principal's campaign lets through to one number in its window.

No Italian statutory cap is known (docs/law.md: UNCONFIRMED); a campaign may set its own (max_attempts per
per_days). The rule is here once: the decision reads it (rules.py, over the ALLOWs counted up to the call),
and both storage backends apply it again inside the append, where concurrent calls cannot pass it together.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CapWindow:
    """The ALLOWs that count against one decision: those for `number` and `principal_id` stamped strictly
    between `since_us` and `until_us`."""

    number: str
    principal_id: str
    since_us: int
    until_us: int


def cap_window(number: str, principal_id: str, since_us: int, ts_us: int) -> CapWindow:
    """The window around a decision stamped `ts_us` whose cap counts ALLOWs after `since_us`.

    It reaches as far after the decision as before it. Decisions of several writers (gate processes, nodes,
    the concurrent sessions of one) are stamped when they start and committed in lock order, so an ALLOW
    stamped a few milliseconds later may already be in: it must count, or two calls would each see the other
    "in the future" and both pass the cap. A decision is recorded only for the moment it is made (`check
    --at` records nothing), so no back-dated call is held up by this."""
    return CapWindow(number, principal_id, since_us, ts_us + (ts_us - since_us))


def in_window(window: CapWindow, ts_us: int) -> bool:
    return window.since_us < ts_us < window.until_us


def within_cap(allows: int, max_allows: int) -> bool:
    """True when an attempt may go ahead after `allows` ALLOWs in its window."""
    return allows < max_allows
