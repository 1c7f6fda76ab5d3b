"""No call bypassed the gate, proven on a real Asterisk 22 (docs/bypass.md): `rpoguard watch` sees every
trunk leg live and, with --enforce, hangs up the ones no ALLOW covers before the carrier answers;
`reconcile` finds the same calls in Asterisk's own CDR file; `dialplan audit` names the route that dials
the trunk without the gate.

The rig: the product's dialplan with one gated route and one route written without the gate
(dialplan_bypass.conf), a third way out that runs no dialplan (an AMI originate straight to the trunk), SIPp
as the carrier ringing 2 s before it answers, `rpoguard serve` deciding, `rpoguard watch` as a subprocess.
`serve`, `watch` and Asterisk itself run on the same faked working-day clock (libfaketime, one offset), so
the decisions, the watcher's moments and the CDR's times are one timeline, as on a PBX whose clocks agree.

The calls happen once, in order, in the module fixture; each test checks one promise against what every
side recorded, and the evidence table is logged (and appended to RPOGUARD_E2E_REPORT when set).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .harness import LOOPBACK, AmiUser, Asterisk, CarrierCall, HarnessError, RunDir, SippCarrier, free_tcp_port, tail
from .test_gate import (
    CALLER_ID,
    CALLER_NAME,
    EXTRA_MODULES,
    LISTED,
    MOBILE_WITH_CONSENT,
    PRODUCT_DIALPLAN,
    REPORT_ENV,
    RPOGUARD,
    WORKDAY,
    GateServer,
    faked_clock_env,
    prepared_database,
)

pytestmark = pytest.mark.e2e

logger = logging.getLogger(__name__)

DIALPLAN = Path(__file__).with_name("dialplan_bypass.conf")
GATED = "rpoguard-bypass-gated"
UNGATED = "rpoguard-bypass-ungated"
STRAIGHT = "originate to the trunk"
RING_SECONDS = 2.0
# Not the session carrier's port: this module's carrier rings before it answers.
CARRIER_PORT = 5071
AMI_USER = "rpoguard"
REPORT_LIMIT_S = 2.0
# How long after a bypass call ended its finding is still waited for (it may be committed just after).
FINDING_GRACE_S = 5.0

WATCH_CONFIG = """\
[watch]
trunks = ["PJSIP/carrier-*"]

