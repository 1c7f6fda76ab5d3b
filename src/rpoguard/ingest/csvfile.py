"""Reading operators' files: encoding, delimiter, header, per-line errors, and the file's fingerprint.

Every reader yields (line number, fields) and never raises for a bad row: the caller records the row as
a RowProblem with its line number, so one import can report every bad row at once.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import dataclasses
import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypeVar

from rpoguard.db.store import ImportMeta, ImportRejected, Progress, RowProblem, Store
from rpoguard.numbers import NumberError, normalize_for_import
from rpoguard.timeutil import TimeFormatError

T = TypeVar("T")

# A cell longer than this is not a phone number, a date or an evidence reference: reject the row.
MAX_FIELD = 4_096
MAX_PROBLEMS_KEPT = 10_000
# What operators' files are read as unless --encoding says otherwise (a UTF-8 byte-order mark is accepted).
DEFAULT_ENCODING = "utf-8"


# Told about the byte stream of every file read_rows opens, so that a progress display can follow how far
# the reading got (the CLI's, on a terminal); None: nobody watches.
read_observer: ContextVar[Callable[[IO[bytes]], None] | None] = ContextVar("read_observer", default=None)


class BytesRead:
    """How far the readers got through the files they opened, for a progress display: give `opened` to
    read_observer. Updated by the thread that reads, read by another, so each look takes a copy."""

    def __init__(self) -> None:
        self._streams: list[tuple[IO[bytes], int]] = []
        self._lock = threading.Lock()

    def opened(self, stream: IO[bytes]) -> None:
        try:
            size = os.fstat(stream.fileno()).st_size
        except (OSError, ValueError):
            size = 0
        with self._lock:
            self._streams.append((stream, size))

    def total(self) -> int:
        """Bytes read so far; a file already closed counts whole."""
        with self._lock:
            streams = list(self._streams)
        done = 0
        for stream, size in streams:
            try:
                done += size if stream.closed else min(stream.tell(), size)
            except (OSError, ValueError):  # closed meanwhile
                done += size
        return done


class FileError(Exception):
    """The file as a whole cannot be read (missing, unreadable, wrong encoding, no header)."""


@dataclass(frozen=True, slots=True)
class FileInfo:
    path: Path
    size: int
    sha256: str


def fingerprint(path: str | Path) -> FileInfo:
    """Size and SHA-256, read once before the import so a re-import of the same file is recognised."""
    file = Path(path)
    digest = hashlib.sha256()
    try:
        with file.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
        size = file.stat().st_size
    except OSError as exc:
        raise FileError(f"cannot read {path}: {exc.strerror}") from exc
    return FileInfo(file, size, digest.hexdigest())


def encoding_name(text: str) -> str:
    """The canonical name of a text encoding Python knows (`cp1252`, `iso8859-1`, `utf-8`...)."""
    try:
        info = codecs.lookup(text)
    except LookupError:
        raise ValueError(f"unknown encoding {text!r} (e.g. utf-8, cp1252, latin-1, utf-16)") from None
    # codecs also holds bytes-to-bytes and text-to-text transforms (base64, rot13): no file is written in them.
    if not getattr(info, "_is_text_encoding", True):
        raise ValueError(f"{text!r} is not a text encoding (e.g. utf-8, cp1252, latin-1, utf-16)")
    return info.name


_LABELS = {"utf-8": "UTF-8", "cp1252": "Windows-1252", "iso8859-1": "Latin-1", "utf-16": "UTF-16",
           "utf-16-le": "UTF-16", "utf-16-be": "UTF-16", "utf-32": "UTF-32"}
# Byte-order marks, longest first (UTF-32 LE's starts with UTF-16 LE's).
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
_SAMPLE = 1 << 16
_UTF8 = ("utf-8", "utf-8-sig")


def _label(name: str) -> str:
    return _LABELS.get(name, name)


def _bom_encoding(raw: bytes) -> str | None:
    return next((name for bom, name in _BOMS if raw.startswith(bom)), None)


def guess_encoding(sample: bytes, not_this: str) -> tuple[str, str] | None:
    """(encoding, how to say it) a file's bytes most likely are in, other than `not_this`, or None. A
    heuristic for the error message, never used to read a file: the operator chooses with --encoding."""
    found: str | None = _bom_encoding(sample)
    how = "it starts with a byte-order mark"
    even, odd = sample[0::2].count(0), sample[1::2].count(0)
    lopsided = max(even, odd) > len(sample) // 4 and min(even, odd) * 8 <= max(even, odd)
    if found is None and len(sample) >= 16 and lopsided:
        # Text of ASCII letters and digits in UTF-16: every other byte is NUL.
        found, how = ("utf-16-le" if odd > even else "utf-16-be"), "every other byte is NUL"
    if found is None and max(sample, default=0) >= 0x80:
        try:
            codecs.getincrementaldecoder("utf-8")().decode(sample, final=False)
            found, how = "utf-8", "its accented letters are UTF-8"
        except UnicodeDecodeError:
            if not_this != "cp1252" and any(0x80 <= b <= 0x9F for b in sample):
                # Bytes that are curly quotes, the euro sign and dashes in Windows-1252, control codes in Latin-1.
                found, how = "cp1252", "what Excel saves in Italy"
            else:
                found, how = "iso8859-1", "accented letters one byte each"
    if found is None or found == not_this or (found in _UTF8 and not_this in _UTF8):
        return None
    return found, f"{_label(found)} ({how})"


def _use_encoding(name: str) -> str:
    return "latin-1" if name == "iso8859-1" else name


def _locate_decode_error(path: str | Path, encoding: str) -> tuple[int, int, bytes]:
    """(line, byte offset, the bytes around it) of the first byte `encoding` cannot decode. Found by decoding
    the raw bytes again: the text reader decodes ahead of the CSV reader, so its position is not the line's."""
    codec = "utf-8" if encoding in _UTF8 else encoding
    decoder = codecs.getincrementaldecoder(codec)()
    newlines = consumed = 0
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(1 << 20)
            state = decoder.getstate()
            try:
                text = decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as exc:
                data = state[0] + chunk
                probe = codecs.getincrementaldecoder(codec)()
                probe.setstate((b"", state[1]))
                before = probe.decode(data[:exc.start])
                offset = consumed - len(state[0]) + exc.start
                return newlines + before.count("\n") + 1, offset, data[exc.start:exc.end]
            if not chunk:
                return newlines + 1, consumed, b""
            newlines += text.count("\n")
            consumed += len(chunk)


