"""FastAgiServer against a fake Asterisk over a real loopback socket.

Every failure case asserts how Asterisk would read it: either the server wrote a line starting with
"failure" (AGISTATUS=FAILURE), or it never wrote RPOGUARD_DECISION=ALLOW; each test says which.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from rpoguard.agi.protocol import AgiRequest, AgiSession, AgiUsageError, Route
from rpoguard.agi.routes import build_routes
from rpoguard.agi.server import FastAgiServer
from rpoguard.cli.runner import serve_until_signalled
from rpoguard.config import ServeConfig
from rpoguard.constants import ATTEMPT_LIMIT, BLOCK, SOURCE_FASTAGI, VAR_OPTOUT
from rpoguard.gate import CallRequest, GateError, PendingVerdict, Verdict
from support.agi_env import RECORDED_CHECK_ENV
from support.agi_fakes import (
    ALLOW_VERDICT,
    BLOCK_VERDICT,
    USAGE_520,
    FakeGate,
    Transcript,
    asterisk_answer,
    make_env,
    play,
    raw_exchange,
)

EXPECTED_ALLOW = [
    # One round trip (AgiSession.set_variables) once the record is durable, the decision last.
    b'EXEC MSet "RPOGUARD_REASON=,RPOGUARD_REASONS=,RPOGUARD_NUMBER=+390612345678,RPOGUARD_ID=0193d5a0-allow,'
    b'RPOGUARD_DECISION=ALLOW"',
]
EXPECTED_BLOCK = [
    # The comma inside a value is escaped for MSet (\,), and that backslash for res_agi (\\,).
    b'EXEC MSet "RPOGUARD_REASON=rpo_registered,RPOGUARD_REASONS=rpo_registered\\\\,outside_hours,'
    b'RPOGUARD_NUMBER=+390612345678,RPOGUARD_ID=0193d5a0-block,RPOGUARD_DECISION=BLOCK"',
]


def wire(commands: list[bytes]) -> bytes:
    return b"".join(command + b"\n" for command in commands)


async def one_session(
    routes: Mapping[str, Route], env: bytes, server_options: dict[str, Any] | None = None, **play_options: Any
) -> Transcript:
    async with FastAgiServer(ServeConfig(port=0, **(server_options or {})), routes) as server:
        return await play(server.port, env, **play_options)


def reply_at(
    target: int, reply: bytes, *, prefix: bool = False
) -> Callable[[int, bytes, dict[str, str]], bytes | None]:
    """Answer command number ``target`` with ``reply`` (or, with prefix=True, ``reply`` then the real answer)."""

    def override(index: int, command: bytes, variables: dict[str, str]) -> bytes | None:
        if index != target:
            return None
        return reply + asterisk_answer(command, variables) if prefix else reply

    return override


def errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR]


# -- normal sessions ----------------------------------------------------------------------------------------


def test_recorded_allow_session_is_answered_byte_exact(run: Any) -> None:
    gate = FakeGate(ALLOW_VERDICT)
    t = run(one_session(build_routes(gate), RECORDED_CHECK_ENV))
    assert t.written == wire(EXPECTED_ALLOW)
    assert t.commands[-1].endswith(b',RPOGUARD_DECISION=ALLOW"')
    assert t.agistatus == "SUCCESS" and t.server_closed
    assert t.dialplan_allows
    assert t.variables["RPOGUARD_NUMBER"] == "+390612345678"
    (call,) = gate.calls
    assert call.raw_number == "0612345678"
    assert call.campaign_id == "C1"
    assert call.caller_id == "0694801234"
    assert call.source == SOURCE_FASTAGI
    assert call.uniqueid == "1732761234.17"
    assert call.channel == "Local/0612345678@outbound-acme-00000001;2"
    assert call.extra["agi_accountcode"] == ""
    assert call.extra["agi_request"] == "agi://127.0.0.1:4573/check?campaign=C1"
    assert call.extra["arg_1"] == "0612345678"


class ChangingGate(FakeGate):
    """A verdict that changes while its record is committed: ALLOW provisionally, BLOCK(attempt_limit)
    once durable, as when another call took the last attempt meanwhile. The commit waits for `release`."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def begin(self, call: CallRequest) -> PendingVerdict:
        self.calls.append(call)

        async def commit() -> Verdict:
            await self.release.wait()
            return Verdict(BLOCK, (ATTEMPT_LIMIT,), ALLOW_VERDICT.number, "0193d5a0-capped")

        return PendingVerdict(ALLOW_VERDICT, asyncio.get_running_loop().create_task(commit()))


