"""The `rpoguard` command (architecture.md §4). Exit codes: 0 success / ALLOW, 1 BLOCK (or a broken audit
chain), 2 a usage or data error, with a message that names what and where."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import dataclasses
import gc
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from rpoguard import __version__
from rpoguard.agi.ari import AriClient, AriGate, AriOptions
from rpoguard.agi.routes import build_routes
from rpoguard.agi.server import FastAgiServer, serve_until_signalled
from rpoguard.agi.stdio import serve_stdio
from rpoguard.anchor import (
    DEFAULT_LOG_INTERVAL,
    AnchorError,
    AnchorReport,
    AnchorWriter,
    load_key,
    report_lines,
    verify_anchored,
    writer_from_config,
)
from rpoguard.audit import VerifyReport, export_rows
from rpoguard.config import EVENT_LOOPS, MAX_PORT, Config, ConfigError, load_config
from rpoguard.constants import ALLOW, SOURCE_CLI, reason_text
from rpoguard.db import open_store
from rpoguard.db.store import (
    CONTRACT_CORRECTED,
    CONTRACT_ENDED,
    CONTRACT_RECORDED,
    CONTRACT_UNCHANGED,
    FILE_ONLY,
    RPO_CLEANSED_LIST,
    RPO_REGISTERED_LIST,
    ConsentRecord,
    EvidenceItem,
    ImportRejected,
    ImportResult,
    ImportSummary,
    RowProblem,
    Store,
    StoreError,
)
from rpoguard.db.supervisor import SupervisedStore
from rpoguard.db.urls import display_name
from rpoguard.gate import CallRequest, Gate, GateError, Verdict
from rpoguard.ingest import consents as consent_import
from rpoguard.ingest import contracts as contract_import
from rpoguard.ingest import directory as directory_import
from rpoguard.ingest import optouts as optout_import
from rpoguard.ingest import plausible
from rpoguard.ingest import registry as registry_import
from rpoguard.ingest.csvfile import DEFAULT_ENCODING, FileError, encoding_name, read_observer
from rpoguard.ingest.scrub import scrub
from rpoguard.numbers import NumberError, national_form, normalize, normalize_caller_id
from rpoguard.outfile import OutputError, open_output
from rpoguard.policy import CampaignFacts
from rpoguard.timeutil import ROME, TimeFormatError, human, iso, parse_date, parse_time, to_us

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_BLOCK = 1
EXIT_ERROR = 2
# What a shell reports for a program stopped by SIGINT (Ctrl-C) or SIGPIPE (its reader went away).
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141
MAX_PROBLEMS_PRINTED = 200


class UsageError(Exception):
    """Bad arguments or data the operator can fix; printed without a traceback, exit 2."""


# -- argument types -------------------------------------------------------------------------------------

def _time_arg(text: str) -> datetime:
    try:
        return parse_time(text)
    except TimeFormatError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _date_arg(text: str) -> Any:
    try:
        return parse_date(text)
    except TimeFormatError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _encoding_arg(text: str) -> str:
    try:
        return encoding_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _int_from(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} must be {minimum} or more")
        return value

    return parse


_positive_int = _int_from(1)
_non_negative_int = _int_from(0)


def _port(text: str) -> int:
    port = _non_negative_int(text)
    if port > MAX_PORT:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0..{MAX_PORT}; 0 picks a free one)")
    return port


def _number(text: str) -> str:
    try:
        return normalize(text).e164
    except NumberError as exc:
        raise UsageError(str(exc)) from None


def _caller_id(text: str) -> str:
    try:
        return normalize_caller_id(text)
    except NumberError as exc:
        raise UsageError(f"caller ID: {exc}") from None


# -- commands -------------------------------------------------------------------------------------------

async def cmd_principal_add(args: argparse.Namespace, store: Store, config: Config) -> int:
    caller_ids = [_caller_id(c) for c in args.caller_id or ()]
    before = await store.get_principal(args.id)
    created = await store.add_principal(args.id, args.name, caller_ids)
    info = await store.get_principal(args.id)
    assert info is not None
    print(f"principal {args.id} {'added' if created else 'updated'}: {info.name}; declared caller IDs: "
          f"{', '.join(info.caller_ids) or 'none (every call will be blocked with caller_id_invalid)'}")
    if before is not None:
        # Configuration, not a fact in time: it is updated, and the operator is told what changed.
        if before.name != info.name:
            print(f"  was: {before.name}")
        added = [c for c in info.caller_ids if c not in before.caller_ids]
        if added:
            print(f"  caller ID(s) added: {', '.join(added)} (declared caller IDs are only ever added)")
    return EXIT_OK


async def cmd_campaign_add(args: argparse.Namespace, store: Store, config: Config) -> int:
    if (args.max_attempts is None) != (args.per_days is None):
        raise UsageError("--max-attempts and --per-days go together (N calls per D days)")
    before = await store.get_campaign(args.id)
    await store.add_campaign(args.id, args.principal, args.automated, args.max_attempts, args.per_days)
    after = await store.get_campaign(args.id)
    assert after is not None
    print(f"campaign {args.id} {'added' if before is None else 'updated'}: {_describe_campaign(after)}")
    if before is not None and _describe_campaign(before) != _describe_campaign(after):
        # Re-running `campaign add` replaces every setting: say what changed, since it matters legally.
        print(f"  was: {_describe_campaign(before)}")
    return EXIT_OK


def _describe_campaign(campaign: CampaignFacts) -> str:
    kind = "automated" if campaign.automated else "with live operators"
    cap = (f", at most {campaign.max_attempts} call(s) per {campaign.per_days} day(s) per number"
           if campaign.max_attempts else ", no attempt cap")
    return f"principal {campaign.principal_id}, {kind}{cap}"


def _print_import(summary: ImportSummary, problems: list[RowProblem], what: str) -> None:
    if summary.already_imported:
        print(f"{what}: this file was already imported (import #{summary.import_id}); nothing changed")
        return
    _print_problems(problems, stored=True)
    details = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in summary.detail.items())
    print(f"{what}: import #{summary.import_id}: {summary.rows_read} row(s) read, {summary.rows_stored} stored, "
          f"{summary.rows_rejected} rejected{'; ' + details if details else ''}")
    for file in summary.files:
        print(f"  {_describe_file(file.role, file.name, file.size, file.sha256)}")
    for note in summary.notes:
        print(f"  note: {note}")


def _describe_file(role: str, name: str, size: int | None, sha256: str | None) -> str:
    """One input file of an import: its role (for a two-list answer), name, size and SHA-256, each only when
    known (an import stored before files were kept one by one may lack a size)."""
    parts = [f"{'' if role == FILE_ONLY else role + ' '}file {name}"]
    if size is not None:
        parts.append(f"{size} bytes")
    if sha256:
        parts.append(f"sha256 {sha256}")
    return ", ".join(parts)


def _print_problems(problems: Sequence[RowProblem], stored: bool) -> None:
    for problem in problems[:MAX_PROBLEMS_PRINTED]:
        print(f"  {'skipped' if stored else 'bad row'}: {problem}", file=sys.stderr)
    if len(problems) > MAX_PROBLEMS_PRINTED:
        print(f"  ... and {len(problems) - MAX_PROBLEMS_PRINTED} more", file=sys.stderr)


def _report_import(args: argparse.Namespace, summary: ImportSummary, problems: list[RowProblem], what: str,
                   **context: object) -> None:
    """Every import's outcome: with --json one object on standard output (`context` adds the command's
    own fields); else _print_import's lines, of which -q keeps only the rows skipped."""
    if args.json:
        print(json.dumps(_import_json(summary, problems, context), ensure_ascii=False))
    elif args.quiet:
        if not summary.already_imported:
            _print_problems(problems, stored=True)
    else:
        _print_import(summary, problems, what)


def _import_json(summary: ImportSummary, problems: Sequence[RowProblem],
                 context: dict[str, object]) -> dict[str, object]:
    return {
        "import_id": summary.import_id,
        "already_imported": summary.already_imported,
        "rows_read": summary.rows_read,
        "rows_stored": summary.rows_stored,
        "rows_rejected": summary.rows_rejected,
        "details": summary.detail,
        "notes": summary.notes,
        # The rows --skip-invalid left out, each with its line.
        "rejected": [] if summary.already_imported else [{"line": p.line, "problem": p.message} for p in problems],
        **context,
    }


async def _rpo_principal(store: Store, given: str | None) -> str:
    """The principal whose RPO answers a command reads or stores: --principal, or the only one there is.
    Answers differ between data controllers, so with several principals no default is safe."""
    principals = await store.principal_ids()
    if given is not None:
        if given not in principals:
            raise UsageError(f"principal {given!r} does not exist; add it with 'rpoguard principal add'")
        return given
    if len(principals) == 1:
        return principals[0]
    if not principals:
        raise UsageError("no principal exists yet: RPO answers belong to the principal (data controller) that "
                         "consulted the RPO; add it first with 'rpoguard principal add ID --name NAME'")
    raise UsageError(f"--principal is required: {len(principals)} principals exist ({', '.join(principals)}) and "
                     "each consults the RPO for itself (a citizen may lift the opposition for some of them only)")


