"""`rpoguard user add|list|disable|enable|passwd|role` through the real console script: passwords from standard
input or typed twice at a terminal, never shown nor recorded; every change recorded with cli:<login name>;
operators' mistakes exit 2 with a message naming what is wrong; the same on PostgreSQL."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from rpoguard.constants import (
    CHANGE_USER_ADD,
    CHANGE_USER_DISABLE,
    CHANGE_USER_ENABLE,
    CHANGE_USER_PASSWD,
    CHANGE_USER_ROLE,
)
from rpoguard.db import open_store
from rpoguard.db.store import ConsoleChange, WebUser
from rpoguard.web.passwords import verify_password

CliResult = Any  # conftest's CliResult: (code, out, err)
Cli = Callable[..., CliResult]
TIMEOUT = 60

PASSWORD = "correct horse battery staple"
OTHER_PASSWORD = "another password, longer"
LOGIN = {"LOGNAME": "marta.dpo", "USER": "marta.dpo"}
USER_FIELDS = {"name", "role", "disabled", "created_at", "changed_at"}


def ok(result: CliResult) -> str:
    assert result.code == 0, result.err
    assert "Traceback" not in result.err
    return str(result.out)


def refused(result: CliResult, message: str) -> str:
    assert result.code == 2, (result.out, result.err)
    assert message in result.err
    assert "Traceback" not in result.err and "internal error" not in result.err
    return str(result.err)


def stored(url: str | Path, run: Callable[..., Any]) -> tuple[list[WebUser], list[ConsoleChange]]:
    async def read() -> tuple[list[WebUser], list[ConsoleChange]]:
        async with open_store(str(url), create=False) as store:
            return [u async for u in store.list_users()], [c async for c in store.list_changes()]

    return run(read())


def on(run_cli: Cli, db: str | Path) -> Cli:
    def runner(*args: Any, **kwargs: Any) -> CliResult:
        return run_cli(*args, env={"RPOGUARD_DB": str(db), **kwargs.pop("env", {})}, **kwargs)

    return runner


def test_user_add_and_list_never_show_the_password_or_its_hash(
    run_cli: Cli, db_path: Path, run: Callable[..., Any]
) -> None:
    add = run_cli("user", "add", "marta", "--role", "admin", "--password-stdin", stdin=PASSWORD + "\n")
    assert ok(add) == "user marta added with role admin\n"
    ok(run_cli("user", "add", "luca.rossi@acme.it", "--role", "viewer", "--password-stdin", stdin=OTHER_PASSWORD))

    users, _ = stored(db_path, run)
    assert [(u.name, u.role) for u in users] == [("luca.rossi@acme.it", "viewer"), ("marta", "admin")]
    assert verify_password(users[1].password_hash, PASSWORD)
    assert verify_password(users[0].password_hash, OTHER_PASSWORD)
    assert not verify_password(users[1].password_hash, OTHER_PASSWORD)

    listed = run_cli("user", "list", "--json")
    records = [json.loads(line) for line in ok(listed).splitlines()]
    assert [set(r) for r in records] == [USER_FIELDS, USER_FIELDS]
    assert [(r["name"], r["role"], r["disabled"]) for r in records] == [
        ("luca.rossi@acme.it", "viewer", False), ("marta", "admin", False)]
    assert records[1]["created_at"].endswith("Z")
    table = ok(run_cli("user", "list"))
    assert table.splitlines()[0].split() == ["NAME", "ROLE", "STATUS", "CREATED", "CHANGED"]
    assert table.splitlines()[-1] == "2 user(s)"
    for result in (add, listed, run_cli("user", "list")):
        for secret in (PASSWORD, OTHER_PASSWORD, users[0].password_hash, users[1].password_hash, "argon2"):
            assert secret not in result.out and secret not in result.err


def test_password_stdin_takes_one_line_and_removes_only_its_line_end(
    run_cli: Cli, db_path: Path, run: Callable[..., Any]
) -> None:
    ok(run_cli("user", "add", "crlf", "--role", "viewer", "--password-stdin",
               stdin="  spaces kept inside  \r\nsecond line ignored\n"))
    ok(run_cli("user", "add", "no-newline", "--role", "viewer", "--password-stdin", stdin=PASSWORD))
    users = {u.name: u for u in stored(db_path, run)[0]}
    assert verify_password(users["crlf"].password_hash, "  spaces kept inside  ")
    assert not verify_password(users["crlf"].password_hash, "spaces kept inside")
    assert verify_password(users["no-newline"].password_hash, PASSWORD)


def test_without_password_stdin_and_without_a_terminal_nothing_is_asked_nor_stored(
    run_cli: Cli, db_path: Path, run: Callable[..., Any]
) -> None:
    refused(run_cli("user", "add", "marta", "--role", "admin", stdin=PASSWORD + "\n"), "give --password-stdin")
    ok(run_cli("user", "add", "luca", "--role", "viewer", "--password-stdin", stdin=PASSWORD))
    refused(run_cli("user", "passwd", "luca", stdin=OTHER_PASSWORD + "\n"), "give --password-stdin")
    users, changes = stored(db_path, run)
    assert [u.name for u in users] == ["luca"]
    assert verify_password(users[0].password_hash, PASSWORD)
    assert [c.action for c in changes] == [CHANGE_USER_ADD]


@pytest.mark.parametrize(("args", "stdin", "message"), [
    (("user", "add", "mario rossi", "--role", "viewer", "--password-stdin"), PASSWORD,
     "user name 'mario rossi' is not valid: 1 to 64 characters of letters, digits"),
    (("user", "add", "x" * 65, "--role", "viewer", "--password-stdin"), PASSWORD, "is not valid"),
    (("user", "add", "mario", "--role", "root", "--password-stdin"), PASSWORD,
     "role 'root' is not valid: one of viewer, operator, admin"),
    (("user", "add", "mario", "--role", "viewer", "--password-stdin"), "s3cr3t-pw\n",
     "the password is too short: at least 12 characters (this one has 9); nothing was changed"),
    (("user", "add", "mario", "--role", "viewer", "--password-stdin"), "", "the password is empty"),
    (("user", "add", "mario", "--role", "viewer", "--password-stdin"), "x" * 1025, "too long"),
    (("user", "add", "marta", "--role", "viewer", "--password-stdin"), PASSWORD, "user 'marta' already exists"),
    (("user", "add", "Marta", "--role", "viewer", "--password-stdin"), PASSWORD,
     "user 'Marta' cannot be added: user 'marta' exists"),
    (("user", "disable", "nobody"), None, "user 'nobody' does not exist"),
    (("user", "enable", "nobody"), None, "user 'nobody' does not exist"),
    (("user", "passwd", "nobody", "--password-stdin"), PASSWORD, "user 'nobody' does not exist"),
    (("user", "passwd", "marta", "--password-stdin"), "short", "too short"),
    (("user", "role", "nobody", "admin"), None, "user 'nobody' does not exist"),
    (("user", "role", "marta", "boss"), None, "role 'boss' is not valid"),
    (("user", "role", "bad name", "admin"), None, "user name 'bad name' is not valid"),
])
def test_mistakes_exit_2_naming_what_is_wrong_and_change_nothing(
    run_cli: Cli, db_path: Path, run: Callable[..., Any], args: tuple[str, ...], stdin: str | None, message: str
) -> None:
    ok(run_cli("user", "add", "marta", "--role", "admin", "--password-stdin", stdin=PASSWORD))
    before = stored(db_path, run)
    err = refused(run_cli(*args, stdin=stdin), message)
    if stdin:
        assert stdin.strip() not in err or len(stdin.strip()) < 6
    assert stored(db_path, run) == before


def test_user_commands_on_a_missing_database_say_so(run_cli: Cli, tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    for args in (("user", "list"), ("user", "disable", "marta"), ("user", "role", "marta", "admin")):
        refused(run_cli(*args, env={"RPOGUARD_DB": str(missing)}), "database not found")
    assert not missing.exists()


def test_every_change_is_recorded_with_the_login_name_and_never_the_password(
    run_cli: Cli, db_path: Path, run: Callable[..., Any]
) -> None:
    def cli(*args: str, stdin: str | None = None) -> str:
        return ok(run_cli(*args, env=LOGIN, stdin=stdin))

    cli("user", "add", "luca", "--role", "viewer", "--password-stdin", stdin=PASSWORD)
    assert cli("user", "role", "luca", "operator") == "user luca: role operator (was viewer)\n"
    assert "already has role operator; nothing changed" in cli("user", "role", "luca", "operator")
    assert "luca disabled: it can no longer log in" in cli("user", "disable", "luca")
    assert "already disabled; nothing changed" in cli("user", "disable", "luca")
    disabled = [json.loads(line) for line in cli("user", "list", "--json").splitlines()]
    assert [(r["name"], r["disabled"]) for r in disabled] == [("luca", True)]
    assert cli("user", "enable", "luca") == "user luca enabled\n"
    assert cli("user", "passwd", "luca", "--password-stdin", stdin=OTHER_PASSWORD + "\n") == \
        "password of user luca changed\n"

    users, changes = stored(db_path, run)
    assert [(c.user, c.action, c.target, c.detail) for c in changes] == [
        ("cli:marta.dpo", CHANGE_USER_PASSWD, "luca", {}),
        ("cli:marta.dpo", CHANGE_USER_ENABLE, "luca", {}),
        ("cli:marta.dpo", CHANGE_USER_DISABLE, "luca", {}),
        ("cli:marta.dpo", CHANGE_USER_ROLE, "luca", {"role": "operator", "was": "viewer"}),
        ("cli:marta.dpo", CHANGE_USER_ADD, "luca", {"role": "viewer"}),
    ]
    # Each change at the moment the user says it changed; the newest is the password's.
    assert users[0].changed_us == changes[0].at_us and users[0].created_us == changes[-1].at_us
    assert verify_password(users[0].password_hash, OTHER_PASSWORD)
    assert not verify_password(users[0].password_hash, PASSWORD)
    recorded = json.dumps([c.detail for c in changes]) + "".join(c.target + c.user for c in changes)
    for secret in (PASSWORD, OTHER_PASSWORD, users[0].password_hash, "argon2"):
        assert secret not in recorded


# -- the password typed at a terminal ----------------------------------------------------------------------------


def on_terminal(cli_script: str, env: Mapping[str, str], cwd: Path, answers: list[str],
                *args: str) -> tuple[int, str]:
    """Run the console script with its standard input and error on a pseudo-terminal, answering each password
    prompt as it appears (getpass flushes what was typed before it asks); returns (exit code, the terminal's
    text). A new session: the pseudo-terminal is the one the password is read from."""
    master, slave = pty.openpty()
    seen = b""
    pending = list(answers)
    with subprocess.Popen([cli_script, *args], stdin=slave, stdout=subprocess.PIPE, stderr=slave, env=dict(env),
                          cwd=cwd, start_new_session=True) as child:
        os.close(slave)
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    data = os.read(master, 4096)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                seen += data
                if pending and seen.count(b"password") > len(answers) - len(pending):
                    os.write(master, pending.pop(0).encode() + b"\n")
            elif child.poll() is not None:
                break
        out, _ = child.communicate(timeout=TIMEOUT)
    os.close(master)
    return child.returncode, seen.decode(errors="replace") + out.decode()


def test_a_password_typed_twice_at_a_terminal_is_set_and_never_echoed(
    cli_env: dict[str, str], cli_script: str, tmp_path: Path, db_path: Path, run: Callable[..., Any]
) -> None:
    code, text = on_terminal(cli_script, cli_env, tmp_path, [PASSWORD, PASSWORD],
                             "user", "add", "marta", "--role", "admin")
    assert code == 0, text
    assert "new password (at least 12 characters)" in text and "the same password again" in text
    assert PASSWORD not in text
    users, _ = stored(db_path, run)
    assert verify_password(users[0].password_hash, PASSWORD)

    code, text = on_terminal(cli_script, cli_env, tmp_path, [OTHER_PASSWORD, OTHER_PASSWORD + "!"],
                             "user", "passwd", "marta")
    assert code == 2 and "the two passwords differ; nothing was changed" in text
    code, text = on_terminal(cli_script, cli_env, tmp_path, ["short"], "user", "passwd", "marta")
    assert code == 2 and "too short" in text and "the same password again" not in text
    assert stored(db_path, run)[0] == users


# -- PostgreSQL ---------------------------------------------------------------------------------------------------


def test_user_commands_on_postgresql(run_cli: Cli, pg_url: str, run: Callable[..., Any]) -> None:
    cli = on(run_cli, pg_url)
    ok(cli("user", "add", "marta", "--role", "admin", "--password-stdin", stdin=PASSWORD, env=LOGIN))
    ok(cli("user", "add", "luca", "--role", "viewer", "--password-stdin", stdin=PASSWORD, env=LOGIN))
    ok(cli("user", "disable", "luca", env=LOGIN))
    refused(cli("user", "add", "MARTA", "--role", "viewer", "--password-stdin", stdin=PASSWORD),
            "user 'MARTA' cannot be added")
    records = [json.loads(line) for line in ok(cli("user", "list", "--json")).splitlines()]
    assert [(r["name"], r["role"], r["disabled"]) for r in records] == [("luca", "viewer", True),
                                                                          ("marta", "admin", False)]
    users, changes = stored(pg_url, run)
    assert verify_password(users[1].password_hash, PASSWORD)
    assert [(c.user, c.action, c.target) for c in changes] == [
        ("cli:marta.dpo", CHANGE_USER_DISABLE, "luca"), ("cli:marta.dpo", CHANGE_USER_ADD, "luca"),
        ("cli:marta.dpo", CHANGE_USER_ADD, "marta")]


# -- help and who ran it -------------------------------------------------------------------------------------------


def test_user_help_lists_every_action_and_opens_no_database(run_cli: Cli, db_path: Path) -> None:
    out = ok(run_cli("user", "--help"))
    assert out.startswith("usage: rpoguard user") and "viewer, operator, admin" in out
    for action in ("add", "list", "disable", "enable", "passwd", "role"):
        assert action in out
        assert ok(run_cli("user", action, "--help")).startswith(f"usage: rpoguard user {action}")
    assert "--password-stdin" in ok(run_cli("user", "add", "--help"))
    assert "user" in ok(run_cli("--help"))
    assert not db_path.exists()


def test_a_change_names_cli_alone_when_the_system_cannot_say_who_ran_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from rpoguard.cli import user as user_cli

    monkeypatch.setattr(user_cli.getpass, "getuser", lambda: "marta")
    assert user_cli.cli_user() == "cli:marta"

    def unknown() -> str:
        raise OSError("No username set in the environment")

    monkeypatch.setattr(user_cli.getpass, "getuser", unknown)
    assert user_cli.cli_user() == "cli"
