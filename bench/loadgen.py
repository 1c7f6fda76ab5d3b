"""A load generator that plays Asterisk towards a FastAGI server, and one that plays it towards a classic
AGI program.

FastAGI: a small C program (loadgen.c, compiled with gcc on first use into the bench folder) with one epoll
loop, so that the generator costs a few µs of CPU per call and leaves the machine's cores to the server
being measured. Per call it does what res_agi does (docs/asterisk-agi.md; res_agi.c ``launch_netscript``,
``setup_env``, ``run_agi``):

* a new TCP connection per call;
* the environment as ``setup_env`` writes it: ``agi_network``, ``agi_network_script``, ``agi_request``,
  the 19 channel lines, ``agi_arg_1..N``, a blank line. Asterisk writes each line with its own write()
  (``ast_agi_send``), so the generator does too (``--env-writes lines``, the default);
* every command is answered the way res_agi answers it (``SET VARIABLE`` -> ``200 result=1``, ``EXEC
  MSet`` -> ``200 result=0``, ``GET VARIABLE`` -> ``200 result=0``, unknown -> ``510``), one at a time;
* a line starting with ``failure`` ends the session (AGISTATUS=FAILURE), as does the server's close;
  then, as ``run_agi`` does at its end when AGISIGHUP is not ``no``, it writes ``HANGUP`` and closes.

Two ways to load: closed loop (``--concurrency N``: N calls in flight, a new one as soon as one ends: the
throughput at saturation) and open loop (``--rate R``: a call every 1/R s whatever happens, latency
measured from the scheduled start, so a slow server cannot hide its queue).

Classic AGI (``run_classic``): Python threads, since starting a Python process per call (tens of ms) is
what costs there, not the generator. Per call: start the program with the AGI arguments, write the
environment on its stdin, answer its commands, and at the end of its stdout wait for it to exit, as
``run_agi`` does (``waitpid`` after EOF; a non-zero exit status is AGISTATUS=FAILURE).

Run on its own:  python bench/loadgen.py --port 4573 --concurrency 64 --duration 5 --numbers FILE
"""

from __future__ import annotations

import argparse
import array
import hashlib
import json
import os
import re
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

# The AGI environment is written once, for the tests and the benchmarks (tests/support/agi_env.py).
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))
from tests.support.agi_env import channel_env, network_env, render_env  # noqa: E402

DECISION_VAR = "RPOGUARD_DECISION"
ID_VAR = "RPOGUARD_ID"
CALLER_ID = "0694801234"
UNIQUEID_MARK = "\x01"
NUMBER_MARK = "\x02"

# setup_env's channel lines from the recording the tests use too, for a Local channel running the
# product's subroutine (dialplan/rpoguard.conf: the AGI() is its 7th priority), with marks where the
# number and the uniqueid go.
CHANNEL_ENV: tuple[tuple[str, str], ...] = tuple(channel_env(
    agi_channel="Local/" + NUMBER_MARK + "@outbound-acme-00000001;2", agi_uniqueid=UNIQUEID_MARK,
    agi_callerid=CALLER_ID, agi_calleridname="ACME Energia", agi_priority="7"))


def fastagi_env_template(host: str, port: int, campaign: str) -> str:
    """The environment of ``AGI(agi://host:port/check?campaign=C,${ARG1},${ARG2},${ARG3})`` as
    dialplan/rpoguard.conf calls it (ARG3 empty), with marks where the uniqueid and number go."""
    lines = [*network_env(f"check?campaign={campaign}", host, port), *CHANNEL_ENV,
             ("agi_arg_1", NUMBER_MARK), ("agi_arg_2", campaign), ("agi_arg_3", "")]
    return render_env(lines).decode()


def classic_env(program: str, number: str, campaign: str, uniqueid: str) -> bytes:
    """The environment of ``AGI(rpoguard-agi,check,NUMBER,C)`` (README: classic AGI)."""
    lines = [("agi_request", program), *CHANNEL_ENV, ("agi_arg_1", "check"), ("agi_arg_2", number),
             ("agi_arg_3", campaign)]
    text = render_env(lines).decode()
    return text.replace(NUMBER_MARK, number).replace(UNIQUEID_MARK, uniqueid).encode()


# -- the C generator ---------------------------------------------------------------------------------------

C_SOURCE = Path(__file__).with_name("loadgen.c")


