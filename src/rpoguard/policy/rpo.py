"""What one principal's RPO answers for a number, taken together, say at a given moment: the latest
answer then, and the bound of the latest registration.

Legal ground (docs/law.md):
- RPO answers are per data controller: a citizen may lift the opposition for some operators only, so
  each principal consults the RPO itself and may get different answers (RPO operator FAQ; DPR 26/2022
  art. 8). The store hands this module the answers of one principal only.
- Registering revokes every consent given before it (DPR 26/2022 art. 7 c.7; L. 5/2018 art. 1);
  re-registering ("Rinnovo") revokes the consents given since the previous registration. An operator
  only sees its own answers, so the moment of the latest registration is known only as an upper bound,
  and the bound must never favour the call: it is the later of the answers' `registered_at` and the
  first check of the latest unbroken run of "registered" answers (a "not registered" answer between two
  runs means the number left the register and the later registration revoked consents again; a stale
  `registered_at` repeated after it cannot move the bound back).
- A date without a time covers its whole day: as the start of a check's validity it means 00:00
  Europe/Rome, as a registration bound the end of that day (a consent given at 10:00 on that day cannot be
  shown to follow the registration).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, time, timedelta

from rpoguard.policy.model import Facts, RpoAnswerFacts, RpoFacts
from rpoguard.timeutil import ROME

_MIDNIGHT = time(0, 0)
_LAST_MICROSECOND = timedelta(microseconds=1)


def latest_moment_of(moment: datetime) -> datetime:
    """`moment` read as an upper bound that never favours the call.

    A date without a time is stored as 00:00 Europe/Rome (timeutil.parse_time), so a moment at exactly
    00:00:00.000000 Rome stands for its whole day and bounds at the day's last microsecond. A time written
    as exactly midnight cannot be told from a date; reading it as the whole day is the cautious choice.
    """
    local = moment.astimezone(ROME)
    if local.timetz().replace(tzinfo=None) != _MIDNIGHT:
        return moment
    next_day = datetime.combine(local.date() + timedelta(days=1), _MIDNIGHT, tzinfo=ROME)
    return next_day - _LAST_MICROSECOND


def registration_bound(run: Sequence[RpoAnswerFacts]) -> datetime:
    """The bound of a registration from its unbroken run of "registered" answers, oldest first: the later
    of the run's first check and every `registered_at` the run's answers give, each read cautiously."""
    candidates = [latest_moment_of(run[0].checked_at)]
    candidates += [latest_moment_of(a.registered_at) for a in run if a.registered_at is not None]
    return max(candidates)


def combine_same_check(answers: Sequence[RpoAnswerFacts]) -> list[RpoAnswerFacts]:
    """One answer per check time, oldest first. Two files of one principal may answer for the same check
    time (each is kept with its own file); taken together they say what the import has always said of
    two answers in one file: "registered" wins, and the later registration date counts (it revokes more
    consents). The answer cited is the one that says so, the latest imported of them."""
    by_time: dict[datetime, list[RpoAnswerFacts]] = {}
    for answer in sorted(answers, key=lambda a: (a.checked_at, a.result_id)):
        by_time.setdefault(answer.checked_at, []).append(answer)
    combined = []
    for same in by_time.values():
        registered = [a for a in same if a.registered]
        if len(same) == 1 or not registered:
            combined.append(same[-1])
            continue
        dates = [a.registered_at for a in registered if a.registered_at is not None]
        cited = registered[-1]
        combined.append(replace(cited, registered_at=max(dates, key=latest_moment_of) if dates else None))
    return combined


def summarize_rpo(answers: Sequence[RpoAnswerFacts], at: datetime) -> RpoFacts | None:
    """The latest answer checked at or before `at`, plus the registration bound from the answers up to
    then; None when the number had not been checked by then. Answers checked after `at` were no evidence
    at `at` and are left out entirely (`check --at`, `scrub --at` decide as the world stood then)."""
    ordered = combine_same_check([a for a in answers if a.checked_at <= at])
    if not ordered:
        return None
    latest = ordered[-1]
    bound = None
    last_registered = next((i for i in range(len(ordered) - 1, -1, -1) if ordered[i].registered), None)
    if last_registered is not None:
        run_start = last_registered
        while run_start > 0 and ordered[run_start - 1].registered:
            run_start -= 1
        bound = registration_bound(ordered[run_start:last_registered + 1])
    return RpoFacts(latest.result_id, latest.checked_at, latest.registered, latest.registered_at, latest.import_id,
                    bound)


def with_rpo_summary(facts: Facts, at: datetime) -> Facts:
    """The facts as stored, with what their RPO answers say at `at` (Facts.rpo) for the rules to read."""
    # Built field by field: dataclasses.replace costs more on every call (docs/performance.md, "The per-call read").
    return Facts(facts.number, facts.line_type, facts.campaign, summarize_rpo(facts.rpo_answers, at), facts.listing,
                 facts.consents, facts.contracts, facts.optouts, facts.recent_allows, facts.rpo_answers)
