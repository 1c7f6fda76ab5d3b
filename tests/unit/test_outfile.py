"""rpoguard.outfile: a regular file (or a new path) is replaced whole by a temporary file and a rename;
a device, FIFO, `-` or a link through /proc is written directly; a link's target is written, not the link.

The device tests use a private twin of /dev/null (tests/support/devices.py), never the machine's own."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from rpoguard.outfile import OutputError, open_output
from support.devices import FULL, NULL, device_node, is_device


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".partial"))


def write(path: Path | str | None, text: str = "a,b\r\n1,2\n") -> None:
    with open_output(path) as out:
        out.write(text)


def test_a_new_path_appears_whole_with_the_usual_mode(tmp_path: Path) -> None:
    target = tmp_path / "new.csv"
    write(target)
    assert target.read_bytes() == b"a,b\r\n1,2\n"  # newline="": what the caller writes, byte for byte
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    assert leftovers(tmp_path) == []


def test_an_existing_file_is_replaced_and_keeps_its_mode(tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    target.write_text("old\n")
    target.chmod(0o640)
    before = target.stat().st_ino
    write(target, "new\n")
    assert target.read_text() == "new\n"
    assert target.stat().st_ino != before  # a new file renamed into place, never truncated in place
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert leftovers(tmp_path) == []


def test_a_failed_run_leaves_the_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    target.write_text("previous\n")
    with pytest.raises(RuntimeError, match="half way"), open_output(target) as out:
        out.write("partial\n" * 10_000)
        raise RuntimeError("half way")
    assert target.read_text() == "previous\n"
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("path", [None, "-"])
def test_none_and_dash_are_standard_output(path: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    write(path, "to stdout\n")
    assert capsys.readouterr().out == "to stdout\n"
    assert list(tmp_path.iterdir()) == []  # no file called "-"


def test_a_device_is_written_directly_and_stays_a_device(tmp_path: Path) -> None:
    null = device_node(tmp_path, "null", NULL)
    inode = null.stat().st_ino
    write(null, "x" * 100_000)
    assert is_device(null, NULL, inode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null"]


def test_a_link_to_a_device_writes_the_device_and_stays_a_link(tmp_path: Path) -> None:
    null = device_node(tmp_path, "null", NULL)
    link = tmp_path / "out.csv"
    link.symlink_to("null")
    write(link)
    assert link.is_symlink() and os.readlink(link) == "null"
    assert is_device(null, NULL)


def test_a_write_error_on_a_device_names_the_output(tmp_path: Path) -> None:
    full = device_node(tmp_path, "full", FULL)
    with pytest.raises(OutputError, match=rf"^cannot write {full}: No space left on device$"):
        write(full)
    assert is_device(full, FULL)


def test_a_fifo_is_written_directly_and_stays_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    # The reading end open first, so that the open for writing never waits; the text fits the pipe's buffer.
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        write(fifo, "through the pipe\n")
        assert os.read(reader, 1 << 16) == b"through the pipe\n"
    finally:
        os.close(reader)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]


def test_a_link_to_a_file_stays_a_link_and_its_target_is_replaced(tmp_path: Path) -> None:
    (tmp_path / "exports").mkdir()
    (tmp_path / "links").mkdir()
    target = tmp_path / "exports" / "today.csv"
    target.write_text("yesterday\n")
    target.chmod(0o600)
    first = tmp_path / "links" / "latest.csv"
    first.symlink_to("second.csv")  # relative, in the links' folder
    (tmp_path / "links" / "second.csv").symlink_to("../exports/today.csv")
    write(first, "today\n")
    assert os.readlink(first) == "second.csv"
    assert os.readlink(tmp_path / "links" / "second.csv") == "../exports/today.csv"
    assert target.read_text() == "today\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert leftovers(tmp_path / "exports") == [] and leftovers(tmp_path / "links") == []


def test_a_dangling_link_gets_its_target_created(tmp_path: Path) -> None:
    link = tmp_path / "out.csv"
    link.symlink_to(tmp_path / "real.csv")
    write(link, "created\n")
    assert link.is_symlink()
    assert (tmp_path / "real.csv").read_text() == "created\n"


def test_a_link_through_proc_writes_the_open_pipe(tmp_path: Path) -> None:
    # A private /dev/stdout: a link to /proc/self/fd/N, here the write end of a pipe.
    read_end, write_end = os.pipe()
    try:
        link = tmp_path / "stdout"
        link.symlink_to(f"/proc/self/fd/{write_end}")
        write(link, "piped\n")
        assert os.read(read_end, 100) == b"piped\n"
        assert os.readlink(link) == f"/proc/self/fd/{write_end}"
    finally:
        os.close(read_end)
        os.close(write_end)


def test_a_link_through_proc_to_a_file_appends_never_truncates(tmp_path: Path) -> None:
    # `rpoguard ... -o /dev/stdout >> log`: the log the shell opened keeps what it had.
    log = tmp_path / "log"
    log.write_text("earlier\n")
    fd = os.open(log, os.O_WRONLY | os.O_APPEND)
    try:
        link = tmp_path / "stdout"
        link.symlink_to(f"/proc/self/fd/{fd}")
        write(link, "later\n")
    finally:
        os.close(fd)
    assert log.read_text() == "earlier\nlater\n"
    assert link.is_symlink()


def test_a_directory_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "folder").mkdir()
    (tmp_path / "to-folder").symlink_to("folder")
    for path in (tmp_path / "folder", tmp_path / "to-folder", f"{tmp_path}/folder/.."):
        with pytest.raises(OutputError, match=r"^cannot write .*: it is a directory; give a file name$"):
            write(path)
    assert list((tmp_path / "folder").iterdir()) == []


def test_a_missing_folder_and_a_link_loop_are_errors(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match=r"^cannot write .*/nowhere/out.csv: No such file or directory$"):
        write(tmp_path / "nowhere" / "out.csv")
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    with pytest.raises(OutputError, match=r"^cannot write .*/a: Too many levels of symbolic links$"):
        write(tmp_path / "a")
    assert (tmp_path / "a").is_symlink() and (tmp_path / "b").is_symlink()
