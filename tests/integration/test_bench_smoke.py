"""Every benchmark runs, on a tiny store, in its quickest mode: a change to the schema, the Store API or
the CLI that breaks bench/ fails here instead of on the day someone measures.

Each script runs as a user runs it (``.venv/bin/python bench/SCRIPT ...``) with its data folder in the
test's own tmp_path, must exit 0 and must print the headings of its figures. Nothing is measured or
judged: the figures of a few hundred rows on a busy machine mean nothing. bench_load.py's own checks
(every session decided and recorded) run in test_load.py; the real-Asterisk part is in
tests/e2e/test_bench_asterisk.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NoReturn

import pytest

pytestmark = pytest.mark.slow

BENCH = Path(__file__).resolve().parents[2] / "bench"
TIMEOUT = 300


def _cannot_run(reason: str) -> NoReturn:
    # As for the e2e and PostgreSQL tests: skip on a developer's machine, fail in CI.
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the benchmark smoke tests must run here)", pytrace=False)
    pytest.skip(reason)


def _has_postgresql() -> bool:
    if os.environ.get("PG_BINDIR"):
        return (Path(os.environ["PG_BINDIR"]) / "pg_ctl").exists()
    return bool(sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl")))


# (script and its quickest arguments, what it needs, headings its report must print)
CASES = {
    "numbers": (["bench_numbers.py", "--count", "300", "--repeat", "1"], (), ["normalize_fast", "numbers/s"]),
    "gate": (["bench_gate.py", "--smoke"], ("gcc",),
             ["## 1. Engine in-process", "## 2. FastAGI on loopback", "## 3. Classic AGI", "## Targets (FastAGI)"]),
    "import": (["bench_import.py", "--sizes", "500", "--gate-size", "500", "--window", "1", "--profile-size", "500"],
               (), ["## 1. Import throughput", "## 2. Gate latency during an import", "## 3. Where the time goes"]),
    "load": (["bench_load.py", "--size", "500", "--duration", "3", "--rate", "50", "--interval", "1"], ("gcc",),
             ["# rpoguard serve under load", "VERDICT: PASS"]),
    "reconcile": (["bench_reconcile.py", "--quick"], (), ["# rpoguard reconcile over a CDR file", "## Result",
                                                         "VERDICT: PASS"]),
    "pg": (["bench_pg.py", "--size", "500", "--duration", "1", "--warmup", "0.2", "--rounds", "1", "--concurrency",
            "4", "--rate", "50"], ("gcc", "postgresql"), ["## Closed loop", "## Open loop", "audit log intact"]),
    "web": (["bench_web.py", "--decisions", "2000", "--answers", "3000", "--requests", "3"], (),
            ["audit log intact", "# rpoguard web: pages on a large store", "## Pages", "decisions, a deep page",
             "## Background work"]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_benchmark_runs_on_a_tiny_store(name: str, tmp_path: Path) -> None:
    (script, *args), needs, headings = CASES[name]
    if "gcc" in needs and shutil.which("gcc") is None:
        _cannot_run("gcc is not installed (the load generator and the clock shim are C)")
    if "postgresql" in needs and not _has_postgresql():
        _cannot_run("PostgreSQL's binaries are not installed (Debian's postgresql package)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RPOGUARD_")}
    env.pop("COVERAGE_PROCESS_START", None)
    env["RPOGUARD_BENCH_DIR"] = str(tmp_path)
    done = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=TIMEOUT, check=False)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    missing = [h for h in headings if h not in done.stdout]
    assert not missing, f"{script} did not print {missing}:\n{done.stdout[-4000:]}{done.stderr[-4000:]}"
