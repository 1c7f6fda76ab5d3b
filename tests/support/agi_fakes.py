"""Test doubles for the AGI layer: a fake Asterisk that speaks over a real socket, a fake gate, env data.

The fake Asterisk behaves like res_agi where it matters for fail-closed tests: it splits commands the
way parse_args does, answers SET VARIABLE with 520 when the argument count is wrong, treats a line
starting with "failure" as AGISTATUS=FAILURE (then writes HANGUP and closes, as run_agi does), and a
close without it as SUCCESS. ``Transcript.dialplan_allows`` is what dialplan/rpoguard.conf would do.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from rpoguard.constants import ALLOW, BLOCK, CHANNEL_ALLOW, CHANNEL_BLOCK, VAR_DECISION
from rpoguard.gate import CallRequest, GateError, OptoutRequest, OptoutResult, PendingVerdict, Verdict
from support.agi_env import CHANNEL_ENV

# The channel lines of the recorded environment (support/agi_env.py), as bytes.
_BASE_ENV: tuple[tuple[str, bytes], ...] = tuple((key, value.encode()) for key, value in CHANNEL_ENV)

USAGE_520 = (
    b"520-Invalid command syntax.  Proper usage follows:\n"
    b"Usage: SET VARIABLE <variablename> <value>\n"
    b"  Sets a variable to the current channel.\n"
    b"520 End of proper usage.\n"
)


def _b(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def make_env(
    script: str | bytes | None = "check?campaign=C1",
    args: Iterable[str | bytes] = ("0612345678",),
    *,
    network: bool = True,
    request: str | bytes | None = None,
    overrides: Mapping[str, str | bytes | None] | None = None,
    terminate: bool = True,
) -> bytes:
    """An environment block the way setup_env writes it. ``overrides`` replaces (or with None drops) keys."""
    lines: list[tuple[str, bytes]] = []
    if network:
        lines.append(("agi_network", b"yes"))
        if script:
            lines.append(("agi_network_script", _b(script)))
        url = b"agi://127.0.0.1:4573/" + (_b(script) if script else b"")
        lines.append(("agi_request", _b(request) if request is not None else url))
    else:
        lines.append(("agi_request", _b(request) if request is not None else b"rpoguard-agi"))
    lines.extend(_BASE_ENV)
    lines.extend((f"agi_arg_{i}", _b(arg)) for i, arg in enumerate(args, start=1))
    for key, value in (overrides or {}).items():
        index = next((i for i, (k, _) in enumerate(lines) if k == key), None)
        if value is None:
            if index is not None:
                del lines[index]
        elif index is None:
            lines.append((key, _b(value)))
        else:
            lines[index] = (key, _b(value))
    block = b"".join(key.encode() + b": " + value + b"\n" for key, value in lines)
    return block + b"\n" if terminate else block


# -- res_agi's argument splitting, re-implemented from its documented behaviour -----------------------------


def parse_args(line: str) -> list[str]:
    """Split a command the way res_agi's parse_args does: spaces/tabs separate outside quotes, an
    unescaped ``"`` toggles quoting (and starts a word), ``\\`` makes the next character literal."""
    args: list[str] = []
    current: list[str] | None = None
    quoted = escaped = False
    for ch in line:
        if ch == '"' and not escaped:
            quoted = not quoted
            if quoted and current is None:
                current = []
            continue
        if ch in " \t" and not quoted and not escaped:
            if current is not None:
                args.append("".join(current))
                current = None
            continue
        if ch == "\\" and not escaped:
            escaped = True
            continue
        if current is None:
            current = []
        current.append(ch)
        escaped = False
    if current is not None:
        args.append("".join(current))
    return args


def separate_app_args(text: str) -> list[str]:
    """Split an application's argument the way Asterisk's app-argument parser does (ast_app_separate_args
    with quote and backslash removal): ``,`` separates at bracket depth 0 outside quotes, ``"`` toggles
    quoting and is dropped, ``\\`` makes the next character literal and is dropped, ``(``/``)`` and
    ``[``/``]`` nest."""
    args: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    depth = 0
    for ch in text:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif quoted:
            current.append(ch)
        elif ch in "([":
            depth += 1
            current.append(ch)
        elif ch in ")]":
            depth = max(0, depth - 1)
            current.append(ch)
        elif ch == "," and depth == 0:
            args.append("".join(current))
            current = []
        else:
            current.append(ch)
    args.append("".join(current))
    return args


def strip_quoted(value: str) -> str:
    """MSet's ast_strip_quoted: surrounding blanks, then one pair of surrounding double quotes."""
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def asterisk_answer(command: bytes, variables: dict[str, str]) -> bytes:
    """What res_agi answers to the commands the gate uses, applying SET VARIABLE to ``variables``."""
    argv = parse_args(command.decode("utf-8", "surrogateescape"))
    words = [a.upper() for a in argv[:2]]
    if words == ["SET", "VARIABLE"]:
        if len(argv) != 4:
            return USAGE_520
        variables[argv[2]] = argv[3]
        return b"200 result=1\n"
    if words[:1] == ["NOOP"]:
        return b"200 result=0\n"
    if words[:1] == ["EXEC"] and len(argv) >= 2:
        if argv[1].upper() != "MSET":
            return b"200 result=-2\n"  # res_agi: no such application
        for pair in separate_app_args(argv[2] if len(argv) > 2 else ""):
            name, sep, value = pair.partition("=")
            if sep:
                variables[name.strip()] = strip_quoted(value)
        return b"200 result=0\n"
    if words == ["GET", "VARIABLE"] and len(argv) == 3:
        if argv[2] in variables:
            return b"200 result=1 (" + variables[argv[2]].encode() + b")\n"
        return b"200 result=0\n"
    return b"510 Invalid or unknown command\n"


