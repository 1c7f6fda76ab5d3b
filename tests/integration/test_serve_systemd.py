"""`rpoguard serve` under systemd's eyes: a real child with NOTIFY_SOCKET pointing at a datagram socket of the
test, as systemd sets it for `Type=notify`; and its `--log-format json` lines."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from support.agi_fakes import make_env, play
from support.aio import run_once
from support.serve_process import LISTENING, clean_env, listening, prepare_db, stop

PATIENCE = 30.0


@pytest.fixture
def systemd_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        path = str(tmp_path / "notify")
        sock.bind(path)
        sock.settimeout(PATIENCE)
        yield sock, path


def _spawn(cli_script: str, env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([cli_script, "serve", "--port", "0", *args], env=env, stdout=out,
                                stderr=subprocess.STDOUT)


def _next(sock: socket.socket, log: Path) -> list[str]:
    try:
        return sock.recv(4096).decode().split("\n")
    except TimeoutError:
        pytest.fail(f"no notification in {PATIENCE} s:\n{log.read_text(errors='replace')}")


def _until(sock: socket.socket, log: Path, wanted: str) -> list[list[str]]:
    """Every datagram up to and including the first with the line `wanted`."""
    seen = [_next(sock, log)]
    while wanted not in seen[-1]:
        seen.append(_next(sock, log))
    return seen


def test_ready_after_listening_then_watchdog_then_stopping(systemd_socket: tuple[socket.socket, str],
                                                           db_path: Path, tmp_path: Path, cli_script: str,
                                                           run_cli: Callable[..., Any]) -> None:
    sock, path = systemd_socket
    prepare_db(run_cli, db_path)
    log = tmp_path / "serve.log"
    env = clean_env(db_path) | {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"}
    proc = _spawn(cli_script, env, log)
    try:
        before = _until(sock, log, "READY=1")
        # At READY the port is bound and listening (the log names it).
        found = LISTENING.search(log.read_bytes())
        assert found, log.read_text()
        assert listening(int(found.group(1)))
        assert before[-1] == ["READY=1", "STATUS=FastAGI server serving"]
        # Pings every WATCHDOG_USEC / 2 from the running loop.
        assert _next(sock, log) == ["WATCHDOG=1"]
        assert _next(sock, log) == ["WATCHDOG=1"]
        proc.terminate()
        assert "STOPPING=1" in _until(sock, log, "STOPPING=1")[-1]
        assert proc.wait(timeout=PATIENCE) == 0
    finally:
        stop(proc)


def test_ready_waits_for_the_database(systemd_socket: tuple[socket.socket, str], db_path: Path, tmp_path: Path,
                                      cli_script: str, run_cli: Callable[..., Any]) -> None:
    sock, path = systemd_socket
    log = tmp_path / "serve.log"
    proc = _spawn(cli_script, clean_env(db_path) | {"NOTIFY_SOCKET": path}, log)
    try:
        waiting = _next(sock, log)
        assert waiting[0].startswith("STATUS=waiting for the database"), waiting
        assert LISTENING.search(log.read_bytes())  # serving (blocking every call) meanwhile
        prepare_db(run_cli, db_path)
        assert "READY=1" in _until(sock, log, "READY=1")[-1]
    finally:
        stop(proc)


def test_json_log_lines_parse_and_numbers_are_masked(db_path: Path, tmp_path: Path, cli_script: str,
                                                      run_cli: Callable[..., Any]) -> None:
    prepare_db(run_cli, db_path)
    log = tmp_path / "serve.log"
    proc = _spawn(cli_script, clean_env(db_path), log, "--log-format", "json", "-v")
    try:
        port = _port_from_json_log(proc, log)
        # Asterisk refuses the variables command, quoting it (with the number) in the error that is logged.
        refused = run_once(play(port, make_env("check?campaign=autunno26", ("02 1234 5678",)),
                                override=lambda index, command, variables: b"510 Invalid or unknown command\n"))
        assert refused.commands
        proc.terminate()
        assert proc.wait(timeout=PATIENCE) == 0
    finally:
        stop(proc)
    text = log.read_text()
    entries = [json.loads(line) for line in text.splitlines()]
    assert all({"time", "level", "logger", "message"} <= set(e) for e in entries)
    assert all(e["time"].endswith("+00:00") for e in entries)
    refusal = next(e for e in entries if "Asterisk answered 510" in e["message"])
    assert refusal["level"] == "ERROR" and refusal["logger"] == "rpoguard.agi.dispatch"
    assert "RPOGUARD_NUMBER=+390*" in refusal["message"]
    assert "0212345678" not in text and "02 1234 5678" not in text


def _port_from_json_log(proc: subprocess.Popen[bytes], log: Path) -> int:
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline and proc.poll() is None:
        found = LISTENING.search(log.read_bytes())
        if found:
            return int(found.group(1))
        time.sleep(0.02)
    pytest.fail(f"serve did not start:\n{log.read_text(errors='replace')}")
