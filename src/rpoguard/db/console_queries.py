"""What the web console reads, the same SQL on both backends (:name parameters; PostgreSQL's store rewrites
them). Each backend says only how rows are fetched and streamed.

Every page's query is bounded by an index the per-call path already keeps (the decision log gets no index
for the console: each one costs every call's write): pages walk audit_by_time or audit_by_number in
(time, seq) order with a keyset, so page 100,000 costs what page 1 does. What cannot be bounded (how fresh
every number's answer is) is computed in the background by the console (web/rollup.py).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeVar

from rpoguard.audit import AuditRow
from rpoguard.db.rows import AUDIT_COLUMNS, Query, audit_row
from rpoguard.db.store import DecisionFilter, DecisionPage, Freshness, ImportFile, StoredImport

T = TypeVar("T")

DAY_US = 86_400_000_000
# The keyset of a page: after the row (ts, seq) in newest-first order. Written as a range on ts_us first so
# that both engines bound the index walk with it.
_BEFORE = "ts_us <= :before_ts AND (ts_us < :before_ts OR seq < :before_seq)"


def _like_escape(text: str) -> str:
    return text.replace("!", "!!").replace("%", "!%").replace("_", "!_")


def decision_where(flt: DecisionFilter) -> tuple[list[str], dict[str, Any]]:
    """The filter's SQL conditions and parameters (only the fields that are set)."""
    clauses: list[tuple[str, str, object]] = [
        ("ts_us >= :start", "start", flt.start_us),
        ("ts_us < :end", "end", flt.end_us),
        ("number = :number", "number", flt.number),
        ("campaign_id = :campaign", "campaign", flt.campaign_id),
        ("principal_id = :principal", "principal", flt.principal_id),
        ("decision = :decision", "decision", flt.decision),
        ("source = :source", "source", flt.source),
        # Reasons are stored comma-separated: one whole code among them, never a part of another.
        ("(',' || reasons || ',') LIKE :reason ESCAPE '!'", "reason",
         None if flt.reason is None else f"%,{_like_escape(flt.reason)},%"),
    ]
    return ([sql for sql, _, value in clauses if value is not None],
            {name: value for _, name, value in clauses if value is not None})


