"""Classic AGI: `rpoguard agi`, run by Asterisk from agi-bin with the protocol on stdin and stdout.

Which route runs, first match wins:

1. ``route_name``, when the caller names one. Asterisk passes the AGI() arguments as the program's
   argv too, so a CLI that takes the route from argv gets the first AGI argument: when ``agi_arg_1``
   equals ``route_name`` it named the route and is consumed, as in 3. A wrapper that pins the route
   (``exec rpoguard agi check``) keeps every argument;
2. the program name: ``agi_request`` is the script as written in the dialplan, and ``rpoguard-ROUTE``
   (a symlink in agi-bin) selects ROUTE with the same argument order as FastAGI:
   ``AGI(rpoguard-check,${EXTEN},C)``;
3. otherwise the first AGI argument names the route and the others move down by one:
   ``AGI(rpoguard-agi,check,${EXTEN},C)``.

How Asterisk decides AGISTATUS for a program (res_agi.c, run_agi and agi_exec_full):

* a line starting with ``failure`` on stdout ends the AGI at once with FAILURE (the child launch_script
  forks writes exactly that when exec fails, then exits 1);
* at end of file on stdout Asterisk waits for the process to exit (a blocking waitpid) and turns a
  non-zero exit status, a signal included, into FAILURE;
* anything else is SUCCESS, whether or not a variable was set;
* there is no timeout: a program that never finishes holds the call.

So every failure here does both: it writes ``failure`` and returns a non-zero exit status for the CLI to
exit with. A session deadline bounds the work; a watchdog thread, should the event loop itself be stuck,
writes ``failure`` and ends the process shortly after it. Asterisk sends SIGHUP when the channel hangs
up; the session then finishes (SET VARIABLE still works on a dead channel) so the decision it made is
recorded and the process exits normally. The CLI must exit promptly after ``run_stdio`` returns, since
Asterisk waits for the exit, and must never print to stdout, which is the protocol channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import IO, Final

from rpoguard.agi.dispatch import Outcome, Resolver, run_session
from rpoguard.agi.protocol import (
    FAILURE_LINE,
    AgiConnectionLostError,
    AgiFailure,
    AgiLineProtocol,
    AgiRequest,
    Route,
)
from rpoguard.config import DEFAULT_SESSION_DEADLINE

__all__ = ["EXIT_FAILURE", "EXIT_OK", "EXIT_USAGE", "PROGRAM_PREFIX", "run_stdio", "serve_stdio"]

log = logging.getLogger(__name__)

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2
PROGRAM_PREFIX: Final = "rpoguard-"
# The watchdog fires this long after the session deadline, which normally ends things first.
WATCHDOG_MARGIN: Final = 1.0
# Stdin that is a regular file (a recorded session replayed by hand) is read whole, up to this much.
_MAX_FILE_INPUT: Final = 1024 * 1024
_CLOSE_TIMEOUT: Final = 1.0

_EXIT_CODES: Final = {
    Outcome.DONE: EXIT_OK,
    Outcome.FAILED: EXIT_FAILURE,
    Outcome.NO_ROUTE: EXIT_FAILURE,
    Outcome.NO_REQUEST: EXIT_FAILURE,
    Outcome.PEER_GONE: EXIT_FAILURE,
}

Stream = int | IO[bytes] | IO[str]


def run_stdio(
    routes: Mapping[str, Route],
    route_name: str | None = None,
    *,
    stdin: Stream | None = None,
    stdout: Stream | None = None,
    session_deadline: float = DEFAULT_SESSION_DEADLINE,
    watchdog: bool = True,
    handle_sighup: bool = True,
) -> int:
    """Serve one classic AGI session on stdin/stdout in a fresh event loop; returns the exit status.

    When the routes' gate needs the same event loop (an open database), call ``serve_stdio`` from the
    CLI's own ``asyncio.run`` instead.
    """
    return asyncio.run(
        serve_stdio(
            routes,
            route_name,
            stdin=stdin,
            stdout=stdout,
            session_deadline=session_deadline,
            watchdog=watchdog,
            handle_sighup=handle_sighup,
        )
    )


async def serve_stdio(
    routes: Mapping[str, Route],
    route_name: str | None = None,
    *,
    stdin: Stream | None = None,
    stdout: Stream | None = None,
    session_deadline: float = DEFAULT_SESSION_DEADLINE,
    watchdog: bool = True,
    handle_sighup: bool = True,
) -> int:
    """Serve one classic AGI session; returns 0 when the route finished, 1 after answering ``failure``,
    2 when ``route_name`` is not a known route (also answered ``failure``).

    ``stdin``/``stdout`` default to the process's; descriptors or binary files are accepted. They are
    duplicated, never closed. ``watchdog=False`` is for tests that run in-process: the watchdog ends the
    whole process.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + session_deadline
    in_fd = _fileno(sys.stdin if stdin is None else stdin)
    out_fd = _fileno(sys.stdout if stdout is None else stdout)
    timer = _start_watchdog(out_fd, session_deadline + WATCHDOG_MARGIN) if watchdog else None
    sighup = _catch_sighup(loop) if handle_sighup else False
    # asyncio makes the descriptors non-blocking, which would also hit a terminal shared with the shell.
    blocking = _blocking_modes(in_fd, out_fd)
    try:
        try:
            channel = await _StdioChannel.open(in_fd, out_fd)
        except OSError as exc:
            log.error("classic AGI: cannot use stdin/stdout: %s; answering failure", exc)
            with contextlib.suppress(OSError):
                os.write(out_fd, FAILURE_LINE)
            return EXIT_FAILURE
        try:
            if route_name is not None and route_name not in routes:
                log.error(
                    "classic AGI: no route %r (known: %s); answered failure",
                    route_name,
                    ", ".join(sorted(routes)),
                )
                channel.write(FAILURE_LINE)
                return EXIT_USAGE
            outcome = await run_session(channel, _resolver(routes, route_name), deadline=deadline, peer="classic AGI")
            if outcome is Outcome.NO_REQUEST:
                # Nothing was written yet; whoever is still reading must not take silence for success.
                log.warning("classic AGI: stdin ended before the AGI environment; answered failure")
                channel.write(FAILURE_LINE)
            return _EXIT_CODES[outcome]
        finally:
            await channel.aclose()
    finally:
        _restore_blocking(blocking)
        if sighup:
            loop.remove_signal_handler(signal.SIGHUP)
        if timer is not None:
            timer.cancel()