[ami]
user = "rpoguard"
ping_interval = 1.0
ping_timeout = 1.0
"""


@dataclass
class Call:
    """One call placed during the run, and what each side recorded of it."""

    label: str
    route: str
    number: str  # as dialled
    watched: str  # how the watcher ran: "watch", "watch --enforce", "AMI down"
    e164: str
    answered: bool = False
    carrier: CarrierCall | None = None
    decision: str = "none"
    finding: dict[str, object] | None = None
    found_after_s: float | None = None  # from the originate to the stored finding, seen by the test
    notes: list[str] = field(default_factory=list)

    @property
    def bypass(self) -> bool:
        return self.route != GATED

    def carrier_saw(self) -> str:
        c = self.carrier
        if c is None:
            return "no INVITE (hung up before Asterisk sent it)" if self.finding and self.finding["hung_up"] \
                else "no INVITE"
        parts = ["INVITE", "180"]
        parts += ["CANCEL", "487"] if c.cancelled else []
        parts += ["200"] if c.answered else []
        parts += ["BYE"] if c.bye else []
        return " → ".join(parts)


class WatchProcess:
    """`rpoguard watch` as a subprocess on the faked clock; its log is read for readiness."""

    def __init__(self, env: Mapping[str, str], log_path: Path) -> None:
        self.env = dict(env)
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, ami_port: int, *, enforce: bool) -> None:
        cmd = [str(RPOGUARD), "--verbose", "watch", "--ami", f"{LOOPBACK}:{ami_port}"]
        if enforce:
            cmd.append("--enforce")
        mark = self._size()
        with self.log_path.open("ab") as out:
            out.write(f"--- {' '.join(cmd)}\n".encode())
            out.flush()
            self._proc = subprocess.Popen(cmd, env=self.env, stdin=subprocess.DEVNULL, stdout=out,
                                          stderr=subprocess.STDOUT, start_new_session=True)
        self.wait_for("AMI connected", since=mark)

    def _size(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def mark(self) -> int:
        return self._size()

    def wait_for(self, text: str, *, since: int, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise HarnessError(f"rpoguard watch exited ({self._proc.returncode})\n{self.logs()}")
            with self.log_path.open("rb") as log:
                log.seek(since)
                if text in log.read().decode(errors="replace"):
                    return
            time.sleep(0.05)
        raise HarnessError(f"rpoguard watch never logged {text!r} within {timeout} s\n{self.logs()}")

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.send_signal(signal.SIGTERM)
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=5)
        self._proc = None

    def logs(self) -> str:
        return f"--- rpoguard watch ({self.log_path}):\n{tail(self.log_path, 40)}"


def findings(audit_db: Path) -> list[dict[str, object]]:
    """The stored findings, read straight from the audit file (a poll every 50 ms must be cheap). The file
    exists with its tables: the database was prepared through the CLI before anything ran."""
    con = sqlite3.connect(audit_db, timeout=5)
    try:
        con.row_factory = sqlite3.Row
        return [dict(row) for row in con.execute("SELECT * FROM bypass_findings ORDER BY id")]
    finally:
        con.close()


def run_cli(env: Mapping[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(RPOGUARD), *args], env=dict(env), capture_output=True, text=True, timeout=120,
                          check=False)


class BypassRun:
    """Places the calls, in order, and gathers what the carrier, the audit log and the watcher recorded."""

    def __init__(self, asterisk: Asterisk, carrier: SippCarrier, watch: WatchProcess, audit_db: Path,
                 cli_env: Mapping[str, str]) -> None:
        self.asterisk = asterisk
        self.carrier = carrier
        self.watch = watch
        self.audit_db = audit_db
        self.cli_env = dict(cli_env)
        self.calls: list[Call] = []

    def place(self, label: str, route: str, number: str, watched: str) -> Call:
        e164 = number if number.startswith("+") else "+39" + number
        call = Call(label, route, number, watched, e164)
        since = self.carrier.checkpoint()
        known = {f["id"] for f in findings(self.audit_db)}
        outcome: dict[str, bool] = {}
        failures: list[BaseException] = []

        def originate() -> None:
            try:
                place_it()
            except BaseException as exc:  # handed to the test's thread below
                failures.append(exc)

        def place_it() -> None:
            if route == STRAIGHT:
                result = self.asterisk.originate_channel(f"PJSIP/{number}@carrier", application="Wait", data="1",
                                                         caller_id=CALLER_ID, caller_name=CALLER_NAME)
            else:
                result = self.asterisk.originate(number, route, caller_id=CALLER_ID, caller_name=CALLER_NAME,
                                                 hold=1.0)
            outcome["answered"] = result.answered

        started = time.monotonic()
        placing = threading.Thread(target=originate, name=f"call-{label}")
        placing.start()
        # Watch for this call's finding while the call rings, and for a bypass a little after it ended: under
        # --enforce the call ends with the hang-up, a moment before the watcher's row is committed. Whether
        # a gated call got a finding is judged at the end, once the watcher has stopped.
        ended_at: float | None = None
        while call.finding is None:
            new = [f for f in findings(self.audit_db) if f["id"] not in known and f["number"] == e164]
            if new:
                call.finding = new[0]
                call.found_after_s = time.monotonic() - started
                break
            if not placing.is_alive():
                ended_at = ended_at or time.monotonic()
                if route == GATED or time.monotonic() - ended_at > FINDING_GRACE_S:
                    break
            time.sleep(0.05)
        placing.join()
        if failures:
            raise HarnessError(f"placing call {label} ({route}, {number}) failed: {failures[0]!r}\n"
                               f"{self.watch.logs()}") from failures[0]
        self.asterisk.wait_calls_settled(timeout=20)
        call.answered = outcome.get("answered", False)
        # The ungated route dials the number as it came (national), the others in E.164.
        carrier_calls = [c for c in self.carrier.calls(since) if c.number in (e164, number)]
        call.carrier = carrier_calls[0] if carrier_calls else None
        if len(carrier_calls) > 1:
            call.notes.append(f"{len(carrier_calls)} calls at the carrier")
        self.calls.append(call)
        logger.info("call %s: %s", label, call)
        return call

    def label_decisions(self) -> None:
        """Each call's decision from the audit log (the gated calls have one; the others none)."""
        out = run_cli(self.cli_env, "audit", "export", "--format", "jsonl")
        rows = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
        for call in self.calls:
            mine = [r for r in rows if r["number"] == call.e164 and r["decision"] == "allow"]
            if call.route == GATED and mine:
                call.decision = f"allow ({mine[-1]['basis']})"

    def table(self) -> str:
        lines = ["| # | call | route | watcher | decision | finding (why; hung up; time to report) | "
                 "what SIPp saw |", "|---|---|---|---|---|---|---|"]
        for index, c in enumerate(self.calls, start=1):
            if c.finding is None:
                found = "none"
            else:
                stored_ms = (int(str(c.finding["found_us"])) - int(str(c.finding["at_us"]))) / 1000
                found = (f"bypass: {c.finding['why']}; hung up {'yes' if c.finding['hung_up'] else 'no'}; "
                         f"{c.found_after_s:.2f} s from the originate, {stored_ms:.1f} ms from DialBegin")
            lines.append(f"| {index} | {c.label} ({c.e164}) | {c.route} | {c.watched} | {c.decision} | {found} | "
                         f"{c.carrier_saw()} |")
        return "\n".join(lines)


