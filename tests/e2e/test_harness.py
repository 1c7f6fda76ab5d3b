"""The e2e rig proves itself without the product: a FastAGI stub decides, SIPp shows what got out.

If these pass, a failing product e2e test points at the product, not at Asterisk, SIPp or the harness.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from .harness import (
    AmiClient,
    AmiUser,
    Asterisk,
    CarrierCall,
    HarnessError,
    SippCarrier,
    StartAsterisk,
    free_tcp_port,
    parse_calls,
    tail,
)

pytestmark = pytest.mark.e2e

logger = logging.getLogger(__name__)

DIALPLAN = Path(__file__).with_name("dialplan_harness.conf")
CONTEXT = "e2e-harness-out"
ALLOWED = "+390612345678"
BLOCKED = "+390698765432"
# The stub closes the connection without a word for this one, like a server whose handler crashed.
SILENT = "+390611111111"
CALLER_ID = "+390287654321"
# Dialled straight on the trunk, never through the gate's dialplan.
TRUNK_NUMBER = "+393331234567"
TRUNK = f"PJSIP/{TRUNK_NUMBER}@carrier"
WATCHER = "watcher"


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
def watcher_secret() -> str:
    return secrets.token_hex(8)


@pytest.fixture(scope="module")
def asterisk(start_asterisk: StartAsterisk, agi_stub: StubAgiServer, watcher_secret: str) -> Iterator[Asterisk]:
    # With everything a call watcher needs on: CDR and CEL files, an AMI user of its own.
    asterisk = start_asterisk(
        DIALPLAN,
        dialplan_globals={"E2E_AGI_PORT": str(agi_stub.port)},
        cdr=True,
        cel=True,
        ami_users={WATCHER: AmiUser(watcher_secret, read="call,system", write="")},
        ami_general={"channelvars": "GATE_OK"},
    )
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


# --------------------------------------------------------------------------------------------- carrier


def _wait(predicate: Callable[[], bool], what: str, timeout: float = 10) -> None:
    """Wait for something the rig writes asynchronously (SIPp's trace, Asterisk's CDR/CEL threads)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"after {timeout} s still no {what}")
        time.sleep(0.1)


def _finished(calls: list[CarrierCall]) -> bool:
    # Over at the carrier: BYE received, or a final answer other than 200 sent.
    return bool(calls) and all(call.bye or call.final_status not in (0, 200) for call in calls)


def test_ringing_carrier_answers_after_the_ring_time(asterisk: Asterisk, sipp_carrier: SippCarrier) -> None:
    ring = 2.0
    with sipp_carrier.ringing(ring):
        since = sipp_carrier.checkpoint()
        result = asterisk.originate_channel(TRUNK, caller_id=CALLER_ID, timeout=10)
        asterisk.wait_calls_settled()
        calls = sipp_carrier.wait_for_calls(_finished, since)

    assert result.answered, result
    [call] = calls
    logger.info("ringing carrier: %s", call)
    assert (call.number, call.answered, call.cancelled, call.bye) == (TRUNK_NUMBER, True, False, True)
    assert call.invited_at is not None and call.answered_at is not None
    # SIPp's own timestamps: the 200 went out no earlier than the scenario's ring time after the INVITE.
    assert call.answered_at - call.invited_at >= timedelta(seconds=ring)


def test_call_hung_up_while_ringing_is_cancelled(asterisk: Asterisk, sipp_carrier: SippCarrier) -> None:
    cdr_before = len(asterisk.cdr_records())
    with sipp_carrier.ringing(20):
        since = sipp_carrier.checkpoint()
        # Asterisk gives up after 1 s, long before the carrier would answer: it must CANCEL.
        result = asterisk.originate_channel(TRUNK, caller_id=CALLER_ID, timeout=1)
        asterisk.wait_calls_settled()
        calls = sipp_carrier.wait_for_calls(_finished, since)
        errors = tail(sipp_carrier.error_log, 20)

    assert not result.answered, result
    [call] = calls
    logger.info("cancelled call: %s", call)
    assert (call.number, call.cancelled, call.answered, call.bye) == (TRUNK_NUMBER, True, False, False)
    assert call.final_status == 487
    assert "Aborting call" not in errors, errors

    def rows() -> list[dict[str, str]]:
        return asterisk.cdr_records()[cdr_before:]

    # cdr.conf has unanswered = yes, so the call that rang and was never answered has its row too.
    _wait(lambda: bool(rows()), f"CDR row for the cancelled call in {asterisk.cdr_csv}")
    [row] = rows()
    assert row["channel"].startswith("PJSIP/carrier-") and row["disposition"] == "NO ANSWER", row
    assert row["answer"] == "", row