def _resolver(routes: Mapping[str, Route], route_name: str | None) -> Resolver:
    def resolve(request: AgiRequest) -> tuple[str, Route, AgiRequest]:
        if route_name is not None:
            # A route name is never a number, so an agi_arg_1 equal to it cannot be the number.
            consumed = request.shift_args() if request.arg(1) == route_name else request
            return route_name, routes[route_name], consumed
        program = PurePosixPath(request.request_url or "").name
        if program.startswith(PROGRAM_PREFIX):
            name = program.removeprefix(PROGRAM_PREFIX)
            if name in routes:
                return name, routes[name], request
        first = request.arg(1)
        if first is not None and first in routes:
            return first, routes[first], request.shift_args()
        raise AgiFailure(
            f"no route for program {program!r} with first argument {first!r}: name it as the first "
            f"argument, e.g. AGI(rpoguard-agi,check,${{EXTEN}},CAMPAIGN), or call the program "
            f"{PROGRAM_PREFIX}ROUTE; routes: {', '.join(sorted(routes))}"
        )

    return resolve


def _fileno(stream: Stream) -> int:
    return stream if isinstance(stream, int) else stream.fileno()


def _blocking_modes(*fds: int) -> dict[int, bool]:
    modes = {}
    for fd in fds:
        with contextlib.suppress(OSError):
            modes[fd] = os.get_blocking(fd)
    return modes


