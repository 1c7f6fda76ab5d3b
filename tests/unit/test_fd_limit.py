"""The FastAGI server fits its session cap to the open-file limit (agi/server.py, fit_open_file_limit).

Each case runs in a child process: lowering the hard limit cannot be undone in the process that did it.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

CHILD = """
import json, logging, resource, sys
from rpoguard.agi.server import fit_open_file_limit
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
soft, hard, cap = (int(x) for x in sys.argv[1:4])
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
fitted = fit_open_file_limit(cap)
print(json.dumps([fitted, *resource.getrlimit(resource.RLIMIT_NOFILE)]))
"""


def _fit(soft: int, hard: int, cap: int) -> tuple[list[int], str]:
    result = subprocess.run([sys.executable, "-c", CHILD, str(soft), str(hard), str(cap)], capture_output=True,
                            text=True, check=True)
    return json.loads(result.stdout), result.stderr


@pytest.mark.parametrize(
    ("soft", "hard", "cap", "expected"),
    [
        (9000, 9000, 4096, [4096, 9000, 9000]),  # enough already: nothing changes
        (1024, 9000, 4096, [4096, 2 * 4096 + 64, 9000]),  # the soft limit is raised to what the cap needs
        (256, 300, 4096, [(300 - 64) // 2, 300, 300]),  # the hard limit is too low: the cap is fitted
    ],
)
def test_session_cap_and_open_file_limit(soft: int, hard: int, cap: int, expected: list[int]) -> None:
    got, log = _fit(soft, hard, cap)
    assert got == expected, log
    if expected[0] < cap:
        assert f"too low for {cap} sessions: serving at most {expected[0]} at once" in log
        assert "LimitNOFILE" in log
