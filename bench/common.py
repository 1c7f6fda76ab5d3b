"""What the benchmarks share: where their data lives, synthetic RPO answer files, running a command while
measuring its wall time and peak memory, the machine's description and markdown tables.

Library-like: it logs, it never prints. The bench scripts print their tables.

Data goes to ``$RPOGUARD_BENCH_DIR`` (default ``/var/tmp/rpoguard-bench``), never into the repository:
the generated CSV files are kept there and reused (30 million rows are about 700 MB and take minutes to
write), the databases are rebuilt for every run.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import logging
import os
import platform
import random
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

log = logging.getLogger(__name__)

ENV_BENCH_DIR = "RPOGUARD_BENCH_DIR"
DEFAULT_BENCH_DIR = "/var/tmp/rpoguard-bench"
REPO = Path(__file__).resolve().parents[1]
# Bump when the generator changes, so that a cached file made by an older generator is not reused.
GENERATOR_VERSION = 1

# Italian mobile ranges in use (3xx + 7 digits) and geographic area codes (fixed numbers keep their 0).
MOBILE_PREFIXES = (
    "320", "324", "327", "328", "329", "330", "331", "333", "334", "335", "336", "337", "338", "339", "340",
    "342", "345", "346", "347", "348", "349", "350", "351", "366", "370", "377", "380", "388", "389", "391",
    "392", "393",
)  # fmt: skip
AREA_CODES = (
    "02", "06", "010", "011", "030", "035", "039", "040", "041", "045", "049", "050", "051", "055", "059",
    "070", "071", "075", "080", "081", "089", "090", "091", "095", "0331", "0362", "0471", "0521", "0541",
    "0583", "0721", "0823", "0884", "0932",
)  # fmt: skip
# The numbering-plan files (`plan=True`): every mobile prefix 310-399 at the lengths the plan gives it
# (libphonenumber's IT metadata: 31x at 10 digits, 32x-39x at 9 and 10), geographic numbers of 6 to 11
# digits over short and long area codes, and every way of writing them an operator's file uses.
PLAN_MOBILE_PREFIXES = tuple(str(p) for p in range(310, 400))
PLAN_AREA_CODES = (
    "02", "06", "010", "011", "019", "030", "040", "041", "045", "049", "050", "051", "055", "070", "080", "081",
    "089", "091", "095", "0125", "0331", "0362", "0423", "0471", "0521", "0541", "0583", "0721", "0823",
    "0831", "0884", "0932", "0975",
)  # fmt: skip
PLAN_FORMS = (("", 0.70), ("+39", 0.15), ("0039", 0.05), ("39", 0.10))  # prefix written before the national
MOBILE_SHARE = 0.6
REGISTERED_PER_MILLE = 120  # about 12% of the answers say "registered"
FLIPS_PER_MILLE = 10  # a newer month: about 1% of the numbers changed status
DATED_SHARE_PER_MILLE = 700  # share of registered answers that carry the registration date
FIRST_REGISTRATION = date(2022, 7, 27)  # mobiles joined the RPO on 27 July 2022
REGISTRATION_SPAN_DAYS = 1_000  # registration dates fall before 2025-04-23: before any check date used
INTERNATIONAL_SHARE = 0.2  # rows written +39…; the others in national form, as submitted


def bench_dir() -> Path:
    folder = Path(os.environ.get(ENV_BENCH_DIR) or DEFAULT_BENCH_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def venv_bin(name: str) -> str:
    """A program of the interpreter's own environment (the repository's .venv), else from PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} is neither beside {sys.executable} nor on PATH")
    return found


# -- synthetic RPO answers ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Block:
    """A range of numbers: a prefix and `digits` subscriber digits, visited in a scrambled order.

    The i-th number of the block is prefix + (a*i + b) mod 10^digits: with a prime to 10 that is a
    permutation, so a block never repeats a number and no set of millions of numbers is kept in memory.
    """

    prefix: str
    digits: int
    a: int
    b: int

    def number(self, index: int) -> str:
        size = 10**self.digits
        return self.prefix + str((self.a * index + self.b) % size).zfill(self.digits)


