"""A fake Asterisk ARI over a real socket (aiohttp.web), and a fake gate, for tests/integration/test_ari.py.

The fake keeps what the real one does where the ARI gate relies on it (checked against Asterisk 22 in
tests/e2e/test_ari.py): channels sit in the application until continued or hung up, each of which sends
StasisEnd; ``/variable`` and ``/continue`` answer 404 for a channel that is gone; ``GET /channels`` shows
``dialplan.app_name``/``app_data``; the events WebSocket needs the ARI user's Basic credentials, and while
no WebSocket is open nothing is sent (events are lost, as in Asterisk).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from rpoguard.constants import ALLOW, BLOCK, ENGINE_ERROR
from rpoguard.gate import CallRequest, OptoutRequest, OptoutResult, PendingVerdict, Verdict

USER = "dialer"
PASSWORD = "s3cret-Passw0rd"
APP = "rpoguard"


def channel(channel_id: str, number: str = "0612345678", campaign: str = "C1", *, app: str = APP,
            caller: str = "0694801234", app_data: str | None = None) -> dict[str, Any]:
    """A channel snapshot as Asterisk 22 sends it for Stasis(app,number,campaign)."""
    return {
        "id": channel_id,
        "name": f"Local/{number}@outbound-00000001;2",
        "state": "Ring",
        "protocol_id": "",
        "caller": {"name": "ACME", "number": caller},
        "connected": {"name": "", "number": ""},
        "accountcode": "",
        "dialplan": {"context": "rpoguard-check-ari", "exten": "s", "priority": 6, "app_name": "Stasis",
                     "app_data": app_data if app_data is not None else f"{app},{number},{campaign},"},
        "creationtime": "2026-11-24T11:00:00.000+0100",
        "language": "en",
    }


@dataclass
class FakeAri:
    """ARI's REST and events WebSocket, with the state of the channels in the application."""

    channels: dict[str, dict[str, Any]] = field(default_factory=dict)
    presentation: dict[str, str] = field(default_factory=dict)
    # Every REST call as (method, path, query) in order of arrival.
    calls: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    variables: dict[str, dict[str, str]] = field(default_factory=dict)
    continued: list[str] = field(default_factory=list)
    hung_up: list[tuple[str, str]] = field(default_factory=list)
    # A REST path that answers 500 (an Asterisk in trouble), matched by suffix.
    failing: set[str] = field(default_factory=set)
    # While set, the events WebSocket is refused with this status.
    refuse_ws: int | None = None
    # False: the WebSocket never answers pings, as a connection a firewall silently dropped.
    autoping: bool = True
    ws_attempts: int = 0
    ws_connections: int = 0
    bad_auth: int = 0
    _sockets: list[web.WebSocketResponse] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    port: int = 0
    connected: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> FakeAri:
        app = web.Application(middlewares=[self._auth])
        app.router.add_get("/ari/events", self._events)
        app.router.add_get("/ari/channels", self._list)
        app.router.add_get("/ari/channels/{id}/variable", self._get_variable)
        app.router.add_post("/ari/channels/{id}/variable", self._set_variable)
        app.router.add_post("/ari/channels/{id}/continue", self._continue)
        app.router.add_delete("/ari/channels/{id}", self._hangup)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        sockets = site._server.sockets if site._server is not None else []  # type: ignore[union-attr]
        self.port = int(sockets[0].getsockname()[1])
        return self

    async def stop(self) -> None:
        await self.drop_websockets()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- test controls

    def enter(self, snapshot: dict[str, Any], args: list[str] | None = None, *, pres: str = "allowed_not_screened",
              announce: bool = True) -> None:
        """A channel enters Stasis; with announce, StasisStart goes to every open WebSocket."""
        self.channels[snapshot["id"]] = snapshot
        self.presentation[snapshot["id"]] = pres
        if announce:
            if args is None:
                args = snapshot["dialplan"]["app_data"].split(",")[1:]
            self.send({"type": "StasisStart", "application": APP, "args": args, "channel": snapshot})

    def leave(self, channel_id: str) -> None:
        """The channel hangs up by itself (the caller gave up)."""
        snapshot = self.channels.pop(channel_id, None)
        if snapshot is not None:
            self.send({"type": "StasisEnd", "application": APP, "channel": snapshot})

    def send(self, event: dict[str, Any]) -> None:
        for ws in list(self._sockets):
            if not ws.closed:
                asyncio.get_running_loop().create_task(ws.send_json(event))

    async def drop_websockets(self) -> None:
        """Close every events WebSocket, as a restarted HTTP server or a cut proxy would."""
        sockets, self._sockets = self._sockets, []
        self.connected.clear()
        for ws in sockets:
            with contextlib.suppress(Exception):
                await ws.close()

    def actions(self, channel_id: str) -> list[str]:
        """What was done to one channel, in order: set NAME=VALUE, continue, hangup CAUSE."""
        out: list[str] = []
        for method, path, query in self.calls:
            if f"/channels/{channel_id}" not in path:
                continue
            if path.endswith("/variable") and method == "POST":
                out.append(f"set {query.get('variable')}={query.get('value')}")
            elif path.endswith("/continue"):
                out.append("continue")
            elif method == "DELETE":
                out.append(f"hangup {query.get('reason_code')}")
        return out

    # -- handlers

    @web.middleware
    async def _auth(self, request: web.Request, handler: Callable[..., Any]) -> web.StreamResponse:
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            self.bad_auth += 1
            return web.json_response({"message": "Authentication required"}, status=401)
        return await handler(request)

    async def _events(self, request: web.Request) -> web.StreamResponse:
        self.ws_attempts += 1
        if self.refuse_ws is not None:
            return web.json_response({"message": "refused"}, status=self.refuse_ws)
        if request.query.get("app") != APP:
            return web.json_response({"message": "wrong app"}, status=400)
        ws = web.WebSocketResponse(autoping=self.autoping)
        await ws.prepare(request)
        self.ws_connections += 1
        self._sockets.append(ws)
        self.connected.set()
        async for message in ws:
            if message.type == WSMsgType.ERROR:
                break
        return ws

    def _record(self, request: web.Request) -> None:
        self.calls.append((request.method, request.path, dict(request.query)))

    def _failing(self, request: web.Request) -> bool:
        return any(request.path.endswith(suffix) for suffix in self.failing)

    async def _list(self, request: web.Request) -> web.StreamResponse:
        self._record(request)
        if self._failing(request):
            return web.json_response({"message": "boom"}, status=500)
        return web.json_response([copy.deepcopy(c) for c in self.channels.values()])

    def _channel_request(self, request: web.Request, not_found: str) -> tuple[str, web.StreamResponse | None]:
        """What every channel endpoint does first, as Asterisk answers: recorded, then 500 when told to
        fail, 404 for a channel it does not have (with that endpoint's own message)."""
        self._record(request)
        channel_id = request.match_info["id"]
        if self._failing(request):
            return channel_id, web.json_response({"message": "boom"}, status=500)
        if channel_id not in self.channels:
            return channel_id, web.json_response({"message": not_found}, status=404)
        return channel_id, None

    async def _get_variable(self, request: web.Request) -> web.StreamResponse:
        channel_id, refused = self._channel_request(request, "Channel or variable not found")
        if refused is not None:
            return refused
        if request.query.get("variable") != "CALLERID(pres)":
            return web.json_response({"message": "Provided variable was not found"}, status=404)
        return web.json_response({"value": self.presentation[channel_id]})

    async def _set_variable(self, request: web.Request) -> web.StreamResponse:
        channel_id, refused = self._channel_request(request, "Channel not found")
        if refused is not None:
            return refused
        self.variables.setdefault(channel_id, {})[request.query["variable"]] = request.query.get("value", "")
        return web.Response(status=204)

    async def _continue(self, request: web.Request) -> web.StreamResponse:
        channel_id, refused = self._channel_request(request, "Channel not found")
        if refused is not None:
            return refused
        self.continued.append(channel_id)
        self.leave(channel_id)
        return web.Response(status=204)

    async def _hangup(self, request: web.Request) -> web.StreamResponse:
        channel_id, refused = self._channel_request(request, "Channel not found")
        if refused is not None:
            return refused
        self.hung_up.append((channel_id, request.query.get("reason_code", "")))
        self.leave(channel_id)
        return web.Response(status=204)