def test_nothing_is_sent_before_the_record_is_durable_and_the_final_verdict_is_what_goes(run: Any) -> None:
    gate = ChangingGate()

    async def release_soon() -> None:
        await asyncio.sleep(0.05)
        gate.release.set()

    def override(index: int, command: bytes, variables: dict[str, str]) -> bytes | None:
        # The first command Asterisk sees comes after the commit ended.
        assert gate.release.is_set()
        return None

    async def scenario() -> Transcript:
        releaser = asyncio.ensure_future(release_soon())
        try:
            return await one_session(build_routes(gate), RECORDED_CHECK_ENV, override=override)
        finally:
            await releaser

    t = run(scenario())
    # ALLOW was provisional; the durable verdict (attempt cap taken meanwhile) is the one the channel gets.
    assert t.commands == [
        b'EXEC MSet "RPOGUARD_REASON=attempt_limit,RPOGUARD_REASONS=attempt_limit,'
        b'RPOGUARD_NUMBER=+390612345678,RPOGUARD_ID=0193d5a0-capped,RPOGUARD_DECISION=BLOCK"',
    ]
    assert not t.sent_allow and not t.dialplan_allows
    assert t.variables["RPOGUARD_REASON"] == ATTEMPT_LIMIT and t.variables["RPOGUARD_ID"] == "0193d5a0-capped"


@pytest.mark.parametrize("mset_reply", [b"200 result=-2\n", None])
def test_the_fallback_sets_one_variable_each_with_the_decision_last(run: Any, mset_reply: bytes | None) -> None:
    # Without MSet (EXEC answers -2), or with a value MSet could misread: one SET VARIABLE each, decision last.
    verdict = BLOCK_VERDICT if mset_reply else Verdict(BLOCK, ('a"b',), "+390612345678", "id-1")
    t = run(one_session(build_routes(FakeGate(verdict)), RECORDED_CHECK_ENV,
                         override=reply_at(0, mset_reply) if mset_reply else None))
    sets = [c for c in t.commands if c.startswith(b"SET VARIABLE")]
    assert [c.split(b" ")[2] for c in sets] == [b"RPOGUARD_REASON", b"RPOGUARD_REASONS", b"RPOGUARD_NUMBER",
                                                 b"RPOGUARD_ID", b"RPOGUARD_DECISION"]
    assert t.variables["RPOGUARD_DECISION"] == "BLOCK" and not t.dialplan_allows


def test_without_mset_the_variables_go_one_by_one(run: Any) -> None:
    # An Asterisk without MSet answers EXEC with result=-2: the route falls back and still ends right.
    t = run(one_session(build_routes(FakeGate(BLOCK_VERDICT)), RECORDED_CHECK_ENV,
                         override=reply_at(0, b"200 result=-2\n")))
    assert t.commands[1:] == [
        b'SET VARIABLE RPOGUARD_REASON "rpo_registered"',
        b'SET VARIABLE RPOGUARD_REASONS "rpo_registered,outside_hours"',
        b'SET VARIABLE RPOGUARD_NUMBER "+390612345678"',
        b'SET VARIABLE RPOGUARD_ID "0193d5a0-block"',
        b'SET VARIABLE RPOGUARD_DECISION "BLOCK"',
    ]
    assert t.variables["RPOGUARD_REASONS"] == "rpo_registered,outside_hours"
    assert t.agistatus == "SUCCESS"


@pytest.mark.parametrize("odd", ['a"b', "a b", "a(b", "x\\y", "[1]", "a=b;c", "${X}"])
def test_values_mset_could_misread_go_with_set_variable(run: Any, odd: str) -> None:
    verdict = Verdict(BLOCK, (odd,), "+390612345678", "id-1")
    t = run(one_session(build_routes(FakeGate(verdict)), RECORDED_CHECK_ENV))
    assert not any(c.startswith(b"EXEC") for c in t.commands), t.commands
    assert t.variables["RPOGUARD_REASON"] == odd and t.variables["RPOGUARD_REASONS"] == odd


