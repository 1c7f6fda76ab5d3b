"""How far a long import or scrub got, on standard error (a bar on a terminal, plain lines elsewhere)."""

from __future__ import annotations

import contextvars
import os
import sys
import threading
import time
from collections.abc import Sequence
from typing import IO, Any

from rpoguard.ingest.csvfile import BytesRead, read_observer


def _megabytes(count: float) -> str:
    return f"{count / 1e6:,.1f} MB"


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def on_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False


class ProgressDisplay:
    """How far a long import or scrub got, on standard error: the bytes its readers consumed of the input
    files (csvfile.read_observer; their sizes are the total) and, for RPO imports, the rows read.
    - On a terminal: a bar with the rate and the time left (rich), redrawn a few times a second from a
      thread of its own (a scrub on SQLite never yields to the event loop) and erased at the end.
    - Elsewhere (a log, a pipe): a plain line every PLAIN_INTERVAL seconds, so a long run shows it is alive
      without filling the log; a short one prints nothing, and no control characters ever.
    - Nothing with -q."""

    REFRESH = 0.2
    PLAIN_INTERVAL = 10.0

    def __init__(self, what: str, paths: Sequence[str | None], quiet: bool, stream: IO[str] | None = None) -> None:
        self.what = what
        self.stream = stream if stream is not None else sys.stderr
        self.total = sum(_size(path) for path in paths if path) or None
        self.rows: int | None = None
        self._rows_at = 0.0
        self.mode = "off" if quiet else "bar" if on_terminal(self.stream) else "plain"
        self.started = time.monotonic()
        self._read = BytesRead()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._bar: Any = None
        self._task: Any = None
        self._token: contextvars.Token[Any] | None = None

    def __call__(self, count: int) -> None:
        """The store's count of the rows read so far (db.store.Progress)."""
        self.rows = count
        self._rows_at = time.monotonic()

    def _rows_text(self) -> str:
        """The rows read and their rate while they were read (storing them after the last adds no rows)."""
        if not self.rows:
            return ""
        return f"{self.rows:,} rows ({self.rows / max(self._rows_at - self.started, 1e-9):,.0f}/s)"

    def done(self) -> int:
        """Bytes read so far; a file already closed counts whole."""
        done = self._read.total()
        return min(done, self.total) if self.total else done

    def __enter__(self) -> ProgressDisplay:
        if self.mode == "off":
            return self
        self._token = read_observer.set(self._read.opened)
        if self.mode == "bar":
            self._start_bar()
        self._thread = threading.Thread(target=self._run, name="rpoguard-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.mode == "off":
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._bar is not None:
            self.tick()  # the last figures, however short the run (the bar is then erased)
            self._bar.stop()
        if self._token is not None:
            read_observer.reset(self._token)

    def _start_bar(self) -> None:
        # Imported here: rich is for people at a terminal, and the gate's start-up should not pay for it.
        from rich.console import Console  # noqa: PLC0415
        from rich.progress import (  # noqa: PLC0415
            BarColumn,
            DownloadColumn,
            Progress,
            SpinnerColumn,
            TaskProgressColumn,
            TextColumn,
        )

        # Colour only here, on a terminal; rich leaves it out under NO_COLOR.
        self._bar = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), DownloadColumn(),
            TextColumn("{task.fields[status]}"), console=Console(file=self.stream), auto_refresh=False,
            transient=True, redirect_stdout=False, redirect_stderr=False)
        self._task = self._bar.add_task(self.what, total=self.total, status=self.status(0))
        self._bar.start()

    def _run(self) -> None:
        while not self._stop.wait(self.REFRESH if self._bar is not None else self.PLAIN_INTERVAL):
            self.tick()

    def tick(self) -> None:
        done = self.done()
        if self._bar is None:
            print(self.plain_line(done), file=self.stream, flush=True)
            return
        reading = not self.total or done < self.total
        self._bar.update(self._task, completed=done, description=self.what if reading else f"{self.what}: storing",
                         status=self.status(done))
        self._bar.refresh()

    def status(self, done: int) -> str:
        """The rate, the time left while reading, and the rows when the store counts them."""
        elapsed = max(time.monotonic() - self.started, 1e-9)
        parts = [f"{_megabytes(done / elapsed)}/s"]
        if self.total and done < self.total:
            parts.append(f"{_duration((self.total - done) * elapsed / done)} left" if done else "-:--:-- left")
        if self.rows:
            parts.append(self._rows_text())
        return ", ".join(parts)

    def plain_line(self, done: int) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        if self.total and done >= self.total:
            head = f"{self.what}: all {_megabytes(self.total)} read, storing"
        elif self.total:
            head = f"{self.what}: {100 * done / self.total:.0f}% of {_megabytes(self.total)} read"
        else:
            head = f"{self.what}: {_megabytes(done)} read"
        return f"{head}, {self.status(done)}, {_duration(elapsed)} so far"


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:  # the import names the problem
        return 0
