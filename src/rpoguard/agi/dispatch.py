"""Run one AGI session fail-closed, for FastAGI and classic AGI alike.

Read the request, pick the route, run it under the session deadline. Every way it can go wrong ends with
the ``failure`` line, so Asterisk sets AGISTATUS=FAILURE and the dialplan blocks the call; a silent
close would read as SUCCESS (docs/asterisk-agi.md). Each problem is logged here, once, with the route name;
routes themselves do not log their errors.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable

from rpoguard.agi.protocol import (
    FAILURE_LINE,
    AgiCommandError,
    AgiConnectionLostError,
    AgiFailure,
    AgiProtocolError,
    AgiRequest,
    AgiSession,
    AgiTimeoutError,
    LineChannel,
    Route,
    read_request,
)
from rpoguard.numbers import redact

log = logging.getLogger(__name__)

Resolver = Callable[[AgiRequest], tuple[str, Route, AgiRequest] | None]
"""Picks the route for a request: (route name, route, request as the route should see it) or None."""

_BEFORE_ROUTING = "(before routing)"


class Outcome(enum.Enum):
    DONE = "done"  # the route finished; closing now reads as AGISTATUS=SUCCESS
    FAILED = "failed"  # "failure" was written: AGISTATUS=FAILURE
    NO_ROUTE = "no_route"  # "failure" was written: nothing handles this request
    NO_REQUEST = "no_request"  # the peer closed before the blank line; nothing was run or written
    PEER_GONE = "peer_gone"  # the peer closed during the route; nothing more could be written

    @property
    def failed(self) -> bool:
        return self in (Outcome.FAILED, Outcome.NO_ROUTE)


async def run_session(
    channel: LineChannel,
    resolve: Resolver,
    *,
    deadline: float,
    command_timeout: float | None = None,
    peer: str = "AGI",
) -> Outcome:
    """Serve one request on ``channel`` until ``deadline`` (event-loop time). Does not close the channel.

    On cancellation (server stopping past its grace) it writes ``failure`` and re-raises.
    """
    route_name = _BEFORE_ROUTING
    session: AgiSession | None = None
    scope = asyncio.timeout_at(deadline)
    try:
        async with scope:
            request = await read_request(channel)
            if request is None:
                log.debug("%s: closed before the end of the AGI environment; nothing to do", peer)
                return Outcome.NO_REQUEST
            resolved = resolve(request)
            if resolved is None:
                log.warning(
                    "%s: no route for script %r (agi_request %r); answered failure",
                    peer,
                    request.network_script,
                    request.request_url,
                )
                _write_failure(channel, session)
                return Outcome.NO_ROUTE
            route_name, route, request = resolved
            if getattr(route, "needs_live_call", False) and channel.peer_finished():
                # Asterisk gave up on this call while it waited (a stalled server, the dialplan's time
                # limit). A check now would record a decision for a call that never went out; an opt-out,
                # by contrast, is still recorded: the person said no whether or not the line is up.
                log.warning("%s: Asterisk ended the session before route %r ran; not run", peer, route_name)
                return Outcome.PEER_GONE
            session = AgiSession(channel, deadline=deadline, command_timeout=command_timeout, guarded=True)
            await route(request, session)
            return Outcome.FAILED if session.failed else Outcome.DONE
    except TimeoutError:
        if not scope.expired():
            log.exception("%s: route %r raised; answered failure", peer, route_name)
        else:
            log.warning("%s: route %r hit the session deadline; answered failure", peer, route_name)
    except AgiConnectionLostError:
        log.info("%s: Asterisk closed the connection during route %r", peer, route_name)
        return Outcome.PEER_GONE
    except AgiTimeoutError as exc:
        log.warning("%s: route %r: %s; answered failure", peer, route_name, redact(exc))
    except AgiFailure as exc:
        log.warning("%s: route %r refused the request: %s; answered failure", peer, route_name, redact(exc))
    except AgiCommandError as exc:
        log.error("%s: route %r: Asterisk answered %s; answered failure", peer, route_name, redact(exc))
    except AgiProtocolError as exc:
        log.warning("%s: route %r: protocol error: %s; answered failure", peer, route_name, redact(exc))
    except asyncio.CancelledError:
        log.warning("%s: route %r cancelled (server stopping); answered failure", peer, route_name)
        _write_failure(channel, session)
        raise
    except Exception:
        log.exception("%s: route %r raised; answered failure", peer, route_name)
    _write_failure(channel, session)
    return Outcome.FAILED


def _write_failure(channel: LineChannel, session: AgiSession | None) -> None:
    # Synchronous on purpose: it must also work in a task that is being cancelled. The caller's close
    # flushes it.
    if session is not None:
        if session.failed:
            return
        session.failed = True
    channel.write(FAILURE_LINE)
