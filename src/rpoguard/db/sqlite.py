"""SQLite implementation of the Store, on aiosqlite, in WAL mode (one writer, many readers).

Writers (imports, the decision log) take the database lock with BEGIN IMMEDIATE so that two processes
never interleave, and an asyncio lock so that two coroutines on this connection never interleave inside
one transaction. Every import runs in one transaction: readers keep seeing the previous data until the
commit, and a crash leaves the previous data in place (WAL rollback).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
from collections.abc import AsyncIterator, Iterable, Iterator
from datetime import date, datetime
from importlib import resources
from itertools import islice
from pathlib import Path
from typing import Any

import aiosqlite

from rpoguard.audit import GENESIS_HASH, AuditEntry, AuditRow, chain_hash
from rpoguard.config import secure_path
from rpoguard.db.store import (
    AttemptCap,
    AttemptCapReached,
    ConsentRecord,
    ImportMeta,
    ImportSummary,
    NotFoundError,
    PrincipalInfo,
    RpoAnswer,
    Store,
    StoreError,
)
from rpoguard.policy.model import (
    CampaignFacts,
    ConsentFacts,
    ContractFacts,
    Facts,
    ListingFacts,
    OptoutFacts,
    RpoFacts,
)
from rpoguard.timeutil import from_us, to_us

log = logging.getLogger(__name__)

BATCH = 10_000
DAY_US = 86_400_000_000


def _migrations() -> list[tuple[int, str]]:
    folder = resources.files("rpoguard.db") / "migrations"
    found = []
    for item in folder.iterdir():
        name = item.name
        if name.endswith(".sql"):
            found.append((int(name.split("_", 1)[0]), item.read_text(encoding="utf-8")))
    return sorted(found)


# One statement returns every fact of one decision: campaign, RPO answer, listing, consents, contracts,
# refusals and the ALLOW count in the cap window. Each part is a primary-key or index probe.
FACTS_SQL = """
WITH c AS (SELECT id, principal_id, automated, max_attempts, per_days FROM campaigns WHERE id = :campaign)
SELECT
  (SELECT json_array(c.id, c.principal_id, c.automated, c.max_attempts, c.per_days,
          (SELECT json_group_array(p.number) FROM principal_caller_ids p WHERE p.principal_id = c.principal_id))
     FROM c),
  (SELECT json_array(result_id, checked_us, registered, registered_us, import_id, bound_us)
     FROM rpo_current WHERE number = :number),
  (SELECT json_array(import_id, listed_us) FROM directory WHERE number = :number),
  (SELECT json_group_array(json_array(id, given_us, evidence, automated, expires_us, revoked_us, purpose))
     FROM consents WHERE number = :number AND principal_id = (SELECT principal_id FROM c)),
  (SELECT json_group_array(json_array(id, start_date, end_date))
     FROM contracts WHERE number = :number AND principal_id = (SELECT principal_id FROM c)),
  (SELECT json_group_array(json_array(id, principal_id, at_us))
     FROM optouts WHERE number = :number
      AND (principal_id IS NULL OR principal_id = (SELECT principal_id FROM c))),
  (SELECT count(*) FROM audit_log
    WHERE number = :number AND principal_id = (SELECT principal_id FROM c) AND decision = 'allow'
      AND ts_us > :now_us - (SELECT per_days FROM c) * 86400000000 AND ts_us <= :now_us)
"""

# Rebuilds the per-number summary from the full answer history of every number the import touched, so
# an older file imported late still gives the right latest answer and registration bound.
#   R: latest "registered" answer; N: latest "not registered" answer before R; S: first answer of the
#   unbroken registered run that ends at R. The bound is R's registered_at when it carries one, else S.
RECOMPUTE_SQL = """
WITH r AS (
  SELECT t.number,
         (SELECT max(checked_us) FROM rpo_results WHERE number = t.number AND registered = 1) AS rr
    FROM touched t),
n AS (
  SELECT r.number, r.rr,
         (SELECT max(checked_us) FROM rpo_results
           WHERE number = r.number AND registered = 0 AND checked_us < r.rr) AS nn
    FROM r),
s AS (
  SELECT n.number,
         (SELECT min(checked_us) FROM rpo_results
           WHERE number = n.number AND registered = 1 AND checked_us > coalesce(n.nn, -9223372036854775807))
           AS ss,
         (SELECT registered_us FROM rpo_results WHERE number = n.number AND checked_us = n.rr) AS rreg
    FROM n)
INSERT OR REPLACE INTO rpo_current
  (number, result_id, checked_us, registered, registered_us, import_id, run_start_us, bound_us)
