"""The Store interface the engine talks to. Nothing backend-specific crosses it.

A PostgreSQL implementation sits beside the SQLite one behind the same methods, so the engine, the
importers and the CLI never change with the backend.
"""

from __future__ import annotations

import asyncio
import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from types import TracebackType

from rpoguard.audit import AuditEntry, AuditRow
from rpoguard.bypass.match import Allowed
from rpoguard.constants import ROLES
from rpoguard.db.tables import Table, TableRows
from rpoguard.policy.model import CampaignFacts, Facts


class StoreError(Exception):
    """Storage failed (locked, missing, corrupt, full). The message is safe to show an operator."""


class DatabaseNotFound(StoreError):
    """A command that only reads was pointed at a database that does not exist; it is never created."""


class StoreUnavailable(StoreError):
    """The database is not open at all (missing, unreadable, corrupt): logged once where it is detected."""


class NotFoundError(StoreError):
    """A referenced principal or campaign does not exist."""


class RecordConflict(StoreError):
    """The record asked for is already stored with other details, and a stored fact is never changed."""


@dataclass(frozen=True, slots=True)
class AttemptCap:
    """An ALLOW may be appended only while fewer than `max_allows` ALLOWs for the number and principal
    exist in its window from `since_us` (policy.attempts.cap_window): checked inside the append, so
    concurrent calls cannot pass the cap together."""

    number: str
    principal_id: str
    since_us: int
    max_allows: int


class AttemptCapReached(StoreError):
    def __init__(self, allows: int) -> None:
        super().__init__(f"attempt cap reached ({allows} allowed calls in the window)")
        self.allows = allows


@dataclass(frozen=True, slots=True)
class RpoAnswer:
    """One row of an RPO answer file. In a two-list import the submitted list's rows are `submitted` and
    answer nothing by themselves: the other list decides (docs/architecture.md §4)."""

    number: str
    registered: bool
    registered_at: datetime | None = None
    # Where the row is in its file, so that the import can name it (opposite answers, stray numbers).
    line: int = 0
    submitted: bool = False


# How the rows of an RPO import answer (ImportMeta.rpo_form).
RPO_ANSWERS = "answers"  # one file, each row says registered or not
RPO_REGISTERED_LIST = "registered"  # the submitted list and the list of the registered numbers among them
RPO_CLEANSED_LIST = "cleansed"  # the submitted list and the cleaned list: the numbers not registered


