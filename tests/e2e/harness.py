"""A real Asterisk 22 and a SIPp "carrier" for end-to-end tests (architecture.md §5).

Both run inside the Debian sid root file system that ``scripts/build-asterisk-rootfs`` caches, through
``chroot``. The chroot shares the host's network, so Asterisk reaches a FastAGI server on the host's
127.0.0.1 and SIPp answers Asterisk's INVITEs on 127.0.0.1:5070. The INVITEs SIPp received are the
ground truth of which calls got out.

Per-session files (configuration, logs, control socket, SIPp traces) live in a :class:`RunDir` under
``/run/rpoguard-e2e/`` inside the root file system; it is removed at the end, so the shared root file
system carries no state from one run to the next. Nothing is mounted: Asterisk and SIPp need neither
/proc nor a bind-mounted /dev (mmdebstrap already creates the few device nodes they use).
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import itertools
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from types import TracebackType

logger = logging.getLogger(__name__)

SIP_PORT = 5060
CARRIER_PORT = 5070
# The SIPp scenario of a carrier that rings before it answers; RING_PLACEHOLDER becomes milliseconds.
RINGING_SCENARIO = Path(__file__).with_name("sipp") / "uas_ringing.xml"
RING_PLACEHOLDER = "__RING_MS__"
# A longer ring time is most likely milliseconds given as seconds; no test waits that long on purpose.
MAX_RING_SECONDS = 60.0
LOOPBACK = "127.0.0.1"
# Inside the chroot; the host sees it as <rootfs>/run/rpoguard-e2e.
RUN_BASE = PurePosixPath("/run/rpoguard-e2e")
PID_FILE = "process.pid"

# autoload=no keeps boot fast and the behaviour explicit; this is everything a checked Dial needs.
ASTERISK_MODULES: tuple[str, ...] = (
    # dialplan
    "pbx_config",
    "app_dial",
    "app_stack",  # GoSub/Return: the product's dialplan is a subroutine
    "app_verbose",  # Verbose()/Log()
    "app_echo",
    "func_callerid",
    "func_logic",  # IF, ISNULL, EXISTS
    "func_strings",  # LEN, FILTER, QUOTE, ...
    "func_cut",
    "func_channel",
    "func_global",
    "func_hangupcause",
    # the gate
    "res_speech",  # res_agi will not load without it
    "res_agi",
    # originate from the CLI (the harness itself uses AMI, which is built into the core)
    "res_clioriginate",
    # SIP towards the carrier
    "res_sorcery_config",
    "res_sorcery_memory",
    "res_sorcery_astdb",  # res_pjsip requires it
    "res_pjproject",
    "res_pjsip",
    "res_pjsip_session",
    "res_pjsip_pubsub",  # chan_pjsip requires it
    "res_pjsip_sdp_rtp",  # without it the INVITE carries no audio offer
    "res_pjsip_caller_id",  # puts the channel's caller ID into the From header
    "res_pjsip_rfc3326",  # Reason header on BYE/CANCEL
    "res_pjsip_logger",  # `pjsip set logger on` when debugging
    "chan_pjsip",
    "res_rtp_asterisk",
    # media: the originated Local channel is signed linear, the carrier speaks G.711
    "bridge_simple",
    "bridge_native_rtp",
    "codec_ulaw",
    "codec_alaw",
    "res_timing_timerfd",
)

# What a Stasis application (`rpoguard ari`) needs on top, with autoload=no: res_ari links to
# res_websocket_client and the stasis recording/playback modules even when they are not used.
ARI_MODULES: tuple[str, ...] = (
    "res_http_websocket",
    "res_websocket_client",
    "res_stasis",
    "res_stasis_answer",
    "res_stasis_playback",
    "res_stasis_recording",
    "res_stasis_snoop",
    "res_ari",
    "res_ari_model",
    "res_ari_channels",
    "res_ari_events",
    "res_ari_applications",
    "app_stasis",
)


# Asterisk(cdr=True): cdr_csv writes <astlogdir>/cdr-csv/Master.csv; the CDR engine itself is in the core.
CDR_MODULES: tuple[str, ...] = ("cdr_csv",)
# Asterisk(cel=True): in Asterisk 22.x cel_custom is a front of res_cdrel_custom (it will not load alone).
CEL_MODULES: tuple[str, ...] = ("res_cdrel_custom", "cel_custom")
CEL_EVENTS: tuple[str, ...] = (
    "CHAN_START", "CHAN_END", "ANSWER", "HANGUP", "APP_START", "APP_END", "BRIDGE_ENTER", "BRIDGE_EXIT", "LINKEDID_END",
)  # fmt: skip
# The "Master.csv" legacy mapping of the sample cel_custom.conf shipped with Asterisk 22, column for column.
CEL_CUSTOM_MASTER = (
    "${CSV_QUOTE(${eventtype})},${CSV_QUOTE(${eventtime})},${CSV_QUOTE(${CALLERID(name)})},"
    "${CSV_QUOTE(${CALLERID(num)})},${CSV_QUOTE(${CALLERID(ANI)})},${CSV_QUOTE(${CALLERID(RDNIS)})},"
    "${CSV_QUOTE(${CALLERID(DNID)})},${CSV_QUOTE(${CHANNEL(exten)})},${CSV_QUOTE(${CHANNEL(context)})},"
    "${CSV_QUOTE(${CHANNEL(channame)})},${CSV_QUOTE(${CHANNEL(appname)})},${CSV_QUOTE(${CHANNEL(appdata)})},"
    "${CSV_QUOTE(${CHANNEL(amaflags)})},${CSV_QUOTE(${CHANNEL(accountcode)})},${CSV_QUOTE(${CHANNEL(uniqueid)})},"
    "${CSV_QUOTE(${CHANNEL(linkedid)})},${CSV_QUOTE(${BRIDGEPEER})},${CSV_QUOTE(${CHANNEL(userfield)})},"
    "${CSV_QUOTE(${userdeftype})},${CSV_QUOTE(${eventextra})}"
)
CEL_COLUMNS: tuple[str, ...] = (
    "eventtype", "eventtime", "cid_name", "cid_num", "cid_ani", "cid_rdnis", "cid_dnid", "exten", "context",
    "channame", "appname", "appdata", "amaflags", "accountcode", "uniqueid", "linkedid", "peer", "userfield",
    "userdeftype", "eventextra",
)  # fmt: skip
# cdr_csv's columns with loguniqueid and loguserfield on (cdr_csv.c, build_csv_record), in file order.
CDR_COLUMNS: tuple[str, ...] = (
    "accountcode", "src", "dst", "dcontext", "clid", "channel", "dstchannel", "lastapp", "lastdata", "start",
    "answer", "end", "duration", "billsec", "disposition", "amaflags", "uniqueid", "userfield",
)  # fmt: skip


@dataclass(frozen=True)
class AmiUser:
    """One manager.conf user section: ``Asterisk(ami_users={"name": AmiUser(secret, read, write)})``."""

    secret: str
    read: str = "all"
    write: str = ""


def ari_files(http_port: int, user: str, password: str) -> dict[str, str]:
    """http.conf and ari.conf for an ARI on loopback with one user (Asterisk.extra_files)."""
    return {
        "http.conf": f"[general]\nenabled = yes\nbindaddr = {LOOPBACK}\nbindport = {http_port}\n",
        "ari.conf": (
            "[general]\nenabled = yes\n\n"
            f"[{user}]\ntype = user\nread_only = no\npassword = {password}\npassword_format = plain\n"
        ),
    }


def read_csv_records(path: Path, columns: Sequence[str]) -> list[dict[str, str]]:
    """A CSV file Asterisk writes (no header line) as one dict per row; a missing file has no rows.

    A row with another number of columns than expected is an error: the format is then not the one the
    tests were written for.
    """
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return []
    records = []
    # Asterisk appends a row in one write, but a reader may still catch the last one half written.
    complete = text[: text.rfind("\n") + 1]
    for number, row in enumerate(csv.reader(io.StringIO(complete)), start=1):
        if len(row) != len(columns):
            raise HarnessError(f"{path}, line {number}: {len(row)} columns, expected {len(columns)}: {row}")
        records.append(dict(zip(columns, row, strict=True)))
    return records


class HarnessError(RuntimeError):
    """Something in the test rig (not the product) went wrong; the message carries the logs' tails."""