async def cmd_registry_import(args: argparse.Namespace, store: Store, config: Config) -> int:
    plausible.rpo_checked_at(args.checked_at)
    lists = [flag for flag, given in (("--submitted", args.submitted), ("--registered", args.registered),
                                      ("--cleansed", args.cleansed)) if given]
    if args.file and lists:
        raise UsageError(f"give either FILE or --submitted with --registered or --cleansed, not both (FILE and "
                         f"{' '.join(lists)})")
    if args.registered and args.cleansed:
        raise UsageError("give --registered (the registered numbers) or --cleansed (the cleaned list), not both")
    if not args.file and not (args.submitted and (args.registered or args.cleansed)):
        raise UsageError("give the RPO answer FILE, or --submitted with --registered or --cleansed")
    if not args.file and args.skip_invalid and not args.quiet:
        # Not an error (a script may always pass it), but never in effect: see ImportRejected.skippable.
        print("rpoguard: --skip-invalid does not apply to a two-list answer: absence from a list proves nothing "
              "unless both lists are read whole", file=sys.stderr)
    principal = await _rpo_principal(store, args.principal)
    expired = plausible.expired_on_arrival(args.checked_at, config.rpo_validity_days)
    if expired is not None:
        print(f"rpoguard: warning: {expired}", file=sys.stderr)
    started = time.monotonic()
    with _Progress("importing RPO answers", [args.file, args.submitted, args.registered, args.cleansed],
                   args.quiet) as progress:
        read = {"encoding": args.encoding, "validity_days": config.rpo_validity_days}
        if args.file:
            summary, problems = await registry_import.import_csv(store, args.file, args.checked_at, principal,
                                                                 args.skip_invalid, progress, **read)
        else:
            form, answer_list = ((RPO_REGISTERED_LIST, args.registered) if args.registered
                                 else (RPO_CLEANSED_LIST, args.cleansed))
            summary, problems = await registry_import.import_lists(store, args.submitted, answer_list, form,
                                                                   args.checked_at, principal, progress, **read)
    seconds = time.monotonic() - started
    _report_import(args, summary, problems, f"RPO answers checked at {human(args.checked_at)}",
                   principal=principal, checked_at=iso(args.checked_at), seconds=round(seconds, 3))
    if args.json or args.quiet:
        return EXIT_OK
    print(f"  answers of principal {principal}: its decisions read them, no other principal's do")
    if not summary.already_imported:
        print(f"  {seconds:.1f} s")
    return EXIT_OK


def _megabytes(count: float) -> str:
    return f"{count / 1e6:,.1f} MB"


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _on_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False


class _Progress:
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
        self.mode = "off" if quiet else "bar" if _on_terminal(self.stream) else "plain"
        self.started = time.monotonic()
        self._streams: list[tuple[IO[bytes], int]] = []
        self._lock = threading.Lock()
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

    def _opened(self, stream: IO[bytes]) -> None:
        try:
            size = os.fstat(stream.fileno()).st_size
        except (OSError, ValueError):
            size = 0
        with self._lock:
            self._streams.append((stream, size))

    def done(self) -> int:
        """Bytes read so far; a file already closed counts whole."""
        with self._lock:
            streams = list(self._streams)
        done = 0
        for stream, size in streams:
            try:
                done += size if stream.closed else min(stream.tell(), size)
            except (OSError, ValueError):  # closed meanwhile
                done += size
        return min(done, self.total) if self.total else done

    def __enter__(self) -> _Progress:
        if self.mode == "off":
            return self
        self._token = read_observer.set(self._opened)
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


async def cmd_directory_import(args: argparse.Namespace, store: Store, config: Config) -> int:
    replace = not args.append
    with _Progress("importing directory listings", [args.file], args.quiet):
        summary, problems = await directory_import.import_file(store, args.file, replace, args.skip_invalid,
                                                               args.listed_at, args.allow_empty,
                                                               encoding=args.encoding, column=args.column)
    _report_import(args, summary, problems, "directory listings",
                   listed_at=iso(args.listed_at) if args.listed_at else None, replace=replace)
    if replace and not summary.already_imported and not (args.json or args.quiet):
        detail = summary.detail
        print(f"  listings: {detail.get('newly_listed', 0)} started, {detail.get('still_listed', 0)} kept, "
              f"{detail.get('ended', 0)} ended (an ended listing stays in the evidence as a period, with the "
              f"import that ended it)")
    return EXIT_OK


async def cmd_consent_add(args: argparse.Namespace, store: Store, config: Config) -> int:
    if not args.evidence.strip():
        raise UsageError("--evidence must name where the proof of consent is kept")
    if args.expires_at is not None and args.expires_at <= args.given_at:
        raise UsageError("--expires-at must be after --given-at")
    plausible.not_in_future(args.given_at, "--given-at")
    record = ConsentRecord(_number(args.number), args.principal, args.given_at, args.evidence.strip(),
                           args.automated, args.expires_at, args.purpose)
    consent_id, created = await store.add_consent(record)
    print(f"consent #{consent_id} {'recorded' if created else 'was already recorded'}: {record.number} to "
          f"{record.principal_id} from {human(record.given_at)}"
          f"{' (covers automated calls)' if record.automated else ''}")
    return EXIT_OK


async def cmd_consent_revoke(args: argparse.Namespace, store: Store, config: Config) -> int:
    number = _number(args.number)
    at = args.at or datetime.now(UTC)
    plausible.not_in_future(at, "--at")
    if await store.get_principal(args.principal) is None:
        raise UsageError(f"principal {args.principal!r} does not exist")
    revocations = await store.revoke_consents(number, args.principal, at)
    if not revocations:
        print(f"no consent of {number} to {args.principal} was given by {human(at)} and not expired then")
    for done in revocations:
        what = f"consent #{done.consent_id} of {number} to {args.principal}"
        if done.first:
            print(f"{what} revoked at {human(at)}")
            continue
        # The first revocation stands: a later one is noted beside it, never substituted.
        first = human(done.revoked_at)
        line = f"{what}: already revoked at {first}; this revocation (at {human(at)}) noted"
        if done.effective_at < done.revoked_at:
            line += (f"; it names an earlier moment, so decisions count the consent revoked from "
                     f"{human(done.effective_at)}")
        print(line)
    return EXIT_OK


def _csv_import(importer: Callable[[Store, str, bool, str], Awaitable[ImportResult]], what: str) -> Handler:
    """The handler of a `... import FILE [--skip-invalid]` command for headed CSV records."""

    async def handler(args: argparse.Namespace, store: Store, config: Config) -> int:
        with _Progress(f"importing {what}", [args.file], args.quiet):
            summary, problems = await importer(store, args.file, args.skip_invalid, args.encoding)
        _report_import(args, summary, problems, what)
        return EXIT_OK

    return handler


cmd_consent_import = _csv_import(consent_import.import_file, "consents")
cmd_contract_import = _csv_import(contract_import.import_file, "contracts")
cmd_optout_import = _csv_import(optout_import.import_file, "opt-outs")


async def cmd_contract_add(args: argparse.Namespace, store: Store, config: Config) -> int:
    if args.end is not None and args.end < args.start:
        raise UsageError("--end is before --start")
    plausible.not_in_future(args.start, "--start")
    number = _number(args.number)
    done = await store.add_contract(number, args.principal, args.start, args.end)
    what = f"contract #{done.contract_id}: {number} with {args.principal} from {args.start.isoformat()}"
    asked = args.end.isoformat() if args.end else None
    before = done.end_before.isoformat() if done.end_before else None
    effective = done.effective_end.isoformat() if done.effective_end else None
    if done.outcome == CONTRACT_RECORDED:
        print(f"{what} recorded{' to ' + asked if asked else ' (running)'}")
    elif done.outcome == CONTRACT_UNCHANGED:
        print(f"{what} was already recorded{' to ' + before if before else ' (running)'}; nothing changed")
    elif done.outcome == CONTRACT_ENDED:
        print(f"{what}: end {asked} recorded (it was running)")
    elif done.outcome == CONTRACT_CORRECTED:
        print(f"{what}: already ended {before}; end {asked} noted as a correction beside the record; it is "
              f"earlier, so decisions use it")
    else:
        # A later end, or none, would save consents for longer: noted for the evidence, never used.
        print(f"{what}: already ended {before}; {'end ' + asked if asked else 'no end'} noted beside the record, "
              f"not used (an end is never moved later or removed; decisions use {effective}; a renewal is a new "
              "contract with its own --start)")
    return EXIT_OK


