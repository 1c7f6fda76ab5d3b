"""The decision log's writer, shared by both backends: the queue, the group commit, the hash chain and the
attempt cap. A backend only says how one group is written (`GroupStore`).

Group commit. A decision is answered only once its row is durable (one fsync per commit), so decisions
that arrive while a commit is in progress wait and go into the next transaction together: one commit for
the group instead of one per call. No decision whose caller still waits is dropped; each caller gets its
own row or its own error. A caller that gave up (its session deadline passed) before its group is chained
gets no row: its call was refused, and it must not count as an attempt.

One group, whatever the backend: take the log's write lock, read the chain head and the ALLOWs each cap of
the group counts (`cap_windows`), chain the group and apply the caps (`chain_group`, pure), insert the
rows, commit, anchor the new head, answer. SQLite runs that in its writer thread (one hop off the loop per
group), PostgreSQL as a task on the loop (one round trip for the head and counts, one for the rows).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from time import monotonic
from typing import Any, Protocol

from rpoguard.anchor import AnchorWriter
from rpoguard.audit import AuditEntry, AuditRow, chain_hash
from rpoguard.constants import ALLOW
from rpoguard.db.store import AttemptCap, AttemptCapReached, StoreError
from rpoguard.policy.attempts import CapWindow, cap_window, in_window, within_cap

log = logging.getLogger(__name__)

# A decision log that cannot be written is logged once per cause, then at most once a minute.
FAILURE_LOG_INTERVAL = 60.0

# What a group gives each of its callers: its row, the cap it hit, or None when it gave up.
Outcome = AuditRow | AttemptCapReached | None


@dataclass(frozen=True, slots=True)
class Queued:
    entry: AuditEntry
    cap: AttemptCap | None
    future: asyncio.Future[AuditRow]
    # Set when the caller gives up; read where the group is chained (SQLite: the writer thread).
    gave_up: threading.Event


@dataclass(frozen=True, slots=True)
class ChainedGroup:
    """A group chained onto the head: the rows to insert (audit_log columns, rows.AUDIT_COLUMNS order), each
    caller's outcome, and the new head."""

    rows: list[tuple[Any, ...]]
    outcomes: list[Outcome]
    seq: int
    hash: str


def cap_windows(group: Sequence[Queued]) -> list[CapWindow]:
    """The window of each capped decision of the group, in group order: the backend counts the stored
    ALLOWs in each, after taking the log's write lock, and hands the counts to chain_group."""
    return [cap_window(q.cap.number, q.cap.principal_id, q.cap.since_us, q.entry.ts_us)
            for q in group if q.cap is not None]


def chain_group(group: Sequence[Queued], seq: int, prev: str, stored_allows: Sequence[int],
                recorded_us: int) -> ChainedGroup:
    """Chain the group onto the head (seq, prev). `stored_allows`: the count for each of cap_windows(group).
    The group's own ALLOWs count against its later decisions, as if each were already stored."""
    counts: Iterator[int] = iter(stored_allows)
    allowed_in_group: dict[tuple[str, str], list[int]] = {}
    outcomes: list[Outcome] = []
    rows: list[tuple[Any, ...]] = []
    for queued in group:
        entry, cap = queued.entry, queued.cap
        stored = next(counts) if cap is not None else 0
        if queued.gave_up.is_set():
            # Its session deadline passed while the group waited for the log's lock: the call was refused,
            # so no decision is recorded.
            outcomes.append(None)
            continue
        if cap is not None:
            window = cap_window(cap.number, cap.principal_id, cap.since_us, entry.ts_us)
            earlier = allowed_in_group.get((cap.number, cap.principal_id), [])
            allows = stored + sum(1 for ts in earlier if in_window(window, ts))
            if not within_cap(allows, cap.max_allows):
                outcomes.append(AttemptCapReached(allows))
                continue
        seq += 1
        digest = chain_hash(seq, entry, prev, recorded_us)
        row = AuditRow(seq, entry, prev, digest, recorded_us)
        rows.append(audit_values(row))
        outcomes.append(row)
        prev = digest
        if entry.decision == ALLOW and entry.number and entry.principal_id:
            allowed_in_group.setdefault((entry.number, entry.principal_id), []).append(entry.ts_us)
    return ChainedGroup(rows, outcomes, seq, prev)


def audit_values(row: AuditRow) -> tuple[Any, ...]:
    """A row as the audit_log columns (rows.AUDIT_COLUMNS) hold it."""
    e = row.entry
    return (row.seq, e.decision_id, e.ts_us, e.number, e.raw_number, e.campaign_id, e.principal_id, e.caller_id,
            e.decision, e.reasons, e.basis, e.evidence, e.source, e.uniqueid, e.channel, row.prev_hash, row.hash,
            row.recorded_us, e.linkedid)


def anchor_group(anchor: AnchorWriter | None, group: ChainedGroup) -> None:
    """After COMMIT and before the callers are answered, so every answered decision is anchored; never
    raises (AnchorWriter.record). Blocking file I/O: call it off the event loop."""
    if group.rows and anchor is not None:
        anchor.record(group.seq, group.hash)


