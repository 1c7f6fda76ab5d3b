"""Principals and campaigns (everyone sees them; admins add and change them) and the console's users with
the record of changes made through the console (admins)."""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import quote

from aiohttp import web

from rpoguard.constants import (
    CHANGE_CAMPAIGN_ADD,
    CHANGE_PRINCIPAL_ADD,
    CHANGE_USER_ADD,
    CHANGE_USER_DISABLE,
    CHANGE_USER_ENABLE,
    CHANGE_USER_PASSWD,
    CHANGE_USER_ROLE,
    ROLE_ADMIN,
    ROLE_VIEWER,
    ROLES,
)
from rpoguard.db.store import ConsoleChange, NotFoundError, RecordConflict, check_role, check_user_name
from rpoguard.numbers import NumberError, normalize_caller_id
from rpoguard.web.context import record_change, redirect, store_of, to_us_now
from rpoguard.web.keys import SESSIONS
from rpoguard.web.passwords import PasswordRejected, check_new_password, hash_password
from rpoguard.web.render import render
from rpoguard.web.security import current_user, require

log = logging.getLogger(__name__)

MAX_ID_LENGTH = 100
RECENT_CHANGES = 100


class FormError(ValueError):
    """A field the admin must correct."""


def _text(form: web.MultiDictProxy[str], name: str, *, required: bool = True) -> str:
    value = str(form.get(name, "")).strip()
    if required and not value:
        raise FormError(f"{name.replace('_', ' ')} is required")
    if len(value) > MAX_ID_LENGTH and name != "name":
        raise FormError(f"{name} is longer than {MAX_ID_LENGTH} characters")
    return value


def _positive(form: web.MultiDictProxy[str], name: str) -> int | None:
    value = str(form.get(name, "")).strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise FormError(f"{name.replace('_', ' ')} must be a whole number, 1 or more")
    return int(value)


# -- principals and campaigns -----------------------------------------------------------------------------

@require(ROLE_VIEWER)
async def principals(request: web.Request) -> web.StreamResponse:
    store = store_of(request)
    return render(request, "principals.html",
                  principals=[p async for p in store.list_principals()],
                  campaigns=[c async for c in store.list_campaigns()],
                  flash=request.query.get("saved"), error=request.query.get("error"),
                  is_admin=current_user(request).role == ROLE_ADMIN)


