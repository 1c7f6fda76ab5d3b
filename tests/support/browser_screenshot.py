"""scripts/console-screenshot: the console's overview over the browser tests' sample store, as a PNG for the docs.

    python -m support.browser_screenshot OUT.png      (from the repository, with tests/ on PYTHONPATH)
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from support.browser import (
    DEFAULT_TIMEOUT_MS,
    ROME,
    BrowserUnavailable,
    chromium_executable,
    launch_args,
    log_in,
    sample_console,
    wait_for_chart,
)

logger = logging.getLogger(__name__)

VIEWPORT = {"width": 1280, "height": 860}
# The chart covers 48 hours; each earlier call is one `check` process (about a second).
EARLIER_HOURS = 46
MAX_EARLIER_CALLS = 60


def rpoguard_script() -> str:
    """The `rpoguard` console script installed beside this interpreter (the venv's)."""
    beside = Path(sys.executable).parent / "rpoguard"
    if not (beside.is_file() and os.access(beside, os.X_OK)):
        raise BrowserUnavailable(f"no rpoguard script beside {sys.executable}: pip install -e '.[test]' first")
    return str(beside)


def earlier_calls() -> list[tuple[dict[str, str], str]]:
    """The last two days' calls, as a call centre makes them (every 20 minutes of working hours, and a few
    outside), for the chart to show: each recorded by a `check` whose clock libfaketime sets to that moment.
    Without libfaketime: none (the decisions of now only)."""
    found = sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))
    if not found:
        logger.info("libfaketime is not installed (apt-get install faketime): the chart shows only this hour")
        return []
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    numbers = ["06 4567 8901", "333 123 4567", "02 1234 5678", "06 4567 8901", "333 123 4567", "347 765 4321"]
    moments = [now - timedelta(minutes=20 * n) for n in range(EARLIER_HOURS * 3, 0, -1)]
    working = [m for m in moments if 9 <= m.astimezone(ROME).hour < 20 or (m.minute < 20 and m.hour % 5 == 0)]
    calls = []
    for n, moment in enumerate(working[-MAX_EARLIER_CALLS:]):
        clock = {"LD_PRELOAD": str(found[0]), "FAKETIME": f"@{moment:%Y-%m-%d %H:%M:%S}", "TZ": "UTC"}
        calls.append((clock, numbers[n % len(numbers)]))
    return calls


def take(out: Path, username: str = "operator") -> None:
    from playwright.sync_api import sync_playwright

    chromium = chromium_executable()
    script = rpoguard_script()
    with tempfile.TemporaryDirectory(prefix="rpoguard-screenshot-") as folder, \
            sample_console(script, Path(folder), earlier_calls(), max_attempts=50) as server, \
            sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=launch_args())
        try:
            context = browser.new_context(viewport=VIEWPORT, locale="it-IT", timezone_id="Europe/Rome")
            context.set_default_timeout(DEFAULT_TIMEOUT_MS)
            page = context.new_page()
            log_in(page, server.base_url, username)
            page.wait_for_url(f"{server.base_url}/")
            wait_for_chart(page)
            # The chart's drawing animation would be caught half way: draw its final state at once.
            page.evaluate("""() => { const chart = Chart.getChart('decisions-chart');
                                     chart.stop(); chart.options.animation = false; chart.update('none'); }""")
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out))
        finally:
            browser.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="console-screenshot", description=__doc__)
    parser.add_argument("out", type=Path, nargs="?", default=Path("docs/console-overview.png"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="console-screenshot: %(message)s")
    try:
        take(args.out)
    except (BrowserUnavailable, RuntimeError) as exc:
        print(f"console-screenshot: {exc}", file=sys.stderr)
        return 1
    logger.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
