"""Classic AGI (stdio.serve_stdio / run_stdio) over real pipes, in-process and as a child process.

Asterisk's side is played the way run_agi does it: environment on the program's stdin, one reply per
command line, a line starting with "failure" ends it with FAILURE, end of file ends it with SUCCESS
unless the exit status is non-zero.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from rpoguard.agi.routes import build_routes
from rpoguard.agi.stdio import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, serve_stdio
from rpoguard.constants import SOURCE_AGI
from support.agi_fakes import ALLOW_VERDICT, FakeGate, Transcript, asterisk_answer, make_env

# The child runs as a module from tests/, the way its imports of support.* resolve.
TESTS = Path(__file__).resolve().parents[1]
CHILD = "support.agi_stdio_child"
NUMBER = "0612345678"
LATIN1_NAME = "Società Srl".encode("latin-1")

EXPECTED_ALLOW = [
    # One round trip (AgiSession.set_variables) once the record is durable, the decision last.
    b'EXEC MSet "RPOGUARD_REASON=,RPOGUARD_REASONS=,RPOGUARD_NUMBER=+390612345678,RPOGUARD_ID=0193d5a0-allow,'
    b'RPOGUARD_DECISION=ALLOW"',
]


def wire(commands: list[bytes]) -> bytes:
    return b"".join(command + b"\n" for command in commands)


def classic_env(
    args: tuple[str | bytes, ...] = ("check", NUMBER, "C1"),
    request: str | bytes = "rpoguard-agi",
    overrides: dict[str, str | bytes] | None = None,
) -> bytes:
    return make_env(None, args, network=False, request=request, overrides=overrides)


class FdLines:
    """Lines from a descriptor with a time limit, the way Asterisk's fgets loop would see them."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = b""

    def readline(self, patience: float) -> bytes:
        end = time.monotonic() + patience
        while b"\n" not in self.buffer:
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no complete line in {patience}s; have {self.buffer[:80]!r}")
            ready, _, _ = select.select([self.fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(self.fd, 65536)
            if not chunk:
                line, self.buffer = self.buffer, b""
                return line
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line + b"\n"


def be_asterisk(read_fd: int, write_fd: int, env: bytes, patience: float = 10.0) -> Transcript:
    t = Transcript()
    # Asterisk ignores SIGPIPE and a failed write: a program that already quit is not an error here.
    with contextlib.suppress(BrokenPipeError):
        os.write(write_fd, env)
    lines = FdLines(read_fd)
    while True:
        line = lines.readline(patience)
        t.written += line
        if not line:
            t.agistatus = "SUCCESS"
            break
        if line[:7].lower() == b"failure":
            t.failure = True
            t.agistatus = "FAILURE"
            break
        command = line.rstrip(b"\n")
        t.commands.append(command)
        with contextlib.suppress(BrokenPipeError):
            os.write(write_fd, asterisk_answer(command, t.variables))
    return t


def in_process(
    run: Any, gate: FakeGate, env: bytes, route: str | None = None, **options: Any
) -> tuple[int, Transcript]:
    """serve_stdio on pipes in this process; a thread plays Asterisk on the other ends."""
    to_program_r, to_program_w = os.pipe()
    from_program_r, from_program_w = os.pipe()
    result: list[Transcript] = []
    player = threading.Thread(target=lambda: result.append(be_asterisk(from_program_r, to_program_w, env)))
    player.start()
    try:
        options.setdefault("watchdog", False)
        code = run(serve_stdio(build_routes(gate), route, stdin=to_program_r, stdout=from_program_w, **options))
    finally:
        # Our ends close here; the player then sees end of file, as Asterisk does when the program exits.
        os.close(from_program_w)
        os.close(to_program_r)
        player.join(15)
        os.close(from_program_r)
        os.close(to_program_w)
    assert result, "the Asterisk side did not finish"
    return code, result[0]


# -- in-process --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_name", "args", "route"),
    [
        ("rpoguard-agi", ("check", NUMBER, "C1"), None),  # AGI(rpoguard-agi,check,NUMBER,C1)
        ("rpoguard-agi", ("check", NUMBER, "C1", ""), "check"),  # what `rpoguard agi ROUTE ARGS...` gets
        ("/var/lib/asterisk/agi-bin/rpoguard-check", (NUMBER, "C1"), None),  # symlink named after the route
        ("rpoguard-pinned", (NUMBER, "C1"), "check"),  # a wrapper that runs `rpoguard agi check`
    ],
)
def test_route_selection_and_a_full_allow_session(
    run: Any, request_name: str, args: tuple[str, ...], route: str | None
) -> None:
    gate = FakeGate(ALLOW_VERDICT)
    code, t = in_process(run, gate, classic_env(args, request_name), route)
    assert code == EXIT_OK
    assert t.written == wire(EXPECTED_ALLOW)
    assert t.dialplan_allows
    (call,) = gate.calls
    assert (call.raw_number, call.campaign_id, call.caller_id) == (NUMBER, "C1", "0694801234")
    assert call.source == SOURCE_AGI


def test_optout_over_stdio(run: Any) -> None:
    gate = FakeGate()
    code, t = in_process(run, gate, classic_env(("optout", NUMBER, "C1")))
    assert code == EXIT_OK
    assert t.written == b'SET VARIABLE RPOGUARD_OPTOUT "OK"\n'
    assert gate.optouts[0].source == SOURCE_AGI


def test_unknown_explicit_route_is_a_usage_error_answered_failure(run: Any) -> None:
    gate = FakeGate()
    code, t = in_process(run, gate, classic_env(), "nosuch")
    assert code == EXIT_USAGE
    assert t.written == b"failure\n"
    assert gate.calls == []


def test_no_route_in_the_arguments_answers_failure(run: Any, caplog: pytest.LogCaptureFixture) -> None:
    gate = FakeGate()
    code, t = in_process(run, gate, classic_env((NUMBER, "C1")))
    assert code == EXIT_FAILURE
    assert t.written == b"failure\n"
    assert gate.calls == []
    assert any("AGI(rpoguard-agi,check" in r.getMessage() for r in caplog.records)


def test_latin1_caller_name_gets_the_normal_decision(run: Any) -> None:
    # Not read by the decision: kept with U+FFFD, exactly as over FastAGI (test_agi_encoding.py).
    gate = FakeGate(ALLOW_VERDICT)
    env = classic_env(overrides={"agi_calleridname": LATIN1_NAME, "agi_channel": b"DAHDI/caf\xe9-1"})
    code, t = in_process(run, gate, env)
    assert code == EXIT_OK
    assert t.written == wire(EXPECTED_ALLOW)
    assert gate.calls[0].channel == "DAHDI/caf\ufffd-1"


@pytest.mark.parametrize(
    ("args", "request_name", "overrides"),
    [
        (("check", b"06123\xe05678", "C1"), "rpoguard-agi", {}),  # the number, after the route name
        (("check", NUMBER, LATIN1_NAME), "rpoguard-agi", {}),  # the campaign
        ((NUMBER, "C1", b"069\xe0"), "/var/lib/asterisk/agi-bin/rpoguard-check", {}),  # caller ID, route by name
        (("check", NUMBER, "C1"), "rpoguard-agi", {"agi_callerid": b"069480\xe01234"}),  # the channel's caller ID
        (("check", NUMBER, "C1"), b"/var/lib/asterisk/agi-bin/\xe0/rpoguard-agi", {}),  # the program, which routes
    ],
    ids=["number", "campaign", "caller-id-argument", "caller-id-channel", "program"],
)
def test_a_value_the_decision_reads_that_is_not_utf8_answers_failure(
    run: Any, args: tuple[str | bytes, ...], request_name: str | bytes, overrides: dict[str, str | bytes]
) -> None:
    gate = FakeGate(ALLOW_VERDICT)
    code, t = in_process(run, gate, classic_env(args, request_name, overrides))
    assert code == EXIT_FAILURE
    assert t.written == b"failure\n" and t.failed_closed
    assert gate.calls == []


def test_gate_error_answers_failure_and_a_failing_exit_status(run: Any) -> None:
    code, t = in_process(run, FakeGate(error=RuntimeError("database is locked")), classic_env())
    assert code == EXIT_FAILURE
    assert t.written == b"failure\n"
    assert not t.sent_allow


def test_deadline_answers_failure_without_allow(run: Any) -> None:
    gate = FakeGate(delay=3.0)
    started = time.monotonic()
    code, t = in_process(run, gate, classic_env(), session_deadline=0.3)
    assert code == EXIT_FAILURE
    assert t.written == b"failure\n"
    assert time.monotonic() - started < 2.0


def test_stdin_ending_before_the_environment_answers_failure(run: Any) -> None:
    code, t = in_process(run, FakeGate(), classic_env()[:100])
    assert code == EXIT_FAILURE
    assert t.written == b"failure\n"


def test_recorded_session_replayed_from_regular_files(run: Any, tmp_path: Path) -> None:
    stdin = tmp_path / "session.in"
    stdin.write_bytes(classic_env() + b"200 result=1\n" * 5)
    stdout = tmp_path / "session.out"
    gate = FakeGate()
    with stdin.open("rb") as inp, stdout.open("wb") as out:
        code = run(serve_stdio(build_routes(gate), stdin=inp, stdout=out, watchdog=False, handle_sighup=False))
    assert code == EXIT_OK
    assert stdout.read_bytes() == wire(EXPECTED_ALLOW)
    assert gate.calls[0].raw_number == NUMBER


def test_error_reply_in_a_replayed_session(run: Any, tmp_path: Path) -> None:
    stdin = tmp_path / "session.in"
    stdin.write_bytes(classic_env() + b"510 Invalid or unknown command\n")
    stdout = tmp_path / "session.out"
    with stdin.open("rb") as inp, stdout.open("wb") as out:
        code = run(serve_stdio(build_routes(FakeGate()), stdin=inp, stdout=out, watchdog=False))
    assert code == EXIT_FAILURE
    assert stdout.read_bytes() == wire(EXPECTED_ALLOW[:1]) + b"failure\n"


# -- as a child process, the way Asterisk runs it ---------------------------------------------------------------


def run_child(
    mode: str, env: bytes, *, deadline: float = 2.0, route: str = "-", hangup_when_gate_entered: bool = False
) -> tuple[int, Transcript, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", CHILD, mode, str(deadline), route],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=TESTS,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        if hangup_when_gate_entered:
            os.write(proc.stdin.fileno(), env)
            errors = FdLines(proc.stderr.fileno())
            while b"GATE ENTERED" not in errors.readline(10):
                pass
            proc.send_signal(signal.SIGHUP)
            env = b""
        t = be_asterisk(proc.stdout.fileno(), proc.stdin.fileno(), env)
        proc.stdin.close()
        code = proc.wait(15)
        # run_agi: at end of file it waits for the exit; a non-zero status is FAILURE.
        if t.agistatus == "SUCCESS" and code != 0:
            t.agistatus = "FAILURE"
        return code, t, proc.stderr.read().decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        # stdin too: a test that fails before closing it must not leave the pipe to the collector.
        proc.stdin.close()
        proc.stdout.close()
        proc.stderr.close()


def test_child_allow_session() -> None:
    code, t, _ = run_child("allow", classic_env())
    assert code == 0
    assert t.written == wire(EXPECTED_ALLOW)
    assert t.dialplan_allows


def test_child_with_route_from_argv_like_the_cli() -> None:
    code, t, _ = run_child("allow", classic_env(("check", NUMBER, "C1", "")), route="check")
    assert code == 0
    assert t.written == wire(EXPECTED_ALLOW)


def test_child_gate_error_writes_failure_and_exits_non_zero() -> None:
    code, t, err = run_child("raise", classic_env())
    assert code == EXIT_FAILURE
    assert t.written == b"failure\n"
    assert t.agistatus == "FAILURE"
    assert "database is locked" in err


def test_child_with_a_stuck_event_loop_is_ended_by_the_watchdog() -> None:
    started = time.monotonic()
    code, t, _ = run_child("stuck", classic_env(), deadline=0.3)
    assert code == EXIT_FAILURE
    assert t.written == b"failure\n"
    assert not t.sent_allow
    assert time.monotonic() - started < 8


def test_child_finishes_the_session_after_sighup() -> None:
    # Asterisk sends SIGHUP when the channel hangs up; SET VARIABLE still works on a dead channel, and
    # finishing lets the decision that was made be recorded instead of dying half-way.
    code, t, err = run_child("slow", classic_env(), hangup_when_gate_entered=True)
    assert code == 0, err
    assert t.written == wire(EXPECTED_ALLOW)
    assert "SIGHUP" in err


def test_child_with_a_latin1_caller_name_allows_and_says_so_once() -> None:
    env = classic_env(overrides={"agi_calleridname": LATIN1_NAME})
    code, t, err = run_child("allow", env)
    assert code == 0, err
    assert t.written == wire(EXPECTED_ALLOW)
    assert err.count("is not UTF-8") == 1 and "'agi_calleridname'" in err
    assert "Societ" not in err


def test_child_with_a_latin1_number_answers_failure_and_exits_non_zero() -> None:
    code, t, err = run_child("allow", classic_env(("check", b"06123\xe05678", "C1")))
    assert code == EXIT_FAILURE
    assert t.written == b"failure\n" and t.agistatus == "FAILURE"
    assert "GATE ENTERED" not in err
    assert "agi_arg_2 is not UTF-8" in err
