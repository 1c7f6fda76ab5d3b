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
import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime
from importlib import resources
from pathlib import Path
from time import time_ns
from typing import Any, TypeVar

import aiosqlite

from rpoguard.anchor import AnchorWriter
from rpoguard.audit import GENESIS_HASH, AuditEntry, AuditRow
from rpoguard.bypass.match import Allowed
from rpoguard.config import secure_path
from rpoguard.constants import SOURCE_CLI, SOURCE_IMPORT
from rpoguard.db.audit_writer import AuditWriter, Outcome, Queued, anchor_group, cap_windows, chain_group
from rpoguard.db.console_queries import ConsoleQueries
from rpoguard.db.history import (
    CONSENT_CONFLICTS_SQL,
    CONSENT_FILE_CONFLICTS_SQL,
    CONTRACT_CORRECTIONS_SQL,
    CONTRACT_ENDS_SQL,
    CONTRACTS_NEW_SQL,
    consent_conflict,
    consent_differences,
    consent_problems,
    contract_change,
    contract_detail,
    contract_notes,
    keep_refused,
    revocations,
)
from rpoguard.db.import_records import (
    FINISH_SQL,
    INSERT_FILE_SQL,
    INSERT_IMPORT_SQL,
    file_params,
    finish_params,
    import_params,
    is_repeatable,
    repeat_params,
    repeat_sql,
    repeat_summary,
)
from rpoguard.db.rows import (
    AUDIT_COLUMNS,
    CHANGE_INSERT,
    DUE_STALE,
    FINDING_COLUMNS,
    LATEST_LISTING_SQL,
    USER_FOLDED_SQL,
    USER_SQL,
    ListDialect,
    ListQueries,
    Query,
    allowed,
    allowed_after_query,
    allowed_between_query,
    audit_row,
    audit_rows_query,
    batches,
    change_values,
    due_source,
    facts_from_document,
    finding_values,
    findings_query,
    listing_detail,
    opt_us,
    read_evidence,
    refuse_older_extract,
    stored_finding,
    user_taken,
    user_update_query,
    web_user,
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
    CONTRACT_RECORDED,
    FACT_CONSENT,
    FACT_CONTRACT,
    NOTE_END_CORRECTED,
    NOTE_END_SET,
    RPO_ANSWERS,
    AttemptCap,
    ConsentRecord,
    ConsoleChange,
    ContractOutcome,
    ContractRecord,
    DatabaseNotFound,
    EvidenceItem,
    ImportMeta,
    ImportSummary,
    NotFoundError,
    OptoutRecord,
    PrincipalInfo,
    Progress,
    RecordConflict,
    Revocation,
    RpoAnswer,
    Store,
    StoredFinding,
    StoreError,
    WebUser,
    check_role,
    check_user_name,
)
from rpoguard.db.tables import Table, TableRows, select_sql, to_common, to_sqlite
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
# ALLOW count in the cap window. Each part is a primary-key or index probe. A revoked consent, and an
# ended contract, also read their notes: the earliest revocation moment and end date named count (a
# consent never revoked, a contract still running, cost nothing more).
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
  json((SELECT json_group_array(json_array(id, given_us, evidence, automated, expires_us,
          CASE WHEN revoked_us IS NULL THEN NULL ELSE coalesce(min(revoked_us, (SELECT min(n.at_us) FROM fact_notes n
            WHERE n.fact = 'consent' AND n.fact_id = consents.id)), revoked_us) END, purpose))
     FROM consents WHERE number = :number AND principal_id = (SELECT principal_id FROM c))),
  json((SELECT json_group_array(json_array(id, start_date,
          CASE WHEN end_date IS NULL THEN NULL ELSE coalesce(min(end_date, (SELECT min(n.end_date) FROM fact_notes n
            WHERE n.fact = 'contract' AND n.fact_id = contracts.id)), end_date) END))
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


SQLITE_MAGIC = b"SQLite format 3\x00"


def _require_existing(data: Path, audit: Path) -> None:
    if not data.exists():
        raise DatabaseNotFound(f"database not found: {data}")
    # The decisions live in their own file: reading the facts without them would show a log that looks
    # empty, and a new empty one would pass for intact.
    if not audit.exists():
        with contextlib.suppress(OSError), data.open("rb") as head:
            if head.read(16) != SQLITE_MAGIC:
                raise StoreError(f"cannot open database {data}: file is not a database")
        raise DatabaseNotFound(f"database not found: the decision log {audit} is missing beside {data}")


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


_INSERT_CHANGE = f"{CHANGE_INSERT} VALUES (?, ?, ?, ?, ?)"
_INSERT_AUDIT = f"INSERT INTO audit_log ({AUDIT_COLUMNS}) VALUES ({','.join('?' * 19)})"


# Memory-map the files for the per-call probe: pages come straight from the page cache, no read() copy.
# File-backed mappings are not the server's private memory (the memory target counts anonymous
# memory only).
PROBE_MMAP_BYTES = 8 << 30
PROBE_BUSY_TIMEOUT_MS = 100
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


# The log's head, and the ALLOWs one cap counts (policy.attempts.CapWindow), read by the writer thread
# once it holds the write lock.
_HEAD_SQL = "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1"
_ALLOWS_SQL = ("SELECT count(*) FROM audit_log WHERE number = ? AND principal_id = ? AND decision = 'allow'"
               " AND ts_us > ? AND ts_us < ?")


class _SqliteAuditLog:
    """How SQLite writes one group of the shared writer (db/audit_writer.py): a plain sqlite3 connection
    owned by one dedicated thread, so a whole group (chain head, cap counts, inserts, commit, anchor) is
    one hop off the event loop. synchronous=FULL: one fsync per commit."""

    def __init__(self, path: str, busy_timeout_ms: int, anchor: AnchorWriter | None) -> None:
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self._anchor = anchor
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rpoguard-audit")
        self._con: sqlite3.Connection | None = None
        # Checkpoints run in their own thread and connection (see committed).
        self._checkpointer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rpoguard-checkpoint")
        self._checkpoint_con: sqlite3.Connection | None = None
        self._checkpoint_running = False
        self._last_checkpoint = 0.0

    def start(self, group: list[Queued]) -> asyncio.Future[list[Outcome]]:
        return asyncio.get_running_loop().run_in_executor(self._executor, self._write, group)

    def error(self, exc: BaseException) -> StoreError | None:
        return _store_error(exc, self.path) if isinstance(exc, sqlite3.Error) else None

    def _connection(self) -> sqlite3.Connection:
        if self._con is None:
            self._con = sqlite3.connect(self.path, isolation_level=None, timeout=self.busy_timeout_ms / 1000)
            self._con.execute("PRAGMA synchronous = FULL")
            # No checkpoint inside COMMIT: the commit that crosses the line would copy the log into the file
            # and fsync it while every waiting decision waits too (docs/performance.md, "The decision's commit").
            self._con.execute("PRAGMA wal_autocheckpoint = 0")
        return self._con

    def _write(self, group: list[Queued]) -> list[Outcome]:
        """Runs in the writer thread: one transaction for the whole group."""
        con = self._connection()
        con.execute("BEGIN IMMEDIATE")
        try:
            # The moment the group is written, once the write lock is held: one clock read per group.
            recorded_us = time_ns() // 1000
            last = con.execute(_HEAD_SQL).fetchone()
            seq, prev = (last[0], last[1]) if last else (0, GENESIS_HASH)
            allows = [con.execute(_ALLOWS_SQL, (w.number, w.principal_id, w.since_us, w.until_us)).fetchone()[0]
                      for w in cap_windows(group)]
            chained = chain_group(group, seq, prev, allows, recorded_us)
            con.executemany(_INSERT_AUDIT, chained.rows)
            con.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                con.execute("ROLLBACK")
            raise
        anchor_group(self._anchor, chained)
        return chained.outcomes

    def committed(self, loop: asyncio.AbstractEventLoop) -> None:
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

    async def close(self) -> None:
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


class SqliteStore(ConsoleQueries, ListQueries, Store):
    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 5_000, create: bool = True,
                 anchor: AnchorWriter | None = None) -> None:
        self.path = str(path)
        self.create = create
        self.list_dialect = _LISTS
        # Anchors each group commit of the decision log (rpoguard.anchor); None: no anchoring.
        self.anchor = anchor
        self.audit_path = str(audit_path(path))
        self.busy_timeout_ms = busy_timeout_ms
        self._data: aiosqlite.Connection | None = None
        self._audit: aiosqlite.Connection | None = None
        self._read: aiosqlite.Connection | None = None
        self._data_lock = asyncio.Lock()
        self._audit_lock = asyncio.Lock()
        self._appender: AuditWriter | None = None
        self._probe: sqlite3.Connection | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    async def open(self) -> None:
        # Start-up only, never on the per-call path: plain blocking calls are fine here.
        folder = Path(self.path).parent
        if not folder.is_dir():
            if not self.create:
                raise DatabaseNotFound(f"database not found: {self.path}")
            raise StoreError(f"cannot open database {self.path}: the folder {folder} does not exist")
        if not self.create:
            _require_existing(Path(self.path), Path(self.audit_path))
        _prepare_file(Path(self.path), "data", self.busy_timeout_ms)
        _prepare_file(Path(self.audit_path), "audit", self.busy_timeout_ms)
        try:
            self._data = await self._connect(self.path)
            self._audit = await self._connect(self.audit_path)
            self._read = await self._connect(self.path)
            await self._read.execute("ATTACH DATABASE ? AS audit", (self.audit_path,))
            self._appender = AuditWriter(_SqliteAuditLog(self.audit_path, self.busy_timeout_ms, self.anchor),
                                         self.audit_path, self.anchor)
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

    # -- the whole database (db copy) -------------------------------------------------------------------

    def _both_files(self) -> sqlite3.Connection:
        """A plain connection with the audit file attached: one snapshot, or one write, across both files.
        `db copy` is an operator's command, run alone on the loop: blocking calls are fine here."""
        con = sqlite3.connect(self.path, isolation_level=None)
        con.execute("ATTACH DATABASE ? AS audit", (self.audit_path,))
        return con

    async def read_tables(self, tables: Sequence[Table]) -> TableRows:
        con = self._both_files()
        try:
            con.execute("BEGIN")  # one snapshot of both files
            data = {table.name: [to_common(table, row) for row in con.execute(select_sql(table))]
                    for table in tables}
            con.execute("COMMIT")
        finally:
            con.close()
        return data

    async def first_table_with_rows(self, tables: Sequence[Table]) -> str | None:
        con = self._both_files()
        try:
            return next((table.name for table in tables
                         if con.execute(f"SELECT 1 FROM {table.name} LIMIT 1").fetchone()), None)
        finally:
            con.close()

    async def write_tables(self, tables: Sequence[Table], data: TableRows) -> None:
        # Ids are SQLite rowids, and the chain head is the log's last row: both continue by themselves.
        con = self._both_files()
        try:
            con.execute("BEGIN IMMEDIATE")
            try:
                for table in tables:
                    marks = ", ".join("?" for _ in table.columns)
                    con.executemany(f"INSERT INTO {table.name} ({', '.join(table.columns)}) VALUES ({marks})",
                                    [to_sqlite(table, row) for row in data[table.name]])
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        finally:
            con.close()

    # -- helpers -----------------------------------------------------------------------------------

    async def _fetchone(self, sql: str, params: Any = (), con: aiosqlite.Connection | None = None) -> Any:
        rows = await (con or self.db).execute_fetchall(sql, params)
        return next(iter(rows), None)

    async def _rollback(self, con: aiosqlite.Connection | None = None) -> None:
        # An error may come after SQLite already ended the transaction: then there is nothing to undo.
        with contextlib.suppress(sqlite3.Error):
            await (con or self.db).execute("ROLLBACK")

    @contextlib.asynccontextmanager
    async def _transaction(self, *, audit: bool = False) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction on the data file (or the audit file): BEGIN IMMEDIATE under the writer's
        lock, COMMIT when the block ends, ROLLBACK when it raises (a rejected file, a cancelled command)."""
        con, lock, path = (self.audit_db, self._audit_lock, self.audit_path) if audit else (
            self.db, self._data_lock, self.path)
        async with lock:
            try:
                await con.execute("BEGIN IMMEDIATE")
                yield con
                await con.execute("COMMIT")
            except sqlite3.Error as exc:
                await self._rollback(con)
                raise _store_error(exc, path) from exc
            except BaseException:
                await self._rollback(con)
                raise

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
        return facts_from_document(number, line_type, row[0])

    def _probe_facts(self, params: dict[str, object]) -> Any:
        """The one read of a decision, run right here on the event loop: a handful of index probes on a
        memory-mapped file cost less than the hop to aiosqlite's thread (docs/performance.md, "The per-call
        read"). WAL readers never wait for writers; the busy timeout below bounds the one case that can wait
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
        async with self._transaction():
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
        """Inside the import's transaction: (import id, None), or (None, summary) if already imported.
        Only an additive import can be skipped as a repeat: a replacing one must replace again."""
        if is_repeatable(meta, additive):
            prior = await self._fetchone(_REPEAT_SQL, repeat_params(meta))
            if prior is not None:
                return None, repeat_summary(prior, meta)
        import_id = (await self.db.execute(INSERT_IMPORT_SQL, import_params(meta))).lastrowid
        assert import_id is not None
        await self.db.executemany(INSERT_FILE_SQL, file_params(import_id, meta))
        return import_id, None

    async def _finish_import(self, summary: ImportSummary, meta: ImportMeta) -> None:
        await self.db.execute(FINISH_SQL, finish_params(summary, meta))

    async def import_rpo(self, answers: Iterable[RpoAnswer], meta: ImportMeta,
                         progress: Progress | None = None) -> ImportSummary:
        if meta.checked_at is None or meta.principal_id is None:
            raise ValueError("an RPO import needs the check date and the principal that consulted the RPO")
        checked_us = to_us(meta.checked_at)
        async with self._transaction():
            import_id, prior = await self._begin_import(meta)
            if prior is not None:
                return prior
            summary = ImportSummary(import_id)
            # Rows land in an unindexed temp table first, then go into the keyed table in number order:
            # SQLite sorts on disk with bounded memory, and sorted keys insert 3-4x faster than a
            # file's own order (docs/performance.md, "Imports").
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
            # Another file of this principal may have answered for the same check time: its answers
            # stay as they are, each with its own file; decisions combine them (policy/rpo.py).
            await self.db.execute(
                "INSERT INTO rpo_results (number, principal_id, checked_us, registered, registered_us, import_id)"
                " SELECT number, ?, ?, registered, registered_us, ? FROM grouped_rpo WHERE true ORDER BY rowid",
                (meta.principal_id, checked_us, import_id),
            )
            numbers, registered = await self._fetchone(COUNTS_SQL)
            await self.db.execute("DROP TABLE temp.grouped_rpo")
            summary.rows_read, summary.rows_stored = summary.rows_stored, numbers
            summary.detail = {"registered": registered, "not_registered": numbers - registered,
                              **summary.detail}
            await self._finish_import(summary, meta)
        return summary

    async def import_directory(self, numbers: Iterable[str], meta: ImportMeta, replace: bool) -> ImportSummary:
        listed_us = to_us(meta.checked_at or datetime.now().astimezone())
        async with self._transaction():
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
        return summary

    async def _staged_import(self, meta: ImportMeta, table: str, columns: str, rows: Iterable[tuple[Any, ...]],
                             store_rows: Callable[[int, ImportSummary, int], Awaitable[None]]) -> ImportSummary:
        """One transaction for a CSV of records: the rows land in the temp table `table` (`columns`, the
        file's line last and in the key), then `store_rows(import_id, summary, rows read)` stores them."""
        async with self._transaction():
            import_id, prior = await self._begin_import(meta)
            if prior is not None:
                return prior
            summary = ImportSummary(import_id)
            await self.db.execute(f"CREATE TEMP TABLE IF NOT EXISTS {table} ({columns}) WITHOUT ROWID")
            await self.db.execute(f"DELETE FROM {table}")
            read = 0
            for batch in batches(rows):
                marks = ",".join("?" * len(batch[0]))
                await self.db.executemany(f"INSERT OR IGNORE INTO {table} VALUES ({marks})", batch)
                read += len(batch)
            await store_rows(import_id, summary, read)
            await self.db.execute(f"DELETE FROM {table}")
            await self._finish_import(summary, meta)
        return summary

    async def import_consents(self, records: Iterable[ConsentRecord], meta: ImportMeta) -> ImportSummary:
        now_us = to_us(datetime.now().astimezone())

        async def store_rows(import_id: int, summary: ImportSummary, read: int) -> None:
            problems = consent_problems(await self.db.execute_fetchall(CONSENT_CONFLICTS_SQL),
                                        await self.db.execute_fetchall(CONSENT_FILE_CONFLICTS_SQL))
            if keep_refused(meta, problems):
                await self.db.executemany("DELETE FROM staged_consents WHERE line = ?", [(p.line,) for p in problems])
            before = self.db.total_changes
            await self.db.execute(
                "INSERT OR IGNORE INTO consents (number, principal_id, given_us, evidence, purpose, automated,"
                " expires_us, import_id, created_us) SELECT number, principal_id, given_us, evidence, purpose,"
                " automated, expires_us, ?, ? FROM staged_consents ORDER BY line", (import_id, now_us))
            summary.rows_stored = self.db.total_changes - before
            summary.detail["duplicates"] = read - summary.rows_stored - len(problems)
            summary.rows_read = read

        return await self._staged_import(
            meta, "staged_consents", "number TEXT NOT NULL, principal_id TEXT NOT NULL, given_us INTEGER NOT NULL,"
            " evidence TEXT NOT NULL, purpose TEXT, automated INTEGER NOT NULL, expires_us INTEGER,"
            " line INTEGER NOT NULL, PRIMARY KEY (number, principal_id, given_us, evidence, line)",
            ((r.number, r.principal_id, to_us(r.given_at), r.evidence, r.purpose, int(r.automated),
              opt_us(r.expires_at), r.line) for r in records), store_rows)

    async def import_contracts(self, records: Iterable[ContractRecord], meta: ImportMeta) -> ImportSummary:
        now_us = to_us(datetime.now().astimezone())

        async def store_rows(import_id: int, summary: ImportSummary, read: int) -> None:
            params = {"import": import_id, "now": now_us}
            last_id = (await self._fetchone("SELECT coalesce(max(id), 0) FROM contracts"))[0]
            before = self.db.total_changes
            await self.db.execute(CONTRACTS_NEW_SQL, params)
            new = self.db.total_changes - before
            # A running contract's end is set once; the file's first end for it counts.
            await self.db.execute("DROP TABLE IF EXISTS temp.contract_ends")
            await self.db.execute("CREATE TEMP TABLE contract_ends (id INTEGER PRIMARY KEY, number TEXT,"
                                  " principal_id TEXT, end_date TEXT)")
            await self.db.execute(CONTRACT_ENDS_SQL)
            await self.db.execute(
                "INSERT INTO fact_notes (fact, fact_id, number, principal_id, kind, end_date, source, import_id,"
                f" recorded_us) SELECT '{FACT_CONTRACT}', id, number, principal_id, '{NOTE_END_SET}', end_date,"
                f" '{SOURCE_IMPORT}', :import, :now FROM contract_ends ORDER BY id", params)
            await self.db.execute("UPDATE contracts SET end_date = (SELECT e.end_date FROM contract_ends e"
                                  " WHERE e.id = contracts.id) WHERE id IN (SELECT id FROM contract_ends)")
            ended = (await self._fetchone("SELECT count(*) FROM contract_ends"))[0]
            # Another end for an ended contract is a correction, noted once; an earlier one counts.
            await self.db.execute("DROP TABLE IF EXISTS temp.contract_corrections")
            await self.db.execute("CREATE TEMP TABLE contract_corrections (id INTEGER, number TEXT, principal_id TEXT,"
                                  " end_date TEXT, earlier INTEGER)")
            await self.db.execute(CONTRACT_CORRECTIONS_SQL, {"last_id": last_id})
            await self.db.execute(
                "INSERT INTO fact_notes (fact, fact_id, number, principal_id, kind, end_date, source, import_id,"
                f" recorded_us) SELECT '{FACT_CONTRACT}', id, number, principal_id, '{NOTE_END_CORRECTED}',"
                f" end_date, '{SOURCE_IMPORT}', :import, :now FROM contract_corrections ORDER BY id, end_date",
                params)
            corrected, noted = await self._fetchone(
                "SELECT count(CASE WHEN earlier THEN 1 END), count(CASE WHEN NOT earlier THEN 1 END)"
                " FROM contract_corrections")
            await self.db.execute("DROP TABLE temp.contract_ends")
            await self.db.execute("DROP TABLE temp.contract_corrections")
            summary.rows_read, summary.rows_stored = read, new
            summary.detail.update(contract_detail(read, new, ended, corrected, noted))
            summary.notes += contract_notes(corrected, noted)

        return await self._staged_import(
            meta, "staged_contracts", "number TEXT NOT NULL, principal_id TEXT NOT NULL, start_date TEXT NOT NULL,"
            " end_date TEXT, line INTEGER NOT NULL, PRIMARY KEY (number, principal_id, start_date, line)",
            ((r.number, r.principal_id, r.start.isoformat(), _iso_day(r.end), r.line) for r in records), store_rows)

    async def import_optouts(self, records: Iterable[OptoutRecord], meta: ImportMeta) -> ImportSummary:
        now_us = to_us(datetime.now().astimezone())
        summary = ImportSummary(None)
        # Refusals live in the audit file: stored there in one transaction, then the import is recorded in
        # the data file. A crash in between leaves refusals without their import record, never the reverse,
        # and a rerun stores nothing twice (unique index).
        async with self._transaction(audit=True):
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
        summary.detail["duplicates"] = read - summary.rows_stored
        async with self._transaction():
            import_id, _ = await self._begin_import(meta, additive=False)
            summary.import_id = import_id
            await self._finish_import(summary, meta)
        return summary

    async def add_consent(self, record: ConsentRecord) -> tuple[int, bool]:
        if await self.get_principal(record.principal_id) is None:
            raise NotFoundError(f"principal {record.principal_id!r} does not exist")
        now_us = to_us(datetime.now().astimezone())
        key = (record.number, record.principal_id, to_us(record.given_at), record.evidence)
        async with self._transaction():
            row = await self._fetchone(
                "SELECT id, purpose, automated, expires_us FROM consents"
                " WHERE number = ? AND principal_id = ? AND given_us = ? AND evidence = ?", key)
            if row is None:
                cursor = await self.db.execute(
                    "INSERT INTO consents (number, principal_id, given_us, evidence, purpose, automated,"
                    " expires_us, import_id, created_us) VALUES (?,?,?,?,?,?,?,?,?)",
                    _consent_params(record, None, now_us))
                consent_id, created = cursor.lastrowid, True
            else:
                consent_id, created = row[0], False
                differences = consent_differences(row[1], row[2], row[3], record)
                if differences:
                    raise RecordConflict(consent_conflict(consent_id, record, differences))
        assert consent_id is not None
        return int(consent_id), created

    async def revoke_consents(self, number: str, principal_id: str, at: datetime) -> list[Revocation]:
        at_us, now_us = to_us(at), to_us(datetime.now().astimezone())
        async with self._transaction():
            rows = await self.db.execute_fetchall(
                "SELECT id, revoked_us, (SELECT min(n.at_us) FROM fact_notes n WHERE n.fact = ?"
                " AND n.fact_id = consents.id) FROM consents WHERE number = ? AND principal_id = ?"
                " AND given_us <= ? AND (expires_us IS NULL OR expires_us > ?) ORDER BY id",
                (FACT_CONSENT, number, principal_id, at_us, at_us))
            first, notes, done = revocations(rows, at)
            # The first revocation: set once, never changed afterwards.
            await self.db.executemany("UPDATE consents SET revoked_us = ? WHERE id = ? AND revoked_us IS NULL",
                                      [(at_us, consent_id) for consent_id in first])
            await self.db.executemany(
                "INSERT INTO fact_notes (fact, fact_id, number, principal_id, kind, at_us, source, recorded_us)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(FACT_CONSENT, cid, number, principal_id, kind, at_us, SOURCE_CLI, now_us) for cid, kind in notes])
        return done

    async def add_contract(self, number: str, principal_id: str, start: date, end: date | None) -> ContractOutcome:
        if await self.get_principal(principal_id) is None:
            raise NotFoundError(f"principal {principal_id!r} does not exist")
        now_us = to_us(datetime.now().astimezone())
        async with self._transaction():
            row = await self._fetchone("SELECT id, end_date FROM contracts WHERE number = ? AND principal_id = ?"
                                       " AND start_date = ?", (number, principal_id, start.isoformat()))
            if row is None:
                cursor = await self.db.execute(
                    "INSERT INTO contracts (number, principal_id, start_date, end_date, created_us)"
                    " VALUES (?,?,?,?,?)", (number, principal_id, start.isoformat(), _iso_day(end), now_us))
                assert cursor.lastrowid is not None
                outcome = ContractOutcome(cursor.lastrowid, CONTRACT_RECORDED, None, end)
            else:
                contract_id, stored = row[0], _day(row[1])
                noted = [_day(n[0]) for n in await self.db.execute_fetchall(
                    "SELECT end_date FROM fact_notes WHERE fact = ? AND fact_id = ?", (FACT_CONTRACT, contract_id))]
                what, note, effective = contract_change(stored, noted, end)
                if note == NOTE_END_SET:
                    await self.db.execute("UPDATE contracts SET end_date = ? WHERE id = ? AND end_date IS NULL",
                                          (_iso_day(end), contract_id))
                if note is not None:
                    await self.db.execute(
                        "INSERT INTO fact_notes (fact, fact_id, number, principal_id, kind, end_date, source,"
                        " recorded_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (FACT_CONTRACT, contract_id, number, principal_id, note, _iso_day(end), SOURCE_CLI,
                         now_us))
                outcome = ContractOutcome(contract_id, what, stored, effective)
        return outcome

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
        return await read_evidence(self.read_db.execute_fetchall, _LISTS, number, principal_id)

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

    async def _stream(self, query: Query, convert: Callable[[Any], T], *, audit: bool = False) -> AsyncIterator[T]:
        """The rows of a list query, converted, fetched in chunks on the reading connection (one WAL
        snapshot for the whole list; imports and the gate are not held up)."""
        sql, params = query
        try:
            async with (self.audit_db if audit else self.read_db).execute(sql, params) as cursor:
                async for row in cursor:
                    yield convert(row)
        except sqlite3.Error as exc:
            raise _store_error(exc, self.path) from exc

    # -- the console's users and the record of its changes (the data file) ----------------------------------

    async def add_user(self, name: str, role: str, password_hash: str, at_us: int, *,
                       change: ConsoleChange | None = None) -> None:
        check_user_name(name)
        check_role(role)
        if not password_hash:
            raise ValueError(f"user {name!r}: an empty password hash")
        values = change_values(change) if change is not None else None
        async with self._transaction():
            taken = await self._fetchone(USER_FOLDED_SQL, {"name": name})
            if taken is not None:
                raise RecordConflict(user_taken(name, taken[0]))
            await self.db.execute(
                "INSERT INTO console_users (name, role, password_hash, disabled, created_us, changed_us)"
                " VALUES (?, ?, ?, 0, ?, ?)", (name, role, password_hash, at_us, at_us))
            if values is not None:
                await self.db.execute(_INSERT_CHANGE, values)

    async def get_user(self, name: str) -> WebUser | None:
        try:
            row = await self._fetchone(USER_SQL, {"name": name}, self.read_db)
        except sqlite3.Error as exc:
            raise _store_error(exc, self.path) from exc
        return web_user(row) if row is not None else None

    async def update_user(self, name: str, *, at_us: int, role: str | None = None, password_hash: str | None = None,
                          disabled: bool | None = None, change: ConsoleChange | None = None) -> None:
        sql, params = user_update_query(name, at_us, role, password_hash, disabled)
        values = change_values(change) if change is not None else None
        async with self._transaction():
            cursor = await self.db.execute(sql, params)
            if cursor.rowcount == 0:
                raise NotFoundError(f"user {name!r} does not exist")
            if values is not None:
                await self.db.execute(_INSERT_CHANGE, values)

    async def record_change(self, change: ConsoleChange) -> int:
        values = change_values(change)
        async with self._transaction():
            cursor = await self.db.execute(_INSERT_CHANGE, values)
        assert cursor.lastrowid is not None
        return int(cursor.lastrowid)

    # -- the decision log --------------------------------------------------------------------------

    def audit_rows(self, start_us: int | None = None, end_us: int | None = None) -> AsyncIterator[AuditRow]:
        # On the audit file's own connection: the log alone, without the data file's snapshot.
        return self._stream(audit_rows_query(start_us, end_us), audit_row, audit=True)

    # -- bypass checks (the audit file) -------------------------------------------------------------------

    def allowed_between(self, start_us: int, end_us: int) -> AsyncIterator[Allowed]:
        return self._stream(allowed_between_query(start_us, end_us), allowed, audit=True)

    async def allowed_after(self, after_seq: int, since_us: int, limit: int) -> list[tuple[int, Allowed]]:
        sql, params = allowed_after_query(after_seq, since_us, limit)
        try:
            rows = await self.audit_db.execute_fetchall(sql, params)
        except sqlite3.Error as exc:
            raise _store_error(exc, self.audit_path) from exc
        return [(row[0], allowed(row)) for row in rows]

    async def add_finding(self, finding: StoredFinding) -> int:
        sql = (f"INSERT INTO bypass_findings ({', '.join(FINDING_COLUMNS)})"
               f" VALUES ({', '.join('?' * len(FINDING_COLUMNS))})")
        async with self._audit_lock:
            try:
                cursor = await self.audit_db.execute(sql, finding_values(finding, time_ns() // 1000))
                await self.audit_db.commit()
            except sqlite3.Error as exc:
                raise _store_error(exc, self.audit_path) from exc
        return int(cursor.lastrowid or 0)

    async def close_finding(self, finding_id: int, until_us: int, detail: str) -> None:
        async with self._audit_lock:
            try:
                await self.audit_db.execute("UPDATE bypass_findings SET until_us = ?, detail = ? WHERE id = ?",
                                            (until_us, detail, finding_id))
                await self.audit_db.commit()
            except sqlite3.Error as exc:
                raise _store_error(exc, self.audit_path) from exc

    def list_findings(self, *, since_us: int | None = None, kind: str | None = None,
                      limit: int | None = None) -> AsyncIterator[StoredFinding]:
        return self._stream(findings_query(since_us, kind, limit), stored_finding, audit=True)


    # -- the web console (db/console_queries.py) ------------------------------------------------------

    async def _console_fetch(self, query: Query, *, audit: bool) -> list[Sequence[Any]]:
        sql, params = query
        try:
            return list(await (self.audit_db if audit else self.read_db).execute_fetchall(sql, params))
        except sqlite3.Error as exc:
            raise _store_error(exc, self.audit_path if audit else self.path) from exc

    def _console_stream(self, query: Query, convert: Callable[[Any], T]) -> AsyncIterator[T]:
        return self._stream(query, convert, audit=True)

    async def _freshness_row(self, query: Query) -> Sequence[Any]:
        # Minutes on a large store: its own connection in a thread, so that the pages' connections (one
        # thread each) never queue behind it.
        def run() -> Sequence[Any]:
            # mode=rw: never creates a file that went missing meanwhile.
            con = sqlite3.connect(Path(self.path).resolve().as_uri() + "?mode=rw", uri=True)
            try:
                con.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
                con.execute("ATTACH DATABASE ? AS audit", (Path(self.audit_path).resolve().as_uri() + "?mode=rw",))
                return con.execute(*query).fetchone()
            finally:
                con.close()

        try:
            return await asyncio.to_thread(run)
        except sqlite3.Error as exc:
            raise _store_error(exc, self.path) from exc


# An earlier import of the same file (import_records.repeat_sql): detail is JSON text here.
_REPEAT_SQL = repeat_sql("IS", "(json_extract(detail, '$.ended') IS NOT NULL"
                               " OR json_extract(detail, '$.removed') IS NOT NULL)")


def _iso_day(day: date | None) -> str | None:
    return day.isoformat() if day is not None else None


def _day(text: str | None) -> date | None:
    return date.fromisoformat(text) if text is not None else None


# The list queries' SQLite parts: refusals live in the audit file (attached as `audit` on the reading
# connection); contract dates are ISO text, which compares as the dates do.
_LISTS = ListDialect(
    optouts="audit.optouts",
    audit_log="audit.audit_log",
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
