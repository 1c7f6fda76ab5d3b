"""The integration tests' `run`: the one of tests/conftest.py, with a time limit on every coroutine.

Each coroutine here plays a whole session against a server; a hung session fails the test after
TEST_TIMEOUT seconds instead of hanging the suite (``run(coro, timeout=...)`` sets another limit).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.aio import EventLoop, Runner

TEST_TIMEOUT = 20.0


@pytest.fixture
def run() -> Iterator[Runner]:
    with EventLoop(timeout=TEST_TIMEOUT) as loop:
        yield loop