class PortBusyError(HarnessError):
    pass


# --------------------------------------------------------------------------------------------- helpers


def tail(path: Path, lines: int = 40) -> str:
    """The last lines of a log file, or a note saying why there are none."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"({path} does not exist)"
    last = text.splitlines()[-lines:]
    return "\n".join(last) if last else f"({path} is empty)"


def _port_holders(port: int) -> str:
    ss = shutil.which("ss")
    if ss is None:
        return ""
    result = subprocess.run([ss, "-H", "-lnptu", f"sport = :{port}"], capture_output=True, text=True, check=False)
    return result.stdout.strip()


def ensure_port_free(port: int, kind: int = socket.SOCK_DGRAM, host: str = LOOPBACK) -> None:
    """Fail early and clearly, instead of letting Asterisk or SIPp half-start on a taken port."""
    with socket.socket(socket.AF_INET, kind) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            proto = "UDP" if kind == socket.SOCK_DGRAM else "TCP"
            holders = _port_holders(port) or "(ss shows nothing more)"
            raise PortBusyError(
                f"{proto} port {host}:{port} is already in use, so the e2e rig cannot start. "
                f"A previous run may have left Asterisk or SIPp behind:\n{holders}"
            ) from exc


def free_tcp_port(host: str = LOOPBACK) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    """Stop a process started with start_new_session=True, including anything it forked."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            logger.warning("pid %d ignored SIGTERM for %.0f s; sending SIGKILL", proc.pid, grace)
    # The leader may be gone while children of its group still live; SIGKILL the rest either way.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def _wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


# --------------------------------------------------------------------------------------------- run dir


@dataclass(frozen=True)
class RunDir:
    """A per-session folder inside the root file system, seen from both sides of the chroot."""

    rootfs: Path
    inside: PurePosixPath

    @property
    def host(self) -> Path:
        return self.rootfs / self.inside.relative_to("/")

    def sub(self, name: str) -> RunDir:
        child = RunDir(self.rootfs, self.inside / name)
        child.host.mkdir(parents=True, exist_ok=True)
        return child

    @classmethod
    def create(cls, rootfs: Path) -> RunDir:
        base = rootfs / RUN_BASE.relative_to("/")
        base.mkdir(parents=True, exist_ok=True)
        _remove_stale_run_dirs(rootfs)
        run_dir = cls(rootfs, RUN_BASE / f"{os.getpid()}-{secrets.token_hex(3)}")
        run_dir.host.mkdir()
        # Lets a later session tell an abandoned folder from one a concurrent session still uses.
        (run_dir.host / "owner.pid").write_text(f"{os.getpid()}\n")
        return run_dir

    def remove(self) -> None:
        shutil.rmtree(self.host, ignore_errors=True)


def _remove_stale_run_dirs(rootfs: Path) -> None:
    for entry in (rootfs / RUN_BASE.relative_to("/")).iterdir():
        try:
            owner = int((entry / "owner.pid").read_text())
        except (OSError, ValueError):
            owner = 0
        if owner and _pid_alive(owner):
            continue
        logger.info("removing %s left by an earlier session", entry)
        _kill_leftovers(entry, RUN_BASE / entry.name)
        shutil.rmtree(entry, ignore_errors=True)


