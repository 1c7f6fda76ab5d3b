"""The transport-independent parts of rpoguard.agi.protocol: parsing, quoting, the session state machine."""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rpoguard.agi.protocol import (
    MAX_COMMAND_BYTES,
    AgiConnectionLostError,
    AgiDeadChannelError,
    AgiError,
    AgiInvalidCommandError,
    AgiLineProtocol,
    AgiLineTooLongError,
    AgiProtocolError,
    AgiRequest,
    AgiResultError,
    AgiSession,
    AgiTimeoutError,
    AgiUsageError,
    encode_command,
    parse_env,
    parse_reply,
    quote_arg,
    read_request,
    split_script,
)
from support.agi_fakes import USAGE_520, parse_args


class ScriptedChannel:
    """A LineChannel fed from a list of lines; records what is written."""

    def __init__(self, lines: list[bytes]) -> None:
        self.lines = collections.deque(lines)
        self.written = b""

    async def readline(self) -> bytes | None:
        await asyncio.sleep(0)
        return self.lines.popleft() if self.lines else None

    def write(self, data: bytes) -> None:
        self.written += data

    async def drain(self) -> None:
        return None


# -- replies ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "result", "data", "fields"),
    [
        ("200 result=1", 1, None, {}),
        ("200 result=0 (timeout)", 0, "timeout", {}),
        ("200 result=-1 endpos=0", -1, None, {"endpos": "0"}),
        ("200 result=1 ()", 1, "", {}),
        ("200 result=1 (a (b) c) endpos=42 x=", 1, "a (b) c", {"endpos": "42", "x": ""}),
        ("200 result=1 (speech) endpos=0 results=1 0=hello world", 1, None, {}),
    ],
)
def test_parse_200_replies(line: str, result: int, data: str | None, fields: dict[str, str]) -> None:
    reply = parse_reply(line)
    assert (reply.code, reply.result, reply.data, dict(reply.fields)) == (200, result, data, fields)


@pytest.mark.parametrize("line", ["hello", "200 result=", "200 result=x", "20 result=1", ""])
def test_parse_reply_refuses_what_is_not_agi(line: str) -> None:
    with pytest.raises(AgiProtocolError):
        parse_reply(line)


@pytest.mark.parametrize(
    ("lines", "error"),
    [
        ([b"510 Invalid or unknown command"], AgiInvalidCommandError),
        ([b"511 Command Not Permitted on a dead channel or intercept routine"], AgiDeadChannelError),
        ([b"520 Invalid command syntax.  Proper usage not available."], AgiUsageError),
        (USAGE_520.splitlines(), AgiUsageError),
        ([b"200 result=-1"], AgiResultError),
        ([b"HANGUP", b"200 result=-1"], AgiResultError),
        ([], AgiConnectionLostError),
        ([b"HANGUP"], AgiConnectionLostError),
        (USAGE_520.splitlines()[:2], AgiConnectionLostError),
        ([b"300 what"], AgiProtocolError),
    ],
)
def test_session_turns_error_replies_into_typed_errors(run: Any, lines: list[bytes], error: type[AgiError]) -> None:
    async def scenario() -> None:
        channel = ScriptedChannel(lines)
        session = AgiSession(channel)
        with pytest.raises(error) as caught:
            await session.command("NOOP")
        assert channel.written == b"NOOP\n"
        if isinstance(caught.value, AgiUsageError) and len(lines) > 1:
            assert caught.value.text.splitlines() == [x.decode() for x in lines]
            assert caught.value.code == 520 and caught.value.command == "NOOP"

    run(scenario())


def test_session_reads_exactly_one_reply_per_command(run: Any) -> None:
    async def scenario() -> None:
        channel = ScriptedChannel(
            [b"HANGUP", b"100 result=0 Trying...", b"200 result=1", *USAGE_520.splitlines(), b"200 result=0"]
        )
        session = AgiSession(channel)
        assert (await session.command("GOSUB x s 1")).result == 1
        assert session.hung_up
        with pytest.raises(AgiUsageError):
            await session.command("SET VARIABLE")
        assert (await session.command("NOOP")).result == 0
        assert channel.lines == collections.deque()

    run(scenario())


@pytest.mark.parametrize("guarded", [False, True])
def test_no_command_is_sent_after_the_deadline(run: Any, guarded: bool) -> None:
    async def scenario() -> None:
        channel = ScriptedChannel([b"200 result=1"])
        session = AgiSession(channel, deadline=asyncio.get_running_loop().time() - 0.001, guarded=guarded)
        with pytest.raises(AgiTimeoutError):
            await session.set_variable("RPOGUARD_DECISION", "ALLOW")
        assert channel.written == b""

    run(scenario())


class Silent(ScriptedChannel):
    async def readline(self) -> bytes | None:
        await asyncio.sleep(10)
        return None