def _decode_error(path: str | Path, encoding: str) -> FileError:
    line, offset, bad = _locate_decode_error(path, encoding)
    with open(path, "rb") as fh:
        start = fh.read(_SAMPLE)
        fh.seek(max(0, offset - 4096))
        around = fh.read(8192)
    # Whole lines only, so that the guess never judges a character cut in two.
    start = start if len(start) < _SAMPLE else start[:start.rfind(b"\n") + 1]
    around = around[around.find(b"\n") + 1:] if offset > 4096 else around
    sample = start + around
    shown = " ".join(f"0x{b:02X}" for b in bad[:4]) or "end of file"
    return FileError(f"{path}: line {line}, byte offset {offset} ({shown}): not {_label(encoding)} text; "
                     + _advice(sample, encoding))


def _advice(sample: bytes, encoding: str) -> str:
    guess = guess_encoding(sample, encoding)
    if guess is None:
        return "give the file's encoding with --encoding, or save it as UTF-8 CSV"
    name, how = guess
    if name in _UTF8:
        return f"looks like {how}: read it as UTF-8 (the default, without --encoding)"
    return f"looks like {how}: use --encoding {_use_encoding(name)}"


def _check_start(path: str | Path, raw: bytes, encoding: str) -> None:
    """Refuse a file whose first bytes show it is in another encoding than the one it is read in, where
    reading it would not fail but give wrong text: UTF-16 read byte by byte, UTF-8 read as Windows-1252."""
    bom = _bom_encoding(raw)
    if bom is not None and not (bom == encoding or (bom in _UTF8 and encoding in _UTF8)
                                or encoding.startswith(bom)):
        raise FileError(f"{path}: starts with a {_label(bom)} byte-order mark, so it is not {_label(encoding)} "
                        "text; " + _advice(raw, encoding))
    if bom is None and not encoding.startswith("utf-16") and not encoding.startswith("utf-32"):
        guess = guess_encoding(raw, encoding)
        if guess is not None and (guess[0].startswith("utf-16") or guess[0] in _UTF8):
            raise FileError(f"{path}: not {_label(encoding)} text; " + _advice(raw, encoding))