def _restore_blocking(modes: Mapping[int, bool]) -> None:
    for fd, blocking in modes.items():
        with contextlib.suppress(OSError):
            os.set_blocking(fd, blocking)


def _start_watchdog(out_fd: int, delay: float) -> threading.Timer:
    # The last resort when the event loop is blocked and the deadline cannot fire. A command line is
    # written by one write() far below PIPE_BUF, so this line cannot land inside one.
    def expire() -> None:
        with contextlib.suppress(OSError):
            os.write(out_fd, FAILURE_LINE)
        os._exit(EXIT_FAILURE)

    timer = threading.Timer(delay, expire)
    timer.daemon = True
    timer.start()
    return timer


def _catch_sighup(loop: asyncio.AbstractEventLoop) -> bool:
    if not hasattr(signal, "SIGHUP") or threading.current_thread() is not threading.main_thread():
        return False
    try:
        loop.add_signal_handler(signal.SIGHUP, _on_sighup)
    except (RuntimeError, ValueError):
        return False
    return True


def _on_sighup() -> None:
    log.info("classic AGI: the channel hung up (SIGHUP); finishing the session")


class _PipeWriter(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.WriteTransport | None = None
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if isinstance(transport, asyncio.WriteTransport):
            self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        self._wake()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    async def drain(self) -> None:
        while True:
            if self.closed.done():
                raise AgiConnectionLostError("stdout closed")
            if not self._paused:
                return
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    async def aclose(self) -> None:
        if self.transport is not None:
            self.transport.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.closed), _CLOSE_TIMEOUT)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class _FileWriter:
    """Stdout that is a regular file (replaying a recorded session by hand): plain blocking writes."""

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._file.fileno(), view) :]

    async def drain(self) -> None:
        return None

    async def aclose(self) -> None:
        self._file.close()


class _StdioChannel:
    """A LineChannel over two descriptors: lines from ``in_fd``, commands to ``out_fd``."""

    def __init__(
        self,
        reader: AgiLineProtocol,
        read_transport: asyncio.ReadTransport | None,
        writer: _PipeWriter | _FileWriter,
    ) -> None:
        self._reader = reader
        self._read_transport = read_transport
        self._writer = writer

    @classmethod
    async def open(cls, in_fd: int, out_fd: int) -> _StdioChannel:
        loop = asyncio.get_running_loop()
        reader = AgiLineProtocol()
        # Duplicates: the transports close what they are given, and the process's own stdin/stdout
        # must stay open for whatever runs after us.
        rfile = os.fdopen(os.dup(in_fd), "rb", buffering=0)
        read_transport: asyncio.ReadTransport | None
        try:
            read_transport, _ = await loop.connect_read_pipe(lambda: reader, rfile)
        except ValueError:
            _read_whole_file(rfile, reader)
            read_transport = None
        wfile = os.fdopen(os.dup(out_fd), "wb", buffering=0)
        writer: _PipeWriter | _FileWriter
        try:
            _, writer = await loop.connect_write_pipe(_PipeWriter, wfile)
        except ValueError:
            writer = _FileWriter(wfile)
        return cls(reader, read_transport, writer)

    async def readline(self) -> bytes | None:
        return await self._reader.readline()

    def peer_finished(self) -> bool:
        # Asterisk starts this process when it asks and waits for it: no request can sit in a backlog
        # that Asterisk has given up on, as a FastAGI connection can.
        return False

    def write(self, data: bytes) -> None:
        self._writer.write(data)

    async def drain(self) -> None:
        await self._writer.drain()

    async def aclose(self) -> None:
        await self._writer.aclose()
        if self._read_transport is not None:
            self._read_transport.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._reader.closed), _CLOSE_TIMEOUT)


def _read_whole_file(rfile: IO[bytes], reader: AgiLineProtocol) -> None:
    # A regular file is always readable, so reading it here cannot stall the loop for long.
    with rfile:
        data = rfile.read(_MAX_FILE_INPUT)
    reader.data_received(data or b"")
    reader.eof_received()
    reader.connection_lost(None)
