"""One module per page (or group of pages); each gives its routes."""

from __future__ import annotations

from rpoguard.web.views import admin, auth, decisions, numbers, overview

MODULES = (auth, overview, numbers, decisions, admin)