def test_block_session_sets_every_variable_and_the_decision_last(run: Any) -> None:
    t = run(one_session(build_routes(FakeGate(BLOCK_VERDICT)), RECORDED_CHECK_ENV))
    assert t.written == wire(EXPECTED_BLOCK)
    assert t.agistatus == "SUCCESS"
    assert not t.dialplan_allows
    assert t.variables["RPOGUARD_REASONS"] == "rpo_registered,outside_hours"


def test_many_concurrent_sessions_each_get_their_own_answer(run: Any) -> None:
    gate = FakeGate(ALLOW_VERDICT, delay=0.01)

    async def scenario() -> list[Transcript]:
        async with FastAgiServer(ServeConfig(port=0), build_routes(gate)) as server:
            return await asyncio.gather(*(play(server.port, RECORDED_CHECK_ENV) for _ in range(64)))

    transcripts = run(scenario())
    assert all(t.written == wire(EXPECTED_ALLOW) for t in transcripts)
    assert len(gate.calls) == 64


def test_env_that_is_not_utf8_does_not_break_the_session(run: Any) -> None:
    # Values the decision does not read; those it reads are in test_agi_encoding.py.
    env = make_env(
        overrides={
            "agi_calleridname": b"M\xfcller \xff\xfe\x80",
            "agi_channel": b"PJSIP/caf\xe9-00000002",
        }
    )
    gate = FakeGate(ALLOW_VERDICT)
    t = run(one_session(build_routes(gate), env))
    assert t.written == wire(EXPECTED_ALLOW)
    (call,) = gate.calls
    assert call.caller_id == "0694801234"
    assert call.channel == "PJSIP/caf\ufffd-00000002"


@pytest.mark.parametrize(
    ("script", "args", "campaign"),
    [
        ("check?campaign=C1", ("0612345678",), "C1"),
        ("check?campaign=Summer%20Sale%2B1&foo=bar", ("0612345678", "C2"), "Summer Sale+1"),
        ("check?campaign=C1&campaign=C9", ("0612345678",), "C1"),
        ("check", ("0612345678", "C2"), "C2"),
        ("check?campaign=", ("0612345678", "C2"), "C2"),
        ("/check/?campaign=C1", ("0612345678",), "C1"),
        ("check", ("0612345678",), None),
    ],
)
def test_route_and_campaign_come_from_the_script_query_or_argument_2(
    run: Any, script: str, args: tuple[str, ...], campaign: str | None
) -> None:
    gate = FakeGate(ALLOW_VERDICT)
    t = run(one_session(build_routes(gate), make_env(script, args)))
    assert t.written == wire(EXPECTED_ALLOW)
    assert gate.calls[0].campaign_id == campaign


@pytest.mark.parametrize(
    ("args", "overrides", "number", "caller_id"),
    [
        (("0612345678",), {}, "0612345678", "0694801234"),
        ((), {"agi_extension": "0612345678"}, "0612345678", "0694801234"),
        (("",), {}, "", "0694801234"),  # an empty number is checked, not replaced by the extension "s"
        (("0612345678", "C1", "0298765432"), {}, "0612345678", "0298765432"),
        (("0612345678", "C1", ""), {}, "0612345678", "0694801234"),  # rpoguard.conf passes ${ARG3} always
        (("0612345678",), {"agi_callerid": "unknown"}, "0612345678", ""),
        (("0612345678",), {"agi_callingpres": "32"}, "0612345678", ""),  # prohib, not screened
        (("0612345678",), {"agi_callingpres": "33"}, "0612345678", ""),  # prohib, passed screen
        (("0612345678",), {"agi_callingpres": "67"}, "0612345678", ""),  # number not available
        (("0612345678",), {"agi_callingpres": "1"}, "0612345678", "0694801234"),  # allowed, passed screen
        (("0612345678", "C1", "0298765432"), {"agi_callingpres": "32"}, "0612345678", ""),
    ],
)
def test_number_and_caller_id_selection(
    run: Any, args: tuple[str, ...], overrides: dict[str, str], number: str, caller_id: str
) -> None:
    gate = FakeGate(ALLOW_VERDICT)
    run(one_session(build_routes(gate), make_env("check?campaign=C1", args, overrides=overrides)))
    assert gate.calls[0].raw_number == number
    assert gate.calls[0].caller_id == caller_id