def _blocks(seed: int, plan: bool = False) -> tuple[list[_Block], list[float]]:
    rng = random.Random(seed)
    blocks: list[_Block] = []
    weights: list[float] = []

    def multiplier(size: int) -> int:
        while True:
            a = rng.randrange(size // 3, size)
            if a % 2 and a % 5:
                return a

    if plan:
        return _plan_blocks(rng, multiplier)
    for prefix in MOBILE_PREFIXES:
        blocks.append(_Block(prefix, 7, multiplier(10**7), rng.randrange(10**7)))
        weights.append(MOBILE_SHARE / len(MOBILE_PREFIXES))
    for code in AREA_CODES:
        # National numbers of 10 digits mostly, 9 for some (shorter subscriber numbers in smaller towns).
        for total, share in ((10, 0.85), (9, 0.15)):
            digits = total - len(code)
            blocks.append(_Block(code, digits, multiplier(10**digits), rng.randrange(10**digits)))
            weights.append((1 - MOBILE_SHARE) * share / len(AREA_CODES))
    return blocks, weights


def _plan_blocks(rng: random.Random, multiplier: Callable[[int], int]) -> tuple[list[_Block], list[float]]:
    """Blocks over the whole national plan; a block of which no sampled number is a valid fixed or mobile
    number (a length the plan does not give that prefix) is left out, so every block writes rows."""
    from rpoguard.numbers import normalize_fast  # noqa: PLC0415 - only the generator needs rpoguard

    mobiles: list[_Block] = []
    fixed: list[_Block] = []
    candidates = [(mobiles, prefix, total) for prefix in PLAN_MOBILE_PREFIXES for total in (9, 10)]
    candidates += [(fixed, code, total) for code in PLAN_AREA_CODES for total in range(6, 12)]
    for group, prefix, total in candidates:
        digits = total - len(prefix)
        if digits < 1:
            continue
        block = _Block(prefix, digits, multiplier(10**digits) if digits > 1 else 1, rng.randrange(10**digits))
        if any(normalize_fast(block.number(i)) is not None for i in range(min(200, 10**digits))):
            group.append(block)
    weights = [MOBILE_SHARE / len(mobiles)] * len(mobiles) + [(1 - MOBILE_SHARE) / len(fixed)] * len(fixed)
    return mobiles + fixed, weights


def _mix(value: int, salt: int) -> int:
    """A stable pseudo-random 0..999 for a number: whether it is registered must not depend on the row."""
    x = (value * 0x9E3779B97F4A7C15 + salt * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x ^= x >> 31
    x = (x * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    x ^= x >> 29
    return x % 1000


@dataclass(frozen=True, slots=True)
class RpoFile:
    path: Path
    rows: int
    month: int
    registered: int
    size: int
    seconds: float  # generation time (0 when reused from the cache)
    checked_sample: int  # rows checked with phonenumbers.is_valid_number
    checked_valid: int
    # plan files: rows per "mobile 3xx/9" or "fixed 10" (kind, prefix or length) written
    coverage: dict[str, int] = field(default_factory=dict)


def rpo_answers_file(rows: int, month: int = 1, seed: int = 20261128, plan: bool = False) -> RpoFile:
    """The cached CSV of `rows` RPO answers for `month` (1, 2…), generated on first use.

    Months share the numbers (same blocks, same seed) but not the row order, and each later month has
    about 1% of the statuses flipped and a slightly different set (a few numbers new, a few gone), like
    the answer to next month's submission of the same list. Rows are in random order, as a file comes.
    Every number is a valid Italian fixed or mobile number: rows are kept only when rpoguard's exact
    fast path (proven equal to phonenumbers) says so, and a sample is re-checked with phonenumbers.
    """
    folder = bench_dir()
    kind = "plan-" if plan else ""
    path = folder / f"rpo-{kind}{rows}-m{month}-s{seed}-v{GENERATOR_VERSION}.csv"
    meta_path = path.with_suffix(".json")
    if path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("rows") == rows and path.stat().st_size == meta.get("size"):
            return RpoFile(path, rows, month, meta["registered"], meta["size"], 0.0, meta["checked_sample"],
                           meta["checked_valid"], meta.get("coverage", {}))
    log.info("generating %s (%d rows)", path, rows)
    started = time.perf_counter()
    coverage: dict[str, int] = {}
    registered = _write_rpo_csv(path.with_suffix(".tmp"), rows, month, seed, plan, coverage)
    checked_sample, checked_valid = _check_sample(path.with_suffix(".tmp"), 20_000, seed)
    if checked_valid != checked_sample:
        raise RuntimeError(f"{path}: {checked_sample - checked_valid} of {checked_sample} sampled numbers "
                           "are not valid per phonenumbers")
    path.with_suffix(".tmp").replace(path)
    size = path.stat().st_size
    meta_path.write_text(json.dumps({"rows": rows, "month": month, "seed": seed, "registered": registered,
                                     "size": size, "checked_sample": checked_sample,
                                     "checked_valid": checked_valid, "coverage": coverage}))
    return RpoFile(path, rows, month, registered, size, time.perf_counter() - started, checked_sample,
                   checked_valid, coverage)


def _write_rpo_csv(path: Path, rows: int, month: int, seed: int, plan: bool = False,
                   coverage: dict[str, int] | None = None) -> int:
    from rpoguard.numbers import normalize_fast  # noqa: PLC0415 - only the generator needs rpoguard

    blocks, weights = _blocks(seed, plan)
    forms, form_weights = zip(*PLAN_FORMS, strict=True) if plan else (("",), (1.0,))
    cumulative = []
    total = 0.0
    for weight in weights:
        total += weight
        cumulative.append(total)
    counters = [0] * len(blocks)
    rng = random.Random(seed * 1000 + month)
    first = FIRST_REGISTRATION.toordinal()
    span = REGISTRATION_SPAN_DAYS
    registered = 0
    written = 0
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("numero,esito,data_iscrizione\n")
        lines: list[str] = []
        while written < rows:
            for which in rng.choices(range(len(blocks)), cum_weights=cumulative, k=min(100_000, rows - written)):
                block = blocks[which]
                national = block.number(counters[which])
                counters[which] += 1
                if normalize_fast(national) is None:
                    continue  # not a valid fixed/mobile number (or not surely): never written
                if coverage is not None and plan:
                    key = f"mobile {national[:3]}/{len(national)}" if national[0] == "3" else f"fixed {len(national)}"
                    coverage[key] = coverage.get(key, 0) + 1
                value = int(national)
                is_registered = _mix(value, 1) < REGISTERED_PER_MILLE
                for later in range(2, month + 1):
                    if _mix(value, later) < FLIPS_PER_MILLE:
                        is_registered = not is_registered
                if plan:
                    shown = rng.choices(forms, form_weights)[0] + national
                    read = normalize_fast(shown)
                    if read is None or read.e164 != "+39" + national:
                        # "39" before a short fixed number spells a 390 mobile (national first): the
                        # RPO would not write it so, and the row would answer for another number.
                        shown = national
                else:
                    shown = "+39" + national if rng.random() < INTERNATIONAL_SHARE else national
                if is_registered:
                    registered += 1
                    if _mix(value, 99) < DATED_SHARE_PER_MILLE:
                        since = date.fromordinal(first + _mix(value, 98) * span // 1000)
                        lines.append(f"{shown},registered,{since.isoformat()}\n")
                    else:
                        lines.append(f"{shown},registered,\n")
                else:
                    lines.append(f"{shown},not_registered,\n")
                written += 1
            out.write("".join(lines))
            lines.clear()
    return registered


def _check_sample(path: Path, count: int, seed: int) -> tuple[int, int]:
    """Re-check a sample of the file's numbers with phonenumbers itself (parse + is_valid_number)."""
    import phonenumbers  # noqa: PLC0415

    numbers = sample_numbers(path, count, seed)
    valid = 0
    for raw in numbers:
        # As an Italian reads it: +…, 00…, else national first (39… is +39 only when not a national number).
        readings = ([raw] if raw.startswith("+") else ["+" + raw[2:]] if raw.startswith("00")
                    else ["+39" + raw, "+" + raw] if raw.startswith("39") else ["+39" + raw])
        for text in readings:
            parsed = phonenumbers.parse(text, "IT")
            if phonenumbers.is_valid_number(parsed):
                valid += phonenumbers.region_code_for_number(parsed) == "IT"
                break
    return len(numbers), valid


def sample_numbers(path: Path, count: int, seed: int = 1) -> list[str]:
    """About `count` numbers (first column) spread over the file, read with seeks, not the whole file."""
    size = path.stat().st_size
    rng = random.Random(seed)
    numbers: list[str] = []
    with path.open("rb") as fh:
        for offset in sorted(rng.randrange(size) for _ in range(count)):
            fh.seek(offset)
            fh.readline()  # the rest of a line cut in the middle
            line = fh.readline().decode()
            if line and not line.startswith("numero"):
                numbers.append(line.split(",", 1)[0])
    return numbers


# -- running a command and measuring it --------------------------------------------------------------------


@dataclass(slots=True)
class Measured:
    command: list[str]
    returncode: int
    wall: float
    user: float
    system: float
    max_rss_kib: int  # getrusage of the child: the kernel's peak resident set size (VmHWM)
    stdout: str
    stderr: str
    rss_samples: list[tuple[float, int]] = field(default_factory=list)  # (seconds since start, VmRSS KiB)
    started_at: float = 0.0  # time.monotonic() at start and at the end (same clock in every process)
    ended_at: float = 0.0

    @property
    def cpu(self) -> float:
        return self.user + self.system


def proc_status_kib(pid: int, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def run_measured(command: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path | None = None,
                 sample_every: float = 0.25, check: bool = True) -> Measured:
    """Run `command` to its end: wall time, user/system CPU and peak RSS (wait4's rusage, which is the
    child's VmHWM), with VmRSS sampled every `sample_every` s for a timeline."""
    started = time.monotonic()
    proc = subprocess.Popen(list(command), env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    samples: list[tuple[float, int]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(sample_every):
            rss = proc_status_kib(proc.pid, "VmRSS")
            if rss is not None:
                samples.append((time.monotonic() - started, rss))

    out_chunks: list[bytes] = []
    err_chunks: list[bytes] = []

    def drain(stream: object, chunks: list[bytes]) -> None:
        assert stream is not None
        for chunk in iter(lambda: stream.read(65536), b""):  # type: ignore[attr-defined]
            chunks.append(chunk)

    threads = [threading.Thread(target=sample, daemon=True),
               threading.Thread(target=drain, args=(proc.stdout, out_chunks), daemon=True),
               threading.Thread(target=drain, args=(proc.stderr, err_chunks), daemon=True)]
    for thread in threads:
        thread.start()
    _, status, usage = os.wait4(proc.pid, 0)
    ended = time.monotonic()
    proc.returncode = os.waitstatus_to_exitcode(status)
    done.set()
    for thread in threads:
        thread.join(timeout=5)
    result = Measured(list(command), proc.returncode, ended - started, usage.ru_utime, usage.ru_stime,
                      usage.ru_maxrss, b"".join(out_chunks).decode(errors="replace"),
                      b"".join(err_chunks).decode(errors="replace"), samples, started, ended)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {result.returncode}:\n{result.stderr[-3000:]}")
    return result


def rpoguard_env(config: Path) -> dict[str, str]:
    """The environment for `rpoguard` children: an empty config file, so /etc/rpoguard is never read."""
    env = {k: v for k, v in os.environ.items() if k not in ("RPOGUARD_DB", "RPOGUARD_CONFIG")}
    env["RPOGUARD_CONFIG"] = str(config)
    return env


def empty_config(folder: Path) -> Path:
    config = folder / "bench-empty.toml"
    if not config.exists():
        config.write_text("# rpoguard benchmarks: every setting at its default\n")
    return config


def remove_db(path: Path) -> None:
    """A database and everything SQLite and rpoguard keep beside it."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            Path(f"{path}{suffix}").unlink()
        audit = path.with_name(f"{path.stem}.audit{path.suffix}")
        with contextlib.suppress(FileNotFoundError):
            Path(f"{audit}{suffix}").unlink()


def file_sizes(path: Path) -> dict[str, int]:
    """Sizes of the data file, its WAL and the audit file (0 when absent)."""
    audit = path.with_name(f"{path.stem}.audit{path.suffix}")
    sizes = {}
    for name, item in (("db", path), ("wal", Path(f"{path}-wal")), ("audit", audit)):
        sizes[name] = item.stat().st_size if item.exists() else 0
    return sizes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited with {proc.returncode} before listening") from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on port {port} after {timeout} s") from None
            time.sleep(0.05)


# -- figures and tables ------------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of values already sorted; NaN for none."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), int(fraction * len(sorted_values) + 0.999999)))
    return sorted_values[rank - 1]


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]], align: str | None = None) -> str:
    """A markdown table; `align` is one letter per column (l or r), numbers right-aligned by default."""
    cells = [[str(c) for c in row] for row in rows]
    if align is None:
        align = "".join("r" if rows and isinstance(rows[0][i], int | float) else "l" for i in range(len(headers)))
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "| " + " | ".join(v.rjust(w) if a == "r" else v.ljust(w)
                                 for v, w, a in zip(values, widths, align, strict=True)) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if a == "r" else ("-" * (w + 2))
                          for w, a in zip(widths, align, strict=True)) + "|"
    return "\n".join([line(headers), rule, *(line(r) for r in cells)])


def machine_description() -> list[tuple[str, str]]:
    """What a reader needs to compare figures between machines."""
    model = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = "?"
    with contextlib.suppress(OSError), open("/proc/meminfo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    folder = bench_dir()
    disk = shutil.disk_usage(folder)
    return [
        ("cores (nproc)", str(os.cpu_count())),
        ("CPU", model),
        ("memory", memory),
        ("kernel", platform.release()),
        ("Python", platform.python_version()),
        ("SQLite", sqlite3.sqlite_version),
        ("data folder", f"{folder} ({disk.free / 2**30:.0f} GiB free)"),
    ]


def human_bytes(value: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def rss_at_fraction(samples: Sequence[tuple[float, int]], total: float) -> Iterator[tuple[float, int]]:
    """The RSS timeline thinned to about ten points, for a compact line in a report."""
    if not samples:
        return
    step = max(total / 10, 1e-9)
    times = [t for t, _ in samples]
    mark = 0.0
    while mark <= total:
        index = min(bisect.bisect_left(times, mark), len(samples) - 1)
        yield samples[index]
        mark += step


def days_ago(days: int) -> str:
    return (date.today() - timedelta(days=days)).isoformat()
