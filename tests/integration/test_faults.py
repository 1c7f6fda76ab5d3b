"""Faults under a running `rpoguard serve`: nothing is let through, the server stays up, says so once, and
recovers by itself.

Each test drives the real server process with the fake Asterisk over a real socket. Decisions here never
depend on the hour: the assertions are about BLOCK/failure versus ALLOW and about engine_error.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rpoguard.constants import ENGINE_ERROR, VAR_ID, VAR_REASONS
from rpoguard.db.sqlite import audit_path
from support.agi_fakes import Transcript, make_env, play
from support.aio import run_once
from support.serve_process import clean_env, prepare_db, start_serve, stop_all

LISTED = "06 4567 8901"  # listed, not registered in the examples: ALLOW in calling hours


class Server:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc, self.port, self.log = proc, port, log

    def session(self, number: str = LISTED) -> Transcript:
        return run_once(play(self.port, make_env("check?campaign=autunno26", (number,)), patience=10))

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")



# Root without the two capabilities that let it read and search any file whatever its mode: chmod 000
# then bites as it does for the service's own user. Running as another user instead (nobody) needs that
# user to reach the checkout's virtualenv and sources, which it cannot when the clone sits under a 0700
# folder (mktemp -d, most home folders).
WITHOUT_DAC = ("setpriv", "--bounding-set=-dac_override,-dac_read_search", "--")


@pytest.fixture
def start_server(tmp_path: Path, cli_script: str) -> Iterator[Callable[..., Server]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(db: Path, *, wrapper: tuple[str, ...] = ()) -> Server:
        proc, port, log = start_serve(cli_script, clean_env(db), tmp_path, wrapper=wrapper)
        procs.append(proc)
        return Server(proc, port, log)

    yield start
    stop_all(procs)


def _blocked_by_engine_error(t: Transcript) -> bool:
    return not t.dialplan_allows and ENGINE_ERROR in t.variables.get(VAR_REASONS, ENGINE_ERROR).split(",")


def _wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def _served_normally(server: Server) -> Callable[[], bool]:
    # Served by a working engine: whatever the hour, the reasons are not engine_error.
    def check() -> bool:
        t = server.session()
        return t.agistatus == "SUCCESS" and ENGINE_ERROR not in t.variables.get(VAR_REASONS, ENGINE_ERROR)

    return check


def test_missing_database_blocks_every_call_then_recovers(
    tmp_path: Path, run_cli: Callable[..., Any], start_server: Callable[..., Server]
) -> None:
    db = tmp_path / "gate.db"
    server = start_server(db)  # no database yet: the server starts anyway
    for _ in range(5):
        assert _blocked_by_engine_error(server.session())
    assert server.proc.poll() is None
    # One clear line for the cause, not one per call; and the server did not create an empty database.
    assert server.log_text().count("database unavailable") == 1, server.log_text()
    assert not db.exists()

    prepare_db(run_cli, db)
    assert _wait_until(_served_normally(server)), server.log_text()
    assert "database available again" in server.log_text()

    # Taken away while serving (moved aside, as a botched restore would), then put back.
    aside = tmp_path / "aside.db"
    db.rename(aside)
    assert _wait_until(lambda: _blocked_by_engine_error(server.session()))
    aside.rename(db)
    assert _wait_until(_served_normally(server))
    assert server.proc.poll() is None


def test_corrupt_database_blocks_with_engine_error_and_recovers(
    tmp_path: Path, run_cli: Callable[..., Any], start_server: Callable[..., Server]
) -> None:
    db = tmp_path / "gate.db"
    prepare_db(run_cli, db)
    good = tmp_path / "good.db"
    shutil.copyfile(db, good)
    server = start_server(db)
    assert _wait_until(_served_normally(server))

    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(os.urandom(64 * 1024))
    garbage.replace(db)  # a new file (new inode) full of noise
    assert _wait_until(lambda: _blocked_by_engine_error(server.session()))
    for _ in range(5):
        assert _blocked_by_engine_error(server.session())
    assert server.proc.poll() is None

    good.replace(db)
    assert _wait_until(_served_normally(server)), server.log_text()


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to run the server without root's file-access override")
def test_unreadable_database_blocks_then_recovers(
    tmp_path: Path, run_cli: Callable[..., Any], start_server: Callable[..., Server]
) -> None:
    db = tmp_path / "gate.db"
    prepare_db(run_cli, db)
    server = start_server(db, wrapper=WITHOUT_DAC)
    assert _wait_until(_served_normally(server)), server.log_text()

    db.chmod(0)
    assert _wait_until(lambda: _blocked_by_engine_error(server.session())), server.log_text()
    assert server.proc.poll() is None
    db.chmod(0o600)
    assert _wait_until(_served_normally(server)), server.log_text()


def test_audit_file_locked_longer_than_the_deadline_lets_nothing_through(
    tmp_path: Path, run_cli: Callable[..., Any], start_server: Callable[..., Server]
) -> None:
    db = tmp_path / "gate.db"
    prepare_db(run_cli, db)
    server = start_server(db)
    assert _wait_until(_served_normally(server))

    locker = sqlite3.connect(audit_path(db), isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        outcomes = [server.session() for _ in range(3)]
        elapsed = time.monotonic() - started
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    for t in outcomes:
        # No decision can be recorded: nothing is sent before the record is durable, so the session ends
        # in failure (deadline) with no variable set at all.
        assert not t.dialplan_allows
        assert t.written == b"failure\n", t.written
    assert elapsed < 3 * 5, elapsed  # each bounded by the 2 s session deadline, not the 5 s lock wait
    assert server.proc.poll() is None
    # The cause in one line: three deadlines (6 s) outlast the writer's 5 s wait for the lock. The writer
    # thread logs it on its own schedule: wait for the line to reach the file, then count.
    cause = "decision log cannot be written, calls are blocked (engine_error)"
    assert _wait_until(lambda: cause in server.log_text()), server.log_text()
    assert server.log_text().count(cause) == 1, server.log_text()
    assert _wait_until(_served_normally(server))


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a small tmpfs that can fill up")
def test_disk_full_while_recording_blocks_and_loses_nothing(
    request: pytest.FixtureRequest, run_cli: Callable[..., Any], start_server: Callable[..., Server]
) -> None:
    mount = Path(tempfile.mkdtemp(prefix="rpoguard-full-", dir="/tmp"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], check=True)

    def unmount() -> None:
        subprocess.run(["umount", "-l", str(mount)], check=False)
        shutil.rmtree(mount, ignore_errors=True)

    request.addfinalizer(unmount)
    db = mount / "gate.db"
    prepare_db(run_cli, db)
    server = start_server(db)
    assert _wait_until(_served_normally(server))
    before = _verify(run_cli, db)

    filler = mount / "filler"
    with filler.open("wb") as out, contextlib.suppress(OSError):
        while True:
            out.write(b"\0" * 65536)
            out.flush()
    outcomes = [server.session() for _ in range(20)]
    # A call whose decision cannot be recorded is not placed: each is either recorded as usual (SQLite
    # reused space it already had) or blocked with engine_error; and the full disk does show.
    for t in outcomes:
        recorded = t.variables.get(VAR_ID, "") != "" and ENGINE_ERROR not in t.variables.get(VAR_REASONS, "")
        assert recorded or _blocked_by_engine_error(t), t.written
    assert any(_blocked_by_engine_error(t) for t in outcomes), [t.variables for t in outcomes]
    assert server.proc.poll() is None

    filler.unlink()
    assert _wait_until(_served_normally(server))
    server.proc.terminate()
    server.proc.wait(timeout=10)
    after = _verify(run_cli, db)
    # Nothing recorded before the disk filled was lost, and the chain still verifies.
    assert after >= before + 1


def _verify(run_cli: Callable[..., Any], db: Path) -> int:
    result = run_cli("--db", db, "audit", "verify")
    assert result.code == 0, (result.out, result.err)
    return int(result.out.split("intact: ")[1].split(" ")[0])
