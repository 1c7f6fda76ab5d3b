"""The console's application: its middlewares (error pages, sessions, CSRF, headers), what it keeps, and its
routes, one view module per page."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from rpoguard.config import Config
from rpoguard.db.store import Store, StoreError
from rpoguard.db.supervisor import SupervisedStore
from rpoguard.web import views
from rpoguard.web.context import NEW_SESSION_KEY, store_of
from rpoguard.web.keys import CONFIG, FRESHNESS, ROLLUP, SESSIONS, STORE, TEMPLATES, THROTTLE
from rpoguard.web.render import make_environment, render
from rpoguard.web.rollup import DecisionRollup, FreshnessCache
from rpoguard.web.security import (
    CSRF_FIELD,
    CSRF_HEADER,
    MULTIPART_KEY,
    SESSION_COOKIE,
    SESSION_KEY,
    UNSAFE_METHODS,
    USER_KEY,
    Handler,
    LoginThrottle,
    Session,
    Sessions,
    current_session,
    tokens_match,
)

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
# A CSRF token is 43 characters; reading a little more proves a longer one wrong without reading a body.
MAX_TOKEN_BYTES = 128
# Every page is personal data (numbers, consents): never cached, never framed, no script but our own, and
# the number in a page's address never sent to another site as a referrer. same-origin, not no-referrer: under
# no-referrer a browser sends `Origin: null` with every form post, which the CSRF check rightly refuses.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}
ERROR_KEYS = {403: "error.403", 404: "error.404", 413: "error.413", 503: "error.503", 500: "error.500"}
CSRF_REASON = "CSRF token missing or wrong"


def make_app(store: Store | SupervisedStore, config: Config) -> web.Application:
    web_config = config.web
    app = web.Application(
        middlewares=[_security_headers, _error_pages, _sessions, _csrf],
        # Form posts only: uploads are streamed from the multipart reader, never read whole.
        client_max_size=1 << 20,
    )
    app[STORE] = store
    app[CONFIG] = config
    app[TEMPLATES] = make_environment()
    app[SESSIONS] = Sessions(web_config.session_idle, web_config.session_max)
    app[THROTTLE] = LoginThrottle(web_config.login_attempts, web_config.login_window)
    app[ROLLUP] = DecisionRollup(store)
    app[FRESHNESS] = FreshnessCache(store, config)
    app.cleanup_ctx.append(_background_counts)
    for module in views.MODULES:
        app.router.add_routes(module.routes())
        setup = getattr(module, "setup", None)
        if setup is not None:
            setup(app)
    app.router.add_static("/static", STATIC_DIR)
    return app


async def _background_counts(app: web.Application) -> AsyncIterator[None]:
    """The overview's counts, kept up to date off the requests (web/rollup.py), for as long as the app runs."""
    tasks = [asyncio.create_task(app[ROLLUP].run_forever(), name="rpoguard-console-decision-counts"),
             asyncio.create_task(app[FRESHNESS].run_forever(), name="rpoguard-console-freshness")]
    yield
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


# -- middlewares ------------------------------------------------------------------------------------------

@web.middleware
async def _security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers.update(SECURITY_HEADERS)
        raise
    if not response.prepared:
        response.headers.update(SECURITY_HEADERS)
        if not request.path.startswith("/static/"):
            response.headers.setdefault("Cache-Control", "no-store")
    return response


@web.middleware
async def _error_pages(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Errors as pages in the person's language; a store that cannot answer is 503 (never a page that
    looks complete without its data)."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or request.path.startswith("/static/"):
            raise
        key = "error.csrf" if exc.reason == CSRF_REASON else ERROR_KEYS.get(exc.status, "error.title")
        return render(request, "error.html", status=exc.status, message_key=key, detail=exc.text or "")
    except ConnectionResetError:
        # The browser went away (a download cancelled, a page left): nothing to answer, nothing wrong here.
        log.info("console %s %s: the client closed the connection", request.method, request.path)
        raise
    except StoreError as exc:
        log.error("console %s %s: the database did not answer: %s", request.method, request.path, exc)
        return render(request, "error.html", status=503, message_key="error.503", detail="")
    except Exception:
        log.exception("console %s %s failed", request.method, request.path)
        return render(request, "error.html", status=500, message_key="error.500", detail="")


@web.middleware
async def _sessions(request: web.Request, handler: Handler) -> web.StreamResponse:
    sessions = request.app[SESSIONS]
    sid = request.cookies.get(SESSION_COOKIE)
    session = sessions.get(sid) if sid else None
    user = None
    if session is not None and session.user is not None:
        # Read on every request, so a user disabled or demoted (here or with `rpoguard user`) loses the
        # access at once rather than when the session expires.
        user = await store_of(request).get_user(session.user)
        if user is None or user.disabled:
            sessions.drop(session.sid)
            session, user = None, None
    request[SESSION_KEY] = session
    request[USER_KEY] = user
    response = await handler(request)
    if NEW_SESSION_KEY in request and not response.prepared:
        _set_session_cookie(request, response, request[NEW_SESSION_KEY])
    return response


def _set_session_cookie(request: web.Request, response: web.StreamResponse, session: Session | None) -> None:
    web_config = request.app[CONFIG].web
    if session is None:
        response.del_cookie(SESSION_COOKIE, path="/")
        return
    # No max-age: the cookie ends with the browser, the session itself ends on the server (idle or age).
    response.set_cookie(SESSION_COOKIE, session.sid, path="/", httponly=True, samesite="Strict",
                        secure=web_config.tls or web_config.behind_proxy)


@web.middleware
async def _csrf(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every state-changing request carries the session's CSRF token: in the X-CSRF-Token header (scripts),
    a form's csrf_token field, or a multipart body's first part (the handler reads the rest of the stream)."""
    if request.method in UNSAFE_METHODS:
        session = current_session(request)
        if session is None or not _same_origin(request):
            raise web.HTTPForbidden(reason=CSRF_REASON)
        token = request.headers.get(CSRF_HEADER)
        if token is None:
            token = await _form_token(request)
        if not tokens_match(token, session.csrf):
            log.warning("console %s %s refused: %s", request.method, request.path, CSRF_REASON)
            raise web.HTTPForbidden(reason=CSRF_REASON)
    return await handler(request)


async def _form_token(request: web.Request) -> str | None:
    if request.content_type == "multipart/form-data":
        reader = await request.multipart()
        part = await reader.next()
        if part is None or getattr(part, "name", None) != CSRF_FIELD:
            return None
        data = await part.read_chunk(MAX_TOKEN_BYTES)  # type: ignore[union-attr]
        request[MULTIPART_KEY] = reader
        return data.decode("ascii", "replace").strip()
    if request.content_type == "application/x-www-form-urlencoded":
        form = await request.post()
        value = form.get(CSRF_FIELD)
        return value if isinstance(value, str) else None
    return None


def _same_origin(request: web.Request) -> bool:
    """A browser names the page a post came from; one from another site is refused even with a token."""
    origin = request.headers.get("Origin")
    if origin is None or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.host
