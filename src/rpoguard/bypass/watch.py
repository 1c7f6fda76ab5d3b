"""`rpoguard watch`: every trunk leg Asterisk dials, matched live to its ALLOW decision (docs/bypass.md).

Two parts, as the FastAGI server has them: :class:`BypassWatcher` is the plain logic (AMI events in,
findings out; tests drive it directly), :class:`AmiWatch` owns the connection to Asterisk's manager
interface through panoramisk, its liveness and its reconnection, and records every period it could not
watch. panoramisk is the client because it is the AMI library the ecosystem knows; its gaps are covered
here: its own reconnection (a fixed two-second retry, no notice of the gap) is replaced by ours with
backoff and a stored "not watched" finding; its pings expect no answer, so a silently dead connection
would never be noticed: ours time out and reconnect; it replays nothing after a reconnect, so the gap is
stored, for `reconcile` to cover from Asterisk's own records.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from time import time_ns
from typing import Any, Protocol

from panoramisk import Manager

from rpoguard.bypass.ami import AmiTarget, AmiUnavailable, connect, disconnect
from rpoguard.bypass.match import SECOND_US, Bypass, Covered, Matcher, TrunkLeg, TrunkPatterns, dialled_number
from rpoguard.config import AmiConfig, WatchConfig
from rpoguard.constants import BYPASS_TEXT, FINDING_BYPASS, FINDING_NOT_WATCHED
from rpoguard.db.store import StoredFinding, StoreError
from rpoguard.numbers import redact
from rpoguard.timeutil import from_us, human

log = logging.getLogger(__name__)

SOURCE_WATCH = "watch"
# The AMI event that shows a channel being dialled: by Dial(), Queue(), an AMI/ARI originate or an ARI dial
# alike. An inbound call from the carrier also makes a trunk channel, but no DialBegin, so it never counts.
EVENT_DIAL_BEGIN = "DialBegin"
# Q.850 21, call rejected: the cause the dialplan gives a blocked call too.
HANGUP_CAUSE_REJECTED = "21"
# Decisions read from the log per query while catching up.
TAIL_BATCH = 1000


class WatchStore(Protocol):
    """What the watcher needs of the store (the supervised store of `serve` has it too)."""

    async def allowed_after(self, after_seq: int, since_us: int, limit: int) -> list[tuple[int, Any]]: ...

    async def add_finding(self, finding: StoredFinding) -> int: ...

    async def close_finding(self, finding_id: int, until_us: int, detail: str) -> None: ...

    def list_findings(self, *, since_us: int | None = None, kind: str | None = None,
                      limit: int | None = None) -> AsyncIterator[StoredFinding]: ...


Hangup = Callable[[str], Awaitable[bool]]


@dataclass(slots=True)
class WatchCounts:
    """What the watcher saw since it started; the figures a metrics endpoint exports."""

    legs: int = 0
    covered: int = 0
    bypasses: int = 0
    hung_up: int = 0
    not_watched: int = 0


def _text(event: Mapping[str, Any], key: str) -> str:
    """A header's value; "" when absent or repeated (panoramisk gives a repeated header as a list)."""
    value = event.get(key)
    return value if isinstance(value, str) else ""


def leg_from_event(event: Mapping[str, Any], trunks: TrunkPatterns, trunk_prefix: str, seen_us: int) -> TrunkLeg | None:
    """The trunk leg a DialBegin event shows, or None when the dialled channel is not a trunk."""
    channel = _text(event, "DestChannel")
    if not trunks.match(channel):
        return None
    stamp = _text(event, "Timestamp")
    at_us = seen_us
    if stamp:
        # manager.conf timestampevents = yes: Asterisk's own moment is nearer the dial than our reading.
        with contextlib.suppress(ValueError, OverflowError):  # "nan", "inf": our own reading stands
            at_us = int(float(stamp) * SECOND_US)
    dialled = _text(event, "DialString")
    return TrunkLeg(
        at_us=at_us,
        channel=channel,
        dialled=dialled,
        number=dialled_number(dialled, trunk_prefix),
        # Absent when nothing dialled it from a channel: an AMI/ARI originate straight to the trunk.
        caller_uniqueid=_text(event, "Uniqueid") or None,
        linkedid=_text(event, "DestLinkedid") or _text(event, "Linkedid") or None,
        uniqueid=_text(event, "DestUniqueid") or None,
    )


