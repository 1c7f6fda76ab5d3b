"""Keeps the gate's store usable for as long as the server runs, whatever happens to the files.

The gate must stay up and block every call with `engine_error` while the database is missing,
unreadable, replaced or corrupt, and serve again by itself once it is back. A SQLite connection keeps
the inode it opened: a file deleted or replaced underneath would be read (and audited into) forever.
So a watcher stats both files once a second, off the per-call path, and reopens when their identity
changes or after a failed open; meanwhile every call fails fast with a StoreError.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from pathlib import Path

from rpoguard.anchor import AnchorWriter
from rpoguard.audit import AuditEntry, AuditRow
from rpoguard.bypass.match import Allowed
from rpoguard.db import open_store
from rpoguard.db.sqlite import audit_path
from rpoguard.db.store import (
    AttemptCap,
    ConsoleChange,
    DecisionFilter,
    DecisionPage,
    Freshness,
    Store,
    StoredFinding,
    StoredImport,
    StoreError,
    StoreUnavailable,
    WebUser,
)
from rpoguard.db.urls import is_postgres_url
from rpoguard.policy.model import CampaignFacts, Facts

log = logging.getLogger(__name__)

WATCH_INTERVAL = 1.0

FileIdentity = tuple[tuple[int, int] | None, ...]


def _identity(paths: Sequence[Path]) -> FileIdentity:
    ids: list[tuple[int, int] | None] = []
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            ids.append(None)
            continue
        # Readable by us is part of "usable": a chmod 000 must be noticed like a deletion.
        ids.append((st.st_dev, st.st_ino) if os.access(path, os.R_OK | os.W_OK) else None)
    return tuple(ids)


class SupervisedStore:
    """The four operations the gate needs, delegated to a store that is reopened when needed."""

    def __init__(self, factory: Callable[[], Store], paths: Sequence[Path], interval: float = WATCH_INTERVAL) -> None:
        self._factory = factory
        self._paths = tuple(paths)
        self._interval = interval
        self._store: Store | None = None
        self._identity: FileIdentity = ()
        self._cause = "not opened yet"
        self._watcher: asyncio.Task[None] | None = None

    @classmethod
    def for_database(cls, db: str, *, anchor: AnchorWriter | None = None,
                     interval: float = WATCH_INTERVAL) -> SupervisedStore:
        """The supervised store for a --db value, reopened with the same anchor writer each time; never
        created (a missing database blocks with engine_error until it is back)."""
        # PostgreSQL has no files to watch: the pool reconnects by itself, and a failed open is retried.
        paths = [] if is_postgres_url(db) else [Path(db), audit_path(db)]
        return cls(lambda: open_store(db, create=False, anchor=anchor), paths, interval)

    async def start(self) -> None:
        """Try to open once and start watching; never raises, so the server can start without a database."""
        await self._open()
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        await self._drop()

    @property
    def available(self) -> bool:
        return self._store is not None

    def current(self) -> Store:
        """The store open now, with its whole interface (the console's pages); StoreUnavailable while there
        is none. Held for one request at most: the next one may find it reopened."""
        return self._current()

    def _current(self) -> Store:
        if self._store is None:
            raise StoreUnavailable(f"database unavailable: {self._cause}")
        return self._store

    async def _open(self) -> None:
        # No paths: a database server (PostgreSQL), reached over the network, with nothing to stat.
        try:
            present = not self._paths or self._paths[0].exists()
        except OSError as exc:
            self._fail(f"{self._paths[0]}: {exc.strerror}")
            return
        if not present:
            # Never create a fresh, empty database in place of a missing one: that would hide the loss.
            self._fail(f"{self._paths[0]} does not exist")
            return
        store = self._factory()
        try:
            await store.open()
        except StoreError as exc:
            self._fail(str(exc))
            return
        except Exception as exc:  # an unexpected failure must not stop the watcher
            self._fail(f"{type(exc).__name__}: {exc}")
            return
        self._store = store
        self._identity = _identity(self._paths)
        if self._cause != "not opened yet":
            log.warning("database available again%s", f": {self._paths[0]}" if self._paths else "")
        self._cause = ""

    def _fail(self, cause: str) -> None:
        if cause != self._cause:
            # One line per cause, not per call or per retry.
            log.error("database unavailable, every call is blocked (engine_error): %s", cause)
        self._cause = cause

    async def _drop(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            with contextlib.suppress(Exception):
                await store.close()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            if self._store is None:
                await self._open()
                continue
            current = _identity(self._paths)
            if current != self._identity:
                missing = [str(p) for p, i in zip(self._paths, current, strict=True) if i is None]
                # Not logged here: the reopen below names the cause in one line (or serves the new files),
                # and a second line for the same event would make one cause look like two.
                self._cause = f"{', '.join(missing)} missing or unreadable" if missing else "database files replaced"
                await self._drop()
                await self._open()

    # -- what the gate uses ------------------------------------------------------------------------

    async def facts(self, number: str | None, line_type: str | None, campaign_id: str | None,
                    at: datetime) -> Facts:
        return await self._current().facts(number, line_type, campaign_id, at)

    async def append_decision(self, entry: AuditEntry, cap: AttemptCap | None = None) -> AuditRow:
        return await self._current().append_decision(entry, cap)

    def start_decision(self, entry: AuditEntry, cap: AttemptCap | None = None) -> asyncio.Future[AuditRow]:
        return self._current().start_decision(entry, cap)

    async def get_campaign(self, campaign_id: str) -> CampaignFacts | None:
        return await self._current().get_campaign(campaign_id)

    async def add_optout(self, number: str, principal_id: str | None, at: datetime, source: str,
                         reference: str | None) -> int:
        return await self._current().add_optout(number, principal_id, at, source, reference)

    # -- what `watch` uses ---------------------------------------------------------------------------

    async def allowed_after(self, after_seq: int, since_us: int, limit: int) -> list[tuple[int, Allowed]]:
        return await self._current().allowed_after(after_seq, since_us, limit)

    async def add_finding(self, finding: StoredFinding) -> int:
        return await self._current().add_finding(finding)

    async def close_finding(self, finding_id: int, until_us: int, detail: str) -> None:
        await self._current().close_finding(finding_id, until_us, detail)

    def list_findings(self, *, since_us: int | None = None, kind: str | None = None,
                      limit: int | None = None) -> AsyncIterator[StoredFinding]:
        return self._current().list_findings(since_us=since_us, kind=kind, limit=limit)

    # -- what the console uses (users, and the record of the changes made through it) -----------------------

    async def add_user(self, name: str, role: str, password_hash: str, at_us: int, *,
                       change: ConsoleChange | None = None) -> None:
        await self._current().add_user(name, role, password_hash, at_us, change=change)

    async def get_user(self, name: str) -> WebUser | None:
        return await self._current().get_user(name)

    def list_users(self) -> AsyncIterator[WebUser]:
        return self._current().list_users()

    async def update_user(self, name: str, *, at_us: int, role: str | None = None, password_hash: str | None = None,
                          disabled: bool | None = None, change: ConsoleChange | None = None) -> None:
        await self._current().update_user(name, at_us=at_us, role=role, password_hash=password_hash,
                                          disabled=disabled, change=change)

    async def record_change(self, change: ConsoleChange) -> int:
        return await self._current().record_change(change)

    def list_changes(self, *, since_us: int | None = None, user: str | None = None,
                     limit: int | None = None, action: str | None = None) -> AsyncIterator[ConsoleChange]:
        return self._current().list_changes(since_us=since_us, user=user, limit=limit, action=action)

    # -- what the web console reads ------------------------------------------------------------------

    async def decision_page(self, flt: DecisionFilter, *, before_seq: int | None, limit: int) -> list[AuditRow]:
        return await self._current().decision_page(flt, before_seq=before_seq, limit=limit)

    async def decision_search(self, flt: DecisionFilter, *, before_seq: int | None, limit: int,
                              scan_limit: int) -> DecisionPage:
        return await self._current().decision_search(flt, before_seq=before_seq, limit=limit, scan_limit=scan_limit)

    def decision_rows(self, flt: DecisionFilter) -> AsyncIterator[AuditRow]:
        return self._current().decision_rows(flt)

    async def decision_tally(self, after_seq: int, limit: int) -> list[tuple[int, int, str, str]]:
        return await self._current().decision_tally(after_seq, limit)

    async def first_seq_since(self, ts_us: int) -> int | None:
        return await self._current().first_seq_since(ts_us)

    async def import_history(self, *, limit: int, before_id: int | None = None,
                             kind: str | None = None) -> list[StoredImport]:
        return await self._current().import_history(limit=limit, before_id=before_id, kind=kind)

    async def principal_ids(self) -> list[str]:
        return await self._current().principal_ids()

    async def answer_freshness(self, principal_id: str, now_us: int, validity_us: int,
                               horizons_days: tuple[int, ...] = (1, 3, 7)) -> Freshness:
        return await self._current().answer_freshness(principal_id, now_us, validity_us, horizons_days)
