"""The README's set-up line and scripts/apt-install, which it and scripts/test use: as root on a Debian
container (no sudo there), as a user with sudo, and as a user without it.

apt-get, dpkg-query, id and sudo are stand-ins on a PATH of their own that record how they were called:
nothing is installed, and the machine's own sudo is never reached."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

STUBS = {
    "id": '[ "$1" = -u ] && echo "$STUB_UID"\n',
    "dpkg-query": 'for p in $STUB_INSTALLED; do\n'
                  '    [ "$p" = "${@: -1}" ] && { echo "install ok installed"; exit 0; }\n'
                  "done\nexit 1\n",
    "apt-get": 'echo "apt-get $*" >> "$STUB_LOG"\n',
    # `sudo -n true` succeeds only with passwordless sudo; anything else runs the command.
    "sudo": 'echo "sudo $*" >> "$STUB_LOG"\n'
            'if [ "$1" = -n ]; then shift; [ "$1" = true ] && exit "$STUB_SUDO_N"; fi\n'
            'exec "$@"\n',
}


def setup_line() -> str:
    """The first command of the README's "Install and start the gate" block (up to the first &&)."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Install and start the gate", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert block is not None
    return block.group(1).splitlines()[0].split(" && ")[0]


class Machine:
    def __init__(self, folder: Path, *, uid: int, sudo: str | None, installed: str = "") -> None:
        self.bin = folder / "bin"
        self.bin.mkdir()
        self.log = folder / "calls.log"
        self.log.touch()
        for tool in ("bash", "env", "grep"):
            real = shutil.which(tool)
            assert real is not None
            (self.bin / tool).symlink_to(real)
        for name, body in STUBS.items():
            if name == "sudo" and sudo is None:
                continue
            stub = self.bin / name
            stub.write_text("#!/bin/bash\n" + body)
            stub.chmod(0o755)
        self.env = {"PATH": str(self.bin), "STUB_UID": str(uid), "STUB_LOG": str(self.log),
                    "STUB_INSTALLED": installed, "STUB_SUDO_N": "0" if sudo == "passwordless" else "1"}

    def run(self, command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.bin / "bash"), "-c", command], cwd=REPO, env=self.env, capture_output=True,
                              text=True, timeout=60, check=False)

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines()


APT = ["apt-get update -qq", "apt-get install -y -qq python3-venv"]


def test_the_readme_setup_line_works_as_root_without_sudo(tmp_path: Path) -> None:
    machine = Machine(tmp_path, uid=0, sudo=None)
    done = machine.run(setup_line())
    assert done.returncode == 0, done.stderr
    assert machine.calls() == APT


@pytest.mark.parametrize("sudo", ["password", "passwordless"])
def test_the_readme_setup_line_works_as_a_user_with_sudo(sudo: str, tmp_path: Path) -> None:
    machine = Machine(tmp_path, uid=1000, sudo=sudo)
    done = machine.run(setup_line())
    assert done.returncode == 0, done.stderr
    assert machine.calls() == ["sudo " + APT[0], APT[0],
                               "sudo env DEBIAN_FRONTEND=noninteractive " + APT[1], APT[1]]


def test_a_user_without_sudo_is_told_to_run_it_as_root(tmp_path: Path) -> None:
    machine = Machine(tmp_path, uid=1000, sudo=None)
    done = machine.run("scripts/apt-install python3-venv")
    assert done.returncode == 1
    assert done.stderr == ("apt-install: installing python3-venv needs root, and sudo is not installed: "
                           "run this as root\n")
    assert machine.calls() == []


def test_installed_packages_need_nothing(tmp_path: Path) -> None:
    machine = Machine(tmp_path, uid=1000, sudo=None, installed="python3-venv faketime")
    done = machine.run("scripts/apt-install python3-venv faketime")
    assert (done.returncode, done.stderr) == (0, "")
    assert machine.calls() == []


def test_only_the_missing_packages_are_installed(tmp_path: Path) -> None:
    machine = Machine(tmp_path, uid=0, sudo=None, installed="python3-venv")
    assert machine.run("scripts/apt-install python3-venv faketime postgresql").returncode == 0
    assert machine.calls() == [APT[0], "apt-get install -y -qq faketime postgresql"]


def test_non_interactive_never_asks_for_a_password(tmp_path: Path) -> None:
    # scripts/test's way: a user whose sudo wants a password gets a message, not a prompt.
    (tmp_path / "password").mkdir()
    machine = Machine(tmp_path / "password", uid=1000, sudo="password")
    done = machine.run("scripts/apt-install --non-interactive python3-venv")
    assert done.returncode == 1
    assert done.stderr == "apt-install: installing python3-venv needs root or passwordless sudo\n"
    assert machine.calls() == ["sudo -n true"]

    (tmp_path / "passwordless").mkdir()
    machine = Machine(tmp_path / "passwordless", uid=1000, sudo="passwordless")
    assert machine.run("scripts/apt-install --non-interactive python3-venv").returncode == 0
    assert machine.calls() == ["sudo -n true", "sudo -n " + APT[0], APT[0],
                               "sudo -n env DEBIAN_FRONTEND=noninteractive " + APT[1], APT[1]]
