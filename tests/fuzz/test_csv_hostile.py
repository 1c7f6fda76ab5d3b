"""Hostile files through the real `rpoguard` console script: clear errors, nothing partial, safe exports.

Imports (RPO answers, directory, consents, contracts, refusals) get files in the wrong encoding (Latin-1,
UTF-16 with and without BOM, random bytes), with missing columns, embedded NUL bytes, formula-looking
cells (``=cmd|'/c calc'!A1``, ``+SUM(1)``, ``-1+1``, ``@A1``, tab- and CR-prefixed), a 1 MB cell, and
100,000 lines of which only the last is bad. Each must exit 2 with a message naming the file or the bad
line(s), no traceback, and leave the database exactly as it was: every table of both database files is
compared before and after, and ``evidence --json`` is asked where a 100,000-line import would have
changed what it shows.

Exports: decisions recorded with formula-looking raw numbers, campaign ids and caller IDs, then
``audit export --format csv`` and ``scrub -o`` read back with the csv module: no cell may start with
= + - @ TAB or CR unless it is a plain signed number (what a spreadsheet would run as a formula), and the
text is kept (only prefixed with a quote).

Each case runs on its own copy of one seeded database, all of them at once, so the module stays fast.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import random
import re
import shutil
import sqlite3
import subprocess
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rpoguard.audit import EXPORT_FIELDS, AuditEntry, AuditRow, export_rows, spreadsheet_safe
from rpoguard.cli import main as cli_main
from rpoguard.db.sqlite import audit_path
from rpoguard.db.store import ImportMeta, ImportRejected, RowProblem
from rpoguard.ingest import consents
from rpoguard.ingest.csvfile import MAX_FIELD, FileError, header_records, read_rows
from rpoguard.ingest.registry import answers_from_csv
from rpoguard.timeutil import parse_time
from support.aio import run_once
from support.fuzz import fuzz_settings

REPO: Final = Path(__file__).resolve().parents[2]
EXAMPLES: Final = REPO / "examples"
AT: Final = "2026-11-24T11:00"  # Tuesday, 11:00 Europe/Rome
CHECKED_AT: Final = "2026-11-22"
CLI_TIMEOUT: Final = 120
WORKERS: Final = 4

SETUP: Final = [
    ("principal", "add", "acme", "--name", "ACME Energia S.p.A.", "--caller-id", "06 9999 0000"),
    ("campaign", "add", "spring26", "--principal", "acme"),
    ("registry", "import", str(EXAMPLES / "rpo-answers.csv"), "--checked-at", "2026-11-20"),
    ("directory", "import", str(EXAMPLES / "directory.txt")),
    ("consent", "import", str(EXAMPLES / "consents.csv")),
    ("contract", "add", "+390212345678", "--principal", "acme", "--start", "2026-01-01"),
    ("optout", "add", "+393380001111", "--principal", "acme", "--at", "2026-11-01"),
]
# A number every kind of import would touch if its rows landed, and the evidence it has now.
WITNESS: Final = "+390645678901"

FORMULAS: Final = ["=cmd|'/c calc'!A1", "+SUM(1)", "-1+1", "@A1", "\t=1+1", "\r=1+1", '=HYPERLINK("http://x")']
_FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER: Final = re.compile(r"[+-]?[0-9]+")


def executable(cell: str) -> bool:
    """What a spreadsheet would run as a formula (OWASP CSV injection), a plain signed number excepted."""
    return cell.startswith(_FORMULA_START) and _PLAIN_NUMBER.fullmatch(cell) is None


def csv_cell(text: str) -> str:
    """A cell as an operator's spreadsheet would write it: quoted when it holds a separator or a line end."""
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',;"\r\n\t') else text