@require(ROLE_ADMIN)
async def add_principal(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    try:
        principal_id, name = _text(form, "id"), _text(form, "name")
        caller_ids = [normalize_caller_id(c) for c in str(form.get("caller_ids", "")).replace(",", " ").split()]
    except (FormError, NumberError) as exc:
        return redirect(f"/principals?error={quote(str(exc))}")
    store = store_of(request)
    before = await store.get_principal(principal_id)
    created = await store.add_principal(principal_id, name, caller_ids)
    await record_change(request, CHANGE_PRINCIPAL_ADD, principal_id, {
        "created": created, "name": name, "caller_ids_added": caller_ids,
        "name_before": before.name if before else None})
    return redirect(f"/principals?saved={quote(principal_id)}")


@require(ROLE_ADMIN)
async def add_campaign(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    try:
        campaign_id, principal_id = _text(form, "id"), _text(form, "principal")
        max_attempts, per_days = _positive(form, "max_attempts"), _positive(form, "per_days")
        if (max_attempts is None) != (per_days is None):
            raise FormError("max attempts and per days go together (N calls per D days)")
    except FormError as exc:
        return redirect(f"/principals?error={quote(str(exc))}")
    automated = form.get("automated") == "on"
    store = store_of(request)
    before = await store.get_campaign(campaign_id)
    try:
        created = await store.add_campaign(campaign_id, principal_id, automated, max_attempts, per_days)
    except NotFoundError as exc:
        return redirect(f"/principals?error={quote(str(exc))}")
    await record_change(request, CHANGE_CAMPAIGN_ADD, campaign_id, {
        "created": created, "principal": principal_id, "automated": automated, "max_attempts": max_attempts,
        "per_days": per_days,
        "before": None if before is None else {"principal": before.principal_id, "automated": before.automated,
                                               "max_attempts": before.max_attempts, "per_days": before.per_days}})
    return redirect(f"/principals?saved={quote(campaign_id)}")


# -- users ------------------------------------------------------------------------------------------------

@require(ROLE_ADMIN)
async def users(request: web.Request) -> web.StreamResponse:
    store = store_of(request)
    return render(request, "users.html", users=[u async for u in store.list_users()], roles=ROLES,
                  changes=[c async for c in store.list_changes(limit=RECENT_CHANGES)],
                  flash=request.query.get("saved"), error=request.query.get("error"))


def _change(request: web.Request, action: str, target: str, detail: dict[str, object]) -> ConsoleChange:
    return ConsoleChange(at_us=to_us_now(), user=current_user(request).name, action=action, target=target,
                         detail=detail)


@require(ROLE_ADMIN)
async def add_user(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    try:
        name = check_user_name(_text(form, "username"))
        role = check_role(_text(form, "role"))
        password = str(form.get("password", ""))
        check_new_password(password)
    except (FormError, ValueError, PasswordRejected) as exc:
        return redirect(f"/users?error={quote(str(exc))}")
    password_hash = await asyncio.to_thread(hash_password, password)
    try:
        await store_of(request).add_user(name, role, password_hash, to_us_now(),
                                         change=_change(request, CHANGE_USER_ADD, name, {"role": role}))
    except RecordConflict as exc:
        return redirect(f"/users?error={quote(str(exc))}")
    return redirect(f"/users?saved={quote(name)}")


@require(ROLE_ADMIN)
async def change_user(request: web.Request) -> web.StreamResponse:
    """disable, enable, role or passwd on one user; disabling or a new password ends the user's sessions."""
    name, what = request.match_info["name"], request.match_info["what"]
    form = await request.post()
    store = store_of(request)
    try:
        if what == "disable":
            if name == current_user(request).name:
                raise FormError("you cannot disable yourself")
            await store.update_user(name, at_us=to_us_now(), disabled=True,
                                    change=_change(request, CHANGE_USER_DISABLE, name, {}))
        elif what == "enable":
            await store.update_user(name, at_us=to_us_now(), disabled=False,
                                    change=_change(request, CHANGE_USER_ENABLE, name, {}))
        elif what == "role":
            role = check_role(_text(form, "role"))
            if name == current_user(request).name and role != ROLE_ADMIN:
                raise FormError("you cannot take the admin role from yourself")
            before = await store.get_user(name)
            if before is None:
                raise NotFoundError(f"user {name!r} does not exist")
            await store.update_user(name, at_us=to_us_now(), role=role, change=_change(
                request, CHANGE_USER_ROLE, name, {"role": role, "was": before.role}))
        elif what == "passwd":
            password = str(form.get("password", ""))
            check_new_password(password)
            password_hash = await asyncio.to_thread(hash_password, password)
            await store.update_user(name, at_us=to_us_now(), password_hash=password_hash,
                                    change=_change(request, CHANGE_USER_PASSWD, name, {}))
        else:
            raise web.HTTPNotFound()
    except (FormError, ValueError, PasswordRejected, NotFoundError) as exc:
        return redirect(f"/users?error={quote(str(exc))}")
    if what in ("disable", "passwd") and name != current_user(request).name:
        request.app[SESSIONS].drop_user(name)
    return redirect(f"/users?saved={quote(name)}")


def routes() -> list[web.RouteDef]:
    return [
        web.get("/principals", principals),
        web.post("/principals", add_principal),
        web.post("/campaigns", add_campaign),
        web.get("/users", users),
        web.post("/users", add_user),
        web.post("/users/{name}/{what}", change_user),
    ]