async def cmd_registry_due(args: argparse.Namespace, store: Store, config: Config) -> int:
    if args.campaign:
        campaign = await store.get_campaign(args.campaign)
        if campaign is None:
            raise UsageError(f"campaign {args.campaign!r} does not exist")
        principal = campaign.principal_id
    else:
        principal = await _rpo_principal(store, args.principal)
    now = datetime.now(UTC)
    # A result is still good at `horizon` only if checked after horizon - validity (wall clock, Rome),
    # the same arithmetic as the decision's rule 5.
    horizon = now.astimezone(ROME) + timedelta(days=args.within)
    stale_before = horizon - timedelta(days=config.rpo_validity_days)
    problems: list[RowProblem] = []
    candidates = (registry_import.numbers_from_list(args.source, problems, args.encoding, args.column)
                  if args.source else None)
    count = 0
    with _output(args.output) as out:
        async with contextlib.aclosing(store.due_numbers(candidates, principal, args.campaign, stale_before)) as due:
            async for number in due:
                if args.json:
                    out.write(json.dumps({"number": number, "national": national_form(number),
                                          "principal": principal}) + "\n")
                else:
                    out.write((national_form(number) if args.national else number) + "\n")
                count += 1
    _print_problems(problems, stored=False)
    if args.quiet:
        return EXIT_ERROR if problems else EXIT_OK
    scope = (f"the numbers of {args.source}" if args.source else
             f"the numbers of campaign {args.campaign}" if args.campaign else "every number rpoguard knows")
    print(f"{count} number(s) for principal {principal} to submit to the RPO ({scope}: no valid answer of its "
          f"own, or one that expires within {args.within} day(s)) written to {args.output or 'standard output'}",
          file=sys.stderr)
    return EXIT_ERROR if problems else EXIT_OK


async def cmd_evidence(args: argparse.Namespace, store: Store, config: Config) -> int:
    number = _number(args.number)
    if args.principal and await store.get_principal(args.principal) is None:
        raise UsageError(f"principal {args.principal!r} does not exist")
    items = await store.evidence(number, args.principal)
    if args.json:
        print(json.dumps({"number": number, "principal": args.principal, "generated_at": iso(datetime.now(UTC)),
                          "items": [{"time": iso(i.at), "kind": i.kind, "principal": i.principal_id, **i.detail}
                                    for i in items]}, ensure_ascii=False))
        return EXIT_OK
    print(f"Evidence for {number}{' and principal ' + args.principal if args.principal else ''}: "
          f"{len(items)} record(s), oldest first (times in Europe/Rome)")
    for item in items:
        print(f"{human(item.at)}  {_describe_evidence(_humanised(item))}")
    return EXIT_OK


def _humanised(item: EvidenceItem) -> EvidenceItem:
    """The item with its stored moments (ISO 8601 UTC, as in --json) shown as a person reads them."""
    return dataclasses.replace(item, detail={k: _human_text(v) if k.endswith("_at") else v
                                             for k, v in item.detail.items()})


def _human_text(value: object) -> object:
    if not isinstance(value, str) or not value.endswith("Z"):
        return value
    try:
        return human(parse_time(value))
    except TimeFormatError:
        return value


def _describe_evidence(item: EvidenceItem) -> str:
    """One evidence item as a line; a value that is absent is left out, never printed as None."""
    d = item.detail
    who = f" [{item.principal_id}]" if item.principal_id else ""
    if item.kind == "rpo_answer":
        status = "REGISTERED" if d["registered"] else "not registered"
        since = f" since {d['registered_at']}" if d.get("registered_at") else ""
        whose = (f" obtained by [{item.principal_id}]" if item.principal_id else
                 " of controller unknown (stored before answers had a principal: no decision uses it; import "
                 "it again with --principal)")
        return f"RPO answer{whose}: {status}{since} (result #{d['result_id']}, {_describe_import(d)})"
    if item.kind == "directory_listing":
        until = f" until {d['ended_at']}" if d.get("ended_at") else " (still listed)"
        return f"listed in the public directory{until} ({_describe_import(d)})"
    if item.kind == "directory_listing_ended":
        return (f"no longer listed in the public directory: "
                f"{_describe_import(d, 'ended_by_import_id', 'ended_by_files')} replaced the listings without it"
                f"{', imported ' + str(d['ended_by_imported_at']) if d.get('ended_by_imported_at') else ''} "
                f"(listed since {_describe_import(d)})")
    if item.kind == "consent":
        extra = "".join(f", {k.replace('_', ' ')} {d[k]}" for k in ("expires_at", "revoked_at") if d.get(k))
        auto = ", covers automated calls" if d["automated"] else ""
        purpose = f", purpose {d['purpose']}" if d.get("purpose") else ""
        source = f" ({_describe_import(d)})" if d.get("import_id") is not None else ""
        return f"consent #{d['consent_id']}{who}: evidence {d['evidence']}{purpose}{auto}{extra}{source}"
    if item.kind == "contract":
        return f"contract #{d['contract_id']}{who}: from {d['start']}{' to ' + d['end'] if d['end'] else ' (running)'}"
    if item.kind in ("consent_revoked", "consent_revoked_again", "contract_ended", "contract_end_corrected"):
        return _describe_note(item)
    if item.kind == "optout":
        reference = f", reference {d['reference']}" if d.get("reference") else ""
        return f"refusal #{d['optout_id']} for {d['covers']} (source {d['source']}{reference})"
    reasons = ",".join(d["reasons"]) or "-"
    caller = f"caller ID {d['caller_id']}" if d.get("caller_id") is not None else "caller ID not checked"
    uniqueid = f" {d['uniqueid']}" if d.get("uniqueid") else ""
    recorded = f", recorded {d['recorded_at']}" if d.get("recorded_at") else ""
    return (f"decision {str(d['decision']).upper()}{who} campaign {d['campaign_id']}: reasons {reasons}, "
            f"basis {d['basis'] or '-'}, {caller}, {d['source']}{uniqueid} "
            f"(log row {d['seq']}{recorded}, id {d['decision_id']})")


def _describe_import(d: dict[str, object], id_key: str = "import_id", files_key: str = "files") -> str:
    """`import #N` and its input files, each with its own name, size and SHA-256."""
    files = d.get(files_key)
    described = "; ".join(
        _describe_file(str(f["role"]), str(f["name"]), f.get("size"), f.get("sha256")) for f in files
    ) if isinstance(files, list) else ""
    return f"import #{d.get(id_key)}{': ' + described if described else ''}"


def _describe_note(item: EvidenceItem) -> str:
    """A note recorded beside a consent or a contract (their records are never changed)."""
    d = item.detail
    who = f" [{item.principal_id}]" if item.principal_id else ""
    by = (f"by {_describe_import(d)}" if d.get("import_id") is not None else f"by the command line ({d['source']})")
    if item.kind == "consent_revoked":
        return f"consent #{d['consent_id']}{who} revoked from {d['revoked_at']} (recorded {by})"
    if item.kind == "consent_revoked_again":
        effect = (f"it names an earlier moment, so decisions count the consent revoked from {d['revoked_at']}"
                  if d.get("earlier") else "the first revocation stands")
        return (f"consent #{d['consent_id']}{who}: revocation from {d['revoked_at']} noted, already revoked from "
                f"{d['first_revoked_at']}; {effect} (recorded {by})")
    if item.kind == "contract_ended":
        return f"contract #{d['contract_id']}{who}: end {d['end']} recorded, it was running (recorded {by})"
    asked = f"end {d['end']}" if d.get("end") else "no end"
    effect = ("it is earlier, so decisions use it" if d.get("earlier") else
              "not used: an end is never moved later or removed")
    return (f"contract #{d['contract_id']}{who}: {asked} noted, already ended {d['recorded_end']}; {effect} "
            f"(recorded {by})")


async def cmd_optout_add(args: argparse.Namespace, store: Store, config: Config) -> int:
    number = _number(args.number)
    at = args.at or datetime.now(UTC)
    plausible.not_in_future(at, "--at")
    optout_id = await store.add_optout(number, args.principal, at, SOURCE_CLI, None)
    print(f"opt-out #{optout_id} recorded: {number} refuses calls from "
          f"{args.principal or 'every principal'} from {human(at)}")
    return EXIT_OK


# -- what is stored: `principal|campaign|consent|contract|optout list` ------------------------------------

# The first rows set the table's column widths; a longer value further down only pushes its own line out.
TABLE_SAMPLE = 500

Column = tuple[str, Callable[[Any], object]]


def _when(moment: datetime | None) -> str | None:
    """A stored moment for people: Europe/Rome with its offset, to the second."""
    return human(moment) if moment is not None else None


def _cell(value: object) -> str:
    """One table cell on one line: operators' text (evidence, names, references) may hold line breaks or
    terminal control characters, shown escaped."""
    text = "-" if value is None or value == "" else str(value)
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