def test_calls_read_a_cancelled_call_from_a_trace() -> None:
    trace = "\n".join(
        [
            "----------------------------------------------- 2026-12-03T16:07:00.920521Z",
            "UDP message received [509] bytes:",
            "",
            "INVITE sip:+393331234567@127.0.0.1:5070 SIP/2.0",
            "Call-ID: abc",
            "CSeq: 102 INVITE",
            "",
            "----------------------------------------------- 2026-12-03T16:07:00.920733Z",
            "UDP message sent [309] bytes:",
            "",
            "SIP/2.0 180 Ringing",
            "Call-ID: abc",
            "CSeq: 102 INVITE",
            "",
            "----------------------------------------------- 2026-12-03T16:07:01.5Z",
            "UDP message received [309] bytes:",
            "",
            "CANCEL sip:+393331234567@127.0.0.1:5070 SIP/2.0",
            "i: abc",
            "CSeq: 102 CANCEL",
            "",
            "----------------------------------------------- 2026-12-03T16:07:01.6Z",
            "UDP message sent [309] bytes:",
            "",
            "SIP/2.0 200 OK",
            "Call-ID: abc",
            "CSeq: 102 CANCEL",
            "",
            "----------------------------------------------- 2026-12-03T16:07:01.7Z",
            "UDP message sent [309] bytes:",
            "",
            "SIP/2.0 487 Request Terminated",
            "Call-ID: abc",
            "CSeq: 102 INVITE",
            "",
        ]
    )

    [call] = parse_calls(trace)

    assert (call.number, call.call_id, call.cancelled, call.answered, call.final_status) == (
        "+393331234567", "abc", True, False, 487,
    )  # fmt: skip
    assert call.invited_at is not None and call.invited_at.isoformat() == "2026-12-03T16:07:00.920521+00:00"
    assert call.invited_us == 1796314020920521


# --------------------------------------------------------------------------------------------- CDR, CEL


def test_cdr_and_cel_record_a_gated_dial(asterisk: Asterisk, sipp_carrier: SippCarrier) -> None:
    cdr_before, cel_before = len(asterisk.cdr_records()), len(asterisk.cel_events())

    assert _call(asterisk, sipp_carrier, ALLOWED) == [ALLOWED]

    def dials() -> list[dict[str, str]]:
        return [row for row in asterisk.cdr_records()[cdr_before:] if row["lastapp"] == "Dial"]

    _wait(lambda: bool(dials()), f"CDR row for the Dial in {asterisk.cdr_csv}")
    [dial] = dials()
    logger.info("CDR of a gated Dial: %s", dial)
    assert dial["dst"] == ALLOWED and dial["src"] == CALLER_ID, dial
    assert dial["lastdata"] == f"PJSIP/{ALLOWED}@carrier,10", dial
    assert dial["dstchannel"].startswith("PJSIP/carrier-"), dial
    assert dial["disposition"] == "ANSWERED" and dial["uniqueid"], dial

    caller = dial["uniqueid"]

    def events() -> list[dict[str, str]]:
        return asterisk.cel_events()[cel_before:]

    # LINKEDID_END is the last event of the call: every other one is written by then.
    _wait(lambda: any(e["eventtype"] == "LINKEDID_END" for e in events()), f"LINKEDID_END in {asterisk.cel_csv}")
    for event in events():
        logger.info("CEL: %s", event)
    of_caller = [e for e in events() if e["uniqueid"] == caller]
    apps = [(e["eventtype"], e["appname"]) for e in of_caller if e["eventtype"] == "APP_START"]
    assert apps == [("APP_START", "AGI"), ("APP_START", "Dial")], of_caller
    [trunk_start] = [e for e in events() if e["eventtype"] == "CHAN_START" and e["channame"] == dial["dstchannel"]]
    # The trunk leg carries the caller's linkedid, which is what ties it to the gate's decision.
    assert trunk_start["linkedid"] == of_caller[0]["linkedid"] != trunk_start["uniqueid"], trunk_start