# -- the seeded database, and running many CLI cases at once -----------------------------------------------------


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seeded database, built once in-process with the CLI's own entry point."""
    folder = tmp_path_factory.mktemp("hostile-csv-template")
    db = folder / "rpoguard.db"
    for args in SETUP:
        with contextlib.redirect_stdout(io.StringIO()):
            assert cli_main(["--db", str(db), *args]) == 0, args
    assert not Path(f"{db}-wal").exists()
    return db


def copy_db(template: Path, db: Path) -> Path:
    db.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, db)
    shutil.copyfile(audit_path(template), audit_path(db))
    return db


def snapshot(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of both database files."""
    tables: dict[str, list[tuple[Any, ...]]] = {}
    for path in (db, audit_path(db)):
        con = sqlite3.connect(path)
        try:
            names = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
            for name in names:
                rows = con.execute(f'SELECT * FROM "{name}"').fetchall()
                tables[f"{path.name}:{name}"] = sorted(rows, key=repr)
        finally:
            con.close()
    return tables


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


def cli(script: str, db: Path, *args: str | os.PathLike[str], cwd: Path) -> Result:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RPOGUARD_")}
    env["PYTHONIOENCODING"] = "utf-8"
    env.pop("COVERAGE_PROCESS_START", None)
    done = subprocess.run(
        [script, "--db", str(db), *map(str, args)],
        capture_output=True,
        env=env,
        cwd=cwd,
        timeout=CLI_TIMEOUT,
        check=False,
    )
    # Decoded by hand: text mode would turn a CR inside a CSV cell into LF and hide what was written.
    return Result(done.returncode, done.stdout.decode("utf-8", "replace"), done.stderr.decode("utf-8", "replace"))


def evidence(script: str, db: Path, number: str, cwd: Path) -> list[dict[str, Any]]:
    result = cli(script, db, "evidence", number, "--json", cwd=cwd)
    assert result.code == 0, result.err
    return json.loads(result.out)["items"]


def in_parallel(jobs: Iterable[Callable[[], Any]]) -> list[Any]:
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        return list(pool.map(lambda job: job(), jobs))


# -- hostile imports -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    command: tuple[str, ...]  # e.g. ("registry", "import"); the file follows, then ``extra``
    content: bytes
    expect: tuple[str, ...]  # substrings of standard error
    absent: tuple[str, ...] = ()  # substrings that must not be there (lines that were fine)
    extra: tuple[str, ...] = ()
    ask_evidence: bool = False  # also compare `evidence --json` for WITNESS before and after

    @property
    def file_name(self) -> str:
        return f"{self.name}.csv"


REGISTRY: Final = ("registry", "import")
DIRECTORY: Final = ("directory", "import")
CONSENT: Final = ("consent", "import")
CONTRACT: Final = ("contract", "import")
OPTOUT: Final = ("optout", "import")
CHECK_DATE: Final = ("--checked-at", CHECKED_AT)

HEADERS: Final = {
    REGISTRY: "number,status",
    DIRECTORY: "number",
    CONSENT: "number,principal,given_at,evidence",
    CONTRACT: "number,principal,start",
    OPTOUT: "number,at",
}
# A good row for each kind, with {n} for the number; the WITNESS number is listed and not registered.
GOOD_ROW: Final = {
    REGISTRY: "{n},registered",
    DIRECTORY: "{n}",
    CONSENT: "{n},acme,2026-11-01,form-{i}",
    CONTRACT: "{n},acme,2026-01-01",
    OPTOUT: "{n},2026-11-01",
}
BAD_LAST_ROW: Final = {
    REGISTRY: "06 1234 5678,maybe",
    DIRECTORY: "06 1234 56XX",
    CONSENT: "06 1234 5678,acme,2026-13-01,x",
    CONTRACT: "06 1234 5678,nobody,2026-01-01",
    OPTOUT: "06 1234 5678,yesterday",
}


def text_file(kind: tuple[str, ...], rows: Iterable[str], encoding: str = "utf-8") -> bytes:
    return ("\n".join([HEADERS[kind], *rows]) + "\n").encode(encoding)


def good(kind: tuple[str, ...], number: str = WITNESS, i: int = 0) -> str:
    return GOOD_ROW[kind].format(n=number, i=i)


def hundred_thousand(kind: tuple[str, ...]) -> bytes:
    # 99,999 good rows (distinct valid mobile numbers, WITNESS first), then one bad row at line 100,001.
    rows = [good(kind, WITNESS)]
    rows += [good(kind, f"+39 333 {i:07d}", i) for i in range(1, 99_999)]
    rows.append(BAD_LAST_ROW[kind])
    return text_file(kind, rows)


def random_bytes(seed: int, size: int = 4096) -> bytes:
    return random.Random(seed).randbytes(size)


# Cells after the number, for a row of each kind that is fine apart from its number.
_REST: Final = {kind: GOOD_ROW[kind].split(",")[1:] for kind in GOOD_ROW}
# A row that lacks a required value, per kind (the registry has no header: a row without its status).
_SHORT_ROW: Final = {
    REGISTRY: "055 234 5678",
    DIRECTORY: ",",
    CONSENT: "055 234 5678,acme,2026-11-01",
    CONTRACT: "055 234 5678,acme",
    OPTOUT: "055 234 5678",
}


def bad_rows(kind: tuple[str, ...]) -> tuple[bytes, tuple[str, ...], tuple[str, ...]]:
    """One file of good and bad rows: an embedded NUL, every formula-looking number, a 1 MB cell, a row
    missing a required value. Returns the file, the "line N:" of each bad row, and of each good one.

    The csv reader reports a record at its last physical line, and a CR inside a quoted cell ends one.
    """
    rows: list[tuple[str, bool]] = [(good(kind), True), (good(kind, "055 234\x005678"), False)]
    rows += [(",".join([csv_cell(f), *_REST[kind]]), False) for f in FORMULAS]
    rows.append((",".join(["3" * (1 << 20), *_REST[kind]]) if _REST[kind] else "3" * (1 << 20), False))
    if kind is not DIRECTORY:  # a directory row is only its number: an empty row is skipped, not bad
        rows.append((_SHORT_ROW[kind], False))
    rows.append((good(kind, "+39 333 123 4567"), True))
    bad, fine, line = [], [], 1
    for text, ok in rows:
        line += 1 + text.count("\r")
        (fine if ok else bad).append(f"line {line}:")
    return text_file(kind, [text for text, _ in rows]), tuple(bad), tuple(fine)


def bad_rows_case(name: str, kind: tuple[str, ...], extra: tuple[str, ...] = ()) -> Case:
    content, bad, fine = bad_rows(kind)
    return Case(name, kind, content, (*bad, f"{len(bad)} bad row(s)", "nothing was imported"), fine, extra)


CASES: Final = [
    # RPO answers (no header needed)
    Case(
        "rpo-latin1",
        REGISTRY,
        "number,status\n06 4567 8901,non iscritto \xe8\n".encode("latin-1"),
        ("rpo-latin1.csv", "not UTF-8"),
        extra=CHECK_DATE,
    ),
    Case(
        "rpo-utf16le",
        REGISTRY,
        text_file(REGISTRY, [good(REGISTRY)], "utf-16-le"),
        ("rpo-utf16le.csv", "looks like UTF-16", "--encoding utf-16-le"),
        extra=CHECK_DATE,
    ),
    Case("rpo-random", REGISTRY, random_bytes(1), ("rpo-random.csv",), extra=CHECK_DATE),
    bad_rows_case("rpo-bad-rows", REGISTRY, CHECK_DATE),
    Case(
        "rpo-formula-status",
        REGISTRY,
        text_file(REGISTRY, [good(REGISTRY), "055 234 5678,=1+1", "055 234 5678,@A1"]),
        ("line 3:", "line 4:", "status"),
        absent=("line 2:",),
        extra=CHECK_DATE,
    ),
    Case(
        "rpo-100k",
        REGISTRY,
        hundred_thousand(REGISTRY),
        ("line 100001:", "1 bad row(s)"),
        absent=("line 2:",),
        extra=CHECK_DATE,
        ask_evidence=True,
    ),
    # public directory (replaces every previous listing when it lands)
    Case(
        "dir-utf16-bom",
        DIRECTORY,
        text_file(DIRECTORY, [good(DIRECTORY)], "utf-16"),
        ("dir-utf16-bom.csv", "not UTF-8"),
    ),
    bad_rows_case("dir-bad-rows", DIRECTORY),
    Case(
        "dir-100k",
        DIRECTORY,
        hundred_thousand(DIRECTORY),
        ("line 100001:", "1 bad row(s)"),
        absent=("line 2:",),
        ask_evidence=True,
    ),
    # consents (a header naming the columns is required)
    Case(
        "con-missing-column",
        CONSENT,
        b"number,principal,given_at\n333 123 4567,acme,2026-09-01\n",
        ("con-missing-column.csv", "line 1:", "missing: evidence"),
    ),
    Case(
        "con-unknown-column",
        CONSENT,
        b"number,principal,given_at,evidence,=HYPERLINK()\n",
        ("con-unknown-column.csv", "unknown column"),
    ),
    Case(
        "con-latin1",
        CONSENT,
        text_file(CONSENT, [good(CONSENT) + " \xe8"], "latin-1"),
        ("con-latin1.csv", "not UTF-8"),
    ),
    Case("con-random", CONSENT, random_bytes(3), ("con-random.csv",)),
    bad_rows_case("con-bad-rows", CONSENT),
    Case(
        "con-formula-principal",
        CONSENT,
        text_file(CONSENT, [good(CONSENT), "055 234 5678,=1+1,2026-11-01,x"]),
        ("line 3:", "does not exist"),
        absent=("line 2:",),
    ),
    Case(
        "con-100k",
        CONSENT,
        hundred_thousand(CONSENT),
        ("line 100001:", "1 bad row(s)"),
        absent=("line 2:",),
        ask_evidence=True,
    ),
    # contracts
    Case(
        "k-missing-column",
        CONTRACT,
        b"number,principal\n06 4567 8901,acme\n",
        ("k-missing-column.csv", "missing: start"),
    ),
    Case(
        "k-latin1",
        CONTRACT,
        text_file(CONTRACT, [good(CONTRACT), "Caff\xe8,acme,2026-01-01"], "latin-1"),
        ("k-latin1.csv", "not UTF-8"),
    ),
    bad_rows_case("k-bad-rows", CONTRACT),
    Case(
        "k-100k",
        CONTRACT,
        hundred_thousand(CONTRACT),
        ("line 100001:", "1 bad row(s)"),
        absent=("line 2:",),
        ask_evidence=True,
    ),
    # refusals (kept in the audit database)
    Case("o-missing-column", OPTOUT, b"number\n06 4567 8901\n", ("o-missing-column.csv", "missing: at")),
    Case("o-utf16-bom", OPTOUT, text_file(OPTOUT, [good(OPTOUT)], "utf-16"), ("o-utf16-bom.csv", "not UTF-8")),
    bad_rows_case("o-bad-rows", OPTOUT),
    Case(
        "o-formula-date",
        OPTOUT,
        text_file(OPTOUT, [good(OPTOUT), "055 234 5678,=1+1,acme,=cmd|'/c calc'!A1"]),
        ("line 3:", "ISO 8601"),
        absent=("line 2:",),
    ),
    Case(
        "o-100k",
        OPTOUT,
        hundred_thousand(OPTOUT),
        ("line 100001:", "1 bad row(s)"),
        absent=("line 2:",),
        ask_evidence=True,
    ),
]


@dataclass(frozen=True)
class Outcome:
    case: Case
    result: Result
    unchanged: bool
    evidence_before: list[dict[str, Any]] | None
    evidence_after: list[dict[str, Any]] | None


@pytest.fixture(scope="module")
def outcomes(template: Path, tmp_path_factory: pytest.TempPathFactory, cli_script: str) -> dict[str, Outcome]:
    folder = tmp_path_factory.mktemp("hostile-csv")
    before = snapshot(template)
    # The template's own evidence, through the console script like everything else.
    witness_before = evidence(cli_script, copy_db(template, folder / "witness" / "rpoguard.db"), WITNESS, folder)

    def run(case: Case) -> Outcome:
        where = folder / case.name
        db = copy_db(template, where / "rpoguard.db")
        path = where / case.file_name
        path.write_bytes(case.content)
        result = cli(cli_script, db, *case.command, path, *case.extra, cwd=where)
        after_evidence = evidence(cli_script, db, WITNESS, where) if case.ask_evidence else None
        return Outcome(
            case, result, snapshot(db) == before, witness_before if case.ask_evidence else None, after_evidence
        )

    return {o.case.name: o for o in in_parallel([lambda case=case: run(case) for case in CASES])}


@pytest.mark.parametrize("name", [c.name for c in CASES])
def test_hostile_import_is_refused_whole_with_a_clear_message(outcomes: dict[str, Outcome], name: str) -> None:
    outcome = outcomes[name]
    case, (code, out, err) = outcome.case, (outcome.result.code, outcome.result.out, outcome.result.err)
    assert code == 2, (out, err[-2000:])
    assert "Traceback" not in err and "Traceback" not in out, err[-3000:]
    for text in case.expect:
        assert text in err, (text, err[-3000:])
    for text in case.absent:
        assert text not in err, (text, err[-3000:])
    assert err.startswith(("rpoguard: ", "  bad row: ")), err[:300]
    # Nothing partial: both database files hold exactly what they held before.
    assert outcome.unchanged
    if case.ask_evidence:
        assert outcome.evidence_after == outcome.evidence_before


def test_headed_import_of_utf16_without_bom_names_the_real_problem(
    template: Path, tmp_path: Path, cli_script: str
) -> None:
    def run(kind: tuple[str, ...]) -> Result:
        where = tmp_path / kind[0]
        db = copy_db(template, where / "rpoguard.db")
        path = where / f"{kind[0]}-utf16.csv"
        path.write_bytes(text_file(kind, [good(kind)], "utf-16-le"))
        return cli(cli_script, db, *kind, path, cwd=where)

    for result in in_parallel([lambda kind=kind: run(kind) for kind in (CONSENT, CONTRACT, OPTOUT)]):
        assert result.code == 2
        assert "empty file" not in result.err, result.err
        assert "NUL" in result.err or "UTF" in result.err, result.err


def test_undecodable_byte_late_in_a_file_names_the_file_and_a_line_at_or_before_it(
    template: Path, tmp_path: Path, cli_script: str
) -> None:
    # The decoder reads ahead in blocks, so the byte is found again in the raw file: the message names the
    # line that holds it (it used to name where reading stopped, before it).
    rows = [good(REGISTRY, f"+39 333 {i:07d}") for i in range(1, 5_000)] + ["06 1234 5678,non iscritto \xe8"]
    path = tmp_path / "late-latin1.csv"
    path.write_bytes(text_file(REGISTRY, rows, "latin-1"))
    db = copy_db(template, tmp_path / "rpoguard.db")
    before = snapshot(db)
    code, _, err = (r := cli(cli_script, db, *REGISTRY, path, *CHECK_DATE, cwd=tmp_path)).code, r.out, r.err
    assert code == 2
    assert "late-latin1.csv" in err and "not UTF-8" in err
    assert "line 5001, byte offset " in err and "use --encoding latin-1" in err, err
    assert snapshot(db) == before


# -- exports ---------------------------------------------------------------------------------------------------------


def check_cells(rows: list[list[str]]) -> None:
    for number, row in enumerate(rows, start=1):
        for cell in row:
            assert not executable(cell), f"row {number}: a spreadsheet would run {cell!r}"


def test_exports_never_write_a_cell_a_spreadsheet_would_run(template: Path, tmp_path: Path, cli_script: str) -> None:
    db = copy_db(template, tmp_path / "rpoguard.db")
    raws = [*FORMULAS, "+39 06 4567 8901", "-0612345678", "+390645678901"]
    # Recorded now (`check --at` records nothing): the hostile text must reach the log to be exported.
    checks = [("check", "--campaign", "spring26", "--json", "--", raw) for raw in raws]
    checks += [
        ("check", "--campaign", '=HYPERLINK("http://x","y")', "--json", "--", "06 4567 8901"),
        ("check", "--campaign", "spring26", "--caller-id", "@SUM(1)", "--json", "--", "06 4567 8901"),
        ("check", "--campaign", "spring26", "--caller-id=-1+1", "--json", "--", "=1+1"),
    ]
    results = in_parallel([lambda args=args: cli(cli_script, db, *args, cwd=tmp_path) for args in checks])
    for args, result in zip(checks, results, strict=True):
        assert result.code in (0, 1), (args, result.err)
        decision = json.loads(result.out)
        if args[-1] in FORMULAS:
            # A formula-looking raw number is recorded as invalid_number with that raw text.
            assert decision["decision"] == "block" and decision["reasons"][0] == "invalid_number", decision

    scrub_input = tmp_path / "list.csv"
    scrub_input.write_text(
        "number\n" + "\n".join(csv_cell(raw) for raw in [*raws, "\r\n=1+1", "06 4567 8901\r=1+1"]) + "\n",
        encoding="utf-8",
        newline="",
    )
    exported_csv = tmp_path / "audit.csv"
    scrubbed_csv = tmp_path / "scrub.csv"
    to_stdout, to_file, as_jsonl, scrubbed = in_parallel(
        [
            lambda: cli(cli_script, db, "audit", "export", "--format", "csv", cwd=tmp_path),
            lambda: cli(cli_script, db, "audit", "export", "--format", "csv", "-o", exported_csv, cwd=tmp_path),
            lambda: cli(cli_script, db, "audit", "export", "--format", "jsonl", cwd=tmp_path),
            lambda: cli(
                cli_script,
                db,
                "scrub",
                scrub_input,
                "--campaign",
                "spring26",
                "--at",
                AT,
                "-o",
                scrubbed_csv,
                cwd=tmp_path,
            ),
        ]
    )
    for result in (to_stdout, to_file, as_jsonl, scrubbed):
        assert result.code == 0, result.err

    records = [json.loads(line) for line in as_jsonl.out.splitlines()]
    assert len(records) == len(checks)
    for text in (to_stdout.out, exported_csv.read_bytes().decode("utf-8")):
        rows = list(csv.reader(io.StringIO(text, newline="")))
        assert rows[0] == list(EXPORT_FIELDS)
        check_cells(rows)
        # The text is all there, behind the quote: JSON Lines keeps it exactly, CSV only prefixes it.
        by_id = {row[1]: dict(zip(EXPORT_FIELDS, row, strict=True)) for row in rows[1:]}
        for record in records:
            row = by_id[record["decision_id"]]
            for name in ("raw_number", "campaign_id", "caller_id"):
                value = record[name] or ""
                assert row[name] == spreadsheet_safe(value), (name, value, row[name])
    assert {r["raw_number"] for r in records} >= set(FORMULAS)

    rows = list(csv.reader(io.StringIO(scrubbed_csv.read_bytes().decode("utf-8"), newline="")))
    assert rows[0] == ["line", "input", "number", "decision", "reasons", "basis"]
    check_cells(rows)
    inputs = [row[1] for row in rows[1:]]
    # The scrub reader strips each cell, as an import does; what remains is written, prefixed if needed.
    assert inputs == [spreadsheet_safe(raw.strip()) for raw in [*raws, "\r\n=1+1", "06 4567 8901\r=1+1"]]


# -- in-process properties (cheap, so many examples) -------------------------------------------------------------------

any_cell_text = st.text(
    st.one_of(
        st.characters(exclude_categories=("Cs",)), st.sampled_from(["=", "+", "-", "@", "\t", "\r", "\n", '"', ","])
    ),
    max_size=40,
)


async def _rows(rows: list[AuditRow]) -> AsyncIterator[AuditRow]:
    for row in rows:
        yield row


@fuzz_settings(max_examples=300)
@given(values=st.lists(st.tuples(any_cell_text, any_cell_text, any_cell_text, any_cell_text), min_size=1, max_size=5))
def test_csv_export_of_any_text_is_safe_and_lossless(values: list[tuple[str, str, str, str]]) -> None:
    rows = []
    for seq, (raw, campaign, caller, channel) in enumerate(values, start=1):
        entry = AuditEntry(
            decision_id=f"id-{seq}",
            ts_us=1_795_514_400_000_000,
            number=raw,
            raw_number=raw,
            campaign_id=campaign,
            principal_id=campaign,
            caller_id=caller,
            decision="block",
            reasons=raw,
            basis=None,
            evidence=json.dumps({"input": raw}),
            source="fastagi",
            uniqueid=channel,
            channel=channel,
        )
        rows.append(AuditRow(seq, entry, "0" * 64, "f" * 64))
    out = io.StringIO(newline="")
    assert run_once(export_rows(_rows(rows), out, "csv")) == len(rows)
    parsed = list(csv.reader(io.StringIO(out.getvalue(), newline="")))
    check_cells(parsed)
    for row, (raw, campaign, caller, channel) in zip(parsed[1:], values, strict=True):
        record = dict(zip(EXPORT_FIELDS, row, strict=True))
        for name, value in (
            ("raw_number", raw),
            ("campaign_id", campaign),
            ("caller_id", caller),
            ("channel", channel),
        ):
            assert record[name] == spreadsheet_safe(value)
            assert record[name] == value or record[name] == "'" + value


@fuzz_settings(max_examples=200)
@given(
    content=st.one_of(
        st.binary(max_size=600),
        st.lists(
            st.one_of(any_cell_text, st.sampled_from(["number,status", "\x00", "\ufeff", '"', "a" * 5000])), max_size=8
        ).map(lambda cells: "\n".join(cells).encode("utf-8", "surrogatepass")),
    )
)
def test_readers_raise_only_file_errors_and_never_yield_a_bad_cell(content: bytes, tmp_path_factory: Any) -> None:
    path = tmp_path_factory.mktemp("read") / "input.csv"
    path.write_bytes(content)
    problems: list[RowProblem] = []
    try:
        for line, fields in read_rows(path, problems):
            assert line >= 1
            assert all("\x00" not in cell and len(cell) <= MAX_FIELD for cell in fields), fields
            assert all(cell == cell.strip() for cell in fields)
    except FileError as exc:
        assert str(path) in str(exc)
    assert all(isinstance(p, RowProblem) and p.line >= 1 and p.message for p in problems)

    # The importers over the same bytes: a record, or FileError / ImportRejected, and nothing else.
    meta = ImportMeta(kind="rpo", file_name=path.name, checked_at=parse_time("2026-11-22"))
    with contextlib.suppress(FileError, ImportRejected):
        for answer in answers_from_csv(path, meta, skip_invalid=False):
            assert answer.number.startswith("+39")
    meta = ImportMeta(kind="consent", file_name=path.name)
    build = consents._builder({"acme"})
    with contextlib.suppress(FileError, ImportRejected):
        for record in header_records(path, meta, consents.REQUIRED, consents.OPTIONAL, build, skip_invalid=False):
            assert record.number.startswith("+39")
