"""The live watcher's logic (bypass/watch.BypassWatcher) on both backends: DialBegin events in, the decision
log read, findings stored, the trunk leg hung up first under --enforce, and fail-closed when the log cannot
be read. The AMI connection around it is tested in tests/integration/test_watch_ami.py."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from time import time_ns
from typing import Any

import pytest

from rpoguard.audit import AuditEntry
from rpoguard.bypass.match import Bypass, Covered
from rpoguard.bypass.watch import BypassWatcher, leg_from_event
from rpoguard.config import WatchConfig
from rpoguard.constants import (
    ALLOW,
    BLOCK,
    BYPASS_DECISION_USED,
    BYPASS_NO_DECISION,
    BYPASS_NUMBER_UNKNOWN,
    BYPASS_OTHER_NUMBER,
    FINDING_BYPASS,
    FINDING_NOT_WATCHED,
)
from rpoguard.db.store import Store, StoredFinding, StoreError

NUMBER = "+393331234567"
WATCH = WatchConfig(trunks=("PJSIP/carrier-*",), max_age=60.0, clock_skew=2.0)


def now_us() -> int:
    return time_ns() // 1000


def decision(number: str, uniqueid: str | None, linkedid: str | None, *, decided: str = ALLOW,
             at_us: int | None = None) -> AuditEntry:
    return AuditEntry(
        decision_id=str(uuid.uuid4()), ts_us=at_us or now_us(), number=number, raw_number=number, campaign_id="c1",
        principal_id="acme", caller_id="+390612345678", decision=decided, reasons="" if decided == ALLOW else "optout",
        basis="consent" if decided == ALLOW else None, evidence="{}", source="fastagi", uniqueid=uniqueid,
        channel="Local/x;2", linkedid=linkedid)


def dial_begin(dialled: str = "3331234567@carrier", *, caller: str | None = "1700000000.1",
               linkedid: str = "1700000000.0", channel: str = "PJSIP/carrier-00000001", **extra: str) -> dict[str, str]:
    """A DialBegin as Asterisk 22 sends it (fields the watcher reads; an originate has no caller fields)."""
    event = {"Event": "DialBegin", "DestChannel": channel, "DestUniqueid": "1700000000.2",
             "DestLinkedid": linkedid, "DialString": dialled, **extra}
    if caller is not None:
        event.update({"Channel": "Local/3331234567@out-00000000;2", "Uniqueid": caller, "Linkedid": linkedid})
    return event


async def findings(store: Any) -> list[StoredFinding]:
    return [f async for f in store.list_findings()]


@dataclass
class Hangups:
    channels: list[str] = field(default_factory=list)
    findings_when_called: list[int] = field(default_factory=list)
    store: Any = None

    async def __call__(self, channel: str) -> bool:
        self.channels.append(channel)
        self.findings_when_called.append(len(await findings(self.store)))
        return True


def test_a_gated_call_is_covered_and_leaves_no_finding(store: Store, run: Callable[..., Any]) -> None:
    async def scenario() -> tuple[Any, list[StoredFinding]]:
        await store.append_decision(decision(NUMBER, "1700000000.1", "1700000000.0"))
        watcher = BypassWatcher(store, WATCH)
        result = await watcher.on_event(dial_begin())
        return result, await findings(store)

    result, stored = run(scenario())
    assert isinstance(result, Covered)
    assert result.decision.number == NUMBER
    assert stored == []


def test_an_originate_straight_to_the_trunk_is_a_stored_bypass_logged_at_error(
        store: Store, run: Callable[..., Any], caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> tuple[Any, list[StoredFinding], BypassWatcher]:
        # A decision for the same number on another call does not cover it.
        await store.append_decision(decision(NUMBER, "1600000000.1", "1600000000.0"))
        watcher = BypassWatcher(store, WATCH)
        result = await watcher.on_event(dial_begin("+393331234567@carrier", caller=None, linkedid="1700000000.2"))
        return result, await findings(store), watcher

    with caplog.at_level(logging.ERROR, logger="rpoguard.bypass.watch"):
        result, stored, watcher = run(scenario())
    assert isinstance(result, Bypass) and result.why == BYPASS_NO_DECISION
    assert len(stored) == 1
    finding = stored[0]
    assert (finding.kind, finding.why, finding.channel, finding.number, finding.dialled, finding.hung_up) == (
        FINDING_BYPASS, BYPASS_NO_DECISION, "PJSIP/carrier-00000001", NUMBER, "+393331234567@carrier", False)
    assert finding.linkedid == "1700000000.2" and finding.uniqueid == "1700000000.2"
    assert any("BYPASS" in r.getMessage() and "PJSIP/carrier-00000001" in r.getMessage() for r in caplog.records
               if r.levelno == logging.ERROR)
    assert (watcher.counts.legs, watcher.counts.bypasses, watcher.counts.covered) == (1, 1, 0)


def test_enforce_hangs_the_leg_up_before_storing_the_finding(store: Store, run: Callable[..., Any]) -> None:
    hangups = Hangups(store=store)

    async def scenario() -> list[StoredFinding]:
        watcher = BypassWatcher(store, WATCH, enforce=True, hangup=hangups)
        await watcher.on_event(dial_begin(channel="PJSIP/carrier-0000000a"))
        return await findings(store)

    stored = run(scenario())
    assert hangups.channels == ["PJSIP/carrier-0000000a"]
    assert hangups.findings_when_called == [0]
    assert [f.hung_up for f in stored] == [True]


def test_without_enforce_nothing_is_hung_up(store: Store, run: Callable[..., Any]) -> None:
    hangups = Hangups(store=store)

    async def scenario() -> list[StoredFinding]:
        watcher = BypassWatcher(store, WATCH, enforce=False, hangup=hangups)
        await watcher.on_event(dial_begin())
        return await findings(store)

    assert [f.hung_up for f in run(scenario())] == [False]
    assert hangups.channels == []


def test_legs_that_are_not_trunks_are_not_checked(store: Store, run: Callable[..., Any]) -> None:
    async def scenario() -> tuple[Any, list[StoredFinding], int]:
        watcher = BypassWatcher(store, WATCH)
        result = await watcher.on_event(dial_begin(channel="Local/3331234567@out-00000000;1"))
        return result, await findings(store), watcher.counts.legs

    assert run(scenario()) == (None, [], 0)


def test_a_blocked_decision_covers_nothing_and_one_allow_covers_one_leg(store: Store, run: Callable[..., Any]) -> None:
    async def scenario() -> list[Any]:
        await store.append_decision(decision(NUMBER, "1700000000.1", "1700000000.0", decided=BLOCK))
        watcher = BypassWatcher(store, WATCH)
        first = await watcher.on_event(dial_begin())
        await store.append_decision(decision(NUMBER, "1700000000.1", "1700000000.0"))
        second = await watcher.on_event(dial_begin(channel="PJSIP/carrier-00000002"))
        third = await watcher.on_event(dial_begin(channel="PJSIP/carrier-00000003"))
        other = await watcher.on_event(dial_begin("0612345678@carrier", channel="PJSIP/carrier-00000004"))
        return [first, second, third, other]

    first, second, third, other = run(scenario())
    assert isinstance(first, Bypass) and first.why == BYPASS_NO_DECISION
    assert isinstance(second, Covered)
    assert isinstance(third, Bypass) and third.why == BYPASS_DECISION_USED
    assert isinstance(other, Bypass) and other.why == BYPASS_OTHER_NUMBER


def test_decisions_logged_while_watching_are_read_in_batches(store: Store, run: Callable[..., Any],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("rpoguard.bypass.watch.TAIL_BATCH", 2)

    async def scenario() -> list[Any]:
        watcher = BypassWatcher(store, WATCH)
        await watcher.on_event(dial_begin(channel="Local/a;1"))
        for i in range(5):
            await store.append_decision(decision(NUMBER, f"1700000000.{10 + i}", f"1700000001.{i}"))
        return [await watcher.on_event(dial_begin(caller=f"1700000000.{10 + i}", linkedid=f"1700000001.{i}"))
                for i in range(5)]

    assert all(isinstance(r, Covered) for r in run(scenario()))


def test_asterisk_event_time_is_used_when_events_carry_it() -> None:
    from rpoguard.bypass.match import TrunkPatterns

    leg = leg_from_event(dial_begin(Timestamp="1700000000.250000"), TrunkPatterns(["PJSIP/carrier-*"]), "", 5)
    assert leg is not None and leg.at_us == 1_700_000_000_250_000
    plain = leg_from_event(dial_begin(), TrunkPatterns(["PJSIP/carrier-*"]), "", 5)
    assert plain is not None and plain.at_us == 5
    for odd in ("inf", "nan", "yesterday", ""):
        leg = leg_from_event(dial_begin(Timestamp=odd), TrunkPatterns(["PJSIP/carrier-*"]), "", 5)
        assert leg is not None and leg.at_us == 5


class _UnreadableLog:
    """A store whose decision log cannot be read, and which cannot store findings either."""

    def __init__(self) -> None:
        self.attempted: list[StoredFinding] = []

    async def allowed_after(self, after_seq: int, since_us: int, limit: int) -> list[tuple[int, Any]]:
        raise StoreError("database is locked")

    async def add_finding(self, finding: StoredFinding) -> int:
        self.attempted.append(finding)
        raise StoreError("database is locked")

    async def close_finding(self, finding_id: int, until_us: int, detail: str) -> None:
        raise StoreError("database is locked")

    async def list_findings(self, **_: Any) -> AsyncIterator[StoredFinding]:
        raise StoreError("database is locked")
        yield  # pragma: no cover


def test_a_leg_that_cannot_be_checked_is_a_bypass_and_its_only_record_is_logged(
        run: Callable[..., Any], caplog: pytest.LogCaptureFixture) -> None:
    broken = _UnreadableLog()
    hangups: list[str] = []

    async def hang(channel: str) -> bool:
        hangups.append(channel)
        return True

    async def scenario() -> Any:
        watcher = BypassWatcher(broken, WATCH, enforce=True, hangup=hang)
        return await watcher.on_event(dial_begin())

    with caplog.at_level(logging.ERROR, logger="rpoguard.bypass.watch"):
        result = run(scenario())
    assert isinstance(result, Bypass)
    assert hangups == ["PJSIP/carrier-00000001"]
    assert len(broken.attempted) == 1
    critical = [r.getMessage() for r in caplog.records if r.levelno == logging.CRITICAL]
    assert critical and "only record" in critical[0] and "PJSIP/carrier-00000001" in critical[0]


def test_not_watched_periods_are_stored_and_closed_for_their_own_target_only(
        store: Store, run: Callable[..., Any]) -> None:
    async def scenario() -> list[StoredFinding]:
        ours = BypassWatcher(store, WATCH, watching="watch@127.0.0.1:5038")
        theirs = BypassWatcher(store, WATCH, watching="watch@10.0.0.2:5038")
        await ours.not_watched_since(now_us() - 5_000_000, "the AMI connection was lost")
        await theirs.not_watched_since(now_us() - 4_000_000, "rpoguard watch stopped")
        await ours.watched_again()
        return await findings(store)

    ours, theirs = run(scenario())
    assert ours.kind == theirs.kind == FINDING_NOT_WATCHED
    assert ours.channel == "watch@127.0.0.1:5038" and ours.until_us is not None and ours.until_us > ours.at_us
    assert "not watched from" in ours.detail and "the AMI connection was lost" in ours.detail
    assert theirs.until_us is None and "rpoguard watch stopped" in theirs.detail


def test_no_trunks_configured_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match=r"\[watch\] trunks"):
        BypassWatcher(store, WatchConfig())


def test_odd_events_are_ignored_or_fail_closed(store: Store, run: Callable[..., Any]) -> None:
    async def scenario() -> list[Any]:
        await store.append_decision(decision(NUMBER, "1700000000.1", "1700000000.0"))
        watcher = BypassWatcher(store, WATCH)
        missing_channel = {k: v for k, v in dial_begin().items() if k != "DestChannel"}
        results = [await watcher.on_event(missing_channel)]
        # Garbage where the number should be, on the call that has an ALLOW: not proven, so a bypass.
        for dialled in ("\x00\ufffd<script>@carrier", "", "s@carrier", "3331234567" * 40 + "@carrier"):
            results.append(await watcher.on_event(dial_begin(dialled)))
        # A list where one value was expected (a header repeated): not a channel name, never matched.
        results.append(await watcher.on_event({**dial_begin(), "DestChannel": ["PJSIP/carrier-1", "x"]}))
        return results

    missing, *garbage, repeated = run(scenario())
    assert missing is None
    assert all(isinstance(r, Bypass) and r.why == BYPASS_NUMBER_UNKNOWN for r in garbage), garbage
    assert repeated is None
