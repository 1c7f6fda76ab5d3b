"""The `rpoguard` command (architecture.md §4). Exit codes: 0 success / ALLOW, 1 BLOCK (or a broken audit
chain), 2 a usage or data error, with a message that names what and where."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
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
    AnchorWriter,
    configure,
    load_key,
    report_lines,
    verify_anchored,
    writer_from_config,
)
from rpoguard.audit import export_rows
from rpoguard.config import EVENT_LOOPS, Config, ConfigError, load_config
from rpoguard.constants import ALLOW, REASON_TEXT, SOURCE_CLI
from rpoguard.db import is_postgres_url, open_store
from rpoguard.db.sqlite import audit_path
from rpoguard.db.store import (
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
from rpoguard.ingest import registry as registry_import
from rpoguard.ingest.csvfile import FileError
from rpoguard.ingest.scrub import scrub
from rpoguard.numbers import NumberError, national_form, normalize, normalize_caller_id
from rpoguard.outfile import OutputError, open_output
from rpoguard.policy import CampaignFacts
from rpoguard.timeutil import ROME, TimeFormatError, iso, parse_date, parse_time, to_us

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_BLOCK = 1
EXIT_ERROR = 2
MAX_PROBLEMS_PRINTED = 200
# How far ahead of this machine's clock a check or an extract may be dated (another machine's clock).
CLOCK_LEEWAY = timedelta(minutes=10)


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
    created = await store.add_principal(args.id, args.name, caller_ids)
    info = await store.get_principal(args.id)
    assert info is not None
    print(f"principal {args.id} {'added' if created else 'updated'}: {info.name}; declared caller IDs: "
          f"{', '.join(info.caller_ids) or 'none (every call will be blocked with caller_id_invalid)'}")
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
    for note in summary.notes:
        print(f"  note: {note}")


def _print_problems(problems: Sequence[RowProblem], stored: bool) -> None:
    for problem in problems[:MAX_PROBLEMS_PRINTED]:
        print(f"  {'skipped' if stored else 'bad row'}: {problem}", file=sys.stderr)
    if len(problems) > MAX_PROBLEMS_PRINTED:
        print(f"  ... and {len(problems) - MAX_PROBLEMS_PRINTED} more", file=sys.stderr)


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
    if args.checked_at > datetime.now(UTC) + CLOCK_LEEWAY:
        # The RPO answered before the file reached us. A check dated later would be ignored by decisions
        # until then (they read answers checked by their own moment), leaving an older "not registered"
        # answer in force; and a mistyped year would keep the answers "fresh" for as long.
        raise UsageError(f"--checked-at {args.checked_at.isoformat()} is in the future")
    lists = [flag for flag, given in (("--submitted", args.submitted), ("--registered", args.registered),
                                      ("--cleansed", args.cleansed)) if given]
    if args.file and lists:
        raise UsageError(f"give either FILE or --submitted with --registered or --cleansed, not both (FILE and "
                         f"{' '.join(lists)})")
    if args.registered and args.cleansed:
        raise UsageError("give --registered (the registered numbers) or --cleansed (the cleaned list), not both")
    if not args.file and not (args.submitted and (args.registered or args.cleansed)):
        raise UsageError("give the RPO answer FILE, or --submitted with --registered or --cleansed")
    if not args.file and args.skip_invalid:
        # Not an error (a script may always pass it), but never in effect: see ImportRejected.skippable.
        print("rpoguard: --skip-invalid does not apply to a two-list answer: absence from a list proves nothing "
              "unless both lists are read whole", file=sys.stderr)
    principal = await _rpo_principal(store, args.principal)
    started = time.monotonic()
    progress = _Progress("rows read")
    try:
        if args.file:
            summary, problems = await registry_import.import_csv(store, args.file, args.checked_at, principal,
                                                                 args.skip_invalid, progress)
        else:
            form, answer_list = ((RPO_REGISTERED_LIST, args.registered) if args.registered
                                 else (RPO_CLEANSED_LIST, args.cleansed))
            summary, problems = await registry_import.import_lists(store, args.submitted, answer_list, form,
                                                                   args.checked_at, principal, progress)
    finally:
        progress.done()
    _print_import(summary, problems, f"RPO answers checked at {args.checked_at.isoformat()}")
    print(f"  answers of principal {principal}: its decisions read them, no other principal's do")
    if not summary.already_imported:
        print(f"  {time.monotonic() - started:.1f} s")
    return EXIT_OK


class _Progress:
    """A one-line counter on standard error during long imports, when a person is watching (a TTY)."""

    INTERVAL = 0.5

    def __init__(self, unit: str) -> None:
        self.unit = unit
        self.shown = False
        self.enabled = sys.stderr.isatty()
        self.next_at = time.monotonic() + self.INTERVAL
        self.started = time.monotonic()

    def __call__(self, count: int) -> None:
        now = time.monotonic()
        if not self.enabled or now < self.next_at:
            return
        self.next_at = now + self.INTERVAL
        rate = count / max(now - self.started, 1e-9)
        print(f"\r  {count:,} {self.unit} ({rate:,.0f}/s)", end="", file=sys.stderr, flush=True)
        self.shown = True

    def done(self) -> None:
        if self.shown:
            print(file=sys.stderr)


async def cmd_directory_import(args: argparse.Namespace, store: Store, config: Config) -> int:
    if args.listed_at is not None and args.listed_at > datetime.now(UTC) + CLOCK_LEEWAY:
        raise UsageError(f"--listed-at {args.listed_at.isoformat()} is in the future")
    summary, problems = await directory_import.import_file(store, args.file, not args.append, args.skip_invalid,
                                                           args.listed_at)
    _print_import(summary, problems, "directory listings")
    return EXIT_OK


async def cmd_consent_add(args: argparse.Namespace, store: Store, config: Config) -> int:
    if not args.evidence.strip():
        raise UsageError("--evidence must name where the proof of consent is kept")
    if args.expires_at is not None and args.expires_at <= args.given_at:
        raise UsageError("--expires-at must be after --given-at")
    record = ConsentRecord(_number(args.number), args.principal, args.given_at, args.evidence.strip(),
                           args.automated, args.expires_at, args.purpose)
    consent_id, created = await store.add_consent(record)
    print(f"consent #{consent_id} {'recorded' if created else 'was already recorded'}: {record.number} to "
          f"{record.principal_id} from {record.given_at.isoformat()}"
          f"{' (covers automated calls)' if record.automated else ''}")
    return EXIT_OK


async def cmd_consent_revoke(args: argparse.Namespace, store: Store, config: Config) -> int:
    number = _number(args.number)
    at = args.at or datetime.now(UTC)
    if await store.get_principal(args.principal) is None:
        raise UsageError(f"principal {args.principal!r} does not exist")
    count = await store.revoke_consents(number, args.principal, at)
    print(f"{count} consent(s) of {number} to {args.principal} revoked at {at.isoformat()}"
          if count else f"no consent of {number} to {args.principal} was in force at {at.isoformat()}")
    return EXIT_OK


def _csv_import(importer: Callable[[Store, str, bool], Awaitable[ImportResult]], what: str) -> Handler:
    """The handler of a `... import FILE [--skip-invalid]` command for headed CSV records."""

    async def handler(args: argparse.Namespace, store: Store, config: Config) -> int:
        summary, problems = await importer(store, args.file, args.skip_invalid)
        _print_import(summary, problems, what)
        return EXIT_OK

    return handler


cmd_consent_import = _csv_import(consent_import.import_file, "consents")
cmd_contract_import = _csv_import(contract_import.import_file, "contracts")
cmd_optout_import = _csv_import(optout_import.import_file, "opt-outs")


async def cmd_contract_add(args: argparse.Namespace, store: Store, config: Config) -> int:
    if args.end is not None and args.end < args.start:
        raise UsageError("--end is before --start")
    number = _number(args.number)
    contract_id, created = await store.add_contract(number, args.principal, args.start, args.end)
    print(f"contract #{contract_id} {'recorded' if created else 'updated'}: {number} with {args.principal} from "
          f"{args.start.isoformat()}{' to ' + args.end.isoformat() if args.end else ' (running)'}")
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
    candidates = registry_import.numbers_from_list(args.source, problems) if args.source else None
    count = 0
    with _output(args.output) as out:
        async for number in store.due_numbers(candidates, principal, args.campaign, stale_before):
            out.write((national_form(number) if args.national else number) + "\n")
            count += 1
    _print_problems(problems, stored=False)
    scope = (f"the numbers of {args.source}" if args.source else
             f"the numbers of campaign {args.campaign}" if args.campaign else "every number rpoguard knows")
    print(f"{count} number(s) for principal {principal} to submit to the RPO ({scope}: no valid answer of its "
          f"own, or one that expires within {args.within} day(s)) written to {args.output}", file=sys.stderr)
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
        print(f"{item.at.astimezone(ROME):%Y-%m-%d %H:%M:%S}  {_describe_evidence(item)}")
    return EXIT_OK


def _describe_evidence(item: EvidenceItem) -> str:
    d = item.detail
    who = f" [{item.principal_id}]" if item.principal_id else ""
    if item.kind == "rpo_answer":
        status = "REGISTERED" if d["registered"] else "not registered"
        since = f" since {d['registered_at']}" if d.get("registered_at") else ""
        whose = (f" obtained by [{item.principal_id}]" if item.principal_id else
                 " of controller unknown (stored before answers had a principal: no decision uses it; import "
                 "it again with --principal)")
        return (f"RPO answer{whose}: {status}{since} (result #{d['result_id']}, import #{d['import_id']} "
                f"{d['file_name']}, {d['file_size']} bytes, sha256 {d['sha256']})")
    if item.kind == "directory_listing":
        until = f" until {d['ended_at']}" if d.get("ended_at") else " (still listed)"
        return (f"listed in the public directory{until} (import #{d['import_id']} {d['file_name']}, "
                f"sha256 {d['sha256']})")
    if item.kind == "directory_listing_ended":
        return (f"no longer listed in the public directory: import #{d['ended_by_import_id']} replaced the "
                f"listings without it (listed since import #{d['import_id']} {d['file_name']})")
    if item.kind == "consent":
        extra = "".join(f", {k.replace('_', ' ')} {d[k]}" for k in ("expires_at", "revoked_at") if d.get(k))
        auto = ", covers automated calls" if d["automated"] else ""
        return f"consent #{d['consent_id']}{who}: evidence {d['evidence']}{auto}{extra}"
    if item.kind == "contract":
        return f"contract #{d['contract_id']}{who}: from {d['start']}{' to ' + d['end'] if d['end'] else ' (running)'}"
    if item.kind == "optout":
        return f"refusal #{d['optout_id']} for {d['covers']} (source {d['source']}, reference {d['reference']})"
    reasons = ",".join(d["reasons"]) or "-"
    return (f"decision {str(d['decision']).upper()}{who} campaign {d['campaign_id']}: reasons {reasons}, "
            f"basis {d['basis'] or '-'}, caller ID {d['caller_id']}, {d['source']} {d['uniqueid'] or ''} "
            f"(log row {d['seq']}, id {d['decision_id']})")


async def cmd_optout_add(args: argparse.Namespace, store: Store, config: Config) -> int:
    number = _number(args.number)
    at = args.at or datetime.now(UTC)
    optout_id = await store.add_optout(number, args.principal, at, SOURCE_CLI, None)
    print(f"opt-out #{optout_id} recorded: {number} refuses calls from "
          f"{args.principal or 'every principal'} from {at.isoformat()}")
    return EXIT_OK


def _check_json(verdict: Verdict, call: CallRequest, at: datetime, recorded: bool, principal: str | None,
                evidence: dict[str, object]) -> dict[str, object]:
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
        "explanations": {code: REASON_TEXT[code] for code in verdict.reasons},
        "evidence": evidence,
    }


async def cmd_check(args: argparse.Namespace, store: Store, config: Config) -> int:
    gate = Gate(store, config)
    at = args.at or datetime.now(UTC)
    call = CallRequest(raw_number=args.number, campaign_id=args.campaign, caller_id=args.caller_id,
                       source=SOURCE_CLI)
    decision, facts = await gate.evaluate(call, at)
    if args.dry_run:
        verdict = Verdict(decision.decision, decision.reasons, facts.number, None, decision.basis)
    else:
        verdict = await gate.record(call, decision, facts, at)
    principal = facts.campaign.principal_id if facts.campaign else None
    recorded = verdict.decision_id is not None
    if args.json:
        print(json.dumps(_check_json(verdict, call, at, recorded, principal, decision.evidence), ensure_ascii=False))
    else:
        _print_check(verdict, call, at, recorded, principal)
    return EXIT_OK if verdict.decision == ALLOW else EXIT_BLOCK


def _print_check(verdict: Verdict, call: CallRequest, at: datetime, recorded: bool, principal: str | None) -> None:
    word = "ALLOW" if verdict.decision == ALLOW else "BLOCK"
    print(f"{word} {verdict.number or call.raw_number!s} for campaign {call.campaign_id}"
          f"{' (principal ' + principal + ')' if principal else ''} at {at.isoformat()}")
    if verdict.basis:
        print(f"  basis: {verdict.basis}")
    for code in verdict.reasons:
        print(f"  {code}: {REASON_TEXT[code]}")
    if call.caller_id is None:
        print("  caller ID not checked (give --caller-id to check rule 10, as the gate always does)")
    print(f"  decision {verdict.decision_id} recorded in the audit log" if recorded
          else "  not recorded (dry run)")


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
    gate = Gate(store, config)
    at = args.at or datetime.now(UTC)
    with _output(args.output) as out:
        summary = await scrub(gate, args.file, args.campaign, at, out)
    _print_problems(summary.problems, stored=False)
    reasons = ", ".join(f"{code} {n}" for code, n in summary.reasons.most_common())
    unread = f"; {len(summary.problems)} unreadable row(s) listed above" if summary.problems else ""
    print(f"scrub for campaign {args.campaign} at {at.isoformat()}: {summary.rows} number(s), "
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
        chain, anchors = await verify_anchored(store.audit_rows(), path, key)
    except AnchorError as exc:
        raise UsageError(str(exc)) from None
    for line in report_lines(chain, anchors):
        print(line)
    return EXIT_OK if chain.intact and (anchors is None or anchors.intact) else EXIT_BLOCK


async def cmd_audit_anchor(args: argparse.Namespace, store: Store, config: Config) -> int:
    path, key = _anchor_options(args, config)
    if not path:
        raise UsageError("no anchor file: give --anchors FILE or set [audit] anchor_file")
    # Anchoring a log that does not verify would vouch for the tampering.
    try:
        chain, anchors = await verify_anchored(store.audit_rows(), path, key, missing_ok=True)
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
    configure(writer)
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
        count = await export_rows(store.audit_rows(start, end), out, args.format)
    if args.output:
        print(f"{count} decision(s) written to {args.output}", file=sys.stderr)
    return EXIT_OK


async def _supervised_store(config: Config) -> SupervisedStore:
    """The servers open the database themselves, under supervision: they start and stay up without one,
    blocking every call with engine_error until the database is (back) in place."""
    data = Path(config.db)
    # PostgreSQL has no files to watch: the pool reconnects by itself, and a failed open is retried.
    paths = [] if is_postgres_url(config.db) else [data, audit_path(data)]
    supervised = SupervisedStore(lambda: open_store(config.db), paths)
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
    await server.start()
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rpoguard", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"rpoguard {__version__}")
    parser.add_argument("--db", help="database file, or postgresql://user:pass@host/db for several PBXs "
                                     "(env RPOGUARD_DB; default ./rpoguard.db, created on first use)")
    parser.add_argument("--config", help="TOML configuration file (env RPOGUARD_CONFIG)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens on standard error")
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

    campaigns = group("campaign", "campaigns: which principal, automated or not, attempt cap")
    p = command(campaigns, "add", cmd_campaign_add, "add or update a campaign")
    p.add_argument("id", metavar="ID", help="the campaign name the dialplan passes, e.g. spring26")
    p.add_argument("--principal", required=True, metavar="ID", help="the principal the campaign calls for")
    p.add_argument("--automated", action="store_true",
                   help="calls without a live operator (robocalls): every number then needs consent")
    p.add_argument("--max-attempts", type=_positive_int, metavar="N", help="at most N allowed calls per number...")
    p.add_argument("--per-days", type=_positive_int, metavar="D", help="...in any D days (with --max-attempts)")

    registry = group("registry", "answers from the Registro Pubblico delle Opposizioni (RPO)")
    p = command(registry, "import", cmd_registry_import,
                "import the RPO's answer for the numbers a principal submitted; each answer is valid 15 days "
                "and serves only that principal's campaigns")
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
                   help="answer for the numbers of this list (one a line) instead of every number known")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="the file to submit, one number a line")
    p.add_argument("--national", action="store_true", help="write 0612345678 instead of +390612345678")

    directory = group("directory", "numbers listed in a public telephone directory (opt-out regime)")
    p = command(directory, "import", cmd_directory_import,
                "import the public-directory numbers; by default the file replaces the previous listings")
    p.add_argument("file", metavar="FILE", help="one number a line (or the first column of a CSV)")
    p.add_argument("--append", action="store_true", help="add to the current listings instead of replacing them")
    p.add_argument("--listed-at", type=_time_arg, metavar="TIME",
                   help="the date of the directory extract: its listings count from then (default: now). A "
                        "decision as of an earlier moment does not see them")
    p.add_argument("--skip-invalid", action="store_true", help="import the good rows and report the bad ones")

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

    optouts = group("optout", "refusals: 'do not call me again' (final at once)")
    p = command(optouts, "add", cmd_optout_add, "record a refusal")
    p.add_argument("number", metavar="NUMBER")
    p.add_argument("--principal", metavar="ID", help="the principal refused (default: every principal)")
    p.add_argument("--at", type=_time_arg, metavar="TIME", help="when it was said (default now)")

    p = command(optouts, "import", cmd_optout_import,
                "import refusals from a CSV with a header: number,at[,principal,reference]")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--skip-invalid", action="store_true", help="import the good rows and report the bad ones")

    p = commands.add_parser("evidence", help="everything rpoguard knows about one number, for the DPO",
                            description="Everything rpoguard knows about one number, oldest first: RPO answers "
                                        "with their files and hashes, directory listing, consents, contracts, "
                                        "refusals, and every decision with its reasons.")
    p.set_defaults(handler=cmd_evidence)
    p.add_argument("number", metavar="NUMBER")
    p.add_argument("--principal", metavar="ID", help="only what concerns this principal")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = commands.add_parser("check", help="decide one call now (or --at a time) and record the decision",
                            description="Decide one call as the gate would. Exit code 0 ALLOW, 1 BLOCK, 2 error.")
    p.set_defaults(handler=cmd_check)
    p.add_argument("number", metavar="NUMBER")
    p.add_argument("--campaign", required=True, metavar="ID")
    p.add_argument("--at", type=_time_arg, metavar="TIME", help="decide for this time instead of now")
    p.add_argument("--caller-id", metavar="NUMBER",
                   help="the caller ID the call would present (rule 10 is checked only when given)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--dry-run", action="store_true", help="do not record the decision in the audit log")

    p = commands.add_parser("scrub", help="pre-check a campaign list; writes a CSV with every decision",
                            description="Decide every number of a list for a campaign, without recording them.")
    p.set_defaults(handler=cmd_scrub)
    p.add_argument("file", metavar="FILE", help="one number a line (or the first column of a CSV)")
    p.add_argument("--campaign", required=True, metavar="ID")
    p.add_argument("--at", type=_time_arg, metavar="TIME", help="decide for this time instead of now")
    p.add_argument("-o", "--output", metavar="OUT.csv", help="write the results here (default: standard output)")

    p = commands.add_parser("serve", help="run the FastAGI gate for Asterisk (127.0.0.1:4573 by default)",
                            description="Run the FastAGI gate. Asterisk asks it before each call with "
                                        "AGI(agi://127.0.0.1:4573/check?campaign=C,NUMBER); see "
                                        "dialplan/rpoguard.conf. "
                                        "Stops cleanly on SIGTERM, finishing the calls in flight.")
    p.set_defaults(handler=cmd_serve)
    p.add_argument("--host", help="address to listen on (default 127.0.0.1; another address needs "
                                  "[serve] allowed_clients in the config: FastAGI has no authentication)")
    p.add_argument("--port", type=int, help="port to listen on (default 4573)")
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
                "copy everything (principals, campaigns, imports, RPO answers, listings, consents, contracts, "
                "refusals and the decision log with its hash chain) into an empty database")
    p.add_argument("--from", dest="source", metavar="URL",
                   help="the database to copy from: a SQLite file or postgresql://... (default: --db)")
    p.add_argument("--to", dest="target", required=True, metavar="URL",
                   help="the empty database to copy into: a SQLite file or postgresql://user:pass@host/db")
    return parser


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


async def _run(args: argparse.Namespace, config: Config) -> int:
    handler: Handler = args.handler
    # Before any store opens: the decision writer anchors each group commit with it (rpoguard.anchor).
    configure(writer_from_config(config.audit, config.db))
    if handler in (cmd_serve, cmd_ari, cmd_db_copy):
        # These open their databases themselves (the servers under supervision).
        return await handler(args, None, config)  # type: ignore[arg-type]
    async with open_store(config.db) as store:
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
        print(f"rpoguard: import rejected: {exc}. {remedy}", file=sys.stderr)
    except (UsageError, ConfigError, StoreError, FileError, GateError, ValueError) as exc:
        print(f"rpoguard: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print("rpoguard: interrupted", file=sys.stderr)
    except BrokenPipeError:
        pass
    return EXIT_ERROR


def run() -> None:
    sys.exit(main())


def agi_main() -> int:
    """`rpoguard-agi`: what Asterisk runs from agi-bin; the same as `rpoguard agi`. Its command-line
    arguments are Asterisk's copies of the AGI arguments, read from the environment instead."""
    return main(["agi"])


if __name__ == "__main__":
    run()