@pytest.mark.parametrize(
    ("deadline", "command_timeout", "guarded"),
    [(None, 0.05, False), (0.05, None, False), (0.05, 5.0, False), (5.0, 0.05, True)],
)
def test_the_wait_for_a_reply_is_bounded(
    run: Any, deadline: float | None, command_timeout: float | None, guarded: bool
) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        until = None if deadline is None else loop.time() + deadline
        session = AgiSession(Silent([]), deadline=until, command_timeout=command_timeout, guarded=guarded)
        started = loop.time()
        with pytest.raises(AgiTimeoutError):
            await session.command("NOOP")
        assert loop.time() - started < 1.0

    run(scenario())


def test_failure_is_written_once_and_ends_the_session(run: Any) -> None:
    async def scenario() -> None:
        channel = ScriptedChannel([])
        session = AgiSession(channel)
        await session.failure()
        await session.failure()
        assert channel.written == b"failure\n"
        with pytest.raises(AgiError):
            await session.command("NOOP")
        assert channel.written == b"failure\n"

    run(scenario())


# -- what we send ------------------------------------------------------------------------------------------


@given(st.text())
def test_quoted_value_reaches_asterisk_as_exactly_one_argument(value: str) -> None:
    line = "SET VARIABLE RPOGUARD_X " + quote_arg(value)
    expected = value.replace("\n", " ").replace("\r", " ").replace("\0", " ")
    assert parse_args(line) == ["SET", "VARIABLE", "RPOGUARD_X", expected]
    assert encode_command(line).count(b"\n") == 1


@pytest.mark.parametrize(
    "line", ["NOOP\nSET VARIABLE RPOGUARD_DECISION ALLOW", "A\rB", "A\0B", "x" * MAX_COMMAND_BYTES]
)
def test_commands_that_would_not_arrive_as_one_line_are_refused(line: str) -> None:
    with pytest.raises(ValueError, match="AGI command"):
        encode_command(line)


def test_longest_command_asterisk_reads_in_one_piece() -> None:
    assert len(encode_command("x" * (MAX_COMMAND_BYTES - 1))) == MAX_COMMAND_BYTES == 8191


# -- the environment --------------------------------------------------------------------------------------


def test_request_from_env() -> None:
    request = parse_env(
        [
            b"agi_network: yes",
            b"agi_network_script: /check/?campaign=Summer%20Sale&x=1&campaign=other",
            b"agi_callingpres: 35",
            b"agi_accountcode: ",
            b"agi_arg_1: 0612345678",
            b"agi_arg_2: C1",
            b"agi_arg_4: skipped, arg 3 is missing",
            b"agi_calleridname: a: b",
        ]
    )
    assert request.network
    assert request.network_script == "check"
    assert dict(request.query) == {"campaign": "Summer Sale", "x": "1"}
    assert request.args == ("0612345678", "C1")
    assert request.arg(2) == "C1" and request.arg(3) is None and request.arg(0) is None
    assert request.callingpres == 35
    assert request.env["agi_accountcode"] == ""
    assert request.env["agi_calleridname"] == "a: b"
    assert request.shift_args().args == ("C1",)
    with pytest.raises(TypeError):
        request.env["agi_network"] = "no"  # type: ignore[index]


def test_request_defaults_for_classic_agi() -> None:
    request = AgiRequest.from_env({"agi_request": "rpoguard-agi", "agi_callingpres": "junk"})
    assert not request.network
    assert request.network_script == ""
    assert request.callingpres is None
    assert request.uniqueid is None


def test_split_script_bounds_the_query() -> None:
    assert split_script("a/b/?") == ("a/b", {})
    with pytest.raises(AgiProtocolError):
        split_script("check?" + "&".join(f"k{i}=v" for i in range(100)))


def test_read_request_stops_at_the_blank_line_and_leaves_the_rest(run: Any) -> None:
    async def scenario() -> None:
        channel = ScriptedChannel([b"agi_network: yes", b"agi_arg_1: 1", b"", b"HANGUP"])
        request = await read_request(channel)
        assert request is not None and request.args == ("1",)
        assert list(channel.lines) == [b"HANGUP"]
        assert await read_request(ScriptedChannel([b"agi_network: yes"])) is None

    run(scenario())


# -- line splitting -----------------------------------------------------------------------------------------


def test_line_protocol_splits_joins_and_limits(run: Any) -> None:
    async def scenario() -> None:
        proto = AgiLineProtocol()
        proto.data_received(b"agi_a: 1\r\nagi_b")
        proto.data_received(b": 2\n\n" + b"x" * 8191 + b"\n")
        assert [await proto.readline() for _ in range(4)] == [b"agi_a: 1", b"agi_b: 2", b"", b"x" * 8191]
        proto.data_received(b"y" * 8192 + b"\n")
        with pytest.raises(AgiLineTooLongError):
            await proto.readline()

        partial = AgiLineProtocol()
        partial.data_received(b"z" * 8000)
        partial.data_received(b"z" * 192)
        with pytest.raises(AgiLineTooLongError):
            await partial.readline()

        ended = AgiLineProtocol()
        ended.data_received(b"last\n")
        ended.eof_received()
        assert await ended.readline() == b"last"
        assert await ended.readline() is None

    run(scenario())
