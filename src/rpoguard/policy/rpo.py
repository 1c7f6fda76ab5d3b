"""What a number's RPO answers, taken together, say: the latest answer and when it was last registered.

Legal ground (regulation.md §3): registering revokes every consent given before it (DPR 26/2022 art. 7
c.7; L. 5/2018 art. 1); re-registering ("Rinnovo") revokes the consents given since the previous
registration. An operator only sees its own answers, so the moment of the latest registration is known
only as a bound: the answer's registered_at when the RPO gives one, else the first check of the latest
unbroken run of "registered" answers (a "not registered" answer between two runs means the number left
the register, and the later registration revoked consents again). architecture.md §3.
"""

from __future__ import annotations

from collections.abc import Sequence

from rpoguard.policy.model import RpoAnswerFacts, RpoFacts


def summarize_rpo(answers: Sequence[RpoAnswerFacts]) -> RpoFacts | None:
    """The latest answer plus the registration bound; None when the number was never checked."""
    if not answers:
        return None
    ordered = sorted(answers, key=lambda a: (a.checked_at, a.result_id))
    latest = ordered[-1]
    bound = None
    last_registered = next((i for i in range(len(ordered) - 1, -1, -1) if ordered[i].registered), None)
    if last_registered is not None:
        run_start = last_registered
        while run_start > 0 and ordered[run_start - 1].registered:
            run_start -= 1
        answer = ordered[last_registered]
        bound = answer.registered_at or ordered[run_start].checked_at
    return RpoFacts(latest.result_id, latest.checked_at, latest.registered, latest.registered_at, latest.import_id,
                    bound)