def test_straight_to_trunk_originate_reaches_the_carrier_without_the_gate(
    asterisk: Asterisk, sipp_carrier: SippCarrier, agi_stub: StubAgiServer
) -> None:
    since = sipp_carrier.checkpoint()
    asked = len(agi_stub.requests)
    cdr_before, cel_before = len(asterisk.cdr_records()), len(asterisk.cel_events())

    result = asterisk.originate_channel(TRUNK, caller_id=CALLER_ID)
    asterisk.wait_calls_settled()

    assert result.answered and result.channel.startswith("PJSIP/carrier-"), result
    calls = sipp_carrier.wait_for_calls(_finished, since)
    assert [(call.number, call.answered) for call in calls] == [(TRUNK_NUMBER, True)]
    assert agi_stub.requests[asked:] == [], "the gate was asked, so the dialplan ran"

    def rows() -> list[dict[str, str]]:
        return [row for row in asterisk.cdr_records()[cdr_before:] if row["channel"] == result.channel]

    _wait(lambda: bool(rows()), f"CDR row for {result.channel} in {asterisk.cdr_csv}")
    [row] = rows()
    logger.info("CDR of a straight-to-trunk originate: %s", row)
    assert (row["lastapp"], row["lastdata"], row["dstchannel"], row["src"]) == ("Wait", "1", "", CALLER_ID), row
    _wait(
        lambda: any(e["eventtype"] == "LINKEDID_END" for e in asterisk.cel_events()[cel_before:]),
        f"LINKEDID_END in {asterisk.cel_csv}",
    )
    events = asterisk.cel_events()[cel_before:]
    for event in events:
        logger.info("CEL: %s", event)
    [start] = [e for e in events if e["eventtype"] == "CHAN_START"]
    # Nothing came before the trunk leg: it starts its own call.
    assert (start["channame"], start["uniqueid"]) == (result.channel, row["uniqueid"]), start
    assert start["linkedid"] == start["uniqueid"], start


# --------------------------------------------------------------------------------------------- AMI


def test_ami_down_disconnects_clients_and_ami_up_accepts_them_again(
    asterisk: Asterisk, sipp_carrier: SippCarrier, watcher_secret: str
) -> None:
    port = asterisk.ami_port
    client = AmiClient(port, WATCHER, watcher_secret, events="on")
    try:
        asterisk.ami_down()
        assert client.wait_closed(timeout=10), "the AMI client stayed connected after ami_down"
    finally:
        client.close()
    try:
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        with pytest.raises(HarnessError, match="ami_down"):
            asterisk.originate_channel(TRUNK, caller_id=CALLER_ID)
        # Asterisk itself goes on placing calls without AMI (the CLI needs none).
        since = sipp_carrier.checkpoint()
        asterisk.cli(f"channel originate {TRUNK} application Wait 1")
        asterisk.wait_calls_settled()
        assert [call.number for call in sipp_carrier.wait_for_calls(_finished, since)] == [TRUNK_NUMBER]
    finally:
        asterisk.ami_up()

    assert asterisk.ami_port == port
    again = AmiClient(port, WATCHER, watcher_secret, events="off")
    again.close()
    # And the harness's own connection is back: originate works again.
    since = sipp_carrier.checkpoint()
    assert asterisk.originate_channel(TRUNK, caller_id=CALLER_ID).answered
    asterisk.wait_calls_settled()
    assert [call.number for call in sipp_carrier.wait_for_calls(_finished, since)] == [TRUNK_NUMBER]
