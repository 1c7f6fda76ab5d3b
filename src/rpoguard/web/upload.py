"""Uploaded files: each multipart file part streamed to a private temporary file, with its SHA-256 and size
computed as it arrives, so that a file of millions of rows never sits whole in memory.

The limit ([web] max_upload_bytes) bounds one request's files together, as a reverse proxy's body limit
does: a request over it is refused (HTTP 413) and what was written of it is deleted.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

# A 5 M-row RPO answer is about 100 MB; consents with their evidence references run several times that.
DEFAULT_MAX_UPLOAD_BYTES = 1 << 30
CHUNK = 1 << 16
# A form's text fields (dates, ids, choices) are short: anything longer is not a value the form asks for.
MAX_FIELD_BYTES = 4_096
MAX_NAME_CHARS = 200
_UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f/\\:]")


class UploadError(ValueError):
    """An upload that cannot be taken (bad form, unreadable part); the message says what and where."""


class UploadTooLarge(UploadError):
    """The request's files together exceed the limit: HTTP 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the upload exceeds the limit of {limit:,} bytes ([web] max_upload_bytes); nothing was "
                         "kept")
        self.limit = limit


class ChunkSource(Protocol):
    """What a file part offers (aiohttp's BodyPartReader): its file name and its body, chunk by chunk."""

    filename: str | None

    async def read_chunk(self, size: int = ...) -> bytes: ...


@dataclass(frozen=True, slots=True)
class UploadedFile:
    """One file received: the form field it came in, the name the browser gave (no directory), where it is
    kept until its import ends, and its size and SHA-256 as received."""

    field: str
    name: str
    path: Path
    size: int
    sha256: str


def safe_name(given: str | None) -> str:
    """The uploaded file's own name, as the import record shows it: the last part of what the browser sent
    (old browsers send a Windows path), without control characters; 'upload' when nothing is left."""
    name = (given or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE_NAME.sub("_", name).strip()[:MAX_NAME_CHARS]
    return name if name not in ("", ".", "..") else "upload"


def upload_root(configured: str | None) -> Path:
    """The directory uploads are kept in while they are imported: [web] upload_dir, else a private folder
    in the system's temporary directory. Created with mode 0700; an existing one must belong to this user
    and be closed to others, since the files hold personal data (fail closed otherwise)."""
    root = Path(configured) if configured else Path(tempfile.gettempdir()) / f"rpoguard-uploads-{os.getuid()}"
    try:
        with contextlib.suppress(FileExistsError):
            root.mkdir(mode=0o700, parents=bool(configured))
        info = root.lstat()
    except OSError as exc:
        raise UploadError(f"upload directory {root}: {exc.strerror or exc}") from exc
    if not stat.S_ISDIR(info.st_mode):
        raise UploadError(f"upload directory {root} is not a directory")
    if info.st_uid != os.getuid():
        raise UploadError(f"upload directory {root} belongs to another user (uid {info.st_uid}); uploads hold "
                          "personal data: give [web] upload_dir a directory of this user's")
    if info.st_mode & 0o077:
        raise UploadError(f"upload directory {root} is open to other users (mode {stat.S_IMODE(info.st_mode):o}); "
                          f"run chmod 700 {root}")
    return root


def new_upload_dir(root: Path) -> Path:
    """A fresh private folder for one request's files (removed with remove_upload_dir)."""
    return Path(tempfile.mkdtemp(prefix="upload-", dir=root))


def remove_upload_dir(directory: Path) -> None:
    """Delete a request's files; a folder already gone is fine."""
    shutil.rmtree(directory, ignore_errors=True)
    if directory.exists():
        log.warning("could not remove the uploaded files in %s", directory)


async def save_part(part: ChunkSource, field: str, directory: Path, budget: int) -> UploadedFile:
    """Stream one file part into `directory` (one sub-folder a field, so two files of the same name
    do not meet), hashing as it goes. `budget`: the bytes this request may still send; over it the
    partial file is deleted and UploadTooLarge raised."""
    name = safe_name(part.filename)
    folder = directory / field
    folder.mkdir(mode=0o700, exist_ok=True)
    path = folder / name
    digest = hashlib.sha256()
    size = 0
    try:
        # Small writes to the page cache: cheaper inline than a thread hop per chunk.
        with open(path, "xb") as out:  # noqa: ASYNC230
            while chunk := await part.read_chunk(CHUNK):
                size += len(chunk)
                if size > budget:
                    raise UploadTooLarge(budget)
                digest.update(chunk)
                out.write(chunk)
    except BaseException:
        with contextlib.suppress(OSError):
            path.unlink()
        raise
    return UploadedFile(field, name, path, size, digest.hexdigest())


async def read_field(part: ChunkSource, field: str) -> str:
    """A text field of the form, bounded: a value longer than MAX_FIELD_BYTES is refused, never kept."""
    data = b""
    while chunk := await part.read_chunk(CHUNK):
        data += chunk
        if len(data) > MAX_FIELD_BYTES:
            raise UploadError(f"form field {field!r} is longer than {MAX_FIELD_BYTES} bytes")
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise UploadError(f"form field {field!r} is not UTF-8 text") from None