class FakeGate:
    """Decides by number: numbers in ``allow`` are allowed, the rest blocked as rpo_registered. ``hold``,
    when set, makes every check wait for it (a decision in flight); ``fail`` makes check report an
    engine_error BLOCK, as Gate.check does when the store is gone."""

    def __init__(self, allow: set[str] | None = None) -> None:
        self.allow = allow or set()
        self.calls: list[CallRequest] = []
        self.hold: asyncio.Event | None = None
        self.entered = asyncio.Event()
        self.fail = False
        # When set: the verdict the record ends with, whatever the provisional one was.
        self.final: Verdict | None = None
        self.record_stuck = False

    async def check(self, call: CallRequest) -> Verdict:
        self.calls.append(call)
        self.entered.set()
        if self.hold is not None:
            await self.hold.wait()
        if self.fail:
            return Verdict(BLOCK, (ENGINE_ERROR,), None, None)
        if call.raw_number in self.allow:
            return Verdict(ALLOW, (), "+39" + call.raw_number, f"id-{len(self.calls)}", "listed")
        return Verdict(BLOCK, ("rpo_registered",), "+39" + call.raw_number, f"id-{len(self.calls)}")

    async def begin(self, call: CallRequest) -> PendingVerdict:
        provisional = await self.check(call)
        if self.record_stuck:
            # The audit commit never completes (a disk that hangs): final() never returns.
            return PendingVerdict(provisional, asyncio.get_running_loop().create_future())
        if self.final is None:
            return PendingVerdict.settled(provisional)
        # The record landed differently (the attempt cap was taken meanwhile, the log out of reach).
        recorded: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
        recorded.set_result(self.final)
        return PendingVerdict(provisional, recorded)

    async def optout(self, request: OptoutRequest) -> OptoutResult:
        raise AssertionError("the ARI gate never records opt-outs")