# -- replies Asterisk can give --------------------------------------------------------------------------------


def test_hangup_before_the_reply_is_skipped_and_the_session_stays_in_sync(run: Any) -> None:
    t = run(one_session(build_routes(FakeGate()), RECORDED_CHECK_ENV, override=reply_at(0, b"HANGUP\n", prefix=True)))
    assert t.written == wire(EXPECTED_ALLOW)
    assert t.dialplan_allows


def test_hangup_queued_behind_the_env_means_no_decision(run: Any) -> None:
    # The channel hung up before the server read the request (a stalled server catching up on its
    # backlog): deciding now would record a decision for a call that never went out.
    gate = FakeGate(delay=0.05)
    t = run(one_session(build_routes(gate), RECORDED_CHECK_ENV, after_env=b"HANGUP\n"))
    assert t.commands == []
    assert not t.dialplan_allows
    assert gate.calls == []


def test_session_records_the_hangup_notice(run: Any) -> None:
    seen: list[bool] = []

    async def route(request: AgiRequest, session: AgiSession) -> None:
        await session.command("NOOP")
        seen.append(session.hung_up)

    t = run(one_session({"check": route}, RECORDED_CHECK_ENV, override=reply_at(0, b"HANGUP\n", prefix=True)))
    assert t.commands == [b"NOOP"]
    assert seen == [True]


def test_100_trying_is_intermediate(run: Any) -> None:
    t = run(
        one_session(
            build_routes(FakeGate()), RECORDED_CHECK_ENV, override=reply_at(0, b"100 result=0 Trying...\n", prefix=True)
        )
    )
    assert t.written == wire(EXPECTED_ALLOW)
    assert t.dialplan_allows


@pytest.mark.parametrize(
    "reply",
    [
        b"200 result=-1\n",
        b"510 Invalid or unknown command\n",
        b"511 Command Not Permitted on a dead channel or intercept routine\n",
        USAGE_520,
        b"520 Invalid command syntax.  Proper usage not available.\n",
        b"hello\n",
        b"200 result=\n",
        b"299 result=1\n",
    ],
    ids=["result-1", "510", "511", "520-multi", "520-single", "garbage", "no-result", "unknown-code"],
)
def test_error_reply_to_the_first_command_answers_failure_and_never_allows(run: Any, reply: bytes) -> None:
    t = run(one_session(build_routes(FakeGate()), RECORDED_CHECK_ENV, override=reply_at(0, reply)))
    # Exactly: the command, then the failure line, then the close. The command carried ALLOW (the record
    # was durable), but the failure line makes AGISTATUS=FAILURE: the dialplan's AND blocks.
    assert t.written == wire(EXPECTED_ALLOW) + b"failure\n"
    assert t.failed_closed and t.server_closed
    assert not t.dialplan_allows


def test_error_reply_to_the_decision_itself_still_reads_as_failure(run: Any) -> None:
    # Without MSet, one SET VARIABLE each, the decision last (command 5): ALLOW was sent, but the failure
    # line after it makes AGISTATUS=FAILURE.
    def replies(index: int, command: bytes, variables: dict[str, str]) -> bytes | None:
        return {0: b"200 result=-2\n", 5: b"200 result=-1\n"}.get(index)

    t = run(one_session(build_routes(FakeGate()), RECORDED_CHECK_ENV, override=replies))
    assert t.commands[-1] == b'SET VARIABLE RPOGUARD_DECISION "ALLOW"' and len(t.commands) == 6
    assert t.written.endswith(b'SET VARIABLE RPOGUARD_DECISION "ALLOW"\nfailure\n')
    assert t.failed_closed and not t.dialplan_allows