@dataclass(frozen=True, slots=True)
class RowProblem:
    """One rejected input row: where it is and what is wrong with it."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


class ImportRejected(Exception):
    """The file has bad rows and --skip-invalid was not given (or cannot apply): nothing was stored."""

    def __init__(self, problems: list[RowProblem], *, skippable: bool = True) -> None:
        super().__init__(f"{len(problems)} bad row(s); nothing was imported")
        self.problems = problems
        # False for a two-list RPO import: absence from a list proves nothing unless the whole list was
        # read, so no row of either list may be skipped.
        self.skippable = skippable


# The role of an input file in its import (import_files.role).
FILE_ONLY = "file"  # the import's one file
FILE_SUBMITTED = "submitted"  # a two-list RPO answer: the list submitted to the RPO; the other file's role is
# its form (RPO_REGISTERED_LIST or RPO_CLEANSED_LIST)


@dataclass(frozen=True, slots=True)
class ImportFile:
    """One input file of an import, as the evidence names it."""

    role: str
    name: str
    size: int | None
    sha256: str | None


@dataclass(frozen=True, slots=True)
class ImportMeta:
    kind: str
    # The whole input: a two-list answer's names and SHA-256 together, so the same pair is recognised as
    # a repeat. `files` names each file on its own (default: this one file).
    file_name: str
    file_size: int | None = None
    sha256: str | None = None
    # The moment the file describes: the RPO's check for answers, the directory extract's date for
    # listings (None: the import itself).
    checked_at: datetime | None = None
    # RPO imports: the principal (data controller) that consulted the RPO, and how the rows answer.
    principal_id: str | None = None
    rpo_form: str = RPO_ANSWERS
    files: tuple[ImportFile, ...] = ()
    # Rows the store itself finds bad (a consent stored with other details...) are skipped, not fatal.
    skip_invalid: bool = False
    # Filled by the reader while the store consumes the rows; read by the store when it commits.
    rejected: list[RowProblem] = field(default_factory=list)

    def input_files(self) -> tuple[ImportFile, ...]:
        return self.files or (ImportFile(FILE_ONLY, self.file_name, self.file_size, self.sha256),)


@dataclass(slots=True)
class ImportSummary:
    import_id: int | None
    rows_read: int = 0
    rows_stored: int = 0
    rows_rejected: int = 0
    detail: dict[str, int] = field(default_factory=dict)
    already_imported: bool = False
    # Sentences for the operator about what the import found (opposite answers for one number...).
    notes: list[str] = field(default_factory=list)
    # The input files, each with its own name, size and SHA-256.
    files: tuple[ImportFile, ...] = ()


ImportResult = tuple[ImportSummary, list[RowProblem]]
# Called now and then during a long import with the number of rows read so far.
Progress = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class ConsentRecord:
    number: str
    principal_id: str
    given_at: datetime
    evidence: str
    automated: bool = False
    expires_at: datetime | None = None
    purpose: str | None = None
    # Where the record is in its file (imports), so that the store can name a row it refuses.
    line: int = 0


@dataclass(frozen=True, slots=True)
class ContractRecord:
    number: str
    principal_id: str
    start: date
    end: date | None = None
    line: int = 0


# Notes on stored facts (table fact_notes): what was said about a consent or a contract after it was
# recorded. The fact's own record is never changed; a decision reads the earliest revocation moment and
# the earliest end date any record or note names (docs/law.md §12).
FACT_CONSENT = "consent"
FACT_CONTRACT = "contract"
NOTE_REVOKED = "revoked"  # a consent's first revocation (its revoked_at is set once, to this moment)
NOTE_REVOKED_AGAIN = "revoked_again"  # a revocation of a consent already revoked: noted, not substituted
NOTE_END_SET = "end_set"  # the end of a running contract (its end date is set once, to this date)
NOTE_END_CORRECTED = "end_corrected"  # another end for an ended contract: counts only if earlier


@dataclass(frozen=True, slots=True)
class Revocation:
    """What one `consent revoke` did to one consent."""

    consent_id: int
    # True: this is the consent's first revocation. False: it was already revoked, and this one is noted.
    first: bool
    # The consent's first revocation, as recorded (this one when `first`).
    revoked_at: datetime
    # What decisions read: the earliest moment any revocation of the consent names.
    effective_at: datetime


# What `contract add` did (ContractOutcome.outcome).
CONTRACT_RECORDED = "recorded"  # a new contract
CONTRACT_UNCHANGED = "unchanged"  # the same contract, the same end: nothing to record
CONTRACT_ENDED = "ended"  # a running contract's end, set once
CONTRACT_CORRECTED = "corrected"  # an earlier end for an ended contract: noted, and decisions use it
CONTRACT_NOTED = "noted"  # a later end, or none, for an ended contract: noted, never used (it would favour calls)


@dataclass(frozen=True, slots=True)
class ContractOutcome:
    contract_id: int
    outcome: str
    # The end stored before the command, and the end decisions read after it (the earliest one named).
    end_before: date | None
    effective_end: date | None


@dataclass(frozen=True, slots=True)
class OptoutRecord:
    number: str
    principal_id: str | None
    at: datetime
    reference: str | None = None


@dataclass(frozen=True, slots=True)
class EvidenceItem:
    """One thing the store knows about a number, for `rpoguard evidence`: when, what, and its details."""

    at: datetime
    kind: str
    principal_id: str | None
    detail: dict[str, object]


@dataclass(frozen=True, slots=True)
class PrincipalInfo:
    id: str
    name: str
    caller_ids: tuple[str, ...]


# -- what is stored, row by row, for `rpoguard principal|campaign|consent|contract|optout list` ------------


@dataclass(frozen=True, slots=True)
class StoredPrincipal:
    id: str
    name: str
    caller_ids: tuple[str, ...]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class StoredCampaign:
    id: str
    principal_id: str
    automated: bool
    max_attempts: int | None
    per_days: int | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class StoredConsent:
    id: int
    number: str
    principal_id: str
    given_at: datetime
    evidence: str
    purpose: str | None
    automated: bool
    expires_at: datetime | None
    revoked_at: datetime | None
    import_id: int | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class StoredContract:
    id: int
    number: str
    principal_id: str
    start: date
    end: date | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class StoredOptout:
    id: int
    number: str
    principal_id: str | None  # None: every principal
    at: datetime
    source: str
    reference: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class StoredFinding:
    """What `watch` found (docs/bypass.md): a trunk leg no ALLOW covered, or a period it could not watch."""

    kind: str  # FINDING_BYPASS or FINDING_NOT_WATCHED
    at_us: int  # when the leg began / the unwatched period began
    detail: str  # one sentence for people
    source: str  # who found it: "watch"
    found_us: int = 0  # when it was stored (set by the store when 0)
    until_us: int | None = None  # the unwatched period's end (None: still open, or a bypass)
    why: str | None = None  # a bypass's BYPASS_* code
    channel: str | None = None
    number: str | None = None  # E.164, when the dialled number could be read
    dialled: str | None = None  # as Asterisk showed it
    uniqueid: str | None = None
    linkedid: str | None = None
    decision_id: str | None = None  # the call's nearest decision, when it had one
    hung_up: bool = False  # --enforce hung the leg up
    id: int | None = None


# -- the console's users and the record of changes made through it (docs/console.md) -------------------------

USER_NAME_MAX = 64
_USER_NAME = re.compile(r"[A-Za-z0-9._@-]{1,64}")


def check_user_name(name: str) -> str:
    """A console user's name as given, or ValueError saying why it is refused."""
    if not _USER_NAME.fullmatch(name):
        raise ValueError(f"user name {name!r} is not valid: 1 to {USER_NAME_MAX} characters of letters, digits, "
                         "'.', '_', '@' and '-'")
    return name


