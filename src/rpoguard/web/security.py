"""Who is asking, and may they: server-side sessions, the login throttle, CSRF, roles, and the headers every
page carries. Nothing here logs a password, a session id or a CSRF token."""

from __future__ import annotations

import functools
import hmac
import ipaddress
import logging
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import quote

from aiohttp import MultipartReader, web

from rpoguard.constants import ROLES

if TYPE_CHECKING:
    from rpoguard.db.store import WebUser

log = logging.getLogger(__name__)

SESSION_COOKIE = "rpoguard_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Sessions held at once: far above a call centre's staff, low enough that a flood of anonymous visits to
# the login page cannot grow the process without bound.
MAX_SESSIONS = 10_000
# Client addresses and user names the throttle remembers at once, for the same reason.
MAX_THROTTLED_KEYS = 50_000

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# What the session middleware leaves on each request, and the multipart stream the CSRF check began.
USER_KEY: web.RequestKey[WebUser | None] = web.RequestKey("rpoguard.user")
SESSION_KEY: web.RequestKey[Session | None] = web.RequestKey("rpoguard.session")
MULTIPART_KEY: web.RequestKey[MultipartReader] = web.RequestKey("rpoguard.multipart")


@dataclass(slots=True)
class Session:
    """A browser's session: anonymous until a login names its user. Kept in the console's memory only:
    a restart logs everyone out, which is the safe direction."""

    sid: str = field(repr=False)
    csrf: str = field(repr=False)
    user: str | None
    created: float
    seen: float


class Sessions:
    """Sessions by id, each ending after `idle` seconds untouched or `max_age` seconds in all."""

    def __init__(self, idle: float, max_age: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.idle = idle
        self.max_age = max_age
        self.clock = clock
        self._by_id: OrderedDict[str, Session] = OrderedDict()

    def new(self, user: str | None = None) -> Session:
        now = self.clock()
        if len(self._by_id) >= MAX_SESSIONS:
            self._make_room(now)
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), user, now, now)
        self._by_id[session.sid] = session
        return session

    def get(self, sid: str) -> Session | None:
        session = self._by_id.get(sid)
        if session is None:
            return None
        now = self.clock()
        if now - session.seen >= self.idle or now - session.created >= self.max_age:
            del self._by_id[sid]
            return None
        session.seen = now
        self._by_id.move_to_end(sid)
        return session

    def drop(self, sid: str) -> None:
        self._by_id.pop(sid, None)

    def drop_user(self, name: str) -> int:
        """End every session of a user (disabled, or their password changed); how many ended."""
        ended = [sid for sid, s in self._by_id.items() if s.user == name]
        for sid in ended:
            del self._by_id[sid]
        return len(ended)

    def __len__(self) -> int:
        return len(self._by_id)

    def _make_room(self, now: float) -> None:
        expired = [sid for sid, s in self._by_id.items()
                   if now - s.seen >= self.idle or now - s.created >= self.max_age]
        for sid in expired:
            del self._by_id[sid]
        # Still full: the least recently used anonymous sessions go first, then the least recently used.
        anonymous = [sid for sid, s in self._by_id.items() if s.user is None]
        for sid in anonymous[: max(0, len(self._by_id) - MAX_SESSIONS + 1)]:
            del self._by_id[sid]
        while len(self._by_id) >= MAX_SESSIONS:
            self._by_id.popitem(last=False)


class LoginThrottle:
    """Failed logins counted per key (the user name tried, the client's address); a key with `attempts`
    failures inside `window` seconds is refused until the oldest of them leaves the window."""

    def __init__(self, attempts: int, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.attempts = attempts
        self.window = window
        self.clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def wait(self, keys: tuple[str, ...]) -> float:
        """Seconds until these keys may try again; 0 when they may now."""
        now = self.clock()
        longest = 0.0
        for key in keys:
            times = self._recent(key, now)
            if times is not None and len(times) >= self.attempts:
                longest = max(longest, times[0] + self.window - now)
        return longest

    def failed(self, keys: tuple[str, ...]) -> None:
        now = self.clock()
        for key in keys:
            times = self._recent(key, now)
            if times is None:
                times = self._failures[key] = deque(maxlen=self.attempts)
                if len(self._failures) > MAX_THROTTLED_KEYS:
                    self._failures.popitem(last=False)
            times.append(now)
            self._failures.move_to_end(key)

    def succeeded(self, keys: tuple[str, ...]) -> None:
        for key in keys:
            self._failures.pop(key, None)

    def _recent(self, key: str, now: float) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] + self.window <= now:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times


def tokens_match(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def client_address(request: web.Request, behind_proxy: bool) -> str:
    """The client's address for the throttle: X-Forwarded-For's last hop only when a proxy on loopback set
    it (anyone else could write any address there and escape the throttle)."""
    remote = request.remote or "?"
    if behind_proxy and _is_loopback(remote):
        forwarded = request.headers.get("X-Forwarded-For", "")
        last = forwarded.rsplit(",", 1)[-1].strip()
        if last:
            return last
    return remote


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def current_user_or_none(request: web.Request) -> WebUser | None:
    return request.get(USER_KEY)


def current_user(request: web.Request) -> WebUser:
    """The logged-in user of a handler behind require(); anything else is a bug, refused rather than served."""
    user = current_user_or_none(request)
    if user is None:
        raise web.HTTPUnauthorized(text="log in first")
    return user


def current_session(request: web.Request) -> Session | None:
    return request.get(SESSION_KEY)


def role_rank(role: str) -> int:
    """The role's place in ROLES (viewer < operator < admin); -1 for a role this version does not know,
    which then can do nothing."""
    return ROLES.index(role) if role in ROLES else -1


def require(role: str) -> Callable[[Handler], Handler]:
    """A handler for users holding at least `role`. Not logged in: a page goes to the login form, anything
    else is refused (401); logged in with a lesser role: 403."""
    needed = role_rank(role)

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def guarded(request: web.Request) -> web.StreamResponse:
            user = current_user_or_none(request)
            if user is None:
                if request.method == "GET":
                    raise web.HTTPSeeOther(f"/login?next={quote(request.path_qs, safe='')}")
                raise web.HTTPUnauthorized(text="log in first")
            if role_rank(user.role) < needed:
                raise web.HTTPForbidden(reason="Forbidden", text=f"this needs the {role} role")
            return await handler(request)

        return guarded

    return wrap


def safe_next(target: str | None) -> str:
    """Where to go after login or a language switch: a path on this site only, never another host."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
