"""Fixtures for the integration tests: a way to run a coroutine with a hard time limit.

No pytest-asyncio: each test drives its own coroutine with ``arun``, on a fresh event loop, so a hung
session fails the test instead of hanging the suite.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

T = TypeVar("T")

TEST_TIMEOUT = 20.0


@pytest.fixture
def arun() -> Callable[[Awaitable[T]], T]:
    def runner(awaitable: Awaitable[T], timeout: float = TEST_TIMEOUT) -> T:
        async def guarded() -> T:
            return await asyncio.wait_for(awaitable, timeout)

        return asyncio.run(guarded())

    return runner
