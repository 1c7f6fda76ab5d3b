"""The ARI gate in a real Asterisk 22: `rpoguard ari` decides like FastAGI, and whatever happens to it or
to its WebSocket, nothing gets out without a recorded ALLOW (issue 7; architecture.md §7 "ARI gate").

The rig is test_gate.py's (database prepared through the real CLI, SIPp as the carrier, every call
checked at the carrier and in the audit log), with `rpoguard ari` instead of `rpoguard serve`: Asterisk
has its HTTP server and ARI enabled on loopback, and the dialplan uses rpoguard-check-ari. `rpoguard ari`
runs as a subprocess whose wall clock libfaketime sets; between it and Asterisk sits a small TCP proxy
the tests can blackhole and cut, as a flaky network or a restarted proxy would.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import secrets
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path

import pytest

from .harness import (
    ARI_MODULES,
    LOOPBACK,
    Asterisk,
    HarnessError,
    SippCarrier,
    StartAsterisk,
    ari_files,
    free_tcp_port,
    tail,
)
from .test_gate import (  # noqa: F401 (cli_env and libfaketime are fixtures this module uses)
    CALLER_ID,
    CALLER_NAME,
    CAMPAIGN,
    CHECKED_AT,
    EXTRA_MODULES,
    LISTED,
    PRINCIPAL,
    PRODUCT_DIALPLAN,
    REGISTERED,
    RPOGUARD,
    UNKNOWN_CAMPAIGN,
    WORKDAY,
    CallOutcome,
    Rig,
    _write_report,
    cli_env,
    e164,
    faked_clock_env,
    libfaketime,
    product_time_limit,
)

pytestmark = pytest.mark.e2e

logger = logging.getLogger(__name__)

DIALPLAN = Path(__file__).with_name("dialplan_ari.conf")
CONTEXT = "rpoguard-e2e-ari-out"
UNKNOWN_CAMPAIGN_CONTEXT = "rpoguard-e2e-ari-unknown-campaign"
DIALER_CONTEXT = "rpoguard-e2e-ari-dialer"
APP = "rpoguard"
ARI_USER = "rpoguard-e2e"
CONNECTED = "ARI: application 'rpoguard' connected"


# --------------------------------------------------------------------------------------------- proxy


class CutProxy:
    """A TCP proxy between `rpoguard ari` and Asterisk's HTTP server that a test can break.

    ``blackhole()`` keeps the connections open but drops every byte (events are lost, as on a network that
    silently stopped); ``cut()`` closes every connection at once (a restarted proxy or HTTP server).
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server((LOOPBACK, 0))
        self.port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._blackholed = False
        self.accepted = 0
        self._thread = threading.Thread(target=self._accept, name="e2e-ari-proxy", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection((LOOPBACK, self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self.accepted += 1
                self._sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                break
            if self._blackholed:
                continue
            try:
                dst.sendall(data)
            except OSError:
                break
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    @property
    def blackholed(self) -> bool:
        return self._blackholed

    def blackhole(self) -> None:
        self._blackholed = True

    def cut(self) -> None:
        """Close every open connection and forward normally again for the next ones."""
        with self._lock:
            sockets, self._sockets = self._sockets, []
            for sock in sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._blackholed = False

    def close(self) -> None:
        self._listener.close()
        self.cut()


# --------------------------------------------------------------------------------------------- the gate


class AriProcess:
    """`rpoguard ari` as a subprocess, its wall clock faked with libfaketime (as test_gate.GateServer)."""

    def __init__(self, env: Mapping[str, str], url: str, password: str, log_path: Path, preload: Path) -> None:
        self.env = {**env, "RPOGUARD_ARI_PASSWORD": password}
        self.url = url
        self.log_path = log_path
        self.libfaketime = preload
        self.port = 0  # Rig reads it; the ARI gate listens on nothing
        self.clock: datetime | None = None
        self._epoch = time.time()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def connections(self) -> int:
        return self.log_text().count(CONNECTED)

    def start(self, at: datetime) -> None:
        if self.running:
            raise HarnessError("rpoguard ari is already running")
        offset = round(at.timestamp() - self._epoch)
        env = faked_clock_env(self.env, self.libfaketime, offset)
        before = self.connections()
        # The password comes from the environment: never on a command line.
        cmd = [str(RPOGUARD), "--verbose", "ari", "--url", self.url, "--app", APP, "--user", ARI_USER]
        with self.log_path.open("ab") as out:
            out.write(f"--- starting {' '.join(cmd)} with FAKETIME={offset:+d} ({at.isoformat()})\n".encode())
            out.flush()
            self._proc = subprocess.Popen(
                cmd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.clock = at
        self.wait_connected(before + 1)
        logger.info("rpoguard ari up (pid %d), clock %s", self._proc.pid, at.isoformat())

    def wait_connected(self, count: int, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while self.connections() < count:
            if not self.running:
                raise HarnessError(f"rpoguard ari exited\n{self.logs()}")
            if time.monotonic() >= deadline:
                raise HarnessError(f"rpoguard ari did not connect (#{count}) within {timeout} s\n{self.logs()}")
            time.sleep(0.05)
        # "connected" is logged before the resync; give the resync its moment before calls arrive.
        time.sleep(0.3)

    def stop(self) -> None:
        if self._proc is None:
            return
        self.resume()
        self._proc.send_signal(signal.SIGTERM)
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()
        self._proc = None

    def kill(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGKILL)
        self._proc.wait(timeout=10)
        self._proc = None

    def pause(self) -> None:
        if self._proc is not None:
            self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGCONT)

    def ensure(self, at: datetime) -> None:
        self.resume()
        if not self.running or self.clock != at:
            self.kill()
            self.start(at)

    def logs(self) -> str:
        return f"--- rpoguard ari ({self.log_path}):\n{tail(self.log_path, 30)}"


# --------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def ari_password() -> str:
    return secrets.token_urlsafe(24)


@pytest.fixture(scope="module")
def ari_asterisk(start_asterisk: StartAsterisk, ari_password: str) -> Iterator[Asterisk]:
    http_port = free_tcp_port()
    files = ari_files(http_port, ARI_USER, ari_password)
    asterisk = start_asterisk(
        PRODUCT_DIALPLAN, DIALPLAN, extra_modules=(*EXTRA_MODULES, *ARI_MODULES), extra_files=files
    )
    asterisk.http_port = http_port  # type: ignore[attr-defined]
    yield asterisk
    asterisk.stop()


@pytest.fixture(scope="module")
def proxy(ari_asterisk: Asterisk) -> Iterator[CutProxy]:
    cut_proxy = CutProxy(ari_asterisk.http_port)  # type: ignore[attr-defined]
    yield cut_proxy
    cut_proxy.close()


@pytest.fixture(scope="module")
def ari_gate(
    cli_env: dict[str, str], libfaketime: Path, proxy: CutProxy, ari_password: str,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[AriProcess]:
    log_path = tmp_path_factory.mktemp("ari") / "ari.log"
    gate = AriProcess(cli_env, f"http://{LOOPBACK}:{proxy.port}", ari_password, log_path, libfaketime)
    gate.start(WORKDAY)
    yield gate
    gate.stop()
    assert ari_password not in gate.log_text(), "the ARI password appeared in rpoguard's log"


@pytest.fixture(scope="module")
def rig(
    ari_asterisk: Asterisk, sipp_carrier: SippCarrier, ari_gate: AriProcess, cli_env: dict[str, str]  # noqa: F811
) -> Iterator[Rig]:
    rig = Rig(ari_asterisk, sipp_carrier, ari_gate, cli_env)  # type: ignore[arg-type]
    version = ari_asterisk.cli("core show version").strip().split(" built by ")[0]
    started = datetime.now(UTC)
    yield rig
    rig.close()
    _write_report(rig.evidence, f"rpoguard e2e ARI gate run {started:%Y-%m-%d %H:%M} UTC — {version}; "
                                f"`rpoguard ari` clock {WORKDAY.isoformat()} (faketime), RPO answers checked "
                                f"{CHECKED_AT}")


@pytest.fixture(autouse=True)
def _gate_ready(rig: Rig, ari_gate: AriProcess, proxy: CutProxy, request: pytest.FixtureRequest) -> Iterator[None]:
    # Each test starts with the gate connected on the working-day clock, whatever an earlier test left.
    _restore(ari_gate, proxy)
    rig.test = request.node.name.removeprefix("test_")
    yield
    _restore(ari_gate, proxy)


def _restore(ari_gate: AriProcess, proxy: CutProxy) -> None:
    if proxy.blackholed:
        before = ari_gate.connections()
        proxy.cut()
        if ari_gate.running:
            ari_gate.wait_connected(before + 1)
    ari_gate.ensure(WORKDAY)


# --------------------------------------------------------------------------------------------- checks


def call(rig: Rig, number: str, expected: str, *, context: str = CONTEXT, campaign: str = CAMPAIGN,
         variables: Mapping[str, str] | None = None, timeout: float = 15) -> CallOutcome:
    return rig.call(number, expected, context=context, campaign=campaign, variables=variables, timeout=timeout)


def hangup_line(outcome: CallOutcome) -> str:
    lines = [line for line in outcome.gate_log if line.startswith(f"e2e hangup: {outcome.uniqueid} ")]
    assert len(lines) == 1, f"expected one hangup line for the call\n{outcome}"
    return lines[0]


def assert_allowed(outcome: CallOutcome, number: str, basis: str) -> None:
    assert outcome.answered, f"an allowed call was not answered\n{outcome}"
    assert len(outcome.invites) == 1, f"expected exactly one INVITE\n{outcome}"
    [invite] = outcome.invites
    assert invite.number == e164(number), outcome
    assert invite.caller_id == CALLER_ID, outcome
    row = outcome.decision
    assert (row["decision"], row["reasons"], row["basis"]) == ("allow", "", basis), outcome
    assert row["number"] == e164(number) and row["caller_id"] == CALLER_ID, outcome
    assert row["campaign_id"] == CAMPAIGN and row["principal_id"] == PRINCIPAL, outcome
    assert row["source"] == "ari", outcome
    # The dialplan dialled on the strength of this very decision, with the gate's time limit gone.
    assert outcome.logged(f"allowed {e164(number)} decision {row['decision_id']} timeout 3"), outcome


def assert_blocked(outcome: CallOutcome, reason: str, number: str) -> None:
    assert outcome.invites == [], f"a call the gate blocked reached the carrier\n{outcome}"
    assert not outcome.answered, outcome
    row = outcome.decision
    assert row["decision"] == "block" and row["source"] == "ari", outcome
    assert outcome.reasons[0] == reason, f"expected primary reason {reason}\n{outcome}"
    assert row["number"] == e164(number), outcome
    assert not outcome.logged("e2e gate:"), f"the dialplan went on past the gate\n{outcome}"
    # `rpoguard ari` hung it up itself, with cause 21, after setting the variables.
    assert hangup_line(outcome).endswith(f"cause 21 decision BLOCK reason {reason}"), outcome


def assert_nothing_out(outcome: CallOutcome) -> None:
    assert outcome.invites == [], f"a call got out without the gate's ALLOW\n{outcome}"
    assert not outcome.answered, outcome
    assert not outcome.logged("e2e gate:"), f"the dialplan went on past the gate\n{outcome}"
    assert hangup_line(outcome).endswith("cause 21 decision BLOCK reason engine_error"), outcome


def wait_in_stasis(asterisk: Asterisk, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if f"!Stasis!{APP}," in asterisk.cli("core show channels concise"):
            return
        time.sleep(0.05)
    raise HarnessError(f"no call entered Stasis({APP}) within {timeout} s\n{asterisk.logs()}")


# --------------------------------------------------------------------------------------------- tests


def test_listed_number_is_allowed(rig: Rig) -> None:
    outcome = call(rig, LISTED, "ALLOW listed (ARI)")
    assert_allowed(outcome, LISTED, "listed")
    assert hangup_line(outcome).endswith("decision ALLOW reason "), outcome


def test_registered_number_is_blocked(rig: Rig) -> None:
    outcome = call(rig, REGISTERED, "BLOCK rpo_registered (ARI)")
    assert_blocked(outcome, "rpo_registered", REGISTERED)


def test_unknown_campaign_is_blocked(rig: Rig) -> None:
    outcome = call(rig, LISTED, "BLOCK unknown_campaign (ARI)", context=UNKNOWN_CAMPAIGN_CONTEXT,
                   campaign=UNKNOWN_CAMPAIGN)
    assert_blocked(outcome, "unknown_campaign", LISTED)
    assert outcome.decision["campaign_id"] == UNKNOWN_CAMPAIGN, outcome


def test_withheld_caller_id_is_blocked(rig: Rig) -> None:
    # The declared number, presented as restricted: ARI's channel shows the number, CALLERID(pres) does not.
    outcome = call(rig, LISTED, "BLOCK caller_id_invalid (withheld, ARI)", variables={"E2E_NUM_PRES": "prohib"})
    assert_blocked(outcome, "caller_id_invalid", LISTED)
    assert outcome.reasons == ["caller_id_invalid"], outcome


def test_stopped_gate_lets_nothing_out(rig: Rig, ari_gate: AriProcess) -> None:
    ari_gate.stop()
    outcome = call(rig, LISTED, "BLOCK: rpoguard ari stopped")
    assert_nothing_out(outcome)
    assert outcome.logged(f"rpoguard: call {outcome.uniqueid} blocked: engine_error (STASISSTATUS=FAILED)"), outcome
    assert outcome.decisions == [], outcome


def test_gate_killed_with_a_call_inside_lets_nothing_out(rig: Rig, ari_gate: AriProcess) -> None:
    limit = product_time_limit("RPOGUARD_ARI_TIMEOUT")
    # SIGSTOP first, so that the call is inside the application when the process dies.
    ari_gate.pause()
    pending = rig._pool.submit(call, rig, LISTED, f"BLOCK: rpoguard ari SIGKILLed, call inside ({limit} s limit)",
                               timeout=limit + 15)
    try:
        wait_in_stasis(rig.asterisk)
    finally:
        ari_gate.kill()
    outcome = pending.result(timeout=limit + 30)
    assert_nothing_out(outcome)
    assert outcome.logged(f"rpoguard: call {outcome.uniqueid} blocked: engine_error (no answer from the ARI gate "
                          f"within {limit} s)"), outcome
    assert outcome.decisions == [], outcome


def test_restarted_gate_decides_the_call_left_inside(rig: Rig, ari_gate: AriProcess) -> None:
    ari_gate.pause()
    pending = rig._pool.submit(call, rig, LISTED, "ALLOW listed: decided by the restarted rpoguard ari")
    try:
        wait_in_stasis(rig.asterisk)
    finally:
        ari_gate.kill()
    ari_gate.start(WORKDAY)
    outcome = pending.result(timeout=60)
    assert_allowed(outcome, LISTED, "listed")
    assert "ari_resync" in str(outcome.decision["evidence"]), f"not decided by the resync\n{outcome}"


def test_cut_websocket_is_survived(rig: Rig, ari_gate: AriProcess, proxy: CutProxy) -> None:
    before = ari_gate.connections()
    proxy.cut()
    ari_gate.wait_connected(before + 1)
    outcome = call(rig, LISTED, "ALLOW listed after a WebSocket cut")
    assert_allowed(outcome, LISTED, "listed")


def test_call_whose_event_was_lost_is_decided_after_reconnecting(
    rig: Rig, ari_gate: AriProcess, proxy: CutProxy
) -> None:
    # The network silently drops everything: Asterisk sends StasisStart into the void.
    before = ari_gate.connections()
    proxy.blackhole()
    pending = rig._pool.submit(call, rig, LISTED, "ALLOW listed: StasisStart lost, decided after reconnecting")
    try:
        wait_in_stasis(rig.asterisk)
    finally:
        proxy.cut()
    ari_gate.wait_connected(before + 1)
    outcome = pending.result(timeout=60)
    assert_allowed(outcome, LISTED, "listed")
    assert "ari_resync" in str(outcome.decision["evidence"]), f"not decided by the resync\n{outcome}"


def ari_request(asterisk: Asterisk, password: str, method: str, path: str, params: Mapping[str, str]) -> object:
    """One ARI REST call straight to Asterisk, as a dialer makes it."""
    query = urllib.parse.urlencode(params)
    url = f"http://{LOOPBACK}:{asterisk.http_port}/ari{path}?{query}"  # type: ignore[attr-defined]
    token = base64.b64encode(f"{ARI_USER}:{password}".encode()).decode()
    request = urllib.request.Request(url, method=method, headers={"Authorization": f"Basic {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read()
    return json.loads(body) if body else None


def test_dialer_originating_through_ari_is_gated(rig: Rig, ari_password: str) -> None:
    # The way README tells an ARI dialer to originate: a Local/ channel into the gated dialplan.
    mark = rig._log_size()
    since = rig.carrier.checkpoint()
    ari_request(rig.asterisk, ari_password, "POST", "/channels", {
        "endpoint": f"Local/{LISTED}@{CONTEXT}", "context": DIALER_CONTEXT, "extension": "s", "priority": "1",
        "callerId": f'"{CALLER_NAME}" <{CALLER_ID}>', "timeout": "15",
    })
    rig.asterisk.wait_calls_settled(timeout=20)
    uniqueid, gate_log = rig._dialplan_lines(mark, LISTED)
    invites = rig.carrier.invites(since)
    rows = [row for row in rig.audit_rows() if row["uniqueid"] == uniqueid]
    assert [i.number for i in invites] == [e164(LISTED)], (invites, gate_log)
    assert [(r["decision"], r["source"]) for r in rows] == [("allow", "ari")], rows
    assert any(f"allowed {e164(LISTED)} decision {rows[0]['decision_id']}" in line for line in gate_log), gate_log

    # Straight into the application, never through the dialplan: hung up, undecided, nothing out.
    since = rig.carrier.checkpoint()
    created = ari_request(rig.asterisk, ari_password, "POST", "/channels/create", {
        "endpoint": f"PJSIP/{e164(LISTED)}@carrier", "app": APP, "appArgs": f"{LISTED},{CAMPAIGN}",
    })
    assert isinstance(created, dict)
    rig.asterisk.wait_calls_settled(timeout=20)
    assert rig.carrier.invites(since) == [], "a channel created into the application got out"
    assert [row for row in rig.audit_rows() if row["uniqueid"] == created["id"]] == []
    assert f"channel {created['id']} was created into the application" in rig.server.log_text()  # type: ignore[attr-defined]
