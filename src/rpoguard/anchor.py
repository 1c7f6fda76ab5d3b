"""Anchors for the decision log: chain heads kept outside the database, so that a rewritten log is caught.

Why. The hash chain (audit.py) finds a row that was changed, removed, inserted or reordered, unless the
person who did it also recomputed every later hash, or simply removed rows from the end: both leave a
chain that holds. Anyone who can write the audit file can do either (the append-only triggers are one
DROP TRIGGER away). Only a record of how far the chain went, and what its head was, kept where that
person cannot rewrite it, settles it.

What was chosen, and why:

- An append-only anchor file outside the database folder (`[audit] anchor_file`). After each group
  commit the decision writer appends one line `SEQ HASH UTC-TIME [HMAC]`: the sequence number and hash
  of the group's last row. A row's hash covers every row before it, so one line fixes rows 1..SEQ. A
  file rather than a MAC stored in each row: per-row MACs stop forged rows but not rows removed from the
  end (what is left still carries valid MACs); only a record held outside the database shows how far
  the log went.
- `[audit] anchor_key_file`: each line then ends with HMAC-SHA256(key, "SEQ HASH UTC-TIME"). Whoever
  can write the anchor file but cannot read the key can delete lines, not forge one that matches a
  rewritten chain. HMAC and not a signature: the standard library has it, and the DPO who verifies is
  the one who keeps the key.
- A second witness: the same head is logged at INFO on the logger `rpoguard.audit.anchor` at most every
  `[audit] anchor_log_interval` seconds (default 60 with an anchor file) and when the writer closes.
  Under systemd it lands in the journal, which the service user cannot edit and which can be forwarded
  off the machine. Not per group: a busy gate would flood the journal and trip its rate limit.
- `rpoguard audit verify` checks each line: well formed, valid HMAC when a key is given, seq increasing,
  and the log's row with that seq has that hash; an anchored seq beyond the log's end means rows were
  removed from the end. It names the line number and the row of each problem.

Failure policy. The line is written after COMMIT, in the writer thread, before the group's callers are
answered, so every answered decision is anchored while anchoring works. When the write fails (folder
missing, disk full, permissions) the decisions are still answered: their rows are durable and the chain
holds; blocking calls because the second witness failed would turn a logging fault into an outage that
blocks every call. The failure is logged at ERROR once per cause, and at WARNING when anchoring works
again; `audit verify` then shows the rows after the last anchor as covered by the chain only.

Several processes (the gate, `rpoguard check`, classic AGI) may append to one file. Each append holds
an exclusive flock and first reads the last line: when it already anchors this row or a later one (that
process committed after us and its head covers our rows), nothing is written, so lines always increase.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import logging
import os
import re
import stat
import threading
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from rpoguard.audit import AuditRow, VerifyReport, verify_chain
from rpoguard.config import AuditConfig, ConfigError
from rpoguard.timeutil import iso

log = logging.getLogger(__name__)

WITNESS_LOGGER = "rpoguard.audit.anchor"
witness = logging.getLogger(WITNESS_LOGGER)

DEFAULT_LOG_INTERVAL = 60.0
MIN_KEY_BYTES = 16
# Enough for the last line (about 170 bytes) even after a cut-short write left garbage behind it.
TAIL_BYTES = 4096

_LINE = re.compile(
    r"(?P<seq>[1-9][0-9]*) (?P<hash>[0-9a-f]{64})"
    r" (?P<at>[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z)(?: (?P<mac>[0-9a-f]{64}))?"
)

NO_ANCHORS_WARNING = (
    "WARNING: no anchor file ([audit] anchor_file or --anchors): only the hash chain was checked. Rows "
    "removed from the end of the log, or the whole chain rewritten from some row on with every hash "
    "recomputed, cannot be detected this way; anchors kept outside the database can (README, "
    "\"What an auditor checks\")."
)


class AnchorError(Exception):
    """The anchor file cannot be read; the message names it."""


@dataclass(frozen=True, slots=True)
class AnchorLine:
    line: int  # 1-based line number in the anchor file
    seq: int
    hash: str
    at: str
    mac: str | None
    signed: str  # the text the HMAC covers


def line_mac(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode("ascii"), hashlib.sha256).hexdigest()


def format_line(seq: int, digest: str, at: datetime, key: bytes | None) -> str:
    """One anchor line, without its newline."""
    text = f"{seq} {digest} {iso(at)}"
    return f"{text} {line_mac(key, text)}" if key is not None else text


def parse_line(text: str, number: int) -> AnchorLine:
    match = _LINE.fullmatch(text)
    if match is None:
        raise ValueError(f"not an anchor line: {text[:80]!r}")
    signed = text if match["mac"] is None else text[: match.start("mac") - 1]
    return AnchorLine(number, int(match["seq"]), match["hash"], match["at"], match["mac"], signed)


def load_key(path: str | os.PathLike[str]) -> bytes:
    """The HMAC key: the file's bytes without surrounding whitespace. Refused when others may read it,
    as ssh refuses a private key: whoever reads it can forge anchor lines."""
    try:
        with open(path, "rb") as fh:
            mode = os.fstat(fh.fileno()).st_mode
            key = fh.read().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read anchor key file {path}: {exc.strerror}") from exc
    if mode & 0o077:
        raise ConfigError(f"anchor key file {path} is open to group or others ({stat.filemode(mode)}): "
                          f"chmod 600 it (whoever can read it can forge anchor lines)")
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(f"anchor key file {path} holds {len(key)} byte(s), at least {MIN_KEY_BYTES} are "
                          f"needed; make one with: (umask 077; head -c 32 /dev/urandom | base64 > {path})")
    return key


# -- writing --------------------------------------------------------------------------------------------


class AnchorWriter:
    """Appends chain heads to the anchor file and logs them to the witness logger. One per process, made
    from the configuration (writer_from_config) and handed to the store, whose decision writer calls it
    after each group commit."""

    def __init__(self, path: str | os.PathLike[str] | None, key: bytes | None = None,
                 log_interval: float = 0.0) -> None:
        self.path = Path(path) if path is not None else None
        self.key = key
        self.log_interval = log_interval
        self._lock = threading.Lock()
        self._causes: set[tuple[str, int | None]] = set()  # failures already logged
        self._unanchored_from: int | None = None
        self._logged_at: float | None = None
        self._unlogged: tuple[int, str] | None = None
        self.written = 0  # lines appended, for tests and the benchmark
        if log_interval > 0 and witness.level == logging.NOTSET:
            # The CLI logs WARNING and up; the witness lines must get through without -v.
            witness.setLevel(logging.INFO)

    def append(self, seq: int, digest: str, at: datetime | None = None) -> bool:
        """Append the line for row `seq` and make it durable. False when the file already anchors this
        row or a later one. Raises OSError.

        The line is fdatasync'ed: a line lost in a power cut would leave the newest decisions unanchored.
        It costs about a millisecond per group commit, not per decision (docs/performance.md, "The
        decision's commit")."""
        if self.path is None:
            raise ValueError("no anchor file configured")
        line = format_line(seq, digest, at or datetime.now(UTC), self.key)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            # Released by close. Held across the tail read and the write so that two processes cannot
            # both decide to write and then write out of order.
            fcntl.flock(fd, fcntl.LOCK_EX)
            last, whole = self._tail(fd)
            if last is not None and last >= seq:
                return False
            data = (("" if whole else "\n") + line + "\n").encode("ascii")
            if os.write(fd, data) != len(data):
                raise OSError(f"short write to {self.path} (disk full?)")
            os.fdatasync(fd)
        finally:
            os.close(fd)
        self.written += 1
        return True

    def _tail(self, fd: int) -> tuple[int | None, bool]:
        """The seq of the file's last authentic line (None if there is none), and whether the file ends
        with a newline. A line that is garbage or fails its HMAC is not trusted: otherwise one forged
        line with a huge seq would stop anchoring for good."""
        size = os.fstat(fd).st_size
        if size == 0:
            return None, True
        start = max(0, size - TAIL_BYTES)
        chunk = os.pread(fd, size - start, start)
        whole = chunk.endswith(b"\n")
        lines = chunk.split(b"\n")
        # Drop the text after the last newline (empty, or a cut-short write) and a possibly partial first line.
        candidates = lines[1:-1] if start else lines[:-1]
        if not candidates:
            return None, whole
        try:
            line = parse_line(candidates[-1].decode("ascii"), 0)
        except (UnicodeDecodeError, ValueError):
            return None, whole
        if self.key is not None and (line.mac is None or
                                     not hmac.compare_digest(line.mac, line_mac(self.key, line.signed))):
            return None, whole
        return line.seq, whole

    def record(self, seq: int, digest: str) -> None:
        """Called by the decision writer after each group commit, in its thread. Never raises: the
        group's rows are committed, and an anchor failure must not turn them into failed calls."""
        with self._lock:
            if self.path is not None:
                try:
                    self.append(seq, digest)
                except Exception as exc:  # any failure at all: the decisions must still be answered
                    self._failed(seq, exc)
                else:
                    self._recovered(seq)
            self._witness(seq, digest)

    def _failed(self, seq: int, exc: Exception) -> None:
        if self._unanchored_from is None:
            self._unanchored_from = seq
        cause = (type(exc).__name__, getattr(exc, "errno", None))
        if cause in self._causes:
            return
        self._causes.add(cause)
        log.error("cannot write the audit anchor for row %d to %s: %s. Decisions are still recorded and "
                  "answered (their rows are durable and the hash chain holds), but until anchoring works "
                  "again rows removed from the end or a rewritten chain cannot be proven. Logged once per "
                  "cause.", seq, self.path, exc)

    def _recovered(self, seq: int) -> None:
        if self._unanchored_from is None:
            return
        log.warning("audit anchors are written to %s again from row %d; rows %d to %d had no anchor of "
                    "their own and are covered by this one through the chain", self.path, seq,
                    self._unanchored_from, seq - 1)
        self._unanchored_from = None
        self._causes.clear()

    def _witness(self, seq: int, digest: str) -> None:
        if self.log_interval <= 0:
            return
        now = time.monotonic()
        if self._logged_at is None or now - self._logged_at >= self.log_interval:
            self._logged_at = now
            self._unlogged = None
            self._log_head(seq, digest)
        else:
            self._unlogged = (seq, digest)

    @staticmethod
    def _log_head(seq: int, digest: str) -> None:
        witness.info("audit chain head: row %d hash %s", seq, digest)

    def log_head(self, seq: int, digest: str) -> None:
        """Log a head now, whatever the interval (an operator's `audit anchor`)."""
        with self._lock:
            self._unlogged = None
            self._log_head(seq, digest)

    def flush(self) -> None:
        """Log the newest head not logged yet: at shutdown the journal's last head is the log's."""
        with self._lock:
            if self._unlogged is not None:
                head, self._unlogged = self._unlogged, None
                self._log_head(*head)


def writer_from_config(audit: AuditConfig, db: str) -> AnchorWriter | None:
    """The writer the configuration asks for, or None. Reads the key now: a wrong key file stops the
    start-up with a ConfigError rather than leave the lines unsigned."""
    interval = audit.anchor_log_interval
    if interval is None:
        interval = DEFAULT_LOG_INTERVAL if audit.anchor_file else 0.0
    if not audit.anchor_file and interval <= 0:
        return None
    key = load_key(audit.anchor_key_file) if audit.anchor_key_file else None
    path = Path(audit.anchor_file).absolute() if audit.anchor_file else None
    if path is not None and path.resolve().is_relative_to(Path(db).absolute().resolve().parent):
        log.warning("anchor file %s is in the database's folder: whoever can rewrite the database can "
                    "rewrite it too; keep it elsewhere (e.g. /var/log/rpoguard/anchors)", path)
    return AnchorWriter(path, key, interval)


# -- verifying ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AnchorProblem:
    line: int  # 0: the file as a whole
    seq: int | None
    problem: str


@dataclass(frozen=True, slots=True)
class AnchorReport:
    path: str
    lines: int  # lines read
    matched: int  # lines whose row is in the log with the anchored hash
    keyed: bool  # HMACs were checked
    unchecked_macs: int  # lines carrying an HMAC that was not checked (no key given)
    last: AnchorLine | None  # the last line accepted
    log_end: int | None  # the log's last seq; None when the walk stopped early
    problems: tuple[AnchorProblem, ...]

    @property
    def intact(self) -> bool:
        return not self.problems

    @property
    def unanchored(self) -> int:
        """Rows after the last anchor, covered by the chain only."""
        if self.log_end is None:
            return 0
        return max(self.log_end - (self.last.seq if self.last else 0), 0)


class _Matcher:
    """Walks the anchor lines alongside the log's rows, both in seq order, so memory stays flat however
    long either is."""

    def __init__(self, lines: Iterator[tuple[int, bytes]], key: bytes | None, max_problems: int) -> None:
        self._lines = lines
        self.key = key
        self.max_problems = max_problems
        self.problems: list[AnchorProblem] = []
        self.count = 0
        self.matched = 0
        self.unchecked_macs = 0
        self.last: AnchorLine | None = None
        self.last_good = 0  # the last anchored seq whose hash matched
        self.pending: AnchorLine | None = None
        self.log_end = 0
        self._advance()

    def add_problem(self, line: int, seq: int | None, text: str) -> None:
        if len(self.problems) < self.max_problems:
            self.problems.append(AnchorProblem(line, seq, text))

    def _advance(self) -> None:
        self.pending = None
        for number, raw in self._lines:
            self.count += 1
            line = self._accept(number, raw)
            if line is not None:
                self.pending = self.last = line
                return

    def _accept(self, number: int, raw: bytes) -> AnchorLine | None:
        try:
            line = parse_line(raw.decode("ascii").removesuffix("\n"), number)
        except (UnicodeDecodeError, ValueError):
            self.add_problem(number, None, "not an anchor line ('SEQ HASH UTC-TIME [HMAC]' expected): the file "
                                        "was edited, or a write was cut short")
            return None
        if self.key is not None:
            if line.mac is None:
                self.add_problem(number, line.seq, "no HMAC although a key was given: the line was written "
                                                "without the key, by someone else than the gate")
                return None
            if not hmac.compare_digest(line.mac, line_mac(self.key, line.signed)):
                self.add_problem(number, line.seq, "HMAC does not match: the line was forged or altered (or "
                                                "the key is not the one the gate used)")
                return None
        elif line.mac is not None:
            self.unchecked_macs += 1
        if self.last is not None and line.seq <= self.last.seq:
            self.add_problem(number, line.seq, f"row {line.seq} comes after row {self.last.seq} (line "
                                            f"{self.last.line}): anchor lines must go up")
            return None
        return line

    def row(self, row: AuditRow) -> None:
        while self.pending is not None and self.pending.seq < row.seq:
            self._missing(self.pending, f"but the log has no row {self.pending.seq}: removed or renumbered")
            self._advance()
        if self.pending is not None and self.pending.seq == row.seq:
            anchored = self.pending
            if anchored.hash == row.hash:
                self.matched += 1
                self.last_good = anchored.seq
            else:
                self.add_problem(anchored.line, anchored.seq,
                              f"row {anchored.seq} does not have the hash anchored at {anchored.at}: rows "
                              f"{self.last_good + 1} to {anchored.seq} were changed and the chain rewritten")
            self._advance()
        self.log_end = row.seq

    def _missing(self, line: AnchorLine, why: str) -> None:
        self.add_problem(line.line, line.seq, f"row {line.seq} was anchored at {line.at} {why}")

    def finish(self) -> None:
        while self.pending is not None:
            self._missing(self.pending, f"but the log ends at row {self.log_end}: rows were removed from the end")
            self._advance()


def _read_lines(path: Path) -> Iterator[tuple[int, bytes]] | None:
    """The file's lines, numbered; None when it does not exist. Blocking reads on the loop are fine here:
    verification is an operator's command, never on the per-call path."""
    try:
        fh = path.open("rb")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise AnchorError(f"cannot read anchor file {path}: {exc.strerror}") from exc

    def lines() -> Iterator[tuple[int, bytes]]:
        with fh:
            yield from enumerate(fh, start=1)

    return lines()


async def verify_anchored(rows: AsyncIterable[AuditRow], anchor_file: str | os.PathLike[str] | None,
                          key: bytes | None = None, max_problems: int = 100,
                          missing_ok: bool = False) -> tuple[VerifyReport, AnchorReport | None]:
    """The chain walk of audit.verify_chain and, in the same pass, every anchor line against its row.
    Without an anchor file (or a missing one with missing_ok), the chain walk alone and None."""
    if anchor_file is None:
        return await verify_chain(rows, max_problems), None
    path = Path(anchor_file)
    lines = _read_lines(path)
    if lines is None and missing_ok:
        return await verify_chain(rows, max_problems), None
    exists = lines is not None
    matcher = _Matcher(lines if lines is not None else iter(()), key, max_problems)

    async def tapped() -> AsyncIterator[AuditRow]:
        try:
            async for row in rows:
                matcher.row(row)
                yield row
        finally:
            closer = getattr(rows, "aclose", None)
            if closer is not None:
                await closer()

    walk = tapped()
    try:
        try:
            chain = await verify_chain(walk, max_problems)
        finally:
            await walk.aclose()
        # After too many problems the walk stops early: the rows it did not read cannot be compared.
        complete = len(chain.problems) < max_problems
        if complete:
            matcher.finish()
    finally:
        if lines is not None:
            lines.close()
    if complete and chain.rows and matcher.last is None and not matcher.problems:
        reason = "does not exist" if not exists else "holds no anchor line"
        matcher.add_problem(0, None, f"the anchor file {reason}, yet the log has {chain.rows} row(s): "
                                     f"anchoring never worked, or the file was removed or emptied")
    report = AnchorReport(str(path), matcher.count, matcher.matched, key is not None, matcher.unchecked_macs,
                          matcher.last, matcher.log_end if complete else None, tuple(matcher.problems))
    return chain, report


def report_lines(chain: VerifyReport, anchors: AnchorReport | None) -> list[str]:
    """What `rpoguard audit verify` prints; the first line keeps its historic form."""
    out: list[str] = []
    if chain.intact and (anchors is None or anchors.intact):
        out.append(f"audit log intact: {chain.rows} decision(s), head {chain.head_hash}")
    elif chain.intact:
        out.append(f"audit log BROKEN: the hash chain holds ({chain.rows} decision(s), head {chain.head_hash}) "
                   f"but {len(anchors.problems) if anchors else 0} anchor problem(s) show rows removed "
                   f"or the chain rewritten")
    else:
        out.append(f"audit log BROKEN: {len(chain.problems)} problem(s) in {chain.rows} row(s) read")
        out.extend(f"  row {problem.seq}: {problem.problem}" for problem in chain.problems)
    if anchors is None:
        out.append(NO_ANCHORS_WARNING)
        return out
    for problem in anchors.problems:
        where = f"line {problem.line}" if problem.line else "anchor file"
        row = f" (row {problem.seq})" if problem.seq is not None else ""
        out.append(f"  {where}{row}: {problem.problem}")
    last = anchors.last
    summary = (f"anchors: {anchors.lines} line(s) in {anchors.path}, {anchors.matched} matched the log"
               f"{', HMACs checked' if anchors.keyed else ''}")
    if last is not None:
        summary += f"; last anchor: row {last.seq} at {last.at}"
    out.append(summary)
    if anchors.unchecked_macs:
        out.append(f"WARNING: {anchors.unchecked_macs} line(s) carry an HMAC that was not checked: give "
                   f"--anchor-key (or [audit] anchor_key_file) to prove no line was forged")
    if anchors.unanchored:
        out.append(f"note: {anchors.unanchored} row(s) after the last anchor are covered by the hash chain "
                   f"only (the gate could not write anchors, or the rows were written without [audit] "
                   f"anchor_file): compare the head above with the last 'audit chain head' line in the "
                   f"system log")
    if anchors.log_end is None:
        out.append("note: the anchor check stopped with the chain walk, after too many problems")
    return out
