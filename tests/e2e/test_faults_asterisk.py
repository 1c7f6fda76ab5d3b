"""Database faults under a real Asterisk 22: while the database is missing, corrupt or locked by another
writer beyond the session deadline, no call reaches the SIPp carrier, the dialplan says engine_error, the
server stays up and says so once; once the database is back, calls flow again without a restart.

The rig is test_gate.py's (its fixtures, a database of its own for this module): the real `rpoguard serve`
on a faked working-day clock, Asterisk running dialplan/rpoguard.conf, SIPp as the carrier. The faults are
made to the files as an operator's mistake or a disk would make them, never through a test switch.
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rpoguard.constants import ENGINE_ERROR
from rpoguard.db.sqlite import audit_path

from .harness import Asterisk, HarnessError, SippCarrier
from .test_gate import (  # noqa: F401  (fixtures used by name)
    LISTED,
    WORKDAY,
    CallOutcome,
    GateServer,
    Rig,
    assert_allowed,
    cli_env,
    freepbx17_hook,
    gate_asterisk,
    gate_server,
    libfaketime,
)

pytestmark = pytest.mark.e2e

CALLS_PER_FAULT = 3
UNAVAILABLE_LINE = "database unavailable, every call is blocked (engine_error)"
AVAILABLE_LINE = "database available again"
LOCKED_LINE = "decision log cannot be written, calls are blocked (engine_error)"


class FaultRig(Rig):
    """test_gate's Rig, except that it does not read the audit log while the database is away or locked
    (the CLI would fail, and must not be what puts a database back); the test reads it afterwards."""

    database_down = False

    def audit_rows(self) -> list[dict[str, object]]:
        return [] if self.database_down else super().audit_rows()


@pytest.fixture(scope="module")
def rig(
    gate_asterisk: Asterisk, sipp_carrier: SippCarrier, gate_server: GateServer, cli_env: dict[str, str]  # noqa: F811
) -> Iterator[FaultRig]:
    rig = FaultRig(gate_asterisk, sipp_carrier, gate_server, cli_env)
    yield rig
    rig.close()


@pytest.fixture(autouse=True)
def _gate_ready(rig: FaultRig, request: pytest.FixtureRequest) -> Iterator[None]:
    rig.server.ensure(WORKDAY)
    rig.test = request.node.name.removeprefix("test_")
    yield
    rig.database_down = False
    rig.server.ensure(WORKDAY)


def _db(rig: FaultRig) -> Path:
    return Path(rig.cli_env["RPOGUARD_DB"])


def _log_from(rig: FaultRig, mark: int) -> str:
    with rig.server.log_path.open("rb") as log:
        log.seek(mark)
        return log.read().decode(errors="replace")


def _wait_for_log(rig: FaultRig, mark: int, text: str, timeout: float = 15) -> None:
    # The server notices a file change within its watch interval (1 s); wait for its own word on it.
    deadline = time.monotonic() + timeout
    while text not in _log_from(rig, mark):
        if time.monotonic() > deadline:
            raise HarnessError(f"rpoguard serve never logged {text!r}\n{rig.server.logs()}")
        time.sleep(0.1)


def assert_blocked_engine_error(outcome: CallOutcome, agistatus: str) -> None:
    assert outcome.invites == [], f"a call reached the carrier while the database was broken\n{outcome}"
    assert not outcome.answered, outcome
    assert not outcome.logged("e2e gate:"), f"the dialplan went on past the gate\n{outcome}"
    assert outcome.logged(f"rpoguard: call {outcome.uniqueid} blocked: {ENGINE_ERROR} (AGISTATUS={agistatus})"), (
        outcome
    )
    # What the rest of the dialplan sees once the subroutine is done (dialplan_gate.conf's hangup handler):
    # BLOCK, engine_error, and no decision id, since none was recorded.
    hangup = [line for line in outcome.gate_log if line.startswith(f"e2e hangup: {outcome.uniqueid} ")]
    assert len(hangup) == 1, outcome
    assert f"decision [BLOCK] reason [{ENGINE_ERROR}] " in hangup[0], outcome
    assert " id [] " in hangup[0], outcome


def _faulty_calls(rig: FaultRig, label: str, agistatus: str) -> list[CallOutcome]:
    outcomes = [rig.call(LISTED, f"BLOCK: {label}") for _ in range(CALLS_PER_FAULT)]
    for outcome in outcomes:
        assert_blocked_engine_error(outcome, agistatus)
    return outcomes


def _recovered(rig: FaultRig, pid: int, blocked: list[CallOutcome]) -> None:
    outcome = rig.call(LISTED, "ALLOW listed, database back")
    assert_allowed(outcome, LISTED, "listed")
    # The same process all along: it stayed up and recovered by itself.
    assert rig.server.running and rig.server.pid == pid
    # Nothing was recorded for the calls it blocked while the database was broken.
    blocked_ids = {o.uniqueid for o in blocked}
    assert not [row for row in rig.audit_rows() if row["uniqueid"] in blocked_ids]


def test_missing_database_blocks_calls_and_they_flow_again_when_it_is_back(rig: FaultRig) -> None:
    assert_allowed(rig.call(LISTED, "ALLOW listed, before the fault"), LISTED, "listed")
    pid, mark, db = rig.server.pid, rig.server.log_path.stat().st_size, _db(rig)
    aside = db.with_name("aside.db")
    db.rename(aside)  # a botched restore or a wrong path: the file is simply not there
    rig.database_down = True
    try:
        _wait_for_log(rig, mark, UNAVAILABLE_LINE)
        blocked = _faulty_calls(rig, "database missing", "SUCCESS")
        assert rig.server.running and rig.server.pid == pid
        assert not db.exists(), "something created an empty database in place of the missing one"
    finally:
        aside.rename(db)
        rig.database_down = False
    _wait_for_log(rig, mark, AVAILABLE_LINE)
    _recovered(rig, pid, blocked)
    log = _log_from(rig, mark)
    # One line for the cause, not one per call.
    assert log.count(UNAVAILABLE_LINE) == 1, log


def test_corrupt_database_blocks_calls_and_they_flow_again_when_it_is_replaced(
    rig: FaultRig, tmp_path: Path
) -> None:
    assert_allowed(rig.call(LISTED, "ALLOW listed, before the fault"), LISTED, "listed")
    pid, mark, db = rig.server.pid, rig.server.log_path.stat().st_size, _db(rig)
    good = tmp_path / "good.db"
    shutil.copyfile(db, good)
    garbage = tmp_path / "garbage.db"
    # A file that is not a database at all, in place of the real one (a new inode, as a restore makes).
    garbage.write_bytes(b"this is not an SQLite database\n" * 4096)
    garbage.replace(db)
    rig.database_down = True
    try:
        _wait_for_log(rig, mark, UNAVAILABLE_LINE)
        blocked = _faulty_calls(rig, "database corrupt", "SUCCESS")
        assert rig.server.running and rig.server.pid == pid
    finally:
        good.replace(db)
        rig.database_down = False
    _wait_for_log(rig, mark, AVAILABLE_LINE)
    _recovered(rig, pid, blocked)
    log = _log_from(rig, mark)
    assert log.count(UNAVAILABLE_LINE) == 1, log
    assert "not a database" in log, log


def test_audit_log_locked_beyond_the_deadline_blocks_calls_and_they_flow_again(rig: FaultRig) -> None:
    assert_allowed(rig.call(LISTED, "ALLOW listed, before the fault"), LISTED, "listed")
    pid, mark = rig.server.pid, rig.server.log_path.stat().st_size
    # Another writer holds the decision log for longer than the session deadline (2 s) of each call:
    # no decision can be recorded, so none may be answered.
    locker = sqlite3.connect(audit_path(_db(rig)), isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    rig.database_down = True  # the CLI cannot read the log either while it is locked
    try:
        blocked = _faulty_calls(rig, "audit log locked", "FAILURE")
        assert rig.server.running and rig.server.pid == pid
    finally:
        locker.execute("ROLLBACK")
        locker.close()
        rig.database_down = False
    _recovered(rig, pid, blocked)
    log = _log_from(rig, mark)
    # The cause, once: the calls took at least CALLS_PER_FAULT session deadlines (2 s each), longer than
    # the writer's 5 s wait for the lock, so the write failed while the lock was still held.
    assert log.count(LOCKED_LINE) == 1, log
    assert "locked by another writer" in log, log
    assert "decision log writable again" in log, log
    assert UNAVAILABLE_LINE not in log, log
