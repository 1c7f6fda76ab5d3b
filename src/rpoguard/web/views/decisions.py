"""The decision log, searchable: time range, campaign, principal, decision, reason, source, number; pages by
keyset (page 100,000 costs what page 1 does) and a streamed CSV export of everything that matches."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

from aiohttp import web

from rpoguard.audit import AuditRow
from rpoguard.constants import ALLOW, BLOCK, REASON_CODES, REASON_LAW, ROLE_VIEWER
from rpoguard.db.store import DecisionFilter, DecisionPage
from rpoguard.numbers import NumberError, normalize
from rpoguard.timeutil import ROME, TimeFormatError, iso, parse_time, to_us
from rpoguard.web.context import store_of
from rpoguard.web.download import start_download
from rpoguard.web.render import render
from rpoguard.web.security import require

PAGE_SIZE = 50
# Without a range the page shows the last week: a search over years of calls is asked for, not stumbled into
# (a filter that matches little would otherwise walk the whole log).
DEFAULT_RANGE = timedelta(days=7)
# Rows a page looks at before it stops and offers to go on: a filter that matches rarely (a campaign that
# stopped calling) costs what an ordinary page costs (bench/README.md, the console's figures).
SCAN_LIMIT = 20_000
FIELDS = ("from", "to", "number", "campaign", "principal", "decision", "reason", "source")
CSV_HEADER = ("seq", "decision_id", "time", "number", "raw_number", "campaign", "principal", "caller_id",
              "decision", "reasons", "basis", "source", "uniqueid", "channel", "linkedid", "hash")


@dataclass(frozen=True, slots=True)
class Search:
    filter: DecisionFilter
    values: dict[str, str]  # the form as the person filled it, to show it again
    error: str | None


def parse_search(query: web.MultiDictProxy[str], now: datetime) -> Search:
    values = {name: query.get(name, "").strip() for name in FIELDS}
    error = None
    start = end = None
    try:
        start = parse_time(values["from"]) if values["from"] else now - DEFAULT_RANGE
        end = parse_time(values["to"]) if values["to"] else None
    except TimeFormatError as exc:
        error, start = str(exc), now - DEFAULT_RANGE
    if not values["from"]:
        values["from"] = start.astimezone(ROME).strftime("%Y-%m-%dT%H:%M") if start else ""
    number = None
    if values["number"]:
        try:
            number = normalize(values["number"], trunk_prefix="").e164
        except NumberError as exc:
            error = str(exc)
    decision = values["decision"] if values["decision"] in (ALLOW, BLOCK) else None
    reason = values["reason"] if values["reason"] in REASON_CODES else None
    flt = DecisionFilter(start_us=to_us(start) if start else None, end_us=to_us(end) if end else None,
                         number=number, campaign_id=values["campaign"] or None,
                         principal_id=values["principal"] or None, decision=decision, reason=reason,
                         source=values["source"] or None)
    return Search(flt, values, error)


@require(ROLE_VIEWER)
async def decisions(request: web.Request) -> web.StreamResponse:
    search = parse_search(request.query, datetime.now(UTC))
    before = request.query.get("before")
    before_seq = int(before) if before and before.isdigit() else None
    page = DecisionPage(rows=[], next_before=None)
    if search.error is None:
        page = await store_of(request).decision_search(search.filter, before_seq=before_seq, limit=PAGE_SIZE,
                                                        scan_limit=SCAN_LIMIT)
    query = {k: v for k, v in search.values.items() if v}
    next_url = f"/decisions?{urlencode({**query, 'before': page.next_before})}" if page.next_before else None
    return render(request, "decisions.html", rows=page.rows, partial=page.partial, search=search,
                  next_url=next_url, first_url=f"/decisions?{urlencode(query)}" if before_seq else None,
                  csv_url=f"/decisions.csv?{urlencode(query)}", reason_codes=REASON_CODES, reason_law=REASON_LAW)


@require(ROLE_VIEWER)
async def decisions_csv(request: web.Request) -> web.StreamResponse:
    search = parse_search(request.query, datetime.now(UTC))
    if search.error is not None:
        raise web.HTTPBadRequest(text=search.error)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    download = await start_download(request, f"rpoguard-decisions-{stamp}.csv")
    writer = csv.writer(download.out)
    writer.writerow(CSV_HEADER)
    await download.flush()  # the header at once: the download starts while the first rows are read
    async for row in download.tap(store_of(request).decision_rows(search.filter)):
        writer.writerow(_csv_row(row))
    return await download.finish()


def _csv_row(row: AuditRow) -> tuple[object, ...]:
    e = row.entry
    return (row.seq, e.decision_id, iso(datetime.fromtimestamp(e.ts_us / 1e6, UTC)), e.number or "", e.raw_number,
            e.campaign_id or "", e.principal_id or "", e.caller_id or "", e.decision, e.reasons, e.basis or "",
            e.source, e.uniqueid or "", e.channel or "", e.linkedid or "", row.hash)


def routes() -> list[web.RouteDef]:
    return [web.get("/decisions", decisions), web.get("/decisions.csv", decisions_csv)]
