"""What a handler reads from its request and does to it: the store and config, a redirect that keeps the
session's cookie, starting and ending sessions, recording a change with its user."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from aiohttp import web

from rpoguard.config import Config
from rpoguard.db.store import ConsoleChange, Store
from rpoguard.db.supervisor import SupervisedStore
from rpoguard.timeutil import to_us
from rpoguard.web.keys import CONFIG, SESSIONS, STORE
from rpoguard.web.security import SESSION_KEY, USER_KEY, Session, current_session, current_user

log = logging.getLogger(__name__)

# Where a handler leaves a session it started, for the middleware to send its cookie (None: end it).
NEW_SESSION_KEY: web.RequestKey[Session | None] = web.RequestKey("rpoguard.new_session")


def store_of(request: web.Request) -> Store:
    """The store for this request; under supervision, the one open now (503 page while there is none)."""
    source = request.app[STORE]
    return source.current() if isinstance(source, SupervisedStore) else source


def config_of(request: web.Request) -> Config:
    return request.app[CONFIG]


def redirect(location: str) -> web.Response:
    """303 See Other, returned (not raised) so that the middleware can still set the session's cookie."""
    return web.Response(status=303, headers={"Location": location})


def start_session(request: web.Request, user: str | None) -> Session:
    """A new session (anonymous, or a user's at login) whose cookie goes with this response. Any session the
    request came with ends: a login never keeps an id someone else may have planted (session fixation)."""
    sessions = request.app[SESSIONS]
    old = current_session(request)
    if old is not None:
        sessions.drop(old.sid)
    session = sessions.new(user)
    request[SESSION_KEY] = session
    request[NEW_SESSION_KEY] = session
    return session


def end_session(request: web.Request) -> None:
    session = current_session(request)
    if session is not None:
        request.app[SESSIONS].drop(session.sid)
    request[SESSION_KEY] = None
    request[USER_KEY] = None
    request[NEW_SESSION_KEY] = None


async def record_change(request: web.Request, action: str, target: str, detail: dict[str, object]) -> int:
    """Record a change made through the console with the user who made it (the DPO's answer to "who did
    this"), in the same database as the change."""
    change = ConsoleChange(at_us=to_us_now(), user=current_user(request).name, action=action, target=target,
                           detail=detail)
    change_id = await store_of(request).record_change(change)
    log.info("console change %d by %s: %s %s", change_id, change.user, action, target)
    return change_id


def to_us_now() -> int:
    return to_us(datetime.now(UTC))
