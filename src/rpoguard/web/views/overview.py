"""The overview: today's and this week's decisions, allowed against blocked per hour, blocks by reason, RPO
freshness per principal, the latest imports, the decision log's state. Counts come from the rollup the
console keeps (web/rollup.py), never from a scan of the log inside the request."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aiohttp import web

from rpoguard.constants import CHANGE_AUDIT_VERIFY, ROLE_VIEWER
from rpoguard.db.store import ConsoleChange, DecisionFilter, Store
from rpoguard.timeutil import ROME, to_us
from rpoguard.web.context import config_of, store_of
from rpoguard.web.i18n import translate
from rpoguard.web.keys import FRESHNESS, ROLLUP
from rpoguard.web.render import language, render
from rpoguard.web.security import require

CHART_HOURS = 48
LATEST_IMPORTS = 8
WEEK = timedelta(days=7)


@require(ROLE_VIEWER)
async def overview(request: web.Request) -> web.StreamResponse:
    store = store_of(request)
    rollup = request.app[ROLLUP]
    lang = language(request)
    if rollup.ready:
        # Only the rows since the last look (a few between two page loads); before the first catch-up ends,
        # the background task is doing it and the page says "counting".
        await rollup.catch_up()
    series = rollup.series(CHART_HOURS)
    chart = {
        "labels": [datetime.fromtimestamp(start / 1e6, UTC).astimezone(ROME).strftime("%d/%m %H:00")
                   for start, _, _ in series],
        "allowed": [allowed for _, allowed, _ in series],
        "blocked": [blocked for _, _, blocked in series],
        "allowed_label": translate("overview.allowed", lang),
        "blocked_label": translate("overview.blocked", lang),
    }
    week_ago = to_us(datetime.now(UTC) - WEEK)
    latest = await store.decision_page(DecisionFilter(), before_seq=None, limit=1)
    config = config_of(request)
    return render(
        request, "overview.html",
        today=rollup.today(), week=rollup.week(), chart=chart, ready=rollup.ready,
        blocks=rollup.blocks_by_reason(week_ago),
        freshness=request.app[FRESHNESS].get(),
        imports=await store.import_history(limit=LATEST_IMPORTS),
        last_decision=latest[0] if latest else None,
        anchor_file=config.audit.anchor_file,
        verified=await last_verification(store),
    )


async def last_verification(store: Store) -> ConsoleChange | None:
    """The latest "verify now" run from the console, with its outcome in its detail."""
    async for change in store.list_changes(action=CHANGE_AUDIT_VERIFY, limit=1):
        return change
    return None


def routes() -> list[web.RouteDef]:
    return [web.get("/", overview)]
