"""What both backends turn their rows into: the facts of a decision and the items of `rpoguard evidence`.

The SQL differs between SQLite and PostgreSQL; the rows it returns do not, and neither may what the engine
and the evidence report make of them (the legal decision table is proven identical on both). So the
conversions live here once.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from itertools import islice
from typing import Any, TypeVar

from rpoguard.audit import AuditEntry, AuditRow
from rpoguard.bypass.match import Allowed
from rpoguard.constants import ALLOW, FINDING_NOT_WATCHED
from rpoguard.db.store import (
    FACT_CONSENT,
    NOTE_END_CORRECTED,
    NOTE_END_SET,
    NOTE_REVOKED,
    NOTE_REVOKED_AGAIN,
    ConsoleChange,
    EvidenceItem,
    StoredCampaign,
    StoredConsent,
    StoredContract,
    StoredFinding,
    StoredOptout,
    StoredPrincipal,
    WebUser,
    check_role,
)
from rpoguard.policy.model import (
    CampaignFacts,
    ConsentFacts,
    ContractFacts,
    Facts,
    ListingFacts,
    OptoutFacts,
    RpoAnswerFacts,
)
from rpoguard.timeutil import ROME, from_us, iso, to_us

BATCH = 10_000


def batches(items: Iterable[Any], size: int = BATCH) -> Iterator[list[Any]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def opt_us(value: datetime | None) -> int | None:
    return to_us(value) if value is not None else None


def opt_dt(value: int | None) -> datetime | None:
    return from_us(value) if value is not None else None


def iso_opt(value: int | None) -> str | None:
    return iso(from_us(value)) if value is not None else None


def facts_from_document(number: str | None, line_type: str | None, document: str | None) -> Facts:
    """The facts statement's one JSON document (one decode per call instead of one per part). The RPO
    answers come raw (Facts.rpo_answers): what they say at the call time is the policy's reading
    (policy.rpo.summarize_rpo), applied by the gate."""
    parts = json.loads(document) if document else None
    campaign_j, rpo_j, listing_j, consents_j, contracts_j, optouts_j, allows = parts or (
        None, None, None, None, None, None, 0)
    campaign = None
    if campaign_j:
        cid, principal, automated, max_attempts, per_days, caller_ids = campaign_j
        campaign = CampaignFacts(cid, principal, bool(automated), max_attempts, per_days,
                                 frozenset(caller_ids or ()))
    rpo_answers = tuple(
        RpoAnswerFacts(result_id, from_us(checked_us), bool(registered), opt_dt(registered_us), import_id)
        for result_id, checked_us, registered, registered_us, import_id in rpo_j or ()
    )
    listing = None
    if listing_j:
        import_id, listed_us = listing_j
        listing = ListingFacts(import_id, opt_dt(listed_us))
    consents = tuple(
        ConsentFacts(cid, from_us(given), evidence, bool(auto), opt_dt(expires), opt_dt(revoked), purpose)
        for cid, given, evidence, auto, expires, revoked, purpose in consents_j or ()
    )
    contracts = tuple(
        ContractFacts(kid, date.fromisoformat(start), date.fromisoformat(end) if end else None)
        for kid, start, end in contracts_j or ()
    )
    optouts = tuple(OptoutFacts(oid, principal, from_us(at)) for oid, principal, at in optouts_j or ())
    return Facts(number, line_type, campaign, None, listing, consents, contracts, optouts, int(allows or 0),
                 rpo_answers)


# `registry due`: the numbers a principal must submit to the RPO. The SQL is the same on both backends but
# for the parameter style (:name here; PostgreSQL's store rewrites them) and where the audit log lives.
DUE_STALE = ("coalesce((SELECT max(checked_us) FROM rpo_results r WHERE r.number = k.number"
             " AND r.principal_id = :principal), -1) <= :stale")


def due_source(candidates: bool, campaign: bool, audit_log: str) -> str:
    """The numbers to consider: the operator's list (due_candidates), a campaign's numbers (its calls and
    its principal's consents and contracts), or every number the store knows for the principal."""
    if candidates:
        return "SELECT number FROM due_candidates"
    if campaign:
        return ("SELECT number FROM consents WHERE principal_id = :principal"
                " UNION SELECT number FROM contracts WHERE principal_id = :principal"
                f" UNION SELECT number FROM {audit_log} WHERE campaign_id = :campaign AND number IS NOT NULL")
    # Answers that lost their principal in the upgrade to schema 2 name numbers some principal checked:
    # they are due again. Numbers the gate refused for want of an answer are exactly the ones to submit.
    return ("SELECT number FROM rpo_results WHERE principal_id = :principal OR principal_id IS NULL"
            " UNION SELECT number FROM listings"
            " UNION SELECT number FROM consents WHERE principal_id = :principal"
            " UNION SELECT number FROM contracts WHERE principal_id = :principal"
            f" UNION SELECT number FROM {audit_log} WHERE principal_id = :principal AND number IS NOT NULL")


# The latest moment any listing period starts or ends: a replacing extract must not be older.
LATEST_LISTING_SQL = "SELECT max(coalesce(ended_us, listed_us)) FROM listings"


def refuse_older_extract(listed_us: int, latest_us: int | None) -> None:
    """A replacing directory file describes the whole directory at its moment; one older than what is
    stored would end listings before they began. Raised inside the import's transaction: nothing lands."""
    if latest_us is not None and listed_us < latest_us:
        raise ValueError(f"--listed-at {iso_opt(listed_us)} is older than the directory already stored (last "
                         f"change {iso_opt(latest_us)}); an older extract cannot replace it (use --append to add "
                         "its numbers)")


def listing_detail(read: int, listed: int, new: int, ended: int, replace: bool) -> dict[str, int]:
    """A directory import's counts: numbers newly listed, numbers already listed that stay so, and for a
    replacing import the listings it ended."""
    detail = {"newly_listed": new, "still_listed": listed - new}
    if read > listed:
        detail["duplicates"] = read - listed
    if replace:
        detail["ended"] = ended
    return detail


# -- evidence: each takes the row of the matching SELECT in the backend's `evidence` ------------------------


# Who obtained an answer stored before answers had a principal, when it could not be attributed.
CONTROLLER_UNKNOWN = "unknown"

# The import ids whose files the evidence of one number names (:number), in both backends' SQL.
EVIDENCE_FILES_SQL = (
    "SELECT f.import_id, f.role, f.file_name, f.file_size, f.sha256 FROM import_files f WHERE f.import_id IN ("
    " SELECT import_id FROM rpo_results WHERE number = :number"
    " UNION SELECT import_id FROM listings WHERE number = :number"
    " UNION SELECT ended_by FROM listings WHERE number = :number"
    " UNION SELECT import_id FROM consents WHERE number = :number"
    " UNION SELECT import_id FROM fact_notes WHERE number = :number)"
    " ORDER BY f.import_id, f.position")


def files_by_import(rows: Iterable[Sequence[Any]]) -> dict[int, list[dict[str, object]]]:
    """import_id, role, file_name, file_size, sha256 rows: each import's input files, in their order."""
    files: dict[int, list[dict[str, object]]] = {}
    for import_id, role, name, size, sha in rows:
        files.setdefault(int(import_id), []).append({"role": role, "name": name, "size": size, "sha256": sha})
    return files


# The items that always named their import's file with flat keys (file_name, file_size, sha256).
FLAT_FILE_KINDS = frozenset({"rpo_answer", "directory_listing", "directory_listing_ended"})


def attach_files(items: list[EvidenceItem], files: dict[int, list[dict[str, object]]]) -> None:
    """Give every item that came from an import the files of that import, each with its own name, size
    and SHA-256 (a two-list RPO answer has two). A one-file import also keeps the flat file_name, file_size
    and sha256 the evidence always had."""
    for item in items:
        for id_key, files_key in (("import_id", "files"), ("ended_by_import_id", "ended_by_files")):
            import_id = item.detail.get(id_key)
            if import_id is None or id_key not in item.detail:
                continue
            found = files.get(int(import_id), [])  # type: ignore[call-overload]
            item.detail[files_key] = found
            if files_key == "files" and item.kind in FLAT_FILE_KINDS and len(found) == 1:
                item.detail.update(file_name=found[0]["name"], file_size=found[0]["size"], sha256=found[0]["sha256"])


def rpo_answer_item(row: Sequence[Any]) -> EvidenceItem:
    """principal_id, id, checked_us, registered, registered_us, import_id and the import's imported_us. An
    answer without a principal is shown, never used by a decision."""
    principal, rid, checked, registered, reg_us, import_id, imported = row
    return EvidenceItem(from_us(checked), "rpo_answer", principal, {
        "result_id": rid, "controller": principal or CONTROLLER_UNKNOWN, "registered": bool(registered),
        "registered_at": iso_opt(reg_us), "import_id": import_id, "imported_at": iso_opt(imported)})


def listing_items(row: Sequence[Any]) -> list[EvidenceItem]:
    """import_id, listed_us, ended_us, ended_by and the ending import's imported_us: the start of the
    listing period and, once a replacing import no longer named the number, its end."""
    import_id, listed, ended, ended_by, ended_imported = row
    detail: dict[str, object] = {"import_id": import_id, "ended_at": iso_opt(ended), "ended_by_import_id": ended_by}
    items = [EvidenceItem(from_us(listed), "directory_listing", None, detail)]
    if ended is not None:
        items.append(EvidenceItem(from_us(ended), "directory_listing_ended", None, {
            **detail, "ended_by_imported_at": iso_opt(ended_imported)}))
    return items


def consent_item(row: Sequence[Any]) -> EvidenceItem:
    cid, principal, given, evidence, purpose, automated, expires, revoked, import_id = row
    return EvidenceItem(from_us(given), "consent", principal, {
        "consent_id": cid, "evidence": evidence, "purpose": purpose, "automated": bool(automated),
        "expires_at": iso_opt(expires), "revoked_at": iso_opt(revoked), "import_id": import_id})


def contract_item(contract_id: int, principal: str, start: date, end: date | None) -> EvidenceItem:
    # A contract counts from the start of its first day in Rome.
    return EvidenceItem(datetime.combine(start, time(0, 0), tzinfo=ROME), "contract", principal, {
        "contract_id": contract_id, "start": start.isoformat(), "end": end.isoformat() if end else None})


# A note on a consent or a contract, with the fact's own record beside it (what stood when it was made).
NOTE_COLUMNS = (
    "n.id, n.fact, n.fact_id, n.principal_id, n.kind, n.at_us, n.end_date, n.source, n.import_id, n.recorded_us,"
    " c.revoked_us, k.end_date FROM fact_notes n"
    " LEFT JOIN consents c ON n.fact = 'consent' AND c.id = n.fact_id"
    " LEFT JOIN contracts k ON n.fact = 'contract' AND k.id = n.fact_id")

# The evidence kind of each note kind (store.NOTE_*).
NOTE_EVIDENCE_KINDS = {NOTE_REVOKED: "consent_revoked", NOTE_REVOKED_AGAIN: "consent_revoked_again",
                       NOTE_END_SET: "contract_ended", NOTE_END_CORRECTED: "contract_end_corrected"}


def _day_text(value: object) -> str | None:
    """A date as ISO text, from PostgreSQL's date or SQLite's text."""
    if value is None:
        return None
    return value.isoformat() if isinstance(value, date) else str(value)


def note_item(row: Sequence[Any]) -> EvidenceItem:
    """A note's row (NOTE_COLUMNS), at the moment it was recorded: what was said about the fact then, and
    whether it names an earlier moment or end than the fact's record (decisions read the earliest)."""
    note_id, fact, fact_id, principal, kind, at_us, end, source, import_id, recorded_us, revoked_us, \
        recorded_end = row
    detail: dict[str, object] = {"note_id": note_id, f"{fact}_id": fact_id, "source": source,
                                 "import_id": import_id, "recorded_at": iso_opt(recorded_us)}
    if fact == FACT_CONSENT:
        detail.update(revoked_at=iso_opt(at_us), first_revoked_at=iso_opt(revoked_us),
                      earlier=kind == NOTE_REVOKED_AGAIN and at_us is not None and revoked_us is not None
                      and at_us < revoked_us)
    else:
        end_text, recorded_text = _day_text(end), _day_text(recorded_end)
        detail.update(end=end_text, recorded_end=recorded_text,
                      earlier=kind == NOTE_END_CORRECTED and end_text is not None and recorded_text is not None
                      and end_text < recorded_text)
    return EvidenceItem(from_us(recorded_us), NOTE_EVIDENCE_KINDS.get(kind, kind), principal, detail)


def optout_item(row: Sequence[Any]) -> EvidenceItem:
    oid, principal, at, source, reference = row
    return EvidenceItem(from_us(at), "optout", principal, {
        "optout_id": oid, "source": source, "reference": reference, "covers": principal or "every principal"})


def decision_item(row: Sequence[Any]) -> EvidenceItem:
    """seq, decision_id, ts_us, campaign_id, principal_id, caller_id, decision, reasons, basis, evidence,
    source, uniqueid, hash, recorded_us (None for rows written before the log kept it)."""
    seq, decision_id, ts_us, campaign_id, principal, caller_id, decision, reasons, basis, evidence, source, \
        uniqueid, digest, recorded_us = row
    return EvidenceItem(from_us(ts_us), "decision", principal, {
        "seq": seq, "decision_id": decision_id, "campaign_id": campaign_id, "caller_id": caller_id,
        "decision": decision, "reasons": [code for code in reasons.split(",") if code], "basis": basis,
        "evidence": json.loads(evidence), "source": source, "uniqueid": uniqueid, "hash": digest,
        "recorded_at": iso_opt(recorded_us)})

def _contract_items(row: Sequence[Any]) -> list[EvidenceItem]:
    kid, principal, start, end = row
    return [contract_item(kid, principal, as_date(start), as_date(end) if end is not None else None)]


def _evidence_parts(d: ListDialect) -> tuple[tuple[str, Callable[[Sequence[Any]], list[EvidenceItem]]], ...]:
    """Each SELECT of `rpoguard evidence` (:number, and :principal to narrow what is per principal) with what
    makes one of its rows into items. Answers without a principal ("controller unknown") are shown whatever
    the filter: they explain why a number stored before answers had principals is rpo_not_checked."""
    narrowed = "(CAST(:principal AS TEXT) IS NULL OR {column} = :principal)"
    return (
        ("SELECT r.principal_id, r.id, r.checked_us, r.registered, r.registered_us, r.import_id, i.imported_us"
         " FROM rpo_results r LEFT JOIN imports i ON i.id = r.import_id WHERE r.number = :number"
         " AND (CAST(:principal AS TEXT) IS NULL OR r.principal_id IS NULL OR r.principal_id = :principal)"
         " ORDER BY r.checked_us, r.id", lambda row: [rpo_answer_item(row)]),
        ("SELECT l.import_id, l.listed_us, l.ended_us, l.ended_by, e.imported_us FROM listings l"
         " LEFT JOIN imports e ON e.id = l.ended_by WHERE l.number = :number ORDER BY l.listed_us", listing_items),
        ("SELECT id, principal_id, given_us, evidence, purpose, automated, expires_us, revoked_us, import_id"
         f" FROM consents WHERE number = :number AND {narrowed.format(column='principal_id')} ORDER BY id",
         lambda row: [consent_item(row)]),
        ("SELECT id, principal_id, start_date, end_date FROM contracts WHERE number = :number"
         f" AND {narrowed.format(column='principal_id')} ORDER BY id", _contract_items),
        (f"SELECT {NOTE_COLUMNS} WHERE n.number = :number AND {narrowed.format(column='n.principal_id')}"
         " ORDER BY n.id", lambda row: [note_item(row)]),
        # A refusal for every principal binds each of them.
        (f"SELECT id, principal_id, at_us, source, reference FROM {d.optouts} WHERE number = :number"
         " AND (CAST(:principal AS TEXT) IS NULL OR principal_id IS NULL OR principal_id = :principal) ORDER BY id",
         lambda row: [optout_item(row)]),
        ("SELECT seq, decision_id, ts_us, campaign_id, principal_id, caller_id, decision, reasons, basis,"
         f" evidence, source, uniqueid, hash, recorded_us FROM {d.audit_log} WHERE number = :number"
         f" AND {narrowed.format(column='principal_id')} ORDER BY seq", lambda row: [decision_item(row)]),
    )


# Runs one SELECT with :name parameters on the backend's connection (one snapshot for the whole evidence).
Fetch = Callable[[str, dict[str, Any]], Awaitable[Iterable[Sequence[Any]]]]


async def read_evidence(fetch: Fetch, d: ListDialect, number: str, principal_id: str | None) -> list[EvidenceItem]:
    """Everything known about one number, in time order (Store.evidence), each import's files attached."""
    params = {"number": number, "principal": principal_id}
    items: list[EvidenceItem] = []
    for sql, convert in _evidence_parts(d):
        for row in await fetch(sql, params):
            items += convert(row)
    attach_files(items, files_by_import(await fetch(EVIDENCE_FILES_SQL, {"number": number})))
    items.sort(key=lambda item: item.at)
    return items


# -- the decision log ------------------------------------------------------------------------------------

AUDIT_COLUMNS = ("seq, decision_id, ts_us, number, raw_number, campaign_id, principal_id, caller_id, decision,"
                 " reasons, basis, evidence, source, uniqueid, channel, prev_hash, hash, recorded_us, linkedid")


def audit_rows_query(start_us: int | None, end_us: int | None) -> Query:
    """The log's rows in sequence order, optionally limited to start <= time < end."""
    clauses = [("ts_us >= :start", "start", start_us), ("ts_us < :end", "end", end_us)]
    params = {name: value for _, name, value in clauses if value is not None}
    where = [sql for sql, _, value in clauses if value is not None]
    return f"SELECT {AUDIT_COLUMNS} FROM audit_log" + (" WHERE " + " AND ".join(where) if where else "") + \
        " ORDER BY seq", params


def audit_row(r: Sequence[Any]) -> AuditRow:
    """A row of AUDIT_COLUMNS."""
    return AuditRow(r[0], AuditEntry(*r[1:15], linkedid=r[18]), r[15], r[16], r[17])


# -- lists: what is stored, for `rpoguard principal|campaign|consent|contract|optout list` ----------------
# The SQL is shared (:name parameters; PostgreSQL's store rewrites them) but for what ListDialect says.
# Rows come in a stable order: text ids in byte order, the rest by id (the order they were stored, and the
# primary key, so a whole table streams without a sort).


@dataclass(frozen=True, slots=True)
class ListDialect:
    optouts: str  # the refusals' table as the reading connection names it
    audit_log: str  # the decision log's table, likewise
    collate: str  # after ORDER BY on text: byte order on both backends
    caller_ids: str  # a JSON array (text) of principal p's caller IDs, sorted
    day: Callable[[date], object]  # a date as the backend compares it with a stored contract date


Query = tuple[str, dict[str, Any]]
T = TypeVar("T")


def _query(select: str, clauses: Sequence[tuple[str, str, object]], order: str, limit: int | None) -> Query:
    """`clauses`: (SQL, parameter name, value), each applied when its value is not None (a flag's SQL
    names no parameter)."""
    params = {name: value for sql, name, value in clauses if value is not None and f":{name}" in sql}
    where = [sql for sql, name, value in clauses if value is not None]
    sql = select + (" WHERE " + " AND ".join(where) if where else "") + f" ORDER BY {order}"
    if limit is not None:
        sql += " LIMIT :limit"
        params["limit"] = limit
    return sql, params


def principals_query(d: ListDialect, limit: int | None) -> Query:
    return _query(f"SELECT p.id, p.name, {d.caller_ids}, p.created_us FROM principals p", (),
                  f"p.id{d.collate}", limit)


def campaigns_query(d: ListDialect, principal_id: str | None, limit: int | None) -> Query:
    return _query("SELECT id, principal_id, automated, max_attempts, per_days, created_us FROM campaigns",
                  [("principal_id = :principal", "principal", principal_id)], f"id{d.collate}", limit)


def consents_query(d: ListDialect, number: str | None, principal_id: str | None, in_force_at: datetime | None,
                   revoked: bool, limit: int | None) -> Query:
    return _query(
        "SELECT id, number, principal_id, given_us, evidence, purpose, automated, expires_us, revoked_us,"
        " import_id, created_us FROM consents",
        [("number = :number", "number", number),
         ("principal_id = :principal", "principal", principal_id),
         # The decision's reading of a consent (docs/architecture.md §3): from given_at until it expires or is
         # revoked, whichever comes first.
         ("given_us <= :at AND (expires_us IS NULL OR expires_us > :at) AND (revoked_us IS NULL OR revoked_us > :at)",
          "at", opt_us(in_force_at)),
         ("revoked_us IS NOT NULL", "revoked", True if revoked else None)],
        "id", limit)


def contracts_query(d: ListDialect, number: str | None, principal_id: str | None, running_at: date | None,
                    limit: int | None) -> Query:
    return _query(
        "SELECT id, number, principal_id, start_date, end_date, created_us FROM contracts",
        [("number = :number", "number", number),
         ("principal_id = :principal", "principal", principal_id),
         ("start_date <= :day AND (end_date IS NULL OR end_date >= :day)", "day",
          d.day(running_at) if running_at is not None else None)],
        "id", limit)


def optouts_query(d: ListDialect, number: str | None, principal_id: str | None, since: datetime | None,
                  limit: int | None) -> Query:
    return _query(
        f"SELECT id, number, principal_id, at_us, source, reference, created_us FROM {d.optouts}",
        [("number = :number", "number", number),
         # A refusal for every principal binds this one too.
         ("(principal_id IS NULL OR principal_id = :principal)", "principal", principal_id),
         ("at_us >= :since", "since", opt_us(since))],
        "id", limit)


def as_date(value: date | str) -> date:
    """A contract date: PostgreSQL gives a date, SQLite its ISO text."""
    return value if isinstance(value, date) else date.fromisoformat(value)


def stored_principal(row: Sequence[Any]) -> StoredPrincipal:
    pid, name, caller_ids, created = row
    return StoredPrincipal(pid, name, tuple(json.loads(caller_ids or "[]")), from_us(created))


def stored_campaign(row: Sequence[Any]) -> StoredCampaign:
    cid, principal, automated, max_attempts, per_days, created = row
    return StoredCampaign(cid, principal, bool(automated), max_attempts, per_days, from_us(created))


def stored_consent(row: Sequence[Any]) -> StoredConsent:
    cid, number, principal, given, evidence, purpose, automated, expires, revoked, import_id, created = row
    return StoredConsent(cid, number, principal, from_us(given), evidence, purpose, bool(automated), opt_dt(expires),
                         opt_dt(revoked), import_id, from_us(created))


def stored_contract(row: Sequence[Any]) -> StoredContract:
    kid, number, principal, start, end, created = row
    return StoredContract(kid, number, principal, as_date(start), as_date(end) if end is not None else None,
                          from_us(created))


def stored_optout(row: Sequence[Any]) -> StoredOptout:
    oid, number, principal, at, source, reference, created = row
    return StoredOptout(oid, number, principal, from_us(at), source, reference, from_us(created))


class ListQueries(ABC):
    """The `list` commands' Store methods, the same on both backends: each backend says only how a query's
    rows stream (`_stream`) and how its connection names the tables (`list_dialect`)."""

    list_dialect: ListDialect

    @abstractmethod
    def _stream(self, query: Query, convert: Callable[[Any], T]) -> AsyncIterator[T]: ...

    def list_principals(self, *, limit: int | None = None) -> AsyncIterator[StoredPrincipal]:
        return self._stream(principals_query(self.list_dialect, limit), stored_principal)

    def list_campaigns(self, *, principal_id: str | None = None,
                       limit: int | None = None) -> AsyncIterator[StoredCampaign]:
        return self._stream(campaigns_query(self.list_dialect, principal_id, limit), stored_campaign)

    def list_consents(self, *, number: str | None = None, principal_id: str | None = None,
                      in_force_at: datetime | None = None, revoked: bool = False,
                      limit: int | None = None) -> AsyncIterator[StoredConsent]:
        query = consents_query(self.list_dialect, number, principal_id, in_force_at, revoked, limit)
        return self._stream(query, stored_consent)

    def list_contracts(self, *, number: str | None = None, principal_id: str | None = None,
                       running_at: date | None = None, limit: int | None = None) -> AsyncIterator[StoredContract]:
        return self._stream(contracts_query(self.list_dialect, number, principal_id, running_at, limit),
                            stored_contract)

    def list_optouts(self, *, number: str | None = None, principal_id: str | None = None,
                     since: datetime | None = None, limit: int | None = None) -> AsyncIterator[StoredOptout]:
        return self._stream(optouts_query(self.list_dialect, number, principal_id, since, limit), stored_optout)

    def list_users(self) -> AsyncIterator[WebUser]:
        return self._stream(users_query(self.list_dialect), web_user)

    def list_changes(self, *, since_us: int | None = None, user: str | None = None,
                     limit: int | None = None, action: str | None = None) -> AsyncIterator[ConsoleChange]:
        return self._stream(changes_query(since_us, user, limit, action), console_change)


# -- the console's users and the record of its changes (docs/console.md) -------------------------------------

USER_COLUMNS = "name, role, password_hash, disabled, created_us, changed_us"
USER_SQL = f"SELECT {USER_COLUMNS} FROM console_users WHERE name = :name"
# The user whose name is this one in another case (console_users_folded), for the conflict's message.
USER_FOLDED_SQL = "SELECT name FROM console_users WHERE lower(name) = lower(:name)"
CHANGE_COLUMNS = "id, at_us, user_name, action, target, detail"
CHANGE_INSERT = "INSERT INTO console_changes (at_us, user_name, action, target, detail)"
# Keys a change's detail may never carry: the record is read by the DPO and copied between databases.
SECRET_KEYS = frozenset({"password", "password_hash", "passwd", "csrf_token", "session", "session_id"})


def user_taken(name: str, existing: str | None) -> str:
    """Why add_user refused `name`: taken as it is, or by a name that differs only in case."""
    if existing is None or existing == name:
        return f"user {name!r} already exists"
    return f"user {name!r} cannot be added: user {existing!r} exists (names that differ only in case are refused)"


def users_query(d: ListDialect) -> Query:
    return f"SELECT {USER_COLUMNS} FROM console_users ORDER BY name{d.collate}", {}


def web_user(row: Sequence[Any]) -> WebUser:
    name, role, password_hash, disabled, created_us, changed_us = row
    return WebUser(name, role, password_hash, bool(disabled), int(created_us), int(changed_us))


def user_update_query(name: str, at_us: int, role: str | None, password_hash: str | None,
                      disabled: bool | None) -> Query:
    """The UPDATE of what is given; ValueError when nothing is (a change that changes nothing is a bug)."""
    if role is not None:
        check_role(role)
    sets = [(column, value) for column, value in
            (("role", role), ("password_hash", password_hash), ("disabled", disabled)) if value is not None]
    if not sets:
        raise ValueError(f"update of user {name!r}: nothing to change")
    if password_hash is not None and not password_hash:
        raise ValueError(f"update of user {name!r}: an empty password hash")
    assignments = ", ".join(f"{column} = :{column}" for column, _ in sets)
    return (f"UPDATE console_users SET {assignments}, changed_us = :at WHERE name = :name",
            {**dict(sets), "at": at_us, "name": name})


def changes_query(since_us: int | None, user: str | None, limit: int | None, action: str | None = None) -> Query:
    return _query(f"SELECT {CHANGE_COLUMNS} FROM console_changes",
                  [("at_us >= :since", "since", since_us), ("user_name = :user", "user", user),
                   ("action = :action", "action", action)],
                  "at_us DESC, id DESC", limit)


def _secret_keys(value: object) -> list[str]:
    """The keys, at any depth, that name a secret."""
    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if str(key).lower() in SECRET_KEYS:
                found.append(str(key))
            found += _secret_keys(item)
    elif isinstance(value, list | tuple):
        for item in value:
            found += _secret_keys(item)
    return found


def change_values(change: ConsoleChange) -> tuple[int, str, str, str, str]:
    """The row of a change (without its id), its detail as JSON text; ValueError for a change that would
    put a secret in the record, or that names no user or action."""
    if not change.user or not change.action:
        raise ValueError(f"a console change needs its user and action (got {change.user!r}, {change.action!r})")
    secrets = _secret_keys(change.detail)
    if secrets:
        raise ValueError(f"console change {change.action}: its detail may not hold {', '.join(sorted(secrets))}")
    try:
        detail = json.dumps(change.detail, ensure_ascii=False, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"console change {change.action}: its detail is not JSON ({exc})") from None
    return change.at_us, change.user, change.action, change.target, detail


def console_change(row: Sequence[Any]) -> ConsoleChange:
    cid, at_us, user, action, target, detail = row
    return ConsoleChange(int(at_us), user, action, target, json.loads(detail) if isinstance(detail, str) else detail,
                         int(cid))


# -- bypass checks (docs/bypass.md) -------------------------------------------------------------------------

_ALLOWED_COLUMNS = "seq, decision_id, ts_us, number, uniqueid, linkedid"


def allowed_between_query(start_us: int, end_us: int) -> Query:
    return (f"SELECT {_ALLOWED_COLUMNS} FROM audit_log WHERE ts_us >= :start AND ts_us < :end"
            f" AND decision = '{ALLOW}' ORDER BY ts_us, seq", {"start": start_us, "end": end_us})


def allowed_after_query(after_seq: int, since_us: int, limit: int) -> Query:
    return (f"SELECT {_ALLOWED_COLUMNS} FROM audit_log WHERE seq > :after AND ts_us >= :since"
            f" AND decision = '{ALLOW}' ORDER BY seq LIMIT :limit",
            {"after": after_seq, "since": since_us, "limit": limit})


def allowed(row: Sequence[Any]) -> Allowed:
    """A row of allowed_*_query without its sequence number."""
    return Allowed(row[1], row[2], row[3] or "", row[4], row[5])


FINDING_COLUMNS = ("kind", "found_us", "at_us", "until_us", "why", "channel", "number", "dialled", "uniqueid",
                   "linkedid", "decision_id", "detail", "source", "hung_up")


def finding_values(finding: StoredFinding, found_us: int) -> tuple[Any, ...]:
    f = finding
    return (f.kind, f.found_us or found_us, f.at_us, f.until_us, f.why, f.channel, f.number, f.dialled, f.uniqueid,
            f.linkedid, f.decision_id, f.detail, f.source, f.hung_up)


def findings_query(since_us: int | None, kind: str | None, limit: int | None) -> Query:
    # An unwatched period still running at `since` is one of its findings: listing from then must show it.
    since_sql = (f"(at_us >= :since OR (kind = '{FINDING_NOT_WATCHED}'"
                 " AND (until_us IS NULL OR until_us >= :since)))")
    return _query(f"SELECT id, {', '.join(FINDING_COLUMNS)} FROM bypass_findings",
                  [(since_sql, "since", since_us), ("kind = :kind", "kind", kind)], "id", limit)


def stored_finding(row: Sequence[Any]) -> StoredFinding:
    (fid, kind, found_us, at_us, until_us, why, channel, number, dialled, uniqueid, linkedid, decision_id, detail,
     source, hung_up) = row
    return StoredFinding(kind=kind, at_us=at_us, detail=detail, source=source, found_us=found_us, until_us=until_us,
                         why=why, channel=channel, number=number, dialled=dialled, uniqueid=uniqueid,
                         linkedid=linkedid, decision_id=decision_id, hung_up=bool(hung_up), id=fid)
