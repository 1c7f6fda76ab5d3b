"""user add|list|disable|enable|passwd|role: who may log in to the compliance console, and with which role
(docs/console.md). Every change is recorded, with the login name of whoever ran the command, in the same
record as the changes made through the console; a password or its hash is never printed nor recorded."""

from __future__ import annotations

import argparse
import contextlib
import getpass
import sys
from time import time_ns

from rpoguard.cli.common import EXIT_OK, StoreCommand, Subcommands, UsageError, command, group
from rpoguard.cli.listing import listing
from rpoguard.config import Config
from rpoguard.constants import (
    CHANGE_USER_ADD,
    CHANGE_USER_DISABLE,
    CHANGE_USER_ENABLE,
    CHANGE_USER_PASSWD,
    CHANGE_USER_ROLE,
    ROLES,
)
from rpoguard.db.store import ConsoleChange, Store, WebUser, check_role, check_user_name
from rpoguard.timeutil import from_us, human_us, iso
from rpoguard.web.passwords import MIN_PASSWORD_LENGTH, PasswordRejected, check_new_password, hash_password

CLI_USER_PREFIX = "cli:"


def cli_user() -> str:
    """Who ran the command, as the record of changes names them: cli:<login name>, or cli when the system
    cannot say (no login name in the environment nor in the user database)."""
    with contextlib.suppress(Exception):
        login = getpass.getuser()
        if login:
            return f"{CLI_USER_PREFIX}{login}"
    return CLI_USER_PREFIX.rstrip(":")


def _now_us() -> int:
    return time_ns() // 1000


def _change(action: str, target: str, at_us: int, **detail: object) -> ConsoleChange:
    return ConsoleChange(at_us=at_us, user=cli_user(), action=action, target=target, detail=dict(detail))


def _valid_name(name: str) -> str:
    try:
        return check_user_name(name)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _valid_role(role: str) -> str:
    try:
        return check_role(role)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


async def _existing(store: Store, name: str) -> WebUser:
    user = await store.get_user(_valid_name(name))
    if user is None:
        raise UsageError(f"user {name!r} does not exist (see 'rpoguard user list')")
    return user


def read_new_password(from_stdin: bool) -> str:
    """The new password: one line of standard input with --password-stdin (only its line end removed), else
    typed twice at the terminal. Checked against the rules before anything is stored."""
    if from_stdin:
        try:
            line = sys.stdin.readline()
        except UnicodeDecodeError:
            raise UsageError("--password-stdin: standard input is not text in the locale's encoding") from None
        return _allowed(line.removesuffix("\n").removesuffix("\r"))
    if not sys.stdin.isatty():
        raise UsageError("standard input is not a terminal, so the password cannot be asked for: give "
                         "--password-stdin and write it on standard input")
    # Checked before it is asked again: a refused password is not typed twice for nothing.
    password = _allowed(getpass.getpass(f"new password (at least {MIN_PASSWORD_LENGTH} characters): "))
    if getpass.getpass("the same password again: ") != password:
        raise UsageError("the two passwords differ; nothing was changed")
    return password


def _allowed(password: str) -> str:
    try:
        check_new_password(password)
    except PasswordRejected as exc:
        raise UsageError(f"{exc}; nothing was changed") from None
    return password


async def cmd_user_add(args: argparse.Namespace, store: Store, config: Config) -> int:
    name, role = _valid_name(args.name), _valid_role(args.role)
    # Refused before the password is asked for: the operator types it for nothing otherwise.
    if await store.get_user(name) is not None:
        raise UsageError(f"user {name!r} already exists; change it with 'rpoguard user role|passwd|enable'")
    password_hash = hash_password(read_new_password(args.password_stdin))
    at_us = _now_us()
    await store.add_user(name, role, password_hash, at_us, change=_change(CHANGE_USER_ADD, name, at_us, role=role))
    print(f"user {name} added with role {role}")
    return EXIT_OK