@pytest.fixture(scope="module")
def libfaketime() -> Path:
    found = sorted(Path("/usr/lib").glob("*/faketime/libfaketimeMT.so.1"))
    if not found:
        pytest.fail("libfaketime is not installed on the host (Debian package faketime)", pytrace=False)
    return found[0]


@pytest.fixture(scope="module")
def bypass_run(asterisk_rootfs: Path, e2e_run_dir: RunDir, libfaketime: Path,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[BypassRun]:
    work = tmp_path_factory.mktemp("bypass")
    secret = "e2e-" + os.urandom(6).hex()
    cli_env = prepared_database(work, WATCH_CONFIG)
    cli_env["RPOGUARD_AMI_SECRET"] = secret
    audit_db = work / "rpoguard.audit.db"
    server = GateServer(cli_env, free_tcp_port(), work / "serve.log", libfaketime)
    offset = server.offset(WORKDAY)
    carrier = SippCarrier(asterisk_rootfs, e2e_run_dir.sub("bypass-carrier"), port=CARRIER_PORT,
                          ring_seconds=RING_SECONDS)
    asterisk = Asterisk(
        asterisk_rootfs, e2e_run_dir.sub("bypass-asterisk"), [PRODUCT_DIALPLAN, DIALPLAN],
        dialplan_globals={"RPOGUARD_AGI": f"agi://{LOOPBACK}:{server.port}"},
        extra_modules=EXTRA_MODULES, carrier_port=CARRIER_PORT, cdr=True, cel=True,
        ami_users={AMI_USER: AmiUser(secret, read="call", write="call,reporting")},
        clock_offset=offset, clock_library=libfaketime,
    )  # fmt: skip
    watch = WatchProcess(faked_clock_env(cli_env, libfaketime, offset), work / "watch.log")
    run: BypassRun | None = None
    try:
        server.start(WORKDAY)
        carrier.start()
        asterisk.start()
        run = BypassRun(asterisk, carrier, watch, audit_db, cli_env)
        _place_calls(run)
        run.label_decisions()
        yield run
    finally:
        watch.stop()
        asterisk.stop()
        carrier.stop()
        server.stop()
        if run is not None:
            _report(run)


def _place_calls(run: BypassRun) -> None:
    ami_port = run.asterisk.ami_port
    run.watch.start(ami_port, enforce=False)
    run.place("gated", GATED, LISTED, "watch")
    run.place("ungated route", UNGATED, "3331110001", "watch")
    run.place("straight to the trunk", STRAIGHT, "+393331110002", "watch")
    run.watch.stop()
    run.watch.start(ami_port, enforce=True)
    run.place("gated", GATED, MOBILE_WITH_CONSENT, "watch --enforce")
    run.place("ungated route", UNGATED, "3331110003", "watch --enforce")
    run.place("straight to the trunk", STRAIGHT, "+393331110004", "watch --enforce")
    # AMI off while Asterisk runs on, then on again. No call is placed meanwhile: in Asterisk 22.10, call
    # events while the kicked sessions linger make the next `manager reload` hang (seen in this rig).
    mark = run.watch.mark()
    run.asterisk.ami_down()
    run.watch.wait_for("not watching trunk calls", since=mark)
    time.sleep(1.0)
    mark = run.watch.mark()
    run.asterisk.ami_up()
    run.watch.wait_for("AMI connected", since=mark)
    run.place("ungated route", UNGATED, "3331110006", "watch --enforce, reconnected")
    run.place("gated", GATED, LISTED, "watch --enforce, reconnected")
    run.watch.stop()


def _report(run: BypassRun) -> None:
    table = run.table()
    logger.info("bypass e2e:\n%s", table)
    target = os.environ.get(REPORT_ENV)
    if target:
        with open(target, "a", encoding="utf-8") as report:
            report.write(f"\n### rpoguard e2e bypass run (watch, reconcile, dialplan audit)\n\n{table}\n")


def test_every_gated_call_is_answered_and_has_no_finding(bypass_run: BypassRun) -> None:
    gated = [c for c in bypass_run.calls if c.route == GATED]
    assert len(gated) == 3
    # Everything the watcher found, read once it has stopped: nothing names a gated call's number.
    reported = {f["number"] for f in findings(bypass_run.audit_db) if f["kind"] == "bypass"}
    for call in gated:
        assert call.decision.startswith("allow"), f"{call}\n{bypass_run.table()}"
        assert call.answered and call.carrier is not None and call.carrier.answered, call
        assert call.e164 not in reported, f"a gated call was reported as a bypass: {call}\n{bypass_run.watch.logs()}"


def test_each_bypass_is_reported_by_watch_within_two_seconds(bypass_run: BypassRun) -> None:
    watched = [c for c in bypass_run.calls if c.bypass]
    assert len(watched) == 5
    for call in watched:
        assert call.finding is not None, f"bypass not reported: {call}\n{bypass_run.watch.logs()}"
        assert call.finding["kind"] == "bypass" and call.finding["why"] == "no_decision", call.finding
        assert call.finding["channel"] and str(call.finding["channel"]).startswith("PJSIP/carrier-"), call.finding
        assert call.found_after_s is not None and call.found_after_s < REPORT_LIMIT_S, (
            f"reported {call.found_after_s:.2f} s after the call began\n{bypass_run.table()}")
    logged = bypass_run.watch.logs()
    assert logged.count("ERROR rpoguard.bypass.watch: BYPASS") >= 1


def test_enforce_hangs_the_bypass_up_before_the_carrier_answers(bypass_run: BypassRun) -> None:
    enforced = [c for c in bypass_run.calls if c.bypass and c.watched.startswith("watch --enforce")]
    assert len(enforced) == 3
    for call in enforced:
        # The hang-up may even come before Asterisk sent the INVITE (then the carrier saw nothing); when the
        # INVITE went out, the carrier saw it cancelled while it rang, never answered.
        if call.carrier is not None:
            assert call.carrier.cancelled and not call.carrier.answered, (
                f"SIPp answered a bypass that --enforce should have hung up: {call}\n{bypass_run.table()}")
        assert not call.answered, call
        assert call.finding is not None and call.finding["hung_up"], call
    # Without --enforce the same kinds of call went through: the watcher only reported them.
    reported_only = [c for c in bypass_run.calls if c.bypass and c.watched == "watch"]
    assert reported_only and all(c.carrier is not None and c.carrier.answered for c in reported_only)
    assert all(c.finding is not None and not c.finding["hung_up"] for c in reported_only)


def test_ami_stopped_and_restarted_is_a_not_watched_finding_and_the_watcher_recovers(bypass_run: BypassRun) -> None:
    gaps = [f for f in findings(bypass_run.audit_db) if f["kind"] == "not_watched" and "AMI" in str(f["detail"])]
    assert gaps, f"no 'not watched' finding\n{bypass_run.watch.logs()}"
    gap = gaps[0]
    assert gap["until_us"] is not None and int(gap["until_us"]) > int(gap["at_us"]), gap
    assert "not watched from" in str(gap["detail"])
    recovered = [c for c in bypass_run.calls if c.watched.endswith("reconnected") and c.bypass]
    assert recovered and all(c.finding is not None and c.finding["hung_up"] for c in recovered), recovered


@pytest.mark.parametrize("kind", ["cdr", "cel"])
def test_reconcile_over_the_runs_records_lists_exactly_the_bypass_calls(bypass_run: BypassRun, kind: str) -> None:
    records = bypass_run.asterisk.cdr_csv if kind == "cdr" else bypass_run.asterisk.cel_csv
    assert records.is_file(), f"no {kind} file at {records}"
    # The chroot's Asterisk writes CDR times in its own zone, UTC (CEL times are epoch seconds).
    result = run_cli(bypass_run.cli_env, "reconcile", f"--{kind}", str(records), "--timezone", "UTC", "--json")
    assert result.returncode == 1, f"reconcile exited {result.returncode}\n{result.stdout}{result.stderr}"
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    bypasses = [line for line in lines if line.get("kind") == "bypass"]
    # A call's trunk channel names it in every record; Asterisk's records of an originate straight to the
    # trunk do not hold the number it dialled (only AMI's DialBegin does), so the channel is the key.
    calls = {str(c.finding["channel"]): c for c in bypass_run.calls if c.bypass and c.finding}
    assert len(calls) == 5, bypass_run.table()
    assert sorted(line["channel"] for line in bypasses) == sorted(calls), result.stdout
    for line in bypasses:
        call = calls[line["channel"]]
        assert line["number"] == (None if call.route == STRAIGHT else call.e164), line
    [summary] = [line for line in lines if line.get("kind") == "summary"]
    logger.info("reconcile --%s: %s", kind, summary)
    gated = sum(1 for c in bypass_run.calls if not c.bypass)
    assert summary["covered"] == gated, summary


def test_dialplan_audit_names_the_ungated_route(bypass_run: BypassRun) -> None:
    # The dialplan Asterisk has loaded, read through AMI (ShowDialPlan) as an administrator would.
    result = run_cli(bypass_run.cli_env, "dialplan", "audit", "--ami", f"{LOOPBACK}:{bypass_run.asterisk.ami_port}")
    assert result.returncode == 1, f"dialplan audit exited {result.returncode}\n{result.stdout}{result.stderr}"
    assert UNGATED in result.stdout, result.stdout
    flagged = [line for line in result.stdout.splitlines() if GATED in line and UNGATED not in line]
    assert flagged == [], f"the gated route was reported:\n{result.stdout}"
