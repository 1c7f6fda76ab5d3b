"""The console's users and the record of changes made through it, on both backends: add_user / get_user /
list_users / update_user, record_change / list_changes (order, filters, append-only), a change recorded in
the same transaction as what it records, `db copy` carrying both, the supervised store passing them on; and
the passwords (web/passwords.py): the rules, argon2id, a wrong password or a malformed hash never verifies."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from argon2 import PasswordHasher

from rpoguard.constants import (
    CHANGE_USER_ADD,
    CHANGE_USER_DISABLE,
    CHANGE_USER_ROLE,
    ROLE_ADMIN,
    ROLE_OPERATOR,
    ROLE_VIEWER,
)
from rpoguard.db import open_store
from rpoguard.db.copy import copy_database
from rpoguard.db.store import ConsoleChange, NotFoundError, RecordConflict, Store, WebUser
from rpoguard.db.supervisor import SupervisedStore
from rpoguard.web.passwords import (
    MIN_PASSWORD_LENGTH,
    PasswordRejected,
    check_new_password,
    hash_password,
    needs_rehash,
    verify_password,
)
from support.rawdb import RawDb

T = TypeVar("T")

T0 = 1_795_514_400_000_000  # 2026-11-24T10:00:00Z
SECOND = 1_000_000
# Hashes as the store sees them: any non-empty text (the CLI and the console hash with web/passwords.py).
HASH_A = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA"
HASH_B = "$argon2id$v=19$m=65536,t=3,p=4$b3RoZXJzYWx0c2FsdA$b3RoZXJoYXNob3RoZXJoYXNo"


async def collect(rows: AsyncIterator[T]) -> list[T]:
    return [row async for row in rows]


def change(at_us: int, user: str = "marta", action: str = CHANGE_USER_ROLE, target: str = "luca",
           **detail: object) -> ConsoleChange:
    return ConsoleChange(at_us=at_us, user=user, action=action, target=target, detail=dict(detail))


# -- users ----------------------------------------------------------------------------------------------------


def test_users_are_stored_as_added_and_listed_by_name_in_byte_order(store: Store, run: Callable[..., Any]) -> None:
    run(store.add_user("marta", ROLE_ADMIN, HASH_A, T0))
    run(store.add_user("luca.rossi@acme.it", ROLE_OPERATOR, HASH_B, T0 + SECOND))
    run(store.add_user("Zeno_1-b", ROLE_VIEWER, HASH_A, T0 + 2 * SECOND))

    assert run(store.get_user("marta")) == WebUser("marta", ROLE_ADMIN, HASH_A, False, T0, T0)
    assert run(store.get_user("luca.rossi@acme.it")) == WebUser("luca.rossi@acme.it", ROLE_OPERATOR, HASH_B, False,
                                                                 T0 + SECOND, T0 + SECOND)
    # Exactly that name: another case is another (absent) user.
    assert run(store.get_user("Marta")) is None
    assert run(store.get_user("nobody")) is None
    assert [u.name for u in run(collect(store.list_users()))] == ["Zeno_1-b", "luca.rossi@acme.it", "marta"]


def test_a_taken_name_in_any_case_is_a_conflict_and_the_user_stays_as_it_was(
    store: Store, run: Callable[..., Any]
) -> None:
    run(store.add_user("marta", ROLE_VIEWER, HASH_A, T0))
    with pytest.raises(RecordConflict, match="'marta' already exists"):
        run(store.add_user("marta", ROLE_ADMIN, HASH_B, T0 + SECOND))
    with pytest.raises(RecordConflict, match="'MARTA' cannot be added: user 'marta' exists"):
        run(store.add_user("MARTA", ROLE_ADMIN, HASH_B, T0 + SECOND))
    assert run(collect(store.list_users())) == [WebUser("marta", ROLE_VIEWER, HASH_A, False, T0, T0)]


@pytest.mark.parametrize(("name", "role", "password_hash", "message"), [
    ("", ROLE_VIEWER, HASH_A, "user name '' is not valid"),
    ("x" * 65, ROLE_VIEWER, HASH_A, "is not valid: 1 to 64"),
    ("mario rossi", ROLE_VIEWER, HASH_A, "user name 'mario rossi' is not valid"),
    ("mario/rossi", ROLE_VIEWER, HASH_A, "is not valid"),
    ("màrio", ROLE_VIEWER, HASH_A, "is not valid"),
    ("mario", "root", HASH_A, "role 'root' is not valid: one of viewer, operator, admin"),
    ("mario", "Admin", HASH_A, "role 'Admin' is not valid"),
    ("mario", ROLE_VIEWER, "", "an empty password hash"),
])
def test_a_bad_name_role_or_hash_is_refused_and_nothing_is_stored(
    store: Store, run: Callable[..., Any], name: str, role: str, password_hash: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        run(store.add_user(name, role, password_hash, T0))
    assert run(collect(store.list_users())) == []


def test_a_name_of_64_characters_is_a_name(store: Store, run: Callable[..., Any]) -> None:
    name = "a" * 64
    run(store.add_user(name, ROLE_VIEWER, HASH_A, T0))
    user = run(store.get_user(name))
    assert user is not None and user.name == name


def test_update_changes_only_what_is_given_and_when_it_changed(store: Store, run: Callable[..., Any]) -> None:
    run(store.add_user("luca", ROLE_VIEWER, HASH_A, T0))
    run(store.add_user("marta", ROLE_ADMIN, HASH_A, T0))

    run(store.update_user("luca", at_us=T0 + SECOND, role=ROLE_OPERATOR))
    assert run(store.get_user("luca")) == WebUser("luca", ROLE_OPERATOR, HASH_A, False, T0, T0 + SECOND)
    run(store.update_user("luca", at_us=T0 + 2 * SECOND, password_hash=HASH_B))
    assert run(store.get_user("luca")) == WebUser("luca", ROLE_OPERATOR, HASH_B, False, T0, T0 + 2 * SECOND)
    run(store.update_user("luca", at_us=T0 + 3 * SECOND, disabled=True))
    assert run(store.get_user("luca")) == WebUser("luca", ROLE_OPERATOR, HASH_B, True, T0, T0 + 3 * SECOND)
    run(store.update_user("luca", at_us=T0 + 4 * SECOND, disabled=False, role=ROLE_ADMIN))
    assert run(store.get_user("luca")) == WebUser("luca", ROLE_ADMIN, HASH_B, False, T0, T0 + 4 * SECOND)
    # The other user is untouched.
    assert run(store.get_user("marta")) == WebUser("marta", ROLE_ADMIN, HASH_A, False, T0, T0)


def test_a_disabled_user_is_kept_and_listed(store: Store, run: Callable[..., Any]) -> None:
    run(store.add_user("luca", ROLE_OPERATOR, HASH_A, T0))
    run(store.update_user("luca", at_us=T0 + SECOND, disabled=True))
    assert [(u.name, u.disabled) for u in run(collect(store.list_users()))] == [("luca", True)]
    assert run(store.get_user("luca")) is not None


def test_update_of_an_unknown_user_or_of_nothing_or_to_a_bad_role_is_refused(
    store: Store, run: Callable[..., Any]
) -> None:
    run(store.add_user("luca", ROLE_VIEWER, HASH_A, T0))
    with pytest.raises(NotFoundError, match="user 'nobody' does not exist"):
        run(store.update_user("nobody", at_us=T0 + SECOND, disabled=True))
    # Names are exact here too: another case is not this user.
    with pytest.raises(NotFoundError, match="user 'LUCA' does not exist"):
        run(store.update_user("LUCA", at_us=T0 + SECOND, disabled=True))
    with pytest.raises(ValueError, match="nothing to change"):
        run(store.update_user("luca", at_us=T0 + SECOND))
    with pytest.raises(ValueError, match="role 'superuser' is not valid"):
        run(store.update_user("luca", at_us=T0 + SECOND, role="superuser"))
    with pytest.raises(ValueError, match="an empty password hash"):
        run(store.update_user("luca", at_us=T0 + SECOND, password_hash=""))
    assert run(store.get_user("luca")) == WebUser("luca", ROLE_VIEWER, HASH_A, False, T0, T0)


def test_a_user_never_shows_its_password_hash_in_its_repr(store: Store, run: Callable[..., Any]) -> None:
    run(store.add_user("luca", ROLE_VIEWER, HASH_A, T0))
    user = run(store.get_user("luca"))
    assert user is not None and user.password_hash == HASH_A
    for text in (repr(user), str(user), repr(run(collect(store.list_users())))):
        assert "luca" in text
        assert HASH_A not in text and "argon2" not in text and "password_hash" not in text


# -- the record of changes --------------------------------------------------------------------------------------


def test_changes_come_back_newest_first_with_their_ids_and_detail(store: Store, run: Callable[..., Any]) -> None:
    first = run(store.record_change(change(T0, detail_text="città", nested={"a": [1, None, True]})))
    second = run(store.record_change(change(T0 + 2 * SECOND, user="cli:root", action=CHANGE_USER_DISABLE)))
    # Recorded later, but for an earlier moment (another process's clock): the moment orders, then the id.
    third = run(store.record_change(change(T0 + SECOND, user="luca", target="+390645678901")))
    same_moment = run(store.record_change(change(T0 + SECOND, user="luca", action="consent.revoke")))
    assert len({first, second, third, same_moment}) == 4

    changes = run(collect(store.list_changes()))
    assert [c.id for c in changes] == [second, same_moment, third, first]
    assert changes[-1] == ConsoleChange(T0, "marta", CHANGE_USER_ROLE, "luca",
                                        {"detail_text": "città", "nested": {"a": [1, None, True]}}, first)
    assert changes[0] == ConsoleChange(T0 + 2 * SECOND, "cli:root", CHANGE_USER_DISABLE, "luca", {}, second)


def test_changes_filtered_by_moment_and_user_and_limited(store: Store, run: Callable[..., Any]) -> None:
    ids = [run(store.record_change(change(T0 + i * SECOND, user="luca" if i % 2 else "marta", n=i)))
           for i in range(6)]
    assert [c.id for c in run(collect(store.list_changes(since_us=T0 + 3 * SECOND)))] == ids[:2:-1]
    assert [c.id for c in run(collect(store.list_changes(user="luca")))] == [ids[5], ids[3], ids[1]]
    assert [c.id for c in run(collect(store.list_changes(user="luca", since_us=T0 + 2 * SECOND)))] == [ids[5], ids[3]]
    assert [c.id for c in run(collect(store.list_changes(limit=2)))] == [ids[5], ids[4]]
    assert run(collect(store.list_changes(user="nobody"))) == []
    disabled = run(store.record_change(change(T0 + 9 * SECOND, user="luca", action=CHANGE_USER_DISABLE)))
    assert [c.id for c in run(collect(store.list_changes(action=CHANGE_USER_DISABLE)))] == [disabled]
    assert [c.id for c in run(collect(store.list_changes(action=CHANGE_USER_ROLE, user="luca", limit=2)))] == \
        [ids[5], ids[3]]
    assert run(collect(store.list_changes(action=CHANGE_USER_DISABLE, user="marta"))) == []


@pytest.mark.parametrize("detail", [
    {"password": "correct horse battery"},
    {"Password_Hash": HASH_A},
    {"fields": [{"passwd": "x"}]},
    {"request": {"csrf_token": "abc"}},
    {"session_id": "abc"},
])
def test_a_change_whose_detail_holds_a_secret_is_refused(
    store: Store, run: Callable[..., Any], detail: dict[str, object]
) -> None:
    with pytest.raises(ValueError, match="its detail may not hold"):
        run(store.record_change(ConsoleChange(T0, "marta", CHANGE_USER_ADD, "luca", detail)))
    assert run(collect(store.list_changes())) == []


def test_a_change_without_user_or_action_or_with_a_detail_that_is_not_json_is_refused(
    store: Store, run: Callable[..., Any]
) -> None:
    with pytest.raises(ValueError, match="needs its user and action"):
        run(store.record_change(ConsoleChange(T0, "", CHANGE_USER_ADD, "luca", {})))
    with pytest.raises(ValueError, match="needs its user and action"):
        run(store.record_change(ConsoleChange(T0, "marta", "", "luca", {})))
    with pytest.raises(ValueError, match="its detail is not JSON"):
        run(store.record_change(ConsoleChange(T0, "marta", CHANGE_USER_ADD, "luca", {"at": object()})))
    assert run(collect(store.list_changes())) == []


def test_the_record_of_changes_is_append_only(store: Store, run: Callable[..., Any]) -> None:
    kept = run(store.record_change(change(T0, role=ROLE_ADMIN)))
    raw = RawDb(store, run)
    try:
        with pytest.raises(Exception, match="console_changes is append-only"):
            raw.execute("UPDATE console_changes SET user_name = ? WHERE id = ?", ("someone else", kept))
        with pytest.raises(Exception, match="console_changes is append-only"):
            raw.execute("DELETE FROM console_changes WHERE id = ?", (kept,))
        if raw.sqlite is None:
            with pytest.raises(Exception, match="console_changes is append-only"):
                raw.execute("TRUNCATE console_changes")
    finally:
        raw.close()
    assert [(c.id, c.user) for c in run(collect(store.list_changes()))] == [(kept, "marta")]


def test_a_change_given_with_the_user_is_recorded_with_it_or_not_at_all(store: Store, run: Callable[..., Any]) -> None:
    run(store.add_user("luca", ROLE_VIEWER, HASH_A, T0,
                       change=change(T0, user="cli:root", action=CHANGE_USER_ADD, role=ROLE_VIEWER)))
    run(store.update_user("luca", at_us=T0 + SECOND, role=ROLE_OPERATOR,
                          change=change(T0 + SECOND, role=ROLE_OPERATOR, was=ROLE_VIEWER)))
    recorded = [(c.user, c.action, c.detail) for c in run(collect(store.list_changes()))]
    assert recorded == [("marta", CHANGE_USER_ROLE, {"role": ROLE_OPERATOR, "was": ROLE_VIEWER}),
                        ("cli:root", CHANGE_USER_ADD, {"role": ROLE_VIEWER})]

    # Refused: neither the user nor its change is stored.
    with pytest.raises(RecordConflict):
        run(store.add_user("Luca", ROLE_ADMIN, HASH_B, T0 + 2 * SECOND,
                           change=change(T0 + 2 * SECOND, action=CHANGE_USER_ADD, target="Luca")))
    with pytest.raises(NotFoundError):
        run(store.update_user("nobody", at_us=T0 + 2 * SECOND, disabled=True,
                              change=change(T0 + 2 * SECOND, action=CHANGE_USER_DISABLE, target="nobody")))
    # A change the record refuses keeps the user change from happening too.
    with pytest.raises(ValueError, match="may not hold"):
        run(store.update_user("luca", at_us=T0 + 2 * SECOND, password_hash=HASH_B,
                              change=change(T0 + 2 * SECOND, password_hash=HASH_B)))
    assert len(run(collect(store.list_changes()))) == 2
    assert run(store.get_user("luca")) == WebUser("luca", ROLE_OPERATOR, HASH_A, False, T0, T0 + SECOND)
    assert run(store.get_user("Luca")) is None


def test_the_supervised_store_passes_users_and_changes_on(
    store: Store, store_url: str, run: Callable[..., Any]
) -> None:
    supervised = SupervisedStore.for_database(store_url)
    run(supervised.start())
    try:
        assert supervised.available
        run(supervised.add_user("luca", ROLE_VIEWER, HASH_A, T0, change=change(T0, action=CHANGE_USER_ADD)))
        run(supervised.update_user("luca", at_us=T0 + SECOND, disabled=True))
        assert run(supervised.get_user("luca")) == WebUser("luca", ROLE_VIEWER, HASH_A, True, T0, T0 + SECOND)
        assert [u.name for u in run(collect(supervised.list_users()))] == ["luca"]
        second = run(supervised.record_change(change(T0 + SECOND, action=CHANGE_USER_DISABLE)))
        assert [c.id for c in run(collect(supervised.list_changes(user="marta", limit=1)))] == [second]
    finally:
        run(supervised.close())
    # What it stored is in the database itself.
    assert run(store.get_user("luca")) is not None


# -- db copy ----------------------------------------------------------------------------------------------------


async def _contents(url: str) -> tuple[list[WebUser], list[ConsoleChange]]:
    async with open_store(url, create=False) as store:
        return await collect(store.list_users()), await collect(store.list_changes())


def test_db_copy_carries_users_and_changes_both_ways(pg_url: str, tmp_path: Path, run: Callable[..., Any]) -> None:
    source = str(tmp_path / "source.db")
    opened = open_store(source)
    run(opened.open())
    try:
        run(opened.add_user("marta", ROLE_ADMIN, HASH_A, T0, change=change(T0, user="cli:root",
                                                                           action=CHANGE_USER_ADD, role=ROLE_ADMIN)))
        run(opened.add_user("luca", ROLE_OPERATOR, HASH_B, T0 + SECOND))
        run(opened.update_user("luca", at_us=T0 + 2 * SECOND, disabled=True,
                               change=change(T0 + 2 * SECOND, action=CHANGE_USER_DISABLE)))
        run(opened.record_change(change(T0 + 3 * SECOND, action="consent.revoke", target="+390645678901",
                                        principal="acme", città="Roma")))
    finally:
        run(opened.close())
    users, changes = run(_contents(source))
    assert [u.disabled for u in users] == [True, False] and len(changes) == 3

    report = run(copy_database(source, pg_url))
    assert report.counts["console_users"] == 2 and report.counts["console_changes"] == 3
    assert run(_contents(pg_url)) == (users, changes)
    back = str(tmp_path / "back.db")
    run(copy_database(pg_url, back))
    assert run(_contents(back)) == (users, changes)

    # The copies go on: new changes take ids after the copied ones, and the users are there to log in.
    for url in (pg_url, back):
        target = open_store(url, create=False)
        run(target.open())
        try:
            new = run(target.record_change(change(T0 + 4 * SECOND)))
            assert new not in {c.id for c in changes}
            assert run(target.get_user("marta")) == users[1]
        finally:
            run(target.close())


# -- passwords (web/passwords.py) -----------------------------------------------------------------------------

PASSWORD = "correct horse battery staple"


def test_a_password_hash_is_argon2id_salted_and_verifies_only_its_password() -> None:
    first, second = hash_password(PASSWORD), hash_password(PASSWORD)
    assert first.startswith("$argon2id$") and PASSWORD not in first
    assert first != second  # each with its own salt
    assert verify_password(first, PASSWORD) and verify_password(second, PASSWORD)
    for wrong in ("correct horse battery stapl", "Correct horse battery staple", PASSWORD + " ", ""):
        assert not verify_password(first, wrong)
    assert not needs_rehash(first)


@pytest.mark.parametrize("stored", [
    "",
    "not a hash",
    "$argon2id$v=19$m=65536,t=3,p=4$",
    "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA",  # well formed, another password
    "$argon2id$v=19$m=0,t=0,p=0$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA",
    "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",  # bcrypt: not ours
    "$argon2id$" + "A" * 5000,
])
def test_a_malformed_or_foreign_hash_never_verifies_and_asks_to_be_replaced(stored: str) -> None:
    assert not verify_password(stored, PASSWORD)
    assert needs_rehash(stored)


def test_a_hash_made_with_weaker_parameters_needs_a_rehash_but_still_verifies() -> None:
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)
    assert verify_password(weak, PASSWORD)
    assert needs_rehash(weak)


def test_an_over_long_password_never_verifies_and_is_never_hashed_for_a_login() -> None:
    long_one = "x" * 1025
    # Even against its own hash: a login with it is refused before any hashing work.
    assert not verify_password(PasswordHasher().hash(long_one), long_one)


@pytest.mark.parametrize(("password", "message"), [
    ("", "the password is empty"),
    ("x" * (MIN_PASSWORD_LENGTH - 1), f"too short: at least {MIN_PASSWORD_LENGTH} characters \\(this one has 11\\)"),
    ("x" * 1025, "too long: at most 1024 characters"),
])
def test_a_new_password_outside_the_rules_is_rejected_saying_why(password: str, message: str) -> None:
    with pytest.raises(PasswordRejected, match=message) as caught:
        check_new_password(password)
    assert isinstance(caught.value, ValueError)
    if password:
        assert password not in str(caught.value)


def test_a_new_password_within_the_rules_is_accepted() -> None:
    for password in ("x" * MIN_PASSWORD_LENGTH, "x" * 1024, "pàsswörd with spaces ", "\U0001f512" * 12):
        check_new_password(password)
