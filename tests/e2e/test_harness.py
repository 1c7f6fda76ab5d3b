"""The e2e rig proves itself without the product: a FastAGI stub decides, SIPp shows what got out.

If these pass, a failing product e2e test points at the product, not at Asterisk, SIPp or the harness.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path

import pytest

from .harness import Asterisk, SippCarrier, StartAsterisk, free_tcp_port, tail

pytestmark = pytest.mark.e2e

logger = logging.getLogger(__name__)

DIALPLAN = Path(__file__).with_name("dialplan_harness.conf")
CONTEXT = "e2e-harness-out"
ALLOWED = "+390612345678"
BLOCKED = "+390698765432"
# The stub closes the connection without a word for this one, like a server whose handler crashed.
SILENT = "+390611111111"
CALLER_ID = "+390287654321"


class StubAgiServer:
    """A FastAGI server that allows only the numbers it is told to, on a random port of 127.0.0.1.

    It runs its own asyncio loop in a thread, because the harness and the tests around it are
    synchronous. ``requests`` keeps each AGI environment it read, for the tests to inspect.
    """

    def __init__(self, allowed: set[str], silent: set[str]) -> None:
        self.allowed = allowed
        self.silent = silent
        self.port = free_tcp_port()
        self.requests: list[dict[str, str]] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="stub-fastagi", daemon=True)
        self._server: asyncio.Server | None = None

    def start(self) -> None:
        self._thread.start()
        self.resume()

    def resume(self) -> None:
        """(Re)open the listening socket on the same port: the dialplan global cannot change."""
        self._call(self._listen())

    def pause(self) -> None:
        """Close the listening socket, so that Asterisk's connect is refused."""
        self._call(self._close())

    def close(self) -> None:
        self.pause()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def _call(self, coro: Coroutine[None, None, None]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=5)

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            env: dict[str, str] = {}
            # The environment ends with an empty line; a stuck Asterisk must not hang the stub.
            while line := await asyncio.wait_for(reader.readline(), timeout=5):
                text = line.decode(errors="replace").rstrip("\r\n")
                if not text:
                    break
                name, _, value = text.partition(":")
                env[name.strip()] = value.strip()
            self.requests.append(env)
            number = env.get("agi_arg_1") or env.get("agi_extension", "")
            logger.info("stub FastAGI asked about %s (caller %s)", number, env.get("agi_callerid"))
            if number in self.silent:
                return
            if number in self.allowed:
                writer.write(b'SET VARIABLE GATE_OK "yes"\n')
                await writer.drain()
                reply = await asyncio.wait_for(reader.readline(), timeout=5)
                logger.info("stub FastAGI: SET VARIABLE -> %s", reply.decode(errors="replace").strip())
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


@pytest.fixture(scope="module")
def agi_stub() -> Iterator[StubAgiServer]:
    stub = StubAgiServer(allowed={ALLOWED, SILENT}, silent={SILENT})
    stub.start()
    yield stub
    stub.close()


@pytest.fixture(scope="module")
def asterisk(start_asterisk: StartAsterisk, agi_stub: StubAgiServer) -> Iterator[Asterisk]:
    asterisk = start_asterisk(DIALPLAN, dialplan_globals={"E2E_AGI_PORT": str(agi_stub.port)})
    yield asterisk
    asterisk.stop()


def _call(asterisk: Asterisk, carrier: SippCarrier, number: str) -> list[str]:
    """Place one gated call, wait until it is over, and return the numbers that reached the carrier."""
    since = carrier.checkpoint()
    result = asterisk.originate(number, CONTEXT, caller_id=CALLER_ID, caller_name="E2E Test")
    asterisk.wait_calls_settled()
    invites = carrier.invites(since)
    for invite in invites:
        logger.info("carrier received: %s", invite)
    logger.info("call to %s: %s; INVITEs: %d", number, result, len(invites))
    return [invite.number for invite in invites]


def _gate_line(asterisk: Asterisk, number: str) -> str:
    """The dialplan's own record of what the gate answered for ``number``, latest first."""
    lines = [line for line in tail(asterisk.full_log, 400).splitlines() if f"harness gate: {number} AGI" in line]
    return lines[-1] if lines else ""


def test_allowed_number_reaches_the_carrier(
    asterisk: Asterisk, sipp_carrier: SippCarrier, agi_stub: StubAgiServer
) -> None:
    since = sipp_carrier.checkpoint()
    asked = len(agi_stub.requests)

    dialled = _call(asterisk, sipp_carrier, ALLOWED)

    assert dialled == [ALLOWED], f"expected one INVITE for {ALLOWED}, carrier saw {dialled}"
    [invite] = sipp_carrier.invites(since)
    assert invite.caller_id == CALLER_ID, f"the caller ID did not reach the carrier: {invite}"
    [request] = agi_stub.requests[asked:]
    # The gate checks the caller ID (rule 10), so the originated call must present it to AGI too.
    assert request["agi_callerid"] == CALLER_ID
    assert request["agi_arg_1"] == ALLOWED
    assert request["agi_network_script"] == "check"
    assert "AGISTATUS=SUCCESS GATE_OK=yes" in _gate_line(asterisk, ALLOWED)


def test_blocked_number_never_reaches_the_carrier(
    asterisk: Asterisk, sipp_carrier: SippCarrier, agi_stub: StubAgiServer
) -> None:
    asked = len(agi_stub.requests)

    dialled = _call(asterisk, sipp_carrier, BLOCKED)

    assert dialled == [], f"a blocked number got out: {dialled}"
    assert [r["agi_arg_1"] for r in agi_stub.requests[asked:]] == [BLOCKED], "the gate was not asked"
    assert "AGISTATUS=SUCCESS GATE_OK=no" in _gate_line(asterisk, BLOCKED)


def test_server_that_closes_without_answering_fails_closed(
    asterisk: Asterisk, sipp_carrier: SippCarrier, agi_stub: StubAgiServer
) -> None:
    # AGISTATUS is SUCCESS here: only the deny-by-default verdict variable keeps the call in.
    dialled = _call(asterisk, sipp_carrier, SILENT)

    assert dialled == [], f"a call got out although the gate never answered: {dialled}"
    assert "AGISTATUS=SUCCESS GATE_OK=no" in _gate_line(asterisk, SILENT)


def test_unreachable_gate_fails_closed(asterisk: Asterisk, sipp_carrier: SippCarrier, agi_stub: StubAgiServer) -> None:
    agi_stub.pause()
    try:
        # An allow-listed number, so that only the failure path can explain a missing INVITE.
        dialled = _call(asterisk, sipp_carrier, ALLOWED)
    finally:
        agi_stub.resume()

    assert dialled == [], f"a call got out with the gate down: {dialled}"
    assert "AGISTATUS=FAILURE GATE_OK=no" in _gate_line(asterisk, ALLOWED)
    # And the rig recovers: with the gate back, the same number goes out again.
    assert _call(asterisk, sipp_carrier, ALLOWED) == [ALLOWED]
