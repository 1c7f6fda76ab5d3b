"""`-o` of `audit export`, `scrub` and `registry due` through the real console script: a device node or
a FIFO is written, never replaced by a regular file; `-` is standard output; a link stays a link.

Every device here is a private twin made for the test in its own folder (tests/support/devices.py): run as root
on the old code, `-o /dev/null` replaced the machine's null device with a regular file."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from rpoguard.constants import ALLOW
from rpoguard.db.sqlite import audit_path
from support.devices import FULL, NULL, device_node, is_device
from support.fakeclock import clock_env
from support.serve_process import clean_env, prepare_db

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
AT = "2026-11-23T11:00"
LISTED = "06 4567 8901"  # listed, not registered in the examples: ALLOW at AT

Cli = Callable[..., Any]


class Result(NamedTuple):
    code: int
    out: str
    err: str

# Each command that takes -o, with what it needs before -o.
COMMANDS = {
    "audit export": ("audit", "export"),
    "scrub": ("scrub", str(EXAMPLES / "campaign-list.txt"), "--campaign", "autunno26", "--at", AT),
    # --within: every answer of the examples is due, whatever today's date.
    "registry due": ("registry", "due", "--principal", "acme", "--within", "400"),
}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory, cli_script: str) -> Path:
    """A principal, its campaign, the example answers and one recorded decision; built once, copied per test."""
    folder = tmp_path_factory.mktemp("outputs")
    db = folder / "template.db"
    env = {**clean_env(db), "PYTHONIOENCODING": "utf-8"}

    def cli(*args: str | Path, clock: dict[str, str] | None = None) -> Result:
        done = subprocess.run([cli_script, *map(str, args)], capture_output=True, text=True,
                              env={**env, **(clock or {})}, cwd=folder, timeout=60, check=False)
        return Result(done.returncode, done.stdout, done.stderr)

    prepare_db(cli, db)
    # Recorded (a check --at is a simulation): the command's own clock set to AT (libfaketime).
    code, out, err = cli("check", LISTED, "--campaign", "autunno26", "--json", clock=clock_env(AT))
    assert code == 0 and f'"decision": "{ALLOW}"' in out, (out, err)
    return db


@pytest.fixture
def prepared(template: Path, db_path: Path) -> Path:
    for source, copy in ((template, db_path), (audit_path(template), audit_path(db_path))):
        shutil.copyfile(source, copy)
        copy.chmod(0o600)
    return db_path


def expected(run_cli: Cli, command: str) -> str:
    """What the command writes to standard output (without -o where it allows that)."""
    if command == "registry due":
        return ""  # it always takes -o; the file tests below compare with a regular file instead
    code, out, err = run_cli(*COMMANDS[command])
    assert code == 0, err
    return str(out)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_device_node_is_written_and_stays_a_device(command: str, prepared: Path, run_cli: Cli,
                                                     tmp_path: Path) -> None:
    folder = tmp_path / "dev"
    folder.mkdir()
    null = device_node(folder, "null", NULL)
    inode = null.stat().st_ino
    code, _, err = run_cli(*COMMANDS[command], "-o", null)
    assert code == 0, err
    assert is_device(null, NULL, inode)
    assert [p.name for p in folder.iterdir()] == ["null"]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_regular_file_and_a_link_to_it(command: str, prepared: Path, run_cli: Cli, tmp_path: Path) -> None:
    plain = tmp_path / "plain.out"
    code, _, err = run_cli(*COMMANDS[command], "-o", plain)
    assert code == 0, err
    if command != "registry due":
        assert plain.read_text(encoding="utf-8") == expected(run_cli, command)
    target = tmp_path / "target.out"
    target.write_text("previous\n")
    target.chmod(0o640)
    link = tmp_path / "latest.out"
    link.symlink_to("target.out")
    code, _, err = run_cli(*COMMANDS[command], "-o", link)
    assert code == 0, err
    assert os.readlink(link) == "target.out"
    assert target.read_bytes() == plain.read_bytes()
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


def test_dash_is_standard_output(prepared: Path, run_cli: Cli, tmp_path: Path) -> None:
    code, out, err = run_cli("audit", "export", "-o", "-")
    assert code == 0, err
    assert out == expected(run_cli, "audit export") and LISTED.replace(" ", "") in out
    assert not (tmp_path / "-").exists()


def test_a_link_to_proc_self_fd_1_is_standard_output(prepared: Path, run_cli: Cli, tmp_path: Path) -> None:
    # A private /dev/stdout: replacing it used to turn the link into a regular file.
    link = tmp_path / "stdout"
    link.symlink_to("/proc/self/fd/1")
    code, out, err = run_cli(*COMMANDS["scrub"], "-o", link)
    assert code == 0, err
    assert out == expected(run_cli, "scrub") and out.count("\n") > 3
    assert os.readlink(link) == "/proc/self/fd/1"


def test_a_fifo_is_written_and_stays_a_fifo(prepared: Path, run_cli: Cli, tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    # The reading end open before the command runs, so that its open never waits (and a command that
    # replaced the FIFO leaves this read empty instead of hanging); the one line fits the pipe's buffer.
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        code, _, err = run_cli("audit", "export", "--format", "jsonl", "-o", fifo)
        received = os.read(reader, 1 << 16)
    finally:
        os.close(reader)
    assert code == 0, err
    direct = run_cli("audit", "export", "--format", "jsonl")
    assert received == direct.out.encode() and direct.out.count("\n") == 1
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_an_unwritable_output_is_one_line_exit_2(command: str, prepared: Path, run_cli: Cli, tmp_path: Path) -> None:
    full = device_node(tmp_path, "full", FULL)
    code, _, err = run_cli(*COMMANDS[command], "-o", full)
    assert (code, err.splitlines()[-1]) == (2, f"rpoguard: cannot write {full}: No space left on device"), err
    assert "Traceback" not in err
    assert is_device(full, FULL)
    code, _, err = run_cli(*COMMANDS[command], "-o", tmp_path)
    assert (code, err) == (2, f"rpoguard: cannot write {tmp_path}: it is a directory; give a file name\n")