def test_multiline_520_is_read_whole_and_the_next_command_gets_its_own_reply(run: Any) -> None:
    seen: list[Any] = []

    async def route(request: AgiRequest, session: AgiSession) -> None:
        try:
            await session.set_variable("RPOGUARD_TEST", "before")
        except AgiUsageError as exc:
            seen.append(exc.text)
        seen.append(await session.command("NOOP"))
        await session.set_variable("RPOGUARD_TEST", "after")

    t = run(one_session({"check": route}, RECORDED_CHECK_ENV, override=reply_at(0, USAGE_520)))
    assert t.commands == [b'SET VARIABLE RPOGUARD_TEST "before"', b"NOOP", b'SET VARIABLE RPOGUARD_TEST "after"']
    assert seen[0] == USAGE_520.decode().rstrip("\n")
    assert seen[1].code == 200 and seen[1].result == 0
    assert t.variables["RPOGUARD_TEST"] == "after"
    assert t.agistatus == "SUCCESS"


def test_reply_fields_and_data_are_parsed(run: Any) -> None:
    seen: list[Any] = []

    async def route(request: AgiRequest, session: AgiSession) -> None:
        seen.append(await session.command('GET VARIABLE "X"'))

    t = run(
        one_session({"check": route}, RECORDED_CHECK_ENV, override=reply_at(0, b"200 result=1 (a (b) c) endpos=42\n"))
    )
    assert t.agistatus == "SUCCESS"
    assert (seen[0].result, seen[0].data, dict(seen[0].fields)) == (1, "a (b) c", {"endpos": "42"})


# -- what we send --------------------------------------------------------------------------------------------

QUOTING = [
    ('say "hi"', b'"say \\"hi\\""', 'say "hi"'),
    ("C:\\dir\\", b'"C:\\\\dir\\\\"', "C:\\dir\\"),
    ("one\ntwo\r\nthree\x00end", b'"one two  three end"', "one two  three end"),
    ("${SHELL(reboot)}", b'"${SHELL(reboot)}"', "${SHELL(reboot)}"),
    ("", b'""', ""),
    ("  spaced\ttab  ", b'"  spaced\ttab  "', "  spaced\ttab  "),
    ("M\u00fcller", b'"M\xc3\xbcller"', "M\u00fcller"),
    ('\\"', b'"\\\\\\""', '\\"'),
]


def test_set_variable_quoting_reaches_asterisk_as_one_exact_value(run: Any) -> None:
    async def route(request: AgiRequest, session: AgiSession) -> None:
        for i, (value, _, _) in enumerate(QUOTING):
            await session.set_variable(f"RPOGUARD_T{i}", value)

    t = run(one_session({"check": route}, RECORDED_CHECK_ENV))
    assert t.commands == [
        b"SET VARIABLE RPOGUARD_T%d " % i + wire_value for i, (_, wire_value, _) in enumerate(QUOTING)
    ]
    assert {f"RPOGUARD_T{i}": t.variables[f"RPOGUARD_T{i}"] for i in range(len(QUOTING))} == {
        f"RPOGUARD_T{i}": expected for i, (_, _, expected) in enumerate(QUOTING)
    }
    assert t.agistatus == "SUCCESS"


@pytest.mark.parametrize("name", ["BAD NAME", "FUNC(x)", "", "A\nB", 'Q"', "X-Y"])
def test_bad_variable_names_are_refused_before_sending(run: Any, name: str, caplog: pytest.LogCaptureFixture) -> None:
    async def route(request: AgiRequest, session: AgiSession) -> None:
        await session.set_variable(name, "x")

    t = run(one_session({"check": route}, RECORDED_CHECK_ENV))
    assert t.written == b"failure\n"
    assert t.failed_closed
    assert len(errors(caplog)) == 1


def test_a_command_too_long_for_asterisk_is_refused(run: Any) -> None:
    async def route(request: AgiRequest, session: AgiSession) -> None:
        await session.set_variable("RPOGUARD_X", "y" * 8200)

    t = run(one_session({"check": route}, RECORDED_CHECK_ENV))
    assert t.written == b"failure\n"


# -- broken or hostile peers ---------------------------------------------------------------------------------


def test_env_line_of_8193_bytes_is_a_protocol_error(run: Any) -> None:
    gate = FakeGate()
    # "agi_arg_1: " is 11 bytes and "\n" one more: the line is 8193 bytes.
    t = run(one_session(build_routes(gate), make_env(args=("9" * 8181,))))
    assert t.written == b"failure\n"
    assert t.failed_closed
    assert gate.calls == []


