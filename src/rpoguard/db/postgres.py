"""PostgreSQL implementation of the Store, on asyncpg: several gate processes (one per PBX) share one truth.

What differs from SQLite, and why:
- one database holds everything (SQLite splits data and decisions into two files only because a file has
  one writer); MVCC lets an import and every node's appends run at once, readers see the previous data
  until an import commits.
- the per-call read is one prepared statement over a connection pool: one round trip per decision.
- the decision log is ONE global hash chain serialised in the database. Every append transaction first
  locks the single row of `audit_head` (SELECT ... FOR UPDATE); only then, in a new statement (so with a
  snapshot taken after the lock: every earlier append is committed and visible), it reads the head and
  counts the ALLOWs of the attempt cap, computes the hashes (rpoguard.audit.chain_hash) and inserts. Two
  nodes therefore never pass a cap together, and `audit verify` walks one chain whatever node wrote a
  row. Appends of one process are grouped into one transaction, as in SQLite: one commit for the group.
- a decision is answered only after COMMIT with synchronous_commit on (set on the writer's session).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from datetime import date, datetime
from importlib import resources
from time import time_ns
from typing import Any, TypeVar

import asyncpg

from rpoguard.anchor import AnchorWriter
from rpoguard.audit import AuditEntry, AuditRow
from rpoguard.bypass.match import Allowed
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
    BATCH,
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
    new_user_checked,
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
    StoreUnavailable,
    WebUser,
)
from rpoguard.db.tables import Table, TableRows, select_sql, to_common
from rpoguard.db.upgrade import (
    ANSWER_COUNTS_SQL,
    ANSWERS_PER_PRINCIPAL,
    PRINCIPALS_SQL,
    UNATTRIBUTED_FILES_SQL,
    AnswerOwnership,
    answers_owner_note,
)
from rpoguard.db.urls import redact_url
from rpoguard.policy.model import (
    CampaignFacts,
    Facts,
)
from rpoguard.timeutil import to_us

log = logging.getLogger(__name__)

T = TypeVar("T")

POOL_MIN = 1
POOL_MAX = 8
CONNECT_TIMEOUT = 5.0
# Serialises migrations of one database across processes that start together (nodes and commands).
MIGRATION_LOCK = 0x7270_6F67  # "rpog"
# Serialises imports of one kind, so the same file imported from two nodes at once is stored once.
IMPORT_LOCK = 0x7270_6F68


def _migrations() -> list[tuple[int, str]]:
    folder = resources.files("rpoguard.db") / "migrations" / "postgres"
    found = []
    for item in folder.iterdir():
        if item.name.endswith(".sql"):
            found.append((int(item.name.split("_", 1)[0]), item.read_text(encoding="utf-8")))
    return sorted(found)


# An earlier import of the same file (import_records.repeat_sql): detail is JSONB here.
_REPEAT_SQL = repeat_sql("IS NOT DISTINCT FROM", "(detail ? 'ended' OR detail ? 'removed')")


def _pg_error(exc: BaseException, where: str) -> StoreError:
    """A StoreError an operator can read; the connection's password never appears in it."""
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, (OSError, asyncio.TimeoutError, asyncpg.CannotConnectNowError,
                        asyncpg.ConnectionDoesNotExistError, asyncpg.InterfaceError)):
        return StoreUnavailable(f"database {where} unreachable: {type(exc).__name__}: {exc}")
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return StoreUnavailable(f"database {where} does not exist: {exc} (create it with createdb)")
    if isinstance(exc, asyncpg.InvalidPasswordError | asyncpg.InvalidAuthorizationSpecificationError):
        return StoreUnavailable(f"database {where}: authentication failed: {exc}")
    if isinstance(exc, asyncpg.DiskFullError):
        return StoreError(f"database {where}: the disk is full ({exc})")
    return StoreError(f"database {where}: {type(exc).__name__}: {exc}")


# What the database or the way to it can raise; anything else (a rejected file, a bug) passes unchanged.
_DB_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, asyncio.TimeoutError)


_NAMED_PARAMETER = re.compile(r"(?<!:):([a-z_][a-z0-9_]*)")


# Rows a console export's cursor fetches at a time (the lists fetch BATCH).
CONSOLE_PREFETCH = 500


