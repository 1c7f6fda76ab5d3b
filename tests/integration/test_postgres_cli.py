"""The console script on PostgreSQL: `db migrate`, `db copy` between the backends, the URL in the
configuration, and clear errors that never show the password."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from support.fakeclock import ClockedCliRunner

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CliRunner = Callable[..., Any]

NUMBERS = ("06 4567 8901", "02 1234 5678", "333 123 4567")


def on(run_cli: CliRunner, db: str | Path) -> CliRunner:
    def runner(*args: Any, **kwargs: Any) -> Any:
        return run_cli(*args, env={"RPOGUARD_DB": str(db)}, **kwargs)

    return runner


def at(run_cli_at: ClockedCliRunner, db: str | Path, moment: str) -> CliRunner:
    """The console script on `db` with its clock starting at `moment`: a decision recorded then."""
    def runner(*args: Any) -> Any:
        return run_cli_at(moment, *args, env={"RPOGUARD_DB": str(db)})

    return runner


def ok(result: Any) -> str:
    assert result.code in (0, 1), result.err  # 1: a BLOCK from `check`
    return str(result.out)


def seed(cli: CliRunner, clocked: Callable[[str], CliRunner], write_file: Callable[..., Path]) -> None:
    """A bit of everything: principal, campaign, RPO answers (two files of a two-list answer too), listings
    (one ended), consents (one revoked twice), contracts (an end corrected), refusals and decisions, each
    recorded at its own moment (`clocked(moment)`)."""
    ok(cli("principal", "add", "acme", "--name", "ACME Energia", "--caller-id", "06 9480 1234"))
    ok(cli("campaign", "add", "autunno26", "--principal", "acme", "--max-attempts", "3", "--per-days", "7"))
    ok(cli("registry", "import", EXAMPLES / "rpo-answers.csv", "--checked-at", "2026-11-20"))
    ok(cli("registry", "import", "--submitted", write_file("due.txt", f"{NUMBERS[2]}\n"), "--registered",
           write_file("reg.txt", ""), "--checked-at", "2026-11-21"))
    ok(cli("directory", "import", write_file("old-dir.txt", "0961 123456\n"), "--listed-at", "2026-11-19"))
    ok(cli("directory", "import", EXAMPLES / "directory.txt", "--listed-at", "2026-11-20"))
    ok(cli("consent", "import", EXAMPLES / "consents.csv"))
    for revoked in ("2026-11-22T10:00", "2026-11-23T10:00"):
        ok(cli("consent", "revoke", NUMBERS[2], "--principal", "acme", "--at", revoked))
    ok(cli("contract", "add", "02 1234 5678", "--principal", "acme", "--start", "2026-01-01", "--end", "2026-10-31"))
    ok(cli("contract", "add", "02 1234 5678", "--principal", "acme", "--start", "2026-01-01", "--end", "2026-10-15"))
    ok(cli("optout", "import", write_file("optouts.csv", "number,at\n333 123 4567,2026-11-10T10:00\n")))
    for i, number in enumerate(NUMBERS):
        ok(clocked(f"2026-11-24T1{i}:00")("check", number, "--campaign", "autunno26", "--caller-id", "06 9480 1234"))


def evidence(cli: CliRunner) -> list[Any]:
    documents = [json.loads(ok(cli("evidence", number, "--json"))) for number in (*NUMBERS, "0961 123456")]
    for document in documents:
        document.pop("generated_at")  # when the command ran
    return documents


def test_db_copy_sqlite_to_postgres_and_back_keeps_everything(
    run_cli: CliRunner, run_cli_at: ClockedCliRunner, db_path: Path, pg_url: str, tmp_path: Path,
    write_file: Callable[..., Path]
) -> None:
    sqlite_cli, pg_cli = on(run_cli, db_path), on(run_cli, pg_url)
    seed(sqlite_cli, lambda moment: at(run_cli_at, db_path, moment), write_file)
    before = evidence(sqlite_cli)
    # What the copy must carry: every input file, the notes beside facts, each decision's recording moment.
    kinds = {item["kind"] for document in before for item in document["items"]}
    assert {"consent_revoked_again", "contract_end_corrected", "directory_listing_ended"} <= kinds
    assert all(item["recorded_at"] for document in before for item in document["items"] if item["kind"] == "decision")
    assert any(len(item.get("files", [])) == 2 for document in before for item in document["items"])
    head = ok(sqlite_cli("audit", "verify")).splitlines()[0]
    assert head.startswith("audit log intact: 3 decision(s)")

    copied = sqlite_cli("db", "copy", "--to", pg_url)
    assert copied.code == 0, copied.err
    assert "audit_log: 3 row(s)" in copied.out
    assert pg_url.split(":")[2].split("@", maxsplit=1)[0] not in copied.out + copied.err  # the password
    assert ok(pg_cli("audit", "verify")).splitlines()[0] == head
    assert evidence(pg_cli) == before
    # The copy serves: the next decision continues the same chain, and imports keep their ids.
    ok(at(run_cli_at, pg_url, "2026-11-24T15:00")("check", NUMBERS[0], "--campaign", "autunno26"))
    assert ok(pg_cli("audit", "verify")).startswith("audit log intact: 4 decision(s)")
    ok(pg_cli("directory", "import", EXAMPLES / "directory.txt", "--append", "--listed-at", "2026-11-20"))

    back = tmp_path / "back.db"
    result = run_cli("db", "copy", "--from", pg_url, "--to", str(back))
    assert result.code == 0, result.err
    back_cli = on(run_cli, back)
    assert ok(back_cli("audit", "verify")) == ok(pg_cli("audit", "verify"))
    assert evidence(back_cli) == evidence(pg_cli)


def test_db_copy_refuses_a_target_with_data(run_cli: CliRunner, db_path: Path, pg_url: str) -> None:
    ok(on(run_cli, pg_url)("principal", "add", "beta", "--name", "Beta"))
    ok(on(run_cli, db_path)("principal", "add", "acme", "--name", "ACME"))
    result = on(run_cli, db_path)("db", "copy", "--to", pg_url)
    assert result.code == 2
    assert "the target already has data (table principals)" in result.err
    # Nothing of the source was added to it.
    assert "acme" not in ok(on(run_cli, pg_url)("evidence", "06 4567 8901", "--json"))
    same = on(run_cli, db_path)("db", "copy", "--from", str(db_path), "--to", str(db_path))
    assert same.code == 2 and "same database" in same.err


def test_db_migrate_creates_then_changes_nothing(run_cli: CliRunner, store_url: str, backend: str) -> None:
    cli = on(run_cli, store_url)
    first = cli("db", "migrate")
    assert first.code == 0, first.err
    assert "schema up to date (version 5)" in first.out
    assert cli("db", "migrate").out == first.out
    if backend == "postgres":
        assert ":***@" in first.out and store_url.split(":")[2].split("@", maxsplit=1)[0] not in first.out


def test_database_url_in_the_configuration(run_cli: CliRunner, pg_url: str, write_file: Callable[..., Path],
                                           tmp_path: Path) -> None:
    config = write_file("rpoguard.toml", f'[database]\nurl = "{pg_url}"\n')
    result = run_cli("--config", config, "principal", "add", "acme", "--name", "ACME",
                     env={"RPOGUARD_DB": ""})
    assert result.code == 0, result.err
    assert "principal acme added" in result.out
    # The principal went into PostgreSQL, not into a SQLite file.
    assert "principal acme updated" in ok(on(run_cli, pg_url)("principal", "add", "acme", "--name", "ACME"))
    assert not list(tmp_path.glob("*.db"))
    both = write_file("both.toml", f'[database]\nurl = "{pg_url}"\npath = "x.db"\n')
    refused = run_cli("--config", both, "db", "migrate", env={"RPOGUARD_DB": ""})
    assert refused.code == 2 and "either path (SQLite) or url (PostgreSQL)" in refused.err


@pytest.mark.parametrize("url", [
    "postgresql://rpoguard:s3cret-pw@127.0.0.1:1/rpoguard",  # nothing listens on port 1
    "postgres://rpoguard:s3cret-pw@127.0.0.1:1/rpoguard",
])
def test_unreachable_database_is_a_clear_error_without_the_password(run_cli: CliRunner, url: str) -> None:
    result = run_cli("--db", url, "principal", "add", "acme", "--name", "ACME")
    assert result.code == 2
    assert "unreachable" in result.err and "127.0.0.1:1" in result.err
    assert "s3cret-pw" not in result.err + result.out
    assert "Traceback" not in result.err
