"""Values that try to inject dialplan or AGI syntax reach Asterisk as exactly one variable with that value.

Every SET VARIABLE the check route sends is split with agi_fakes.parse_args, which follows res_agi's
parse_args (spaces and tabs split outside quotes, ``"`` toggles quoting, ``\\`` takes the next character
literally): it must give exactly four words, the expected variable name, and the original value, except
for the one documented replacement (protocol.quote_arg: LF, CR and NUL cannot travel inside a command
line, so each becomes one space). ``${...}`` and ``$[...]`` need nothing: SET VARIABLE stores the value
without substitution.

The values come from a gate that returns them in its verdict (reasons, number, decision id), and from
the request itself: a campaign id in the script's query string, the number argument, the caller ID and
the channel name, echoed back by a gate that copies them into its verdict. A value too long for one
command line (res_agi reads at most 8191 bytes) must end in ``failure`` with no ALLOW ever sent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final
from urllib.parse import quote

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from rpoguard.agi.protocol import MAX_COMMAND_BYTES, Route, quote_arg
from rpoguard.agi.routes import build_routes
from rpoguard.agi.server import FastAgiServer
from rpoguard.config import Config, ServeConfig
from rpoguard.constants import (
    ALLOW,
    BLOCK,
    CHANNEL_ALLOW,
    CHANNEL_BLOCK,
    INVALID_NUMBER,
    VAR_DECISION,
    VAR_ID,
    VAR_NUMBER,
    VAR_REASON,
    VAR_REASONS,
)
from rpoguard.gate import CallRequest, Gate, Verdict
from support.agi_fakes import FakeGate, Transcript, make_env, parse_args, play, separate_app_args, strip_quoted
from support.aio import run_once
from support.fuzz import fuzz_settings

ORDER: Final = (VAR_REASON, VAR_REASONS, VAR_NUMBER, VAR_ID, VAR_DECISION)
UNSENDABLE: Final = str.maketrans({"\n": " ", "\r": " ", "\0": " "})

HOSTILE: Final = [
    '"',
    '\\"',
    "\\",
    "abc\\",
    '" "',
    '"; EXEC System(rm -rf /) ;"',
    "x\nSET VARIABLE RPOGUARD_DECISION ALLOW",
    "x\r\nEXEC Dial(PJSIP/666)",
    "a\0b",
    "\n200 result=1\n",
    "${EXTEN}",
    "${SHELL(reboot)}",
    "$[1+1]",
    ")",
    "FUNC(x)",
    "a,b,c",
    "a;b",
    "a|b",
    "\t tab \t",
    "  leading and trailing  ",
    "",
    " ",
    "'single'",
    "`backtick`",
    "%0A%22",
    "\x1b[31mred\x1b[0m",
    "\u2028\u2029\x85",
    "M\u00fcller \u00e9\u00e8 \U0001f4de",
    "\\n\\r\\0",
    "RPOGUARD_DECISION",
    "ALLOW",
    "failure",
    "HANGUP",
    "x" * 2000,
    '"\\' * 500,
]


def expected(value: str) -> str:
    return value.translate(UNSENDABLE)


def commands_of(t: Transcript) -> dict[str, str]:
    """Every SET VARIABLE, and every EXEC MSet, split the way Asterisk splits them (res_agi's parse_args,
    then the application-argument parser); checks the shape of each on the way."""
    values: dict[str, str] = {}
    for raw in t.commands:
        assert b"\n" not in raw and b"\r" not in raw and b"\0" not in raw, raw
        assert len(raw) + 1 <= MAX_COMMAND_BYTES, len(raw)
        words = parse_args(raw.decode("utf-8"))
        if [w.upper() for w in words[:2]] == ["EXEC", "MSET"]:
            assert len(words) == 3, (raw, words)
            pairs = [pair.partition("=") for pair in separate_app_args(words[2])]
            assert all(sep for _, sep, _ in pairs), (raw, pairs)
            settings = [(name, strip_quoted(value)) for name, _, value in pairs]
        else:
            assert len(words) == 4, (raw, words)
            assert [w.upper() for w in words[:2]] == ["SET", "VARIABLE"], raw
            settings = [(words[2], words[3])]
        for name, value in settings:
            assert name not in values, ("set twice", name)
            values[name] = value
    return values


def check_transcript(t: Transcript, verdict: Verdict) -> None:
    reason = verdict.reasons[0] if verdict.reasons else ""
    want = {
        VAR_REASON: expected(reason),
        VAR_REASONS: expected(",".join(verdict.reasons)),
        VAR_NUMBER: expected(verdict.number or ""),
        VAR_ID: expected(verdict.decision_id or ""),
        VAR_DECISION: CHANNEL_ALLOW if verdict.allowed else CHANNEL_BLOCK,
    }
    assert t.agistatus == "SUCCESS" and not t.failure, t.written[:500]
    values = commands_of(t)
    assert list(values) == list(ORDER)  # one each, decision last
    assert values == want
    # What the fake Asterisk stored after applying each command is the same thing.
    assert {name: t.variables[name] for name in ORDER} == want
    assert t.dialplan_allows == verdict.allowed


async def one_session(routes: Mapping[str, Route], env: bytes) -> Transcript:
    async with FastAgiServer(ServeConfig(port=0, session_deadline=2.0), routes) as server:
        return await play(server.port, env)


def session(routes: Mapping[str, Route], env: bytes) -> Transcript:
    return run_once(one_session(routes, env), timeout=20)


def campaign_env(campaign: str, args: tuple[str | bytes, ...] = ("0612345678",), **overrides: str | bytes) -> bytes:
    """The environment for AGI(agi://.../check?campaign=${URIENCODE(campaign)},...), as rpoguard.conf writes it."""
    script = "check?campaign=" + quote(campaign, safe="")
    return make_env(script, args, overrides=overrides or None)


# -- values in the verdict ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", HOSTILE, ids=[repr(v[:24]) + f"x{len(v)}" for v in HOSTILE])
@pytest.mark.parametrize("decision", [ALLOW, BLOCK])
def test_hostile_verdict_values_arrive_as_one_exact_value(value: str, decision: str) -> None:
    verdict = Verdict(decision=decision, reasons=(value, "x," + value), number=value, decision_id=value + "#id")
    gate = FakeGate(verdict)
    t = session(build_routes(gate), campaign_env(value))
    check_transcript(t, verdict)
    # The campaign in the query string arrives exactly (empty means "none given": routes/common.py).
    assert gate.calls[0].campaign_id == (value or None)


injection_text = st.text(
    st.one_of(
        st.characters(exclude_categories=("Cs",)),
        st.sampled_from(['"', "\\", "\n", "\r", "\0", "\t", " ", "$", "{", "}", "[", "]", "(", ")", ",", ";", "'"]),
    ),
    max_size=300,
)


@fuzz_settings(max_examples=60)
@given(
    reasons=st.lists(injection_text, max_size=3), number=injection_text, decision_id=injection_text, allow=st.booleans()
)
@example(reasons=['"\\'], number="\\", decision_id='"', allow=True)
@example(reasons=["\n"], number="\r", decision_id="\0", allow=True)
def test_any_verdict_text_arrives_as_one_exact_value(
    reasons: list[str], number: str, decision_id: str, allow: bool
) -> None:
    verdict = Verdict(ALLOW if allow else BLOCK, tuple(reasons), number, decision_id)
    check_transcript(session(build_routes(FakeGate(verdict)), make_env()), verdict)


@fuzz_settings(max_examples=1000)
@given(value=st.text(st.characters(exclude_categories=("Cs",)), max_size=100))
def test_quote_arg_makes_exactly_one_argument(value: str) -> None:
    # Pure and cheap, so many more examples than the sessions above: the quoting rule itself.
    words = parse_args(f"SET VARIABLE RPOGUARD_X {quote_arg(value)}")
    assert words == ["SET", "VARIABLE", "RPOGUARD_X", expected(value)]


# -- values from the request, echoed back by the gate --------------------------------------------------------------


class EchoGate(FakeGate):
    """Puts what the request carried into the verdict, the way a careless gate might."""

    async def check(self, call: CallRequest) -> Verdict:
        self.calls.append(call)
        return Verdict(
            ALLOW,
            (call.campaign_id or "", call.caller_id or ""),
            call.raw_number,
            call.channel,
        )


env_safe_text = st.text(
    st.one_of(
        st.characters(exclude_categories=("Cs",), exclude_characters="\n\r"),
        st.sampled_from(['"', "\\", "\0", "\t", "$", "{", "}", "[", "]", "(", ")", ",", ";", "?", "&", "=", "%", "+"]),
    ),
    max_size=200,
)


@fuzz_settings(max_examples=60)
@given(campaign=injection_text.filter(bool), number=env_safe_text, caller=env_safe_text, channel=env_safe_text)
@example(campaign="${EXTEN}\n", number='"', caller="\\", channel='PJSIP/x" EXEC Dial(y)')
def test_request_values_echoed_back_arrive_exactly(campaign: str, number: str, caller: str, channel: str) -> None:
    # The env carries raw bytes up to the end of the line, so number, caller ID and channel can hold anything
    # but LF and CR; the campaign is URL-encoded in the query (rpoguard.conf uses URIENCODE) and can hold both.
    gate = EchoGate()
    env = campaign_env(campaign, (number,), agi_callerid=caller, agi_channel=channel)
    t = session(build_routes(gate), env)
    (call,) = gate.calls
    assert call.campaign_id == campaign
    assert call.raw_number == number
    assert call.channel == channel
    shown_caller = caller.strip()
    assert call.caller_id == ("" if shown_caller.lower() == "unknown" else shown_caller)
    check_transcript(t, Verdict(ALLOW, (campaign, call.caller_id), number, channel))


# -- what cannot be sent ----------------------------------------------------------------------------------------------


def _id_for_command_bytes(size: int) -> str:
    """A decision id that makes 'SET VARIABLE RPOGUARD_ID "<id>"\\n' exactly ``size`` bytes."""
    overhead = len(b'SET VARIABLE RPOGUARD_ID ""\n')
    return "i" * (size - overhead)


def test_longest_value_asterisk_reads_in_one_piece_is_sent() -> None:
    verdict = Verdict(ALLOW, (), "+390612345678", _id_for_command_bytes(MAX_COMMAND_BYTES))
    t = session(build_routes(FakeGate(verdict)), make_env())
    check_transcript(t, verdict)


@pytest.mark.parametrize(
    ("where", "value"),
    [
        ("decision_id", _id_for_command_bytes(MAX_COMMAND_BYTES + 1)),
        ("decision_id", '"' * 5000),  # short as text, over the limit once escaped
        ("number", "\\" * 4096),
        ("reason", "x" * 100_000),
        ("number", "\ud800"),  # a lone surrogate cannot be encoded: refused, not sent as junk
    ],
    ids=["one-byte-over", "quotes-escaped-over", "backslashes-escaped-over", "100k", "lone-surrogate"],
)
def test_value_that_cannot_travel_ends_in_failure_without_allow(
    where: str, value: str, caplog: pytest.LogCaptureFixture
) -> None:
    fields: dict[str, Any] = {"reasons": (), "number": "+390612345678", "decision_id": "id"}
    if where == "reason":
        fields["reasons"] = (value,)
    else:
        fields[where] = value
    verdict = Verdict(ALLOW, fields["reasons"], fields["number"], fields["decision_id"])
    t = session(build_routes(FakeGate(verdict)), make_env())
    assert t.failure and t.agistatus == "FAILURE"
    assert not t.sent_allow and not t.dialplan_allows
    assert t.written.endswith(b"failure\n")
    # Whatever was sent before the refusal was sent whole.
    for name, sent in commands_of(t).items():
        assert name != VAR_DECISION
        assert sent == expected({VAR_REASON: "", VAR_REASONS: "", VAR_NUMBER: "+390612345678"}.get(name, sent))


# -- the real gate ------------------------------------------------------------------------------------------------


def test_real_gate_blocks_hostile_requests_and_sends_only_clean_values(store: Any, run: Callable[[Any], Any]) -> None:
    gate = Gate(store, Config())
    campaign = '${EXTEN}"\\;,)$[1+1]\n'
    numbers = ['"; EXEC System(reboot)', "${CALLERID(num)}", "0612345678\\", "06 1234 5678\t${EXTEN}", "=1+1", ""]

    async def scenario() -> list[Transcript]:
        async with FastAgiServer(ServeConfig(port=0, session_deadline=2.0), build_routes(gate)) as server:
            return [
                await play(server.port, campaign_env(campaign, (number,), agi_callerid='"\\')) for number in numbers
            ]

    for t in run(scenario()):
        values = commands_of(t)
        assert t.agistatus == "SUCCESS"
        assert values[VAR_DECISION] == CHANNEL_BLOCK and not t.dialplan_allows
        assert values[VAR_REASON] == INVALID_NUMBER, values
        assert values[VAR_NUMBER] == ""
        assert all(code.isidentifier() for code in values[VAR_REASONS].split(","))