def check_role(role: str) -> str:
    """A role as given, or ValueError naming the roles there are."""
    if role not in ROLES:
        raise ValueError(f"role {role!r} is not valid: one of {', '.join(ROLES)}")
    return role


@dataclass(frozen=True, slots=True)
class WebUser:
    """A console user. A disabled user is kept (its changes still name it) but cannot log in."""

    name: str
    role: str
    # Never in a repr: a user object may end up in a log line or a traceback.
    password_hash: str = field(repr=False)
    disabled: bool
    created_us: int
    changed_us: int


@dataclass(frozen=True, slots=True)
class ConsoleChange:
    """One change made through the console or `rpoguard user`, with who made it (the DPO's record). `detail`
    says what changed, never a password or its hash."""

    at_us: int
    user: str  # the console user, or cli:<login name> for `rpoguard user`
    action: str  # a CHANGE_* name (rpoguard.constants)
    target: str  # what was changed: a user's name, a number, a principal...
    detail: dict[str, object]
    id: int | None = None


# -- what the web console reads (db/console_queries.py) ------------------------------------------------


@dataclass(frozen=True, slots=True)
class DecisionFilter:
    """Which decisions a console page shows; every field that is not None must match."""

    start_us: int | None = None  # half-open [start, end) on the decision's time (ts_us)
    end_us: int | None = None
    number: str | None = None  # E.164
    campaign_id: str | None = None
    principal_id: str | None = None
    decision: str | None = None  # allow / block
    reason: str | None = None  # any of the row's reasons
    source: str | None = None


@dataclass(frozen=True, slots=True)
class DecisionPage:
    """What Store.decision_search found: the matching rows, newest first, and where to go on from."""

    rows: list[AuditRow]
    # The `before_seq` of the next page: after the last row when the page is full, after the last row looked
    # at when the scan's budget ran out first (the rows in between did not match). None: nothing is left.
    next_before: int | None
    # True when the budget ran out before the page was full: older matches may still come.
    partial: bool = False


@dataclass(frozen=True, slots=True)
class StoredImport:
    """One import as the console lists it, with its input files."""

    id: int
    kind: str
    imported_us: int
    checked_us: int | None
    principal_id: str | None
    rows_read: int
    rows_stored: int
    rows_rejected: int
    detail: dict[str, object]
    files: tuple[ImportFile, ...]