def _kill_leftovers(host_dir: Path, inside: PurePosixPath) -> None:
    """Kill the Asterisk/SIPp a killed session left running, or they would keep ports 5060/5070.

    Only process groups recorded by :func:`_spawn` whose command line names this very folder are
    touched, so a recycled pid never hits an unrelated process.
    """
    for pid_file in host_dir.rglob(PID_FILE):
        try:
            pid = int(pid_file.read_text())
        except (OSError, ValueError):
            continue
        if f"{inside}/" in _cmdline(pid):
            logger.warning("killing process group %d left by an earlier session", pid)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            # The ports are free only once the process is really gone (a zombie has an empty cmdline).
            _wait_until(lambda pid=pid: not _cmdline(pid), timeout=5)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def _spawn(cmd: Sequence[str], run_dir: RunDir, output: Path) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in its own process group (so that stopping it stops everything it forked)."""
    with output.open("wb") as out:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    (run_dir.host / PID_FILE).write_text(f"{proc.pid}\n")
    return proc


# --------------------------------------------------------------------------------------------- SIPp


@dataclass(frozen=True)
class Invite:
    """One INVITE the carrier received: the call that got out."""

    number: str  # user part of the Request-URI: what Asterisk dialled
    caller_id: str  # user part of the From URI
    caller_name: str  # From display name, without quotes
    call_id: str
    request_uri: str

    def __str__(self) -> str:
        return f"INVITE {self.number} from {self.caller_name!r} <{self.caller_id}> (Call-ID {self.call_id})"


_TRACE_SEPARATOR = re.compile(r"^-{10,} .*$", re.MULTILINE)
_URI_USER = re.compile(r"sips?:([^@;>\s]*)@")


def parse_invites(trace: str) -> list[Invite]:
    """The INVITEs received in a SIPp ``-trace_msg`` log, in order, retransmissions removed."""
    invites: list[Invite] = []
    seen: set[tuple[str, str]] = set()
    for block in _TRACE_SEPARATOR.split(trace):
        if "message received" not in block:
            continue
        _, _, message = block.partition("\n\n")
        lines = message.strip().splitlines()
        if not lines or not lines[0].startswith("INVITE "):
            continue
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if not line.strip():
                break  # the body (SDP) starts
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), value.strip())
        call_id = headers.get("call-id", headers.get("i", ""))
        cseq = headers.get("cseq", "")
        if (call_id, cseq) in seen:
            continue
        seen.add((call_id, cseq))
        request_uri = lines[0].split()[1]
        from_header = headers.get("from", headers.get("f", ""))
        number = _URI_USER.search(request_uri)
        caller = _URI_USER.search(from_header)
        display, _, _ = from_header.partition("<")
        invites.append(
            Invite(
                number=number.group(1) if number else "",
                caller_id=caller.group(1) if caller else "",
                caller_name=display.strip().strip('"'),
                call_id=call_id,
                request_uri=request_uri,
            )
        )
    return invites


_TRACE_STAMP = re.compile(r"^-{10,} (\S+)\s*$")


@dataclass(frozen=True)
class SipMessage:
    """One message in a SIPp trace, as SIPp logged it."""

    received: bool  # False: SIPp sent it
    at: datetime | None  # SIPp's timestamp (UTC), if the trace line carries one
    first_line: str  # "INVITE sip:... SIP/2.0" or "SIP/2.0 200 OK"
    headers: Mapping[str, str]  # lower-case names, first value of each (compact forms folded in)

    @property
    def call_id(self) -> str:
        return self.headers.get("call-id", "")

    @property
    def cseq_method(self) -> str:
        return self.headers.get("cseq", "").rpartition(" ")[2].upper()

    @property
    def method(self) -> str:
        """The request's method, or "" for a response."""
        return "" if self.first_line.startswith("SIP/") else self.first_line.partition(" ")[0].upper()

    @property
    def status(self) -> int:
        """The response's status code, or 0 for a request."""
        if not self.first_line.startswith("SIP/"):
            return 0
        code = self.first_line.split()[1] if len(self.first_line.split()) > 1 else ""
        return int(code) if code.isdigit() else 0


_COMPACT = {"i": "call-id", "f": "from", "t": "to", "v": "via", "m": "contact", "l": "content-length"}


def parse_messages(trace: str) -> list[SipMessage]:
    """Every message of a SIPp ``-trace_msg`` log, in order (retransmissions included)."""
    messages: list[SipMessage] = []
    lines = trace.split("\n")
    starts = [i for i, line in enumerate(lines) if _TRACE_STAMP.match(line)]
    for index, start in enumerate(starts):
        end = starts[index + 1] if index + 1 < len(starts) else len(lines)
        block = lines[start + 1 : end]
        if not block:
            continue
        kind = block[0]
        if "message received" not in kind and "message sent" not in kind:
            continue
        body = [line.rstrip("\r") for line in block[1:]]
        while body and not body[0].strip():
            body.pop(0)
        if not body:
            continue
        headers: dict[str, str] = {}
        for line in body[1:]:
            if not line.strip():
                break  # the body (SDP) starts
            name, _, value = line.partition(":")
            key = name.strip().lower()
            headers.setdefault(_COMPACT.get(key, key), value.strip())
        stamp = _TRACE_STAMP.match(lines[start])
        messages.append(
            SipMessage(
                received="message received" in kind,
                at=_trace_time(stamp.group(1)) if stamp else None,
                first_line=body[0].strip(),
                headers=headers,
            )
        )
    return messages


def _trace_time(text: str) -> datetime | None:
    # SIPp 3.8 writes 2026-12-03T16:07:00.920521Z; older ones a bare number or nothing useful.
    try:
        return datetime.fromisoformat(text).astimezone(UTC)
    except ValueError:
        return None


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class CarrierCall:
    """What happened to one call (one Call-ID) at the carrier, from SIPp's message trace."""

    number: str  # user part of the first INVITE's Request-URI
    call_id: str
    invited_at: datetime | None  # when SIPp logged the first INVITE (UTC), if its trace says
    answered: bool  # SIPp sent 200 to the INVITE
    answered_at: datetime | None  # when SIPp logged its first 200 to the INVITE
    cancelled: bool  # a CANCEL arrived
    bye: bool  # a BYE arrived
    final_status: int  # SIPp's last final (>= 200) answer to the INVITE, 0 if none

    @property
    def invited_us(self) -> int | None:
        """``invited_at`` in microseconds since the epoch, as the product's times are."""
        if self.invited_at is None:
            return None
        return (self.invited_at - _EPOCH) // timedelta(microseconds=1)


def parse_calls(trace: str) -> list[CarrierCall]:
    """The calls in a SIPp trace, in the order of their first INVITE."""
    by_call: dict[str, list[SipMessage]] = {}
    for message in parse_messages(trace):
        if message.call_id in by_call:
            by_call[message.call_id].append(message)
        elif message.received and message.method == "INVITE":
            by_call[message.call_id] = [message]
        # Anything else belongs to a call this trace never saw start (a late retransmission).
    return [_carrier_call(messages) for messages in by_call.values()]


def _carrier_call(messages: Sequence[SipMessage]) -> CarrierCall:
    invite = messages[0]
    parts = invite.first_line.split()
    user = _URI_USER.search(parts[1]) if len(parts) > 1 else None
    finals = [m for m in messages if not m.received and m.cseq_method == "INVITE" and m.status >= 200]
    oks = [m for m in finals if m.status == 200]
    received = {m.method for m in messages if m.received}
    return CarrierCall(
        number=user.group(1) if user else "",
        call_id=invite.call_id,
        invited_at=invite.at,
        answered=bool(oks),
        answered_at=oks[0].at if oks else None,
        cancelled="CANCEL" in received,
        bye="BYE" in received,
        final_status=finals[-1].status if finals else 0,
    )


