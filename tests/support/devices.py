"""Private twins of the machine's device nodes, for tests of what rpoguard does to an output that is a
device: made in the test's own folder (``mknod``, root only), so a test that goes wrong destroys its own
copy and never the real /dev/null."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

NULL = (1, 3)  # Linux's /dev/null: writes vanish
FULL = (1, 7)  # Linux's /dev/full: every write fails with ENOSPC


def device_node(folder: Path, name: str, numbers: tuple[int, int]) -> Path:
    """A character device node `folder/name` with the given (major, minor) numbers."""
    if os.geteuid() != 0:
        reason = "making a device node needs root"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}, and CI runs as root: these tests must run there", pytrace=False)
        pytest.skip(reason)
    path = folder / name
    os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(*numbers))
    return path


def is_device(path: Path, numbers: tuple[int, int], inode: int | None = None) -> bool:
    """Still that device node (not a regular file put in its place), and the same node when `inode` is given."""
    info = os.lstat(path)
    return (stat.S_ISCHR(info.st_mode) and info.st_rdev == os.makedev(*numbers)
            and (inode is None or info.st_ino == inode))