class GroupStore(Protocol):
    """What a backend does for the shared writer."""

    def start(self, group: list[Queued]) -> asyncio.Future[list[Outcome]]:
        """Begin writing one group (one transaction, then the anchor); the future gives each caller's
        outcome in group order."""

    def error(self, exc: BaseException) -> StoreError | None:
        """The backend's own failure (locked, unreachable, disk full) as a StoreError; None for anything
        else (a bug), which is logged as such."""

    def committed(self, loop: asyncio.AbstractEventLoop) -> None:
        """On the loop after a group committed and its callers were answered (SQLite: checkpoint)."""

    async def close(self) -> None:
        """Release the backend's connection and threads; no group is in flight."""


def _note_gave_up(gave_up: threading.Event, future: asyncio.Future[AuditRow]) -> None:
    if future.cancelled():
        gave_up.set()


def _fail_all(group: list[Queued], error: Exception) -> int:
    """Give `error` to every caller of the group still waiting; how many were."""
    waiting = [q.future for q in group if not q.future.done()]
    for future in waiting:
        future.set_exception(error)
    return len(waiting)


class AuditWriter:
    """The queue and group commit in front of one backend's GroupStore."""

    def __init__(self, backend: GroupStore, where: str, anchor: AnchorWriter | None) -> None:
        self._backend = backend
        self._where = where
        self._anchor = anchor
        self._pending: list[Queued] = []
        self._in_flight: asyncio.Future[list[Outcome]] | None = None
        self._starting = False  # a group start is scheduled (submit)
        self.groups = 0  # commits so far, for tests and the benchmark
        # Causes of failed writes reported by _report since the last good one, with when: once per minute.
        self._failing: dict[str, float] = {}

    def submit(self, entry: AuditEntry, cap: AttemptCap | None) -> asyncio.Future[AuditRow]:
        """Queue a decision; when no commit is in flight its group starts with the event loop's next
        callback, before any I/O is polled, so the commit runs while the front end talks to the PBX (a task
        would start it only after the PBX's next reply: docs/performance.md, "The decision's commit").
        Decisions submitted in the same loop pass share the group. Cancelling the future before its group
        is chained keeps the decision out."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[AuditRow] = loop.create_future()
        gave_up = threading.Event()
        future.add_done_callback(functools.partial(_note_gave_up, gave_up))
        self._pending.append(Queued(entry, cap, future, gave_up))
        if self._in_flight is None and not self._starting:
            self._starting = True
            loop.call_soon(self._start_group, loop)
        return future

    def _start_group(self, loop: asyncio.AbstractEventLoop) -> None:
        # A caller that gave up before its group started is not written (see the module's docstring).
        self._starting = False
        group = [q for q in self._pending if not q.future.done()]
        self._pending = []
        if not group:
            return
        try:
            in_flight = self._backend.start(group)
        except RuntimeError as exc:  # the writer thread is shut down: the store is closing
            _fail_all(group, StoreError(f"audit log: {exc}"))
            return
        self._in_flight = in_flight
        in_flight.add_done_callback(functools.partial(self._group_done, group, loop))

    def _group_done(self, group: list[Queued], loop: asyncio.AbstractEventLoop,
                    in_flight: asyncio.Future[list[Outcome]]) -> None:
        """Runs on the event loop when a group's transaction has ended: answer its callers, then start
        the group that queued up meanwhile."""
        self._in_flight = None
        try:
            self._answer(group, loop, in_flight)
        finally:
            if self._pending and not self._starting:
                self._start_group(loop)

    def _answer(self, group: list[Queued], loop: asyncio.AbstractEventLoop,
                in_flight: asyncio.Future[list[Outcome]]) -> None:
        exc = StoreError("audit log: write cancelled") if in_flight.cancelled() else in_flight.exception()
        if exc is not None:
            error = self._backend.error(exc)
            if error is None:
                log.error("audit log writer failed: %s: %s", type(exc).__name__, exc)
                _fail_all(group, StoreError(f"audit log: {type(exc).__name__}: {exc}"))
            elif not _fail_all(group, error):
                # Every caller already gave up (the write waited past their deadlines, e.g. on another
                # writer's lock), so the gate, which logs its errors once per cause, never hears of it:
                # say it here, as the gate would.
                self._report(error)
            return
        self.groups += 1
        if self._failing:
            log.warning("decision log writable again: %s", self._where)
            self._failing.clear()
        for queued, outcome in zip(group, in_flight.result(), strict=True):
            if queued.future.done() or outcome is None:
                continue
            if isinstance(outcome, AttemptCapReached):
                queued.future.set_exception(outcome)
            else:
                queued.future.set_result(outcome)
        self._backend.committed(loop)

    def _report(self, error: StoreError) -> None:
        cause = str(error)
        now = monotonic()
        if now - self._failing.get(cause, -FAILURE_LOG_INTERVAL) >= FAILURE_LOG_INTERVAL:
            self._failing[cause] = now
            log.error("decision log cannot be written, calls are blocked (engine_error): %s", cause)

    async def close(self) -> None:
        while self._in_flight is not None or self._starting:
            if self._in_flight is None:
                await asyncio.sleep(0)  # the scheduled start runs first
                continue
            # Its done callback (which may start the next group) runs before wait() returns.
            await asyncio.wait([self._in_flight])
        await self._backend.close()
        if self._anchor is not None:
            self._anchor.flush()
