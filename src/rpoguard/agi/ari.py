"""The ARI gate: `rpoguard ari`, a Stasis application that decides each call like the FastAGI ``check`` route.

    same => n,Stasis(rpoguard,NUMBER,CAMPAIGN[,CALLER_ID])      (dialplan/rpoguard.conf: rpoguard-check-ari)

A channel that enters the application is decided by the same Gate as FastAGI (same engine, same audit
record, same channel variables). An ALLOW sets the variables (RPOGUARD_DECISION last) and continues the
channel in the dialplan; a BLOCK sets them and hangs the channel up with cause 21; anything that goes wrong
hangs up, and nothing ever continues a channel without a recorded ALLOW.

Two parts, kept apart the way the FastAGI server and its routes are:

- :class:`AriClient` speaks ARI: the REST calls (``/channels``, ``/variable``, ``/continue``, ``DELETE``)
  and the events WebSocket, with aiohttp. ARI is a small surface here: StasisStart and StasisEnd are the
  only events used, and the PyPI ``ari`` package (0.1.3, 2014) is Python-2 era (docs/architecture.md).
- :class:`AriGate` is the decision side: one task per channel, reconnection with backoff, and a resync
  after every (re)connection.

Why a resync: Asterisk deactivates the application when its WebSocket closes, and a channel already inside
stays there, waiting, until something continues or hangs it up (checked with Asterisk 22). Events sent
while the socket was breaking are lost. So after each connection the gate lists the channels
(``GET /channels``) and takes care of every one sitting in its application: one it never saw is decided
(its arguments read from the channel's ``app_data``), one whose answer may not have landed is hung up.
A channel whose decision is in flight is left to that decision, so no channel is ever continued twice.
Meanwhile new calls get ``STASISSTATUS=FAILED`` from Asterisk and the dialplan rejects them, and the
dialplan's own time limit hangs up a channel the application never comes back for.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import enum
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from rpoguard.agi.shared import UNKNOWN, GateLike, decision_value, detail_variables
from rpoguard.config import AriConfig
from rpoguard.constants import SOURCE_ARI, VAR_DECISION
from rpoguard.gate import CallRequest
from rpoguard.numbers import redact

log = logging.getLogger(__name__)

# Q.850 cause 21, "call rejected": what the FastAGI subroutine hangs up with too.
HANGUP_CAUSE: Final = 21
# The combined (name and number) presentation, as FastAGI's agi_callingpres: "allowed_not_screened",
# "prohib_...", "unavailable". Only the allowed ones show the callee a number.
PRESENTATION_VARIABLE: Final = "CALLERID(pres)"
PRESENTATION_ALLOWED: Final = "allowed"
STASIS_APP: Final = "Stasis"
# The state of a channel created by POST /channels/create and not dialled yet. A channel the dialplan
# sends to Stasis() is Ring (not answered yet) or Up (checked with Asterisk 22).
STATE_CREATED: Final = "Down"

ARG_NUMBER: Final = 0
ARG_CAMPAIGN: Final = 1
ARG_CALLER_ID: Final = 2


class AriError(Exception):
    """A failed ARI call. ``status`` is the HTTP status, or None when Asterisk could not be reached."""

    def __init__(self, what: str, status: int | None, detail: str) -> None:
        super().__init__(f"{what}: {f'HTTP {status}' if status is not None else 'no answer'}: {detail}")
        self.status = status

    @property
    def gone(self) -> bool:
        """The channel no longer exists (404) or has left the application (409)."""
        return self.status in (404, 409)


# -------------------------------------------------------------------------------------------- protocol


def ari_base(url: str) -> str:
    """``http://host:port`` or ``http://host:port/ari`` -> ``http://host:port/ari``; a clear error otherwise."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"ARI URL {url!r}: expected http://HOST:PORT or https://HOST:PORT (Asterisk's http.conf)")
    if parts.username or parts.password:
        raise ValueError("ARI URL: put the user and password in --user/--password or the config, not in the URL")
    path = parts.path.rstrip("/")
    if not path.endswith("/ari"):
        path += "/ari"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


