"""Logs never hold a whole phone number: only the audit log may."""

from __future__ import annotations

import pytest

from rpoguard.numbers import redact


@pytest.mark.parametrize(
    ("text", "hidden"),
    [
        ("dialled number '0612345678' is not valid", "0612345678"),
        ("caller +393331234567 withheld", "+393331234567"),
        ("caller +39 333 123 4567 withheld", "333 123 4567"),
        ("line 'agi_callerid: 0039-06-1234-5678'", "1234-5678"),
    ],
)
def test_numbers_are_masked(text: str, hidden: str) -> None:
    masked = redact(text)
    assert hidden not in masked
    assert "*" in masked


def test_short_figures_stay_readable() -> None:
    assert redact("route 12 hit the deadline after 2000 ms") == "route 12 hit the deadline after 2000 ms"
