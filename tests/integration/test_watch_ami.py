"""`rpoguard watch`'s AMI side (bypass/watch.AmiWatch) against a fake Asterisk manager over a real socket:
events followed, the trunk leg hung up through AMI under --enforce, every period without AMI stored (lost
connection, unanswered pings, unreachable, refused login, the watcher stopped) and closed once watching
resumes. The real Asterisk 22 run is tests/e2e/test_bypass.py."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from rpoguard.bypass.ami import AmiTarget
from rpoguard.bypass.watch import AmiWatch, BypassWatcher
from rpoguard.config import AmiConfig, WatchConfig
from rpoguard.constants import FINDING_BYPASS, FINDING_NOT_WATCHED
from rpoguard.db.store import Store, StoredFinding
from support.ami_fake import FakeAmi

SECRET = "s3cret-never-logged"
USERS = {"rpoguard": SECRET}
WATCH = WatchConfig(trunks=("PJSIP/carrier-*",))
# Short enough for a test, the same logic as the defaults.
AMI = AmiConfig(ping_interval=0.2, ping_timeout=0.3, connect_timeout=1.0, reconnect_min=0.05, reconnect_max=0.2)
BYPASS_EVENT = {"Event": "DialBegin", "Privilege": "call,all", "DestChannel": "PJSIP/carrier-00000007",
                "DestUniqueid": "1700000000.7", "DestLinkedid": "1700000000.7", "DialString": "+393331234567@carrier"}
WAIT = 10.0  # a bound on waiting for something that must happen, never a speed requirement


async def until(predicate: Callable[[], Any], what: str) -> None:
    async def poll() -> None:
        # The store and the fake AMI have no event to wait on: poll, bounded by WAIT below.
        while True:
            if await _value(predicate()):
                return
            await asyncio.sleep(0.02)

    try:
        await asyncio.wait_for(poll(), WAIT)
    except TimeoutError:
        raise AssertionError(f"never happened: {what}") from None


async def _value(value: Any) -> Any:
    return await value if asyncio.iscoroutine(value) else value


async def findings(store: Store, kind: str | None = None) -> list[StoredFinding]:
    return [f async for f in store.list_findings(kind=kind)]


@asynccontextmanager
async def watching(store: Store, port: int, *, enforce: bool = False,
                   secret: str = SECRET) -> AsyncIterator[AmiWatch]:
    target = AmiTarget(host="127.0.0.1", port=port, user="rpoguard", secret=secret)
    watcher = BypassWatcher(store, WATCH, watching=target.describe(), enforce=enforce)
    service = AmiWatch(watcher, target, AMI)
    watcher.hangup = service.hangup
    await service.start()
    task = asyncio.create_task(service.serve())
    try:
        yield service
    finally:
        await service.stop()
        await asyncio.wait_for(task, WAIT)
        await service.close()


def test_a_bypass_seen_on_ami_is_stored_and_hung_up_through_ami(store: Store, run: Callable[..., Any]) -> None:
    async def scenario() -> tuple[list[StoredFinding], list[dict[str, str]]]:
        async with FakeAmi(USERS) as ami:
            ami.reply("Hangup", [{"Response": "Success", "Message": "Channel Hungup"}])
            async with watching(store, ami.port, enforce=True) as service:
                await asyncio.wait_for(service.connected.wait(), WAIT)
                assert await ami.emit(BYPASS_EVENT) == 1
                await until(lambda: findings(store, FINDING_BYPASS), "the bypass stored")
            return await findings(store, FINDING_BYPASS), ami.actions

    stored, actions = run(scenario())
    assert [(f.channel, f.number, f.hung_up) for f in stored] == [("PJSIP/carrier-00000007", "+393331234567", True)]
    hangups = [a for a in actions if a.get("Action") == "Hangup"]
    assert [(a["Channel"], a["Cause"]) for a in hangups] == [("PJSIP/carrier-00000007", "21")]
    logins = [a for a in actions if a.get("Action") == "Login"]
    assert logins and logins[0]["Secret"] == "********"


def test_a_refused_hangup_is_stored_as_not_hung_up(store: Store, run: Callable[..., Any]) -> None:
    async def scenario() -> list[StoredFinding]:
        async with FakeAmi(USERS, deny=["Hangup"]) as ami, watching(store, ami.port, enforce=True) as service:
            await asyncio.wait_for(service.connected.wait(), WAIT)
            await ami.emit(BYPASS_EVENT)
            await until(lambda: findings(store, FINDING_BYPASS), "the bypass stored")
            return await findings(store, FINDING_BYPASS)

    assert [f.hung_up for f in run(scenario())] == [False]


def test_a_lost_connection_is_a_not_watched_period_closed_on_reconnection(
        store: Store, run: Callable[..., Any]) -> None:
    async def scenario() -> tuple[list[StoredFinding], int, list[StoredFinding]]:
        async with FakeAmi(USERS) as ami, watching(store, ami.port) as service:
            await asyncio.wait_for(service.connected.wait(), WAIT)
            await ami.drop()
            await until(lambda: findings(store, FINDING_NOT_WATCHED), "the gap stored")
            await until(lambda: ami.sessions == 1 and service.connected.is_set(), "reconnected")
            await until(lambda: _closed(store), "the gap closed")
            # Watching again: a bypass after the reconnection is seen.
            await ami.emit(BYPASS_EVENT)
            await until(lambda: findings(store, FINDING_BYPASS), "the bypass after reconnecting")
            return await findings(store, FINDING_NOT_WATCHED), ami.connections, await findings(store, FINDING_BYPASS)

    gaps, connections, bypasses = run(scenario())
    assert connections >= 2
    lost = [g for g in gaps if "connection was lost" in g.detail]
    assert len(lost) == 1 and lost[0].until_us is not None and lost[0].until_us >= lost[0].at_us
    assert "not watched from" in lost[0].detail
    assert len(bypasses) == 1


async def _closed(store: Store) -> bool:
    gaps = await findings(store, FINDING_NOT_WATCHED)
    return bool(gaps) and all(g.until_us is not None for g in gaps if "stopped" not in g.detail)


def test_unanswered_pings_drop_the_connection_and_the_gap_is_stored(store: Store, run: Callable[..., Any]) -> None:
    async def scenario() -> tuple[list[StoredFinding], int]:
        async with FakeAmi(USERS) as ami, watching(store, ami.port) as service:
            await asyncio.wait_for(service.connected.wait(), WAIT)
            ami.silent = True  # the socket stays open; nothing answers
            await until(lambda: findings(store, FINDING_NOT_WATCHED), "the silent connection noticed")
            ami.silent = False
            await until(lambda: _closed(store), "watching again")
            return await findings(store, FINDING_NOT_WATCHED), ami.connections

    gaps, connections = run(scenario())
    assert any("stopped answering pings" in g.detail for g in gaps), [g.detail for g in gaps]
    assert connections >= 2


def test_ami_unreachable_at_start_is_stored_then_closed_when_asterisk_comes(
        store: Store, run: Callable[..., Any]) -> None:
    async def scenario() -> list[StoredFinding]:
        probe = await FakeAmi(USERS).start()
        port = probe.port
        await probe.stop()  # the port now refuses connections
        async with watching(store, port) as service:
            await until(lambda: findings(store, FINDING_NOT_WATCHED), "the unreachable start stored")
            ami = await FakeAmi(USERS).start(port)
            try:
                await asyncio.wait_for(service.connected.wait(), WAIT)
                await until(lambda: _closed(store), "the gap closed")
            finally:
                await ami.stop()
        return await findings(store, FINDING_NOT_WATCHED)

    gaps = run(scenario())
    first = gaps[0]
    assert "cannot reach" in first.detail and first.until_us is not None


def test_a_refused_login_is_a_stored_gap_and_the_secret_is_never_logged(
        store: Store, run: Callable[..., Any], caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> list[StoredFinding]:
        async with FakeAmi(USERS) as ami, watching(store, ami.port, secret="wrong-" + SECRET):
            await until(lambda: findings(store, FINDING_NOT_WATCHED), "the refused login stored")
            return await findings(store, FINDING_NOT_WATCHED)

    with caplog.at_level(logging.DEBUG):
        gaps = run(scenario())
    assert "refused the login" in gaps[0].detail
    assert SECRET not in caplog.text
    assert all(SECRET not in g.detail for g in gaps)


def test_stopping_the_watcher_leaves_a_gap_the_next_start_closes(store: Store, run: Callable[..., Any]) -> None:
    async def scenario() -> tuple[list[StoredFinding], list[StoredFinding]]:
        async with FakeAmi(USERS) as ami:
            async with watching(store, ami.port) as service:
                await asyncio.wait_for(service.connected.wait(), WAIT)
            after_stop = await findings(store, FINDING_NOT_WATCHED)
            async with watching(store, ami.port) as service:
                await asyncio.wait_for(service.connected.wait(), WAIT)
                await until(lambda: _all_closed(store), "the stop's gap closed")
            return after_stop, await findings(store, FINDING_NOT_WATCHED)

    after_stop, later = run(scenario())
    assert [(g.until_us, "rpoguard watch stopped" in g.detail) for g in after_stop] == [(None, True)]
    assert later[0].id == after_stop[0].id and later[0].until_us is not None
    assert "not watched from" in later[0].detail


async def _all_closed(store: Store) -> bool:
    gaps = await findings(store, FINDING_NOT_WATCHED)
    return bool(gaps) and gaps[0].until_us is not None
