"""The FastAGI server: `rpoguard serve`.

Asterisk connects once per ``AGI(agi://host:port/ROUTE?query,args)``; the server reads the environment,
runs the route named by the script path and closes. It is built for one failure mode above all: Asterisk
has no command timeout, and anything but a ``failure`` line followed by a close reads as success. So every
session has a hard deadline, every error answers ``failure`` (dispatch.py), and connections beyond the
cap, from unknown clients or during shutdown are answered ``failure`` at once instead of being left to
wait.

asyncio ``BufferedProtocol`` rather than streams: it costs less CPU per session, with fewer syscalls
(docs/performance.md, "FastAGI server"), and the line handling it needs is small (protocol.AgiLineProtocol).
It runs on any asyncio loop, uvloop included, without depending on one. Its settings are a ServeConfig
(rpoguard.config, the ``[serve]`` section), where each default lives.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import resource
import time
from collections.abc import Iterable, Mapping
from typing import Any, Final

from rpoguard.agi.dispatch import Outcome, run_session
from rpoguard.agi.protocol import FAILURE_LINE, AgiLineProtocol, AgiRequest, Route
from rpoguard.config import ServeConfig

__all__ = [
    "FastAgiServer",
    "Route",
    "fit_open_file_limit",
]

log = logging.getLogger(__name__)

# At most one log line per reason per interval when turning connections away: a flood must not also
# flood the log.
DEFAULT_LOG_INTERVAL: Final = 10.0

_LOOPBACK_NAMES: Final = frozenset({"localhost"})
# Descriptors besides the connections: the listener, the database and audit files, logs, the event loop.
_FD_RESERVE: Final = 64


class _Connection(AgiLineProtocol):
    def __init__(self, server: FastAgiServer) -> None:
        super().__init__()
        self._server = server
        self.peer = "?"
        self.peer_address: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peername = transport.get_extra_info("peername")
        if isinstance(peername, tuple) and len(peername) >= 2:
            self.peer_address = str(peername[0])
            self.peer = f"{peername[0]}:{peername[1]}"
        self._server._connection_made(self)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._server._connections.discard(self)

    def abort(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.abort()


class _Throttle:
    """Counts events per reason and logs at most one line per reason per interval."""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._last: dict[str, float] = {}
        self._count: dict[str, int] = {}

    def warn(self, reason: str, peer: str) -> None:
        now = time.monotonic()
        self._count[reason] = self._count.get(reason, 0) + 1
        last = self._last.get(reason)
        if last is not None and now - last < self._interval:
            return
        count = self._count.pop(reason)
        self._last[reason] = now
        log.warning(
            "FastAGI: %s; answered failure to %s (%d connection(s) turned away for this reason since the last report)",
            reason,
            peer,
            count,
        )


def _parse_clients(clients: Iterable[str]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    networks = []
    for entry in clients:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError as exc:
            raise ValueError(f"allowed client {entry!r} is not an IP address or network: {exc}") from None
    return tuple(networks)


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class FastAgiServer:
    """Serve ``routes`` over FastAGI with the settings of ``config``. ``agi://host:port/check?campaign=C``
    runs ``routes["check"]``.

    ``config.session_deadline``: seconds from accept to close; when it passes, the session answers
    ``failure`` and closes. ``max_connections``: sessions at once; more are answered ``failure``
    immediately. ``command_timeout``: optional bound on each reply, within the deadline.
    ``allowed_clients``: IP addresses or networks allowed to connect (FastAGI has no authentication);
    required when ``host`` is not a loopback address. ``port=0`` picks a free port (see ``port``).
    ``log_interval``: at most one log line per reason for turning connections away in that many seconds.
    """

    def __init__(
        self,
        config: ServeConfig,
        routes: Mapping[str, Route],
        *,
        log_interval: float = DEFAULT_LOG_INTERVAL,
    ) -> None:
        if config.session_deadline <= 0:
            raise ValueError(f"session_deadline must be positive, not {config.session_deadline!r}")
        if config.max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, not {config.max_connections!r}")
        self._allowed = _parse_clients(config.allowed_clients)
        if not self._allowed and not _is_loopback(config.host):
            raise ValueError(
                f"refusing to serve FastAGI on {config.host!r} without allowed_clients: FastAGI has no "
                "authentication, so anyone who can connect could ask for verdicts"
            )
        self._routes = dict(routes)
        self._host = config.host
        self._port = config.port
        self._session_deadline = config.session_deadline
        self._max_connections = config.max_connections
        self._backlog = config.backlog
        self._command_timeout = config.command_timeout
        self._linger = config.linger
        self._throttle = _Throttle(log_interval)
        self._server: asyncio.Server | None = None
        self._sessions: set[asyncio.Task[None]] = set()
        self._connections: set[_Connection] = set()
        self._closing = False
        self._stopped = asyncio.Event()

    # -- public API ----------------------------------------------------------------------------------------

    @property
    def sockets(self) -> tuple[Any, ...]:
        """The listening sockets (empty before start and after stop)."""
        return tuple(self._server.sockets) if self._server is not None else ()

    @property
    def port(self) -> int:
        """The bound port: the real one when constructed with ``port=0``."""
        sockets = self.sockets
        if not sockets:
            raise RuntimeError("the FastAGI server is not listening")
        return int(sockets[0].getsockname()[1])

    @property
    def active_sessions(self) -> int:
        return len(self._sessions)

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("the FastAGI server was already started")
        self._max_connections = fit_open_file_limit(self._max_connections)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self),
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=True,
        )
        addresses = ", ".join(_format_sockname(s.getsockname()) for s in self._server.sockets)
        log.info(
            "FastAGI server listening on %s; routes: %s; session deadline %.3gs, at most %d sessions",
            addresses,
            ", ".join(sorted(self._routes)) or "(none)",
            self._session_deadline,
            self._max_connections,
        )

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting; give sessions in flight ``grace`` seconds (default: the session deadline) to
        finish; then answer ``failure`` to the rest and close everything. Safe to call more than once."""
        if self._server is None:
            return
        if self._closing:
            await self._stopped.wait()
            return
        self._closing = True
        self._server.close()
        grace = self._session_deadline if grace is None else max(grace, 0.0)
        in_flight = set(self._sessions)
        if in_flight:
            log.info("FastAGI server stopping: waiting up to %.3gs for %d session(s)", grace, len(in_flight))
            _, late = await asyncio.wait(in_flight, timeout=grace)
            if late:
                log.warning(
                    "FastAGI server stopping: %d session(s) still running after %.3gs; answering failure",
                    len(late),
                    grace,
                )
                for task in late:
                    task.cancel()
                await asyncio.wait(late)
        await self._close_connections()
        await self._server.wait_closed()
        self._stopped.set()
        log.info("FastAGI server stopped")

    async def serve_forever(self) -> None:
        """Start if needed and return once ``stop`` has finished; cancelling it stops the server."""
        if self._server is None:
            await self.start()
        try:
            await self._stopped.wait()
        except asyncio.CancelledError:
            await self.stop()
            raise

    async def __aenter__(self) -> FastAgiServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- connections ---------------------------------------------------------------------------------------

    def _connection_made(self, conn: _Connection) -> None:
        self._connections.add(conn)
        if self._closing:
            self._turn_away(conn, "server stopping")
            return
        if self._allowed and not self._client_allowed(conn.peer_address):
            self._turn_away(conn, "client not in allowed_clients")
            return
        if len(self._sessions) >= self._max_connections:
            self._turn_away(conn, f"connection limit of {self._max_connections} sessions reached")
            return
        deadline = asyncio.get_running_loop().time() + self._session_deadline
        task = asyncio.get_running_loop().create_task(self._serve(conn, deadline))
        self._sessions.add(task)
        task.add_done_callback(self._sessions.discard)

    def _client_allowed(self, address: str | None) -> bool:
        if address is None:
            return False
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self._allowed)

    def _turn_away(self, conn: _Connection, reason: str) -> None:
        self._throttle.warn(reason, conn.peer)
        conn.write(FAILURE_LINE)
        # Under a flood, lingering connections would pile up; past twice the cap, close straight away.
        overloaded = len(self._connections) > 2 * self._max_connections
        conn.linger_close(0.0 if overloaded else self._linger)

    def _resolve(self, request: AgiRequest) -> tuple[str, Route, AgiRequest] | None:
        route = self._routes.get(request.network_script)
        return None if route is None else (request.network_script, route, request)

    async def _serve(self, conn: _Connection, deadline: float) -> None:
        outcome = Outcome.FAILED
        try:
            outcome = await run_session(
                conn,
                self._resolve,
                deadline=deadline,
                command_timeout=self._command_timeout,
                peer=conn.peer,
            )
        finally:
            # Also on cancellation: run_session has written "failure" and outcome is still FAILED.
            if outcome.failed:
                conn.linger_close(self._linger)
            else:
                conn.close()

    async def _close_connections(self) -> None:
        closing = [conn.closed for conn in self._connections]
        if closing:
            await asyncio.wait(closing, timeout=self._linger)
        stuck = [conn for conn in self._connections if not conn.closed.done()]
        for conn in stuck:
            conn.abort()
        if stuck:
            await asyncio.wait([conn.closed for conn in stuck], timeout=1.0)


