"""The progress display of imports and scrub (cli.progress.ProgressDisplay) away from a terminal: plain lines with the
share read, the rate and the time left, never a control character; nothing at all with -q. What a
terminal shows is in tests/integration/test_cli_lists.py (a pseudo-terminal)."""

from __future__ import annotations

import io
from pathlib import Path

from rpoguard.cli.progress import ProgressDisplay
from rpoguard.ingest.csvfile import read_observer, read_rows


def test_plain_lines_say_how_far_how_fast_and_how_long_left(tmp_path: Path) -> None:
    path = tmp_path / "answers.csv"
    path.write_bytes(b"+390612345678,registered\n" * 40_000)  # 1 MB, read in chunks
    log = io.StringIO()
    progress = ProgressDisplay("importing RPO answers", [str(path)], quiet=False, stream=log)
    assert progress.mode == "plain"
    progress.PLAIN_INTERVAL = 3600.0  # only the line this test asks for, however slow the machine
    with progress:
        assert read_observer.get() is not None
        rows = read_rows(path, [])
        for _ in range(20_000):
            next(rows)
        progress(20_000)  # the store's count
        halfway = progress.done()
        assert 0 < halfway < path.stat().st_size
        line = progress.plain_line(halfway)
        assert line.startswith("importing RPO answers: ")
        assert "% of 1.0 MB read" in line and "MB/s" in line and " left" in line and "20,000 rows (" in line
        rows.close()  # read to the end or not, a closed file counts whole
        assert progress.plain_line(progress.done()).startswith("importing RPO answers: all 1.0 MB read, storing")
        progress.tick()
    assert read_observer.get() is None
    assert log.getvalue().count("\n") == 1
    assert not any(c in log.getvalue() for c in "\x1b\r")


def test_quiet_shows_nothing_and_watches_nothing(tmp_path: Path) -> None:
    path = tmp_path / "list.txt"
    path.write_text("06 4567 8901\n", encoding="utf-8")
    log = io.StringIO()
    with ProgressDisplay("scrubbing", [str(path)], quiet=True, stream=log) as progress:
        assert read_observer.get() is None
        assert list(read_rows(path, [])) == [(1, ["06 4567 8901"])]
    assert progress.mode == "off"
    assert log.getvalue() == ""
