"""The AGI wire protocol as Asterisk's res_agi speaks it (docs/asterisk-agi.md).

Three layers, each usable without the next:

* pure functions: ``parse_env``/``AgiRequest`` for the environment block, ``parse_reply`` for reply lines,
  ``quote_arg``/``encode_command`` for what we send;
* ``AgiSession``: one command, exactly one reply, over any ``LineChannel`` (a socket for FastAGI, a pair
  of pipes for classic AGI), with typed errors and a deadline;
* ``AgiLineProtocol``: the asyncio ``BufferedProtocol`` that turns a socket or pipe into a ``LineChannel``
  with the line-length limit and flow control.

The session never pipelines: Asterisk reads commands through a stdio ``FILE`` and only polls the
descriptor between commands, so a second command already sitting in its ``FILE`` buffer would not be
seen until more bytes arrived, and the call would hang. One command, one reply, then the next.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Final, Protocol
from urllib.parse import parse_qsl

log = logging.getLogger(__name__)

# res_agi.c reads each line into a buffer of AGI_BUF_LEN bytes with fgets.
AGI_BUF_LEN: Final = 8192
# Longest line we accept from Asterisk, "\n" included. Asterisk's own lines are far shorter; anything
# longer is not Asterisk talking and must not make us buffer without bound.
MAX_LINE_BYTES: Final = AGI_BUF_LEN
# Longest command we send, "\n" included: fgets fills at most AGI_BUF_LEN - 1 bytes, and Asterisk runs
# the rest of a longer line as a second command. A value could then smuggle a command, so we refuse.
MAX_COMMAND_BYTES: Final = AGI_BUF_LEN - 1
# Asterisk sends about 23 lines plus one per argument (at most 127): 512 is generous and still bounded.
MAX_USAGE_LINES: Final = 200
MAX_USAGE_BYTES: Final = 16 * 1024
MAX_ENV_LINES: Final = 512
MAX_QUERY_FIELDS: Final = 64

# A line starting with "failure" (any case) makes run_agi stop and set AGISTATUS=FAILURE, for FastAGI
# and for classic AGI alike (it is how a child that failed to exec reports it).
FAILURE_LINE: Final = b"failure\n"
# Asterisk writes this, unsolicited, when the channel hangs up (unless AGISIGHUP=no) and when AGI ends.
HANGUP_NOTICE: Final = "HANGUP"

# Presentation bits of agi_callingpres (include/asterisk/callerid.h).
AST_PRES_RESTRICTION: Final = 0x60
AST_PRES_ALLOWED: Final = 0x00
AST_PRES_RESTRICTED: Final = 0x20
AST_PRES_UNAVAILABLE: Final = 0x40

CODE_SUCCESS: Final = 200
CODE_TRYING: Final = 100
CODE_INVALID: Final = 510
CODE_DEAD: Final = 511
CODE_USAGE: Final = 520

_VAR_NAME: Final = re.compile(r"[A-Za-z0-9_]+")
# Values MSet passes through unchanged once "," is escaped (mset_argument).
_MSET_SAFE_VALUE: Final = re.compile(r"[A-Za-z0-9_+.:,-]*")
# EXEC's result when the application does not exist (res_agi handle_exec).
EXEC_NO_SUCH_APPLICATION: Final = -2
# "200 result=<n>", then optionally "(<data>)", then optionally " key=value" pairs.
_REPLY_200: Final = re.compile(r"200 result=(-?\d+)(?= |$)")
_REPLY_CODE: Final = re.compile(r"(\d{3})(?:[ -](.*))?")
# Characters that cannot travel inside a command line (see quote_arg).
_UNSENDABLE: Final = str.maketrans({"\n": " ", "\r": " ", "\0": " "})
_RECV_SIZE: Final = 4096
# Pending input beyond this pauses reading; only a misbehaving peer ever gets there.
_HIGH_WATER: Final = 64 * 1024


# -- errors ----------------------------------------------------------------------------------------------


class AgiError(Exception):
    """Anything that ends an AGI session abnormally."""


class AgiProtocolError(AgiError):
    """The peer sent something that is not AGI: an overlong line, a bad environment, an unknown reply."""


class AgiLineTooLongError(AgiProtocolError):
    pass


class AgiConnectionLostError(AgiError):
    """The peer closed the connection while we were waiting for it."""


class AgiTimeoutError(AgiError):
    """No reply before the command timeout or the session deadline, or the deadline had already passed."""


class AgiCommandError(AgiError):
    """Asterisk refused a command: 510, 511, 520 or ``200 result=-1``."""

    def __init__(self, code: int, text: str, command: str) -> None:
        super().__init__(f"{code} in reply to {command!r}: {text}")
        self.code = code
        self.text = text
        self.command = command


class AgiInvalidCommandError(AgiCommandError):
    """510: unknown command."""


class AgiDeadChannelError(AgiCommandError):
    """511: command not permitted on a dead channel."""


class AgiUsageError(AgiCommandError):
    """520: wrong number or form of arguments; ``text`` holds every line of the usage block."""


class AgiResultError(AgiCommandError):
    """``200 result=-1``: the command ran and failed (usually because the channel hung up)."""


class AgiFailure(Exception):
    """Raised by a route to answer ``failure`` with a one-line log message and no traceback.

    For expected refusals (the gate rejected the input); anything unexpected should just raise.
    """


# -- the environment -------------------------------------------------------------------------------------

# Environment keys that name the route and carry the campaign of every request: they must be exact, so a
# value that is not UTF-8 ends the session with failure before any route runs.
STRICT_ENV_KEYS: Final = ("agi_network_script", "agi_request")
# How many different field names may be reported as not UTF-8 (once each): names come from the peer, so
# an unbounded set would let a flood of made-up names fill the log and the memory.
MAX_REPORTED_FIELDS: Final = 32
_reported_fields: set[str] = set()


def _report_undecodable(field_name: str, raw: bytes, first_bad: int) -> None:
    """Log, once per process and field name, that a value was not UTF-8. Never the value itself: caller
    names and channel names are personal data, and the log travels further than the audit log."""
    if field_name in _reported_fields or len(_reported_fields) > MAX_REPORTED_FIELDS:
        return
    _reported_fields.add(field_name)
    if len(_reported_fields) > MAX_REPORTED_FIELDS:
        log.warning(
            "AGI: values of more than %d different fields were not UTF-8; no further field is reported",
            MAX_REPORTED_FIELDS,
        )
        return
    log.warning(
        "AGI: %r is not UTF-8 (a line of %d bytes, the first bad one at byte %d); a value the decision does not read "
        "is kept with U+FFFD for each bad byte, one it reads (number, campaign, caller ID, route) blocks "
        "the call; reported once per process for this field",
        field_name[:64],
        len(raw),
        first_bad,
    )


def _has_escapes(text: str) -> bool:
    # Lone surrogates are what surrogateescape makes of bytes that are not UTF-8; valid text has none.
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _replaced(text: str) -> str:
    """Text decoded with surrogateescape as if it had been decoded with errors="replace"."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _split_script(script: str) -> tuple[str, dict[str, str], frozenset[str]]:
    path, _, query_string = script.partition("?")
    try:
        # surrogateescape marks a %-escape that is not UTF-8, so that only the keys a route reads need
        # to be exact (see AgiRequest.strict_query); the others are kept with U+FFFD.
        pairs = parse_qsl(
            query_string, keep_blank_values=True, max_num_fields=MAX_QUERY_FIELDS, errors="surrogateescape"
        )
    except ValueError as exc:
        raise AgiProtocolError(f"script query has too many fields: {exc}") from exc
    query: dict[str, str] = {}
    undecodable: set[str] = set()
    for raw_key, raw_value in pairs:
        key = _replaced(raw_key) if _has_escapes(raw_key) else raw_key
        if key in query:
            continue
        if _has_escapes(raw_value):
            undecodable.add(key)
            query[key] = _replaced(raw_value)
        else:
            query[key] = raw_value
    return path.strip("/"), query, frozenset(undecodable)


