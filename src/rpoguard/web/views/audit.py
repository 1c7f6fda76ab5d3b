"""The decision log: its state (rows, anchors, the last verification and who ran it), "verify now" (the
check `rpoguard audit verify` makes, with the anchors of the configuration, run in the background) and the
export (`rpoguard audit export`'s CSV, streamed)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime

from aiohttp import web

from rpoguard.anchor import AnchorError, load_key, report_lines, verify_anchored
from rpoguard.audit import export_rows
from rpoguard.config import Config, ConfigError
from rpoguard.constants import CHANGE_AUDIT_VERIFY, ROLE_OPERATOR, ROLE_VIEWER
from rpoguard.db.store import ConsoleChange, DecisionFilter, Store, StoreError
from rpoguard.db.supervisor import SupervisedStore
from rpoguard.timeutil import ROME, TimeFormatError, parse_time, to_us
from rpoguard.web.context import config_of, redirect, store_of
from rpoguard.web.download import start_download
from rpoguard.web.jobs import StoreOpener, current_store, in_own_thread, own_store
from rpoguard.web.keys import CONFIG, STORE
from rpoguard.web.render import render
from rpoguard.web.security import current_user, require, role_rank
from rpoguard.web.views.overview import last_verification

log = logging.getLogger(__name__)

# Lines of the verification's report kept with its record (the first problems; the count says the rest).
MAX_REPORT_LINES = 50
REFRESH_SECONDS = 3
AUDIT_TARGET = "audit_log"


def _now_us() -> int:
    return time.time_ns() // 1_000


class AuditVerifier:
    """The console's "verify now": one walk of the log at a time, on a store of its own in a thread of its
    own (10 million rows take minutes of hashing), its outcome recorded as a console change of whoever
    asked (the overview and this page show the latest)."""

    def __init__(self, store: Store | SupervisedStore, config: Config, opener: StoreOpener | None = None) -> None:
        self.store = store
        self.config = config
        self.opener = opener or own_store(config)
        self.running_since_us: int | None = None
        self.running_user: str | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self, user: str) -> bool:
        """Start a verification; False when one already runs (a second would only repeat it)."""
        if self.running_since_us is not None:
            return False
        self.running_since_us, self.running_user = _now_us(), user
        self._task = asyncio.get_running_loop().create_task(self._run(user), name="rpoguard-audit-verify")
        return True

    async def wait(self) -> None:
        if self._task is not None:
            await asyncio.shield(self._task)

    async def verify(self) -> dict[str, object]:
        """The outcome as the record's detail: ok, rows, head, the first problem, the report's lines."""
        anchors_file = self.config.audit.anchor_file
        key_file = self.config.audit.anchor_key_file

        async def work() -> dict[str, object]:
            key = load_key(key_file) if key_file else None
            async with self.opener() as store, contextlib.aclosing(store.audit_rows()) as rows:
                chain, anchors = await verify_anchored(rows, anchors_file, key)
            lines = report_lines(chain, anchors)
            ok = chain.intact and (anchors is None or anchors.intact)
            return {"ok": ok, "rows": chain.rows, "head": chain.head_hash, "problem": "" if ok else lines[0],
                    "anchors": anchors_file, "report": lines[:MAX_REPORT_LINES], "report_lines": len(lines)}

        try:
            return await in_own_thread(work)
        except (AnchorError, ConfigError, StoreError, OSError) as exc:
            # Not verified is not intact: the page says why.
            return {"ok": False, "rows": None, "head": None, "problem": str(exc), "anchors": anchors_file,
                    "report": [str(exc)], "report_lines": 1}

    async def _run(self, user: str) -> None:
        try:
            detail = await self.verify()
            log.info("audit verification asked by %s: %s", user, "intact" if detail["ok"] else detail["problem"])
            change = ConsoleChange(at_us=_now_us(), user=user, action=CHANGE_AUDIT_VERIFY, target=AUDIT_TARGET,
                                   detail=detail)
            await current_store(self.store).record_change(change)
        except Exception:
            log.exception("audit verification asked by %s: failed or not recorded", user)
        finally:
            self.running_since_us, self.running_user = None, None

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


AUDIT_VERIFIER = web.AppKey("audit_verifier", AuditVerifier)


def setup(app: web.Application) -> None:
    app[AUDIT_VERIFIER] = AuditVerifier(app[STORE], app[CONFIG])

    async def stop(app: web.Application) -> None:
        await app[AUDIT_VERIFIER].close()

    app.on_cleanup.append(stop)


@require(ROLE_VIEWER)
async def audit_page(request: web.Request) -> web.StreamResponse:
    store = store_of(request)
    config = config_of(request)
    verifier = request.app[AUDIT_VERIFIER]
    latest = await store.decision_page(DecisionFilter(), before_seq=None, limit=1)
    return render(
        request, "audit.html",
        last_decision=latest[0] if latest else None,
        verified=await last_verification(store),
        running_since=verifier.running_since_us, running_user=verifier.running_user, refresh=REFRESH_SECONDS,
        anchor_file=config.audit.anchor_file, anchor_key=bool(config.audit.anchor_key_file),
        can_verify=role_rank(current_user(request).role) >= role_rank(ROLE_OPERATOR),
    )


@require(ROLE_OPERATOR)
async def verify_now(request: web.Request) -> web.StreamResponse:
    user = current_user(request)
    if request.app[AUDIT_VERIFIER].start(user.name):
        log.info("audit verification started by %s", user.name)
    return redirect("/audit")


def _moment_us(request: web.Request, name: str) -> int | None:
    text = request.query.get(name, "").strip()
    if not text:
        return None
    try:
        return to_us(parse_time(text))
    except (TimeFormatError, ValueError) as exc:
        raise web.HTTPBadRequest(text=f"{name}: {exc}") from None


@require(ROLE_VIEWER)
async def export_csv(request: web.Request) -> web.StreamResponse:
    """`rpoguard audit export --format csv [--from] [--to]`, sent as it is read."""
    start, end = _moment_us(request, "from"), _moment_us(request, "to")
    download = await start_download(request, f"audit-{datetime.now(UTC).astimezone(ROME):%Y%m%d-%H%M%S}.csv")
    async with contextlib.aclosing(store_of(request).audit_rows(start, end)) as rows:
        count = await export_rows(download.tap(rows), download.out, "csv")
    log.info("audit export by %s: %d decision(s)", current_user(request).name, count)
    return await download.finish()


def routes() -> list[web.RouteDef]:
    return [
        web.get("/audit", audit_page),
        web.post("/audit/verify", verify_now),
        web.get("/audit/export.csv", export_csv),
    ]
