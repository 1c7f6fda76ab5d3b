"""The product in a real Asterisk 22: only compliant calls reach the carrier, and a gate that is down,
killed or stalled lets nothing out (architecture.md §1, §4; docs/asterisk-agi.md).

The rig: a database prepared through the real `rpoguard` CLI (examples/ plus one number of our own), the
real `rpoguard serve` as a subprocess whose wall clock libfaketime sets (never a test switch in the
product), Asterisk running dialplan/rpoguard.conf behind tests/e2e/dialplan_gate.conf, and SIPp as the
carrier. For every call a test asserts both sides: the INVITEs SIPp received (what got out) and the
decision the audit log holds for that very channel (matched by its uniqueid).

Every call is also written to an evidence table, logged at INFO at the end of the module and appended,
as markdown, to the file that RPOGUARD_E2E_REPORT names.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NoReturn
from zoneinfo import ZoneInfo

import pytest

from support.dialplan_examples import shipped_hook

from .harness import LOOPBACK, Asterisk, HarnessError, Invite, SippCarrier, StartAsterisk, free_tcp_port, tail

pytestmark = pytest.mark.e2e

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
PRODUCT_DIALPLAN = REPO / "dialplan" / "rpoguard.conf"
DIALPLAN = Path(__file__).with_name("dialplan_gate.conf")
# An outbound route shaped as FreePBX 17 makes it, around the FreePBX 17 hook rpoguard.conf ships.
FREEPBX17_DIALPLAN = Path(__file__).with_name("dialplan_freepbx17.conf")
FREEPBX17_ROUTE = "rpoguard-e2e-freepbx17-route"
# Routes that set no campaign: the office's, on a shared trunk, and a marketing route that forgot it, on a
# trunk listed in RPOGUARD_GATED_TRUNKS.
FREEPBX17_OFFICE_ROUTE = "rpoguard-e2e-freepbx17-office-route"
FREEPBX17_UNMARKED_ROUTE = "rpoguard-e2e-freepbx17-unmarked-route"
EXAMPLES = REPO / "examples"
# The console script installed next to the interpreter running the tests (.venv/bin/rpoguard).
RPOGUARD = Path(sys.executable).with_name("rpoguard")
REPORT_ENV = "RPOGUARD_E2E_REPORT"

CONTEXT = "rpoguard-e2e-out"
UNKNOWN_CAMPAIGN_CONTEXT = "rpoguard-e2e-unknown-campaign"
CAMPAIGN = "autunno26"
UNKNOWN_CAMPAIGN = "estate19"  # what UNKNOWN_CAMPAIGN_CONTEXT passes; never configured
PRINCIPAL = "acme"
CALLER_ID = "0694801234"  # declared by the principal, as "06 9480 1234"
CALLER_NAME = "ACME Energia"
UNDECLARED_CALLER_ID = "0211112222"
# Modules a stock Asterisk loads anyway and the harness's minimal list lacks: TIMEOUT() for the product's
# time limit, URIENCODE() for the campaign in the FastAGI URL.
EXTRA_MODULES = ("func_timeout", "func_uri")

ROME = ZoneInfo("Europe/Rome")
CHECKED_AT = "2026-11-20"  # the RPO answered a few days before the calls
WORKDAY = datetime(2026, 11, 24, 11, 0, tzinfo=ROME)  # Tuesday 11:00: inside the calling hours
EVENING = datetime(2026, 11, 24, 21, 0, tzinfo=ROME)  # Tuesday 21:00: after 20:00
SUNDAY = datetime(2026, 11, 29, 11, 0, tzinfo=ROME)  # never on Sundays (the RPO answer is 9 days old)

# Numbers as a dialler sends them (national form). From examples/ unless noted.
LISTED = "0645678901"  # in the directory, not registered: ALLOW, basis listed
MOBILE_WITH_CONSENT = "3331234567"  # unlisted mobile, not registered, consent 2026-09-01: ALLOW, consent
REGISTERED = "3477654321"  # registered; its consent (2024) predates the registration: rpo_registered
UNCHECKED = "3380001111"  # never submitted to the RPO: rpo_not_checked
REFUSER = "0645678902"  # this module's own: listed, not registered; says "non chiamatemi più"

_CALL_LINE = re.compile(r"e2e call: (?P<uniqueid>\S+) (?P<number>\S+) campaign (?P<campaign>\S+)")
_VERBOSE = re.compile(r"app_verbose\.c: (?P<message>.*)$")


def _cannot_run(reason: str) -> NoReturn:
    # As conftest.py does for the rig: skip on a user's machine, fail in CI.
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the e2e tests must run here, not skip)", pytrace=False)
    pytest.skip(reason)


def e164(national: str) -> str:
    return "+39" + national


def product_time_limit(name: str) -> int:
    """A time limit global (RPOGUARD_AGI_TIMEOUT, RPOGUARD_ARI_TIMEOUT) as dialplan/rpoguard.conf ships it:
    the longest a stalled or absent gate holds a call."""
    match = re.search(rf"^{name}=(\d+)\s*$", PRODUCT_DIALPLAN.read_text(), re.MULTILINE)
    if match is None:
        raise AssertionError(f"{PRODUCT_DIALPLAN} sets no {name}: nothing bounds a call waiting for the gate")
    return int(match.group(1))


def product_agi_timeout() -> int:
    return product_time_limit("RPOGUARD_AGI_TIMEOUT")


# --------------------------------------------------------------------------------------------- the gate


class GateServer:
    """`rpoguard serve --port PORT` as a subprocess, its wall clock faked with libfaketime.

    ``start(at)`` makes the server's clock read ``at`` plus the real time elapsed since this object was
    made, so a restart under the same ``at`` continues the same day instead of jumping back. Only the
    wall clock is faked (FAKETIME_DONT_FAKE_MONOTONIC): asyncio's timers, and with them the server's
    session deadline, run on the real monotonic clock.
    """

    def __init__(self, env: Mapping[str, str], port: int, log_path: Path, libfaketime: Path) -> None:
        self.env = dict(env)
        self.port = port
        self.log_path = log_path
        self.libfaketime = libfaketime
        self.clock: datetime | None = None
        self.paused = False
        self._epoch = time.time()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise HarnessError("rpoguard serve is not running")
        return self._proc.pid

    def offset(self, at: datetime) -> int:
        """The FAKETIME offset (seconds) that makes a clock read ``at`` now, continuing as this server's."""
        return round(at.timestamp() - self._epoch)

    def start(self, at: datetime) -> None:
        if self.running:
            raise HarnessError("rpoguard serve is already running")
        offset = self.offset(at)
        env = faked_clock_env(self.env, self.libfaketime, offset)
        cmd = [str(RPOGUARD), "--verbose", "serve", "--host", LOOPBACK, "--port", str(self.port)]
        with self.log_path.open("ab") as out:
            out.write(f"--- starting {' '.join(cmd)} with FAKETIME={offset:+d} ({at.isoformat()})\n".encode())
            out.flush()
            self._proc = subprocess.Popen(
                cmd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.clock = at
        self.paused = False
        self._wait_listening(timeout=15)
        logger.info("rpoguard serve up on %s:%d (pid %d), clock %s", LOOPBACK, self.port, self.pid, at.isoformat())

    def _wait_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if not self.running:
                raise HarnessError(f"rpoguard serve exited at start\n{self.logs()}")
            try:
                with socket.create_connection((LOOPBACK, self.port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() >= deadline:
                    self.kill()
                    raise HarnessError(f"rpoguard serve did not listen within {timeout} s\n{self.logs()}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        """A clean stop (SIGTERM), as systemd does it."""
        if self._proc is None:
            return
        self.resume()
        self._proc.send_signal(signal.SIGTERM)
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            logger.warning("rpoguard serve ignored SIGTERM for 10 s; killing it")
            self.kill()
        self._proc = None
        self.clock = None

    def kill(self) -> None:
        """SIGKILL: the process vanishes without closing anything itself."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGKILL)
        self._proc.wait(timeout=10)
        self._proc = None
        self.clock = None
        self.paused = False

    def pause(self) -> None:
        """SIGSTOP: the kernel still accepts connections into the backlog, nobody answers them."""
        os.kill(self.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        if self.paused and self.running:
            os.kill(self.pid, signal.SIGCONT)
        self.paused = False

    def restart(self, at: datetime) -> None:
        self.stop()
        self.start(at)

    def ensure(self, at: datetime) -> None:
        """Running, answering, on clock ``at``: whatever an earlier (maybe failed) test left behind."""
        self.resume()
        if not self.running or self.clock != at:
            self.kill()
            self.start(at)

    def logs(self) -> str:
        return f"--- rpoguard serve ({self.log_path}):\n{tail(self.log_path, 30)}"


# --------------------------------------------------------------------------------------------- calls


@dataclass
class CallOutcome:
    """One originated call, seen from the carrier, the audit log and the dialplan."""

    test: str
    number: str
    campaign: str
    presented: str  # the caller ID the call presented, and its presentation when not the default
    expected: str
    uniqueid: str
    answered: bool
    seconds: float  # from the originate to the end of the call
    invites: list[Invite]
    decisions: list[dict[str, object]]  # audit rows whose uniqueid is this call's channel
    gate_log: list[str]  # what rpoguard.conf and dialplan_gate.conf logged during the call
    notes: list[str] = field(default_factory=list)

    @property
    def decision(self) -> dict[str, object]:
        assert len(self.decisions) == 1, f"expected one audit row for call {self.uniqueid}\n{self}"
        return self.decisions[0]

    @property
    def reasons(self) -> list[str]:
        return [r for r in str(self.decision["reasons"] or "").split(",") if r]

    def logged(self, text: str) -> bool:
        return any(text in line for line in self.gate_log)

    def __str__(self) -> str:
        decisions = "\n".join(json.dumps(row) for row in self.decisions) or "(none)"
        return (
            f"call {self.number} ({self.campaign}) uniqueid {self.uniqueid}, expected {self.expected}, "
            f"answered {self.answered} after {self.seconds:.1f} s\n"
            f"INVITEs at the carrier: {[str(i) for i in self.invites] or '(none)'}\n"
            f"dialplan said:\n  " + "\n  ".join(self.gate_log or ["(nothing)"]) + "\n"
            f"audit rows:\n{decisions}"
        )


class Rig:
    """The gate, Asterisk and the carrier together; places calls and gathers the evidence of each."""

    def __init__(self, asterisk: Asterisk, carrier: SippCarrier, server: GateServer, cli_env: Mapping[str, str]):
        self.asterisk = asterisk
        self.carrier = carrier
        self.server = server
        self.cli_env = dict(cli_env)
        self.evidence: list[CallOutcome] = []
        self.test = ""
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="e2e-call")

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def audit_rows(self) -> list[dict[str, object]]:
        out = rpoguard_cli(self.cli_env, "audit", "export", "--format", "jsonl", quiet=True)
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def call(
        self,
        number: str,
        expected: str,
        *,
        context: str = CONTEXT,
        campaign: str = CAMPAIGN,
        caller_id: str = CALLER_ID,
        variables: Mapping[str, str] | None = None,
        hold: float = 0.5,
        timeout: float = 15,
    ) -> CallOutcome:
        """Originate one call, wait until it is over, and gather what each side recorded."""
        log_mark = self._log_size()
        since = self.carrier.checkpoint()
        started = time.monotonic()
        result = self.asterisk.originate(
            number, context, caller_id=caller_id, caller_name=CALLER_NAME, variables=variables,
            hold=hold, timeout=timeout,
        )  # fmt: skip
        self.asterisk.wait_calls_settled(timeout=timeout + 5)
        seconds = time.monotonic() - started
        uniqueid, gate_log = self._dialplan_lines(log_mark, number)
        presentation = (variables or {}).get("E2E_NUM_PRES")
        outcome = CallOutcome(
            test=self.test,
            number=number,
            campaign=campaign,
            presented=f"{caller_id} ({presentation})" if presentation else caller_id,
            expected=expected,
            uniqueid=uniqueid,
            answered=result.answered,
            seconds=seconds,
            invites=self.carrier.invites(since),
            decisions=[row for row in self.audit_rows() if row["uniqueid"] == uniqueid],
            gate_log=gate_log,
        )
        self.evidence.append(outcome)
        logger.info("%s", outcome)
        return outcome

    def call_in_background(self, number: str, expected: str) -> concurrent.futures.Future[CallOutcome]:
        return self._pool.submit(self.call, number, expected)

    def wait_in_agi(self, timeout: float = 10) -> None:
        """Wait until a channel sits in AGI() with its FastAGI connection to the gate established."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            in_agi = "!AGI!" in self.asterisk.cli("core show channels concise")
            if in_agi and self._connected_to_gate():
                return
            time.sleep(0.05)
        raise HarnessError(f"no call reached AGI() within {timeout} s\n{self.asterisk.logs()}")

    def _connected_to_gate(self) -> bool:
        ss = shutil.which("ss")
        if ss is None:
            time.sleep(0.3)  # connect() to a listening socket completes at once; give it the time anyway
            return True
        out = subprocess.run(
            [ss, "-Htn", "state", "established", f"( dport = :{self.server.port} )"],
            capture_output=True, text=True, check=False,
        ).stdout  # fmt: skip
        return bool(out.strip())

    def _log_size(self) -> int:
        try:
            return self.asterisk.full_log.stat().st_size
        except FileNotFoundError:
            return 0

    def _dialplan_lines(self, mark: int, number: str) -> tuple[str, list[str]]:
        """This call's uniqueid and the Verbose() lines logged since ``mark``."""
        deadline = time.monotonic() + 3  # the logger thread may still be writing
        while True:
            with self.asterisk.full_log.open("rb") as log:
                log.seek(mark)
                text = log.read().decode(errors="replace")
            messages = [m.group("message") for m in map(_VERBOSE.search, text.splitlines()) if m]
            messages += [line for line in text.splitlines() if "ERROR" in line and "rpoguard" in line]
            calls = [m for m in map(_CALL_LINE.search, messages) if m and m.group("number") == number]
            # The call's hangup handler logs last (dialplan_gate.conf): once it has, the call's lines are all in.
            if calls and any(m.startswith(f"e2e hangup: {calls[0].group('uniqueid')} ") for m in messages):
                return calls[0].group("uniqueid"), messages
            if time.monotonic() >= deadline:
                raise HarnessError(f"the dialplan never logged the call to {number}\n{self.asterisk.logs()}")
            time.sleep(0.05)


def rpoguard_cli(env: Mapping[str, str], *args: str, quiet: bool = False) -> str:
    """Run the real `rpoguard` command; fail with its output unless it exits 0."""
    result = subprocess.run(
        [str(RPOGUARD), *args], env=dict(env), capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        raise HarnessError(f"`rpoguard {' '.join(args)}` exited {result.returncode}:\n{result.stdout}{result.stderr}")
    if not quiet:
        logger.info("rpoguard %s: %s", " ".join(args[:2]), (result.stdout or result.stderr).strip()[:300])
    return result.stdout


# --------------------------------------------------------------------------------------------- evidence


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _decided(row: Mapping[str, object]) -> str:
    """An audit row as "allow (listed) Tue 11:00:05", the time in Europe/Rome."""
    at = datetime.fromisoformat(str(row["time"])).astimezone(ROME)
    return f"{row['decision']} ({row['reasons'] or row['basis']}) {at:%a %H:%M:%S}"


def evidence_table(outcomes: list[CallOutcome]) -> str:
    lines = [
        "| # | test | dialled | campaign | caller ID | expected | audit log: decision (reasons / basis), "
        "Rome time | dialplan | INVITE at the carrier (Request-URI; From) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for index, o in enumerate(outcomes, start=1):
        audit = "; ".join(_decided(row) for row in o.decisions) or "no decision recorded"
        gate = [line for line in o.gate_log
                if line.startswith(("rpoguard:", "e2e gate:", "e2e refusal:", "e2e hangup:"))]
        said = "; ".join(re.sub(r"^e2e gate: \S+ ", "", line) for line in gate) or "(no gate line)"
        invites = "; ".join(f'{i.request_uri}; "{i.caller_name}" <{i.caller_id}>' for i in o.invites) or "none"
        notes = f" — {' '.join(o.notes)}" if o.notes else ""
        lines.append(
            "| " + " | ".join(_cell(c) for c in (
                index, o.test, o.number, o.campaign, o.presented, o.expected, audit + notes, said, invites,
            )) + " |"
        )  # fmt: skip
    return "\n".join(lines)


def _write_report(outcomes: list[CallOutcome], header: str) -> None:
    table = evidence_table(outcomes)
    logger.info("evidence, %s:\n%s", header, table)
    target = os.environ.get(REPORT_ENV)
    if target:
        with open(target, "a", encoding="utf-8") as report:
            report.write(f"\n### {header}\n\n{table}\n")


def faked_clock_env(env: Mapping[str, str], libfaketime: Path, offset: int) -> dict[str, str]:
    """`env` for a child whose wall clock runs `offset` seconds from the real one; its monotonic clock
    (asyncio's timers, the deadlines) is left alone."""
    return {
        **env,
        "LD_PRELOAD": str(libfaketime),
        "FAKETIME": f"{offset:+d}",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "TZ": "Europe/Rome",
    }


# --------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def libfaketime(asterisk_rootfs: Path) -> Path:
    # After asterisk_rootfs: its build script installs faketime on the host.
    found = sorted(Path("/usr/lib").glob("*/faketime/libfaketimeMT.so.1"))
    if not found:
        _cannot_run("libfaketime is not installed on the host (Debian package faketime)")
    return found[0]


@pytest.fixture(scope="module")
def cli_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of every `rpoguard` this module runs, with a database prepared through the CLI."""
    return prepared_database(tmp_path_factory.mktemp("gate"))


def prepared_database(work: Path, config_text: str = "") -> dict[str, str]:
    """The environment of an `rpoguard` whose database (in `work`) holds the examples' principal, campaign,
    RPO answers, directory and consents, imported through the CLI; `config_text`: its configuration file."""
    if not RPOGUARD.is_file():
        _cannot_run(f"{RPOGUARD} is missing: install the project (pip install -e .) into this interpreter")
    config = work / "rpoguard.toml"
    config.write_text(config_text or "# empty: defaults only, whatever /etc/rpoguard/rpoguard.toml says\n")
    env = {**os.environ, "RPOGUARD_DB": str(work / "rpoguard.db"), "RPOGUARD_CONFIG": str(config)}
    for name in ("LD_PRELOAD", "FAKETIME"):
        env.pop(name, None)
    (work / "rpo-extra.csv").write_text(f"number,status\n{REFUSER},not_registered\n")
    (work / "directory-extra.txt").write_text(f"{REFUSER}\n")
    run = rpoguard_cli
    run(env, "principal", "add", PRINCIPAL, "--name", "ACME Energia S.p.A.", "--caller-id", "06 9480 1234")
    run(env, "campaign", "add", CAMPAIGN, "--principal", PRINCIPAL)
    run(env, "registry", "import", str(EXAMPLES / "rpo-answers.csv"), "--checked-at", CHECKED_AT)
    run(env, "registry", "import", str(work / "rpo-extra.csv"), "--checked-at", CHECKED_AT)
    # The extracts' own date: the gate runs with its clock set to WORKDAY, before today's import.
    run(env, "directory", "import", str(EXAMPLES / "directory.txt"), "--listed-at", CHECKED_AT)
    run(env, "directory", "import", "--append", str(work / "directory-extra.txt"), "--listed-at", CHECKED_AT)
    run(env, "consent", "import", str(EXAMPLES / "consents.csv"))
    return env


@pytest.fixture(scope="module")
def gate_server(
    cli_env: dict[str, str], libfaketime: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GateServer]:
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    server = GateServer(cli_env, free_tcp_port(), log_path, libfaketime)
    server.start(WORKDAY)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def freepbx17_hook(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The FreePBX 17 [macro-dialout-trunk-predial-hook] exactly as dialplan/rpoguard.conf ships it, as a
    file of its own: the example is a comment there, so that including rpoguard.conf alone defines no hook."""
    path = tmp_path_factory.mktemp("freepbx17") / "freepbx17-predial-hook.conf"
    path.write_text(shipped_hook("17"))
    return path


@pytest.fixture(scope="module")
def gate_asterisk(start_asterisk: StartAsterisk, gate_server: GateServer, freepbx17_hook: Path) -> Iterator[Asterisk]:
    url = f"agi://{LOOPBACK}:{gate_server.port}"
    asterisk = start_asterisk(
        PRODUCT_DIALPLAN, DIALPLAN, FREEPBX17_DIALPLAN, freepbx17_hook,
        dialplan_globals={"RPOGUARD_AGI": url}, extra_modules=EXTRA_MODULES,
    )  # fmt: skip
    # rpoguard.conf sets RPOGUARD_AGI to the default port itself: the test's value must be the one in force.
    shown = asterisk.cli("dialplan show globals")
    assert f"RPOGUARD_AGI={url}" in shown, f"RPOGUARD_AGI was not overridden:\n{shown}"
    yield asterisk
    asterisk.stop()


@pytest.fixture(scope="module")
def rig(
    gate_asterisk: Asterisk, sipp_carrier: SippCarrier, gate_server: GateServer, cli_env: dict[str, str]
) -> Iterator[Rig]:
    rig = Rig(gate_asterisk, sipp_carrier, gate_server, cli_env)
    version = gate_asterisk.cli("core show version").strip().split(" built by ")[0]
    started = datetime.now(UTC)
    yield rig
    rig.close()
    header = (
        f"rpoguard e2e gate run {started:%Y-%m-%d %H:%M} UTC — {version}; `rpoguard serve` clock "
        f"{WORKDAY.isoformat()} (faketime), RPO answers checked {CHECKED_AT}"
    )
    _write_report(rig.evidence, header)


@pytest.fixture(autouse=True)
def _gate_ready(rig: Rig, request: pytest.FixtureRequest) -> Iterator[None]:
    # Each test starts with the gate up on the working-day clock, whatever an earlier failure left.
    rig.server.ensure(WORKDAY)
    rig.test = request.node.name.removeprefix("test_")
    yield
    rig.server.ensure(WORKDAY)


# --------------------------------------------------------------------------------------------- checks


def assert_allowed(outcome: CallOutcome, number: str, basis: str, caller_id: str = CALLER_ID) -> None:
    assert outcome.answered, f"an allowed call was not answered\n{outcome}"
    assert len(outcome.invites) == 1, f"expected exactly one INVITE\n{outcome}"
    [invite] = outcome.invites
    assert invite.number == e164(number), f"the carrier was not asked for the E.164 number\n{outcome}"
    assert invite.request_uri.startswith(f"sip:{e164(number)}@"), outcome
    assert invite.caller_id == caller_id, f"the checked caller ID is not the one presented\n{outcome}"
    row = outcome.decision
    assert (row["decision"], row["reasons"], row["basis"]) == ("allow", "", basis), outcome
    assert row["number"] == e164(number), outcome
    assert row["campaign_id"] == CAMPAIGN and row["principal_id"] == PRINCIPAL, outcome
    assert row["caller_id"] == caller_id, outcome
    assert row["source"] == "fastagi", outcome
    # The dialplan dialled on the strength of this very decision.
    assert outcome.logged(f"allowed {e164(number)} decision {row['decision_id']}"), outcome
    # Decided on the faked working day, not on the host's clock.
    decided = datetime.fromisoformat(str(row["time"])).astimezone(ROME)
    assert WORKDAY <= decided < WORKDAY + timedelta(minutes=30), f"decided at {decided}\n{outcome}"
    # The gate's time limit is gone once it answered, and the PBX's own limit is back.
    assert outcome.logged("exitonhangup []"), outcome
    assert outcome.logged(f"e2e hangup: {outcome.uniqueid} decision [ALLOW] reason [] number [{e164(number)}] "
                          f"id [{row['decision_id']}] reasons []"), f"channel variables differ\n{outcome}"
    assert re.search(r"timeout 35\d\d\.\d+ ", " ".join(outcome.gate_log)), f"TIMEOUT(absolute) not restored\n{outcome}"


def assert_blocked(outcome: CallOutcome, reason: str, number: str) -> None:
    assert outcome.invites == [], f"a call the gate blocked reached the carrier\n{outcome}"
    assert not outcome.answered, outcome
    row = outcome.decision
    assert row["decision"] == "block", outcome
    assert outcome.reasons[0] == reason, f"expected primary reason {reason}\n{outcome}"
    assert row["number"] == e164(number), outcome
    assert outcome.logged(f"rpoguard: call {outcome.uniqueid} blocked: {reason} (AGISTATUS=SUCCESS)"), outcome
    assert not outcome.logged("e2e gate:"), f"the dialplan went on past the gate\n{outcome}"
    # Every detail the gate set (in one EXEC MSet) arrived exactly, the comma-separated list included.
    said = (f"e2e hangup: {outcome.uniqueid} decision [BLOCK] reason [{reason}] number [{e164(number)}] "
            f"id [{row['decision_id']}] reasons [{row['reasons']}]")
    assert outcome.logged(said), f"channel variables differ\n{outcome}"


def assert_kept_in(outcome: CallOutcome, status: str) -> None:
    """The gate never answered: nothing got out and the dialplan says why."""
    assert outcome.invites == [], f"a call got out without the gate's ALLOW\n{outcome}"
    assert not outcome.answered, outcome
    assert not outcome.logged("e2e gate:"), f"the dialplan went on past the gate\n{outcome}"
    assert outcome.logged(f"rpoguard: call {outcome.uniqueid} blocked: engine_error {status}"), outcome


# --------------------------------------------------------------------------------------------- tests


def test_listed_number_is_allowed(rig: Rig) -> None:
    # Held longer than the gate's time limit: the limit must not cut an allowed call.
    hold = product_agi_timeout() + 1
    started = time.monotonic()
    outcome = rig.call(LISTED, "ALLOW listed", hold=hold, timeout=hold + 15)
    assert_allowed(outcome, LISTED, "listed")
    assert time.monotonic() - started >= hold, f"the allowed call ended before its {hold} s\n{outcome}"


def test_mobile_with_consent_is_allowed(rig: Rig) -> None:
    outcome = rig.call(MOBILE_WITH_CONSENT, "ALLOW consent")
    assert_allowed(outcome, MOBILE_WITH_CONSENT, "consent")


def test_registered_number_is_blocked(rig: Rig) -> None:
    outcome = rig.call(REGISTERED, "BLOCK rpo_registered")
    assert_blocked(outcome, "rpo_registered", REGISTERED)


def test_number_never_checked_is_blocked(rig: Rig) -> None:
    outcome = rig.call(UNCHECKED, "BLOCK rpo_not_checked")
    assert_blocked(outcome, "rpo_not_checked", UNCHECKED)


def test_unknown_campaign_is_blocked(rig: Rig) -> None:
    outcome = rig.call(LISTED, "BLOCK unknown_campaign", context=UNKNOWN_CAMPAIGN_CONTEXT, campaign=UNKNOWN_CAMPAIGN)
    assert_blocked(outcome, "unknown_campaign", LISTED)
    assert outcome.decision["campaign_id"] == UNKNOWN_CAMPAIGN, outcome
    assert outcome.decision["principal_id"] is None, outcome


def test_undeclared_caller_id_is_blocked(rig: Rig) -> None:
    outcome = rig.call(LISTED, "BLOCK caller_id_invalid (undeclared)", caller_id=UNDECLARED_CALLER_ID)
    assert_blocked(outcome, "caller_id_invalid", LISTED)
    assert outcome.decision["caller_id"] == UNDECLARED_CALLER_ID, outcome


def test_withheld_caller_id_is_blocked(rig: Rig) -> None:
    # The declared number, but presented as restricted: the callee would see no number.
    outcome = rig.call(LISTED, "BLOCK caller_id_invalid (withheld)", variables={"E2E_NUM_PRES": "prohib"})
    assert_blocked(outcome, "caller_id_invalid", LISTED)
    assert outcome.reasons == ["caller_id_invalid"], outcome
    assert outcome.decision["caller_id"] in ("", None), f"a withheld caller ID was recorded as presented\n{outcome}"


@pytest.mark.parametrize("at", [EVENING, SUNDAY], ids=["tuesday-21h", "sunday-11h"])
def test_outside_calling_hours_is_blocked(rig: Rig, at: datetime) -> None:
    rig.server.restart(at)
    outcome = rig.call(LISTED, f"BLOCK outside_hours ({at:%a %H:%M})")
    assert_blocked(outcome, "outside_hours", LISTED)
    assert outcome.reasons == ["outside_hours"], outcome
    decided = datetime.fromisoformat(str(outcome.decision["time"])).astimezone(ROME)
    assert at <= decided < at + timedelta(minutes=30), f"decided at {decided}, expected the faked {at}\n{outcome}"


def test_stopped_gate_lets_nothing_out(rig: Rig) -> None:
    rig.server.stop()
    outcome = rig.call(LISTED, "BLOCK: gate stopped")
    # Connection refused: AGI() continues with AGISTATUS=FAILURE, and the subroutine rejects the call.
    assert_kept_in(outcome, "(AGISTATUS=FAILURE)")
    assert outcome.decisions == [], outcome

    rig.server.start(WORKDAY)
    again = rig.call(LISTED, "ALLOW listed (gate restarted)")
    assert_allowed(again, LISTED, "listed")


def test_gate_killed_mid_session_lets_nothing_out(rig: Rig) -> None:
    # SIGSTOP first, so that Asterisk has connected and sent its request and waits for the answer.
    rig.server.pause()
    pending = rig.call_in_background(LISTED, "BLOCK: gate SIGKILLed mid-session")
    try:
        rig.wait_in_agi()
    finally:
        rig.server.kill()
    outcome = pending.result(timeout=30)
    assert_kept_in(outcome, "(AGISTATUS=")
    assert outcome.decisions == [], outcome
    assert outcome.seconds < product_agi_timeout(), f"the kill did not end the wait at once\n{outcome}"

    rig.server.start(WORKDAY)
    again = rig.call(LISTED, "ALLOW listed (gate restarted)")
    assert_allowed(again, LISTED, "listed")


def test_stalled_gate_lets_nothing_out(rig: Rig) -> None:
    # Asterisk has no AGI command timeout: only rpoguard.conf's own limit ends the wait.
    limit = product_agi_timeout()
    since = rig.carrier.checkpoint()
    rig.server.pause()
    try:
        outcome = rig.call(LISTED, f"BLOCK: gate stalled (SIGSTOP), limit {limit} s", timeout=limit + 15)
    finally:
        rig.server.resume()
    assert outcome.invites == [], f"a call got out while the gate was stalled\n{outcome}"
    assert not outcome.answered, outcome
    assert outcome.logged(f"rpoguard: call {outcome.uniqueid} blocked: engine_error (no answer from the gate "
                          f"within {limit} s)"), outcome  # fmt: skip
    assert limit - 0.5 <= outcome.seconds < limit + 3, f"the stalled gate held the call {outcome.seconds:.1f} s"
    assert outcome.decisions == [], outcome

    # Woken up, the server finds the connection Asterisk left in its backlog already closed: it must not
    # decide (and record) a call that never went out.
    time.sleep(1.5)
    assert rig.carrier.invites(since) == [], "the stalled call got out once the gate woke up"
    late = [row for row in rig.audit_rows() if row["uniqueid"] == outcome.uniqueid]
    assert late == [], f"the resumed gate recorded a decision for a call Asterisk had already rejected: {late}"
    again = rig.call(LISTED, "ALLOW listed (gate resumed)")
    assert_allowed(again, LISTED, "listed")


def test_refusal_during_a_call_blocks_the_next_one(rig: Rig) -> None:
    first = rig.call(REFUSER, "ALLOW listed; callee refuses", variables={"E2E_REFUSES": "yes"})
    assert_allowed(first, REFUSER, "listed")
    assert first.logged(f"e2e refusal: {e164(REFUSER)} campaign {CAMPAIGN} RPOGUARD_OPTOUT=OK AGISTATUS=SUCCESS"), (
        f"rpoguard-optout did not record the refusal\n{first}"
    )

    second = rig.call(REFUSER, "BLOCK optout")
    assert_blocked(second, "optout", REFUSER)


# --------------------------------------------------------------------------------------------- FreePBX 17


def test_freepbx17_hook_allows_and_the_trunk_dials(rig: Rig) -> None:
    # FreePBX 17 calls the hook with Gosub: the shipped hook must Return() for an allowed call to be dialled
    # (the old MacroExit() ended every call there, since Asterisk 21 has no app_macro).
    outcome = rig.call(LISTED, "ALLOW listed (FreePBX 17 hook)", context=FREEPBX17_ROUTE)
    assert outcome.answered, f"an allowed call was not answered\n{outcome}"
    assert len(outcome.invites) == 1, f"expected exactly one INVITE\n{outcome}"
    [invite] = outcome.invites
    # FreePBX dials OUTNUM, the number as the route passed it; the gate checked that very number.
    assert invite.number == LISTED, outcome
    assert invite.caller_id == CALLER_ID, outcome
    row = outcome.decision
    assert (row["decision"], row["reasons"], row["basis"]) == ("allow", "", "listed"), outcome
    assert (row["number"], row["raw_number"]) == (e164(LISTED), LISTED), outcome
    assert (row["campaign_id"], row["principal_id"], row["caller_id"]) == (CAMPAIGN, PRINCIPAL, CALLER_ID), outcome
    assert row["source"] == "fastagi", outcome
    assert outcome.logged(f"e2e gate: {outcome.uniqueid} dialling {LISTED} on trunk 1: rpoguard [ALLOW] "
                          f"{e164(LISTED)} decision {row['decision_id']}"), (
        f"the trunk did not dial after the hook\n{outcome}"
    )
    assert outcome.logged(f"e2e hangup: {outcome.uniqueid} decision [ALLOW] reason [] number [{e164(LISTED)}] "
                          f"id [{row['decision_id']}] reasons []"), outcome
    assert not outcome.logged("e2e route:"), f"the hook bypassed the trunk or the route failed over\n{outcome}"


def test_freepbx17_hook_blocks_and_nothing_reaches_the_trunk(rig: Rig) -> None:
    outcome = rig.call(REGISTERED, "BLOCK rpo_registered (FreePBX 17 hook)", context=FREEPBX17_ROUTE)
    assert_blocked(outcome, "rpo_registered", REGISTERED)
    # Hung up by the gate with cause 21 inside the hook: no bypass, no next trunk, no other Dial().
    assert outcome.logged(f"e2e hangup: {outcome.uniqueid} decision [BLOCK] reason [rpo_registered]"), outcome
    assert any(line.startswith(f"e2e hangup: {outcome.uniqueid} ") and line.endswith(" cause [21]")
               for line in outcome.gate_log), f"not hung up with the gate's cause 21\n{outcome}"
    assert not outcome.logged("e2e route:"), f"the route went on after the gate blocked\n{outcome}"


def assert_untouched(outcome: CallOutcome, number: str, trunk: int) -> None:
    """The hook let the call by without asking the gate: it reached the carrier as dialled."""
    assert outcome.answered, f"a call the hook should not gate was not answered\n{outcome}"
    assert [i.number for i in outcome.invites] == [number], f"expected one INVITE for {number}\n{outcome}"
    assert outcome.decisions == [], f"rpoguard decided a call the hook should not gate\n{outcome}"
    assert not outcome.logged("rpoguard:"), outcome
    assert outcome.logged(f"e2e gate: {outcome.uniqueid} dialling {number} on trunk {trunk}: rpoguard [] "), outcome
    assert not outcome.logged("e2e route:"), f"the hook bypassed the trunk or the route failed over\n{outcome}"


@pytest.mark.parametrize("number", ["112", REGISTERED], ids=["emergency-112", "office-call"])
def test_freepbx17_hook_leaves_unmarked_calls_on_ungated_trunks_alone(rig: Rig, number: str) -> None:
    # FreePBX runs the hook for every trunk call: one the route did not mark, on a trunk not listed in
    # RPOGUARD_GATED_TRUNKS, must get out as if rpoguard were not there (REGISTERED would be blocked if asked).
    outcome = rig.call(number, "untouched (FreePBX 17 hook, office route, trunk 1)", context=FREEPBX17_OFFICE_ROUTE,
                       campaign="(unmarked)")  # fmt: skip
    assert_untouched(outcome, number, trunk=1)


def test_freepbx17_hook_gates_unmarked_calls_on_a_listed_trunk(rig: Rig) -> None:
    # A trunk reserved for marketing fails closed: a route that forgot the campaign is blocked there.
    outcome = rig.call(LISTED, "BLOCK unknown_campaign (FreePBX 17 hook, unmarked route, gated trunk 2)",
                       context=FREEPBX17_UNMARKED_ROUTE, campaign="(unmarked)")  # fmt: skip
    assert_blocked(outcome, "unknown_campaign", LISTED)
    assert (outcome.decision["campaign_id"], outcome.decision["principal_id"]) == ("none", None), outcome
    assert any(line.startswith(f"e2e hangup: {outcome.uniqueid} ") and line.endswith(" cause [21]")
               for line in outcome.gate_log), f"not hung up with the gate's cause 21\n{outcome}"
    assert not outcome.logged("e2e route:"), f"the route went on after the gate blocked\n{outcome}"
    # What blocked it is the trunk being listed: the same number, unmarked, gets out on the shared trunk 1.
    control = rig.call(LISTED, "untouched (FreePBX 17 hook, office route, trunk 1)", context=FREEPBX17_OFFICE_ROUTE,
                       campaign="(unmarked)")  # fmt: skip
    assert_untouched(control, LISTED, trunk=1)
