"""Fixtures for the end-to-end tests: the cached root file system, a SIPp carrier, Asterisk.

These tests need root (mmdebstrap, chroot) and a Debian mirror. On a user's machine that lacks either
they skip with the reason; in CI (``CI=true``) the same conditions fail instead, so the suite can never
turn green there by silently skipping its most important tests.
"""

from __future__ import annotations

import fcntl
import itertools
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Generator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import NoReturn

import pytest

from .harness import AmiUser, Asterisk, HarnessError, RunDir, SippCarrier, StartAsterisk

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "scripts" / "build-asterisk-rootfs"
BUILD_TIMEOUT = 900

# What is running now, so a failing test's report can carry its logs.
_LIVE = pytest.StashKey[list[Asterisk | SippCarrier]]()


def _cannot_run(reason: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the e2e tests must run here, not skip)", pytrace=False)
    pytest.skip(reason)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Every test in this folder needs the real rig; mark it even if its module forgets to.
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.e2e)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and report.when == "call":
        for component in item.config.stash.get(_LIVE, []):
            if component.running:
                report.sections.append((f"{type(component).__name__} logs", component.logs()))
    return report


def _start_or_fail(component: Asterisk | SippCarrier) -> None:
    # A rig that cannot start is a failure, not a skip; its message (with the logs) is all that matters,
    # so it is reported outside the except block, without the chained traceback.
    try:
        component.start()
    except HarnessError as exc:
        message = str(exc)
    else:
        return
    pytest.fail(message, pytrace=False)


def _live(config: pytest.Config) -> list[Asterisk | SippCarrier]:
    return config.stash.setdefault(_LIVE, [])


@pytest.fixture(scope="session")
def asterisk_rootfs() -> Path:
    """The Debian sid root file system with Asterisk 22 and SIPp, built once and cached."""
    if not sys.platform.startswith("linux"):
        _cannot_run("e2e tests need Linux (chroot into a Debian root file system)")
    if os.geteuid() != 0:
        _cannot_run("e2e tests need root (mmdebstrap and chroot); run them as root, as CI does")
    if shutil.which("chroot") is None or shutil.which("dpkg-query") is None:
        _cannot_run("e2e tests need a Debian-like host (chroot, dpkg, apt) to build the Asterisk root fs")
    try:
        result = subprocess.run([str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        _cannot_run(f"{BUILD_SCRIPT.name} took more than {BUILD_TIMEOUT} s")
    if result.returncode != 0:
        log_tail = "\n".join(result.stderr.splitlines()[-25:])
        _cannot_run(f"{BUILD_SCRIPT.name} failed (status {result.returncode}):\n{log_tail}")
    # Only the script's own lines: mmdebstrap's progress on a cold build is hundreds of lines.
    for line in result.stderr.splitlines():
        if line.startswith(f"{BUILD_SCRIPT.name}:"):
            logger.info("%s", line)
    rootfs = Path(result.stdout.strip().splitlines()[-1])
    if not (rootfs / "usr/sbin/asterisk").is_file():
        _cannot_run(f"{BUILD_SCRIPT.name} reported {rootfs}, which has no usr/sbin/asterisk")
    return rootfs


@pytest.fixture(scope="session")
def e2e_host_lock(asterisk_rootfs: Path) -> Iterator[None]:
    """One e2e session at a time on this host: Asterisk and SIPp need the fixed ports 5060/5070, so a
    second session (another checkout, a developer's run next to CI's) waits here instead of failing."""
    with (asterisk_rootfs.parent / "e2e-session.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@pytest.fixture(scope="session")
def e2e_run_dir(asterisk_rootfs: Path, e2e_host_lock: None) -> Iterator[RunDir]:
    """This session's folder inside the root file system (configs, logs, traces); removed at the end."""
    run_dir = RunDir.create(asterisk_rootfs)
    yield run_dir
    if os.environ.get("RPOGUARD_E2E_KEEP") == "1":
        # For a post-mortem; the next session removes it.
        logger.warning("RPOGUARD_E2E_KEEP=1: keeping %s", run_dir.host)
    else:
        run_dir.remove()


@pytest.fixture(scope="session")
def sipp_carrier(request: pytest.FixtureRequest, asterisk_rootfs: Path, e2e_run_dir: RunDir) -> Iterator[SippCarrier]:
    """SIPp answering every call on 127.0.0.1:5070, for the whole session.

    INVITEs accumulate; a test takes ``since = sipp_carrier.checkpoint()`` first and then looks at
    ``sipp_carrier.invites(since)`` or ``sipp_carrier.calls(since)``. It answers at once; inside
    ``with sipp_carrier.ringing(seconds):`` it rings that long first (SIPp restarted on the same port).
    """
    carrier = SippCarrier(asterisk_rootfs, e2e_run_dir)
    _start_or_fail(carrier)
    _live(request.config).append(carrier)
    yield carrier
    _live(request.config).remove(carrier)
    carrier.stop()


@pytest.fixture(scope="session")
def start_asterisk(
    request: pytest.FixtureRequest, asterisk_rootfs: Path, e2e_run_dir: RunDir, sipp_carrier: SippCarrier
) -> Iterator[StartAsterisk]:
    """A factory: ``start_asterisk(dialplan, ..., dialplan_globals={...}, extra_modules=[...], extra_files={...})``
    and the options ``cdr=True``, ``cel=True``, ``ami_users={name: AmiUser(...)}``, ``ami_general={...}``
    of :class:`Asterisk`.

    Starts Asterisk with the given dialplan files ``#include``d, waits until it is fully booted and
    returns it. Only one Asterisk can hold 127.0.0.1:5060, so starting one stops the previous one;
    a test module usually wraps it in a module-scoped fixture that calls ``stop()`` at the end.
    Everything still running is stopped when the session ends.
    """
    counter = itertools.count(1)
    started: list[Asterisk] = []

    def start(
        *dialplans: Path,
        dialplan_globals: Mapping[str, str] | None = None,
        extra_modules: Sequence[str] = (),
        extra_files: Mapping[str, str] | None = None,
        cdr: bool = False,
        cel: bool = False,
        ami_users: Mapping[str, AmiUser] | None = None,
        ami_general: Mapping[str, str] | None = None,
    ) -> Asterisk:
        for previous in started:
            previous.stop()
            if previous in _live(request.config):
                _live(request.config).remove(previous)
        asterisk = Asterisk(
            asterisk_rootfs,
            e2e_run_dir.sub(f"asterisk-{next(counter)}"),
            dialplans,
            dialplan_globals=dialplan_globals,
            extra_modules=extra_modules,
            extra_files=extra_files,
            cdr=cdr,
            cel=cel,
            ami_users=ami_users,
            ami_general=ami_general,
        )
        started.append(asterisk)
        _start_or_fail(asterisk)
        _live(request.config).append(asterisk)
        return asterisk

    yield start
    for asterisk in started:
        asterisk.stop()
        if asterisk in _live(request.config):
            _live(request.config).remove(asterisk)