def decision_page_query(flt: DecisionFilter, before: tuple[int, int] | None, limit: int) -> Query:
    where, params = decision_where(flt)
    if before is not None:
        where.append(_BEFORE)
        params["before_ts"], params["before_seq"] = before
    params["limit"] = limit
    return (f"SELECT {AUDIT_COLUMNS} FROM audit_log" + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY ts_us DESC, seq DESC LIMIT :limit", params)


def _split(flt: DecisionFilter) -> tuple[DecisionFilter, DecisionFilter]:
    """The filter's part an index walks (time range, number) and the part each row is checked against."""
    walked = DecisionFilter(start_us=flt.start_us, end_us=flt.end_us, number=flt.number)
    checked = DecisionFilter(campaign_id=flt.campaign_id, principal_id=flt.principal_id, decision=flt.decision,
                             reason=flt.reason, source=flt.source)
    return walked, checked


def decision_search_queries(flt: DecisionFilter, before: tuple[int, int] | None, limit: int,
                            scan_limit: int) -> tuple[Query, Query]:
    """The page (at most `limit` matches among the first `scan_limit` rows the index walk meets) and the
    last row that walk meets (where a page cut short by the budget goes on from)."""
    walked, checked = _split(flt)
    where, params = decision_where(walked)
    if before is not None:
        where.append(_BEFORE)
        params["before_ts"], params["before_seq"] = before
    params["scan"] = scan_limit
    scan = (f"SELECT {AUDIT_COLUMNS} FROM audit_log" + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY ts_us DESC, seq DESC LIMIT :scan")
    check, check_params = decision_where(checked)
    page = (f"SELECT * FROM ({scan}) walked" + (" WHERE " + " AND ".join(check) if check else "")
            + " ORDER BY ts_us DESC, seq DESC LIMIT :limit")
    last = ("SELECT seq FROM audit_log" + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY ts_us DESC, seq DESC LIMIT 1 OFFSET :last")
    last_params = {k: v for k, v in params.items() if k != "scan"}
    last_params["last"] = scan_limit - 1
    return (page, {**params, **check_params, "limit": limit}), (last, last_params)


def decision_rows_query(flt: DecisionFilter) -> Query:
    where, params = decision_where(flt)
    return (f"SELECT {AUDIT_COLUMNS} FROM audit_log" + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY ts_us, seq", params)


ROW_TIME_SQL = "SELECT ts_us FROM audit_log WHERE seq = :seq"
TALLY_SQL = "SELECT seq, ts_us, decision, reasons FROM audit_log WHERE seq > :after ORDER BY seq LIMIT :limit"
FIRST_SEQ_SQL = "SELECT seq FROM audit_log WHERE ts_us >= :ts ORDER BY ts_us, seq LIMIT 1"


def import_history_query(limit: int, before_id: int | None, kind: str | None) -> Query:
    clauses = [("id < :before", "before", before_id), ("kind = :kind", "kind", kind)]
    where = [sql for sql, _, value in clauses if value is not None]
    params: dict[str, Any] = {name: value for _, name, value in clauses if value is not None}
    params["limit"] = limit
    return ("SELECT id, kind, imported_us, checked_us, principal_id, rows_read, rows_stored, rows_rejected, detail"
            " FROM imports" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id DESC LIMIT :limit",
            params)


def import_files_query(ids: Sequence[int]) -> Query:
    marks = ", ".join(f":i{n}" for n in range(len(ids)))
    return (f"SELECT import_id, role, file_name, file_size, sha256 FROM import_files WHERE import_id IN ({marks})"
            " ORDER BY import_id, position", {f"i{n}": value for n, value in enumerate(ids)})


def _detail(value: object) -> dict[str, object]:
    # SQLite keeps JSON as text; asyncpg returns jsonb as text too (no codec registered).
    if value is None:
        return {}
    loaded = json.loads(value) if isinstance(value, str | bytes) else value
    return dict(loaded) if isinstance(loaded, dict) else {}


def stored_imports(rows: Sequence[Sequence[Any]], files: Sequence[Sequence[Any]]) -> list[StoredImport]:
    by_import: dict[int, list[ImportFile]] = {}
    for import_id, role, name, size, sha256 in files:
        by_import.setdefault(import_id, []).append(ImportFile(role, name, size, sha256))
    return [StoredImport(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], _detail(r[8]), tuple(by_import.get(r[0], ())))
            for r in rows]


def freshness_query(audit_log: str, principal_id: str, now_us: int, validity_us: int,
                    horizons_days: tuple[int, ...]) -> Query:
    """One row: numbers, none, expired, then one count per horizon. The numbers are `registry due`'s (every
    number the store knows for the principal: rows.due_source); an answer checked at c is valid until
    c + validity, as `registry due` reads it. One grouping pass over every source (the principal's answers
    carrying their check time, the others none) instead of a probe per number: minutes less on 30 M answers."""
    expiring = "".join(
        f", sum(CASE WHEN latest + :validity > :now AND latest + :validity <= :h{n} THEN 1 ELSE 0 END)"
        for n in range(len(horizons_days)))
    params: dict[str, Any] = {"principal": principal_id, "now": now_us, "validity": validity_us}
    params.update({f"h{n}": now_us + days * DAY_US for n, days in enumerate(horizons_days)})
    known = ("SELECT number, checked_us AS checked FROM rpo_results WHERE principal_id = :principal"
             " UNION ALL SELECT number, NULL FROM rpo_results WHERE principal_id IS NULL"
             " UNION ALL SELECT number, NULL FROM listings"
             " UNION ALL SELECT number, NULL FROM consents WHERE principal_id = :principal"
             " UNION ALL SELECT number, NULL FROM contracts WHERE principal_id = :principal"
             f" UNION ALL SELECT number, NULL FROM {audit_log} WHERE principal_id = :principal"
             " AND number IS NOT NULL")
    return ("SELECT count(*), sum(CASE WHEN latest IS NULL THEN 1 ELSE 0 END),"
            " sum(CASE WHEN latest + :validity <= :now THEN 1 ELSE 0 END)" + expiring +
            f" FROM (SELECT number, max(checked) AS latest FROM ({known}) k GROUP BY number) t", params)


def freshness(principal_id: str, row: Sequence[Any], horizons_days: tuple[int, ...], now_us: int) -> Freshness:
    counts = [int(value or 0) for value in row]
    return Freshness(principal_id, counts[0], dict(zip(horizons_days, counts[3:], strict=True)), counts[2], now_us,
                     counts[1])


class ConsoleQueries(ABC):
    """The console's Store methods on top of three backend primitives."""

    @abstractmethod
    async def _console_fetch(self, query: Query, *, audit: bool) -> list[Sequence[Any]]:
        """Every row of a short query: on the decision log (`audit`) or on the data."""

    @abstractmethod
    def _console_stream(self, query: Query, convert: Callable[[Any], T]) -> AsyncIterator[T]:
        """The rows of a query on the decision log, converted, in chunks (never all in memory)."""

    @abstractmethod
    async def _freshness_row(self, query: Query) -> Sequence[Any]:
        """The one row of a long query over the data and the log, off the connections the pages use."""

    list_dialect: Any  # rows.ListDialect: how the reading connection names the decision log

    async def decision_page(self, flt: DecisionFilter, *, before_seq: int | None, limit: int) -> list[AuditRow]:
        before: tuple[int, int] | None = None
        if before_seq is not None:
            found = await self._console_fetch((ROW_TIME_SQL, {"seq": before_seq}), audit=True)
            if not found:
                return []  # no such row: nothing comes after it
            before = (int(found[0][0]), before_seq)
        rows = await self._console_fetch(decision_page_query(flt, before, limit), audit=True)
        return [audit_row(row) for row in rows]

    async def decision_search(self, flt: DecisionFilter, *, before_seq: int | None, limit: int,
                              scan_limit: int) -> DecisionPage:
        if limit < 1 or scan_limit < 1:
            raise ValueError(f"decision_search: limit ({limit}) and scan_limit ({scan_limit}) must be at least 1")
        before: tuple[int, int] | None = None
        if before_seq is not None:
            found = await self._console_fetch((ROW_TIME_SQL, {"seq": before_seq}), audit=True)
            if not found:
                return DecisionPage([], None)
            before = (int(found[0][0]), before_seq)
        page_query, last_query = decision_search_queries(flt, before, limit, scan_limit)
        rows = [audit_row(row) for row in await self._console_fetch(page_query, audit=True)]
        if len(rows) == limit:
            return DecisionPage(rows, rows[-1].seq)
        last = await self._console_fetch(last_query, audit=True)
        if not last:
            return DecisionPage(rows, None)  # the walk reached the end of the range: nothing is left
        return DecisionPage(rows, int(last[0][0]), partial=True)

    def decision_rows(self, flt: DecisionFilter) -> AsyncIterator[AuditRow]:
        return self._console_stream(decision_rows_query(flt), audit_row)

    async def decision_tally(self, after_seq: int, limit: int) -> list[tuple[int, int, str, str]]:
        rows = await self._console_fetch((TALLY_SQL, {"after": after_seq, "limit": limit}), audit=True)
        return [(row[0], row[1], row[2], (row[3] or "").split(",", 1)[0]) for row in rows]

    async def first_seq_since(self, ts_us: int) -> int | None:
        rows = await self._console_fetch((FIRST_SEQ_SQL, {"ts": ts_us}), audit=True)
        return int(rows[0][0]) if rows else None

    async def import_history(self, *, limit: int, before_id: int | None = None,
                             kind: str | None = None) -> list[StoredImport]:
        rows = await self._console_fetch(import_history_query(limit, before_id, kind), audit=False)
        files = await self._console_fetch(import_files_query([row[0] for row in rows]), audit=False) if rows else []
        return stored_imports(rows, files)

    async def answer_freshness(self, principal_id: str, now_us: int, validity_us: int,
                               horizons_days: tuple[int, ...] = (1, 3, 7)) -> Freshness:
        query = freshness_query(self.list_dialect.audit_log, principal_id, now_us, validity_us, horizons_days)
        return freshness(principal_id, await self._freshness_row(query), horizons_days, now_us)