SELECT s.number, l.id, l.checked_us, l.registered, l.registered_us, l.import_id,
       CASE WHEN l.registered = 1 THEN s.ss END,
       coalesce(s.rreg, s.ss)
  FROM s JOIN rpo_results l
    ON l.id = (SELECT id FROM rpo_results WHERE number = s.number ORDER BY checked_us DESC, id DESC LIMIT 1)
"""


def _batches(items: Iterable[Any], size: int = BATCH) -> Iterator[list[Any]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def _opt_us(value: datetime | None) -> int | None:
    return to_us(value) if value is not None else None


def _opt_dt(value: int | None) -> datetime | None:
    return from_us(value) if value is not None else None


class SqliteStore(Store):
    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 5_000) -> None:
        self.path = str(path)
        self.busy_timeout_ms = busy_timeout_ms
        self._db: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()

    # -- lifecycle ---------------------------------------------------------------------------------

    async def open(self) -> None:
        # Start-up only, never on the per-call path.
        is_new = self.path != ":memory:" and not Path(self.path).exists()  # noqa: ASYNC240
        folder = Path(self.path).parent
        if self.path != ":memory:" and not folder.is_dir():
            # Checked here because a failed aiosqlite.connect leaves its worker thread to die noisily.
            raise StoreError(f"cannot open database {self.path}: the folder {folder} does not exist")
        try:
            # A plain probe first: a failed aiosqlite.connect leaves its worker thread to stop on a loop
            # that may be closed by then (tracebacks after the clean error). Start-up only.
            probe = sqlite3.connect(self.path)
            try:
                probe.execute("PRAGMA schema_version")
            finally:
                probe.close()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {self.path}: {exc}") from exc
        try:
            self._db = await aiosqlite.connect(self.path, isolation_level=None)
            await self._db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            await self._db.execute("PRAGMA journal_mode = WAL")
            # FULL: a decision is answered only once its audit row survives a power cut (issue 5 groups
            # the writes so this costs one fsync per group, not per call).
            await self._db.execute("PRAGMA synchronous = FULL")
            await self._db.execute("PRAGMA foreign_keys = ON")
            if is_new:
                secure_path(Path(self.path))
            await self._migrate()
        except sqlite3.Error as exc:
            await self.close()
            raise StoreError(f"cannot open database {self.path}: {exc}") from exc

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await db.close()

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreError("database is not open")
        return self._db

    async def _migrate(self) -> None:
        async with self._write_lock:
            current = (await self._fetchone("PRAGMA user_version"))[0]
            for version, sql in _migrations():
                if version <= current:
                    continue
                log.info("migrating %s to schema version %d", self.path, version)
                try:
                    await self.db.executescript(f"BEGIN IMMEDIATE;\n{sql}\nPRAGMA user_version = {version};\nCOMMIT;")
                except sqlite3.Error:
                    await self._rollback()
                    raise

    async def schema_version(self) -> int:
        return int((await self._fetchone("PRAGMA user_version"))[0])

    # -- helpers -----------------------------------------------------------------------------------

    async def _fetchone(self, sql: str, params: Any = ()) -> Any:
        rows = await self.db.execute_fetchall(sql, params)
        return next(iter(rows), None)

    async def _rollback(self) -> None:
        # An error may come after SQLite already ended the transaction: then there is nothing to undo.
        with contextlib.suppress(sqlite3.Error):
            await self.db.execute("ROLLBACK")

    async def _write(self, sql: str, params: Any = ()) -> aiosqlite.Cursor:
        async with self._write_lock:
            try:
                return await self.db.execute(sql, params)
            except sqlite3.OperationalError as exc:
                raise _store_error(exc, self.path) from exc

    # -- the per-call path -------------------------------------------------------------------------

    async def facts(self, number: str | None, line_type: str | None, campaign_id: str | None,
                    at: datetime) -> Facts:
        params = {"campaign": campaign_id, "number": number, "now_us": to_us(at)}
        try:
            row = await self._fetchone(FACTS_SQL, params)
        except sqlite3.Error as exc:
            raise _store_error(exc, self.path) from exc
        return _facts_from_row(number, line_type, row)

    async def append_decision(self, entry: AuditEntry, cap: AttemptCap | None = None) -> AuditRow:
        async with self._write_lock:
            try:
                await self.db.execute("BEGIN IMMEDIATE")
                if cap is not None:
                    allows = (await self._fetchone(
                        "SELECT count(*) FROM audit_log WHERE number = ? AND principal_id = ? AND decision = 'allow'"
                        " AND ts_us > ? AND ts_us <= ?",
                        (cap.number, cap.principal_id, cap.since_us, entry.ts_us),
                    ))[0]
                    if allows >= cap.max_allows:
                        await self.db.execute("ROLLBACK")
                        raise AttemptCapReached(allows)
                last = await self._fetchone("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
                seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS_HASH)
                digest = chain_hash(seq, entry, prev)
                await self.db.execute(
                    "INSERT INTO audit_log (seq, decision_id, ts_us, number, raw_number, campaign_id, principal_id,"
                    " caller_id, decision, reasons, basis, evidence, source, uniqueid, channel, prev_hash, hash)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (seq, entry.decision_id, entry.ts_us, entry.number, entry.raw_number, entry.campaign_id,
                     entry.principal_id, entry.caller_id, entry.decision, entry.reasons, entry.basis,
                     entry.evidence, entry.source, entry.uniqueid, entry.channel, prev, digest),
                )
                await self.db.execute("COMMIT")
            except sqlite3.Error as exc:
                await self._rollback()
                raise _store_error(exc, self.path) from exc
        return AuditRow(seq, entry, prev, digest)

    # -- reference data ----------------------------------------------------------------------------

    async def add_principal(self, principal_id: str, name: str, caller_ids: Iterable[str]) -> bool:
        now = to_us(datetime.now().astimezone())
        async with self._write_lock:
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
        row = await self._fetchone("SELECT id, name FROM principals WHERE id = ?", (principal_id,))
        if row is None:
            return None
        numbers = await self.db.execute_fetchall(
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
                " WHERE kind = ? AND sha256 = ? AND checked_us IS ?"
                # A replacing import since then undid it: then it is no repeat.
                " AND id > (SELECT coalesce(max(id), 0) FROM imports"
                "           WHERE kind = ? AND json_extract(detail, '$.removed') IS NOT NULL)",
                (meta.kind, meta.sha256, _opt_us(meta.checked_at), meta.kind),
            )
            if prior is not None:
                await self.db.execute("ROLLBACK")
                detail = json.loads(prior[4]) if prior[4] else {}
                return None, ImportSummary(prior[0], prior[1], prior[2], prior[3], detail, already_imported=True)
        cursor = await self.db.execute(
            "INSERT INTO imports (kind, file_name, file_size, sha256, checked_us, imported_us)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (meta.kind, meta.file_name, meta.file_size, meta.sha256, _opt_us(meta.checked_at),
             to_us(datetime.now().astimezone())),
        )
        return cursor.lastrowid, None

    async def _finish_import(self, summary: ImportSummary, meta: ImportMeta) -> None:
        summary.rows_rejected = len(meta.rejected)
        summary.rows_read = summary.rows_stored + summary.detail.get("duplicates", 0) + summary.rows_rejected
        await self.db.execute(
            "UPDATE imports SET rows_read = ?, rows_stored = ?, rows_rejected = ?, detail = ? WHERE id = ?",
            (summary.rows_read, summary.rows_stored, summary.rows_rejected, json.dumps(summary.detail),
             summary.import_id),
        )
        await self.db.execute("COMMIT")

    async def import_rpo(self, answers: Iterable[RpoAnswer], meta: ImportMeta) -> ImportSummary:
        if meta.checked_at is None:
            raise ValueError("an RPO import needs the check date")
        checked_us = to_us(meta.checked_at)
        async with self._write_lock:
            try:
                import_id, prior = await self._begin_import(meta)
                if prior is not None:
                    return prior
                summary = ImportSummary(import_id)
                await self.db.execute("CREATE TEMP TABLE IF NOT EXISTS touched (number TEXT PRIMARY KEY) WITHOUT ROWID")
                await self.db.execute("DELETE FROM touched")
                registered = 0
                for batch in _batches(answers):
                    rows = [(a.number, checked_us, int(a.registered), _opt_us(a.registered_at), import_id)
                            for a in batch]
                    registered += sum(1 for a in batch if a.registered)
                    await self.db.executemany(
                        "INSERT INTO rpo_results (number, checked_us, registered, registered_us, import_id)"
                        " VALUES (?, ?, ?, ?, ?) ON CONFLICT(number, checked_us) DO UPDATE SET"
                        # Two answers for one number at one check time disagree: "registered" wins (fail
                        # closed), with the earlier registration date if both carry one.
                        " registered = max(registered, excluded.registered),"
                        " registered_us = CASE WHEN registered_us IS NULL THEN excluded.registered_us"
                        "   WHEN excluded.registered_us IS NULL THEN registered_us"
                        "   ELSE min(registered_us, excluded.registered_us) END,"
                        " import_id = excluded.import_id",
                        rows,
                    )
                    await self.db.executemany("INSERT OR IGNORE INTO touched (number) VALUES (?)",
                                              [(a.number,) for a in batch])
                    summary.rows_stored += len(batch)
                await self.db.execute(RECOMPUTE_SQL)
                summary.detail = {"registered": registered, "not_registered": summary.rows_stored - registered}
                await self._finish_import(summary, meta)
            except sqlite3.Error as exc:
                await self._rollback()
                raise _store_error(exc, self.path) from exc
            except BaseException:
                await self._rollback()
                raise
        return summary

    async def import_directory(self, numbers: Iterable[str], meta: ImportMeta, replace: bool) -> ImportSummary:
        now_us = to_us(datetime.now().astimezone())
        async with self._write_lock:
            try:
                import_id, prior = await self._begin_import(meta, additive=not replace)
                if prior is not None:
                    return prior
                summary = ImportSummary(import_id)
                if replace:
                    cursor = await self.db.execute("DELETE FROM directory")
                    summary.detail["removed"] = max(cursor.rowcount, 0)
                for batch in _batches(numbers):
                    await self.db.executemany(
                        "INSERT INTO directory (number, import_id, listed_us) VALUES (?, ?, ?)"
                        " ON CONFLICT(number) DO UPDATE SET import_id = excluded.import_id",
                        [(n, import_id, now_us) for n in batch],
                    )
                    summary.rows_stored += len(batch)
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
        async with self._write_lock:
            try:
                import_id, prior = await self._begin_import(meta)
                if prior is not None:
                    return prior
                summary = ImportSummary(import_id)
                read = 0
                for batch in _batches(records):
                    before = self.db.total_changes
                    await self.db.executemany(
                        "INSERT OR IGNORE INTO consents (number, principal_id, given_us, evidence, purpose,"
                        " automated, expires_us, import_id, created_us) VALUES (?,?,?,?,?,?,?,?,?)",
                        [_consent_params(r, import_id, now_us) for r in batch],
                    )
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
        cursor = await self._write(
            "INSERT INTO optouts (number, principal_id, at_us, source, reference, created_us) VALUES (?,?,?,?,?,?)",
            (number, principal_id, to_us(at), source, reference, to_us(datetime.now().astimezone())),
        )
        return int(cursor.lastrowid or 0)

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
            async with self.db.execute(sql, params) as cursor:
                async for r in cursor:
                    entry = AuditEntry(r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11],
                                       r[12], r[13], r[14])
                    yield AuditRow(r[0], entry, r[15], r[16])
        except sqlite3.Error as exc:
            raise _store_error(exc, self.path) from exc


def _consent_params(record: ConsentRecord, import_id: int | None, now_us: int) -> tuple[Any, ...]:
    return (record.number, record.principal_id, to_us(record.given_at), record.evidence, record.purpose,
            int(record.automated), _opt_us(record.expires_at), import_id, now_us)


def _facts_from_row(number: str | None, line_type: str | None, row: Any) -> Facts:
    campaign_j, rpo_j, listing_j, consents_j, contracts_j, optouts_j, allows = row
    campaign = None
    if campaign_j:
        cid, principal, automated, max_attempts, per_days, caller_ids = json.loads(campaign_j)
        campaign = CampaignFacts(cid, principal, bool(automated), max_attempts, per_days,
                                 frozenset(caller_ids or ()))
    rpo = None
    if rpo_j:
        result_id, checked_us, registered, registered_us, import_id, bound_us = json.loads(rpo_j)
        rpo = RpoFacts(result_id, from_us(checked_us), bool(registered), _opt_dt(registered_us), import_id,
                       _opt_dt(bound_us))
    listing = None
    if listing_j:
        import_id, listed_us = json.loads(listing_j)
        listing = ListingFacts(import_id, _opt_dt(listed_us))
    consents = tuple(
        ConsentFacts(cid, from_us(given), evidence, bool(auto), _opt_dt(expires), _opt_dt(revoked), purpose)
        for cid, given, evidence, auto, expires, revoked, purpose in json.loads(consents_j or "[]")
    )
    contracts = tuple(
        ContractFacts(kid, date.fromisoformat(start), date.fromisoformat(end) if end else None)
        for kid, start, end in json.loads(contracts_j or "[]")
    )
    optouts = tuple(OptoutFacts(oid, principal, from_us(at)) for oid, principal, at in json.loads(optouts_j or "[]"))
    return Facts(number, line_type, campaign, rpo, listing, consents, contracts, optouts, int(allows or 0))


def _store_error(exc: sqlite3.Error, path: str) -> StoreError:
    text = str(exc)
    if "locked" in text or "busy" in text:
        return StoreError(f"database {path} is locked by another writer; try again when it finishes ({text})")
    if "malformed" in text or "not a database" in text:
        return StoreError(f"database {path} is corrupt or not an rpoguard database ({text})")
    if "full" in text:
        return StoreError(f"database {path}: the disk is full ({text})")
    return StoreError(f"database {path}: {text}")