def fit_open_file_limit(max_connections: int) -> int:
    """The session cap the process's open-file limit can hold, raising the soft limit when it must.

    Each session holds a descriptor, and connections turned away hold one while they linger (up to as many
    again, see _turn_away). Past the limit, accept() fails with EMFILE and asyncio stops accepting for a
    second: every call in that second would wait, then fail. Turning the excess away with ``failure``
    instead needs the cap to stay below the limit. The soft limit is raised only when it is too low (the
    systemd unit sets LimitNOFILE high enough, so its syscall filter never sees setrlimit).
    """
    needed = 2 * max_connections + _FD_RESERVE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return max_connections
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, target, exc)
        else:
            log.info("open-file limit raised from %d to %d for %d sessions", soft, target, max_connections)
            soft = target
    if soft >= needed:
        return max_connections
    fitted = max(1, (soft - _FD_RESERVE) // 2)
    log.warning(
        "open-file limit %d (hard limit %s) is too low for %d sessions: serving at most %d at once; raise "
        "the limit (systemd: LimitNOFILE=) to at least %d",
        soft,
        "unlimited" if hard == resource.RLIM_INFINITY else hard,
        max_connections,
        fitted,
        needed,
    )
    return fitted


def _format_sockname(sockname: Any) -> str:
    if isinstance(sockname, tuple) and len(sockname) >= 2:
        host, port = sockname[0], sockname[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(sockname)