def _numbered(sql: str, values: dict[str, Any]) -> tuple[str, list[Any]]:
    """SQL written with :name parameters (shared with SQLite) in asyncpg's $n style, and its arguments."""
    order: list[str] = []

    def number(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in order:
            order.append(name)
        return f"${order.index(name) + 1}"

    text = _NAMED_PARAMETER.sub(number, sql)
    return text, [values[name] for name in order]


def _named(sql: str, values: dict[str, Any]) -> list[Any]:
    """_numbered as the arguments of fetch/execute: the SQL, then its values."""
    text, args = _numbered(sql, values)
    return [text, *args]


def _count(status: str) -> int:
    """Rows touched, from a command status such as 'INSERT 0 12' or 'UPDATE 3'."""
    try:
        return int(status.rsplit(" ", 1)[1])
    except (IndexError, ValueError):
        return 0


# One statement returns every fact of one decision, as one JSON document: campaign, the RPO answers the
# campaign's principal obtained for the number, the listing in force at the call time, consents,
# contracts, refusals and the ALLOW count in the cap window. The same parts,
# order and NULL rules as SQLite's FACTS_SQL (db/sqlite.py), so both backends give identical Facts.
FACTS_SQL = """
WITH c AS (SELECT id, principal_id, automated, max_attempts, per_days FROM campaigns WHERE id = $1::text)
SELECT json_build_array(
  (SELECT json_build_array(c.id, c.principal_id, c.automated, c.max_attempts, c.per_days,
      (SELECT coalesce(json_agg(p.number ORDER BY p.number), '[]'::json) FROM principal_caller_ids p
        WHERE p.principal_id = c.principal_id)) FROM c),
  (SELECT json_agg(json_build_array(id, checked_us, registered, registered_us, import_id) ORDER BY id)
     FROM rpo_results WHERE number = $2::text AND principal_id = (SELECT principal_id FROM c)),
  (SELECT json_build_array(import_id, listed_us) FROM listings
     WHERE number = $2::text AND listed_us <= $3::bigint AND (ended_us IS NULL OR ended_us > $3::bigint)
     ORDER BY listed_us DESC LIMIT 1),
  (SELECT json_agg(json_build_array(id, given_us, evidence, automated, expires_us,
       CASE WHEN revoked_us IS NULL THEN NULL ELSE least(revoked_us, (SELECT min(n.at_us) FROM fact_notes n
         WHERE n.fact = 'consent' AND n.fact_id = consents.id)) END, purpose) ORDER BY id)
     FROM consents WHERE number = $2::text AND principal_id = (SELECT principal_id FROM c)),
  (SELECT json_agg(json_build_array(id, start_date,
       CASE WHEN end_date IS NULL THEN NULL ELSE least(end_date, (SELECT min(n.end_date) FROM fact_notes n
         WHERE n.fact = 'contract' AND n.fact_id = contracts.id)) END) ORDER BY id)
     FROM contracts WHERE number = $2::text AND principal_id = (SELECT principal_id FROM c)),
  (SELECT json_agg(json_build_array(id, principal_id, at_us) ORDER BY id)
     FROM optouts WHERE number = $2::text
      AND (principal_id IS NULL OR principal_id = (SELECT principal_id FROM c))),
  (SELECT count(*) FROM audit_log
    WHERE number = $2::text AND principal_id = (SELECT principal_id FROM c) AND decision = 'allow'
      AND ts_us > $3::bigint - (SELECT per_days FROM c) * 86400000000::bigint AND ts_us <= $3::bigint)
)::text
"""

# Run after the head row is locked: a new statement, so a new snapshot in which every append that held
# the lock before is committed. The ALLOW counts of the group's caps come back in the group's order.
_HEAD_SQL = """
SELECT h.seq, h.hash,
  ARRAY(SELECT (SELECT count(*) FROM audit_log a
                 WHERE a.number = k.number AND a.principal_id = k.principal AND a.decision = 'allow'
                   AND a.ts_us > k.since AND a.ts_us < k.until)
          FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[]) WITH ORDINALITY
               AS k(number, principal, since, until, i)
         ORDER BY k.i) AS allows
FROM audit_head h WHERE h.id = 1
"""

# The group's rows and the new head in one statement.
_INSERT_SQL = f"""
WITH added AS (
  INSERT INTO audit_log ({AUDIT_COLUMNS})
  SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[],
                       $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[],
                       $15::text[], $16::text[], $17::text[], $18::bigint[], $19::text[])
)
UPDATE audit_head SET seq = $20::bigint, hash = $21::text WHERE id = 1
"""


def _audit_columns(rows: list[tuple[Any, ...]]) -> list[list[Any]]:
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[] for _ in range(19)]


_INSERT_CHANGE = f"{CHANGE_INSERT} VALUES ($1, $2, $3, $4, $5::jsonb)"


# The list queries' PostgreSQL parts: one database, DATE columns, text sorted by bytes as SQLite does.
_LISTS = ListDialect(
    optouts="optouts",
    audit_log="audit_log",
    collate=' COLLATE "C"',
    caller_ids="(SELECT coalesce(json_agg(c.number ORDER BY c.number COLLATE \"C\"), '[]'::json)::text"
               " FROM principal_caller_ids c WHERE c.principal_id = p.id)",
    day=lambda day: day,
)


class _PgAuditLog:
    """How PostgreSQL writes one group of the shared writer (db/audit_writer.py), as a task on the loop.
    One dedicated connection, so the head lock is taken once per group, not once per decision."""

    def __init__(self, connect: Callable[[], Awaitable[asyncpg.Connection]], where: str,
                 anchor: AnchorWriter | None) -> None:
        self._connect = connect
        self._where = where
        self._anchor = anchor
        self._con: asyncpg.Connection | None = None

    def start(self, group: list[Queued]) -> asyncio.Future[list[Outcome]]:
        return asyncio.ensure_future(self._write(group))

    def error(self, exc: BaseException) -> StoreError | None:
        return _pg_error(exc, self._where) if isinstance(exc, Exception) else None

    def committed(self, loop: asyncio.AbstractEventLoop) -> None:
        """Nothing to do: the server checkpoints by itself."""

    async def _write(self, group: list[Queued]) -> list[Outcome]:
        if self._con is None or self._con.is_closed():
            self._con = await self._connect()
        con = self._con
        try:
            # BEGIN and the lock in one round trip (simple query protocol); the lock waits for any other
            # node's group to commit. READ COMMITTED whatever the server's default: the next statement
            # must see what the previous holder of the lock committed (under a REPEATABLE READ or
            # SERIALIZABLE default the lock fails with a serialisation error instead).
            await con.execute("BEGIN ISOLATION LEVEL READ COMMITTED;"
                              " SELECT 1 FROM audit_head WHERE id = 1 FOR UPDATE")
            windows = cap_windows(group)
            head = await con.fetchrow(_HEAD_SQL, [w.number for w in windows], [w.principal_id for w in windows],
                                      [w.since_us for w in windows], [w.until_us for w in windows])
            if head is None:
                raise StoreError(f"database {self._where}: the audit chain head is missing")
            # The moment the group is written, once the head is locked: one clock read per group (this
            # node's clock, as SQLite's writer uses its own).
            recorded_us = time_ns() // 1000
            chained = chain_group(group, int(head["seq"]), str(head["hash"]), head["allows"], recorded_us)
            if chained.rows:
                await con.execute(_INSERT_SQL, *_audit_columns(chained.rows), chained.seq, chained.hash)
            await con.execute("COMMIT")
        except BaseException:
            await self._abandon()
            raise
        if chained.rows and self._anchor is not None:
            await asyncio.get_running_loop().run_in_executor(None, anchor_group, self._anchor, chained)
        return chained.outcomes

    async def _abandon(self) -> None:
        """Roll back after a failure; a connection in an unknown state is closed and made anew next time."""
        con = self._con
        if con is None or con.is_closed():
            self._con = None
            return
        try:
            await asyncio.wait_for(con.execute("ROLLBACK"), CONNECT_TIMEOUT)
        except Exception:
            self._con = None
            con.terminate()

    async def close(self) -> None:
        if self._con is not None:
            con, self._con = self._con, None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(con.close(), CONNECT_TIMEOUT)