@dataclass
class Transcript:
    """What happened on one fake-Asterisk connection."""

    written: bytes = b""  # every byte the server wrote, in order
    commands: list[bytes] = field(default_factory=list)  # command lines, before any failure line
    failure: bool = False  # the server wrote a line starting with "failure"
    agistatus: str | None = None  # as res_agi would set it; None if the server never ended the session
    server_closed: bool = False
    variables: dict[str, str] = field(default_factory=lambda: {VAR_DECISION: CHANNEL_BLOCK})
    elapsed: float = 0.0

    @property
    def sent_allow(self) -> bool:
        return any(VAR_DECISION.encode() in c and CHANNEL_ALLOW.encode() in c for c in self.commands)

    @property
    def dialplan_allows(self) -> bool:
        """dialplan/rpoguard.conf: AGISTATUS is SUCCESS and RPOGUARD_DECISION is ALLOW."""
        return self.agistatus == "SUCCESS" and self.variables.get(VAR_DECISION) == CHANNEL_ALLOW

    @property
    def failed_closed(self) -> bool:
        """Asterisk read failure and the call would not go out."""
        return self.failure and self.agistatus == "FAILURE" and not self.dialplan_allows


_DECISION_LAST_IN_MSET = re.compile(rf',{VAR_DECISION}=({CHANNEL_ALLOW}|{CHANNEL_BLOCK})"$'.encode())


def sets_the_decision_last(command: bytes) -> bool:
    """The check route's last command: one EXEC MSet whose last variable is the decision, or (the fallback)
    SET VARIABLE of the decision alone."""
    return (command.startswith(f"SET VARIABLE {VAR_DECISION} ".encode())
            or _DECISION_LAST_IN_MSET.search(command.rstrip(b"\r\n")) is not None)


Override = Callable[[int, bytes, dict[str, str]], bytes | None]


async def play(
    port: int,
    env: bytes,
    *,
    override: Override | None = None,
    after_env: bytes = b"",
    reply_delay: float = 0.0,
    patience: float = 5.0,
    host: str = "127.0.0.1",
) -> Transcript:
    """Be Asterisk for one FastAGI session: send ``env``, answer each command, return the transcript.

    ``override(index, command, variables)`` may return raw reply bytes to send instead of the emulated
    answer (call ``asterisk_answer`` inside it to also apply the command). ``after_env`` is written right
    after the environment (e.g. b"HANGUP\\n").
    """
    transcript = Transcript()
    started = time.monotonic()
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(env + after_env)
        await writer.drain()
        index = 0
        while True:
            line = await asyncio.wait_for(reader.readline(), patience)
            transcript.written += line
            if not line:
                transcript.server_closed = True
                transcript.agistatus = transcript.agistatus or "SUCCESS"
                break
            if line[:7].lower() == b"failure":
                transcript.failure = True
                transcript.agistatus = "FAILURE"
                # run_agi: stop, send HANGUP, close. Wait for the server's own close to record it.
                with contextlib.suppress(ConnectionError):
                    writer.write(b"HANGUP\n")
                    await writer.drain()
                with contextlib.suppress(ConnectionError):
                    rest = await asyncio.wait_for(reader.read(), patience)
                    transcript.written += rest
                    transcript.server_closed = True
                break
            command = line.rstrip(b"\n")
            transcript.commands.append(command)
            if reply_delay:
                await asyncio.sleep(reply_delay)
            answer = override(index, command, transcript.variables) if override else None
            if answer is None:
                answer = asterisk_answer(command, transcript.variables)
            index += 1
            writer.write(answer)
            await writer.drain()
    finally:
        transcript.elapsed = time.monotonic() - started
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return transcript


async def raw_exchange(port: int, data: bytes, *, half_close: bool = True, patience: float = 5.0) -> bytes:
    """Send ``data``, optionally half-close, and return everything the server wrote until it closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        if half_close:
            writer.write_eof()
        return await asyncio.wait_for(reader.read(), patience)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


# -- the gate ---------------------------------------------------------------------------------------------

ALLOW_VERDICT = Verdict(
    decision=ALLOW, reasons=(), number="+390612345678", decision_id="0193d5a0-allow", basis="consent"
)
BLOCK_VERDICT = Verdict(
    decision=BLOCK,
    reasons=("rpo_registered", "outside_hours"),
    number="+390612345678",
    decision_id="0193d5a0-block",
)


class FakeGate:
    """Records every request; answers a canned verdict, optionally after a delay or by raising."""

    def __init__(
        self,
        verdict: Verdict = ALLOW_VERDICT,
        *,
        delay: float = 0.0,
        error: BaseException | None = None,
        optout_error: GateError | None = None,
    ) -> None:
        self.verdict = verdict
        self.delay = delay
        self.error = error
        self.optout_error = optout_error
        self.calls: list[CallRequest] = []
        self.optouts: list[OptoutRequest] = []
        self.entered = asyncio.Event()
        self.finished = 0

    async def check(self, call: CallRequest) -> Verdict:
        self.calls.append(call)
        self.entered.set()
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        self.finished += 1
        return self.verdict

    async def begin(self, call: CallRequest) -> PendingVerdict:
        return PendingVerdict.settled(await self.check(call))

    async def optout(self, request: OptoutRequest) -> OptoutResult:
        self.optouts.append(request)
        self.entered.set()
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.optout_error is not None:
            raise self.optout_error
        return OptoutResult(number="+390612345678", principal_id="acme", optout_id=7)