class AriClient:
    """ARI's REST calls and its events WebSocket, for one Asterisk (``config.url``) and one user
    (``config.user``). ``password`` is the one the caller settled on (command line, environment, file or
    ``config.password``); this class does not look for it.

    Credentials travel in an Authorization header, never in a URL, so that no log line or error message
    (aiohttp puts URLs into its exceptions) can carry the password.
    """

    def __init__(self, config: AriConfig, password: str) -> None:
        user = config.user
        if not user or ":" in user:
            raise ValueError(f"ARI user {user!r}: must be non-empty and contain no ':'")
        self.base = ari_base(config.url)
        self.user = user
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        self._headers = {"Authorization": f"Basic {token}"}
        self._timeout = aiohttp.ClientTimeout(total=config.request_timeout)
        self.heartbeat = config.heartbeat
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def connect_events(self, app: str) -> aiohttp.ClientWebSocketResponse:
        """Open the events WebSocket; Asterisk registers (or reactivates) ``app`` while it stays open."""
        url = self.base.replace("http", "ws", 1) + "/events"
        try:
            return await self.session.ws_connect(
                url, params={"app": app, "subscribeAll": "false"}, heartbeat=self.heartbeat
            )
        except aiohttp.WSServerHandshakeError as exc:
            raise AriError("events WebSocket", exc.status, exc.message) from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise AriError("events WebSocket", None, _describe(exc)) from None

    async def _request(self, method: str, path: str, params: Mapping[str, str] | None = None) -> Any:
        what = f"{method} {path}"
        try:
            async with self.session.request(method, self.base + path, params=params) as response:
                body = await response.read()
                if response.status >= 300:
                    raise AriError(what, response.status, _message(body))
                return json.loads(body) if body else None
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            raise AriError(what, None, _describe(exc)) from None

    async def channels(self) -> list[dict[str, Any]]:
        found = await self._request("GET", "/channels")
        if not isinstance(found, list):
            raise AriError("GET /channels", None, "the answer is not a list")
        return [c for c in found if isinstance(c, dict)]

    async def get_variable(self, channel_id: str, name: str) -> str:
        answer = await self._request("GET", f"/channels/{channel_id}/variable", {"variable": name})
        value = answer.get("value") if isinstance(answer, dict) else None
        if not isinstance(value, str):
            raise AriError(f"GET variable {name}", None, "the answer has no value")
        return value

    async def set_variable(self, channel_id: str, name: str, value: str) -> None:
        await self._request("POST", f"/channels/{channel_id}/variable", {"variable": name, "value": value})

    async def continue_in_dialplan(self, channel_id: str) -> None:
        await self._request("POST", f"/channels/{channel_id}/continue")

    async def hangup(self, channel_id: str, cause: int = HANGUP_CAUSE) -> None:
        await self._request("DELETE", f"/channels/{channel_id}", {"reason_code": str(cause)})


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _message(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body[:200].decode(errors="replace")
    return str(data.get("message", data)) if isinstance(data, dict) else str(data)[:200]


class AriLike(Protocol):
    """What the gate needs from AriClient (tests may pass another)."""

    async def connect_events(self, app: str) -> aiohttp.ClientWebSocketResponse: ...

    async def channels(self) -> list[dict[str, Any]]: ...

    async def get_variable(self, channel_id: str, name: str) -> str: ...

    async def set_variable(self, channel_id: str, name: str, value: str) -> None: ...

    async def continue_in_dialplan(self, channel_id: str) -> None: ...

    async def hangup(self, channel_id: str, cause: int = HANGUP_CAUSE) -> None: ...


# -------------------------------------------------------------------------------------------- the call


def call_request(channel: Mapping[str, Any], args: Sequence[str], presentation: str, app: str,
                 *, resync: bool = False) -> CallRequest:
    """The CallRequest for a channel in Stasis(app,NUMBER,CAMPAIGN[,CALLER_ID]), as routes/check.py builds
    it for FastAGI: an absent number means the extension, an empty one is checked as empty (and refused),
    an empty caller ID means the channel's own, and any presentation but allowed is withheld."""
    dialplan = channel.get("dialplan") or {}
    caller = channel.get("caller") or {}
    number = args[ARG_NUMBER] if len(args) > ARG_NUMBER else str(dialplan.get("exten", ""))
    campaign = (args[ARG_CAMPAIGN] if len(args) > ARG_CAMPAIGN else "").strip() or None
    caller_id = ""
    if presentation.startswith(PRESENTATION_ALLOWED):
        given = args[ARG_CALLER_ID] if len(args) > ARG_CALLER_ID else ""
        caller_id = given.strip() or str(caller.get("number") or "").strip()
        if caller_id.lower() == UNKNOWN:
            caller_id = ""
    extra = {
        "ari_app": app,
        "ari_context": str(dialplan.get("context", "")),
        "ari_extension": str(dialplan.get("exten", "")),
        "ari_callerid": str(caller.get("number", "")),
        "ari_callingpres": presentation,
    }
    if resync:
        extra["ari_resync"] = "1"
    for index, value in enumerate(args, start=1):
        extra[f"arg_{index}"] = value
    return CallRequest(
        raw_number=number or "",
        campaign_id=campaign,
        caller_id=caller_id,
        source=SOURCE_ARI,
        uniqueid=str(channel.get("id", "")) or None,
        channel=str(channel.get("name", "")) or None,
        extra=extra,
    )


def in_application(channel: Mapping[str, Any], app: str) -> bool:
    """Whether a channel snapshot shows the channel sitting in Stasis(app,...)."""
    dialplan = channel.get("dialplan") or {}
    name = str(dialplan.get("app_data", "")).partition(",")[0]
    return dialplan.get("app_name") == STASIS_APP and name.strip() == app


def stasis_args(channel: Mapping[str, Any]) -> list[str] | None:
    """The Stasis() arguments after the application name, read from a channel snapshot's ``app_data``;
    None when they cannot be split with certainty: with quotes or escapes Asterisk's own argument parser
    would read them differently from a plain split, so such a channel is hung up instead of decided."""
    data = str((channel.get("dialplan") or {}).get("app_data", ""))
    if any(c in data for c in "\"'\\"):
        return None
    _, _, rest = data.partition(",")
    return rest.split(",") if rest else []


# -------------------------------------------------------------------------------------------- the gate


class State(enum.Enum):
    DECIDING = "deciding"
    ANSWERED = "answered"  # continued or hung up by us; waiting for its StasisEnd
    FAILED = "failed"  # its answer could not be given: hang it up at the next chance


@dataclass
class _Entry:
    state: State = State.DECIDING
    ended: bool = False  # StasisEnd seen: the channel left the application (hung up, or continued)
    since: float = field(default_factory=time.monotonic)
    task: asyncio.Task[None] | None = None


class AriGate:
    """Runs the Stasis application ``config.app``: keeps the WebSocket up and answers every channel that
    enters. A decision that takes longer than ``config.decision_deadline`` (a stuck disk, a locked
    database) is abandoned and the channel hung up; a channel answered ``config.answer_grace`` seconds
    ago that a resync still finds in the application is hung up too (its answer did not land)."""

    def __init__(self, config: AriConfig, client: AriLike, gate: GateLike) -> None:
        self.client = client
        self.gate = gate
        self.config = config
        self.app = config.app
        self._channels: dict[str, _Entry] = {}
        self._stopping = asyncio.Event()
        # Set while the WebSocket is open and the resync after it is done; for tests and the log.
        self.ready = asyncio.Event()
        self.connections = 0
        self._last_error = ""

    # -- lifecycle

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Connect, resync, answer events; reconnect with exponential backoff until stop().

        A connection that served for a while is followed by an immediate reconnection (calls are being
        rejected meanwhile); one that failed, or broke soon after opening, waits and doubles the wait, so a
        PBX in trouble is not hammered.
        """
        delay = self.config.reconnect_min
        while not self._stopping.is_set():
            try:
                ws = await self.client.connect_events(self.app)
            except AriError as exc:
                self._connection_error(str(exc), delay)
                await self._sleep(delay)
                delay = min(delay * 2, self.config.reconnect_max)
                continue
            self.connections += 1
            self._last_error = ""
            log.warning("ARI: application %r connected to %s", self.app, getattr(self.client, "base", "Asterisk"))
            opened = time.monotonic()
            try:
                served = await self._serve(ws)
            finally:
                self.ready.clear()
                with contextlib.suppress(Exception):
                    await ws.close()
            if self._stopping.is_set():
                break
            log.warning("ARI: events connection lost; reconnecting (calls meanwhile get STASISSTATUS=FAILED "
                        "and are rejected by the dialplan)")
            if served and time.monotonic() - opened >= self.config.reconnect_max:
                delay = self.config.reconnect_min
            else:
                await self._sleep(delay)
                delay = min(delay * 2, self.config.reconnect_max)
        await self._drain()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    def _connection_error(self, cause: str, delay: float) -> None:
        # One line per cause, not one per retry.
        if cause != self._last_error:
            log.error("ARI: cannot connect (%s); retrying, every %.1f s at most %.0f s", cause, delay,
                      self.config.reconnect_max)
            self._last_error = cause

    async def _serve(self, ws: aiohttp.ClientWebSocketResponse) -> bool:
        """Resync, then answer events until the socket closes or stop(); False when the resync failed."""
        try:
            await self.resync()
        except AriError as exc:
            log.error("ARI: cannot list the channels after connecting (%s); reconnecting", exc)
            return False
        self.ready.set()
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            while True:
                receive = asyncio.ensure_future(ws.receive())
                done, _ = await asyncio.wait({receive, stop}, return_when=asyncio.FIRST_COMPLETED)
                if stop in done:
                    receive.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await receive
                    return True
                message = receive.result()
                if message.type != aiohttp.WSMsgType.TEXT:
                    if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING,
                                        aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                        return True
                    continue
                try:
                    event = json.loads(message.data)
                except ValueError:
                    log.warning("ARI: ignoring an event that is not JSON")
                    continue
                if isinstance(event, dict):
                    self.handle_event(event)
        finally:
            stop.cancel()

    async def _drain(self) -> None:
        """On stop: let decisions in flight finish, so no channel is left half-answered."""
        tasks = [e.task for e in self._channels.values() if e.task is not None and not e.task.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=self.config.decision_deadline + 1)

    # -- events

    def handle_event(self, event: Mapping[str, Any]) -> None:
        kind = event.get("type")
        channel = event.get("channel")
        if not isinstance(channel, dict) or not isinstance(channel.get("id"), str):
            return
        if event.get("application") not in (None, self.app):
            return
        channel_id = channel["id"]
        if kind == "StasisStart":
            entry = self._channels.get(channel_id)
            if entry is not None and entry.state is State.DECIDING and not entry.ended:
                return  # the resync found it first; its decision is under way
            args = event.get("args")
            args = [str(a) for a in args] if isinstance(args, list) else []
            self._start(channel, args, resync=False)
        elif kind == "StasisEnd":
            entry = self._channels.get(channel_id)
            if entry is None:
                return
            entry.ended = True
            if entry.task is None or entry.task.done():
                del self._channels[channel_id]

    def _start(self, channel: Mapping[str, Any], args: list[str], *, resync: bool) -> None:
        channel_id = str(channel["id"])
        entry = self._channels[channel_id] = _Entry()
        entry.task = asyncio.get_running_loop().create_task(self._answer(channel_id, entry, channel, args, resync))

    # -- resync

    async def resync(self) -> None:
        """Take care of every channel waiting in the application (after a (re)connection)."""
        snapshot = await self.client.channels()
        present: set[str] = set()
        now = time.monotonic()
        for channel in snapshot:
            channel_id = channel.get("id")
            if not isinstance(channel_id, str):
                continue
            present.add(channel_id)
            if not in_application(channel, self.app):
                continue
            entry = self._channels.get(channel_id)
            if entry is None:
                args = stasis_args(channel)
                if args is None:
                    self._hangup_later(channel_id, "its Stasis() arguments cannot be read with certainty")
                    continue
                log.warning("ARI: channel %s was waiting in the application unseen; deciding it now", channel_id)
                self._start(channel, args, resync=True)
            elif entry.state is State.FAILED or (
                entry.state is State.ANSWERED and now - entry.since > self.config.answer_grace
            ):
                self._hangup_later(channel_id, "its answer did not land")
        # Channels gone while we were away: their StasisEnd was lost.
        for channel_id in [c for c, e in self._channels.items() if c not in present
                           and (e.task is None or e.task.done())]:
            del self._channels[channel_id]

    def _hangup_later(self, channel_id: str, why: str) -> None:
        entry = self._channels[channel_id] = _Entry(state=State.DECIDING)
        entry.task = asyncio.get_running_loop().create_task(self._hangup_only(channel_id, entry, why))

    async def _hangup_only(self, channel_id: str, entry: _Entry, why: str) -> None:
        log.warning("ARI: hanging up channel %s: %s", channel_id, why)
        await self._hangup(channel_id, entry)

    # -- one channel

    async def _answer(self, channel_id: str, entry: _Entry, channel: Mapping[str, Any], args: list[str],
                      resync: bool) -> None:
        try:
            async with asyncio.timeout(self.config.decision_deadline):
                await self._decide(channel_id, entry, channel, args, resync)
        except TimeoutError:
            log.error("ARI: no decision for channel %s within %.1f s; hanging up", channel_id,
                      self.config.decision_deadline)
            await self._hangup(channel_id, entry)
        except AriError as exc:
            if exc.gone:
                entry.state = State.ANSWERED  # nothing left to answer
            else:
                log.error("ARI: channel %s: %s; hanging up", channel_id, exc)
                await self._hangup(channel_id, entry)
        except Exception:
            log.exception("ARI: unexpected error on channel %s; hanging up", channel_id)
            await self._hangup(channel_id, entry)
        finally:
            if entry.ended and self._channels.get(channel_id) is entry:
                del self._channels[channel_id]

    async def _decide(self, channel_id: str, entry: _Entry, channel: Mapping[str, Any], args: list[str],
                      resync: bool) -> None:
        if channel.get("state") == STATE_CREATED:
            # Put into the application by POST /channels/create, not by the dialplan: there is no dialplan
            # to continue in, and the caller ID the callee would see is not the one the channel carries.
            log.warning("ARI: channel %s was created into the application, not sent by the dialplan; hanging "
                        "it up undecided (originate through a Local/ channel into the gated dialplan instead)",
                        channel_id)
            await self._hangup(channel_id, entry)
            return
        # Read from the channel itself, not from an argument: it is what the callee will be shown.
        presentation = await self.client.get_variable(channel_id, PRESENTATION_VARIABLE)
        if entry.ended:
            return  # hung up while waiting: no decision for a call that cannot go out (as FastAGI)
        call = call_request(channel, args, presentation, self.app, resync=resync)
        # Unlike the FastAGI check route, the details go while the decision's audit record is being
        # committed (an fsync they do not depend on), all four at once: each is a REST round trip of its
        # own. RPOGUARD_DECISION goes only once the record is durable, after the final verdict's details.
        pending = await self.gate.begin(call)
        sent = detail_variables(pending.provisional)
        try:
            if not entry.ended:
                await self._set_variables(channel_id, sent)
        except Exception:
            # Recorded all the same: the decision was taken. (On the deadline's cancellation nothing is
            # awaited: a stuck store must not keep the channel from being hung up.)
            await pending.final()
            raise
        verdict = await pending.final()
        log.debug("ARI check %s campaign %s on %s: %s %s", redact(call.raw_number), call.campaign_id,
                  call.channel, verdict.decision, ",".join(verdict.reasons))
        if entry.ended:
            return
        details = detail_variables(verdict)
        if details != sent:
            await self._set_variables(channel_id, details)
        await self.client.set_variable(channel_id, VAR_DECISION, decision_value(verdict))
        if verdict.allowed:
            entry.state = State.ANSWERED
            entry.since = time.monotonic()
            await self.client.continue_in_dialplan(channel_id)
        else:
            await self._hangup(channel_id, entry)

    async def _set_variables(self, channel_id: str, variables: Sequence[tuple[str, str]]) -> None:
        results = await asyncio.gather(*(self.client.set_variable(channel_id, name, value)
                                         for name, value in variables), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _hangup(self, channel_id: str, entry: _Entry) -> None:
        try:
            await self.client.hangup(channel_id, HANGUP_CAUSE)
        except AriError as exc:
            if not exc.gone:
                # Asterisk unreachable: the next resync hangs it up, or the dialplan's time limit does.
                log.error("ARI: cannot hang up channel %s: %s", channel_id, exc)
                entry.state = State.FAILED
                return
        entry.state = State.ANSWERED
        entry.since = time.monotonic()