async def _keep_session(con: asyncpg.Connection) -> None:
    """The pool's reset on release. asyncpg's default sends a reset query (advisory locks, cursors,
    LISTEN, settings) every time: a second round trip per decision. This store leaves none of those
    behind (its locks are transaction-scoped, its temp tables ON COMMIT DROP), and an open transaction is
    still rolled back by asyncpg before this runs."""


class PostgresStore(ConsoleQueries, ListQueries, Store):
    def __init__(self, url: str, *, pool_min: int = POOL_MIN, pool_max: int = POOL_MAX, create: bool = True,
                 anchor: AnchorWriter | None = None) -> None:
        self.create = create
        self.list_dialect = _LISTS
        # Anchors each group commit of the decision log (rpoguard.anchor); None: no anchoring.
        self.anchor = anchor
        if url.startswith("postgres://"):
            url = "postgresql://" + url.removeprefix("postgres://")
        self.url = url
        self.where = redact_url(url)
        self.pool_min = pool_min
        self.pool_max = pool_max
        self._pool: asyncpg.Pool | None = None
        self._appender: AuditWriter | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    async def _connect(self) -> asyncpg.Connection:
        try:
            # synchronous_commit on: a decision is answered only once its row is durable, whatever the
            # cluster's default says.
            return await asyncpg.connect(self.url, timeout=CONNECT_TIMEOUT,
                                         server_settings={"application_name": "rpoguard",
                                                          "synchronous_commit": "on"})
        except Exception as exc:
            raise _pg_error(exc, self.where) from exc

    async def open(self) -> None:
        con = await self._connect()
        try:
            await self._migrate(con)
        except Exception as exc:
            raise _pg_error(exc, self.where) from exc
        finally:
            with contextlib.suppress(Exception):
                await con.close()
        try:
            self._pool = await asyncpg.create_pool(
                self.url, min_size=self.pool_min, max_size=self.pool_max, timeout=CONNECT_TIMEOUT,
                server_settings={"application_name": "rpoguard", "synchronous_commit": "on"},
                reset=_keep_session)
        except Exception as exc:
            raise _pg_error(exc, self.where) from exc
        self._appender = AuditWriter(_PgAuditLog(self._connect, self.where, self.anchor), self.where, self.anchor)

    async def _migrate(self, con: asyncpg.Connection) -> None:
        # One transaction under a lock: nodes and commands that start together on a new database migrate
        # it once, one after the other (even CREATE TABLE IF NOT EXISTS races without the lock).
        async with con.transaction():
            await con.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            if not self.create and await con.fetchval("SELECT to_regclass('rpoguard_schema')") is None:
                raise DatabaseNotFound(f"database not found: {self.where} holds no rpoguard tables (a command "
                                       "that stores data, or 'rpoguard db migrate', creates them)")
            await con.execute("CREATE TABLE IF NOT EXISTS rpoguard_schema (version INTEGER PRIMARY KEY,"
                              " applied_us BIGINT NOT NULL)")
            done = {row[0] for row in await con.fetch("SELECT version FROM rpoguard_schema")}
            notes = []
            for version, sql in _migrations():
                if version not in done:
                    log.info("migrating %s to schema version %d", self.where, version)
                    await con.execute(sql)
                    await con.execute("INSERT INTO rpoguard_schema (version, applied_us) VALUES ($1, $2)",
                                      version, to_us(datetime.now().astimezone()))
                    if version == ANSWERS_PER_PRINCIPAL:
                        notes.append(await self._answers_owner_note(con))
        for note in notes:
            if note:
                log.warning("%s: %s", self.where, note)

    @staticmethod
    async def _answers_owner_note(con: asyncpg.Connection) -> str | None:
        answers, attributed = await con.fetchrow(ANSWER_COUNTS_SQL)
        principals = [row[0] for row in await con.fetch(PRINCIPALS_SQL)]
        files = [(row[0], row[1]) for row in await con.fetch(UNATTRIBUTED_FILES_SQL)]
        return answers_owner_note(AnswerOwnership(int(answers), int(attributed), principals, files))

    async def close(self) -> None:
        if self._appender is not None:
            appender, self._appender = self._appender, None
            await appender.close()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), CONNECT_TIMEOUT)
            except Exception:
                pool.terminate()

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreError("database is not open")
        return self._pool

    async def schema_version(self) -> int:
        return int(await self._call(lambda: self.pool.fetchval("SELECT coalesce(max(version), 0)"
                                                               " FROM rpoguard_schema")))

    # -- the whole database (db copy) -------------------------------------------------------------------

    async def read_tables(self, tables: Sequence[Table]) -> TableRows:
        async with self.pool.acquire() as con, con.transaction(isolation="repeatable_read", readonly=True):
            return {table.name: [to_common(table, tuple(row)) for row in await con.fetch(select_sql(table))]
                    for table in tables}

    async def first_table_with_rows(self, tables: Sequence[Table]) -> str | None:
        for table in tables:
            if await self.pool.fetchval(f"SELECT 1 FROM {table.name} LIMIT 1"):
                return table.name
        return None

    async def write_tables(self, tables: Sequence[Table], data: TableRows) -> None:
        async with self.pool.acquire() as con, con.transaction():
            for table in tables:
                await con.copy_records_to_table(table.name, records=data[table.name], columns=list(table.columns))
                if table.identity:
                    # New rows continue after the copied ids.
                    await con.execute(
                        f"SELECT setval(pg_get_serial_sequence('{table.name}', '{table.identity}'),"
                        f" coalesce((SELECT max({table.identity}) FROM {table.name}), 0) + 1, false)")
                if table.name == "audit_log" and data[table.name]:
                    # The chain goes on from the last copied row.
                    last = dict(zip(table.columns, data[table.name][-1], strict=True))
                    await con.execute("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1",
                                      last["seq"], last["hash"])

    async def _call(self, operation: Callable[[], Awaitable[T]]) -> T:
        try:
            return await operation()
        except _DB_ERRORS as exc:
            raise _pg_error(exc, self.where) from exc

    # -- the per-call path -------------------------------------------------------------------------

    async def facts(self, number: str | None, line_type: str | None, campaign_id: str | None,
                    at: datetime) -> Facts:
        # One prepared statement (asyncpg caches it per connection), one round trip.
        document = await self._call(lambda: self.pool.fetchval(FACTS_SQL, campaign_id, number, to_us(at)))
        return facts_from_document(number, line_type, document)

    async def append_decision(self, entry: AuditEntry, cap: AttemptCap | None = None) -> AuditRow:
        return await self.start_decision(entry, cap)

    def start_decision(self, entry: AuditEntry, cap: AttemptCap | None = None) -> asyncio.Future[AuditRow]:
        if self._appender is None:
            raise StoreError("database is not open")
        return self._appender.submit(entry, cap)

    # -- reference data ----------------------------------------------------------------------------

    async def add_principal(self, principal_id: str, name: str, caller_ids: Iterable[str]) -> bool:
        now = to_us(datetime.now().astimezone())
        numbers = list(caller_ids)

        async def work() -> bool:
            async with self.pool.acquire() as con, con.transaction(isolation="read_committed"):
                # xmax = 0 on the returned row: it was inserted, not updated.
                created = await con.fetchval(
                    "INSERT INTO principals (id, name, created_us) VALUES ($1, $2, $3)"
                    " ON CONFLICT (id) DO UPDATE SET name = excluded.name RETURNING (xmax = 0)",
                    principal_id, name, now)
                if numbers:
                    await con.execute(
                        "INSERT INTO principal_caller_ids (principal_id, number)"
                        " SELECT $1, n FROM unnest($2::text[]) AS n ON CONFLICT DO NOTHING", principal_id, numbers)
                return bool(created)

        return await self._call(work)

    async def get_principal(self, principal_id: str) -> PrincipalInfo | None:
        async def work() -> PrincipalInfo | None:
            async with self.pool.acquire() as con:
                row = await con.fetchrow("SELECT id, name FROM principals WHERE id = $1", principal_id)
                if row is None:
                    return None
                numbers = await con.fetch(
                    "SELECT number FROM principal_caller_ids WHERE principal_id = $1 ORDER BY number", principal_id)
                return PrincipalInfo(row[0], row[1], tuple(n[0] for n in numbers))

        return await self._call(work)

    async def add_campaign(self, campaign_id: str, principal_id: str, automated: bool,
                           max_attempts: int | None, per_days: int | None) -> bool:
        if await self.get_principal(principal_id) is None:
            raise NotFoundError(f"principal {principal_id!r} does not exist; add it with 'rpoguard principal add'")
        created = await self._call(lambda: self.pool.fetchval(
            "INSERT INTO campaigns (id, principal_id, automated, max_attempts, per_days, created_us)"
            " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO UPDATE SET principal_id = excluded.principal_id,"
            " automated = excluded.automated, max_attempts = excluded.max_attempts, per_days = excluded.per_days"
            " RETURNING (xmax = 0)",
            campaign_id, principal_id, automated, max_attempts, per_days, to_us(datetime.now().astimezone())))
        return bool(created)

    async def get_campaign(self, campaign_id: str) -> CampaignFacts | None:
        facts = await self.facts(None, None, campaign_id, datetime.now().astimezone())
        return facts.campaign

    # -- imports -----------------------------------------------------------------------------------

    async def _begin_import(self, con: asyncpg.Connection, meta: ImportMeta, *,
                            additive: bool = True) -> tuple[int | None, ImportSummary | None]:
        """Inside the import's transaction: (import id, None), or (None, summary) if already imported.
        Only an additive import can be skipped as a repeat: a replacing one must replace again."""
        await con.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", IMPORT_LOCK, meta.kind)
        if is_repeatable(meta, additive):
            prior = await con.fetchrow(*_named(_REPEAT_SQL, repeat_params(meta)))
            if prior is not None:
                return None, repeat_summary(prior, meta)
        import_id = int(await con.fetchval(*_named(f"{INSERT_IMPORT_SQL} RETURNING id", import_params(meta))))
        files = file_params(import_id, meta)
        sql, _ = _numbered(INSERT_FILE_SQL, files[0])
        await con.executemany(sql, [_numbered(INSERT_FILE_SQL, f)[1] for f in files])
        return import_id, None

    @staticmethod
    async def _finish_import(con: asyncpg.Connection, summary: ImportSummary, meta: ImportMeta) -> None:
        await con.execute(*_named(FINISH_SQL, finish_params(summary, meta)))

    async def _in_transaction(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run an import in one transaction: whole or not at all, also when reading its rows raises."""
        async def run() -> T:
            async with self.pool.acquire() as con, con.transaction(isolation="read_committed"):
                return await work(con)

        return await self._call(run)

    async def import_rpo(self, answers: Iterable[RpoAnswer], meta: ImportMeta,
                         progress: Progress | None = None) -> ImportSummary:
        if meta.checked_at is None or meta.principal_id is None:
            raise ValueError("an RPO import needs the check date and the principal that consulted the RPO")
        checked_us = to_us(meta.checked_at)

        async def work(con: asyncpg.Connection) -> ImportSummary:
            import_id, prior = await self._begin_import(con, meta)
            if prior is not None:
                return prior
            summary = ImportSummary(import_id)
            # COPY into an unindexed temp table, then one keyed insert in number order. Integers for the
            # flags, so that the grouping SQL is the one SQLite runs (db/rpo_import.py).
            await con.execute("CREATE TEMP TABLE staged_rpo (number TEXT NOT NULL, registered SMALLINT NOT NULL,"
                              " registered_us BIGINT, line BIGINT NOT NULL, submitted SMALLINT NOT NULL)"
                              " ON COMMIT DROP")
            read = 0
            for batch in batches(answers):
                await con.copy_records_to_table(
                    "staged_rpo", records=[(a.number, int(a.registered), opt_us(a.registered_at), a.line,
                                            int(a.submitted)) for a in batch])
                read += len(batch)
                if progress is not None:
                    progress(read + len(meta.rejected))
            await con.execute(f"CREATE TEMP TABLE grouped_rpo ON COMMIT DROP AS {grouped_sql(meta.rpo_form)}")
            refuse_strays(meta.rpo_form, [(r[0], r[1]) for r in await con.fetch(STRAYS_SQL)])
            if meta.rpo_form == RPO_ANSWERS:
                opposite = int(await con.fetchval(OPPOSITE_COUNT_SQL))
                first = [(r[0], r[1], r[2]) for r in await con.fetch(OPPOSITE_FIRST_SQL)]
                note = opposite_answers_note(opposite, first)
                if note:
                    summary.detail["opposite_answers"] = opposite
                    summary.notes.append(note)
            # Another file of this principal may have answered for the same check time: its answers stay as
            # they are, each with its own file; decisions combine them (policy/rpo.py).
            status = await con.execute(
                "INSERT INTO rpo_results (number, principal_id, checked_us, registered, registered_us, import_id)"
                " SELECT number, $1, $2, registered = 1, registered_us, $3 FROM grouped_rpo ORDER BY number",
                meta.principal_id, checked_us, import_id)
            numbers = _count(status)
            registered = int((await con.fetchrow(COUNTS_SQL))[1])
            summary.rows_read, summary.rows_stored = read, numbers
            summary.detail = {"registered": registered, "not_registered": numbers - registered, **summary.detail}
            await self._finish_import(con, summary, meta)
            return summary

        return await self._in_transaction(work)

    async def import_directory(self, numbers: Iterable[str], meta: ImportMeta, replace: bool) -> ImportSummary:
        listed_us = to_us(meta.checked_at or datetime.now().astimezone())

        async def work(con: asyncpg.Connection) -> ImportSummary:
            import_id, prior = await self._begin_import(con, meta, additive=not replace)
            if prior is not None:
                return prior
            if replace:
                refuse_older_extract(listed_us, await con.fetchval(LATEST_LISTING_SQL))
            summary = ImportSummary(import_id)
            await con.execute("CREATE TEMP TABLE staged_directory (number TEXT NOT NULL) ON COMMIT DROP")
            read = 0
            for batch in batches(numbers):
                await con.copy_records_to_table("staged_directory", records=[(n,) for n in batch])
                read += len(batch)
            await con.execute("CREATE TEMP TABLE listed_now ON COMMIT DROP AS"
                              " SELECT DISTINCT number FROM staged_directory")
            await con.execute("CREATE UNIQUE INDEX ON listed_now (number)")
            ended = 0
            if replace:
                # Ended, never deleted: a decision as of an earlier moment, and the evidence, still see
                # the period in which the number was listed.
                ended = _count(await con.execute(
                    "UPDATE listings l SET ended_us = $1, ended_by = $2 WHERE l.ended_us IS NULL"
                    " AND NOT EXISTS (SELECT 1 FROM listed_now n WHERE n.number = l.number)", listed_us, import_id))
            new = _count(await con.execute(
                "INSERT INTO listings (number, import_id, listed_us) SELECT number, $1::bigint, $2::bigint"
                " FROM listed_now ORDER BY number ON CONFLICT (number) WHERE ended_us IS NULL DO NOTHING",
                import_id, listed_us))
            listed = int(await con.fetchval("SELECT count(*) FROM listed_now"))
            summary.rows_read, summary.rows_stored = read, listed
            summary.detail = listing_detail(read, listed, new, ended, replace)
            await self._finish_import(con, summary, meta)
            return summary

        return await self._in_transaction(work)

    async def _staged_import(self, meta: ImportMeta, columns: str, rows: Iterable[tuple[Any, ...]],
                             insert: str, *, additive: bool = True) -> ImportSummary:
        """One transaction for a CSV of records: rows land in a temp table `staged` (with their order in
        `ord`), then `insert` (which reads `staged`, $1 = the import id) stores them; the rest are
        duplicates."""
        async def work(con: asyncpg.Connection) -> ImportSummary:
            import_id, prior = await self._begin_import(con, meta, additive=additive)
            if prior is not None:
                return prior
            summary = ImportSummary(import_id)
            await con.execute(f"CREATE TEMP TABLE staged (ord BIGINT NOT NULL, {columns}) ON COMMIT DROP")
            read = 0
            for batch in batches(rows):
                await con.copy_records_to_table(
                    "staged", records=[(read + i, *row) for i, row in enumerate(batch)])
                read += len(batch)
            summary.rows_stored = _count(await con.execute(insert, import_id))
            summary.detail["duplicates"] = read - summary.rows_stored
            await self._finish_import(con, summary, meta)
            return summary

        return await self._in_transaction(work)

    async def _lined_import(self, meta: ImportMeta, table: str, columns: str, rows: Iterable[tuple[Any, ...]],
                            store_rows: Callable[[asyncpg.Connection, int, ImportSummary, int], Awaitable[None]],
                            ) -> ImportSummary:
        """One transaction for a CSV of records whose rows carry their line (last): they land in the temp
        table `table` (`columns`), then `store_rows(con, import_id, summary, rows read)` stores them."""
        async def work(con: asyncpg.Connection) -> ImportSummary:
            import_id, prior = await self._begin_import(con, meta)
            if prior is not None:
                return prior
            summary = ImportSummary(import_id)
            await con.execute(f"CREATE TEMP TABLE {table} ({columns}) ON COMMIT DROP")
            read = 0
            for batch in batches(rows):
                await con.copy_records_to_table(table, records=batch)
                read += len(batch)
            await store_rows(con, import_id, summary, read)
            await self._finish_import(con, summary, meta)
            return summary

        return await self._in_transaction(work)

    async def import_consents(self, records: Iterable[ConsentRecord], meta: ImportMeta) -> ImportSummary:
        now_us = to_us(datetime.now().astimezone())

        async def store_rows(con: asyncpg.Connection, import_id: int, summary: ImportSummary, read: int) -> None:
            await con.execute("CREATE INDEX ON staged_consents (number, principal_id, given_us, evidence, line)")
            problems = consent_problems(await con.fetch(CONSENT_CONFLICTS_SQL),
                                        await con.fetch(CONSENT_FILE_CONFLICTS_SQL))
            if keep_refused(meta, problems):
                await con.execute("DELETE FROM staged_consents WHERE line = ANY($1::bigint[])",
                                  [p.line for p in problems])
            summary.rows_stored = _count(await con.execute(
                "INSERT INTO consents (number, principal_id, given_us, evidence, purpose, automated, expires_us,"
                " import_id, created_us) SELECT number, principal_id, given_us, evidence, purpose, automated,"
                " expires_us, $1, $2 FROM staged_consents ORDER BY line ON CONFLICT DO NOTHING", import_id, now_us))
            summary.detail["duplicates"] = read - summary.rows_stored - len(problems)
            summary.rows_read = read

        return await self._lined_import(
            meta, "staged_consents", "number TEXT NOT NULL, principal_id TEXT NOT NULL, given_us BIGINT NOT NULL,"
            " evidence TEXT NOT NULL, purpose TEXT, automated BOOLEAN NOT NULL, expires_us BIGINT,"
            " line BIGINT NOT NULL",
            ((r.number, r.principal_id, to_us(r.given_at), r.evidence, r.purpose, r.automated, opt_us(r.expires_at),
              r.line) for r in records), store_rows)

    async def import_contracts(self, records: Iterable[ContractRecord], meta: ImportMeta) -> ImportSummary:
        now_us = to_us(datetime.now().astimezone())

        async def store_rows(con: asyncpg.Connection, import_id: int, summary: ImportSummary, read: int) -> None:
            await con.execute("CREATE INDEX ON staged_contracts (number, principal_id, start_date, line)")
            last_id = int(await con.fetchval("SELECT coalesce(max(id), 0) FROM contracts"))
            sql, args = _numbered(CONTRACTS_NEW_SQL, {"now": now_us})
            new = _count(await con.execute(sql, *args))
            # A running contract's end is set once; the file's first end for it counts.
            await con.execute("CREATE TEMP TABLE contract_ends (id BIGINT PRIMARY KEY, number TEXT, principal_id TEXT,"
                              " end_date DATE) ON COMMIT DROP")
            ended = _count(await con.execute(CONTRACT_ENDS_SQL))
            await con.execute(
                "INSERT INTO fact_notes (fact, fact_id, number, principal_id, kind, end_date, source, import_id,"
                f" recorded_us) SELECT '{FACT_CONTRACT}', id, number, principal_id, '{NOTE_END_SET}', end_date,"
                f" '{SOURCE_IMPORT}', $1, $2 FROM contract_ends ORDER BY id", import_id, now_us)
            await con.execute("UPDATE contracts k SET end_date = e.end_date FROM contract_ends e WHERE e.id = k.id")
            # Another end for an ended contract is a correction, noted once; an earlier one counts.
            await con.execute("CREATE TEMP TABLE contract_corrections (id BIGINT, number TEXT, principal_id TEXT,"
                              " end_date DATE, earlier BOOLEAN) ON COMMIT DROP")
            sql, args = _numbered(CONTRACT_CORRECTIONS_SQL, {"last_id": last_id})
            await con.execute(sql, *args)
            await con.execute(
                "INSERT INTO fact_notes (fact, fact_id, number, principal_id, kind, end_date, source, import_id,"
                f" recorded_us) SELECT '{FACT_CONTRACT}', id, number, principal_id, '{NOTE_END_CORRECTED}',"
                f" end_date, '{SOURCE_IMPORT}', $1, $2 FROM contract_corrections ORDER BY id, end_date",
                import_id, now_us)
            corrected, noted = await con.fetchrow(
                "SELECT count(*) FILTER (WHERE earlier), count(*) FILTER (WHERE NOT earlier) FROM contract_corrections")
            summary.rows_read, summary.rows_stored = read, new
            summary.detail.update(contract_detail(read, new, ended, int(corrected), int(noted)))
            summary.notes += contract_notes(int(corrected), int(noted))

        return await self._lined_import(
            meta, "staged_contracts", "number TEXT NOT NULL, principal_id TEXT NOT NULL, start_date DATE NOT NULL,"
            " end_date DATE, line BIGINT NOT NULL",
            ((r.number, r.principal_id, r.start, r.end, r.line) for r in records), store_rows)

    async def import_optouts(self, records: Iterable[OptoutRecord], meta: ImportMeta) -> ImportSummary:
        now_us = to_us(datetime.now().astimezone())
        # One transaction for the refusals and their import record (SQLite needs two, one per file).
        return await self._staged_import(
            meta,
            "number TEXT, principal_id TEXT, at_us BIGINT, reference TEXT, created_us BIGINT",
            ((r.number, r.principal_id, to_us(r.at), r.reference or meta.file_name, now_us) for r in records),
            "INSERT INTO optouts (number, principal_id, at_us, source, reference, created_us)"
            f" SELECT number, principal_id, at_us, '{SOURCE_IMPORT}', reference, created_us FROM staged"
            " WHERE $1::bigint IS NOT NULL ORDER BY ord ON CONFLICT DO NOTHING",
            # As in SQLite: a refusal file is never skipped as a repeat; its rows are then duplicates.
            additive=False,
        )

    async def add_consent(self, record: ConsentRecord) -> tuple[int, bool]:
        if await self.get_principal(record.principal_id) is None:
            raise NotFoundError(f"principal {record.principal_id!r} does not exist")
        now_us = to_us(datetime.now().astimezone())

        async def work() -> tuple[int, bool]:
            async with self.pool.acquire() as con:
                created = await con.fetchval(
                    "INSERT INTO consents (number, principal_id, given_us, evidence, purpose, automated,"
                    " expires_us, created_us) VALUES ($1,$2,$3,$4,$5,$6,$7,$8) ON CONFLICT DO NOTHING RETURNING id",
                    record.number, record.principal_id, to_us(record.given_at), record.evidence, record.purpose,
                    record.automated, opt_us(record.expires_at), now_us)
                if created is not None:
                    return int(created), True
                found = await con.fetchrow(
                    "SELECT id, purpose, automated, expires_us FROM consents WHERE number = $1 AND principal_id = $2"
                    " AND given_us = $3 AND evidence = $4",
                    record.number, record.principal_id, to_us(record.given_at), record.evidence)
                differences = consent_differences(found[1], found[2], found[3], record)
                if differences:
                    raise RecordConflict(consent_conflict(int(found[0]), record, differences))
                return int(found[0]), False

        return await self._call(work)

    async def revoke_consents(self, number: str, principal_id: str, at: datetime) -> list[Revocation]:
        at_us, now_us = to_us(at), to_us(datetime.now().astimezone())

        async def work() -> list[Revocation]:
            async with self.pool.acquire() as con, con.transaction(isolation="read_committed"):
                # Locked: two revocations at once must not both be the first.
                rows = await con.fetch(
                    "SELECT id, revoked_us, (SELECT min(n.at_us) FROM fact_notes n WHERE n.fact = $1"
                    " AND n.fact_id = consents.id) FROM consents WHERE number = $2 AND principal_id = $3"
                    " AND given_us <= $4 AND (expires_us IS NULL OR expires_us > $4) ORDER BY id FOR UPDATE",
                    FACT_CONSENT, number, principal_id, at_us)
                first, notes, done = revocations(rows, at)
                # The first revocation: set once, never changed afterwards.
                await con.executemany("UPDATE consents SET revoked_us = $1 WHERE id = $2 AND revoked_us IS NULL",
                                      [(at_us, consent_id) for consent_id in first])
                await con.executemany(
                    "INSERT INTO fact_notes (fact, fact_id, number, principal_id, kind, at_us, source, recorded_us)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    [(FACT_CONSENT, cid, number, principal_id, kind, at_us, SOURCE_CLI, now_us) for cid, kind in notes])
            return done

        return await self._call(work)

    async def add_contract(self, number: str, principal_id: str, start: date, end: date | None) -> ContractOutcome:
        if await self.get_principal(principal_id) is None:
            raise NotFoundError(f"principal {principal_id!r} does not exist")
        now_us = to_us(datetime.now().astimezone())

        async def work() -> ContractOutcome:
            async with self.pool.acquire() as con, con.transaction(isolation="read_committed"):
                created = await con.fetchval(
                    "INSERT INTO contracts (number, principal_id, start_date, end_date, created_us)"
                    " VALUES ($1,$2,$3,$4,$5) ON CONFLICT DO NOTHING RETURNING id",
                    number, principal_id, start, end, now_us)
                if created is not None:
                    return ContractOutcome(int(created), CONTRACT_RECORDED, None, end)
                contract_id, stored = await con.fetchrow(
                    "SELECT id, end_date FROM contracts WHERE number = $1 AND principal_id = $2 AND start_date = $3"
                    " FOR UPDATE", number, principal_id, start)
                noted = [row[0] for row in await con.fetch(
                    "SELECT end_date FROM fact_notes WHERE fact = $1 AND fact_id = $2", FACT_CONTRACT, contract_id)]
                what, note, effective = contract_change(stored, noted, end)
                if note == NOTE_END_SET:
                    await con.execute("UPDATE contracts SET end_date = $1 WHERE id = $2 AND end_date IS NULL",
                                      end, contract_id)
                if note is not None:
                    await con.execute(
                        "INSERT INTO fact_notes (fact, fact_id, number, principal_id, kind, end_date, source,"
                        " recorded_us) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                        FACT_CONTRACT, contract_id, number, principal_id, note, end, SOURCE_CLI, now_us)
                return ContractOutcome(int(contract_id), what, stored, effective)

        return await self._call(work)

    async def add_optout(self, number: str, principal_id: str | None, at: datetime, source: str,
                         reference: str | None) -> int:
        if principal_id is not None and await self.get_principal(principal_id) is None:
            raise NotFoundError(f"principal {principal_id!r} does not exist")

        async def work() -> int:
            async with self.pool.acquire() as con:
                created = await con.fetchval(
                    "INSERT INTO optouts (number, principal_id, at_us, source, reference, created_us)"
                    " VALUES ($1,$2,$3,$4,$5,$6) ON CONFLICT DO NOTHING RETURNING id",
                    number, principal_id, to_us(at), source, reference, to_us(datetime.now().astimezone()))
                if created is not None:
                    return int(created)
                return int(await con.fetchval(
                    "SELECT id FROM optouts WHERE number = $1 AND coalesce(principal_id, '') = $2 AND at_us = $3"
                    " AND source = $4", number, principal_id or "", to_us(at), source))

        return await self._call(work)

    # -- evidence and due lists -----------------------------------------------------------------------

    async def evidence(self, number: str, principal_id: str | None) -> list[EvidenceItem]:
        async def work() -> list[EvidenceItem]:
            # One snapshot for the whole answer.
            async with self.pool.acquire() as con, con.transaction(isolation="repeatable_read", readonly=True):
                async def fetch(sql: str, params: dict[str, Any]) -> list[asyncpg.Record]:
                    return await con.fetch(*_named(sql, params))

                return await read_evidence(fetch, _LISTS, number, principal_id)

        return await self._call(work)

    async def due_numbers(self, candidates: Iterable[str] | None, principal_id: str, campaign_id: str | None,
                          stale_before: datetime) -> AsyncIterator[str]:
        try:
            async with self.pool.acquire() as con, con.transaction(isolation="repeatable_read"):
                if candidates is not None:
                    await con.execute("CREATE TEMP TABLE due_candidates (number TEXT PRIMARY KEY) ON COMMIT DROP")
                    await con.execute("CREATE TEMP TABLE due_staged (number TEXT) ON COMMIT DROP")
                    for batch in batches(candidates):
                        await con.copy_records_to_table("due_staged", records=[(n,) for n in batch])
                    await con.execute("INSERT INTO due_candidates SELECT DISTINCT number FROM due_staged"
                                      " WHERE number IS NOT NULL")
                source = due_source(candidates is not None, campaign_id is not None, "audit_log")
                sql, args = _numbered(
                    f"SELECT k.number FROM ({source}) k WHERE {DUE_STALE} ORDER BY k.number COLLATE \"C\"",
                    {"principal": principal_id, "campaign": campaign_id, "stale": to_us(stale_before)})
                async for record in con.cursor(sql, *args, prefetch=BATCH):
                    yield record[0]
        except _DB_ERRORS as exc:
            raise _pg_error(exc, self.where) from exc

    async def principal_ids(self) -> list[str]:
        rows = await self._call(lambda: self.pool.fetch("SELECT id FROM principals ORDER BY id COLLATE \"C\""))
        return [row[0] for row in rows]

    # -- what is stored ----------------------------------------------------------------------------

    async def _stream(self, query: Query, convert: Callable[[Any], T]) -> AsyncIterator[T]:
        """The rows of a list query, converted, through a server-side cursor in one read-only snapshot."""
        sql, args = _numbered(*query)
        try:
            async with self.pool.acquire() as con, con.transaction(isolation="repeatable_read", readonly=True):
                async for record in con.cursor(sql, *args, prefetch=BATCH):
                    yield convert(record)
        except _DB_ERRORS as exc:
            raise _pg_error(exc, self.where) from exc

    # -- the console's users and the record of its changes ----------------------------------------------

    async def add_user(self, name: str, role: str, password_hash: str, at_us: int, *,
                       change: ConsoleChange | None = None) -> None:
        values = new_user_checked(name, role, password_hash, change)

        async def work() -> None:
            async with self.pool.acquire() as con, con.transaction():
                # Any unique index refuses it: the name itself, or the same name in another case.
                added = await con.fetchval(
                    "INSERT INTO console_users (name, role, password_hash, disabled, created_us, changed_us)"
                    " VALUES ($1, $2, $3, FALSE, $4, $4) ON CONFLICT DO NOTHING RETURNING name",
                    name, role, password_hash, at_us)
                if added is None:
                    raise RecordConflict(user_taken(name, await con.fetchval(*_named(USER_FOLDED_SQL,
                                                                                      {"name": name}))))
                if values is not None:
                    await con.execute(_INSERT_CHANGE, *values)

        await self._call(work)

    async def get_user(self, name: str) -> WebUser | None:
        row = await self._call(lambda: self.pool.fetchrow(*_named(USER_SQL, {"name": name})))
        return web_user(row) if row is not None else None

    async def update_user(self, name: str, *, at_us: int, role: str | None = None, password_hash: str | None = None,
                          disabled: bool | None = None, change: ConsoleChange | None = None) -> None:
        sql, params = user_update_query(name, at_us, role, password_hash, disabled)
        values = change_values(change) if change is not None else None

        async def work() -> None:
            async with self.pool.acquire() as con, con.transaction():
                if _count(await con.execute(*_named(sql, params))) == 0:
                    raise NotFoundError(f"user {name!r} does not exist")
                if values is not None:
                    await con.execute(_INSERT_CHANGE, *values)

        await self._call(work)

    async def record_change(self, change: ConsoleChange) -> int:
        values = change_values(change)
        return int(await self._call(lambda: self.pool.fetchval(f"{_INSERT_CHANGE} RETURNING id", *values)))

    # -- the decision log --------------------------------------------------------------------------

    def audit_rows(self, start_us: int | None = None, end_us: int | None = None) -> AsyncIterator[AuditRow]:
        return self._stream(audit_rows_query(start_us, end_us), audit_row)

    # -- the web console (db/console_queries.py) ------------------------------------------------------

    async def _console_fetch(self, query: Query, *, audit: bool) -> list[Sequence[Any]]:
        sql, args = _numbered(*query)
        return list(await self._call(lambda: self.pool.fetch(sql, *args)))

    async def _console_stream(self, query: Query, convert: Callable[[Any], T]) -> AsyncIterator[T]:
        # A smaller first fetch than the lists': the console's export sends its first bytes at once.
        sql, args = _numbered(*query)
        try:
            async with self.pool.acquire() as con, con.transaction(isolation="repeatable_read", readonly=True):
                async for record in con.cursor(sql, *args, prefetch=CONSOLE_PREFETCH):
                    yield convert(record)
        except _DB_ERRORS as exc:
            raise _pg_error(exc, self.where) from exc

    async def _freshness_row(self, query: Query) -> Sequence[Any]:
        sql, args = _numbered(*query)
        row = await self._call(lambda: self.pool.fetchrow(sql, *args))
        if row is None:
            raise StoreError(f"{self.where}: the answers' freshness query returned no row")
        return row

    # -- bypass checks --------------------------------------------------------------------------------

    def allowed_between(self, start_us: int, end_us: int) -> AsyncIterator[Allowed]:
        return self._stream(allowed_between_query(start_us, end_us), allowed)

    async def allowed_after(self, after_seq: int, since_us: int, limit: int) -> list[tuple[int, Allowed]]:
        sql, args = _numbered(*allowed_after_query(after_seq, since_us, limit))
        try:
            rows = await self.pool.fetch(sql, *args)
        except _DB_ERRORS as exc:
            raise _pg_error(exc, self.where) from exc
        return [(row[0], allowed(row)) for row in rows]

    async def add_finding(self, finding: StoredFinding) -> int:
        sql = (f"INSERT INTO bypass_findings ({', '.join(FINDING_COLUMNS)})"
               f" VALUES ({', '.join(f'${i}' for i in range(1, len(FINDING_COLUMNS) + 1))}) RETURNING id")
        try:
            return int(await self.pool.fetchval(sql, *finding_values(finding, time_ns() // 1000)))
        except _DB_ERRORS as exc:
            raise _pg_error(exc, self.where) from exc

    async def close_finding(self, finding_id: int, until_us: int, detail: str) -> None:
        try:
            await self.pool.execute("UPDATE bypass_findings SET until_us = $1, detail = $2 WHERE id = $3",
                                    until_us, detail, finding_id)
        except _DB_ERRORS as exc:
            raise _pg_error(exc, self.where) from exc

    def list_findings(self, *, since_us: int | None = None, kind: str | None = None,
                      limit: int | None = None) -> AsyncIterator[StoredFinding]:
        return self._stream(findings_query(since_us, kind, limit), stored_finding)