def test_env_line_of_8192_bytes_is_accepted(run: Any) -> None:
    gate = FakeGate()
    t = run(one_session(build_routes(gate), make_env(args=("9" * 8180,))))
    assert t.written == wire(EXPECTED_ALLOW)
    assert gate.calls[0].raw_number == "9" * 8180


def test_endless_line_without_newline_is_cut_off(run: Any) -> None:
    async def scenario() -> bytes:
        async with FastAgiServer(ServeConfig(port=0), build_routes(FakeGate())) as server:
            return await raw_exchange(
                server.port, make_env(terminate=False) + b"agi_x: " + b"z" * 20000, half_close=False
            )

    assert run(scenario()) == b"failure\n"


def test_reply_line_longer_than_the_limit_answers_failure(run: Any) -> None:
    t = run(
        one_session(
            build_routes(FakeGate()), RECORDED_CHECK_ENV, override=reply_at(0, b"200 result=1 (" + b"x" * 9000 + b")\n")
        )
    )
    assert t.written == wire(EXPECTED_ALLOW) + b"failure\n"
    assert t.failed_closed and not t.dialplan_allows


def test_too_many_env_lines_answer_failure(run: Any) -> None:
    gate = FakeGate()
    extra = {f"agi_extra_{i}": "x" for i in range(600)}
    t = run(one_session(build_routes(gate), make_env(overrides=extra)))
    assert t.written == b"failure\n"
    assert gate.calls == []


@pytest.mark.parametrize("bad", [b"this is not agi\n", b": no name\n", b"agi_channel: again\n"])
def test_malformed_env_answers_failure(run: Any, bad: bytes) -> None:
    gate = FakeGate()
    env = make_env(terminate=False) + bad + b"\n"
    t = run(one_session(build_routes(gate), env))
    assert t.written == b"failure\n"
    assert gate.calls == []


def test_peer_closing_before_the_blank_line_runs_nothing_and_the_server_carries_on(
    run: Any, caplog: pytest.LogCaptureFixture
) -> None:
    gate = FakeGate()

    async def scenario() -> tuple[bytes, bytes, Transcript]:
        async with FastAgiServer(ServeConfig(port=0), build_routes(gate)) as server:
            half = await raw_exchange(server.port, make_env(terminate=False)[:200])
            health_check = await raw_exchange(server.port, b"")
            # A full close (not a half-close) in the middle of a line.
            _, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"agi_network: yes\nagi_netw")
            await writer.drain()
            writer.close()
            await writer.wait_closed()
            await asyncio.sleep(0.05)
            normal = await play(server.port, RECORDED_CHECK_ENV)
            return half, health_check, normal

    half, health_check, normal = run(scenario())
    assert half == b"" and health_check == b""
    assert normal.written == wire(EXPECTED_ALLOW)
    assert len(gate.calls) == 1
    assert errors(caplog) == []


def test_peer_that_never_ends_the_env_gets_failure_at_the_deadline(run: Any) -> None:
    gate = FakeGate()

    async def scenario() -> tuple[bytes, float]:
        async with FastAgiServer(ServeConfig(port=0, session_deadline=0.3), build_routes(gate)) as server:
            loop = asyncio.get_running_loop()
            started = loop.time()
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(make_env(terminate=False))
            await writer.drain()
            got = await asyncio.wait_for(reader.read(), 5)
            elapsed = loop.time() - started
            writer.close()
            await writer.wait_closed()
            return got, elapsed

    got, elapsed = run(scenario())
    assert got == b"failure\n"
    assert 0.25 <= elapsed < 0.3 + 0.5
    assert gate.calls == []


def test_peer_vanishing_during_the_route_leaves_the_server_healthy(run: Any, caplog: pytest.LogCaptureFixture) -> None:
    gate = FakeGate(delay=0.1)

    async def scenario() -> Transcript:
        async with FastAgiServer(ServeConfig(port=0), build_routes(gate)) as server:
            _, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(RECORDED_CHECK_ENV)
            await writer.drain()
            await gate.entered.wait()
            writer.close()
            await writer.wait_closed()
            await asyncio.sleep(0.2)
            return await play(server.port, RECORDED_CHECK_ENV)

    t = run(scenario())
    assert t.written == wire(EXPECTED_ALLOW)
    assert errors(caplog) == []


