"""web/upload.py: a file part streamed to a private temporary file with its SHA-256 and size, the request's
limit (the partial file deleted), the uploaded name as the import records it, the private upload folder."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rpoguard.web.upload import (
    MAX_FIELD_BYTES,
    UploadError,
    UploadTooLarge,
    new_upload_dir,
    read_field,
    remove_upload_dir,
    safe_name,
    save_part,
    upload_root,
)


class FakePart:
    """A multipart part as aiohttp's BodyPartReader gives it: its name, and its body chunk by chunk."""

    def __init__(self, data: bytes, filename: str | None = "answers.csv", chunk: int = 7) -> None:
        self.filename = filename
        self._data = data
        self._chunk = chunk
        self.reads = 0

    async def read_chunk(self, size: int = 8192) -> bytes:
        self.reads += 1
        piece, self._data = self._data[:min(size, self._chunk)], self._data[min(size, self._chunk):]
        return piece


def test_a_part_lands_whole_with_its_sha256_and_size(tmp_path: Path, run: Callable[..., Any]) -> None:
    data = b"number,status\n+390645678901,registered\n" * 50
    part = FakePart(data)
    saved = run(save_part(part, "file", tmp_path, budget=len(data)))
    assert saved.field == "file" and saved.name == "answers.csv"
    assert saved.path == tmp_path / "file" / "answers.csv"
    assert saved.path.read_bytes() == data
    assert saved.size == len(data)
    assert saved.sha256 == hashlib.sha256(data).hexdigest()
    # Read in many small pieces, never asked for the whole body at once.
    assert part.reads > len(data) // 7


def test_two_files_of_the_same_name_do_not_meet(tmp_path: Path, run: Callable[..., Any]) -> None:
    first = run(save_part(FakePart(b"+390645678901\n", "list.csv"), "file", tmp_path, budget=100))
    second = run(save_part(FakePart(b"+390212345678\n", "list.csv"), "file2", tmp_path, budget=100))
    assert first.path != second.path
    assert first.path.read_bytes() == b"+390645678901\n"
    assert second.path.read_bytes() == b"+390212345678\n"


def test_over_the_limit_is_refused_and_the_partial_file_deleted(tmp_path: Path, run: Callable[..., Any]) -> None:
    with pytest.raises(UploadTooLarge) as caught:
        run(save_part(FakePart(b"x" * 1000), "file", tmp_path, budget=999))
    assert caught.value.limit == 999
    assert "999 bytes" in str(caught.value)
    assert list((tmp_path / "file").iterdir()) == []
    # Exactly at the limit is still taken.
    saved = run(save_part(FakePart(b"y" * 999), "file", tmp_path, budget=999))
    assert saved.size == 999


@pytest.mark.parametrize(("given", "kept"), [
    ("answers.csv", "answers.csv"),
    (r"C:\Users\ops\Desktop\risposta RPO.csv", "risposta RPO.csv"),
    ("../../etc/passwd", "passwd"),
    ("a\x00b\nc.csv", "a_b_c.csv"),
    ("..", "upload"),
    ("", "upload"),
    (None, "upload"),
    ("x" * 500 + ".csv", "x" * 200),
])
def test_the_uploaded_name_is_its_last_part_without_control_characters(given: str | None, kept: str) -> None:
    assert safe_name(given) == kept


def test_the_default_upload_folder_is_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    root = upload_root(None)
    assert root.parent == tmp_path
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    # Asked again, the same folder.
    assert upload_root(None) == root
    request_dir = new_upload_dir(root)
    assert request_dir.parent == root and stat.S_IMODE(request_dir.stat().st_mode) == 0o700
    (request_dir / "file").mkdir()
    (request_dir / "file" / "a.csv").write_text("x")
    remove_upload_dir(request_dir)
    assert not request_dir.exists()
    remove_upload_dir(request_dir)  # already gone: fine


def test_a_configured_folder_open_to_others_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o755)
    with pytest.raises(UploadError, match=r"open to other users.*chmod 700"):
        upload_root(str(shared))
    made = upload_root(str(tmp_path / "new" / "uploads"))
    assert stat.S_IMODE(made.stat().st_mode) == 0o700
    plain = tmp_path / "file"
    plain.write_text("x")
    with pytest.raises(UploadError, match="not a directory"):
        upload_root(str(plain))


def test_text_fields_are_bounded(run: Callable[..., Any]) -> None:
    assert run(read_field(FakePart(b" 2026-11-20 \n", None), "checked_at")) == "2026-11-20"
    with pytest.raises(UploadError, match="'principal' is longer than"):
        run(read_field(FakePart(b"a" * (MAX_FIELD_BYTES + 1), None), "principal"))
    with pytest.raises(UploadError, match="'kind' is not UTF-8"):
        run(read_field(FakePart(b"\xff\xfe", None), "kind"))
