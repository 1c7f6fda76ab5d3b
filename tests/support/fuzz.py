"""Hypothesis settings shared by the fuzz tests.

Every Hypothesis test here is deterministic (``derandomize=True``, no example database) and bounded
(``max_examples``), so the whole folder runs in well under a minute and fails the same way twice.
Nothing here loads a Hypothesis profile: that would change the settings of every other test in the run.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, Phase, settings


def fuzz_settings(max_examples: int, **extra: Any) -> settings:
    """Deterministic, bounded Hypothesis settings for one test."""
    return settings(
        max_examples=max_examples,
        derandomize=True,
        database=None,
        deadline=None,
        # No explain phase: it replays a failing example hundreds of times, each a real session.
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
        **extra,
    )
