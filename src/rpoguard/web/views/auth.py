"""Logging in and out, and the language switch."""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets

from aiohttp import web

from rpoguard.web.context import config_of, end_session, redirect, start_session, store_of, to_us_now
from rpoguard.web.i18n import LANG_COOKIE, LANGUAGES
from rpoguard.web.keys import THROTTLE
from rpoguard.web.passwords import hash_password, needs_rehash, verify_password
from rpoguard.web.render import render
from rpoguard.web.security import client_address, current_session, current_user_or_none, safe_next

log = logging.getLogger(__name__)

# A year: the language is a preference, not a secret.
LANG_COOKIE_AGE = 365 * 24 * 3600


@functools.cache
def _decoy_hash() -> str:
    """Verified when the user name is unknown, so that a wrong name takes as long as a wrong password and
    the timing does not tell which names exist. Made once, at the first failed login."""
    return hash_password(secrets.token_urlsafe(32))


async def login_form(request: web.Request) -> web.StreamResponse:
    if current_user_or_none(request) is not None:
        return redirect(safe_next(request.query.get("next")))
    if current_session(request) is None:
        start_session(request, None)  # its CSRF token protects the login form itself
    return render(request, "login.html", next=safe_next(request.query.get("next")), error=None, username="")


async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    username = str(form.get("username", "")).strip()
    password = str(form.get("password", ""))
    target = safe_next(str(form.get("next", "/")))
    address = client_address(request, config_of(request).web.behind_proxy)
    throttle = request.app[THROTTLE]
    keys = (f"user:{username.casefold()}", f"addr:{address}")
    wait = throttle.wait(keys)
    if wait > 0:
        log.warning("console login refused from %s: too many failed attempts", address)
        return render(request, "login.html", status=429, next=target, username=username,
                      error=("login.throttled", {"minutes": max(1, round(wait / 60))}))
    store = store_of(request)
    user = await store.get_user(username) if username else None
    # argon2 takes tens of milliseconds of CPU by design: off the event loop, so other pages keep answering.
    known_hash = user.password_hash if user else await asyncio.to_thread(_decoy_hash)
    matched = await asyncio.to_thread(verify_password, known_hash, password)
    if user is None or user.disabled or not matched:
        throttle.failed(keys)
        # The name typed is logged only when it is a user's: a password typed into the name field never is.
        log.warning("console login failed from %s%s", address, f" for user {user.name}" if user else "")
        return render(request, "login.html", status=401, next=target, username=username,
                      error=("login.failed", {}))
    throttle.succeeded(keys)
    if needs_rehash(user.password_hash):
        new_hash = await asyncio.to_thread(hash_password, password)
        await store.update_user(user.name, at_us=to_us_now(), password_hash=new_hash)
    start_session(request, user.name)
    log.info("console login: %s (%s) from %s", user.name, user.role, address)
    return redirect(target)


async def logout(request: web.Request) -> web.StreamResponse:
    user = current_user_or_none(request)
    end_session(request)
    if user is not None:
        log.info("console logout: %s", user.name)
    return redirect("/login")


async def switch_language(request: web.Request) -> web.StreamResponse:
    lang = request.match_info["lang"]
    if lang not in LANGUAGES:
        raise web.HTTPNotFound()
    response = redirect(safe_next(request.query.get("next")))
    response.set_cookie(LANG_COOKIE, lang, max_age=LANG_COOKIE_AGE, path="/", httponly=True, samesite="Lax")
    return response


def routes() -> list[web.RouteDef]:
    return [
        web.get("/login", login_form),
        web.post("/login", login),
        web.post("/logout", logout),
        web.get("/lang/{lang}", switch_language),
    ]