def build(folder: Path) -> Path:
    """Compile the generator once per source version (cached by the source's hash)."""
    digest = hashlib.sha256(C_SOURCE.read_bytes()).hexdigest()[:12]
    binary = folder / f"agi-loadgen-{digest}"
    if binary.exists():
        return binary
    result = subprocess.run(["gcc", "-O2", "-Wall", "-Wextra", "-o", str(binary) + ".tmp", str(C_SOURCE)],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"gcc failed on {C_SOURCE}:\n{result.stderr}")
    if result.stderr.strip():
        print(result.stderr, file=sys.stderr)
    Path(str(binary) + ".tmp").replace(binary)
    return binary


@dataclass(slots=True)
class LoadResult:
    """One run of the generator: what the server did in the measured window."""

    label: str
    window_s: float
    completed: int  # sessions that ended inside the window: the throughput
    recorded: int  # sessions scheduled inside the window (their latencies are below)
    dropped: int
    max_inflight: int
    allow: int
    block: int
    no_decision: int
    with_id: int
    set_variables: int
    outcomes: dict[str, int]
    gen_cpu_s: float  # the generator's own CPU in the window
    total: int  # every session of the run, warm-up and drain included
    latencies_ns: list[int] = field(default_factory=list)  # from the scheduled start to the end
    service_ns: list[int] = field(default_factory=list)  # from connect() to the end
    server_cpu_s: float | None = None  # filled in by the caller from /proc

    @property
    def rate(self) -> float:
        return self.completed / self.window_s if self.window_s else 0.0

    @property
    def errors(self) -> int:
        return sum(v for k, v in self.outcomes.items() if k != "done")


def run_fastagi(binary: Path, *, port: int, numbers: Path, template: Path, workdir: Path,
                concurrency: int = 0, rate: float = 0.0, duration: float = 5.0, warmup: float = 1.0,
                env_writes: str = "lines", label: str = "", host: str = "127.0.0.1") -> LoadResult:
    lat_path = workdir / f"lat-{os.getpid()}-{port}.bin"
    command = [str(binary), "--host", host, "--port", str(port), "--numbers", str(numbers), "--template",
               str(template), "--duration", str(duration), "--warmup", str(warmup), "--latencies", str(lat_path),
               "--env-writes", env_writes, "--decision-var", DECISION_VAR, "--id-var", ID_VAR]
    command += ["--concurrency", str(concurrency)] if concurrency else ["--rate", str(rate)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"load generator exited {result.returncode}: {result.stderr[-2000:]}")
    summary = json.loads(result.stdout)
    values = array.array("q")
    with lat_path.open("rb") as fh:
        values.frombytes(fh.read())
    lat_path.unlink()
    half = len(values) // 2
    return LoadResult(label, summary["window_s"], summary["completed_in_window"], summary["recorded"],
                      summary["dropped"], summary["max_inflight"], summary["allow"], summary["block"],
                      summary["no_decision"], summary["with_id"], summary["set_variables"], summary["outcomes"],
                      summary["cpu_s"], summary["total"], sorted(values[:half]), sorted(values[half:]))


def write_inputs(folder: Path, numbers: Sequence[str], host: str, port: int, campaign: str,
                 tag: str) -> tuple[Path, Path]:
    """The numbers file and the environment template the C generator reads."""
    numbers_path = folder / f"loadgen-numbers-{tag}.txt"
    numbers_path.write_text("\n".join(numbers) + "\n")
    template_path = folder / f"loadgen-env-{tag}-{port}.txt"
    template_path.write_bytes(fastagi_env_template(host, port, campaign).encode())
    return numbers_path, template_path


# -- classic AGI -------------------------------------------------------------------------------------------


@dataclass(slots=True)
class ClassicResult:
    label: str
    wall_s: float
    sessions: int
    allow: int
    block: int
    failures: int  # "failure" line or non-zero exit
    latencies_ns: list[int]
    children_cpu_s: float  # user + system CPU of all the programs started

    @property
    def rate(self) -> float:
        return self.sessions / self.wall_s if self.wall_s else 0.0


def mset_pairs(argument: str) -> dict[str, str]:
    """The variables of an ``EXEC MSet "A=1,B=2"`` argument (commas in values are escaped as ``\\,``)."""
    text = argument.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    pairs: dict[str, str] = {}
    for item in re.split(r"(?<!\\),", text):
        name, sep, value = item.partition("=")
        if sep:
            pairs[name.strip()] = value.replace("\\,", ",")
    return pairs


