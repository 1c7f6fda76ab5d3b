"""Registry due: per principal, how many numbers have no valid RPO answer or one that expires soon (the
console's freshness counts, kept in the background), and the list to submit to the RPO as a download: the
same numbers `rpoguard registry due --principal ID [--within DAYS] [--national]` writes."""

from __future__ import annotations

import contextlib
import re
from datetime import UTC, datetime, timedelta

from aiohttp import web

from rpoguard.constants import ROLE_VIEWER
from rpoguard.numbers import national_form
from rpoguard.timeutil import ROME
from rpoguard.web.context import config_of, store_of
from rpoguard.web.download import start_download
from rpoguard.web.keys import FRESHNESS
from rpoguard.web.render import render
from rpoguard.web.security import require

# Longer than any answer's validity: every answer would be due. A bigger value is a typing mistake.
MAX_WITHIN_DAYS = 366
_SAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]")


def _within(request: web.Request) -> int:
    text = request.query.get("within", "0")
    if not text.isdigit() or int(text) > MAX_WITHIN_DAYS:
        raise web.HTTPBadRequest(text=f"within must be a number of days from 0 to {MAX_WITHIN_DAYS}, not {text[:20]!r}")
    return int(text)


@require(ROLE_VIEWER)
async def due_page(request: web.Request) -> web.StreamResponse:
    cache = request.app.get(FRESHNESS)
    freshness = cache.get() if cache is not None else None
    counted = {f.principal_id: f for f in freshness} if freshness is not None else {}
    principals = await store_of(request).principal_ids()
    return render(request, "due.html", principals=principals, counted=counted, counting=freshness is None,
                  as_of=freshness[0].as_of_us if freshness else None,
                  validity=config_of(request).rpo_validity_days)


@require(ROLE_VIEWER)
async def due_csv(request: web.Request) -> web.StreamResponse:
    store = store_of(request)
    principal = request.match_info["principal"]
    if principal not in await store.principal_ids():
        raise web.HTTPNotFound(text=f"principal {principal!r} does not exist")
    within = _within(request)
    national = request.query.get("national") == "1"
    now = datetime.now(UTC)
    # The arithmetic of `registry due` (cli/registry.py): still good at the horizon only if checked after
    # horizon - validity, in Rome's wall-clock time as the decision's rule 5.
    horizon = now.astimezone(ROME) + timedelta(days=within)
    stale_before = horizon - timedelta(days=config_of(request).rpo_validity_days)
    name = f"due-{_SAFE_FILENAME.sub('_', principal)}-{now.astimezone(ROME):%Y%m%d}.csv"
    download = await start_download(request, name)
    async with contextlib.aclosing(store.due_numbers(None, principal, None, stale_before)) as due:
        async for number in download.tap(due):
            download.out.write((national_form(number) if national else number) + "\n")
    return await download.finish()


def routes() -> list[web.RouteDef]:
    return [
        web.get("/due", due_page),
        web.get("/due/{principal}.csv", due_csv),
    ]