# -- the gate misbehaving ------------------------------------------------------------------------------------


def test_gate_that_raises_answers_failure_logged_once_with_the_route(
    run: Any, caplog: pytest.LogCaptureFixture
) -> None:
    t = run(one_session(build_routes(FakeGate(error=RuntimeError("database is locked"))), RECORDED_CHECK_ENV))
    assert t.written == b"failure\n"
    assert t.failed_closed
    (record,) = errors(caplog)
    assert "'check'" in record.getMessage()
    assert record.exc_info is not None


def test_gate_slower_than_the_deadline_answers_failure_and_no_allow(run: Any) -> None:
    gate = FakeGate(delay=3.0)
    t = run(one_session(build_routes(gate), RECORDED_CHECK_ENV, server_options={"session_deadline": 0.3}))
    assert t.written == b"failure\n"
    assert t.failed_closed and not t.sent_allow
    assert t.elapsed < 1.5
    assert gate.finished == 0


def test_deadline_while_the_decision_awaits_its_reply_reads_as_failure(run: Any) -> None:
    # Asterisk answers after 0.5 s: the deadline hits while the decision's command waits for its reply.
    t = run(
        one_session(
            build_routes(FakeGate()), RECORDED_CHECK_ENV, server_options={"session_deadline": 0.4}, reply_delay=0.5
        )
    )
    assert t.failed_closed and not t.dialplan_allows
    assert t.commands == EXPECTED_ALLOW
    assert t.written.endswith(b"failure\n")


def test_optout_records_and_answers_ok(run: Any) -> None:
    gate = FakeGate()
    t = run(one_session(build_routes(gate), make_env("optout", ("0612345678", "C7"))))
    assert t.written == b'SET VARIABLE RPOGUARD_OPTOUT "OK"\n'
    assert VAR_OPTOUT == "RPOGUARD_OPTOUT"
    assert t.variables[VAR_OPTOUT] == "OK" and t.agistatus == "SUCCESS"
    (request,) = gate.optouts
    assert (request.raw_number, request.campaign_id, request.source) == ("0612345678", "C7", SOURCE_FASTAGI)
    assert request.uniqueid == "1732761234.17"


def test_optout_is_recorded_even_after_the_caller_hung_up(run: Any) -> None:
    # "Non chiamatemi più" and the line drops: the refusal still counts, unlike a check for a dead call.
    gate = FakeGate()
    run(one_session(build_routes(gate), make_env("optout?campaign=C7", ("0612345678",)), after_env=b"HANGUP\n"))
    (request,) = gate.optouts
    assert request.raw_number == "0612345678" and request.campaign_id == "C7"


def test_optout_refused_by_the_gate_answers_failure(run: Any, caplog: pytest.LogCaptureFixture) -> None:
    gate = FakeGate(optout_error=GateError("invalid_number", "not a valid telephone number"))
    t = run(one_session(build_routes(gate), make_env("optout?campaign=C7", ("12",))))
    assert t.written == b"failure\n"
    assert t.failed_closed
    assert any("invalid_number" in r.getMessage() and "'optout'" in r.getMessage() for r in caplog.records)


# -- routing and server management ---------------------------------------------------------------------------


@pytest.mark.parametrize("script", ["nosuch?campaign=C1", None, "check/extra", "CHECK"])
def test_unknown_route_answers_failure(run: Any, script: str | None, caplog: pytest.LogCaptureFixture) -> None:
    gate = FakeGate()
    t = run(one_session(build_routes(gate), make_env(script)))
    assert t.written == b"failure\n"
    assert t.failed_closed
    assert gate.calls == []
    assert any("no route" in r.getMessage() for r in caplog.records)


def test_connection_cap_answers_failure_at_once_and_logs_once(run: Any, caplog: pytest.LogCaptureFixture) -> None:
    gate = FakeGate(delay=0.5)

    async def scenario() -> tuple[Transcript, Transcript, Transcript]:
        async with FastAgiServer(ServeConfig(port=0, max_connections=1), build_routes(gate)) as server:
            first = asyncio.create_task(play(server.port, RECORDED_CHECK_ENV))
            await gate.entered.wait()
            second = await play(server.port, RECORDED_CHECK_ENV)
            third = await play(server.port, RECORDED_CHECK_ENV)
            return await first, second, third

    first, second, third = run(scenario())
    assert first.written == wire(EXPECTED_ALLOW)
    for turned_away in (second, third):
        assert turned_away.written == b"failure\n"
        assert turned_away.failed_closed
        assert turned_away.elapsed < 0.4
    assert len(gate.calls) == 1
    limit_logs = [r for r in caplog.records if "connection limit of 1" in r.getMessage()]
    assert len(limit_logs) == 1