def _delimiter(sample: str) -> str:
    """The separator of a CSV: the commonest of comma, semicolon (Excel in Italy) and tab; a comma when none."""
    counts = {d: sample.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def read_rows(path: str | Path, problems: list[RowProblem],
              encoding: str = DEFAULT_ENCODING) -> Iterator[tuple[int, list[str]]]:
    """Yield (line number, stripped fields) of every non-empty row; bad rows go to `problems`. `encoding`
    is a name encoding_name accepts; UTF-8 also reads a file that starts with a byte-order mark."""
    csv.field_size_limit(MAX_FIELD * 4)
    codec = "utf-8-sig" if encoding in _UTF8 else encoding
    try:
        with open(path, "rb") as raw:
            _check_start(path, raw.read(_SAMPLE), encoding)
        fh = open(path, encoding=codec, newline="")  # noqa: SIM115 - closed in finally
    except OSError as exc:
        raise FileError(f"cannot read {path}: {exc.strerror}") from exc
    observer = read_observer.get()
    if observer is not None:
        observer(fh.buffer)
    try:
        sample = fh.read(8192)
        fh.seek(0)
        reader = csv.reader(fh, delimiter=_delimiter(sample), strict=True)
        line = 0
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                line = reader.line_num
                problems.append(RowProblem(line, f"malformed CSV: {exc}"))
                continue
            line = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            bad = next((c for c in row if "\x00" in c or len(c) > MAX_FIELD), None)
            if bad is not None:
                what = "a NUL byte" if "\x00" in bad else f"a field longer than {MAX_FIELD} characters"
                problems.append(RowProblem(line, f"row contains {what}"))
                continue
            yield line, [cell.strip() for cell in row]
    except UnicodeDecodeError:
        raise _decode_error(path, encoding) from None
    finally:
        fh.close()


def require_clean(problems: list[RowProblem], skip_invalid: bool) -> None:
    """Called after the last row: with bad rows and no --skip-invalid, abort so nothing lands."""
    if problems and not skip_invalid:
        raise ImportRejected(problems)


def normalize_cell(value: str) -> str:
    """A number from an operator's file, as E.164; raises ValueError with a reason for the row."""
    try:
        return normalize_for_import(value).e164
    except NumberError as exc:
        raise ValueError(str(exc)) from None


# How often counted() reports: often enough for a page that reloads every few seconds, rarely enough to cost nothing.
COUNT_EVERY = 10_000


def counted(records: Iterator[T], meta: ImportMeta, progress: Progress | None) -> Iterator[T]:
    """The records as the store reads them, telling `progress` the rows read so far (good and rejected),
    as the store itself does for RPO answers; unchanged without a progress hook (the CLI's imports)."""
    if progress is None:
        return records

    def counting() -> Iterator[T]:
        read = 0
        for record in records:
            read += 1
            if read % COUNT_EVERY == 0:
                progress(read + len(meta.rejected))
            yield record
        progress(read + len(meta.rejected))

    return counting()


def meta_for(kind: str, info: FileInfo, **extra: object) -> ImportMeta:
    return ImportMeta(kind=kind, file_name=info.path.name, file_size=info.size, sha256=info.sha256,
                      **extra)  # type: ignore[arg-type]


def header_records(path: str | Path, meta: ImportMeta, required: tuple[str, ...], optional: tuple[str, ...],
                   build: Callable[[Callable[[str], str]], T], skip_invalid: bool,
                   encoding: str = DEFAULT_ENCODING) -> Iterator[T]:
    """Records from a CSV whose first line names its columns. `build(cell)` makes one record, where
    `cell(name)` is the row's value for a column ('' when absent); a ValueError rejects the row."""
    columns: dict[str, int] | None = None
    for line, fields in read_rows(path, meta.rejected, encoding):
        if columns is None:
            names = [f.lower() for f in fields]
            missing = [c for c in required if c not in names]
            if missing:
                raise FileError(f"{path}: line {line}: the header must name the columns {', '.join(required)} "
                                f"(optional: {', '.join(optional) or 'none'}); missing: {', '.join(missing)}")
            unknown = [n for n in names if n not in required + optional]
            if unknown:
                raise FileError(f"{path}: line {line}: unknown column(s) {', '.join(unknown)}")
            columns = {name: i for i, name in enumerate(names)}
            continue

        def cell(name: str, fields: list[str] = fields, columns: dict[str, int] = columns) -> str:
            index = columns.get(name)
            return fields[index] if index is not None and index < len(fields) else ""

        try:
            for name in required:
                if not cell(name):
                    raise ValueError(f"{name} is empty")
            record = build(cell)
        except (ValueError, TimeFormatError) as exc:
            meta.rejected.append(RowProblem(line, str(exc)))
            continue
        # Records that carry their line let the store name a row it refuses (a consent restated otherwise).
        yield dataclasses.replace(record, line=line) if hasattr(record, "line") else record  # type: ignore[type-var]
    if columns is None:
        if meta.rejected:
            # Every line was unreadable (a UTF-16 file shows as NUL bytes): say so, not "empty".
            raise FileError(f"{path}: no readable header line; {meta.rejected[0]} (save the file as UTF-8 CSV "
                            f"with a header naming {', '.join(required)})")
        raise FileError(f"{path}: empty file; expected a header line naming {', '.join(required)}")
    require_clean(meta.rejected, skip_invalid)


async def existing_principals(store: Store, path: str | Path, encoding: str = DEFAULT_ENCODING) -> set[str]:
    """The principals a headed CSV names that exist: looked up once each, before the write transaction."""
    names: set[str] = set()
    column: int | None = None
    # A first look at the file, not the import's reading: a progress display follows the import's pass.
    with unobserved():
        for _line, fields in read_rows(path, [], encoding):
            if column is None:
                lowered = [f.lower() for f in fields]
                if "principal" not in lowered:
                    return set()
                column = lowered.index("principal")
                continue
            if column < len(fields) and fields[column]:
                names.add(fields[column])
    return {name for name in names if await store.get_principal(name) is not None}


@contextlib.contextmanager
def unobserved() -> Iterator[None]:
    """Files read meanwhile are not shown to the read_observer."""
    token = read_observer.set(None)
    try:
        yield
    finally:
        read_observer.reset(token)


def known_principal(name: str, known: set[str]) -> str:
    if name not in known:
        raise ValueError(f"principal {name[:40]!r} does not exist; add it with 'rpoguard principal add'")
    return name
