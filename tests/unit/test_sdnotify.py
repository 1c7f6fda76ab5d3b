"""systemd notifications (sdnotify.py) to a real AF_UNIX datagram socket standing in for systemd's, and the
JSON log lines (logformat.py)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from rpoguard.logformat import JsonFormatter, configure
from rpoguard.numbers import redact
from rpoguard.sdnotify import Notifier, watchdog, watchdog_interval
from support.aio import Runner


@pytest.fixture
def systemd_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket and the $NOTIFY_SOCKET value naming it (a path)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        path = str(tmp_path / "notify")
        sock.bind(path)
        sock.settimeout(5)
        yield sock, path


def test_messages_reach_a_path_socket(systemd_socket: tuple[socket.socket, str]) -> None:
    sock, path = systemd_socket
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": path})
    assert notifier.enabled
    assert notifier.send("READY=1", "STATUS=serving")
    assert notifier.send("STOPPING=1")
    notifier.close()
    assert sock.recv(4096) == b"READY=1\nSTATUS=serving"
    assert sock.recv(4096) == b"STOPPING=1"


def test_messages_reach_an_abstract_socket() -> None:
    name = f"rpoguard-test-{secrets.token_hex(6)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(5)
        notifier = Notifier(f"@{name}")
        assert notifier.send("READY=1")
        notifier.close()
        assert sock.recv(4096) == b"READY=1"


def test_nothing_is_sent_without_notify_socket() -> None:
    notifier = Notifier.from_environ({})
    assert not notifier.enabled
    assert not notifier.send("READY=1")
    assert not Notifier.from_environ({"NOTIFY_SOCKET": ""}).enabled


def test_a_failed_send_is_logged_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    notifier = Notifier(str(tmp_path / "nobody-listens"))
    with caplog.at_level(logging.WARNING, logger="rpoguard.sdnotify"):
        assert not notifier.send("WATCHDOG=1")
        assert not notifier.send("WATCHDOG=1")
    notifier.close()
    assert [r.getMessage().startswith("systemd notification to") for r in caplog.records] == [True]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "10000000"}, 5.0),
        ({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "OWN"}, 5.0),
        ({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "OTHER"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "ten"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec(env: dict[str, str], expected: float | None) -> None:
    pid = os.getpid()
    env = {k: str(pid) if v == "OWN" else str(pid + 1) if v == "OTHER" else v for k, v in env.items()}
    assert watchdog_interval(env) == expected
    assert watchdog_interval(env, pid) == expected


def test_watchdog_pings_until_cancelled(systemd_socket: tuple[socket.socket, str], run: Runner) -> None:
    sock, path = systemd_socket
    notifier = Notifier(path)

    async def three_pings() -> None:
        task = asyncio.create_task(watchdog(notifier, 0.01))
        loop = asyncio.get_running_loop()
        for _ in range(3):
            assert await loop.run_in_executor(None, sock.recv, 4096) == b"WATCHDOG=1"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(three_pings())
    notifier.close()


def _record(msg: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc else None
    return logging.LogRecord("rpoguard.agi.dispatch", logging.WARNING, __file__, 1, msg, args, exc_info)


def test_json_lines_carry_the_fields() -> None:
    line = JsonFormatter().format(_record("route %r: %s", "check", redact("dialled 0612345678")))
    entry = json.loads(line)
    assert set(entry) == {"time", "level", "logger", "message"}
    assert entry["time"].endswith("+00:00")
    assert (entry["level"], entry["logger"]) == ("WARNING", "rpoguard.agi.dispatch")
    assert entry["message"].startswith("route 'check': dialled 0612*")
    assert "0612345678" not in line


def test_json_exception_text_is_masked() -> None:
    try:
        raise ValueError("bad number +393331234567")
    except ValueError as exc:
        entry = json.loads(JsonFormatter().format(_record("failed", exc=exc)))
    assert "ValueError" in entry["exception"]
    assert "Traceback" in entry["exception"]
    assert "3331234567" not in entry["exception"]


def test_configure_writes_one_object_per_line() -> None:
    out = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    root.handlers.clear()
    try:
        configure(verbose=True, log_format="json", stream=out)
        logging.getLogger("rpoguard.test").info("one")
        logging.getLogger("rpoguard.test").warning("two")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    lines = out.getvalue().splitlines()
    assert [json.loads(line)["message"] for line in lines] == ["one", "two"]