def split_script(script: str) -> tuple[str, dict[str, str]]:
    """Split ``agi_network_script`` into the route path and its url-decoded query.

    ``/check/?campaign=C%201`` gives ``("check", {"campaign": "C 1"})``. The first occurrence of a
    repeated key wins. Leading and trailing slashes go; inner ones stay. A %-escape that is not UTF-8
    becomes U+FFFD.
    """
    path, query, _ = _split_script(script)
    return path, query


@dataclass(frozen=True, slots=True)
class AgiRequest:
    """One AGI request: the environment Asterisk sent before the blank line.

    Nothing guarantees an encoding (a caller name set by an older PBX or a carrier may be Latin-1), so
    values are decoded as UTF-8 with each byte that is not replaced by U+FFFD, and the names of the keys
    where that happened are kept in ``undecodable``. U+FFFD rather than a Latin-1 guess: it never
    invents a character the peer did not send, it can never match a real number, campaign or caller ID,
    and it keeps the audit row valid UTF-8 (JSON, hash chain) where surrogate escapes would break it and
    the logging handlers. That is right for what is only evidence (``agi_channel``, ``agi_uniqueid``,
    ``agi_accountcode``...) or not read at all (``agi_calleridname``...). A value the decision reads
    must be exact: routes read those through ``strict_env``, ``strict_arg`` and ``strict_query``, which
    raise AgiProtocolError (the session answers failure) rather than decide on a replaced value.
    """

    env: Mapping[str, str]
    # Route path from agi_network_script, without "?query" and outer slashes; "" for classic AGI.
    network_script: str = ""
    query: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # agi_arg_1..N in order.
    args: tuple[str, ...] = ()
    # Environment keys whose value was not UTF-8, and query keys whose %-decoded value was not.
    undecodable: frozenset[str] = frozenset()
    undecodable_query: frozenset[str] = frozenset()
    # Arguments consumed by shift_args: arg(n) is agi_arg_{n + shifted}.
    shifted: int = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str], undecodable: frozenset[str] = frozenset()) -> AgiRequest:
        for key in STRICT_ENV_KEYS:
            if key in undecodable:
                raise AgiProtocolError(_not_utf8(key))
        frozen_env = MappingProxyType(dict(env))
        path, query, undecodable_query = _split_script(frozen_env.get("agi_network_script", ""))
        args: list[str] = []
        while (value := frozen_env.get(f"agi_arg_{len(args) + 1}")) is not None:
            args.append(value)
        return cls(
            env=frozen_env,
            network_script=path,
            query=MappingProxyType(query),
            args=tuple(args),
            undecodable=undecodable,
            undecodable_query=undecodable_query,
        )

    def arg(self, n: int) -> str | None:
        """The n-th AGI argument (1-based) or None when Asterisk did not send it."""
        return self.args[n - 1] if 1 <= n <= len(self.args) else None

    def shift_args(self, count: int = 1) -> AgiRequest:
        """The same request with the first ``count`` arguments consumed (classic AGI route selection)."""
        return replace(self, args=self.args[count:], shifted=self.shifted + count)

    def strict_env(self, key: str) -> str | None:
        """``env[key]`` (None if absent) for a value the decision reads: AgiProtocolError if it was not UTF-8."""
        if key in self.undecodable:
            raise AgiProtocolError(_not_utf8(key))
        return self.env.get(key)

    def strict_arg(self, n: int) -> str | None:
        """``arg(n)`` for a value the decision reads: AgiProtocolError if it was not UTF-8."""
        value = self.arg(n)
        if value is not None and f"agi_arg_{n + self.shifted}" in self.undecodable:
            raise AgiProtocolError(_not_utf8(f"agi_arg_{n + self.shifted}"))
        return value

    def strict_query(self, key: str) -> str | None:
        """``query[key]`` for a value the decision reads: AgiProtocolError if its %-escapes were not UTF-8."""
        if key in self.undecodable_query:
            raise AgiProtocolError(_not_utf8(f"{key!r} in the script query"))
        return self.query.get(key)

    @property
    def network(self) -> bool:
        return self.env.get("agi_network") == "yes"

    @property
    def request_url(self) -> str | None:
        return self.env.get("agi_request")

    @property
    def uniqueid(self) -> str | None:
        return self.env.get("agi_uniqueid")

    @property
    def channel(self) -> str | None:
        return self.env.get("agi_channel")

    @property
    def extension(self) -> str | None:
        return self.env.get("agi_extension")

    @property
    def context(self) -> str | None:
        return self.env.get("agi_context")

    @property
    def callerid(self) -> str | None:
        return self.env.get("agi_callerid")

    @property
    def callingpres(self) -> int | None:
        raw = self.env.get("agi_callingpres")
        try:
            return int(raw) if raw is not None else None
        except ValueError:
            return None


