"""Slow and idle clients against a real `rpoguard serve`: they cannot starve real calls, each is cut at its
own deadline, and past the connection cap the excess is refused with ``failure`` and one log line.

A slow client is what a port scan, a stuck PBX or a slowloris attack looks like: it connects, writes part of
an AGI environment and then nothing (idle) or a byte now and then (drip), never the blank line. Fast
sessions are the fake Asterisk of the other tests, each a full `check` that must end with a recorded
decision. No assertion here depends on how fast the machine is: the session deadline is set long enough
(SLOW_DEADLINE) that the slow clients are still held when the fast phase ends even on a busy CI machine,
and the tests only compare what each side saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rpoguard.agi.server import DEFAULT_LOG_INTERVAL as LOG_INTERVAL
from rpoguard.constants import CHANNEL_ALLOW, CHANNEL_BLOCK, VAR_DECISION, VAR_ID
from rpoguard.db.sqlite import audit_path
from support.agi_fakes import Transcript, make_env, play
from support.aio import run_once
from support.serve_process import clean_env, connections_held, prepare_db, start_serve, stop_all

pytestmark = pytest.mark.slow

LISTED = "06 4567 8901"
SLOW_CLIENTS = 2000
FAST_SESSIONS = 300
FAST_CONCURRENCY = 20
SLOW_DEADLINE = 20.0
# A partial environment: the first lines Asterisk would send, never the blank line that ends it.
PARTIAL_ENV = b"agi_network: yes\nagi_network_script: check?campaign=autunno26\n"
DEADLINE_LINE = "hit the session deadline"



@pytest.fixture(autouse=True)
def enough_descriptors() -> Iterator[None]:
    # The test holds SLOW_CLIENTS sockets and its server child inherits the limit (it raises its own too).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 3 * SLOW_CLIENTS + 1024
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new_hard = hard if hard == resource.RLIM_INFINITY or hard >= wanted else wanted
        try:
            # Raising the hard limit needs root (CI runs as root); the soft one never does.
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, new_hard))
        except (OSError, ValueError):
            reason = f"the hard open-file limit {hard} is below the {wanted} this test needs (ulimit -Hn)"
            if os.environ.get("CI") == "true":
                pytest.fail(reason)
            pytest.skip(reason)
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def serve(tmp_path: Path, run_cli: Callable[..., Any], cli_script: str) -> Iterator[Callable[..., Server]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(**settings: object) -> Server:
        db = tmp_path / "gate.db"
        prepare_db(run_cli, db)
        config = tmp_path / "rpoguard.toml"
        config.write_text("[serve]\n" + "".join(f"{key} = {value}\n" for key, value in settings.items()))
        env = clean_env(db)
        env["RPOGUARD_CONFIG"] = str(config)
        proc, port, log = start_serve(cli_script, env, tmp_path)
        procs.append(proc)
        return Server(proc, port, log)

    yield start
    stop_all(procs)


class SlowClient:
    """One connection that never finishes its environment; ``received`` is whatever the server wrote."""

    def __init__(self, drip: bool) -> None:
        self.drip = drip
        self.received = b""
        self.closed_by_server = False
        self.connected = asyncio.Event()
        self.connect_error: OSError | None = None

    async def run(self, port: int) -> None:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError as exc:
            self.connect_error = exc
            self.connected.set()
            return
        try:
            writer.write(PARTIAL_ENV)
            await writer.drain()
            self.connected.set()
            while True:
                try:
                    chunk = await asyncio.wait_for(reader.read(4096), 1.0)
                except TimeoutError:
                    if self.drip:
                        # One byte of a line that never ends, as a slowloris client sends it.
                        writer.write(b"x")
                        with contextlib.suppress(ConnectionError):
                            await writer.drain()
                    continue
                if not chunk:
                    self.closed_by_server = True
                    return
                self.received += chunk
        except ConnectionError:
            self.closed_by_server = True
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def _open_slow(port: int, count: int) -> tuple[list[SlowClient], list[asyncio.Task[None]]]:
    clients = [SlowClient(drip=i % 2 == 0) for i in range(count)]
    tasks: list[asyncio.Task[None]] = []
    # In batches below the listen backlog, so that no SYN is dropped and retried a second later.
    for start in range(0, count, 200):
        batch = clients[start:start + 200]
        tasks += [asyncio.create_task(c.run(port)) for c in batch]
        await asyncio.gather(*(c.connected.wait() for c in batch))
    refused = [c.connect_error for c in clients if c.connect_error is not None]
    assert not refused, f"{len(refused)} slow clients could not connect: {refused[:3]}"
    return clients, tasks


async def _fast_sessions(port: int, count: int, concurrency: int) -> list[Transcript]:
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> Transcript:
        async with gate:
            env = make_env("check?campaign=autunno26", (LISTED,), overrides={"agi_uniqueid": f"1764300000.{i}"})
            return await play(port, env, patience=15)

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def _until_server_holds(pid: int, port: int, count: int, patience: float = 15.0) -> None:
    until = time.monotonic() + patience
    while (held := connections_held(pid, port)) != count:
        assert time.monotonic() < until, f"the server holds {held} connections, not {count}, after {patience}s"
        await asyncio.sleep(0.05)


def _decided(t: Transcript) -> bool:
    # A decision was taken and recorded: the server set the decision and the audit row's id, no failure.
    return (not t.failure and t.agistatus == "SUCCESS" and t.variables.get(VAR_ID, "") != ""
            and t.variables.get(VAR_DECISION) in (CHANNEL_ALLOW, CHANNEL_BLOCK))


def _audit_rows(db: Path) -> int:
    con = sqlite3.connect(f"file:{audit_path(db)}?mode=ro", uri=True)
    try:
        return int(con.execute("SELECT count(*) FROM audit_log").fetchone()[0])
    finally:
        con.close()


def _rss_anon_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    raise AssertionError(f"no RssAnon in /proc/{pid}/status")


def test_two_thousand_slow_sessions_do_not_starve_fast_ones(
    tmp_path: Path, serve: Callable[..., Server]
) -> None:
    # The default connection cap; only the deadline is longer (see the module docstring).
    server = serve(session_deadline=SLOW_DEADLINE)
    rss_before = _rss_anon_kib(server.proc.pid)

    async def scenario() -> tuple[list[SlowClient], list[Transcript], list[int], int]:
        clients, tasks = await _open_slow(server.port, SLOW_CLIENTS)
        rss_held = _rss_anon_kib(server.proc.pid)
        fast = await _fast_sessions(server.port, FAST_SESSIONS, FAST_CONCURRENCY)
        # Still held after the fast phase: nothing written to any slow client yet, none closed.
        held = [i for i, c in enumerate(clients) if not c.received and not c.closed_by_server]
        await asyncio.wait_for(asyncio.gather(*tasks), SLOW_DEADLINE + 30)
        return clients, fast, held, rss_held

    clients, fast, held, rss_held = run_once(scenario())
    print(f"\nserver RssAnon: {rss_before} KiB idle, {rss_held} KiB holding {SLOW_CLIENTS} slow connections")

    assert len(held) == SLOW_CLIENTS, f"only {len(held)} slow clients were still held after the fast phase"
    undecided = [t.written[-200:] for t in fast if not _decided(t)]
    assert not undecided, f"{len(undecided)} of {FAST_SESSIONS} fast sessions got no decision: {undecided[:3]}"
    # Every slow client was cut by the server at its deadline with "failure" (Asterisk would block the
    # call), never a silent close that would read as SUCCESS.
    for client in clients:
        assert client.received.startswith(b"failure\n"), client.received[:80]
        assert client.closed_by_server
    log = server.log_text()
    assert log.count(DEADLINE_LINE) == SLOW_CLIENTS, log[-3000:]
    assert "connection limit" not in log, log[-3000:]
    assert server.proc.poll() is None
    # Only the fast sessions reached the gate, and each decision is in the audit log.
    assert _audit_rows(tmp_path / "gate.db") == FAST_SESSIONS


def test_past_the_connection_cap_the_excess_is_refused_with_one_log_line(serve: Callable[..., Server]) -> None:
    cap, extra = 100, 60
    server = serve(session_deadline=SLOW_DEADLINE, max_connections=cap)

    async def scenario() -> tuple[list[SlowClient], list[SlowClient], list[Transcript], list[Transcript], float]:
        # Every slow client holds its slot before the excess arrives (connect() returns before the server's
        # loop has accepted the connection).
        held, held_tasks = await _open_slow(server.port, cap)
        await _until_server_holds(server.proc.pid, server.port, cap)
        # The cap is full of slow clients: more connections, slow or a real call, are refused at once.
        burst_started = time.monotonic()
        excess, excess_tasks = await _open_slow(server.port, extra)
        await asyncio.wait_for(asyncio.gather(*excess_tasks), 15)
        refused_calls = await _fast_sessions(server.port, 10, 5)
        burst = time.monotonic() - burst_started
        # Once the slow clients are cut at their deadline, calls go through again.
        await asyncio.wait_for(asyncio.gather(*held_tasks), SLOW_DEADLINE + 30)
        after = await _fast_sessions(server.port, 10, 5)
        return held, excess, refused_calls, after, burst

    held, excess, refused_calls, after, burst = run_once(scenario())
    for client in excess:
        assert client.received.startswith(b"failure\n"), client.received[:80]
        assert client.closed_by_server
    for t in refused_calls:
        # Refused, never answered SUCCESS without a decision: the dialplan blocks the call.
        assert t.failed_closed, t.written[-200:]
        assert not t.commands
    for client in held:
        assert client.received.startswith(b"failure\n"), client.received[:80]
    assert all(_decided(t) for t in after), [t.written[-200:] for t in after if not _decided(t)]
    log = server.log_text()
    limit_lines = [line for line in log.splitlines() if f"connection limit of {cap} sessions reached" in line]
    # One line per burst of refusals (at most one per reason every LOG_INTERVAL s), not one per connection:
    # the burst normally lasts well under LOG_INTERVAL, so this is one line for 70 refusals.
    assert 1 <= len(limit_lines) <= 1 + int(burst / LOG_INTERVAL), (burst, limit_lines)
    assert server.proc.poll() is None