async def _write_table(rows: AsyncIterator[Any], columns: Sequence[Column], out: IO[str]) -> int:
    """An aligned table with a header, written as the rows come (a large table is never held whole)."""
    widths: list[int] = []
    pending: list[list[str]] = []

    def emit(cells: Sequence[str]) -> None:
        out.write("  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip() + "\n")

    def start() -> None:
        headings = [heading for heading, _ in columns]
        widths.extend(max(len(cells[i]) for cells in [headings, *pending]) for i in range(len(columns)))
        emit(headings)
        for cells in pending:
            emit(cells)
        pending.clear()

    count = 0
    async for row in rows:
        count += 1
        cells = [_cell(value(row)) for _, value in columns]
        if widths:
            emit(cells)
            continue
        pending.append(cells)
        if len(pending) == TABLE_SAMPLE:
            start()
    if pending:
        start()
    return count


async def _listing(args: argparse.Namespace, rows: AsyncIterator[Any], noun: str, columns: Sequence[Column],
                   record: Callable[[Any], dict[str, object]]) -> int:
    """Text: the table and a count line; --json: one object a record (JSON Lines), nothing else."""
    if args.json:
        async for row in rows:
            sys.stdout.write(json.dumps(record(row), ensure_ascii=False) + "\n")
        return EXIT_OK
    count = await _write_table(rows, columns, sys.stdout)
    limited = f" (the first {count}: --limit)" if args.limit is not None and count == args.limit else ""
    print(f"{count} {noun}(s){limited}")
    return EXIT_OK


async def _known_principal(store: Store, principal: str | None) -> str | None:
    """A --principal filter must name a principal: a typo would list nothing and look like "none stored"."""
    if principal is not None and await store.get_principal(principal) is None:
        raise UsageError(f"principal {principal!r} does not exist")
    return principal


def _iso_opt(moment: datetime | None) -> str | None:
    return iso(moment) if moment is not None else None


async def cmd_principal_list(args: argparse.Namespace, store: Store, config: Config) -> int:
    return await _listing(args, store.list_principals(limit=args.limit), "principal", (
        ("ID", lambda p: p.id), ("NAME", lambda p: p.name), ("CALLER IDS", lambda p: ",".join(p.caller_ids)),
        ("ADDED", lambda p: _when(p.created_at)),
    ), lambda p: {"id": p.id, "name": p.name, "caller_ids": list(p.caller_ids), "created_at": iso(p.created_at)})


async def cmd_campaign_list(args: argparse.Namespace, store: Store, config: Config) -> int:
    principal = await _known_principal(store, args.principal)
    return await _listing(args, store.list_campaigns(principal_id=principal, limit=args.limit), "campaign", (
        ("ID", lambda c: c.id), ("PRINCIPAL", lambda c: c.principal_id),
        ("AUTOMATED", lambda c: "yes" if c.automated else "no"),
        ("ATTEMPT CAP", lambda c: f"{c.max_attempts} per {c.per_days} day(s)" if c.max_attempts else None),
        ("ADDED", lambda c: _when(c.created_at)),
    ), lambda c: {"id": c.id, "principal": c.principal_id, "automated": c.automated,
                  "max_attempts": c.max_attempts, "per_days": c.per_days, "created_at": iso(c.created_at)})


async def cmd_consent_list(args: argparse.Namespace, store: Store, config: Config) -> int:
    rows = store.list_consents(number=_number(args.number) if args.number else None,
                               principal_id=await _known_principal(store, args.principal),
                               in_force_at=args.in_force_at, revoked=args.revoked, limit=args.limit)
    return await _listing(args, rows, "consent", (
        ("ID", lambda c: c.id), ("NUMBER", lambda c: c.number), ("PRINCIPAL", lambda c: c.principal_id),
        ("GIVEN", lambda c: _when(c.given_at)), ("EXPIRES", lambda c: _when(c.expires_at)),
        ("REVOKED", lambda c: _when(c.revoked_at)), ("AUTOMATED", lambda c: "yes" if c.automated else "no"),
        ("EVIDENCE", lambda c: c.evidence), ("PURPOSE", lambda c: c.purpose),
    ), lambda c: {"id": c.id, "number": c.number, "principal": c.principal_id, "given_at": iso(c.given_at),
                  "expires_at": _iso_opt(c.expires_at), "revoked_at": _iso_opt(c.revoked_at),
                  "automated": c.automated, "evidence": c.evidence, "purpose": c.purpose, "import_id": c.import_id,
                  "created_at": iso(c.created_at)})


async def cmd_contract_list(args: argparse.Namespace, store: Store, config: Config) -> int:
    rows = store.list_contracts(number=_number(args.number) if args.number else None,
                                principal_id=await _known_principal(store, args.principal),
                                running_at=args.running_at, limit=args.limit)
    return await _listing(args, rows, "contract", (
        ("ID", lambda k: k.id), ("NUMBER", lambda k: k.number), ("PRINCIPAL", lambda k: k.principal_id),
        ("START", lambda k: k.start.isoformat()), ("END", lambda k: k.end.isoformat() if k.end else "running"),
    ), lambda k: {"id": k.id, "number": k.number, "principal": k.principal_id, "start": k.start.isoformat(),
                  "end": k.end.isoformat() if k.end else None, "created_at": iso(k.created_at)})


async def cmd_optout_list(args: argparse.Namespace, store: Store, config: Config) -> int:
    rows = store.list_optouts(number=_number(args.number) if args.number else None,
                              principal_id=await _known_principal(store, args.principal), since=args.since,
                              limit=args.limit)
    return await _listing(args, rows, "refusal", (
        ("ID", lambda o: o.id), ("NUMBER", lambda o: o.number),
        ("PRINCIPAL", lambda o: o.principal_id or "every principal"), ("AT", lambda o: _when(o.at)),
        ("SOURCE", lambda o: o.source), ("REFERENCE", lambda o: o.reference),
    ), lambda o: {"id": o.id, "number": o.number, "principal": o.principal_id, "at": iso(o.at), "source": o.source,
                  "reference": o.reference, "created_at": iso(o.created_at)})


def _check_json(verdict: Verdict, call: CallRequest, at: datetime, recorded: bool, principal: str | None,
                evidence: dict[str, object], validity_days: int) -> dict[str, object]:
    return {
        "decision": verdict.decision,
        "reasons": list(verdict.reasons),
        "basis": verdict.basis,
        "number": verdict.number,
        "campaign": call.campaign_id,
        "principal": principal,
        "decision_id": verdict.decision_id,
        "recorded": recorded,
        "at": iso(at),
        "caller_id_checked": call.caller_id is not None,
        "explanations": {code: reason_text(code, validity_days) for code in verdict.reasons},
        "evidence": evidence,
    }


async def cmd_check(args: argparse.Namespace, store: Store, config: Config) -> int:
    gate = Gate(store, config)
    # A recorded decision is always for the moment it is made: with --at the check is a simulation, never
    # recorded and never counted in an attempt cap (a decision dated another day would be false evidence,
    # and one dated ahead would use up tomorrow's attempts).
    simulated = args.at is not None
    at = args.at or datetime.now(UTC)
    call = CallRequest(raw_number=args.number, campaign_id=args.campaign, caller_id=args.caller_id,
                       source=SOURCE_CLI)
    decision, facts = await gate.evaluate(call, at)
    if args.dry_run or simulated:
        verdict = Verdict(decision.decision, decision.reasons, facts.number, None, decision.basis)
    else:
        verdict = await gate.record(call, decision, facts, at)
    principal = facts.campaign.principal_id if facts.campaign else None
    recorded = verdict.decision_id is not None
    if args.json:
        print(json.dumps(_check_json(verdict, call, at, recorded, principal, decision.evidence,
                                      config.rpo_validity_days), ensure_ascii=False))
    else:
        _print_check(verdict, call, at, recorded, principal, simulated, config.rpo_validity_days)
    return EXIT_OK if verdict.decision == ALLOW else EXIT_BLOCK


def _print_check(verdict: Verdict, call: CallRequest, at: datetime, recorded: bool, principal: str | None,
                 simulated: bool, validity_days: int) -> None:
    word = "ALLOW" if verdict.decision == ALLOW else "BLOCK"
    print(f"{word} {verdict.number or call.raw_number!s} for campaign {call.campaign_id}"
          f"{' (principal ' + principal + ')' if principal else ''} at {human(at)}")
    if verdict.basis:
        print(f"  basis: {verdict.basis}")
    for code in verdict.reasons:
        print(f"  {code}: {reason_text(code, validity_days)}")
    if call.caller_id is None:
        print("  caller ID not checked (give --caller-id to check rule 10, as the gate always does)")
    if recorded:
        print(f"  decision {verdict.decision_id} recorded in the audit log")
    elif simulated:
        print(f"  simulation as of {human(at)}: not recorded")
    else:
        print("  not recorded (dry run)")


@contextlib.contextmanager
def _output(path: str | None) -> Iterator[IO[str]]:
    """Standard output (no -o, or -), else by rpoguard.outfile's rules: a regular file appears only complete
    (a failed run leaves the previous file); a device or FIFO is written directly, never replaced."""
    try:
        with open_output(path) as out:
            yield out
    except OutputError as exc:
        raise UsageError(str(exc)) from None


async def cmd_scrub(args: argparse.Namespace, store: Store, config: Config) -> int:
    if await store.get_campaign(args.campaign) is None:
        # Before any row: every row would only say unknown_campaign.
        raise UsageError(f"campaign {args.campaign!r} does not exist; add it with 'rpoguard campaign add'")
    gate = Gate(store, config)
    at = args.at or datetime.now(UTC)
    # No progress while the results stream onto the same screen: the bar would garble them.
    hidden = args.quiet or (args.output is None and _on_terminal(sys.stdout))
    with _output(args.output) as out, _Progress("scrubbing", [args.file], hidden):
        summary = await scrub(gate, args.file, args.campaign, at, out, json_lines=args.json,
                              encoding=args.encoding, column=args.column)
    _print_problems(summary.problems, stored=False)
    if args.quiet:
        return EXIT_ERROR if summary.problems else EXIT_OK
    reasons = ", ".join(f"{code} {n}" for code, n in summary.reasons.most_common())
    unread = f"; {len(summary.problems)} unreadable row(s) listed above" if summary.problems else ""
    if summary.column is not None and summary.column.columns > 1:
        print(f"scrub: numbers read from {summary.column.describe()}", file=sys.stderr)
    print(f"scrub for campaign {args.campaign} at {human(at)}: {summary.rows} number(s), "
          f"{summary.allowed} allowed, {summary.rows - summary.allowed} blocked"
          f"{' (' + reasons + ')' if reasons else ''}; caller ID not checked; nothing recorded{unread}",
          file=sys.stderr)
    return EXIT_ERROR if summary.problems else EXIT_OK


def _anchor_options(args: argparse.Namespace, config: Config) -> tuple[str | None, bytes | None]:
    """The anchor file and key: the options, else the configuration ([audit])."""
    path = args.anchors or config.audit.anchor_file
    # The configured key also for another file: an off-machine copy is signed with the same key.
    key_file = args.anchor_key or config.audit.anchor_key_file
    if key_file and not path:
        raise UsageError("--anchor-key checks the lines of an anchor file: give --anchors FILE too")
    return path, load_key(key_file) if key_file else None


async def cmd_audit_verify(args: argparse.Namespace, store: Store, config: Config) -> int:
    path, key = _anchor_options(args, config)
    try:
        async with contextlib.aclosing(store.audit_rows()) as rows:
            chain, anchors = await verify_anchored(rows, path, key)
    except AnchorError as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        print(json.dumps(_verify_json(chain, anchors), ensure_ascii=False))
    else:
        for line in report_lines(chain, anchors):
            print(line)
    return EXIT_OK if chain.intact and (anchors is None or anchors.intact) else EXIT_BLOCK


def _verify_json(chain: VerifyReport, anchors: AnchorReport | None) -> dict[str, object]:
    """`audit verify --json`: the chain walk and, when an anchor file was checked, what it proved."""
    anchor_part: dict[str, object] | None = None
    if anchors is not None:
        last = anchors.last
        anchor_part = {
            "file": anchors.path,
            "intact": anchors.intact,
            "lines": anchors.lines,
            "matched": anchors.matched,
            "hmac_checked": anchors.keyed,
            "unchecked_hmacs": anchors.unchecked_macs,
            "last": {"line": last.line, "row": last.seq, "hash": last.hash, "at": last.at} if last else None,
            # Rows after the last anchor: covered by the hash chain only.
            "unanchored_rows": anchors.unanchored,
            "complete": anchors.log_end is not None,
            "problems": [{"line": p.line or None, "row": p.seq, "problem": p.problem} for p in anchors.problems],
        }
    return {
        "intact": chain.intact and (anchors is None or anchors.intact),
        "rows": chain.rows,
        "head": chain.head_hash,
        "problems": [{"row": p.seq, "problem": p.problem} for p in chain.problems],
        # null: no anchor file was checked, so rows removed from the end or a rewritten chain cannot show.
        "anchors": anchor_part,
    }


async def cmd_audit_anchor(args: argparse.Namespace, store: Store, config: Config) -> int:
    path, key = _anchor_options(args, config)
    if not path:
        raise UsageError("no anchor file: give --anchors FILE or set [audit] anchor_file")
    # Anchoring a log that does not verify would vouch for the tampering.
    try:
        async with contextlib.aclosing(store.audit_rows()) as rows:
            chain, anchors = await verify_anchored(rows, path, key, missing_ok=True)
    except AnchorError as exc:
        raise UsageError(str(exc)) from None
    if not chain.intact or (anchors is not None and not anchors.intact):
        for line in report_lines(chain, anchors):
            print(line)
        print(f"not anchored: the log does not verify against {path}")
        return EXIT_BLOCK
    if chain.rows == 0:
        print("the audit log is empty: nothing to anchor")
        return EXIT_OK
    # This command's anchor writer, so that the head also goes to the system log like the gate's.
    writer = AnchorWriter(path, key, DEFAULT_LOG_INTERVAL)
    try:
        written = writer.append(chain.rows, chain.head_hash)
    except OSError as exc:
        raise UsageError(f"cannot append to anchor file {path}: {exc}") from None
    writer.log_head(chain.rows, chain.head_hash)
    print(f"{'anchored' if written else 'already anchored (by this or a later row)'}: row {chain.rows} "
          f"head {chain.head_hash} in {path}{' with HMAC' if key else ''}")
    return EXIT_OK


async def cmd_audit_export(args: argparse.Namespace, store: Store, config: Config) -> int:
    start = to_us(args.since) if args.since else None
    end = to_us(args.until) if args.until else None
    with _output(args.output) as out:
        # Closed here, before the store: a reader that went away must not leave the query half read.
        async with contextlib.aclosing(store.audit_rows(start, end)) as rows:
            count = await export_rows(rows, out, args.format)
    if args.output and not args.quiet:
        print(f"{count} decision(s) written to {args.output}", file=sys.stderr)
    return EXIT_OK


async def _supervised_store(config: Config) -> SupervisedStore:
    """The servers open the database themselves, under supervision: they start and stay up without one,
    blocking every call with engine_error until the database is (back) in place."""
    supervised = SupervisedStore.for_database(config.db, anchor=writer_from_config(config.audit, config.db))
    await supervised.start()
    return supervised


async def cmd_serve(args: argparse.Namespace, store: Store | None, config: Config) -> int:
    supervised = await _supervised_store(config)
    try:
        return await _serve(args, supervised, config)
    finally:
        await supervised.close()


async def _serve(args: argparse.Namespace, store: SupervisedStore, config: Config) -> int:
    serve = config.serve
    server = FastAgiServer(
        build_routes(Gate(store, config)),
        host=args.host or serve.host,
        port=serve.port if args.port is None else args.port,
        session_deadline=serve.session_deadline,
        max_connections=serve.max_connections,
        allowed_clients=serve.allowed_clients,
    )
    try:
        await server.start()
    except OSError as exc:
        # A busy port, a privileged one, an address this machine does not have: the operator's to fix.
        raise UsageError(f"cannot listen on {args.host or serve.host}:{serve.port if args.port is None else args.port}:"
                         f" {os.strerror(exc.errno).lower() if exc.errno else exc}") from None
    # Everything loaded so far (phonenumbers' metadata, holidays, compiled regexes) lives as long as the
    # server: moving it out of the collector's reach keeps garbage collections short during calls.
    gc.collect()
    gc.freeze()
    log.warning("rpoguard %s: FastAGI gate listening on %s:%d (database %s, event loop %s)", __version__,
                args.host or serve.host, server.port, display_name(config.db),
                type(asyncio.get_running_loop()).__module__.split(".")[0])
    await serve_until_signalled(server)
    log.warning("rpoguard stopped")
    return EXIT_OK


ENV_ARI_PASSWORD = "RPOGUARD_ARI_PASSWORD"  # noqa: S105 (the name of a variable, not a password)


def _ari_password(args: argparse.Namespace, config: Config) -> str:
    """--password, else RPOGUARD_ARI_PASSWORD, else [ari] password_file, else [ari] password."""
    if args.password is not None:
        return str(args.password)
    from_env = os.environ.get(ENV_ARI_PASSWORD)
    if from_env:
        return from_env
    ari = config.ari
    if ari.password_file:
        try:
            text = Path(ari.password_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot read the ARI password file {ari.password_file}: {exc.strerror}") from exc
        # One line; a trailing newline from an editor is not part of the password.
        password = text.rstrip("\r\n")
        if not password:
            raise UsageError(f"the ARI password file {ari.password_file} is empty")
        return password
    if ari.password:
        return ari.password
    raise UsageError(f"no ARI password: set {ENV_ARI_PASSWORD}, [ari] password_file in the config, or --password")


async def cmd_ari(args: argparse.Namespace, store: Store | None, config: Config) -> int:
    ari = config.ari
    user = args.user or ari.user
    if not user:
        raise UsageError("no ARI user: give --user or set [ari] user in the config (a user of Asterisk's ari.conf)")
    try:
        client = AriClient(args.url or ari.url, user, _ari_password(args, config))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    options = AriOptions(app=args.app or ari.app, decision_deadline=ari.decision_deadline,
                         reconnect_max=ari.reconnect_max)
    if not options.app or "," in options.app:
        raise UsageError(f"--app {options.app!r}: must be a non-empty name without commas")
    # As `serve`: the database is opened under supervision, so a missing one blocks with engine_error.
    supervised = await _supervised_store(config)
    gate = AriGate(client, Gate(supervised, config), options)
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    for signum in signals:
        loop.add_signal_handler(signum, gate.stop)
    log.warning("rpoguard %s: ARI gate for Stasis(%s,...) on %s as %s (database %s)", __version__, options.app,
                client.base, user, config.db)
    try:
        await gate.run()
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
        await client.close()
        await supervised.close()
    log.warning("rpoguard ari stopped")
    return EXIT_OK


async def cmd_db_migrate(args: argparse.Namespace, store: Store, config: Config) -> int:
    # Opening the store brought the schema up to date; a second run changes nothing.
    version = await store.schema_version()  # type: ignore[attr-defined]
    print(f"database {display_name(config.db)}: "
          f"schema up to date (version {version})")
    return EXIT_OK


async def cmd_db_copy(args: argparse.Namespace, store: Store | None, config: Config) -> int:
    from rpoguard.db.copy import copy_database  # noqa: PLC0415 -- only this command needs it

    source = args.source or config.db
    report = await copy_database(source, args.target)
    where = display_name(args.target)
    for table, count in report.counts.items():
        print(f"{table}: {count} row(s)")
    print(f"copied to {where}; decision log: {report.target_chain.rows} row(s), head "
          f"{report.target_chain.head_hash}, {'intact' if report.target_chain.intact else 'NOT INTACT'} "
          "(as in the source)")
    return EXIT_OK


async def cmd_agi(args: argparse.Namespace, store: Store, config: Config) -> int:
    # The AGI arguments also arrive as agi_arg_N in the environment, where the route reads them; the copies
    # Asterisk puts on the command line are ignored so that a value starting with '-' cannot break parsing.
    return await serve_stdio(build_routes(Gate(store, config)), args.route,
                             session_deadline=config.serve.session_deadline)


# -- parser ---------------------------------------------------------------------------------------------

Handler = Callable[[argparse.Namespace, Store, Config], Awaitable[int]]

DESCRIPTION = """\
rpoguard decides, before an outbound marketing call leaves the PBX, whether Italian law lets it go:
the RPO (Registro Pubblico delle Opposizioni) answers you imported, consents, contracts, refusals,
calling hours and caller ID. Every decision is recorded as evidence.

Typical order: principal add -> campaign add -> registry import / directory import / consent add
-> check or scrub. Numbers may be written +39..., 0039..., 39..., 06..., 3..., with spaces or dashes.
Times are ISO 8601 (2026-11-28 or 2026-11-28T14:30); without an offset they mean Europe/Rome."""


class _CommandParser(argparse.ArgumentParser):
    """Every parser of the command tree takes the global options, so they may come before or after the
    command: `rpoguard --db X consent list` and `rpoguard consent list --db X`. Below the top their default
    is SUPPRESS: a (sub)command that does not repeat one leaves the value given before it alone, and one
    given after the command wins. argparse makes the subcommands' parsers of this class too."""

    def __init__(self, *args: Any, top: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        unset: Any = None if top else argparse.SUPPRESS
        flag: Any = False if top else argparse.SUPPRESS
        options = self.add_argument_group("global options (before or after the command)")
        options.add_argument("--db", default=unset,
                             help="database file, or postgresql://user:pass@host/db for several PBXs (env "
                                  "RPOGUARD_DB; default ./rpoguard.db, created by the first command that stores "
                                  "data; commands that only read never create one)")
        options.add_argument("--config", default=unset, help="TOML configuration file (env RPOGUARD_CONFIG)")
        options.add_argument("-v", "--verbose", action="store_true", default=flag,
                             help="log what happens on standard error")
        options.add_argument("-q", "--quiet", action="store_true", default=flag,
                             help="no progress, summaries or notes; errors, results and the rows a command "
                                  "lists still print")


def _json_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--json", action="store_true", help=f"print {what} as JSON")


def _list_command(where: argparse._SubParsersAction[argparse.ArgumentParser], handler: Handler,
                  help_text: str) -> argparse.ArgumentParser:
    """A `... list` command: what is stored, as an aligned table or JSON Lines."""
    sub = where.add_parser("list", help=help_text, description=help_text + ". Times in Europe/Rome; with --json "
                           "one object a line, numbers in E.164, times in UTC (ISO 8601).")
    sub.set_defaults(handler=handler)
    sub.add_argument("--limit", type=_positive_int, metavar="N", help="at most N rows")
    sub.add_argument("--json", action="store_true", help="one JSON object a line (JSON Lines) instead of a table")
    return sub


def build_parser() -> argparse.ArgumentParser:
    parser = _CommandParser(prog="rpoguard", description=DESCRIPTION,
                            formatter_class=argparse.RawDescriptionHelpFormatter, top=True)
    parser.add_argument("--version", action="version", version=f"rpoguard {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def group(name: str, help_text: str) -> argparse._SubParsersAction[argparse.ArgumentParser]:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        return sub.add_subparsers(dest="action", metavar="ACTION", required=True)

    def command(where: argparse._SubParsersAction[argparse.ArgumentParser], name: str, handler: Handler,
                help_text: str) -> argparse.ArgumentParser:
        sub = where.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    principals = group("principal", "the companies you call for (the data controller, 'committente')")
    p = command(principals, "add", cmd_principal_add, "add or update a principal and the caller IDs it declared")
    p.add_argument("id", metavar="ID", help="short name used by campaigns, e.g. acme")
    p.add_argument("--name", required=True, help="the principal's legal name")
    p.add_argument("--caller-id", action="append", metavar="NUMBER",
                   help="a caller ID declared to the ROC/AGCOM for this principal (repeat for several)")
    _list_command(principals, cmd_principal_list, "list the principals and their declared caller IDs")

    campaigns = group("campaign", "campaigns: which principal, automated or not, attempt cap")
    p = command(campaigns, "add", cmd_campaign_add, "add or update a campaign")
    p.add_argument("id", metavar="ID", help="the campaign name the dialplan passes, e.g. spring26")
    p.add_argument("--principal", required=True, metavar="ID", help="the principal the campaign calls for")
    p.add_argument("--automated", action="store_true",
                   help="calls without a live operator (robocalls): every number then needs consent")
    p.add_argument("--max-attempts", type=_positive_int, metavar="N", help="at most N allowed calls per number...")
    p.add_argument("--per-days", type=_positive_int, metavar="D", help="...in any D days (with --max-attempts)")
    p = _list_command(campaigns, cmd_campaign_list, "list the campaigns with their principal and attempt cap")
    p.add_argument("--principal", metavar="ID", help="only this principal's campaigns")

    registry = group("registry", "answers from the Registro Pubblico delle Opposizioni (RPO)")
    p = command(registry, "import", cmd_registry_import,
                "import the RPO's answer for the numbers a principal submitted; each answer is valid 15 days "
                "(or the shorter [policy] rpo_validity_days) and serves only that principal's campaigns")
    p.add_argument("file", nargs="?", metavar="FILE",
                   help="CSV number,status[,registered_at]; status registered/not_registered (also 1/0, Y/N, "
                        "iscritto/non_iscritto)")
    p.add_argument("--submitted", metavar="FILE", help="the list you sent to the RPO (one number a line)")
    p.add_argument("--registered", metavar="FILE",
                   help="the RPO's list of registered numbers; every other submitted number is not registered")
    p.add_argument("--cleansed", metavar="FILE",
                   help="the RPO's cleaned list (the numbers that may be called); every other submitted number "
                        "is registered")
    p.add_argument("--principal", metavar="ID",
                   help="the principal (data controller) that consulted the RPO; required when more than one "
                        "principal exists")
    p.add_argument("--checked-at", required=True, type=_time_arg, metavar="DATE",
                   help="when the RPO checked the list (a date alone means 00:00 Europe/Rome)")
    p.add_argument("--skip-invalid", action="store_true", help="import the good rows and report the bad ones "
                   "(default: a file with any bad row is rejected whole; never for a two-list answer)")
    _json_option(p, "the import's summary (one object)")
    _encoding_option(p)

    p = command(registry, "due", cmd_registry_due,
                "write the numbers to submit to the RPO: no valid answer, or one that expires soon")
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("--principal", metavar="ID",
                       help="the principal whose answers are due (required when more than one principal exists)")
    scope.add_argument("--campaign", metavar="ID",
                       help="only the numbers of this campaign's calls and its principal's consents and contracts "
                            "(the campaign's principal)")
    p.add_argument("--within", type=_non_negative_int, default=0, metavar="DAYS",
                   help="also numbers whose answer expires within DAYS days (default 0: already expired)")
    p.add_argument("--from", dest="source", metavar="FILE",
                   help="answer for the numbers of this list (one a line, or a CSV's number column) instead of "
                        "every number known")
    _encoding_option(p)
    _column_option(p)
    p.add_argument("-o", "--output", metavar="FILE",
                   help="the file to submit, one number a line (default: standard output; the summary goes to "
                        "standard error)")
    p.add_argument("--national", action="store_true", help="write 0612345678 instead of +390612345678")
    p.add_argument("--json", action="store_true",
                   help="one JSON object a number (JSON Lines): number (E.164), national, principal")

    directory = group("directory", "numbers listed in a public telephone directory (opt-out regime)")
    p = command(directory, "import", cmd_directory_import,
                "import the public-directory numbers; by default the file replaces the previous listings")
    p.add_argument("file", metavar="FILE", help="one number a line, or a CSV (, ; or tab) with a number column")
    p.add_argument("--append", action="store_true", help="add to the current listings instead of replacing them")
    p.add_argument("--listed-at", type=_time_arg, metavar="TIME",
                   help="the date of the directory extract: its listings count from then (default: now). A "
                        "decision as of an earlier moment does not see them")
    p.add_argument("--skip-invalid", action="store_true", help="import the good rows and report the bad ones")
    p.add_argument("--allow-empty", action="store_true",
                   help="accept a file without any number (refused otherwise: replacing the directory with it "
                        "ends every listing)")
    _json_option(p, "the import's summary (one object)")
    _encoding_option(p)
    _column_option(p)

    consents = group("consent", "documented consents to be called (opt-in)")
    p = command(consents, "add", cmd_consent_add, "record one consent")
    p.add_argument("number", metavar="NUMBER")
    p.add_argument("--principal", required=True, metavar="ID", help="whom the consent was given to")
    p.add_argument("--given-at", required=True, type=_time_arg, metavar="TIME", help="when it was given")
    p.add_argument("--evidence", required=True, metavar="REF",
                   help="where the proof is kept (recording id, signed form, web log...)")
    p.add_argument("--automated", action="store_true", help="the consent covers automated calls too")
    p.add_argument("--expires-at", type=_time_arg, metavar="TIME", help="when the consent ends, if it does")
    p.add_argument("--purpose", help="what the consent was given for, as worded to the person")
    p = command(consents, "revoke", cmd_consent_revoke, "revoke the consents of a number to a principal")
    p.add_argument("number", metavar="NUMBER")
    p.add_argument("--principal", required=True, metavar="ID")
    p.add_argument("--at", type=_time_arg, metavar="TIME", help="when it was revoked (default now)")
    p = command(consents, "import", cmd_consent_import,
                "import consents from a CSV with a header: number,principal,given_at,evidence"
                "[,automated,expires_at,purpose]")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--skip-invalid", action="store_true", help="import the good rows and report the bad ones")
    _json_option(p, "the import's summary (one object)")
    _encoding_option(p)
    p = _list_command(consents, cmd_consent_list, "list the consents stored, in the order they were stored")
    p.add_argument("--number", metavar="NUMBER", help="only this number's consents")
    p.add_argument("--principal", metavar="ID", help="only the consents given to this principal")
    p.add_argument("--in-force-at", type=_time_arg, metavar="TIME",
                   help="only those in force then: given by then, neither expired nor revoked by then")
    p.add_argument("--revoked", action="store_true", help="only those that were revoked")

    contracts = group("contract", "contracts for goods or services (consent survives RPO registration "
                                  "while they run and 30 days after)")
    p = command(contracts, "add", cmd_contract_add, "record a contract")
    p.add_argument("number", metavar="NUMBER")
    p.add_argument("--principal", required=True, metavar="ID")
    p.add_argument("--start", required=True, type=_date_arg, metavar="DATE")
    p.add_argument("--end", type=_date_arg, metavar="DATE", help="when it ended (omit while it runs)")

    p = command(contracts, "import", cmd_contract_import,
                "import contracts from a CSV with a header: number,principal,start[,end]")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--skip-invalid", action="store_true", help="import the good rows and report the bad ones")
    _json_option(p, "the import's summary (one object)")
    _encoding_option(p)
    p = _list_command(contracts, cmd_contract_list, "list the contracts stored, in the order they were stored")
    p.add_argument("--number", metavar="NUMBER", help="only this number's contracts")
    p.add_argument("--principal", metavar="ID", help="only the contracts with this principal")
    p.add_argument("--running-at", type=_date_arg, metavar="DATE",
                   help="only those running that day: started by then and not ended before it")

    optouts = group("optout", "refusals: 'do not call me again' (final at once)")
    p = command(optouts, "add", cmd_optout_add, "record a refusal")
    p.add_argument("number", metavar="NUMBER")
    p.add_argument("--principal", metavar="ID", help="the principal refused (default: every principal)")
    p.add_argument("--at", type=_time_arg, metavar="TIME", help="when it was said (default now)")

    p = command(optouts, "import", cmd_optout_import,
                "import refusals from a CSV with a header: number,at[,principal,reference]")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--skip-invalid", action="store_true", help="import the good rows and report the bad ones")
    _json_option(p, "the import's summary (one object)")
    _encoding_option(p)
    p = _list_command(optouts, cmd_optout_list, "list the refusals stored, in the order they were stored")
    p.add_argument("--number", metavar="NUMBER", help="only this number's refusals")
    p.add_argument("--principal", metavar="ID",
                   help="only the refusals that bind this principal: its own and those for every principal")
    p.add_argument("--since", type=_time_arg, metavar="TIME", help="only those said at or after TIME")

    p = commands.add_parser("evidence", help="everything rpoguard knows about one number, for the DPO",
                            description="Everything rpoguard knows about one number, oldest first: RPO answers "
                                        "with each of their files and its hash, directory listing periods, "
                                        "consents, contracts, what was noted about them later (a second "
                                        "revocation, a corrected end), refusals, and every decision with its "
                                        "reasons and the moment it was recorded.")
    p.set_defaults(handler=cmd_evidence)
    p.add_argument("number", metavar="NUMBER")
    p.add_argument("--principal", metavar="ID", help="only what concerns this principal")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = commands.add_parser("check", help="decide one call now and record the decision (--at: a simulation)",
                            description="Decide one call as the gate would, now, and record the decision in the "
                                        "audit log (unless --dry-run). With --at it is a simulation for that "
                                        "moment: never recorded, never counted in an attempt cap. Exit code 0 "
                                        "ALLOW, 1 BLOCK, 2 error.")
    p.set_defaults(handler=cmd_check)
    p.add_argument("number", metavar="NUMBER")
    p.add_argument("--campaign", required=True, metavar="ID")
    p.add_argument("--at", type=_time_arg, metavar="TIME",
                   help="decide as of this moment instead of now: a simulation, never recorded")
    p.add_argument("--caller-id", metavar="NUMBER",
                   help="the caller ID the call would present (rule 10 is checked only when given)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--dry-run", action="store_true", help="do not record the decision in the audit log")

    p = commands.add_parser("scrub", help="pre-check a campaign list; writes a CSV with every decision",
                            description="Decide every number of a list for a campaign, without recording them.")
    p.set_defaults(handler=cmd_scrub)
    p.add_argument("file", metavar="FILE", help="one number a line, or a CSV (, ; or tab) with a number column")
    p.add_argument("--campaign", required=True, metavar="ID")
    p.add_argument("--at", type=_time_arg, metavar="TIME", help="decide for this time instead of now")
    p.add_argument("-o", "--output", metavar="OUT.csv", help="write the results here (default: standard output)")
    p.add_argument("--json", action="store_true",
                   help="one JSON object a number (JSON Lines: line, input, number, decision, reasons, basis, "
                        "campaign, at) instead of CSV")
    _encoding_option(p)
    _column_option(p)

    p = commands.add_parser("serve", help="run the FastAGI gate for Asterisk (127.0.0.1:4573 by default)",
                            description="Run the FastAGI gate. Asterisk asks it before each call with "
                                        "AGI(agi://127.0.0.1:4573/check?campaign=C,NUMBER); see "
                                        "dialplan/rpoguard.conf. "
                                        "Stops cleanly on SIGTERM, finishing the calls in flight.")
    p.set_defaults(handler=cmd_serve)
    p.add_argument("--host", help="address to listen on (default 127.0.0.1; another address needs "
                                  "[serve] allowed_clients in the config: FastAGI has no authentication)")
    p.add_argument("--port", type=_port, help="port to listen on (default 4573)")
    _event_loop_option(p)

    p = commands.add_parser("ari", help="run the ARI gate: a Stasis application deciding like FastAGI's check",
                            description="Run the ARI gate. A channel entering Stasis(APP,NUMBER,CAMPAIGN"
                                        "[,CALLER_ID]) is decided as FastAGI's check decides it: an allowed "
                                        "one continues in the dialplan, a blocked one is hung up with cause "
                                        "21. See rpoguard-check-ari in dialplan/rpoguard.conf. Options "
                                        "default to the [ari] section of the config. Reconnects by itself; "
                                        "stops on SIGTERM.")
    p.set_defaults(handler=cmd_ari)
    p.add_argument("--url", help="Asterisk's HTTP server (http.conf), default http://127.0.0.1:8088")
    p.add_argument("--app", help="the Stasis application name (default rpoguard)")
    _event_loop_option(p)
    p.add_argument("--user", help="an ari.conf user")
    p.add_argument("--password", help=f"its password; better {ENV_ARI_PASSWORD} or [ari] password_file, "
                                      "since a command line is visible to every local user")

    p = commands.add_parser("agi", help="the same routes as a classic AGI program (one process per call)",
                            description="Serve one classic AGI session on standard input/output, for "
                                        "AGI(rpoguard-agi,check,NUMBER,CAMPAIGN) from agi-bin. Slower than "
                                        "'serve': a new process per call.")
    p.set_defaults(handler=cmd_agi)
    p.add_argument("--route", choices=("check", "optout"),
                   help="the route to run (default: the first AGI argument, or the program name rpoguard-ROUTE)")
    p.add_argument("agi_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

    audit = group("audit", "the decision log: verify its hash chain, export it")
    p = command(audit, "verify", cmd_audit_verify,
                "check that no decision was changed, removed, inserted or reordered (exit 1 if so)")
    p.description = (
        "Check that no decision was changed, removed, inserted or reordered: exit 0 intact, 1 if not. The hash "
        "chain alone cannot show rows removed from the end, or a chain rewritten from some row on with every "
        "hash recomputed; the anchor file can. Every anchor line must be well formed, carry a valid HMAC "
        "(with a key), come after the line before it, name a row the log still has, with the hash the log "
        "has for it. An auditor uses a copy of the anchor file taken from where the gate's users cannot "
        "rewrite it, and compares the head printed with the last 'audit chain head' line in the system log "
        "(journalctl -u rpoguard). README: 'What an auditor checks'.")
    p.add_argument("--anchors", metavar="FILE",
                   help="the anchor file to check the log against (default: [audit] anchor_file)")
    p.add_argument("--anchor-key", metavar="FILE",
                   help="the key file its lines are signed with (default: [audit] anchor_key_file); "
                        "without it, forged lines cannot be told apart")
    _json_option(p, "the result (one object: intact, rows, head, problems, anchors)")
    p = command(audit, "anchor", cmd_audit_anchor,
                "verify the log, then append its current head to the anchor file (once after enabling "
                "anchors on an existing log, or from cron to a second anchor file kept elsewhere)")
    p.add_argument("--anchors", metavar="FILE", help="the anchor file (default: [audit] anchor_file)")
    p.add_argument("--anchor-key", metavar="FILE", help="sign the line with this key (default: [audit] "
                                                        "anchor_key_file)")
    p = command(audit, "export", cmd_audit_export, "write decisions as CSV or JSON Lines")
    p.add_argument("--from", dest="since", type=_time_arg, metavar="TIME", help="from this time (inclusive)")
    p.add_argument("--to", dest="until", type=_time_arg, metavar="TIME", help="up to this time (exclusive)")
    p.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    p.add_argument("-o", "--output", metavar="FILE", help="default: standard output")

    database = group("db", "the database itself: schema, moving from SQLite to PostgreSQL")
    command(database, "migrate", cmd_db_migrate,
            "create the database or bring its schema up to date (every command does it on open; this one "
            "does nothing else)")
    p = command(database, "copy", cmd_db_copy,
                "copy everything (principals, campaigns, imports and their files, RPO answers, listings, "
                "consents, contracts, the notes beside them, refusals and the decision log with its hash chain) "
                "into an empty database")
    p.add_argument("--from", dest="source", metavar="URL",
                   help="the database to copy from: a SQLite file or postgresql://... (default: --db)")
    p.add_argument("--to", dest="target", required=True, metavar="URL",
                   help="the empty database to copy into: a SQLite file or postgresql://user:pass@host/db")
    return parser


def _encoding_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--encoding", type=_encoding_arg, default=DEFAULT_ENCODING, metavar="NAME",
                        help="the input files' encoding: utf-8 (default; a byte-order mark is fine), cp1252 "
                             "(Windows-1252, what Excel saves in Italy), latin-1, utf-16...")


def _column_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--column", metavar="NAME|N",
                        help="the column holding the numbers, by its header name or its number from 1 (default: "
                             "the column the header names telefono, cellulare, numero, phone...; else the only "
                             "one holding numbers)")


def _event_loop_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--event-loop", choices=EVENT_LOOPS,
                        help="asyncio's own loop or uvloop (pip install 'rpoguard[uvloop]'); default: [serve] "
                             "event_loop in the config, else asyncio")


def _loop_factory(args: argparse.Namespace, config: Config) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop of a server command; None: asyncio's default. Decided once, before the loop starts."""
    name = getattr(args, "event_loop", None) or config.serve.event_loop
    if args.handler not in (cmd_serve, cmd_ari) or name == "asyncio":
        return None
    try:
        import uvloop  # noqa: PLC0415 -- optional: imported only when chosen
    except ImportError:
        raise ConfigError("event loop uvloop chosen, but uvloop is not installed (pip install "
                          "'rpoguard[uvloop]'), or choose asyncio") from None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


# The commands that store facts or settings create the database on first use; every other command only
# reads (or records decisions, which need the facts first), and on a missing database says so (exit 2).
CREATES_DATABASE: frozenset[Handler] = frozenset({
    cmd_principal_add, cmd_campaign_add, cmd_registry_import, cmd_directory_import, cmd_consent_add,
    cmd_consent_revoke, cmd_consent_import, cmd_contract_add, cmd_contract_import, cmd_optout_add,
    cmd_optout_import, cmd_db_migrate,
})


async def _run(args: argparse.Namespace, config: Config) -> int:
    handler: Handler = args.handler
    if handler in (cmd_serve, cmd_ari, cmd_db_copy):
        # These open their databases themselves (the servers under supervision).
        return await handler(args, None, config)  # type: ignore[arg-type]
    # The decision writer anchors each group commit with it (rpoguard.anchor).
    anchor = writer_from_config(config.audit, config.db)
    async with open_store(config.db, create=handler in CREATES_DATABASE, anchor=anchor) as store:
        return await handler(args, store, config)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        config = load_config(args.config, args.db)
        with asyncio.Runner(loop_factory=_loop_factory(args, config)) as runner:
            return runner.run(_run(args, config))
    except ImportRejected as exc:
        _print_problems(exc.problems, stored=False)
        remedy = ("Fix the rows above, or use --skip-invalid to import the rest." if exc.skippable else
                  "Fix the rows above: a two-list answer is read whole or not at all (--skip-invalid does not "
                  "apply).")
        _error(f"import rejected: {exc}. {remedy}")
    except (UsageError, ConfigError, StoreError, FileError, GateError, ValueError) as exc:
        _error(str(exc))
    except KeyboardInterrupt:
        # Imports and output files are transactions: an interrupted one left the previous state in place.
        _error("interrupted; nothing was changed by the unfinished step")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`| head -1`): stop quietly, as Unix tools do, and keep Python from
        # complaining when it flushes standard output at exit.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except OSError as exc:
        # A file or folder the operator named: missing, unreadable, not writable, a directory...
        where = f" {exc.filename}" if exc.filename else ""
        _error(f"{exc.strerror or exc}:{where}" if where else str(exc.strerror or exc))
    except Exception as exc:
        # A bug, not the operator's mistake: one line, and the traceback for a report with -v.
        log.debug("internal error", exc_info=True)
        _error(f"internal error: {type(exc).__name__}: {exc} (run with -v for the details, and please report it)")
    return EXIT_ERROR


def _error(message: str) -> None:
    with contextlib.suppress(OSError):
        print(f"rpoguard: {message}", file=sys.stderr)


def run() -> None:
    sys.exit(main())


def agi_main() -> int:
    """`rpoguard-agi`: what Asterisk runs from agi-bin; the same as `rpoguard agi`. Its command-line
    arguments are Asterisk's copies of the AGI arguments, read from the environment instead."""
    return main(["agi"])


if __name__ == "__main__":
    run()