@dataclass(frozen=True, slots=True)
class Freshness:
    """One principal's RPO answers at `as_of_us`, over the numbers `registry due` considers for it (every
    number the store knows for the principal)."""

    principal_id: str
    numbers: int  # numbers considered
    expiring: dict[int, int]  # days -> numbers whose latest answer is valid now and expires within that many days
    expired: int  # numbers whose latest answer is no longer valid
    as_of_us: int
    none: int = 0  # numbers with no answer of this principal at all (due like the expired ones)

    @property
    def due(self) -> int:
        """What `registry due` lists today: no valid answer."""
        return self.expired + self.none


class Store(ABC):
    """Async storage for facts, evidence and the decision log."""

    async def __aenter__(self) -> Store:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @abstractmethod
    async def open(self) -> None:
        """Connect and bring the schema to the latest version."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def schema_version(self) -> int:
        """The latest migration applied."""

    # -- the per-call path -------------------------------------------------------------------------

    @abstractmethod
    async def facts(self, number: str | None, line_type: str | None, campaign_id: str | None,
                    at: datetime) -> Facts:
        """Everything one decision needs, in one round; `number` None gives only the campaign."""

    @abstractmethod
    async def append_decision(self, entry: AuditEntry, cap: AttemptCap | None = None) -> AuditRow:
        """Append to the hash-chained log; returns only once the row is durable. With `cap`, raises
        AttemptCapReached instead of appending when the cap is already reached."""

    def start_decision(self, entry: AuditEntry, cap: AttemptCap | None = None) -> asyncio.Future[AuditRow]:
        """append_decision, started now rather than when first awaited, so that the front end can talk to
        the PBX while the record is written. Cancelling the future before the write begins keeps the
        decision out of the log. Needs the running event loop."""
        return asyncio.ensure_future(self.append_decision(entry, cap))

    # -- reference data ----------------------------------------------------------------------------

    @abstractmethod
    async def add_principal(self, principal_id: str, name: str, caller_ids: Iterable[str]) -> bool:
        """Create or update a principal; True if it was new. Caller IDs are added, never removed."""

    @abstractmethod
    async def get_principal(self, principal_id: str) -> PrincipalInfo | None: ...

    @abstractmethod
    async def add_campaign(self, campaign_id: str, principal_id: str, automated: bool,
                           max_attempts: int | None, per_days: int | None) -> bool:
        """Create or update a campaign; True if it was new. Raises NotFoundError for the principal."""

    @abstractmethod
    async def get_campaign(self, campaign_id: str) -> CampaignFacts | None: ...

    # -- imports: each lands whole or not at all -----------------------------------------------------

    @abstractmethod
    async def import_rpo(self, answers: Iterable[RpoAnswer], meta: ImportMeta,
                         progress: Progress | None = None) -> ImportSummary:
        """Store the answers principal meta.principal_id obtained, checked at meta.checked_at, in one
        transaction; one answer per number ("registered" wins, fail closed). If iterating `answers`
        raises, or a two-list import names a number that was not submitted (ImportRejected), nothing is
        stored and the previous answers keep serving."""

    @abstractmethod
    async def import_directory(self, numbers: Iterable[str], meta: ImportMeta, replace: bool) -> ImportSummary:
        """Store public-directory listings; `replace` makes the file the whole directory: the listings it
        does not name end now (they are kept, with their period, for decisions as of earlier moments and
        for the evidence)."""

    @abstractmethod
    async def import_consents(self, records: Iterable[ConsentRecord], meta: ImportMeta) -> ImportSummary: ...

    @abstractmethod
    async def add_consent(self, record: ConsentRecord) -> tuple[int, bool]:
        """Returns (id, created); the same consent twice is stored once. The same consent (number,
        principal, given_at, evidence) with other details raises RecordConflict: a recorded consent is
        never changed (it is ended with revoke_consents)."""

    @abstractmethod
    async def revoke_consents(self, number: str, principal_id: str, at: datetime) -> list[Revocation]:
        """Revoke every consent of the number to the principal given by `at` and not expired then. A
        consent already revoked keeps its first revocation; this one is noted beside it (and counts for
        decisions only if it names an earlier moment)."""

    @abstractmethod
    async def import_contracts(self, records: Iterable[ContractRecord], meta: ImportMeta) -> ImportSummary: ...

    @abstractmethod
    async def import_optouts(self, records: Iterable[OptoutRecord], meta: ImportMeta) -> ImportSummary: ...

    @abstractmethod
    async def evidence(self, number: str, principal_id: str | None) -> list[EvidenceItem]:
        """Everything known about one number, in time order: RPO answers with their import files,
        listings, consents, contracts, refusals and decisions. `principal_id` narrows what is per
        principal (refusals for every principal are always included)."""

    @abstractmethod
    def due_numbers(self, candidates: Iterable[str] | None, principal_id: str, campaign_id: str | None,
                    stale_before: datetime) -> AsyncIterator[str]:
        """Numbers whose latest RPO answer obtained by `principal_id` was checked at or before
        `stale_before`, or that it has none for: from `candidates` when given, else every number the store
        knows for that principal (only the campaign's calls and the principal's consents and contracts
        when `campaign_id` is given). Sorted, each once."""

    @abstractmethod
    async def principal_ids(self) -> list[str]:
        """Every principal's id, sorted."""

    @abstractmethod
    async def add_contract(self, number: str, principal_id: str, start: date, end: date | None) -> ContractOutcome:
        """Record a contract (number, principal, start). Its end is set once, when a running contract
        ends; another end for an ended contract is noted as a correction, and decisions read the earliest
        end named. Nothing already recorded is changed."""

    @abstractmethod
    async def add_optout(self, number: str, principal_id: str | None, at: datetime, source: str,
                         reference: str | None) -> int: ...

    # -- what is stored: each streams its rows (never all in memory), in a stable order ------------------

    @abstractmethod
    def list_principals(self, *, limit: int | None = None) -> AsyncIterator[StoredPrincipal]:
        """Every principal with its declared caller IDs, by id."""

    @abstractmethod
    def list_campaigns(self, *, principal_id: str | None = None,
                       limit: int | None = None) -> AsyncIterator[StoredCampaign]:
        """Campaigns (of one principal), by id."""

    @abstractmethod
    def list_consents(self, *, number: str | None = None, principal_id: str | None = None,
                      in_force_at: datetime | None = None, revoked: bool = False,
                      limit: int | None = None) -> AsyncIterator[StoredConsent]:
        """Consents in the order they were stored. `in_force_at`: given by then, neither expired nor
        revoked by then (the decision's reading); `revoked`: only those that carry a revocation."""

    @abstractmethod
    def list_contracts(self, *, number: str | None = None, principal_id: str | None = None,
                       running_at: date | None = None, limit: int | None = None) -> AsyncIterator[StoredContract]:
        """Contracts in the order they were stored; `running_at`: started by that day and not ended before it."""

    @abstractmethod
    def list_optouts(self, *, number: str | None = None, principal_id: str | None = None,
                     since: datetime | None = None, limit: int | None = None) -> AsyncIterator[StoredOptout]:
        """Refusals in the order they were stored. `principal_id`: the ones that bind it, its own and
        those for every principal (as a decision reads them); `since`: said at or after that moment."""

    # -- the decision log --------------------------------------------------------------------------

    @abstractmethod
    def audit_rows(self, start_us: int | None = None, end_us: int | None = None) -> AsyncIterator[AuditRow]:
        """Rows in sequence order, optionally limited to start <= time < end."""

    # -- the web console (db/console_queries.py): each page's read costs the same on a log of any size ----

    @abstractmethod
    async def decision_page(self, flt: DecisionFilter, *, before_seq: int | None, limit: int) -> list[AuditRow]:
        """At most `limit` decisions matching `flt`, newest first (by time, then seq: the seq order unless
        the clock stepped back), after the row `before_seq` in that order (keyset: page 100,000 costs
        what page 1 does)."""

    @abstractmethod
    async def decision_search(self, flt: DecisionFilter, *, before_seq: int | None, limit: int,
                              scan_limit: int) -> DecisionPage:
        """decision_page that looks at no more than `scan_limit` rows of the time range (or of the number's
        rows): a filter that matches rarely (a campaign that stopped calling, a rare reason) costs what a
        page costs, and the page says where the next search goes on from."""

    @abstractmethod
    def decision_rows(self, flt: DecisionFilter) -> AsyncIterator[AuditRow]:
        """Every decision matching `flt`, oldest first (by time, then seq), streamed (the CSV export)."""

    @abstractmethod
    async def decision_tally(self, after_seq: int, limit: int) -> list[tuple[int, int, str, str]]:
        """(seq, ts_us, decision, primary reason or "") of at most `limit` rows after `after_seq`, in seq
        order: what the console's counts catch up from."""

    @abstractmethod
    async def first_seq_since(self, ts_us: int) -> int | None:
        """The seq of the first decision at or after `ts_us` (in time order), or None."""

    @abstractmethod
    async def import_history(self, *, limit: int, before_id: int | None = None,
                             kind: str | None = None) -> list[StoredImport]:
        """At most `limit` imports, newest first, older than `before_id` when given, of one kind when given."""

    @abstractmethod
    async def answer_freshness(self, principal_id: str, now_us: int, validity_us: int,
                               horizons_days: tuple[int, ...] = (1, 3, 7)) -> Freshness:
        """How fresh the principal's RPO answers are at `now_us`, an answer being valid `validity_us` after
        its check. Reads every number the store knows for the principal: seconds to minutes on a large
        store, so the console computes it in the background (web/rollup.py), never inside a request."""

    # -- bypass checks (docs/bypass.md) ----------------------------------------------------------------

    @abstractmethod
    def allowed_between(self, start_us: int, end_us: int) -> AsyncIterator[Allowed]:
        """ALLOW decisions made in start <= time < end, in time order (reconcile streams them)."""

    @abstractmethod
    async def allowed_after(self, after_seq: int, since_us: int, limit: int) -> list[tuple[int, Allowed]]:
        """At most `limit` ALLOW decisions after log row `after_seq` made at or after `since_us`, with their
        sequence numbers, in sequence order (watch follows the log with it)."""

    @abstractmethod
    async def add_finding(self, finding: StoredFinding) -> int:
        """Store a finding; its id."""

    @abstractmethod
    async def close_finding(self, finding_id: int, until_us: int, detail: str) -> None:
        """Set the end of a "not watched" period once watching resumed."""

    @abstractmethod
    def list_findings(self, *, since_us: int | None = None, kind: str | None = None,
                      limit: int | None = None) -> AsyncIterator[StoredFinding]:
        """Findings in the order they were stored; `since_us`: those whose leg or period began then or later,
        and the periods not watched that had not ended by then."""

    # -- the console's users and the record of its changes (docs/console.md) -----------------------------

    @abstractmethod
    async def add_user(self, name: str, role: str, password_hash: str, at_us: int, *,
                       change: ConsoleChange | None = None) -> None:
        """Add a console user; RecordConflict if the name (in any case) is taken, ValueError for a bad name or
        role. `change`: recorded in the same transaction (both happen, or neither)."""

    @abstractmethod
    async def get_user(self, name: str) -> WebUser | None:
        """The user of exactly this name (disabled ones too), or None."""

    @abstractmethod
    def list_users(self) -> AsyncIterator[WebUser]:
        """Every user, disabled ones too, by name."""

    @abstractmethod
    async def update_user(self, name: str, *, at_us: int, role: str | None = None, password_hash: str | None = None,
                          disabled: bool | None = None, change: ConsoleChange | None = None) -> None:
        """Change what is given (at least one) and set changed_us; NotFoundError if there is no such user.
        `change`: recorded in the same transaction (both happen, or neither)."""

    @abstractmethod
    async def record_change(self, change: ConsoleChange) -> int:
        """Append a change to the record (append-only); its id."""

    @abstractmethod
    def list_changes(self, *, since_us: int | None = None, user: str | None = None,
                     limit: int | None = None, action: str | None = None) -> AsyncIterator[ConsoleChange]:
        """Changes newest first; `since_us`: made then or later; `user`: made by that user; `action`: of that
        kind (a CHANGE_* name)."""

    # -- the whole database, for `db copy` (db/tables.py) ------------------------------------------------

    @abstractmethod
    async def read_tables(self, tables: Sequence[Table]) -> TableRows:
        """Every row of `tables` from one snapshot, engine-independent (tables.to_common), in key order."""

    @abstractmethod
    async def first_table_with_rows(self, tables: Sequence[Table]) -> str | None:
        """The first of `tables` that has a row, or None (an empty database)."""

    @abstractmethod
    async def write_tables(self, tables: Sequence[Table], data: TableRows) -> None:
        """Insert the rows into this empty database in one transaction, with their ids, so that new rows
        continue after them and the decision log's chain goes on from its last copied row."""