class SippCarrier:
    """SIPp as the carrier: a UAS on 127.0.0.1:5070 that answers every call and logs every message.

    With ``ring_seconds`` 0, SIPp's built-in ``uas`` scenario answers INVITE with 180 and 200, waits for
    ACK and BYE, and answers the BYE, which is all a successful ``Dial()`` needs. With ``ring_seconds``
    above 0 it runs :data:`RINGING_SCENARIO` instead: 100 and 180 at once, 200 after that many seconds,
    and a CANCEL while it rings gets 200 and the INVITE 487. :meth:`restart` (or :meth:`ringing`)
    changes the ring time on the same port; the INVITEs and calls seen so far stay visible.
    """

    def __init__(self, rootfs: Path, run_dir: RunDir, port: int = CARRIER_PORT, *, ring_seconds: float = 0) -> None:
        self.rootfs = rootfs
        self.run_dir = run_dir.sub("sipp")
        self.port = port
        self.ring_seconds = _check_ring_seconds(ring_seconds)
        self.error_log = self.run_dir.host / "errors.log"
        self.output_log = self.run_dir.host / "sipp.out"
        # One trace file per start: SIPp truncates its message file, and a restart must not lose the
        # calls that a test's checkpoint counts from.
        self._traces: list[Path] = []
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def message_log(self) -> Path:
        """The message trace of the SIPp running now (or of the last one)."""
        return self._traces[-1] if self._traces else self.run_dir.host / "messages.log"

    def start(self, timeout: float = 10) -> SippCarrier:
        ensure_port_free(self.port)
        inside = self.run_dir.inside
        trace_name = "messages.log" if not self._traces else f"messages-{len(self._traces) + 1}.log"
        trace = self.run_dir.host / trace_name
        trace.unlink(missing_ok=True)
        self._traces.append(trace)
        if self.ring_seconds > 0:
            scenario = self.run_dir.host / f"uas-ringing-{len(self._traces)}.xml"
            scenario.write_text(ringing_scenario(self.ring_seconds))
            scenario_args = ["-sf", str(inside / scenario.name)]
        else:
            scenario_args = ["-sn", "uas"]
        cmd = [
            "chroot", str(self.rootfs), "/usr/bin/sipp",
            *scenario_args,
            "-i", LOOPBACK, "-p", str(self.port),
            "-mi", LOOPBACK,  # media address in its SDP; the default is the host's primary address
            "-trace_msg", "-message_file", str(inside / trace_name),
            "-trace_err", "-error_file", str(inside / "errors.log"),
            "-nostdin",  # no terminal under pytest
            "-f", "60",  # its statistics screen is noise in sipp.out
        ]  # fmt: skip
        proc = self._proc = _spawn(cmd, self.run_dir, self.output_log)
        # Ready when the SIP port is taken, which SIPp does once its scenario is loaded.
        if not _wait_until(lambda: proc.poll() is not None or not _udp_port_free(self.port), timeout):
            self.stop()
            raise HarnessError(f"SIPp did not bind UDP {self.port} within {timeout} s\n{self.logs()}")
        if proc.poll() is not None:
            raise HarnessError(f"SIPp exited at start (status {proc.returncode})\n{self.logs()}")
        logger.info(
            "SIPp carrier listening on %s:%d (pid %d, ringing %g s)", LOOPBACK, self.port, proc.pid, self.ring_seconds
        )
        return self

    def restart(self, ring_seconds: float | None = None) -> SippCarrier:
        """Stop SIPp and start it again on the same port, ringing ``ring_seconds`` (unchanged if None).

        A call still up is lost with the old SIPp, so call this between calls.
        """
        if ring_seconds is not None:
            self.ring_seconds = _check_ring_seconds(ring_seconds)
        self.stop()
        # SIPp's port is free once the process is gone, but give the kernel a moment to say so.
        if not _wait_until(lambda: _udp_port_free(self.port), 5):
            raise HarnessError(f"UDP {self.port} still taken after SIPp stopped\n{self.logs()}")
        return self.start()

    @contextlib.contextmanager
    def ringing(self, seconds: float) -> Iterator[SippCarrier]:
        """``with carrier.ringing(3): ...``: ring that long inside the block, then as before."""
        before = self.ring_seconds
        self.restart(seconds)
        try:
            yield self
        finally:
            self.restart(before)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _trace(self) -> str:
        if self._proc is not None and self._proc.poll() is not None:
            raise HarnessError(f"SIPp has exited (status {self._proc.returncode})\n{self.logs()}")
        parts = []
        for path in self._traces:
            with contextlib.suppress(FileNotFoundError):
                parts.append(path.read_text(errors="replace"))
        return "\n".join(parts)

    def invites(self, since: int = 0) -> list[Invite]:
        """INVITEs received so far; ``since`` is a :meth:`checkpoint` taken earlier."""
        return parse_invites(self._trace())[since:]

    def calls(self, since: int = 0) -> list[CarrierCall]:
        """Every call (Call-ID) the carrier saw, in the order of their first INVITE, with what happened.

        ``since`` is the same :meth:`checkpoint` as for :meth:`invites`: calls whose first INVITE came
        after it.
        """
        trace = self._trace()
        first_calls = {invite.call_id for invite in parse_invites(trace)[:since]}
        return [call for call in parse_calls(trace) if call.call_id not in first_calls]

    def checkpoint(self) -> int:
        """Mark where a test starts, so it sees only its own INVITEs."""
        return len(self.invites())

    def wait_for_invites(self, count: int, since: int = 0, timeout: float = 10) -> list[Invite]:
        """Wait until at least ``count`` INVITEs arrived after ``since``; return what arrived."""
        _wait_until(lambda: len(self.invites(since)) >= count, timeout)
        return self.invites(since)

    def wait_for_calls(
        self, predicate: Callable[[list[CarrierCall]], bool], since: int = 0, timeout: float = 10
    ) -> list[CarrierCall]:
        """Wait until ``predicate(calls(since))`` holds; return the calls then (the caller asserts)."""
        _wait_until(lambda: predicate(self.calls(since)), timeout, interval=0.1)
        return self.calls(since)

    def logs(self) -> str:
        return (
            f"--- SIPp output ({self.output_log}):\n{tail(self.output_log, 20)}\n"
            f"--- SIPp unexpected messages ({self.error_log}):\n{tail(self.error_log, 20)}\n"
            f"--- SIPp message trace ({self.message_log}):\n{tail(self.message_log, 30)}"
        )

    def stop(self) -> None:
        if self._proc is not None:
            _kill_group(self._proc, grace=3)
            self._proc = None

    def __enter__(self) -> SippCarrier:
        return self.start() if self._proc is None else self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _check_ring_seconds(seconds: float) -> float:
    if not 0 <= seconds <= MAX_RING_SECONDS:
        raise HarnessError(f"ring_seconds must be between 0 and {MAX_RING_SECONDS}, not {seconds!r}")
    return float(seconds)


