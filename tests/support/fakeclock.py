"""A command's wall clock set to a fixed moment, with libfaketime: how a test records a decision for that
moment. A decision is recorded only for the moment it is made (`check --at` is a simulation), so a test
that needs recorded decisions at known moments runs the real command with its clock set there.

The clock starts at the moment and runs on ('@' in FAKETIME). The monotonic clock is faked with it: with
FAKETIME_DONT_FAKE_MONOTONIC, Python's time.sleep fails (EINVAL) under this libfaketime.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC
from pathlib import Path
from typing import Any, Protocol

import pytest

from rpoguard.timeutil import parse_time


def libfaketime() -> Path:
    """libfaketime's preload library: skips without it on a developer's machine, fails in CI (scripts/test
    installs the `faketime` package)."""
    found = sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1")) + sorted(
        Path("/usr/lib/faketime").glob("libfaketime.so.1"))
    if not found:
        if os.environ.get("CI") == "true":
            pytest.fail("libfaketime is needed in CI (apt-get install faketime)", pytrace=False)
        pytest.skip("libfaketime not installed (apt-get install faketime): the command's clock cannot be set")
    return found[0]


def clock_env(moment: str) -> dict[str, str]:
    """The environment variables that start a process's wall clock at `moment` (ISO 8601; Europe/Rome
    without an offset)."""
    start = parse_time(moment).astimezone(UTC)
    return {"LD_PRELOAD": str(libfaketime()), "FAKETIME": f"@{start:%Y-%m-%d %H:%M:%S}", "TZ": "UTC"}


class ClockedCliRunner(Protocol):
    """run_cli_at(MOMENT, *args): the console script with its clock starting at MOMENT; (code, out, err)."""

    def __call__(
        self, moment: str, *args: str | os.PathLike[str], env: Mapping[str, str] | None = None,
        stdin: str | None = None,
    ) -> Any: ...