def _not_utf8(what: str) -> str:
    return f"{what} is not UTF-8, and the decision reads it: no decision on a value that is not exact"


def _env_line(raw: bytes) -> tuple[str, str, int | None]:
    """(key, value, offset of the first byte that is not UTF-8 or None) of one environment line."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        first_bad: int | None = exc.start
        # ":" and " " are ASCII, so splitting the bytes splits exactly where splitting the text would.
        head, sep, tail = raw.partition(b":")
        key = head.decode("utf-8", "replace").strip()
        value = tail.removeprefix(b" ").decode("utf-8", "replace")
        text = raw.decode("utf-8", "replace")
    else:
        first_bad = None
        key, sep, value = text.partition(":")
        key = key.strip()
        # Asterisk writes "name: value"; exactly one space separates them, the rest belongs to the value.
        value = value.removeprefix(" ")
    if not sep or not key:
        raise AgiProtocolError(f"environment line is not 'name: value': {text[:80]!r}")
    return key, value, first_bad


def parse_env_line(raw: bytes) -> tuple[str, str]:
    key, value, _ = _env_line(raw)
    return key, value


def parse_env(lines: Iterable[bytes]) -> AgiRequest:
    """Build the request from the environment lines (without the terminating blank line)."""
    env: dict[str, str] = {}
    undecodable: set[str] = set()
    for raw in lines:
        key, value, first_bad = _env_line(raw)
        if key in env:
            raise AgiProtocolError(f"environment repeats {key!r}")
        env[key] = value
        if first_bad is not None:
            undecodable.add(key)
            _report_undecodable(key, raw, first_bad)
    return AgiRequest.from_env(env, frozenset(undecodable))


# -- replies -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AgiReply:
    """A reply line. For 200: ``result``, the parenthesised ``data`` and trailing ``key=value`` fields."""

    code: int
    text: str
    result: int | None = None
    data: str | None = None
    fields: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


def parse_reply(line: str) -> AgiReply:
    """Parse one complete reply line (multi-line 520 blocks are gathered by the session)."""
    match = _REPLY_CODE.fullmatch(line)
    if match is None:
        raise AgiProtocolError(f"not an AGI reply: {line[:80]!r}")
    code = int(match.group(1))
    if code != CODE_SUCCESS:
        return AgiReply(code=code, text=line)
    head = _REPLY_200.match(line)
    if head is None:
        raise AgiProtocolError(f"malformed 200 reply: {line[:80]!r}")
    result = int(head.group(1))
    rest = line[head.end() :].strip()
    data: str | None = None
    if rest.startswith("("):
        # The data may itself hold ")" and spaces (GET VARIABLE returns any value): it runs to the last
        # ")". Linear on purpose: a backtracking pattern is slow on a crafted 8 KiB line (a peer's denial
        # of service).
        close = rest.rfind(")")
        if close > 0:
            data, rest = rest[1:close], rest[close + 1 :]
    tokens = rest.split()
    if not all(token.find("=") > 0 for token in tokens):
        # Some commands (SPEECH RECOGNIZE) add free text we do not parse; the result still counts.
        return AgiReply(code=code, text=line, result=result)
    fields = dict(token.split("=", 1) for token in tokens)
    return AgiReply(code=code, text=line, result=result, data=data, fields=MappingProxyType(fields))


# -- what we send ------------------------------------------------------------------------------------------


def quote_arg(value: str) -> str:
    """Quote one command argument so that res_agi's parse_args yields exactly ``value``.

    parse_args splits on spaces and tabs outside quotes, toggles quoting on ``"`` and takes the character
    after ``\\`` literally. So: escape ``\\`` and ``"`` with ``\\`` and wrap in ``"``; the result is one
    argument even when empty or full of spaces. ``${...}`` needs nothing: SET VARIABLE stores the value
    without substitution. LF, CR and NUL cannot travel (LF and CR end the command line, NUL ends the C
    string), so each becomes one space: the argument stays one argument and keeps its length.
    """
    clean = value.translate(_UNSENDABLE)
    return '"' + clean.replace("\\", "\\\\").replace('"', '\\"') + '"'


def mset_argument(pairs: Sequence[tuple[str, str]]) -> str | None:
    """The argument of one ``EXEC MSet`` that sets ``pairs`` exactly, or None if one cannot be sure.

    Asterisk splits MSet's argument twice: res_agi's parse_args (undone by quote_arg), then the
    application-argument parser, which splits on ``,``, honours ``\\`` escapes, strips quotes and keeps
    bracketed or parenthesised text together. So only values made of characters none of those rules touch
    are sent this way (reason codes, E.164 numbers, decision ids), with ``,`` escaped; anything else is
    None and goes out with SET VARIABLE, which stores a value verbatim.
    """
    parts = []
    for name, value in pairs:
        if not _MSET_SAFE_VALUE.fullmatch(value):
            return None
        parts.append(f"{validate_variable_name(name)}={value.replace(',', chr(92) + ',')}")
    return ",".join(parts)


def validate_variable_name(name: str) -> str:
    # Only plain names: "(" would make it a dialplan function call, space or quote would change argc.
    if not _VAR_NAME.fullmatch(name):
        raise ValueError(f"refusing channel variable name {name!r}: only [A-Za-z0-9_] is allowed")
    return name


def encode_command(line: str) -> bytes:
    """One command as bytes with its "\\n", or ValueError if it could not arrive as exactly one command."""
    if any(ch in line for ch in "\n\r\0"):
        raise ValueError(f"an AGI command must be one line without CR or NUL: {line[:80]!r}")
    # surrogateescape gives back the original bytes of any text decoded that way; other lone
    # surrogates raise, which ends the session with failure (fail closed) instead of sending junk.
    data = line.encode("utf-8", "surrogateescape") + b"\n"
    if len(data) > MAX_COMMAND_BYTES:
        raise ValueError(f"AGI command of {len(data)} bytes exceeds {MAX_COMMAND_BYTES}")
    return data


# -- the channel and the session ---------------------------------------------------------------------------


class LineChannel(Protocol):
    """What AgiSession needs from a transport."""

    async def readline(self) -> bytes | None:
        """The next line without its terminator; None at end of input. Raises AgiLineTooLongError."""
        ...

    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...

    def peer_finished(self) -> bool:
        """True when Asterisk already ended its side: end of input, or a queued HANGUP line."""
        ...


class AgiSession:
    """Commands and replies for one AGI session, one command at a time.

    ``deadline`` is an event-loop time (``loop.time()``) after which no command is sent at all: a verdict
    that arrives late is never written. ``command_timeout`` bounds the wait for each reply, and is itself
    bounded by the deadline. ``guarded=True`` says the caller already runs the whole session under
    ``asyncio.timeout_at(deadline)`` (dispatch does), so a reply needs no timer of its own unless
    ``command_timeout`` asks for one: a timer per command is a measurable share of a session's cost.
    """

    def __init__(
        self,
        channel: LineChannel,
        *,
        deadline: float | None = None,
        command_timeout: float | None = None,
        guarded: bool = False,
    ) -> None:
        self._channel = channel
        self._deadline = deadline
        self._command_timeout = command_timeout
        self._guarded = guarded
        self.hung_up = False
        self.failed = False

    async def command(self, line: str) -> AgiReply:
        """Send one command and return its reply; AgiCommandError subclasses for 510/511/520/-1."""
        if self.failed:
            raise AgiError(f"session already answered failure; not sending {line[:80]!r}")
        data = encode_command(line)
        until = self._read_deadline(line)
        self._channel.write(data)
        if until is None:
            await self._channel.drain()
            return _checked(await self._read_reply(line), line)
        try:
            async with asyncio.timeout_at(until):
                await self._channel.drain()
                reply = await self._read_reply(line)
        except TimeoutError as exc:
            raise AgiTimeoutError(f"no reply to {line[:80]!r} in time") from exc
        return _checked(reply, line)

    async def set_variable(self, name: str, value: str) -> AgiReply:
        """SET VARIABLE with the name checked and the value quoted (see quote_arg)."""
        return await self.command(f"SET VARIABLE {validate_variable_name(name)} {quote_arg(value)}")

    async def set_variables(self, pairs: Sequence[tuple[str, str]]) -> None:
        """Set several variables in one round trip where that is safe, else one SET VARIABLE each.

        One round trip is ``EXEC MSet "A=1,B=2"`` (see mset_argument): each command costs a read and
        a write on both sides and a wait for Asterisk's AGI thread. A value MSet could misread, or an
        Asterisk without MSet (EXEC answers result=-2), gets the one-by-one way.
        """
        argument = mset_argument(pairs) if len(pairs) > 1 else None
        line = f"EXEC MSet {quote_arg(argument)}" if argument is not None else None
        # Values that each fit a line of their own may not fit one together.
        if line is not None and len(line) < MAX_COMMAND_BYTES:
            reply = await self.command(line)
            if reply.result != EXEC_NO_SUCH_APPLICATION:
                return
            log.warning("Asterisk has no MSet application: setting the variables one by one")
        for name, value in pairs:
            await self.set_variable(name, value)

    async def failure(self) -> None:
        """Write the line that makes Asterisk set AGISTATUS=FAILURE; the session is over afterwards."""
        if self.failed:
            return
        self.failed = True
        self._channel.write(FAILURE_LINE)
        try:
            await self._channel.drain()
        except (ConnectionError, AgiConnectionLostError):
            log.debug("peer gone before the failure line could be flushed")

    def remaining(self) -> float | None:
        """Seconds left before the deadline, or None without one."""
        if self._deadline is None:
            return None
        return self._deadline - asyncio.get_running_loop().time()

    def _read_deadline(self, line: str) -> float | None:
        now = asyncio.get_running_loop().time()
        if self._deadline is not None and now >= self._deadline:
            raise AgiTimeoutError(f"session deadline passed; not sending {line[:80]!r}")
        limits = [] if self._deadline is None or self._guarded else [self._deadline]
        if self._command_timeout is not None:
            limits.append(now + self._command_timeout)
        return min(limits, default=None)

    async def _next_line(self, line: str) -> str:
        raw = await self._channel.readline()
        if raw is None:
            raise AgiConnectionLostError(f"connection closed while waiting for the reply to {line[:80]!r}")
        return raw.decode("utf-8", "replace")

    async def _read_reply(self, line: str) -> AgiReply:
        while True:
            text = await self._next_line(line)
            if text == HANGUP_NOTICE:
                # Out of band: the channel hung up. The reply to our command still follows.
                self.hung_up = True
                log.debug("channel hung up while waiting for the reply to %r", line[:80])
                continue
            if text.startswith("100 ") or text == "100":
                # "100 result=0 Trying..." precedes the real reply of GOSUB.
                continue
            if text.startswith("520-"):
                block = [text]
                size = len(text)
                while not block[-1].startswith("520 "):
                    if len(block) >= MAX_USAGE_LINES or size > MAX_USAGE_BYTES:
                        # Asterisk's usage texts are a few dozen short lines: anything longer is not
                        # Asterisk, and must not make us hold it all.
                        raise AgiProtocolError("520 usage block too long")
                    block.append(await self._next_line(line))
                    size += len(block[-1])
                return AgiReply(code=CODE_USAGE, text="\n".join(block))
            return parse_reply(text)


_ERRORS: Final[dict[int, type[AgiCommandError]]] = {
    CODE_INVALID: AgiInvalidCommandError,
    CODE_DEAD: AgiDeadChannelError,
    CODE_USAGE: AgiUsageError,
}


def _checked(reply: AgiReply, line: str) -> AgiReply:
    if reply.code == CODE_SUCCESS:
        if reply.result == -1:
            raise AgiResultError(reply.code, reply.text, line)
        return reply
    error = _ERRORS.get(reply.code)
    if error is None:
        raise AgiProtocolError(f"unexpected reply code {reply.code} to {line[:80]!r}: {reply.text[:80]!r}")
    raise error(reply.code, reply.text, line)


async def read_request(channel: LineChannel, *, max_lines: int = MAX_ENV_LINES) -> AgiRequest | None:
    """Read the environment up to the blank line; None if the peer closed first (a health check)."""
    lines: list[bytes] = []
    while True:
        raw = await channel.readline()
        if raw is None:
            return None
        if not raw:
            return parse_env(lines)
        if len(lines) >= max_lines:
            raise AgiProtocolError(f"environment longer than {max_lines} lines")
        lines.append(raw)


Route = Callable[[AgiRequest, AgiSession], Awaitable[None]]
"""A route handles one request: it reads the request and talks to Asterisk through the session."""


# -- asyncio transport adapter -----------------------------------------------------------------------------


class AgiLineProtocol(asyncio.BufferedProtocol):
    """An asyncio protocol that splits input into lines and exposes the LineChannel interface.

    BufferedProtocol because it receives into one preallocated buffer instead of a fresh bytes object per
    read, for less server CPU per session than streams (docs/performance.md, "FastAGI server"). Pipe
    transports only call data_received, so that is supported too (classic AGI over stdin).
    """

    def __init__(self, *, max_line: int = MAX_LINE_BYTES) -> None:
        self._max_line = max_line
        self._recv = bytearray(_RECV_SIZE)
        self._recv_view = memoryview(self._recv)
        self._partial = bytearray()
        self._lines: collections.deque[bytes] = collections.deque()
        self._queued = 0
        self._eof = False
        self._error: AgiError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._reading_paused = False
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._discarding = False
        self._linger_handle: asyncio.TimerHandle | None = None
        # Typed as a full Transport and never tested with isinstance: uvloop's transports implement the
        # methods without subclassing asyncio's classes, and an isinstance test would drop every write.
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._recv_view

    def buffer_updated(self, nbytes: int) -> None:
        self._feed(self._recv_view[:nbytes])

    def data_received(self, data: bytes) -> None:
        self._feed(data)

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        # While lingering, the peer's EOF is what we waited for: let the transport close itself.
        return not self._discarding

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._wake()
        if self._linger_handle is not None:
            self._linger_handle.cancel()
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_exception(AgiConnectionLostError("connection lost while writing"))
            # Nobody may be waiting; do not let asyncio log "exception was never retrieved".
            self._drain_waiter.exception()
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    # LineChannel

    async def readline(self) -> bytes | None:
        while not self._lines:
            if self._error is not None:
                raise self._error
            if self._eof:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        line = self._lines.popleft()
        self._queued -= len(line) + 1
        if self._reading_paused and self._queued < _HIGH_WATER // 2 and self._error is None:
            self._set_reading(paused=False)
        return line

    def peer_finished(self) -> bool:
        return self._eof or b"HANGUP" in self._lines

    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    async def drain(self) -> None:
        if self.closed.done():
            raise AgiConnectionLostError("connection lost while writing")
        if not self._write_paused:
            return
        self._drain_waiter = asyncio.get_running_loop().create_future()
        try:
            await self._drain_waiter
        finally:
            self._drain_waiter = None

    # closing

    @property
    def peer_gone(self) -> bool:
        return self.closed.done() or self.transport is None or self.transport.is_closing()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def linger_close(self, timeout: float) -> None:
        """Half-close, then wait up to ``timeout`` for the peer to close before closing hard.

        A plain close with unread input makes the kernel send RST and may throw away a "failure" line
        Asterisk has not read yet; then Asterisk would see a clean end and set AGISTATUS=SUCCESS.
        Half-closing lets the line arrive; Asterisk answers it with HANGUP and closes, which ends this.
        """
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self._discarding = True
        self._lines.clear()
        self._queued = 0
        if timeout <= 0 or self._eof:
            transport.close()
            return
        if transport.can_write_eof():
            try:
                transport.write_eof()
            except OSError:
                # The peer is already gone (its kernel answered with a reset): nothing to wait for.
                transport.close()
                return
        self._set_reading(paused=False)
        loop = asyncio.get_running_loop()
        self._linger_handle = loop.call_later(timeout, self._linger_expired)

    def _linger_expired(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.abort()

    # internals

    def _feed(self, data: bytes | memoryview) -> None:
        if self._discarding or self._error is not None:
            return
        buf = self._partial
        buf += data
        start = 0
        limit = self._max_line
        while (newline := buf.find(b"\n", start)) >= 0:
            if newline + 1 - start > limit:
                self._fail_input(AgiLineTooLongError(f"line longer than {limit} bytes"))
                return
            end = newline - 1 if newline > start and buf[newline - 1] == 0x0D else newline
            line = bytes(buf[start:end])
            self._lines.append(line)
            self._queued += len(line) + 1
            start = newline + 1
        if start:
            del buf[:start]
        # Without its "\n" the line already has as many bytes as the limit allows with it.
        if len(buf) >= limit:
            self._fail_input(AgiLineTooLongError(f"line longer than {limit} bytes"))
            return
        if self._queued > _HIGH_WATER:
            self._set_reading(paused=True)
        self._wake()

    def _fail_input(self, error: AgiError) -> None:
        # Lines before the bad one are still delivered; then readline raises.
        self._error = error
        self._partial.clear()
        self._set_reading(paused=True)
        self._wake()

    def _set_reading(self, *, paused: bool) -> None:
        transport = self.transport
        if paused == self._reading_paused or transport is None:
            return
        if transport.is_closing():
            return
        self._reading_paused = paused
        if paused:
            transport.pause_reading()
        else:
            transport.resume_reading()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
