"""`rpoguard serve` as a child process for the integration tests: started on a port it picks itself, ready
once its log says where it listens and it handles SIGTERM, always stopped (SIGTERM, then SIGKILL) at the end."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

START_TIMEOUT = 30.0
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# `rpoguard serve`'s start-up line: "rpoguard X: FastAGI gate listening on HOST:PORT (database ...".
LISTENING = re.compile(rb"FastAGI gate listening on \S+:(\d+) \(")


def start_serve(cli_script: str, env: Mapping[str, str], folder: Path, *,
                wrapper: Sequence[str] = (), args: Sequence[str] = ()) -> tuple[subprocess.Popen[bytes], int, Path]:
    """Start `rpoguard serve` and wait until it is ready; returns (process, port, log file)."""
    try:
        return start_child([*wrapper, cli_script, "serve", "--port", "0", *args], LISTENING, env, folder,
                           name="serve")
    except RuntimeError as exc:
        pytest.fail(str(exc))


def start_child(argv: Sequence[str], listening_line: re.Pattern[bytes], env: Mapping[str, str],
                folder: Path, *, name: str) -> tuple[subprocess.Popen[bytes], int, Path]:
    """Start one of rpoguard's servers (`argv` says which, with `--port 0`) and wait until it is ready;
    returns (process, port, log file); RuntimeError with its log if it does not start.

    `--port 0`: the kernel gives the server a free port when it binds. A port picked here and bound later
    could be taken in between by another process (then the test would talk to that one), and a connect
    that succeeds proves only that something listens. Ready means: the log names the port
    (`listening_line`'s group 1, written after the bind) and the process catches SIGTERM (its handler is
    installed after that line; a SIGTERM any earlier would kill it instead of stopping it)."""
    log = folder / f"{name}-{secrets.token_hex(4)}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(list(argv), env=dict(env), stdout=out, stderr=subprocess.STDOUT, cwd=folder)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            found = listening_line.search(log.read_bytes())
            if found and catches(proc.pid, signal.SIGTERM):
                return proc, int(found.group(1)), log
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"rpoguard {name} did not start:\n{log.read_text(errors='replace')}")
            time.sleep(0.02)
    except BaseException:
        stop(proc)
        raise


def catches(pid: int, signum: signal.Signals) -> bool:
    """Whether process `pid` has a handler for `signum` (Linux: SigCgt in /proc/PID/status)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = next(int(line.split()[1], 16) for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(caught >> (signum - 1) & 1)


def _tcp_sockets() -> Iterator[list[str]]:
    """The rows of the kernel's TCP socket tables (IPv4 and IPv6), split into fields."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for row in Path(table).read_text().splitlines()[1:]:
                yield row.split()


def listening(port: int) -> bool:
    """Whether a socket listens on `port` (any address): false once the server has closed its listener."""
    local_port = f"{port:04X}"
    return any(f[1].rsplit(":", 1)[1] == local_port and f[3] == "0A" for f in _tcp_sockets())


def connections_held(pid: int, port: int) -> int:
    """Connections to ``port`` that process ``pid`` has accepted and not yet closed: its own descriptors.

    What a client sees says nothing of when the server's event loop took a connection in or let it go:
    connect() returns before the server's loop has accepted it, and close() returns before the server has
    read the EOF. The server's slot is taken when it accepts and freed when it closes its side; this counts.
    """
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:["):-1])
    local_port = f"{port:04X}"
    return sum(1 for f in _tcp_sockets() if f[1].rsplit(":", 1)[1] == local_port and f[3] != "0A" and f[9] in inodes)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 10 s; always waited for, so no process outlives its test."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def stop_all(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    """Stop every one of `procs`, even when stopping one of them fails."""
    with contextlib.ExitStack() as stack:
        for proc in procs:
            stack.callback(stop, proc)


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