async def cmd_user_list(args: argparse.Namespace, store: Store, config: Config) -> int:
    return await listing(args, store.list_users(), "user", (
        ("NAME", lambda u: u.name), ("ROLE", lambda u: u.role),
        ("STATUS", lambda u: "disabled" if u.disabled else "active"),
        ("CREATED", lambda u: human_us(u.created_us)), ("CHANGED", lambda u: human_us(u.changed_us)),
    ), lambda u: {"name": u.name, "role": u.role, "disabled": u.disabled, "created_at": iso(from_us(u.created_us)),
                  "changed_at": iso(from_us(u.changed_us))})


async def _set_disabled(store: Store, name: str, disabled: bool) -> int:
    user = await _existing(store, name)
    word = "disabled" if disabled else "enabled"
    if user.disabled == disabled:
        print(f"user {user.name} is already {word}; nothing changed")
        return EXIT_OK
    at_us = _now_us()
    await store.update_user(user.name, at_us=at_us, disabled=disabled,
                            change=_change(CHANGE_USER_DISABLE if disabled else CHANGE_USER_ENABLE, user.name, at_us))
    print(f"user {user.name} {word}" + (": it can no longer log in; the changes it made keep its name"
                                         if disabled else ""))
    return EXIT_OK


async def cmd_user_disable(args: argparse.Namespace, store: Store, config: Config) -> int:
    return await _set_disabled(store, args.name, True)


async def cmd_user_enable(args: argparse.Namespace, store: Store, config: Config) -> int:
    return await _set_disabled(store, args.name, False)


async def cmd_user_passwd(args: argparse.Namespace, store: Store, config: Config) -> int:
    user = await _existing(store, args.name)
    password_hash = hash_password(read_new_password(args.password_stdin))
    at_us = _now_us()
    await store.update_user(user.name, at_us=at_us, password_hash=password_hash,
                            change=_change(CHANGE_USER_PASSWD, user.name, at_us))
    print(f"password of user {user.name} changed")
    return EXIT_OK


async def cmd_user_role(args: argparse.Namespace, store: Store, config: Config) -> int:
    user, role = await _existing(store, args.name), _valid_role(args.role)
    if user.role == role:
        print(f"user {user.name} already has role {role}; nothing changed")
        return EXIT_OK
    at_us = _now_us()
    await store.update_user(user.name, at_us=at_us, role=role,
                            change=_change(CHANGE_USER_ROLE, user.name, at_us, role=role, was=user.role))
    print(f"user {user.name}: role {role} (was {user.role})")
    return EXIT_OK


def _password_stdin(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--password-stdin", action="store_true",
                        help="read the password from the first line of standard input (for scripts); without it "
                             "the password is asked for twice at the terminal")


def register(commands: Subcommands) -> None:
    roles = ", ".join(ROLES)
    users = group(commands, "user", f"who may log in to the compliance console (rpoguard web), with a role: {roles}")
    p = command(users, "add", StoreCommand(cmd_user_add, creates_database=True),
                "add a console user with a role (viewer reads; operator also imports and manages consents, "
                "contracts and refusals; admin also manages principals, campaigns and users)")
    p.add_argument("name", metavar="NAME", help="1 to 64 letters, digits, '.', '_', '@' or '-'")
    p.add_argument("--role", required=True, metavar="ROLE", help=f"one of {roles}")
    _password_stdin(p)

    p = command(users, "list", StoreCommand(cmd_user_list),
                "list the console users: name, role, active or disabled, when added and last changed (never a "
                "password)")
    p.add_argument("--json", action="store_true", help="one JSON object a line (JSON Lines), times in UTC")
    p.set_defaults(limit=None)

    p = command(users, "disable", StoreCommand(cmd_user_disable),
                "stop a user from logging in; the user is kept, so the changes it made keep its name")
    p.add_argument("name", metavar="NAME")
    p = command(users, "enable", StoreCommand(cmd_user_enable), "let a disabled user log in again")
    p.add_argument("name", metavar="NAME")

    p = command(users, "passwd", StoreCommand(cmd_user_passwd), "set a user's password")
    p.add_argument("name", metavar="NAME")
    _password_stdin(p)

    p = command(users, "role", StoreCommand(cmd_user_role), f"change a user's role ({roles})")
    p.add_argument("name", metavar="NAME")
    p.add_argument("role", metavar="ROLE", help=f"one of {roles}")