def test_graceful_stop_lets_the_session_in_flight_finish(run: Any) -> None:
    gate = FakeGate(delay=0.3)

    async def scenario() -> Transcript:
        server = FastAgiServer(ServeConfig(port=0), build_routes(gate))
        await server.start()
        port = server.port
        session = asyncio.create_task(play(port, RECORDED_CHECK_ENV))
        await gate.entered.wait()
        await server.stop(grace=2.0)
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)
        assert server.sockets == ()
        return await session

    t = run(scenario())
    assert t.written == wire(EXPECTED_ALLOW)
    assert t.dialplan_allows


def test_stop_past_grace_answers_failure_to_what_is_left(run: Any) -> None:
    gate = FakeGate(delay=5.0)

    async def scenario() -> Transcript:
        server = FastAgiServer(ServeConfig(port=0, session_deadline=10.0), build_routes(gate))
        await server.start()
        session = asyncio.create_task(play(server.port, RECORDED_CHECK_ENV))
        await gate.entered.wait()
        await server.stop(grace=0.2)
        return await session

    t = run(scenario())
    assert t.written == b"failure\n"
    assert t.failed_closed and not t.sent_allow


def test_port_zero_binds_a_free_port_and_exposes_the_sockets(run: Any) -> None:
    async def scenario() -> None:
        server = FastAgiServer(ServeConfig(port=0), {})
        with pytest.raises(RuntimeError):
            _ = server.port
        await server.start()
        assert server.port > 0
        assert server.sockets[0].getsockname()[1] == server.port
        await server.stop()
        await server.stop()  # idempotent

    run(scenario())


def test_clients_outside_allowed_clients_are_answered_failure(run: Any, caplog: pytest.LogCaptureFixture) -> None:
    gate = FakeGate()

    async def scenario() -> Transcript:
        async with FastAgiServer(ServeConfig(port=0, allowed_clients=("10.0.0.0/8",)), build_routes(gate)) as server:
            return await play(server.port, RECORDED_CHECK_ENV)

    t = run(scenario())
    assert t.written == b"failure\n"
    assert gate.calls == []
    assert any("allowed_clients" in r.getMessage() for r in caplog.records)


def test_allowed_clients_admit_loopback(run: Any) -> None:
    async def scenario() -> Transcript:
        config = ServeConfig(port=0, allowed_clients=("127.0.0.0/8",))
        async with FastAgiServer(config, build_routes(FakeGate())) as server:
            return await play(server.port, RECORDED_CHECK_ENV)

    assert run(scenario()).written == wire(EXPECTED_ALLOW)


def test_binding_beyond_loopback_needs_allowed_clients() -> None:
    with pytest.raises(ValueError, match="allowed_clients"):
        FastAgiServer(ServeConfig(host="0.0.0.0", port=0), {})
    FastAgiServer(ServeConfig(host="0.0.0.0", port=0, allowed_clients=("192.0.2.10",)), {})


class _ServedFastAgi:
    """The FastAGI server as the runner drives `rpoguard serve`."""

    name = "FastAGI server"

    def __init__(self, server: FastAgiServer) -> None:
        self.server = server

    async def start(self) -> None:
        await self.server.start()

    async def serve(self) -> None:
        await self.server.serve_forever()

    async def stop(self) -> None:
        await self.server.stop(1.0)

    async def close(self) -> None:
        """Nothing beyond what stop() closes."""


def test_the_runner_stops_the_server_on_sigterm(run: Any) -> None:
    async def scenario() -> None:
        server = FastAgiServer(ServeConfig(port=0), build_routes(FakeGate()))
        await server.start()
        task = asyncio.create_task(serve_until_signalled(_ServedFastAgi(server)))
        await asyncio.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(task, 5)
        assert server.sockets == ()

    run(scenario())
