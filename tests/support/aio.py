"""The one way the tests run a coroutine from synchronous code (there is no pytest-asyncio).

``EventLoop`` owns one event loop and runs each coroutine on it to completion, optionally under a time
limit, so that a store opened by one step (its connection lives on that loop) serves every later step.
The ``run`` fixture (tests/conftest.py) is one ``EventLoop`` per test; ``run_once`` is a fresh one for a
single coroutine, for code that has no test to hang it on: session fixtures, Hypothesis bodies, threads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine
from types import TracebackType
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class Runner(Protocol):
    def __call__(self, awaitable: Awaitable[T], /, timeout: float | None = None) -> T: ...


class EventLoop:
    """Run coroutines on one loop; closing it cancels what is left and shuts down as ``asyncio.run`` does."""

    def __init__(self, *, timeout: float | None = None) -> None:
        self._runner = asyncio.Runner()
        self._timeout = timeout

    def __call__(self, awaitable: Awaitable[T], /, timeout: float | None = None) -> T:
        limit = self._timeout if timeout is None else timeout
        return self._runner.run(_guarded(awaitable, limit))

    def close(self) -> None:
        self._runner.close()

    def __enter__(self) -> EventLoop:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


def run_once(awaitable: Awaitable[T], /, timeout: float | None = None) -> T:
    """Run one coroutine on a loop of its own (what ``asyncio.run`` does, with an optional time limit)."""
    with EventLoop(timeout=timeout) as loop:
        return loop(awaitable)


def _guarded(awaitable: Awaitable[T], timeout: float | None) -> Coroutine[Any, Any, T]:
    async def guarded() -> T:
        # wait_for also accepts a bare Future or Task, which Runner.run would refuse.
        return await asyncio.wait_for(awaitable, timeout)

    return guarded()