def ringing_scenario(ring_seconds: float) -> str:
    """:data:`RINGING_SCENARIO` with its ring time filled in (milliseconds, at least 1)."""
    text = RINGING_SCENARIO.read_text()
    if RING_PLACEHOLDER not in text:
        raise HarnessError(f"{RINGING_SCENARIO} has no {RING_PLACEHOLDER} to fill in")
    return text.replace(RING_PLACEHOLDER, str(max(1, round(ring_seconds * 1000))))


def _tcp_accepts(port: int, host: str = LOOPBACK) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _udp_port_free(port: int) -> bool:
    try:
        ensure_port_free(port)
    except PortBusyError:
        return False
    return True


# --------------------------------------------------------------------------------------------- AMI


class AmiClient:
    """Just enough of the Asterisk Manager Interface to originate a call with a caller ID.

    The CLI's ``channel originate`` cannot set a caller ID, and the gate checks it (rule 10). Tests also
    use it as "some AMI client" (``events`` is the Login's Events field).
    """

    def __init__(self, port: int, username: str, secret: str, timeout: float = 10, events: str = "call") -> None:
        self._sock = socket.create_connection((LOOPBACK, port), timeout=timeout)
        self._file = self._sock.makefile("rb")
        self._ids = itertools.count(1)
        banner = self._file.readline().decode(errors="replace").strip()
        if not banner.startswith("Asterisk Call Manager"):
            self.close()
            raise HarnessError(f"unexpected AMI banner {banner!r}")
        reply = self.action("Login", Username=username, Secret=secret, Events=events)
        if reply.get("Response") != "Success":
            self.close()
            raise HarnessError(f"AMI login failed: {reply}")

    def _send(self, action: str, headers: Sequence[tuple[str, str]]) -> str:
        action_id = f"e2e-{next(self._ids)}"
        lines = [f"Action: {action}", f"ActionID: {action_id}"]
        lines += [f"{name}: {value}" for name, value in headers]
        self._sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        return action_id

    def _read_message(self) -> dict[str, str]:
        message: dict[str, str] = {}
        while True:
            raw = self._file.readline()
            if not raw:
                raise HarnessError("Asterisk closed the AMI connection")
            line = raw.decode(errors="replace").rstrip("\r\n")
            if not line:
                if message:
                    return message
                continue
            name, _, value = line.partition(":")
            message[name.strip()] = value.strip()

    def _read_until(self, match: Mapping[str, str], deadline: float) -> dict[str, str]:
        """Read messages, dropping unrelated events, until one has all of ``match``'s fields."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no AMI message matching {dict(match)}")
            self._sock.settimeout(remaining)
            try:
                message = self._read_message()
            except TimeoutError as exc:
                raise TimeoutError(f"no AMI message matching {dict(match)}") from exc
            if all(message.get(k) == v for k, v in match.items()):
                return message

    def action(
        self, action: str, headers: Sequence[tuple[str, str]] = (), timeout: float = 10, **fields: str
    ) -> dict[str, str]:
        action_id = self._send(action, [*headers, *fields.items()])
        return self._read_until({"ActionID": action_id}, time.monotonic() + timeout)

    def originate(self, headers: Sequence[tuple[str, str]], timeout: float) -> dict[str, str]:
        """Queue an async Originate and wait for its OriginateResponse event (answered or failed)."""
        action_id = self._send("Originate", [*headers, ("Async", "true")])
        deadline = time.monotonic() + timeout
        reply = self._read_until({"ActionID": action_id}, deadline)
        if reply.get("Response") != "Success":
            raise HarnessError(f"AMI refused the Originate: {reply}")
        return self._read_until({"Event": "OriginateResponse", "ActionID": action_id}, deadline)

    def wait_closed(self, timeout: float) -> bool:
        """Read (and drop) whatever comes until Asterisk closes the connection: True, or False on timeout."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            self._sock.settimeout(remaining)
            try:
                if not self._file.readline():
                    return True
            except TimeoutError:
                return False
            except OSError:
                return True  # reset by the peer: closed as well
        return False

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()
        with contextlib.suppress(OSError):
            self._sock.close()


# --------------------------------------------------------------------------------------------- Asterisk


@dataclass(frozen=True)
class OriginateResult:
    """How the originated call's first leg ended up: ``answered`` means the callee picked up."""

    number: str
    context: str
    response: str  # Success / Failure, from AMI's OriginateResponse
    reason: int  # 4 = answered; 1 = hung up, 8 = congestion, 0 = failed, ... (AST_CONTROL_* values)
    channel: str

    @property
    def answered(self) -> bool:
        return self.response == "Success"


# The ``start_asterisk`` fixture: (*dialplans, dialplan_globals=..., extra_modules=...) -> Asterisk.
StartAsterisk = Callable[..., "Asterisk"]


def find_module_dir(rootfs: Path) -> PurePosixPath:
    """Asterisk's module folder inside the root file system (its path names the architecture)."""
    found = sorted(rootfs.glob("usr/lib/*/asterisk/modules"))
    if not found:
        raise HarnessError(f"no usr/lib/*/asterisk/modules in {rootfs}: is asterisk-modules installed?")
    return PurePosixPath("/") / found[0].relative_to(rootfs)


_CHANNELS_COUNT = re.compile(r"^(\d+) active channels?", re.MULTILINE)


