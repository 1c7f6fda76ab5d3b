"""One module per page (or group of pages); each gives its routes, and may have a setup(app) that makes what
its pages keep on the application (started and stopped with it)."""

from __future__ import annotations

from rpoguard.web.views import admin, audit, auth, decisions, due, imports, numbers, overview

MODULES = (auth, overview, numbers, decisions, admin, imports, due, audit)
