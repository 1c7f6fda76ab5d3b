"""SQLite implementation of the Store, on aiosqlite, in WAL mode (one writer, many readers per file).

Two files, because they are written by different people at different rates:
- the data file (`--db`): principals, campaigns, RPO answers, listings, consents, contracts. Imports
  write it, each in one transaction: readers keep the previous data until the commit, and a crash or
  kill -9 leaves the previous data in place (WAL rollback).
- the audit file beside it (`rpoguard.audit.db` for `rpoguard.db`): decisions and refusals, written by
  the gate on every call. Its own write lock means a 30-million-row import never holds up a call.

Three connections: one reads both files in one statement (the audit file attached) and never writes,
one writes the data file, one writes the audit file. A connection with an attached file would take the
write lock of both files on BEGIN IMMEDIATE, which is exactly what the split avoids. Writers use BEGIN
IMMEDIATE so two processes never interleave, and an asyncio lock per writer so two coroutines on one
connection never interleave inside one transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime
from importlib import resources
from pathlib import Path
from time import monotonic
from typing import Any, TypeVar

import aiosqlite

from rpoguard.audit import GENESIS_HASH, AuditEntry, AuditRow, chain_hash
from rpoguard.config import secure_path
from rpoguard.constants import ALLOW, SOURCE_IMPORT
from rpoguard.db.rows import (
    DUE_STALE,
    LATEST_LISTING_SQL,
    ListDialect,
    Query,
    batches,
    campaigns_query,
    consent_item,
    consents_query,
    contract_item,
    contracts_query,
    decision_item,
    due_source,
    facts_from_document,
    listing_detail,
    listing_items,
    opt_us,
    optout_item,
    optouts_query,
    principals_query,
    refuse_older_extract,
    rpo_answer_item,
    stored_campaign,
    stored_consent,
    stored_contract,
    stored_optout,
    stored_principal,
)
from rpoguard.db.rpo_import import (
    COUNTS_SQL,
    OPPOSITE_COUNT_SQL,
    OPPOSITE_FIRST_SQL,
    STRAYS_SQL,
    grouped_sql,
    opposite_answers_note,
    refuse_strays,
)
from rpoguard.db.store import (
    RPO_ANSWERS,
    AttemptCap,
    AttemptCapReached,
    ConsentRecord,
    ContractRecord,
    EvidenceItem,
    ImportMeta,
    ImportSummary,
    NotFoundError,
    OptoutRecord,
    PrincipalInfo,
    Progress,
    RpoAnswer,
    Store,
    StoredCampaign,
    StoredConsent,
    StoredContract,
    StoredOptout,
    StoredPrincipal,
    StoreError,
)
from rpoguard.db.upgrade import (
    ANSWER_COUNTS_SQL,
    ANSWERS_PER_PRINCIPAL,
    PRINCIPALS_SQL,
    UNATTRIBUTED_FILES_SQL,
    AnswerOwnership,
    answers_owner_note,
)
from rpoguard.policy.model import (
    CampaignFacts,
    Facts,
)
from rpoguard.timeutil import to_us

log = logging.getLogger(__name__)

T = TypeVar("T")

DAY_US = 86_400_000_000


def _migrations(kind: str) -> list[tuple[int, str]]:
    folder = resources.files("rpoguard.db") / "migrations" / kind
    found = []
    for item in folder.iterdir():
        name = item.name
        if name.endswith(".sql"):
            found.append((int(name.split("_", 1)[0]), item.read_text(encoding="utf-8")))
    return sorted(found)


# One statement returns every fact of one decision: campaign, the RPO answers the campaign's principal
# obtained for the number, the listing in force at the call time, consents, contracts, refusals and the
# ALLOW count in the cap window. Each part is a primary-key or index probe.
FACTS_SQL = """
WITH c AS (SELECT id, principal_id, automated, max_attempts, per_days FROM campaigns WHERE id = :campaign)
SELECT json_array(
  json((SELECT json_array(c.id, c.principal_id, c.automated, c.max_attempts, c.per_days,
          (SELECT json_group_array(p.number) FROM principal_caller_ids p WHERE p.principal_id = c.principal_id))
     FROM c)),
  json((SELECT json_group_array(json_array(id, checked_us, registered, registered_us, import_id))
     FROM rpo_results WHERE number = :number AND principal_id = (SELECT principal_id FROM c))),
  json((SELECT json_array(import_id, listed_us) FROM listings
     WHERE number = :number AND listed_us <= :now_us AND (ended_us IS NULL OR ended_us > :now_us)
     ORDER BY listed_us DESC LIMIT 1)),
  json((SELECT json_group_array(json_array(id, given_us, evidence, automated, expires_us, revoked_us, purpose))
     FROM consents WHERE number = :number AND principal_id = (SELECT principal_id FROM c))),
  json((SELECT json_group_array(json_array(id, start_date, end_date))
     FROM contracts WHERE number = :number AND principal_id = (SELECT principal_id FROM c))),
  json((SELECT json_group_array(json_array(id, principal_id, at_us))
     FROM audit.optouts WHERE number = :number
      AND (principal_id IS NULL OR principal_id = (SELECT principal_id FROM c)))),
  (SELECT count(*) FROM audit.audit_log
    WHERE number = :number AND principal_id = (SELECT principal_id FROM c) AND decision = 'allow'
      AND ts_us > :now_us - (SELECT per_days FROM c) * 86400000000 AND ts_us <= :now_us))