class Asterisk:
    """One Asterisk 22 in the root file system, configured from scratch for the e2e rig.

    Loads only :data:`ASTERISK_MODULES`, has one PJSIP endpoint ``carrier`` (the SIPp UAS on
    127.0.0.1:5070), and a dialplan made of the given files, ``#include``d before a ``[globals]``
    section holding ``dialplan_globals`` (the last value of a global wins, so these override a default
    that an included file such as dialplan/rpoguard.conf sets). Use as a context manager or call :meth:`stop`.
    """

    AMI_USER = "e2e"

    def __init__(
        self,
        rootfs: Path,
        run_dir: RunDir,
        dialplans: Sequence[Path],
        *,
        dialplan_globals: Mapping[str, str] | None = None,
        extra_modules: Sequence[str] = (),
        extra_files: Mapping[str, str] | None = None,
        sip_port: int = SIP_PORT,
        carrier_port: int = CARRIER_PORT,
        cdr: bool = False,
        cel: bool = False,
        ami_users: Mapping[str, AmiUser] | None = None,
        ami_general: Mapping[str, str] | None = None,
        clock_offset: int | None = None,
        clock_library: Path | None = None,
    ) -> None:
        self.rootfs = rootfs
        self.run_dir = run_dir
        self.dialplans = [Path(p) for p in dialplans]
        self.dialplan_globals = dict(dialplan_globals or {})
        self.module_dir = find_module_dir(rootfs)
        self.cdr = cdr
        self.cel = cel
        self.modules = [
            *ASTERISK_MODULES, *(CDR_MODULES if cdr else ()), *(CEL_MODULES if cel else ()), *extra_modules
        ]  # fmt: skip
        self.ami_users = dict(ami_users or {})
        if self.AMI_USER in self.ami_users:
            raise HarnessError(f"the AMI user {self.AMI_USER!r} is the harness's own; pick another name")
        # Extra [general] lines of manager.conf (channelvars, timestampevents...), after the harness's own.
        self.ami_general = dict(ami_general or {})
        self.ami_enabled = True
        # More configuration files (http.conf, ari.conf...), written beside the harness's own; a name the
        # harness writes itself is refused so a test cannot silently replace the rig's configuration.
        self.extra_files = dict(extra_files or {})
        self.sip_port = sip_port
        self.carrier_port = carrier_port
        self.ami_port = 0
        # Asterisk's wall clock `clock_offset` seconds from the real one, through the host's libfaketime
        # (`clock_library`, copied into the run folder: the root file system has none): the CDR's times and
        # the uniqueids then lie on the same faked day as a `rpoguard serve` run under the same offset.
        if (clock_offset is None) != (clock_library is None):
            raise HarnessError("clock_offset and clock_library go together")
        self.clock_offset = clock_offset
        self.clock_library = clock_library
        self._ami_secret = secrets.token_hex(8)
        self._proc: subprocess.Popen[bytes] | None = None
        self._ami: AmiClient | None = None

    # -- paths

    @property
    def etc(self) -> RunDir:
        return self.run_dir.sub("etc")

    @property
    def config_inside(self) -> str:
        return str(self.etc.inside / "asterisk.conf")

    @property
    def full_log(self) -> Path:
        return self.run_dir.host / "log" / "full"

    @property
    def output_log(self) -> Path:
        return self.run_dir.host / "asterisk.out"

    @property
    def cdr_csv(self) -> Path:
        """cdr_csv's Master.csv on the host (``cdr=True``); one row per CDR, columns :data:`CDR_COLUMNS`."""
        return self.run_dir.host / "log" / "cdr-csv" / "Master.csv"

    @property
    def cel_csv(self) -> Path:
        """cel_custom's Master.csv on the host (``cel=True``); one row per event, columns :data:`CEL_COLUMNS`."""
        return self.run_dir.host / "log" / "cel-custom" / "Master.csv"

    # -- lifecycle

    def start(self, boot_timeout: float = 30) -> Asterisk:
        ensure_port_free(self.sip_port)
        # A restart keeps the AMI port, so that a client configured with it can come back.
        self.ami_port = self.ami_port or free_tcp_port()
        self.ami_enabled = True
        for dialplan in self.dialplans:
            if not dialplan.is_file():
                raise HarnessError(f"dialplan file {dialplan} does not exist")
        self._write_config()
        started = time.monotonic()
        cmd = ["chroot", str(self.rootfs), *self._clock_env(), "/usr/sbin/asterisk", "-f", "-n", "-C",
               self.config_inside]
        self._proc = _spawn(cmd, self.run_dir, self.output_log)
        try:
            self._wait_booted(boot_timeout)
            self._check_modules()
            try:
                self._ami = AmiClient(self.ami_port, self.AMI_USER, self._ami_secret)
            except OSError as exc:
                raise HarnessError(f"cannot use AMI on port {self.ami_port}: {exc}\n{self.logs()}") from exc
        except BaseException:
            self.stop()
            raise
        logger.info(
            "Asterisk up in %.1f s (pid %d, AMI port %d, config %s)",
            time.monotonic() - started, self._proc.pid, self.ami_port, self.config_inside,
        )  # fmt: skip
        return self

    def _clock_env(self) -> list[str]:
        if self.clock_offset is None or self.clock_library is None:
            return []
        shutil.copyfile(self.clock_library, self.run_dir.host / "libfaketime.so.1")
        # The monotonic clock stays real: Asterisk's timers and the harness's waits agree.
        return ["/usr/bin/env", f"LD_PRELOAD={self.run_dir.inside / 'libfaketime.so.1'}",
                f"FAKETIME={self.clock_offset:+d}", "FAKETIME_DONT_FAKE_MONOTONIC=1"]

    def _wait_booted(self, timeout: float) -> None:
        ctl = self.run_dir.host / "run" / "asterisk.ctl"
        # `asterisk -rx` fails at once while the control socket is missing, so wait for it first.
        if not _wait_until(lambda: ctl.exists() or not self.running, timeout):
            raise HarnessError(f"Asterisk made no control socket within {timeout} s\n{self.logs()}")
        if not self.running:
            status = self._proc.returncode if self._proc else None
            raise HarnessError(f"Asterisk exited during start (status {status})\n{self.logs()}")
        out = self.cli("core waitfullybooted", timeout=timeout)
        if "fully booted" not in out:
            raise HarnessError(f"Asterisk did not finish booting: {out!r}\n{self.logs()}")

    def _check_modules(self) -> None:
        # A module that declines to load (missing dependency, bad config) otherwise shows up much later
        # as a baffling dialplan failure, so compare the list now.
        shown = self.cli("module show")
        # Columns are separated by runs of spaces; the status column reads "Running" or "Not Running".
        rows = (re.split(r"\s{2,}", line.strip()) for line in shown.splitlines())
        running = {row[0] for row in rows if "Running" in row}
        missing = [m for m in self.modules if f"{m}.so" not in running]
        if missing:
            raise HarnessError(f"Asterisk modules not running: {', '.join(missing)}\n{self.logs()}")

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        """Stop Asterisk; safe to call more than once and after a failed start."""
        if self._ami is not None:
            self._ami.close()
            self._ami = None
        if self._proc is None:
            return
        if self._proc.poll() is None:
            # A clean shutdown first, so that Asterisk releases its ports before the next module starts.
            with contextlib.suppress(HarnessError, subprocess.TimeoutExpired):
                self.cli("core stop now", timeout=5)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=5)
        _kill_group(self._proc, grace=3)
        self._proc = None

    def restart(self) -> Asterisk:
        """Stop Asterisk and start it again with the same ports, run folder and files (CDR, CEL, logs).

        Every call is lost; AMI clients see their connection close and may log in again on the same port.
        """
        self.stop()
        return self.start()

    def __enter__(self) -> Asterisk:
        return self.start() if self._proc is None else self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- control

    def cli(self, command: str, timeout: float = 10) -> str:
        """Run one CLI command (``asterisk -rx``) and return its output."""
        cmd = ["chroot", str(self.rootfs), "/usr/sbin/asterisk", "-C", self.config_inside, "-rx", command]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if result.returncode != 0 or result.stdout.startswith("Unable to connect"):
            raise HarnessError(
                f"`asterisk -rx {command!r}` failed (status {result.returncode}): "
                f"{result.stdout}{result.stderr}\n{self.logs()}"
            )
        return result.stdout

    def originate(
        self,
        number: str,
        context: str,
        *,
        caller_id: str | None = None,
        caller_name: str | None = None,
        variables: Mapping[str, str] | None = None,
        timeout: float = 15,
        hold: float = 0.5,
        check_dialplan: bool = True,
    ) -> OriginateResult:
        """Place a call to ``number`` in ``context`` and wait until it is answered or has failed.

        The call is ``Local/NUMBER@CONTEXT``: its second half runs the dialplan under test with
        ``caller_id`` as its caller ID and ``variables`` set; its first half, once answered, waits
        ``hold`` seconds and hangs up. Blocked calls come back as not answered. Follow with
        :meth:`wait_calls_settled` before looking at what the carrier received. Unless
        ``check_dialplan`` is false, it first makes sure the dialplan has an extension for the call.
        """
        ami = self._own_ami()
        if check_dialplan:
            # A mistyped context or an unmatched number fails exactly like a blocked call would, and a
            # test expecting "no INVITE" would then pass for the wrong reason.
            shown = self.cli(f"dialplan show {number}@{context}")
            if "There is no existence" in shown:
                raise HarnessError(f"nothing in the dialplan matches {number}@{context}: {shown.strip()}")
        headers: list[tuple[str, str]] = [
            ("Channel", f"Local/{number}@{context}"),
            ("Application", "Wait"),
            ("Data", f"{hold:g}"),
            ("Timeout", str(int(timeout * 1000))),
        ]
        if caller_id is not None or caller_name is not None:
            headers.append(("CallerID", f'"{caller_name or ""}" <{caller_id or ""}>'))
        headers += [("Variable", f"{name}={value}") for name, value in (variables or {}).items()]
        try:
            event = ami.originate(headers, timeout=timeout + 5)
        except (TimeoutError, HarnessError) as exc:
            raise HarnessError(f"originate {number}@{context} got no answer: {exc}\n{self.logs()}") from exc
        result = OriginateResult(
            number=number,
            context=context,
            response=event.get("Response", ""),
            reason=int(event.get("Reason", "-1") or -1),
            channel=event.get("Channel", ""),
        )
        logger.info("originated %s@%s caller %s: %s", number, context, caller_id, result)
        return result

    def originate_channel(
        self,
        channel: str,
        *,
        application: str = "Wait",
        data: str = "1",
        caller_id: str | None = None,
        caller_name: str | None = None,
        variables: Mapping[str, str] | None = None,
        timeout: float = 15,
    ) -> OriginateResult:
        """Originate straight to ``channel`` (e.g. ``PJSIP/+39333...@carrier``), no dialplan before it.

        Once the far end answers, the channel runs ``application(data)``. Returns when it was answered or
        has failed (``reason`` says how); ``number`` is the channel, ``context`` is empty. Like a call a
        PBX user could place past the gate with AMI, ARI or the CLI.
        """
        headers: list[tuple[str, str]] = [
            ("Channel", channel),
            ("Application", application),
            ("Data", data),
            ("Timeout", str(int(timeout * 1000))),
        ]
        if caller_id is not None or caller_name is not None:
            headers.append(("CallerID", f'"{caller_name or ""}" <{caller_id or ""}>'))
        headers += [("Variable", f"{name}={value}") for name, value in (variables or {}).items()]
        try:
            event = self._own_ami().originate(headers, timeout=timeout + 5)
        except (TimeoutError, HarnessError) as exc:
            raise HarnessError(f"originate {channel} got no answer: {exc}\n{self.logs()}") from exc
        result = OriginateResult(
            number=channel,
            context="",
            response=event.get("Response", ""),
            reason=int(event.get("Reason", "-1") or -1),
            channel=event.get("Channel", ""),
        )
        logger.info("originated %s(%s) on %s caller %s: %s", application, data, channel, caller_id, result)
        return result

    def _own_ami(self) -> AmiClient:
        if self._ami is None:
            if self.running and not self.ami_enabled:
                raise HarnessError("AMI is switched off (ami_down)")
            raise HarnessError("Asterisk is not running")
        return self._ami

    # -- AMI off and on again, Asterisk and its calls staying up

    def ami_down(self, timeout: float = 10) -> None:
        """Switch the manager interface off while Asterisk keeps running its calls.

        ``enabled = no`` and ``manager reload`` close the listening socket, but Asterisk 22 keeps the
        sessions already logged in; ``manager kick session`` ends each of them (the harness's own as
        well), so a connected AMI client sees its connection closed.
        """
        self.ami_enabled = False
        if self._ami is not None:
            self._ami.close()
            self._ami = None
        self._reload_manager()
        if not _wait_until(lambda: not _tcp_accepts(self.ami_port), timeout):
            raise HarnessError(f"AMI port {self.ami_port} still accepts after ami_down\n{self.logs()}")

        def kicked_all() -> bool:
            sessions = self.ami_sessions()
            for _user, fd in sessions:
                self.cli(f"manager kick session {fd}")
            return not sessions

        if not _wait_until(kicked_all, timeout, interval=0.2):
            raise HarnessError(f"AMI sessions still open after ami_down: {self.ami_sessions()}\n{self.logs()}")
        logger.info("AMI switched off (port %d)", self.ami_port)

    def ami_sessions(self) -> list[tuple[str, int]]:
        """The logged-in AMI sessions (``manager show connected``): (user name, file descriptor)."""
        sessions: list[tuple[str, int]] = []
        for line in self.cli("manager show connected").splitlines():
            fields = line.split()
            # Username, IP address, start, elapsed, file descriptor, ... (the header's FileDes is no number)
            if len(fields) >= 5 and fields[4].isdigit():
                sessions.append((fields[0], int(fields[4])))
        return sessions

    def ami_up(self, timeout: float = 10) -> None:
        """Switch the manager interface on again, on the same port; the harness logs in again."""
        self.ami_enabled = True
        self._reload_manager()
        if not _wait_until(lambda: _tcp_accepts(self.ami_port), timeout):
            raise HarnessError(f"AMI port {self.ami_port} does not accept after ami_up\n{self.logs()}")
        try:
            self._ami = AmiClient(self.ami_port, self.AMI_USER, self._ami_secret)
        except OSError as exc:
            raise HarnessError(f"cannot use AMI on port {self.ami_port} after ami_up: {exc}\n{self.logs()}") from exc
        logger.info("AMI switched on again (port %d)", self.ami_port)

    def _reload_manager(self) -> None:
        path = self.etc.host / "manager.conf"
        path.write_text(self._manager_conf())
        path.chmod(0o600)
        self.cli("manager reload")

    def cdr_records(self) -> list[dict[str, str]]:
        """The rows of :attr:`cdr_csv` so far, as {column: value} with :data:`CDR_COLUMNS` as keys."""
        return read_csv_records(self.cdr_csv, CDR_COLUMNS)

    def cel_events(self) -> list[dict[str, str]]:
        """The rows of :attr:`cel_csv` so far, as {column: value} with :data:`CEL_COLUMNS` as keys."""
        return read_csv_records(self.cel_csv, CEL_COLUMNS)

    def active_channels(self) -> int:
        out = self.cli("core show channels count")
        match = _CHANNELS_COUNT.search(out)
        if match is None:
            raise HarnessError(f"cannot read the channel count from {out!r}")
        return int(match.group(1))

    def wait_calls_settled(self, timeout: float = 15) -> None:
        """Wait until no channel is left, i.e. every call placed so far has finished."""
        if not _wait_until(lambda: self.active_channels() == 0, timeout, interval=0.1):
            raise HarnessError(
                f"calls still up after {timeout} s:\n{self.cli('core show channels verbose')}\n{self.logs()}"
            )

    def logs(self) -> str:
        return (
            f"--- Asterisk output ({self.output_log}):\n{tail(self.output_log, 10)}\n"
            f"--- Asterisk log ({self.full_log}):\n{tail(self.full_log, 40)}"
        )

    # -- configuration

    def _write_config(self) -> None:
        etc = self.etc
        # cdr_csv and cel_custom write into these but never create them.
        for name in ("run", "log", "spool", "db", "cache", "log/cdr-csv", "log/cel-custom"):
            self.run_dir.sub(name)
        inside = self.run_dir.inside
        files: dict[str, str] = {
            "asterisk.conf": f"""\
[directories]
astetcdir => {etc.inside}
astmoddir => {self.module_dir}
astvarlibdir => /var/lib/asterisk
astdbdir => {inside}/db
astkeydir => /var/lib/asterisk
astdatadir => /usr/share/asterisk
astagidir => /usr/share/asterisk/agi-bin
astspooldir => {inside}/spool
astrundir => {inside}/run
astlogdir => {inside}/log
astcachedir => {inside}/cache
astsbindir => /usr/sbin

[options]
verbose = 3
""",
            "modules.conf": "[modules]\nautoload = no\n" + "".join(f"load => {module}.so\n" for module in self.modules),
            "logger.conf": """\
[general]
dateformat = %F %T.%3q

[logfiles]
full => notice,warning,error,verbose,dtmf
""",
            # Quiet the "Unable to load config file" errors a bare config dir causes.
            "cdr.conf": self._cdr_conf(),
            "cel.conf": self._cel_conf(),
            "features.conf": "",
            "acl.conf": "",
            "udptl.conf": "",
            "ccss.conf": "",
            "pjproject.conf": "",
            "indications.conf": "#include /etc/asterisk/indications.conf\n",
            "manager.conf": self._manager_conf(),
            "pjsip.conf": f"""\
[transport-udp]
type = transport
protocol = udp
bind = {LOOPBACK}:{self.sip_port}

[carrier]
type = aor
contact = sip:{LOOPBACK}:{self.carrier_port}

[carrier]
type = endpoint
transport = transport-udp
aors = carrier
context = e2e-from-carrier
disallow = all
allow = ulaw,alaw
direct_media = no
send_rpid = no
send_pai = no
""",
            "rtp.conf": "[general]\nrtpstart = 20000\nrtpend = 20999\n",
        }
        includes = []
        for index, dialplan in enumerate(self.dialplans):
            copy_name = f"dialplan-{index}-{dialplan.name}"
            # The chroot cannot see the repository, so the dialplan travels as a copy.
            (etc.host / copy_name).write_text(dialplan.read_text())
            includes.append(f'#include "{etc.inside / copy_name}"')
        globals_lines = "".join(f"{name}={value}\n" for name, value in self.dialplan_globals.items())
        files["extensions.conf"] = (
            "[general]\nstatic = yes\nwriteprotect = yes\nclearglobalvars = yes\n\n"
            "; Nothing should ever call in from the carrier.\n"
            "[e2e-from-carrier]\nexten => _X.,1,Hangup(21)\n\n" + "\n".join(includes) + "\n\n"
            # After the includes: Asterisk applies every [globals] section in file order, so the test's
            # values win over defaults in the included files (rpoguard.conf sets RPOGUARD_AGI).
            f"[globals]\n{globals_lines}"
        )
        if self.cel:
            files["cel_custom.conf"] = f"[mappings]\nMaster.csv => {CEL_CUSTOM_MASTER}\n"
        clash = sorted(set(files) & set(self.extra_files))
        if clash:
            raise HarnessError(f"extra_files may not replace the harness's own {', '.join(clash)}")
        files.update(self.extra_files)
        for name, text in files.items():
            (etc.host / name).write_text(text)
        for name in ("manager.conf", *self.extra_files):
            # They may hold secrets (AMI, ARI passwords).
            (etc.host / name).chmod(0o600)

    def _cdr_conf(self) -> str:
        if not self.cdr:
            return "[general]\nenable = no\n"
        # unanswered = yes: a call that rang at the carrier and was never answered is still a call that got
        # out (the default, no, leaves it out of the file). accountlogs = no: one Master.csv, no file per account.
        return (
            "[general]\nenable = yes\nunanswered = yes\n\n"
            "[csv]\nusegmtime = no\nloguniqueid = yes\nloguserfield = yes\naccountlogs = no\n"
        )

    def _cel_conf(self) -> str:
        if not self.cel:
            return "[general]\nenable = no\n"
        return f"[general]\nenable = yes\napps = dial,agi\nevents = {','.join(CEL_EVENTS)}\n"

    def _manager_conf(self) -> str:
        general = "".join(f"{name} = {value}\n" for name, value in self.ami_general.items())
        users = "".join(
            f"\n[{name}]\nsecret = {user.secret}\nread = {user.read}\nwrite = {user.write}\n"
            for name, user in self.ami_users.items()
        )
        return f"""\
[general]
enabled = {"yes" if self.ami_enabled else "no"}
bindaddr = {LOOPBACK}
port = {self.ami_port}
{general}
[{self.AMI_USER}]
secret = {self._ami_secret}
read = call
write = originate
; The harness only waits for OriginateResponse; dropping the rest keeps the socket quiet.
eventfilter = Event: OriginateResponse
{users}"""