def _classic_answer(line: bytes, state: dict[str, str]) -> bytes:
    text = line.decode(errors="replace").rstrip("\r\n")
    upper = text.upper()
    if upper.startswith("SET VARIABLE "):
        rest = text[13:].lstrip()
        name, _, value = rest.partition(" ")
        state[name] = value.strip().strip('"')
        return b"200 result=1\n"
    if upper.startswith("EXEC MSET "):
        state.update(mset_pairs(text[10:]))
        return b"200 result=0\n"
    if upper.startswith("GET VARIABLE "):
        return b"200 result=0\n"
    if upper.startswith(("NOOP", "VERBOSE")):
        return b"200 result=0\n"
    return b"510 Invalid or unknown command\n"


def classic_session(argv: Sequence[str], env: dict[str, str], agi_env: bytes) -> tuple[int, str | None, bool]:
    """One classic AGI call: (latency ns, decision or None, failed)."""
    started = time.perf_counter_ns()
    proc = subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env=env)
    assert proc.stdin is not None and proc.stdout is not None
    state: dict[str, str] = {}
    failed = False
    try:
        proc.stdin.write(agi_env)
        proc.stdin.flush()
        for line in proc.stdout:
            if line[:7].lower() == b"failure":
                failed = True
                break
            proc.stdin.write(_classic_answer(line, state))
            proc.stdin.flush()
    except BrokenPipeError:
        failed = True
    finally:
        # run_agi: at the end of the program's output, a blocking waitpid; then the pipes are closed.
        status = proc.wait()
        proc.stdin.close()
        proc.stdout.close()
    elapsed = time.perf_counter_ns() - started
    return elapsed, state.get(DECISION_VAR), failed or status != 0


def run_classic(program: str, env: dict[str, str], numbers: Sequence[str], campaign: str, *,
                concurrency: int, sessions: int, label: str = "") -> ClassicResult:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    lock = threading.Lock()
    latencies: list[int] = []
    counts = {"allow": 0, "block": 0, "failed": 0}
    todo = iter(range(sessions))

    def worker() -> None:
        while True:
            with lock:
                index = next(todo, None)
            if index is None:
                return
            number = numbers[index % len(numbers)]
            agi_env = classic_env(Path(program).name, number, campaign, f"1764300000.{index}")
            elapsed, decision, failed = classic_session([program, "check", number, campaign], env, agi_env)
            with lock:
                latencies.append(elapsed)
                if failed:
                    counts["failed"] += 1
                elif decision == "ALLOW":
                    counts["allow"] += 1
                elif decision == "BLOCK":
                    counts["block"] += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return ClassicResult(label, wall, len(latencies), counts["allow"], counts["block"], counts["failed"],
                         sorted(latencies), cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description="FastAGI load generator (plays Asterisk)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4573)
    parser.add_argument("--numbers", required=True, help="one dialled number a line")
    parser.add_argument("--campaign", default="bench")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--concurrency", type=int, help="closed loop: calls in flight")
    group.add_argument("--rate", type=float, help="open loop: calls per second")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--env-writes", choices=("lines", "one"), default="lines")
    args = parser.parse_args()
    folder = Path(os.environ.get("RPOGUARD_BENCH_DIR") or "/var/tmp/rpoguard-bench")
    folder.mkdir(parents=True, exist_ok=True)
    binary = build(folder)
    numbers = Path(args.numbers).read_text().split()
    numbers_path, template = write_inputs(folder, numbers, args.host, args.port, args.campaign, "cli")
    result = run_fastagi(binary, port=args.port, numbers=numbers_path, template=template, workdir=folder,
                         concurrency=args.concurrency or 0, rate=args.rate or 0.0, duration=args.duration,
                         warmup=args.warmup, env_writes=args.env_writes, host=args.host)
    lat = result.latencies_ns

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))] / 1e6 if lat else float("nan")

    print(f"{result.rate:,.0f} sessions/s; p50 {pct(0.5):.3f} ms, p99 {pct(0.99):.3f} ms; "
          f"allow {result.allow}, block {result.block}, no decision {result.no_decision}; outcomes {result.outcomes}; "
          f"generator CPU {result.gen_cpu_s / max(result.completed, 1) * 1e6:.1f} µs/session")


if __name__ == "__main__":
    main()