"""


async def _overlapped(items: Iterable[Any], convert: Callable[[list[Any]], list[tuple[Any, ...]]],
                      write: Callable[[list[tuple[Any, ...]]], Awaitable[Any]]) -> AsyncIterator[list[tuple[Any, ...]]]:
    """Write batches while the next one is read: reading and normalising rows (Python, this thread) and
    inserting them (SQLite, which releases the GIL, in aiosqlite's thread) then use both cores."""
    pending: asyncio.Future[Any] | None = None
    try:
        for batch in batches(items):
            converted = convert(batch)
            if pending is not None:
                await pending
            pending = asyncio.ensure_future(write(converted))
            yield converted
    finally:
        # Also when reading failed (a rejected file): the last insert must finish before the rollback.
        if pending is not None:
            await pending


def _statements(script: str) -> Iterator[str]:
    """Split a migration into statements (triggers included) so they can run inside our transaction;
    executescript would commit it first."""
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            if buffer.strip():
                yield buffer
            buffer = ""
    if buffer.strip() and not all(not ln.strip() or ln.strip().startswith("--") for ln in buffer.splitlines()):
        raise StoreError(f"incomplete statement at the end of a migration: {buffer[:60]!r}")


def audit_path(path: str | Path) -> Path:
    """The audit file that belongs to a data file: rpoguard.db -> rpoguard.audit.db."""
    data = Path(path)
    return data.with_name(f"{data.stem}.audit{data.suffix}" if data.suffix else f"{data.name}.audit")


def _prepare_file(path: Path, kind: str, busy_timeout_ms: int) -> None:
    """Create or migrate one file with plain sqlite3, at start-up. Also the probe that turns an unusable
    path into a clean StoreError: a failed aiosqlite.connect leaves its worker thread to stop on a loop
    that may already be closed (tracebacks after the clean message)."""
    is_new = not path.exists()
    try:
        con = sqlite3.connect(path, isolation_level=None, timeout=busy_timeout_ms / 1000)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open database {path}: {exc}") from exc
    try:
        con.execute("PRAGMA journal_mode = WAL")
        for version, sql in _migrations(kind):
            # The version is read inside the write transaction: processes that start together on a new
            # database (the gate and an operator's command) migrate it once, one after the other.
            con.execute("BEGIN IMMEDIATE")
            try:
                note = None
                if con.execute("PRAGMA user_version").fetchone()[0] < version:
                    log.info("migrating %s to schema version %d", path, version)
                    for statement in _statements(sql):
                        con.execute(statement)
                    con.execute(f"PRAGMA user_version = {version}")
                    if kind == "data" and version == ANSWERS_PER_PRINCIPAL:
                        note = _answers_owner_note(con)
                con.execute("COMMIT")
                if note:
                    log.warning("%s: %s", path, note)
            except sqlite3.Error:
                with contextlib.suppress(sqlite3.Error):
                    con.execute("ROLLBACK")
                raise
    except sqlite3.Error as exc:
        raise _store_error(exc, str(path)) from exc
    finally:
        con.close()
    if is_new:
        secure_path(path)


def _answers_owner_note(con: sqlite3.Connection) -> str | None:
    answers, attributed = con.execute(ANSWER_COUNTS_SQL).fetchone()
    principals = [row[0] for row in con.execute(PRINCIPALS_SQL)]
    files = [(name, checked) for name, checked in con.execute(UNATTRIBUTED_FILES_SQL)]
    return answers_owner_note(AnswerOwnership(answers, attributed, principals, files))


_INSERT_AUDIT = (
    "INSERT INTO audit_log (seq, decision_id, ts_us, number, raw_number, campaign_id, principal_id, caller_id,"
    " decision, reasons, basis, evidence, source, uniqueid, channel, prev_hash, hash)"
    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)


# Memory-map the files for the per-call probe: pages come straight from the page cache, no read() copy.
# File-backed mappings are not the server's private memory (the memory target counts anonymous
# memory only).
PROBE_MMAP_BYTES = 8 << 30
PROBE_BUSY_TIMEOUT_MS = 100
# A decision log that cannot be written is logged once per cause, then at most once a minute.
FAILURE_LOG_INTERVAL = 60.0
# How often the audit log's write-ahead log is copied into its file, off the commit path.
CHECKPOINT_INTERVAL_S = 1.0


def _open_probe(path: str, audit: str) -> sqlite3.Connection:
    probe = sqlite3.connect(path, isolation_level=None, timeout=PROBE_BUSY_TIMEOUT_MS / 1000,
                            check_same_thread=True)
    probe.execute(f"PRAGMA mmap_size = {PROBE_MMAP_BYTES}")
    probe.execute("PRAGMA query_only = ON")
    probe.execute("ATTACH DATABASE ? AS audit", (audit,))
    probe.execute(f"PRAGMA audit.mmap_size = {PROBE_MMAP_BYTES}")
    return probe


_Pending = tuple[AuditEntry, "AttemptCap | None", "asyncio.Future[AuditRow]", threading.Event]


def _note_gave_up(gave_up: threading.Event, future: asyncio.Future[AuditRow]) -> None:
    if future.cancelled():
        gave_up.set()


def _fail_all(group: list[_Pending], error: Exception) -> int:
    """Give `error` to every caller of the group still waiting; how many were."""
    waiting = [future for _, _, future, _ in group if not future.done()]
    for future in waiting:
        future.set_exception(error)
    return len(waiting)


class _AuditAppender:
    """Group commit for the decision log. A decision is answered only once its row is durable
    (synchronous=FULL: one fsync per commit), so decisions that arrive while a commit is in progress wait
    and go into the next transaction together: one fsync for the group instead of one per call, and one
    thread hop. No decision whose caller still waits is dropped; each caller gets its own row or its own
    error. A caller that gave up (its session deadline passed) gets no row: its call was refused.

    The writer is a plain sqlite3 connection owned by one dedicated thread, so a whole group (chain heads,
    cap checks, inserts, commit) is one hop off the event loop.
    """

    def __init__(self, path: str, busy_timeout_ms: int) -> None:
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rpoguard-audit")
        self._con: sqlite3.Connection | None = None
        # Checkpoints run in their own thread and connection (see _checkpoint_if_due).
        self._checkpointer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rpoguard-checkpoint")
        self._checkpoint_con: sqlite3.Connection | None = None
        self._checkpoint_running = False
        self._last_checkpoint = 0.0
        self._pending: list[_Pending] = []
        self._in_flight: asyncio.Future[list[Any]] | None = None
        self._starting = False  # a group start is scheduled (submit)
        self.groups = 0  # commits so far, for tests and the benchmark
        # Causes of failed writes reported by _report since the last good one, with when: once per minute.
        self._failing: dict[str, float] = {}
        # The process's anchor writer (rpoguard.anchor), looked up per group: configured once per process,
        # possibly after this store was opened.
        from rpoguard.anchor import current_writer  # noqa: PLC0415 -- the anchor hook is local to this class

        self._anchor = current_writer

    def submit(self, entry: AuditEntry, cap: AttemptCap | None) -> asyncio.Future[AuditRow]:
        """Queue a decision; when no commit is in flight its group starts with the event loop's next
        callback, before any I/O is polled, so the commit (an fsync) runs while the front end talks to the
        PBX. Started from a task as before, it began only after the PBX's reply to the next command: 0.3
        ms later for a lone call (strace of one session on the dev VM). Decisions submitted in the same
        loop pass share the group. Cancelling the future before its group starts keeps the decision out."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[AuditRow] = loop.create_future()
        # Set when the caller gives up; read by the writer thread once it holds the write lock.
        gave_up = threading.Event()
        future.add_done_callback(functools.partial(_note_gave_up, gave_up))
        self._pending.append((entry, cap, future, gave_up))
        if self._in_flight is None and not self._starting:
            self._starting = True
            loop.call_soon(self._start_group, loop)
        return future

    async def append(self, entry: AuditEntry, cap: AttemptCap | None) -> AuditRow:
        return await self.submit(entry, cap)

    def _start_group(self, loop: asyncio.AbstractEventLoop) -> None:
        # A caller that gave up (its session deadline passed) before its group started is not written:
        # its call was refused, and it must not count as an attempt.
        self._starting = False
        group = [item for item in self._pending if not item[2].done()]
        self._pending = []
        if not group:
            return
        try:
            in_flight = loop.run_in_executor(self._executor, self._write, [(e, c, g) for e, c, _, g in group])
        except RuntimeError as exc:  # the writer thread is shut down: the store is closing
            _fail_all(group, StoreError(f"audit log: {exc}"))
            return
        self._in_flight = in_flight
        in_flight.add_done_callback(functools.partial(self._group_done, group))

    def _group_done(self, group: list[_Pending], in_flight: asyncio.Future[list[Any]]) -> None:
        """Runs on the event loop when a group's transaction has ended: answer its callers, then start
        the group that queued up meanwhile."""
        self._in_flight = None
        loop = in_flight.get_loop()
        try:
            self._answer(group, in_flight)
        finally:
            if self._pending and not self._starting:
                self._start_group(loop)

    def _answer(self, group: list[_Pending], in_flight: asyncio.Future[list[Any]]) -> None:
        exc = StoreError("audit log: write cancelled") if in_flight.cancelled() else in_flight.exception()
        if isinstance(exc, sqlite3.Error):
            error = _store_error(exc, self.path)
            if not _fail_all(group, error):
                # Every caller already gave up (the write waited past their deadlines, e.g. on another
                # writer's lock), so the gate, which logs its errors once per cause, never hears of it:
                # say it here, as the gate would.
                self._report(error)
            return
        if exc is not None:
            log.error("audit log writer failed: %s: %s", type(exc).__name__, exc)
            _fail_all(group, StoreError(f"audit log: {type(exc).__name__}: {exc}"))
            return
        if self._failing:
            log.warning("decision log writable again: %s", self.path)
            self._failing.clear()
        for (_, _, future, _), result in zip(group, in_flight.result(), strict=True):
            if future.done() or result is None:
                continue
            if isinstance(result, AttemptCapReached):
                future.set_exception(result)
            else:
                future.set_result(result)
        self._checkpoint_if_due(loop=in_flight.get_loop())

    def _report(self, error: StoreError) -> None:
        cause = str(error)
        now = monotonic()
        if now - self._failing.get(cause, -FAILURE_LOG_INTERVAL) >= FAILURE_LOG_INTERVAL:
            self._failing[cause] = now
            log.error("decision log cannot be written, calls are blocked (engine_error): %s", cause)

    def _connection(self) -> sqlite3.Connection:
        if self._con is None:
            self._con = sqlite3.connect(self.path, isolation_level=None, timeout=self.busy_timeout_ms / 1000)
            self._con.execute("PRAGMA synchronous = FULL")
            # No checkpoint inside COMMIT: with the default (every 1,000 pages) the commit that crosses the
            # line copies the log into the file and fsyncs it, 20-80 ms on the dev VM, and every decision
            # waiting for the next group waits that long too (p99 30-90 ms at 500 calls/s).
            self._con.execute("PRAGMA wal_autocheckpoint = 0")
        return self._con

    def _checkpoint_if_due(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start a PASSIVE checkpoint in the checkpoint thread at most once a CHECKPOINT_INTERVAL_S: it
        copies what it can without waiting for (or holding up) the writer, so the log stays short and
        commits never pay for it."""
        now = loop.time()
        if self._checkpoint_running or now - self._last_checkpoint < CHECKPOINT_INTERVAL_S:
            return
        self._checkpoint_running = True
        self._last_checkpoint = now
        future = loop.run_in_executor(self._checkpointer, self._checkpoint)
        future.add_done_callback(self._checkpoint_done)

    def _checkpoint(self) -> None:
        if self._checkpoint_con is None:
            self._checkpoint_con = sqlite3.connect(self.path, isolation_level=None,
                                                   timeout=self.busy_timeout_ms / 1000)
        self._checkpoint_con.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def _checkpoint_done(self, future: asyncio.Future[None]) -> None:
        self._checkpoint_running = False
        if not future.cancelled() and future.exception() is not None:
            # A later one retries; the log only grows meanwhile, no decision is affected.
            log.warning("audit log checkpoint failed: %s", future.exception())

    def _write(
        self, items: list[tuple[AuditEntry, AttemptCap | None, threading.Event]]
    ) -> list[AuditRow | AttemptCapReached | None]:
        """Runs in the writer thread: one transaction for the whole group; None for a caller that gave up."""
        con = self._connection()
        con.execute("BEGIN IMMEDIATE")
        try:
            last = con.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
            seq, prev = (last[0], last[1]) if last else (0, GENESIS_HASH)
            allowed_in_group: dict[tuple[str, str], list[int]] = {}
            results: list[AuditRow | AttemptCapReached | None] = []
            rows = []
            for entry, cap, gave_up in items:
                if gave_up.is_set():
                    # Its session deadline passed while another writer held the log (BEGIN IMMEDIATE can
                    # wait up to the busy timeout): the call was refused, so no decision is recorded.
                    results.append(None)
                    continue
                if cap is not None:
                    stored = con.execute(
                        "SELECT count(*) FROM audit_log WHERE number = ? AND principal_id = ? AND decision = 'allow'"
                        " AND ts_us > ? AND ts_us <= ?", (cap.number, cap.principal_id, cap.since_us, entry.ts_us),
                    ).fetchone()[0]
                    earlier = allowed_in_group.get((cap.number, cap.principal_id), [])
                    allows = stored + sum(1 for ts in earlier if cap.since_us < ts <= entry.ts_us)
                    if allows >= cap.max_allows:
                        results.append(AttemptCapReached(allows))
                        continue
                seq += 1
                digest = chain_hash(seq, entry, prev)
                rows.append((seq, entry.decision_id, entry.ts_us, entry.number, entry.raw_number, entry.campaign_id,
                             entry.principal_id, entry.caller_id, entry.decision, entry.reasons, entry.basis,
                             entry.evidence, entry.source, entry.uniqueid, entry.channel, prev, digest))
                results.append(AuditRow(seq, entry, prev, digest))
                prev = digest
                if entry.decision == ALLOW and entry.number and entry.principal_id:
                    allowed_in_group.setdefault((entry.number, entry.principal_id), []).append(entry.ts_us)
            con.executemany(_INSERT_AUDIT, rows)
            con.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                con.execute("ROLLBACK")
            raise
        self.groups += 1
        anchor = self._anchor()
        if rows and anchor is not None:
            # Before the callers are answered, so every answered decision is anchored; never raises.
            anchor.record(seq, prev)
        return results

    async def close(self) -> None:
        while self._in_flight is not None or self._starting:
            if self._in_flight is None:
                await asyncio.sleep(0)  # the scheduled start runs first
                continue
            # Its done callback (which may start the next group) runs before wait() returns.
            await asyncio.wait([self._in_flight])
        loop = asyncio.get_running_loop()
        if self._con is not None:
            con, self._con = self._con, None
            await loop.run_in_executor(self._executor, con.close)
        self._executor.shutdown(wait=True)
        # After a checkpoint in progress; what is left in the log is checkpointed by the next open.
        if self._checkpoint_con is not None:
            checkpoint_con, self._checkpoint_con = self._checkpoint_con, None
            await loop.run_in_executor(self._checkpointer, checkpoint_con.close)
        self._checkpointer.shutdown(wait=True)
        anchor = self._anchor()
        if anchor is not None:
            anchor.flush()


class SqliteStore(Store):
    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 5_000) -> None:
        self.path = str(path)
        self.audit_path = str(audit_path(path))
        self.busy_timeout_ms = busy_timeout_ms
        self._data: aiosqlite.Connection | None = None
        self._audit: aiosqlite.Connection | None = None
        self._read: aiosqlite.Connection | None = None
        self._data_lock = asyncio.Lock()
        self._audit_lock = asyncio.Lock()
        self._appender: _AuditAppender | None = None
        self._probe: sqlite3.Connection | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    async def open(self) -> None:
        # Start-up only, never on the per-call path: plain blocking calls are fine here.
        folder = Path(self.path).parent
        if not folder.is_dir():
            raise StoreError(f"cannot open database {self.path}: the folder {folder} does not exist")
        _prepare_file(Path(self.path), "data", self.busy_timeout_ms)
        _prepare_file(Path(self.audit_path), "audit", self.busy_timeout_ms)
        try:
            self._data = await self._connect(self.path)
            self._audit = await self._connect(self.audit_path)
            self._read = await self._connect(self.path)
            await self._read.execute("ATTACH DATABASE ? AS audit", (self.audit_path,))
            self._appender = _AuditAppender(self.audit_path, self.busy_timeout_ms)
            self._probe = _open_probe(self.path, self.audit_path)
        except sqlite3.Error as exc:
            await self.close()
            raise StoreError(f"cannot open database {self.path}: {exc}") from exc

    async def _connect(self, path: str) -> aiosqlite.Connection:
        con = await aiosqlite.connect(path, isolation_level=None)
        await con.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
        # FULL: a decision is answered only once its audit row survives a power cut.
        await con.execute("PRAGMA synchronous = FULL")
        await con.execute("PRAGMA foreign_keys = ON")
        return con

    async def close(self) -> None:
        if self._appender is not None:
            appender, self._appender = self._appender, None
            await appender.close()
        if self._probe is not None:
            probe, self._probe = self._probe, None
            probe.close()
        for name in ("_read", "_audit", "_data"):
            con = getattr(self, name)
            if con is not None:
                setattr(self, name, None)
                await con.close()

    @property
    def db(self) -> aiosqlite.Connection:
        """The data file's writer."""
        if self._data is None:
            raise StoreError("database is not open")
        return self._data

    @property
    def audit_db(self) -> aiosqlite.Connection:
        if self._audit is None:
            raise StoreError("database is not open")
        return self._audit

    @property
    def read_db(self) -> aiosqlite.Connection:
        """Reads the data file with the audit file attached as `audit`; never writes."""
        if self._read is None:
            raise StoreError("database is not open")
        return self._read

    async def schema_version(self) -> int:
        return int((await self._fetchone("PRAGMA user_version"))[0])

    # -- helpers -----------------------------------------------------------------------------------

    async def _fetchone(self, sql: str, params: Any = (), con: aiosqlite.Connection | None = None) -> Any:
        rows = await (con or self.db).execute_fetchall(sql, params)
        return next(iter(rows), None)

    async def _rollback(self, con: aiosqlite.Connection | None = None) -> None:
        # An error may come after SQLite already ended the transaction: then there is nothing to undo.
        with contextlib.suppress(sqlite3.Error):
            await (con or self.db).execute("ROLLBACK")

    async def _write(self, sql: str, params: Any = ()) -> aiosqlite.Cursor:
        async with self._data_lock:
            try:
                return await self.db.execute(sql, params)
            except sqlite3.OperationalError as exc:
                raise _store_error(exc, self.path) from exc

    # -- the per-call path -------------------------------------------------------------------------

    async def facts(self, number: str | None, line_type: str | None, campaign_id: str | None,
                    at: datetime) -> Facts:
        params = {"campaign": campaign_id, "number": number, "now_us": to_us(at)}
        try:
            row = self._probe_facts(params)
        except sqlite3.Error as exc:
            raise _store_error(exc, self.path) from exc
        return facts_from_document(number, line_type, row[0], at)

    def _probe_facts(self, params: dict[str, object]) -> Any:
        """The one read of a decision, run right here on the event loop: a handful of index probes on a
        memory-mapped file cost 10-40 µs (bench/bench_gate.py; bench/README.md measured facts: 7 µs p50 / 20 µs p99
        for one probe with mmap), while a hop to aiosqlite's thread costs 50-180 µs p50 and up to 480 µs
        p99. WAL readers never wait for writers; the busy timeout below bounds the one case that can wait
        (another process recovering the WAL index), and it answers engine_error rather than hang."""
        if self._probe is None:
            raise StoreError("database is not open")
        return self._probe.execute(FACTS_SQL, params).fetchone()

    async def append_decision(self, entry: AuditEntry, cap: AttemptCap | None = None) -> AuditRow:
        return await self.start_decision(entry, cap)

    def start_decision(self, entry: AuditEntry, cap: AttemptCap | None = None) -> asyncio.Future[AuditRow]:
        if self._appender is None:
            raise StoreError("database is not open")
        return self._appender.submit(entry, cap)

    # -- reference data ----------------------------------------------------------------------------

    async def add_principal(self, principal_id: str, name: str, caller_ids: Iterable[str]) -> bool:
        now = to_us(datetime.now().astimezone())
        async with self._data_lock:
            try:
                await self.db.execute("BEGIN IMMEDIATE")
                existed = await self._fetchone("SELECT 1 FROM principals WHERE id = ?", (principal_id,))
                await self.db.execute(
                    "INSERT INTO principals (id, name, created_us) VALUES (?, ?, ?)"
                    " ON CONFLICT(id) DO UPDATE SET name = excluded.name",
                    (principal_id, name, now),
                )
                await self.db.executemany(
                    "INSERT OR IGNORE INTO principal_caller_ids (principal_id, number) VALUES (?, ?)",
                    [(principal_id, n) for n in caller_ids],
                )
                await self.db.execute("COMMIT")
            except sqlite3.Error as exc:
                await self._rollback()
                raise _store_error(exc, self.path) from exc
        return existed is None

    async def get_principal(self, principal_id: str) -> PrincipalInfo | None:
        row = await self._fetchone("SELECT id, name FROM principals WHERE id = ?", (principal_id,), self.read_db)
        if row is None:
            return None
        numbers = await self.read_db.execute_fetchall(
            "SELECT number FROM principal_caller_ids WHERE principal_id = ? ORDER BY number", (principal_id,))
        return PrincipalInfo(row[0], row[1], tuple(n[0] for n in numbers))

    async def add_campaign(self, campaign_id: str, principal_id: str, automated: bool,
                           max_attempts: int | None, per_days: int | None) -> bool:
        if await self.get_principal(principal_id) is None:
            raise NotFoundError(f"principal {principal_id!r} does not exist; add it with 'rpoguard principal add'")
        existed = await self._fetchone("SELECT 1 FROM campaigns WHERE id = ?", (campaign_id,))
        await self._write(
            "INSERT INTO campaigns (id, principal_id, automated, max_attempts, per_days, created_us)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET principal_id = excluded.principal_id,"
            " automated = excluded.automated, max_attempts = excluded.max_attempts, per_days = excluded.per_days",
            (campaign_id, principal_id, int(automated), max_attempts, per_days,
             to_us(datetime.now().astimezone())),
        )
        return existed is None

    async def get_campaign(self, campaign_id: str) -> CampaignFacts | None:
        facts = await self.facts(None, None, campaign_id, datetime.now().astimezone())
        return facts.campaign

    # -- imports -----------------------------------------------------------------------------------

    async def _begin_import(
        self, meta: ImportMeta, *, additive: bool = True
    ) -> tuple[int | None, ImportSummary | None]:
        """Open the import transaction; returns (import id, None) or (None, summary) if already imported.
        Only an additive import can be skipped as a repeat: a replacing one must replace again."""
        await self.db.execute("BEGIN IMMEDIATE")
        if meta.sha256 and additive:
            prior = await self._fetchone(
                "SELECT id, rows_read, rows_stored, rows_rejected, detail FROM imports"
                # The same answer file obtained by another principal is another principal's answer.
                " WHERE kind = ? AND sha256 = ? AND checked_us IS ? AND principal_id IS ?"
                # A replacing import since then undid it: then it is no repeat ('removed' before schema 2).
                " AND id > (SELECT coalesce(max(id), 0) FROM imports WHERE kind = ?"
                "           AND (json_extract(detail, '$.ended') IS NOT NULL"
                "                OR json_extract(detail, '$.removed') IS NOT NULL))",
                (meta.kind, meta.sha256, opt_us(meta.checked_at), meta.principal_id, meta.kind),
            )
            if prior is not None:
                await self.db.execute("ROLLBACK")
                detail = json.loads(prior[4]) if prior[4] else {}
                return None, ImportSummary(prior[0], prior[1], prior[2], prior[3], detail, already_imported=True)
        cursor = await self.db.execute(
            "INSERT INTO imports (kind, file_name, file_size, sha256, checked_us, principal_id, imported_us)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (meta.kind, meta.file_name, meta.file_size, meta.sha256, opt_us(meta.checked_at), meta.principal_id,
             to_us(datetime.now().astimezone())),
        )
        return cursor.lastrowid, None

    async def _finish_import(self, summary: ImportSummary, meta: ImportMeta) -> None:
        summary.rows_rejected = len(meta.rejected)
        if not summary.rows_read:
            summary.rows_read = summary.rows_stored + summary.detail.get("duplicates", 0)
        summary.rows_read += summary.rows_rejected
        await self.db.execute(
            "UPDATE imports SET rows_read = ?, rows_stored = ?, rows_rejected = ?, detail = ? WHERE id = ?",
            (summary.rows_read, summary.rows_stored, summary.rows_rejected, json.dumps(summary.detail),
             summary.import_id),
        )
        await self.db.execute("COMMIT")

    async def import_rpo(self, answers: Iterable[RpoAnswer], meta: ImportMeta,
                         progress: Progress | None = None) -> ImportSummary:
        if meta.checked_at is None or meta.principal_id is None:
            raise ValueError("an RPO import needs the check date and the principal that consulted the RPO")
        checked_us = to_us(meta.checked_at)
        async with self._data_lock:
            try:
                import_id, prior = await self._begin_import(meta)
                if prior is not None:
                    return prior
                summary = ImportSummary(import_id)
                # Rows land in an unindexed temp table first, then go into the keyed table in number order:
                # SQLite sorts on disk with bounded memory, and sorted keys insert 3-4x faster than a
                # file's own order (bench/README.md: 700,000 against 150,000-290,000 rows/s).
                await self.db.execute("CREATE TEMP TABLE IF NOT EXISTS staged_rpo (number TEXT NOT NULL,"
                                      " registered INTEGER NOT NULL, registered_us INTEGER, line INTEGER NOT NULL,"
                                      " submitted INTEGER NOT NULL)")
                await self.db.execute("DELETE FROM staged_rpo")

                def rows(batch: list[RpoAnswer]) -> list[tuple[Any, ...]]:
                    return [(a.number, int(a.registered), opt_us(a.registered_at), a.line, int(a.submitted))
                            for a in batch]

                async for batch in _overlapped(answers, rows, lambda b: self.db.executemany(
                        "INSERT INTO staged_rpo (number, registered, registered_us, line, submitted)"
                        " VALUES (?, ?, ?, ?, ?)", b)):
                    summary.rows_stored += len(batch)
                    if progress is not None:
                        progress(summary.rows_stored + len(meta.rejected))
                await self.db.execute("DROP TABLE IF EXISTS temp.grouped_rpo")
                await self.db.execute(f"CREATE TEMP TABLE grouped_rpo AS {grouped_sql(meta.rpo_form)}")
                await self.db.execute("DELETE FROM staged_rpo")
                refuse_strays(meta.rpo_form, list(await self.db.execute_fetchall(STRAYS_SQL)))
                if meta.rpo_form == RPO_ANSWERS:
                    opposite = (await self._fetchone(OPPOSITE_COUNT_SQL))[0]
                    note = opposite_answers_note(opposite, list(await self.db.execute_fetchall(OPPOSITE_FIRST_SQL)))
                    if note:
                        summary.detail["opposite_answers"] = opposite
                        summary.notes.append(note)
                await self.db.execute(
                    "INSERT INTO rpo_results (number, principal_id, checked_us, registered, registered_us, import_id)"
                    " SELECT number, ?, ?, registered, registered_us, ? FROM grouped_rpo WHERE true ORDER BY rowid"
                    " ON CONFLICT(number, principal_id, checked_us) DO UPDATE SET"
                    # Another file of this principal answered for the same check time: the same rule across
                    # files ("registered" wins, the later registration date is kept).
                    " registered = max(registered, excluded.registered),"
                    " registered_us = CASE WHEN registered_us IS NULL THEN excluded.registered_us"
                    "   WHEN excluded.registered_us IS NULL THEN registered_us"
                    "   ELSE max(registered_us, excluded.registered_us) END,"
                    " import_id = excluded.import_id",
                    (meta.principal_id, checked_us, import_id),
                )
                numbers, registered = await self._fetchone(COUNTS_SQL)
                await self.db.execute("DROP TABLE temp.grouped_rpo")
                summary.rows_read, summary.rows_stored = summary.rows_stored, numbers
                summary.detail = {"registered": registered, "not_registered": numbers - registered,
                                  **summary.detail}
                await self._finish_import(summary, meta)
            except sqlite3.Error as exc:
                await self._rollback()
                raise _store_error(exc, self.path) from exc
            except BaseException:
                await self._rollback()
                raise
        return summary

    async def import_directory(self, numbers: Iterable[str], meta: ImportMeta, replace: bool) -> ImportSummary:
        listed_us = to_us(meta.checked_at or datetime.now().astimezone())
        async with self._data_lock:
            try:
                import_id, prior = await self._begin_import(meta, additive=not replace)
                if prior is not None:
                    return prior
                if replace:
                    refuse_older_extract(listed_us, (await self._fetchone(LATEST_LISTING_SQL))[0])
                summary = ImportSummary(import_id)
                await self.db.execute("CREATE TEMP TABLE IF NOT EXISTS staged_directory (number TEXT PRIMARY KEY)"
                                      " WITHOUT ROWID")
                await self.db.execute("DELETE FROM staged_directory")
                read = 0
                for batch in batches(numbers):
                    await self.db.executemany("INSERT OR IGNORE INTO staged_directory VALUES (?)",
                                              [(n,) for n in batch])
                    read += len(batch)
                ended = new = 0
                if replace:
                    # Ended, never deleted: a decision as of an earlier moment, and the evidence, still see
                    # the period in which the number was listed.
                    ended = (await self.db.execute(
                        "UPDATE listings SET ended_us = ?, ended_by = ? WHERE ended_us IS NULL"
                        " AND number NOT IN (SELECT number FROM staged_directory)", (listed_us, import_id))).rowcount
                new = (await self.db.execute(
                    "INSERT INTO listings (number, import_id, listed_us)"
                    " SELECT number, ?, ? FROM staged_directory WHERE true ORDER BY number"
                    " ON CONFLICT(number) WHERE ended_us IS NULL DO NOTHING", (import_id, listed_us))).rowcount
                listed = (await self._fetchone("SELECT count(*) FROM staged_directory"))[0]
                await self.db.execute("DELETE FROM staged_directory")
                summary.rows_read, summary.rows_stored = read, listed
                summary.detail = listing_detail(read, listed, new, max(ended, 0), replace)
                await self._finish_import(summary, meta)
            except sqlite3.Error as exc:
                await self._rollback()
                raise _store_error(exc, self.path) from exc
            except BaseException:
                await self._rollback()
                raise
        return summary

    async def _rows_import(self, meta: ImportMeta, sql: str, rows: Iterable[tuple[Any, ...]],
                           import_id_at: int | None) -> ImportSummary:
        """One transaction for a CSV of records: rows already stored are counted as duplicates.
        `import_id_at` is the position in each row tuple to fill with the new import's id."""
        async with self._data_lock:
            try:
                import_id, prior = await self._begin_import(meta)
                if prior is not None:
                    return prior
                summary = ImportSummary(import_id)
                read = 0
                for batch in batches(rows):
                    params = batch if import_id_at is None else [
                        (*r[:import_id_at], import_id, *r[import_id_at + 1:]) for r in batch]
                    before = self.db.total_changes
                    await self.db.executemany(sql, params)
                    read += len(batch)
                    summary.rows_stored += self.db.total_changes - before
                summary.detail["duplicates"] = read - summary.rows_stored
                await self._finish_import(summary, meta)
            except sqlite3.Error as exc:
                await self._rollback()
                raise _store_error(exc, self.path) from exc
            except BaseException:
                await self._rollback()
                raise
        return summary

    async def import_consents(self, records: Iterable[ConsentRecord], meta: ImportMeta) -> ImportSummary:
        now_us = to_us(datetime.now().astimezone())
        return await self._rows_import(
            meta,
            "INSERT OR IGNORE INTO consents (number, principal_id, given_us, evidence, purpose, automated,"
            " expires_us, import_id, created_us) VALUES (?,?,?,?,?,?,?,?,?)",
            (_consent_params(r, None, now_us) for r in records),
            import_id_at=7,
        )

    async def import_contracts(self, records: Iterable[ContractRecord], meta: ImportMeta) -> ImportSummary:
        now_us = to_us(datetime.now().astimezone())
        # The same contract again is a duplicate; a later end date for it is an update (changes() counts it).
        return await self._rows_import(
            meta,
            "INSERT INTO contracts (number, principal_id, start_date, end_date, created_us) VALUES (?,?,?,?,?)"
            " ON CONFLICT(number, principal_id, start_date) DO UPDATE SET end_date = excluded.end_date"
            " WHERE end_date IS NOT excluded.end_date",
            ((r.number, r.principal_id, r.start.isoformat(), r.end.isoformat() if r.end else None, now_us)
             for r in records),
            import_id_at=None,
        )

    async def import_optouts(self, records: Iterable[OptoutRecord], meta: ImportMeta) -> ImportSummary:
        now_us = to_us(datetime.now().astimezone())
        summary = ImportSummary(None)
        # Refusals live in the audit file: stored there in one transaction, then the import is recorded in
        # the data file. A crash in between leaves refusals without their import record, never the reverse,
        # and a rerun stores nothing twice (unique index).
        async with self._audit_lock:
            try:
                await self.audit_db.execute("BEGIN IMMEDIATE")
                read = 0
                for batch in batches(records):
                    before = self.audit_db.total_changes
                    await self.audit_db.executemany(
                        "INSERT OR IGNORE INTO optouts (number, principal_id, at_us, source, reference, created_us)"
                        " VALUES (?,?,?,?,?,?)",
                        [(r.number, r.principal_id, to_us(r.at), SOURCE_IMPORT, r.reference or meta.file_name,
                          now_us) for r in batch],
                    )
                    read += len(batch)
                    summary.rows_stored += self.audit_db.total_changes - before
                await self.audit_db.execute("COMMIT")
            except sqlite3.Error as exc:
                await self._rollback(self.audit_db)
                raise _store_error(exc, self.audit_path) from exc
            except BaseException:
                await self._rollback(self.audit_db)
                raise
        summary.detail["duplicates"] = read - summary.rows_stored
        async with self._data_lock:
            try:
                import_id, _ = await self._begin_import(meta, additive=False)
                summary.import_id = import_id
                await self._finish_import(summary, meta)
            except sqlite3.Error as exc:
                await self._rollback()
                raise _store_error(exc, self.path) from exc
        return summary

    async def add_consent(self, record: ConsentRecord) -> tuple[int, bool]:
        if await self.get_principal(record.principal_id) is None:
            raise NotFoundError(f"principal {record.principal_id!r} does not exist")
        now_us = to_us(datetime.now().astimezone())
        cursor = await self._write(
            "INSERT OR IGNORE INTO consents (number, principal_id, given_us, evidence, purpose, automated,"
            " expires_us, import_id, created_us) VALUES (?,?,?,?,?,?,?,?,?)",
            _consent_params(record, None, now_us),
        )
        created = cursor.rowcount == 1
        row = await self._fetchone(
            "SELECT id FROM consents WHERE number = ? AND principal_id = ? AND given_us = ? AND evidence = ?",
            (record.number, record.principal_id, to_us(record.given_at), record.evidence),
        )
        return int(row[0]), created

    async def revoke_consents(self, number: str, principal_id: str, at: datetime) -> int:
        at_us = to_us(at)
        cursor = await self._write(
            "UPDATE consents SET revoked_us = ? WHERE number = ? AND principal_id = ? AND given_us <= ?"
            " AND (revoked_us IS NULL OR revoked_us > ?) AND (expires_us IS NULL OR expires_us > ?)",
            (at_us, number, principal_id, at_us, at_us, at_us),
        )
        return max(cursor.rowcount, 0)

    async def add_contract(self, number: str, principal_id: str, start: date, end: date | None) -> tuple[int, bool]:
        if await self.get_principal(principal_id) is None:
            raise NotFoundError(f"principal {principal_id!r} does not exist")
        key = (number, principal_id, start.isoformat())
        lookup = "SELECT id FROM contracts WHERE number = ? AND principal_id = ? AND start_date = ?"
        existed = await self._fetchone(lookup, key)
        await self._write(
            "INSERT INTO contracts (number, principal_id, start_date, end_date, created_us) VALUES (?,?,?,?,?)"
            " ON CONFLICT(number, principal_id, start_date) DO UPDATE SET end_date = excluded.end_date",
            (*key, end.isoformat() if end else None, to_us(datetime.now().astimezone())),
        )
        row = await self._fetchone(lookup, key)
        return int(row[0]), existed is None

    async def add_optout(self, number: str, principal_id: str | None, at: datetime, source: str,
                         reference: str | None) -> int:
        if principal_id is not None and await self.get_principal(principal_id) is None:
            raise NotFoundError(f"principal {principal_id!r} does not exist")
        async with self._audit_lock:
            try:
                await self.audit_db.execute(
                    "INSERT OR IGNORE INTO optouts (number, principal_id, at_us, source, reference, created_us)"
                    " VALUES (?,?,?,?,?,?)",
                    (number, principal_id, to_us(at), source, reference, to_us(datetime.now().astimezone())),
                )
                row = await self._fetchone(
                    "SELECT id FROM optouts WHERE number = ? AND coalesce(principal_id, '') = ? AND at_us = ?"
                    " AND source = ?", (number, principal_id or "", to_us(at), source), self.audit_db)
            except sqlite3.Error as exc:
                raise _store_error(exc, self.audit_path) from exc
        return int(row[0])

    # -- evidence and due lists -----------------------------------------------------------------------

    async def evidence(self, number: str, principal_id: str | None) -> list[EvidenceItem]:
        db = self.read_db
        per_principal = (number, principal_id, principal_id)
        # Answers without a principal ("controller unknown") are shown whatever the filter: they explain
        # why a number stored before answers had principals is rpo_not_checked.
        items = [rpo_answer_item(row) for row in await db.execute_fetchall(
            "SELECT r.principal_id, r.id, r.checked_us, r.registered, r.registered_us, r.import_id, i.file_name,"
            " i.file_size, i.sha256, i.imported_us FROM rpo_results r LEFT JOIN imports i ON i.id = r.import_id"
            " WHERE r.number = ? AND (? IS NULL OR r.principal_id IS NULL OR r.principal_id = ?)"
            " ORDER BY r.checked_us, r.id", per_principal)]
        for row in await db.execute_fetchall(
                "SELECT l.import_id, l.listed_us, l.ended_us, l.ended_by, i.file_name, i.sha256 FROM listings l"
                " LEFT JOIN imports i ON i.id = l.import_id WHERE l.number = ? ORDER BY l.listed_us", (number,)):
            items += listing_items(row)
        items += [consent_item(row) for row in await db.execute_fetchall(
            "SELECT id, principal_id, given_us, evidence, purpose, automated, expires_us, revoked_us, import_id"
            " FROM consents WHERE number = ? AND (? IS NULL OR principal_id = ?)", per_principal)]
        items += [contract_item(kid, principal, date.fromisoformat(start), date.fromisoformat(end) if end else None)
                  for kid, principal, start, end in await db.execute_fetchall(
                      "SELECT id, principal_id, start_date, end_date FROM contracts"
                      " WHERE number = ? AND (? IS NULL OR principal_id = ?)", per_principal)]
        items += [optout_item(row) for row in await db.execute_fetchall(
            "SELECT id, principal_id, at_us, source, reference FROM audit.optouts WHERE number = ?"
            " AND (? IS NULL OR principal_id IS NULL OR principal_id = ?)", per_principal)]
        items += [decision_item(row) for row in await db.execute_fetchall(
            "SELECT seq, decision_id, ts_us, campaign_id, principal_id, caller_id, decision, reasons, basis,"
            " evidence, source, uniqueid, hash FROM audit.audit_log WHERE number = ?"
            " AND (? IS NULL OR principal_id = ?) ORDER BY seq", per_principal)]
        items.sort(key=lambda item: item.at)
        return items

    async def due_numbers(self, candidates: Iterable[str] | None, principal_id: str, campaign_id: str | None,
                          stale_before: datetime) -> AsyncIterator[str]:
        db = self.read_db
        # Temp tables live in this connection's own temp database: no lock on the data or audit file.
        await db.execute("CREATE TEMP TABLE IF NOT EXISTS due_candidates (number TEXT PRIMARY KEY) WITHOUT ROWID")
        await db.execute("DELETE FROM due_candidates")
        try:
            if candidates is not None:
                for batch in batches(candidates):
                    await db.executemany("INSERT OR IGNORE INTO due_candidates VALUES (?)", [(n,) for n in batch])
            source = due_source(candidates is not None, campaign_id is not None, "audit.audit_log")
            sql = f"SELECT k.number FROM ({source}) k WHERE {DUE_STALE} ORDER BY k.number"
            params = {"principal": principal_id, "campaign": campaign_id, "stale": to_us(stale_before)}
            async with db.execute(sql, params) as cursor:
                async for (number,) in cursor:
                    yield number
        except sqlite3.Error as exc:
            raise _store_error(exc, self.path) from exc
        finally:
            await db.execute("DELETE FROM due_candidates")

    async def principal_ids(self) -> list[str]:
        return [row[0] for row in await self.read_db.execute_fetchall("SELECT id FROM principals ORDER BY id")]

    # -- what is stored ----------------------------------------------------------------------------

    async def _stream(self, query: Query, convert: Callable[[Any], T]) -> AsyncIterator[T]:
        """The rows of a list query, converted, fetched in chunks on the reading connection (one WAL
        snapshot for the whole list; imports and the gate are not held up)."""
        sql, params = query
        try:
            async with self.read_db.execute(sql, params) as cursor:
                async for row in cursor:
                    yield convert(row)
        except sqlite3.Error as exc:
            raise _store_error(exc, self.path) from exc

    def list_principals(self, *, limit: int | None = None) -> AsyncIterator[StoredPrincipal]:
        return self._stream(principals_query(_LISTS, limit), stored_principal)

    def list_campaigns(self, *, principal_id: str | None = None,
                       limit: int | None = None) -> AsyncIterator[StoredCampaign]:
        return self._stream(campaigns_query(_LISTS, principal_id, limit), stored_campaign)

    def list_consents(self, *, number: str | None = None, principal_id: str | None = None,
                      in_force_at: datetime | None = None, revoked: bool = False,
                      limit: int | None = None) -> AsyncIterator[StoredConsent]:
        return self._stream(consents_query(_LISTS, number, principal_id, in_force_at, revoked, limit), stored_consent)

    def list_contracts(self, *, number: str | None = None, principal_id: str | None = None,
                       running_at: date | None = None, limit: int | None = None) -> AsyncIterator[StoredContract]:
        return self._stream(contracts_query(_LISTS, number, principal_id, running_at, limit), stored_contract)

    def list_optouts(self, *, number: str | None = None, principal_id: str | None = None,
                     since: datetime | None = None, limit: int | None = None) -> AsyncIterator[StoredOptout]:
        return self._stream(optouts_query(_LISTS, number, principal_id, since, limit), stored_optout)

    # -- the decision log --------------------------------------------------------------------------

    async def audit_rows(self, start_us: int | None = None, end_us: int | None = None) -> AsyncIterator[AuditRow]:
        sql = ("SELECT seq, decision_id, ts_us, number, raw_number, campaign_id, principal_id, caller_id,"
               " decision, reasons, basis, evidence, source, uniqueid, channel, prev_hash, hash FROM audit_log")
        clauses, params = [], []
        if start_us is not None:
            clauses.append("ts_us >= ?")
            params.append(start_us)
        if end_us is not None:
            clauses.append("ts_us < ?")
            params.append(end_us)
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY seq"
        try:
            async with self.audit_db.execute(sql, params) as cursor:
                async for r in cursor:
                    entry = AuditEntry(r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11],
                                       r[12], r[13], r[14])
                    yield AuditRow(r[0], entry, r[15], r[16])
        except sqlite3.Error as exc:
            raise _store_error(exc, self.path) from exc


# The list queries' SQLite parts: refusals live in the audit file (attached as `audit` on the reading
# connection); contract dates are ISO text, which compares as the dates do.
_LISTS = ListDialect(
    optouts="audit.optouts",
    collate="",
    caller_ids="(SELECT json_group_array(number) FROM (SELECT c.number FROM principal_caller_ids c"
               " WHERE c.principal_id = p.id ORDER BY c.number))",
    day=date.isoformat,
)


def _consent_params(record: ConsentRecord, import_id: int | None, now_us: int) -> tuple[Any, ...]:
    return (record.number, record.principal_id, to_us(record.given_at), record.evidence, record.purpose,
            int(record.automated), opt_us(record.expires_at), import_id, now_us)


def _store_error(exc: sqlite3.Error, path: str) -> StoreError:
    text = str(exc)
    if "locked" in text or "busy" in text:
        return StoreError(f"database {path} is locked by another writer; try again when it finishes ({text})")
    if "malformed" in text or "not a database" in text:
        return StoreError(f"database {path} is corrupt or not an rpoguard database ({text})")
    if "full" in text:
        return StoreError(f"database {path}: the disk is full ({text})")
    return StoreError(f"database {path}: {text}")
