"""What the console keeps on its aiohttp Application, one typed key each (handlers read them, the app sets
them once at start-up)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import jinja2
from aiohttp import web

from rpoguard.config import Config
from rpoguard.db.store import Store
from rpoguard.db.supervisor import SupervisedStore

if TYPE_CHECKING:
    from rpoguard.web.rollup import DecisionRollup, FreshnessCache
    from rpoguard.web.security import LoginThrottle, Sessions

# A store, or (under `rpoguard web`) the supervisor that keeps one open: context.store_of resolves it.
STORE = web.AppKey("store", Store | SupervisedStore)
CONFIG = web.AppKey("config", Config)
TEMPLATES = web.AppKey("templates", jinja2.Environment)
SESSIONS: web.AppKey[Sessions] = web.AppKey("sessions")
THROTTLE: web.AppKey[LoginThrottle] = web.AppKey("throttle")
ROLLUP: web.AppKey[DecisionRollup] = web.AppKey("rollup")
FRESHNESS: web.AppKey[FreshnessCache] = web.AppKey("freshness")
