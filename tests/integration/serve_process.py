"""`rpoguard serve` as a child process for the integration tests: started on a free port, ready when it
accepts connections, always stopped (SIGTERM, then SIGKILL) at the end."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

START_TIMEOUT = 20.0
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_serve(cli_script: str, env: Mapping[str, str], folder: Path, *,
                wrapper: Sequence[str] = (), args: Sequence[str] = ()) -> tuple[subprocess.Popen[bytes], int, Path]:
    """Start the server and wait until it accepts; returns (process, port, log file)."""
    port = free_port()
    log = folder / f"serve-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([*wrapper, cli_script, "serve", "--port", str(port), *args], env=dict(env),
                                stdout=out, stderr=subprocess.STDOUT, cwd=folder)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            # A bare TCP connect is the health check that hangs some FastAGI servers: ours answers failure.
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port, log
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                stop(proc)
                pytest.fail(f"rpoguard serve did not start:\n{log.read_text(errors='replace')}")
            time.sleep(0.05)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@contextlib.contextmanager
def running_serve(
    cli_script: str, env: Mapping[str, str], folder: Path, args: Sequence[str] = ()
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    proc, port, _ = start_serve(cli_script, env, folder, args=args)
    try:
        yield proc, port
    finally:
        stop(proc)


def clean_env(db: Path) -> dict[str, str]:
    """The test's environment with only this database: no RPOGUARD_* setting from the host leaks in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RPOGUARD_")}
    env["RPOGUARD_DB"] = str(db)
    return env


def prepare_db(run_cli: Callable[..., Any], db: Path) -> None:
    """A principal, a campaign (autunno26) and the example RPO answers and directory, in `db`."""
    for args in (
        ("--db", db, "principal", "add", "acme", "--name", "ACME", "--caller-id", "06 9480 1234"),
        ("--db", db, "campaign", "add", "autunno26", "--principal", "acme"),
        ("--db", db, "registry", "import", EXAMPLES / "rpo-answers.csv", "--checked-at", "2026-11-20"),
        ("--db", db, "directory", "import", EXAMPLES / "directory.txt", "--listed-at", "2026-11-20"),
    ):
        result = run_cli(*args)
        assert result.code == 0, result.err
