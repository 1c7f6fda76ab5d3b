"""The console users' passwords: the rules a new one must meet, and argon2id hashes of them.

argon2-cffi's defaults are RFC 9106's second recommended profile (argon2id, 3 passes, 64 MiB, 4 lanes): a
hash takes tens of milliseconds and 64 MiB on purpose, so a stolen database is slow to attack. For the
same reason the web process runs hash_password and verify_password off its event loop.
"""

from __future__ import annotations

import logging

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

log = logging.getLogger(__name__)

MIN_PASSWORD_LENGTH = 12
# Long enough for any passphrase; a bound, so a huge POST cannot buy minutes of hashing.
MAX_PASSWORD_LENGTH = 1024


class PasswordRejected(ValueError):
    """A new password that does not meet the rules; the message says which (never the password)."""


def _hasher() -> PasswordHasher:
    # The library's defaults, named nowhere else: a later argon2-cffi raising them makes needs_rehash true
    # for older hashes, and the next login replaces them.
    return PasswordHasher()


def check_new_password(password: str) -> None:
    """Raise PasswordRejected unless `password` may be set: 12 to 1024 characters."""
    if not password:
        raise PasswordRejected("the password is empty")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise PasswordRejected(f"the password is too short: at least {MIN_PASSWORD_LENGTH} characters "
                               f"(this one has {len(password)})")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise PasswordRejected(f"the password is too long: at most {MAX_PASSWORD_LENGTH} characters")


def hash_password(password: str) -> str:
    """The argon2id hash (PHC string, with its own random salt). The rules are check_new_password's, called
    first by whoever takes a new password (so a test may hash a short one)."""
    return _hasher().hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """True only when `password` is the one hashed. A mismatch, a malformed or foreign hash and an
    over-long password are all False: a login fails closed, whatever is stored."""
    if len(password) > MAX_PASSWORD_LENGTH or not password_hash:
        return False
    try:
        return _hasher().verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False
    except (ValueError, TypeError):
        # A hash that parses but names impossible parameters, or a value that is not text at all.
        log.warning("a stored password hash could not be read; the login is refused")
        return False


def needs_rehash(password_hash: str) -> bool:
    """True when the hash was made with other parameters than today's (or cannot be read at all)."""
    try:
        return _hasher().check_needs_rehash(password_hash)
    except (InvalidHashError, ValueError, TypeError):
        return True
