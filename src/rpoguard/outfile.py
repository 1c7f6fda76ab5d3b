"""Where a command's output goes (`-o FILE` of `scrub`, `audit export`, `registry due`).

A regular file appears only complete: the output is written to a temporary file beside it, synced, and
renamed over it, so a failed or interrupted run leaves the previous file as it was and a reader never
sees half an export. That is only right for a regular file (or a path that does not exist yet). Renaming
over anything else destroys it: run as root with `-o /dev/null`, a rename would replace the system's
null device with a regular file, and every program writing to /dev/null would fail afterwards. So:

- no path, or `-`: standard output;
- a new path or an existing regular file: temporary file, fsync, rename (an existing file keeps its
  permission bits, and its owner where the user may set it);
- a symbolic link: the rule applies to the file it finally points to; the link stays a link;
- a link through /proc (`/dev/stdout`, `/dev/fd/1`): it names an open file, not a place in a folder,
  so it is opened and written as it is;
- a character or block device, a FIFO, a socket: opened and written directly, never renamed or removed;
- a directory: an error.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import secrets
import stat
import sys
from collections.abc import Iterator
from typing import IO

log = logging.getLogger(__name__)

STDOUT = "-"
# Linux's own limit on the links followed while resolving one path (ELOOP beyond it).
MAX_LINKS = 40
_TEMP_ATTEMPTS = 100


class OutputError(Exception):
    """The output cannot be written; the message names the path and why."""


@contextlib.contextmanager
def open_output(path: str | os.PathLike[str] | None, *, encoding: str = "utf-8",
                newline: str | None = "") -> Iterator[IO[str]]:
    """A text stream for a command's output, by the rules in this module's docstring. On an error in the
    body, a regular file keeps its previous content; what a device or FIFO already received stays sent."""
    if path is None or os.fspath(path) == STDOUT:
        yield sys.stdout
        return
    label = os.fspath(path)
    target, through_proc = _final_target(label)
    if through_proc:
        with _direct(label, label, encoding, newline, append=True) as out:
            yield out
        return
    try:
        info: os.stat_result | None = os.stat(target)
    except FileNotFoundError:
        info = None
    except OSError as exc:
        raise OutputError(f"cannot write {label}: {exc.strerror}") from exc
    if info is not None and stat.S_ISDIR(info.st_mode):
        raise OutputError(f"cannot write {label}: it is a directory; give a file name")
    if info is None or stat.S_ISREG(info.st_mode):
        with _replacing(target, info, label, encoding, newline) as out:
            yield out
    else:
        with _direct(target, label, encoding, newline) as out:
            yield out


def _final_target(label: str) -> tuple[str, bool]:
    """The path a write to `label` lands on, with every symbolic link followed; and whether the way there
    leads through /proc (then `label` itself is what to open)."""
    current = os.path.join(os.getcwd(), label)
    for _ in range(MAX_LINKS):
        # realpath for the folders (it handles `..` after a link correctly); the last part by hand, so that
        # a link through /proc is seen before it turns into a name like "pipe:[1234]" that exists nowhere.
        folder = os.path.realpath(os.path.dirname(current))
        if folder == "/proc" or folder.startswith("/proc/"):
            return label, True
        name = os.path.basename(current)
        if name in ("", ".", ".."):
            raise OutputError(f"cannot write {label}: it is a directory; give a file name")
        current = os.path.join(folder, name)
        try:
            link = os.readlink(current)
        except OSError:
            # Not a link, or nothing there yet (or unreachable: the stat that follows names why).
            return current, False
        current = os.path.join(folder, link)
    raise OutputError(f"cannot write {label}: {os.strerror(errno.ELOOP)}")


class _RawOutput(io.FileIO):
    """A file descriptor whose write errors name the output (disk full, device gone), not just errno."""

    label = ""

    def write(self, data: bytes | bytearray | memoryview) -> int | None:  # type: ignore[override]
        try:
            return super().write(data)
        except BrokenPipeError:
            # A reader that went away (`| head`): the command's own business, not an output error.
            raise
        except OSError as exc:
            raise OutputError(f"cannot write {self.label}: {exc.strerror}") from exc


def _text(fd: int, label: str, encoding: str, newline: str | None) -> io.TextIOWrapper:
    raw = _RawOutput(fd, "w", closefd=True)
    raw.label = label
    return io.TextIOWrapper(io.BufferedWriter(raw), encoding=encoding, newline=newline)


@contextlib.contextmanager
def _direct(path: str, label: str, encoding: str, newline: str | None, *, append: bool = False) -> Iterator[IO[str]]:
    # No O_CREAT: this is a device, FIFO or socket, or /proc's link to a file already open, never a file to
    # create; no O_TRUNC: a device ignores it, and through /proc it would empty a log the shell opened with
    # `>>` (appended to instead). Opening a FIFO waits for its reader, as any writer's does.
    flags = os.O_WRONLY | os.O_CLOEXEC | (os.O_APPEND if append else 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise OutputError(f"cannot write {label}: {exc.strerror}") from exc
    with _text(fd, label, encoding, newline) as out:
        yield out


@contextlib.contextmanager
def _replacing(target: str, previous: os.stat_result | None, label: str, encoding: str,
               newline: str | None) -> Iterator[IO[str]]:
    folder, name = os.path.split(target)
    fd, temp = _create_temp(folder, name, label)
    renamed = False
    try:
        out = _text(fd, label, encoding, newline)
    except BaseException:
        os.close(fd)
        os.unlink(temp)
        raise
    try:
        with out:
            with _named(label):
                if previous is not None:
                    os.fchmod(fd, stat.S_IMODE(previous.st_mode))
                    # Only root may give a file away: for anyone else the new file is theirs, as an editor's is.
                    with contextlib.suppress(PermissionError):
                        os.fchown(fd, previous.st_uid, previous.st_gid)
            yield out
            with _named(label):
                out.flush()
                os.fsync(fd)
        with _named(label):
            os.replace(temp, target)
        renamed = True
    finally:
        if not renamed:
            with contextlib.suppress(OSError):
                os.unlink(temp)
    _sync_folder(folder)


@contextlib.contextmanager
def _named(label: str) -> Iterator[None]:
    """This module's own steps name the output in their errors; the caller's errors pass unchanged."""
    try:
        yield
    except OSError as exc:
        raise OutputError(f"cannot write {label}: {exc.strerror}") from exc


def _create_temp(folder: str, name: str, label: str) -> tuple[int, str]:
    # O_EXCL: never follow a link or reuse a file someone else placed under the temporary name. Mode 0o666
    # less the umask, as a plain open() would create the file.
    for _ in range(_TEMP_ATTEMPTS):
        temp = os.path.join(folder, f".{name}.{secrets.token_hex(4)}.partial")
        try:
            return os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666), temp
        except FileExistsError:
            continue
        except OSError as exc:
            raise OutputError(f"cannot write {label}: {exc.strerror}") from exc
    raise OutputError(f"cannot write {label}: no free temporary name in {folder}")


def _sync_folder(folder: str) -> None:
    # The rename is durable once the folder is synced; some file systems cannot sync a folder, and the
    # file's own data is synced already, so that is only noted.
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        log.debug("could not sync folder %s after writing into it: %s", folder, exc)
