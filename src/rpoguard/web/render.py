"""Pages from templates: one Jinja2 environment per console (templates are compiled once, at the first use of
each, never per request), with the person's language, the CSRF field and Europe/Rome times."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import jinja2
from aiohttp import web
from markupsafe import Markup, escape

from rpoguard.constants import REASON_TEXT
from rpoguard.timeutil import ROME
from rpoguard.web.i18n import LANG_COOKIE, REASON_TEXT_IT, pick_language, translate
from rpoguard.web.keys import CONFIG, TEMPLATES
from rpoguard.web.security import CSRF_FIELD, current_session, current_user_or_none

ROME_FORMAT = "%Y-%m-%d %H:%M:%S"


def make_environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("rpoguard.web", "templates"),
        autoescape=jinja2.select_autoescape(default=True),
        undefined=jinja2.StrictUndefined,  # a misspelt name in a template fails its test, not silently blank
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["rome"] = rome
    env.filters["rome_date"] = rome_date
    env.filters["thousands"] = thousands
    env.filters["tojson_attr"] = lambda value: json.dumps(value, separators=(",", ":"))
    return env


def rome(us: int | None) -> str:
    """A stored moment (µs since the epoch) as Europe/Rome wall-clock time."""
    if us is None:
        return ""
    return datetime.fromtimestamp(us / 1_000_000, tz=UTC).astimezone(ROME).strftime(ROME_FORMAT)


def rome_date(us: int | None) -> str:
    return rome(us)[:10]


def thousands(value: int) -> str:
    return f"{value:,}".replace(",", "\u202f")


def language(request: web.Request) -> str:
    return pick_language(request.cookies.get(LANG_COOKIE))


def reason_sentence(code: str, lang: str, validity_days: int) -> str:
    text = REASON_TEXT_IT.get(code) if lang == "it" else REASON_TEXT.get(code)
    return text.format(validity_days=validity_days) if text else code


def render(request: web.Request, template: str, *, status: int = 200, **context: Any) -> web.Response:
    env: jinja2.Environment = request.app[TEMPLATES]
    lang = language(request)
    session = current_session(request)
    validity = request.app[CONFIG].rpo_validity_days

    def t(key: str, **values: object) -> str:
        return translate(key, lang, **values)

    def csrf_field() -> Markup:
        token = session.csrf if session is not None else ""
        return Markup('<input type="hidden" name="{}" value="{}">').format(CSRF_FIELD, escape(token))

    html = env.get_template(template).render(
        t=t, lang=lang, csrf_field=csrf_field, user=current_user_or_none(request), path=request.path,
        path_qs=request.path_qs, csrf_token=session.csrf if session is not None else "",
        reason=lambda code: reason_sentence(code, lang, validity), **context)
    return web.Response(text=html, status=status, content_type="text/html", charset="utf-8")
