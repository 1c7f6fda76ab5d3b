"""bench/bench_asterisk.py (part 4 of the gate benchmarks) runs on a tiny store against the real Asterisk:
a change that breaks it fails here. It starts its own Asterisk on the e2e root file system, so it runs
under this session's host lock (``--lock-held``) and between modules, when no other Asterisk holds 5060.
Three calls per mode take seconds; nothing is measured or judged."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_asterisk.py"
TIMEOUT = 180


def test_bench_asterisk_runs_on_a_tiny_store(asterisk_rootfs: Path, e2e_host_lock: None, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RPOGUARD_")}
    env["RPOGUARD_BENCH_DIR"] = str(tmp_path)
    env["RPOGUARD_E2E_CACHE"] = str(asterisk_rootfs.parent)
    done = subprocess.run([sys.executable, str(BENCH), "--calls", "3", "--size", "0.0005", "--lock-held"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=TIMEOUT, check=False)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "## 4. Real Asterisk 22" in done.stdout, done.stdout + done.stderr[-4000:]
    assert "added vs none (mean ms)" in done.stdout, done.stdout + done.stderr[-4000:]