class BypassWatcher:
    """Matches trunk legs to the ALLOW decisions the log holds, and stores what it cannot match."""

    def __init__(self, store: WatchStore, config: WatchConfig, *, watching: str = "", trunk_prefix: str = "",
                 enforce: bool = False, hangup: Hangup | None = None,
                 clock: Callable[[], int] = lambda: time_ns() // 1000) -> None:
        if not config.trunks:
            raise ValueError("no trunks to watch: set [watch] trunks, e.g. [\"PJSIP/carrier-*\"]")
        self.store = store
        # What is watched (the AMI "user@host:port"): a "not watched" finding names it, so that watchers of
        # several PBXs sharing one database each close only their own periods.
        self.watching = watching
        self.trunks = TrunkPatterns(config.trunks)
        self.trunk_prefix = trunk_prefix
        self.enforce = enforce
        self.hangup = hangup
        self.clock = clock
        self.max_age_us = int(config.max_age * SECOND_US)
        self.skew_us = int(config.clock_skew * SECOND_US)
        self.matcher = Matcher(max_age_us=self.max_age_us, skew_us=self.skew_us)
        self.counts = WatchCounts()
        self._after_seq = 0
        self._lock = asyncio.Lock()

    async def _catch_up(self, now_us: int) -> None:
        """Read the decisions logged since the last look (a primary-key range), forget the old ones."""
        since = now_us - self.max_age_us - self.skew_us
        while True:
            rows = await self.store.allowed_after(self._after_seq, since, TAIL_BATCH)
            for seq, decision in rows:
                self.matcher.add(decision)
                self._after_seq = seq
            if len(rows) < TAIL_BATCH:
                break
        self.matcher.forget_before(since)

    async def on_event(self, event: Mapping[str, Any]) -> Covered | Bypass | None:
        """A DialBegin event; None when it is not a trunk leg."""
        seen_us = self.clock()
        leg = leg_from_event(event, self.trunks, self.trunk_prefix, seen_us)
        if leg is None:
            return None
        # One leg at a time: two legs of one call must not both take its one decision.
        async with self._lock:
            self.counts.legs += 1
            try:
                await self._catch_up(max(seen_us, leg.at_us))
            except StoreError as exc:
                # Fail closed: a leg that cannot be checked is not proven covered.
                log.error("cannot read the decision log to check %s: %s", leg.channel, exc)
            result = self.matcher.match(leg)
        if isinstance(result, Covered):
            self.counts.covered += 1
            log.debug("trunk leg %s to %s covered by decision %s", leg.channel, redact(leg.number or leg.dialled),
                      result.decision.decision_id)
            return result
        await self._report(result)
        return result

    async def _report(self, bypass: Bypass) -> None:
        leg = bypass.leg
        self.counts.bypasses += 1
        hung_up = False
        if self.enforce and self.hangup is not None:
            # First, before anything is written: the carrier must not answer it.
            hung_up = await self.hangup(leg.channel)
            if hung_up:
                self.counts.hung_up += 1
        shown = leg.number or leg.dialled or "an unknown number"
        log.error("BYPASS: %s dialled %s at %s without the gate: %s%s", leg.channel, shown, human(from_us(leg.at_us)),
                  BYPASS_TEXT[bypass.why], " (hung up)" if hung_up else "")
        finding = StoredFinding(
            kind=FINDING_BYPASS, at_us=leg.at_us, detail=BYPASS_TEXT[bypass.why], source=SOURCE_WATCH,
            why=bypass.why, channel=leg.channel, number=leg.number, dialled=leg.dialled, uniqueid=leg.uniqueid,
            linkedid=leg.linkedid, decision_id=bypass.decision_id, hung_up=hung_up)
        await self._store_finding(finding)

    async def _store_finding(self, finding: StoredFinding) -> int | None:
        try:
            return await self.store.add_finding(finding)
        except StoreError as exc:
            # The ERROR line above is then the only record: say so, so that it is kept.
            log.critical("cannot store the finding (%s); this log line is its only record: %s", exc, finding)
            return None

    async def not_watched_since(self, since_us: int, why: str) -> int | None:
        """Open a "not watched" period (AMI lost, or the watcher stopping); close it with watched_again."""
        self.counts.not_watched += 1
        log.error("not watching trunk calls from %s: %s", human(from_us(since_us)), why)
        return await self._store_finding(StoredFinding(
            kind=FINDING_NOT_WATCHED, at_us=since_us, source=SOURCE_WATCH, channel=self.watching,
            detail=f"not watched since {human(from_us(since_us))}: {why}; run `rpoguard reconcile` over this period"))

    async def watched_again(self) -> None:
        """Close every open "not watched" period of this AMI target (this run's, or the one an earlier run
        left when it stopped)."""
        now = self.clock()
        try:
            open_gaps = [f async for f in self.store.list_findings(kind=FINDING_NOT_WATCHED)
                         if f.until_us is None and f.channel == self.watching and f.id is not None]
            for gap in open_gaps:
                why = gap.detail.split(": ", 1)[1].split(";", 1)[0] if ": " in gap.detail else "not watched"
                log.warning("watching trunk calls again; not watched from %s to %s (%s)", human(from_us(gap.at_us)),
                            human(from_us(now)), why)
                await self.store.close_finding(int(gap.id or 0), now,
                                               f"not watched from {human(from_us(gap.at_us))} to {human(from_us(now))}"
                                               f": {why}; run `rpoguard reconcile` over this period")
        except StoreError as exc:
            log.error("cannot close the open 'not watched' periods: %s", exc)


class AmiWatch:
    """The service `rpoguard watch` runs: connect, follow DialBegin events, ping, reconnect with backoff,
    and store each period it was not watching."""

    name = "bypass watcher"

    def __init__(self, watcher: BypassWatcher, target: AmiTarget, ami: AmiConfig) -> None:
        self.watcher = watcher
        self.target = target
        self.ami = ami
        self._stopping = asyncio.Event()
        self._manager: Manager | None = None
        self._events: asyncio.Queue[Mapping[str, Any]] = asyncio.Queue()
        self.connected = asyncio.Event()

    async def start(self) -> None:
        log.warning("rpoguard watch: following trunk calls (%s) on AMI %s%s", ", ".join(self.watcher.trunks.patterns),
                    self.target.describe(), ", hanging up bypasses" if self.watcher.enforce else "")

    async def hangup(self, channel: str) -> bool:
        manager = self._manager
        if manager is None:
            return False
        try:
            reply = await asyncio.wait_for(manager.send_action(
                {"Action": "Hangup", "Channel": channel, "Cause": HANGUP_CAUSE_REJECTED}), self.ami.ping_timeout)
        except (TimeoutError, OSError, AmiUnavailable) as exc:
            log.error("could not hang up %s: %s", channel, exc or type(exc).__name__)
            return False
        if not reply.success:
            log.error("Asterisk refused to hang up %s: %s", channel, reply.get("Message", reply))
        return bool(reply.success)

    async def _connect(self) -> tuple[Manager, asyncio.Future[None]]:
        manager = await connect(self.target, events=True, timeout=self.ami.connect_timeout)
        # Events that came with the login are in the "not watched" period, closed only after this.
        manager.register_event(EVENT_DIAL_BEGIN, lambda _m, event: self._events.put_nowait(event))
        return manager, manager.protocol.gone

    async def _pings(self, manager: Manager) -> None:
        """Returns when a ping goes unanswered: the connection is then treated as lost."""
        while True:
            await asyncio.sleep(self.ami.ping_interval)
            try:
                await asyncio.wait_for(manager.send_action({"Action": "Ping"}), self.ami.ping_timeout)
            except TimeoutError:
                log.error("AMI did not answer a ping within %.1f s: reconnecting", self.ami.ping_timeout)
                return

    async def _handle_events(self) -> None:
        while True:
            event = await self._events.get()
            try:
                await self.watcher.on_event(event)
            except Exception:
                # A bug must not stop the watching; the event is logged for the post-mortem.
                log.exception("failed to check the AMI event %s", dict(event))

    async def serve(self) -> None:
        handler = asyncio.create_task(self._handle_events())
        try:
            await self._run()
        finally:
            handler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await handler

    async def _run(self) -> None:
        wait = self.ami.reconnect_min
        gap_since = self.watcher.clock()
        gap_open = False  # a "not watched" finding is stored for the current gap
        while not self._stopping.is_set():
            try:
                manager, lost = await self._connect()
            except AmiUnavailable as exc:
                if not gap_open:
                    await self.watcher.not_watched_since(gap_since, str(exc))
                    gap_open = True
                log.warning("%s; retrying in %.1f s", exc, wait)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), wait)
                wait = min(wait * 2, self.ami.reconnect_max)
                continue
            self._manager = manager
            wait = self.ami.reconnect_min
            await self.watcher.watched_again()
            gap_open = False
            self.connected.set()
            log.info("AMI connected: %s", self.target.describe())
            pings = asyncio.create_task(self._pings(manager))
            stop = asyncio.create_task(self._stopping.wait())
            done, _ = await asyncio.wait({pings, lost, stop}, return_when=asyncio.FIRST_COMPLETED)
            for task in (pings, stop):
                task.cancel()
            self.connected.clear()
            self._manager = None
            await disconnect(manager)
            if stop in done:
                break
            gap_since = self.watcher.clock()
            await self.watcher.not_watched_since(
                gap_since, "the AMI connection was lost" if lost in done else "AMI stopped answering pings")
            gap_open = True

    async def stop(self) -> None:
        self._stopping.set()

    async def close(self) -> None:
        if self._manager is not None:
            await disconnect(self._manager)
            self._manager = None
        # A watcher that stops leaves the trunks unwatched until it runs again: that is a gap too.
        await self.watcher.not_watched_since(self.watcher.clock(), "rpoguard watch stopped")
