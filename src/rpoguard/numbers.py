"""Dialled strings and caller IDs -> E.164 and line type (architecture.md §3 rule 1).

libphonenumber (package ``phonenumberslite``, imported as ``phonenumbers``) is the authority on what is a
valid number: plain string rules disagree with it on about 1.5% of real inputs (performance-facts.md),
and every disagreement is either a blocked lawful call or an unproven one. This module only decides which
E.164 spellings a dialled string can mean, then lets libphonenumber judge each of them.

Forms accepted (after removing separators, see ``_SEPARATORS``):

* ``+CC…``              international, any country;
* ``00CC…``             international with the Italian IDD prefix;
* ``39…``               either country code 39 without ``+`` or a national mobile 39x…: both readings are
                        tried, and a string that is valid both ways is refused as ambiguous (fail closed);
* anything else         an Italian national number (``0…`` fixed, ``3…`` mobile, ``8…`` special...).

Only ASCII digits are digits here. Asterisk extensions, SIP user parts and the CSV files we import carry
ASCII digits; a fullwidth or Arabic-Indic digit means an encoding or copy-paste accident, and refusing it
(fail closed, with a message naming the input) is safer than silently folding it as libphonenumber would.
Separators, on the other hand, may be any Unicode space or dash, because spreadsheets and word processors
put non-breaking spaces and en dashes into numbers that were typed correctly.
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass
from typing import Final

import phonenumbers
from phonenumbers import PhoneNumberFormat, PhoneNumberType

from rpoguard.constants import (
    FOREIGN_NUMBER,
    INVALID_NUMBER,
    LINE_FIXED,
    LINE_MOBILE,
    UNSUPPORTED_NUMBER_TYPE,
)

__all__ = ["Number", "NumberError", "is_withheld", "normalize", "normalize_caller_id"]

logger = logging.getLogger(__name__)

_REGION: Final = "IT"
_COUNTRY_CODE: Final = "39"

# Refuse before running any regex over it: no way of writing a phone number needs this many characters,
# and an attacker-sized string must not cost more than a length check.
_MAX_RAW_CHARS: Final = 128
# E.164 allows 15 digits; 32 leaves room for an IDD or trunk prefix and still keeps libphonenumber away
# from inputs that can only be junk.
_MAX_CLEAN_CHARS: Final = 32
# How much of the input an error message quotes.
_SHOWN_CHARS: Final = 40

# Unicode whitespace (\s without re.ASCII), ASCII punctuation people put in numbers, and the Unicode
# hyphens and dashes (U+2010-U+2015, minus sign U+2212) that word processors substitute for "-".
_SEPARATORS: Final = re.compile(r"[\s\-.()/\u2010-\u2015\u2212]+")
# A country code never starts with 0, so "+00…" and "+0…" are typing errors, not numbers.
_DIALLABLE: Final = re.compile(r"\+[1-9][0-9]*|[0-9]+")

# AGCOM delib. 156/18/CIR (regulation.md §6): 0843 statistical surveys, 0844 marketing and market research.
# libphonenumber's Italian metadata does not know these ranges, so caller IDs in them are accepted here.
_AGCOM_PREFIXES: Final = ("0843", "0844")
# National length of an AGCOM caller ID, leading 0 included: 6 to 11 digits after the 0, the same bound
# libphonenumber's Italian metadata puts on every 0… number (general pattern 0\d{5,11}). That leaves the
# subscriber part 3 to 8 digits after 0843/0844 and keeps +39 plus 12 digits within E.164's 15.
_AGCOM_MIN_NATIONAL: Final = 7
_AGCOM_MAX_NATIONAL: Final = 12

# Caller-ID values that mean "no number presented", compared after lower-casing (see is_withheld).
_WITHHELD_MARKERS: Final = frozenset(
    {
        "",
        "unknown",  # Asterisk: agi_callerid and CALLERID(num) when the channel has none
        "anonymous",  # SIP privacy (RFC 3323: sip:anonymous@anonymous.invalid)
        "restricted",
        "private",
        "withheld",
        "unavailable",  # Asterisk presentation "unavailable", some carriers' CLI text
        "asterisk",  # old chan_sip default callerid: set by nobody, so not a number anyone declared
        "anonimo",  # Italian carriers' spellings of the same markers
        "privato",
        "riservato",
        "sconosciuto",
    }
)
_URI_SCHEMES: Final = ("sip:", "sips:", "tel:")

# Regions an operator may not recognise by their code; Vatican City shares +39 with Italy (06 698…).
_REGION_NAMES: Final = {None: "a non-geographic", "001": "a non-geographic", "VA": "a Vatican City (VA)"}

# Words for the error message; the reason code stays unsupported_number_type for all of them.
_TYPE_NAMES: Final = {
    PhoneNumberType.TOLL_FREE: "a toll-free (numero verde) number",
    PhoneNumberType.PREMIUM_RATE: "a premium-rate number",
    PhoneNumberType.SHARED_COST: "a shared-cost number",
    PhoneNumberType.VOIP: "a VoIP (nomadic) number",
    PhoneNumberType.PERSONAL_NUMBER: "a personal number",
    PhoneNumberType.PAGER: "a pager number",
    PhoneNumberType.UAN: "a universal access number",
    PhoneNumberType.VOICEMAIL: "a voicemail access number",
}


@dataclass(frozen=True, slots=True)
class Number:
    """A dialled number rpoguard can reason about: Italian, fixed or mobile."""

    e164: str
    line_type: str


class NumberError(ValueError):
    """The string is not a number rpoguard can prove a call to compliant.

    ``reason`` is INVALID_NUMBER, FOREIGN_NUMBER or UNSUPPORTED_NUMBER_TYPE (constants). ``e164`` is set
    when the input was a valid number of the wrong kind, so the audit log can still record what was dialled.
    """

    reason: str
    e164: str | None

    def __init__(self, reason: str, message: str, e164: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.e164 = e164

    def __reduce__(self) -> tuple[type[NumberError], tuple[str, str, str | None]]:
        # ValueError would pickle only the message and fail to rebuild us (multiprocessing, scrub workers).
        return (type(self), (self.reason, str(self), self.e164))


def normalize(raw: str, *, trunk_prefix: str = "") -> Number:
    """Turn a dialled string into the Italian fixed or mobile number it calls.

    ``trunk_prefix`` is the trunk-access string (for example ``"0"`` or ``"9"``) the PBX puts before every
    dialled number, compared with the input after separators are removed, so give it without separators.
    When it is non-empty and the input starts with it, it is stripped exactly once, before anything else
    and without looking at what follows. This is deliberately strict: configure it only when every dialled
    string carries it. A guess ("strip it when the rest looks valid") would turn a mistyped number into a
    different, valid one; with the strict rule, trunk ``"0"`` makes a bare ``0612345678`` read as
    ``612345678`` and be refused, which is the fail-closed outcome. Input that does not start with the
    prefix (``+39…`` from an import, say) is read as it is.

    Raises NumberError with INVALID_NUMBER (not a number, or ambiguous), FOREIGN_NUMBER (valid but not
    Italian; Vatican City's +39 06 698 included) or UNSUPPORTED_NUMBER_TYPE (Italian but neither fixed
    nor mobile: toll-free, premium, shared-cost, VoIP...). Never raises anything else for a str.
    """
    cleaned = _clean(raw, "dialled number")
    if trunk_prefix and cleaned.startswith(trunk_prefix):
        cleaned = cleaned[len(trunk_prefix) :]
    number = _only_one(_readings(cleaned, raw, "dialled number"), raw, "dialled number")
    e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)

    region = phonenumbers.region_code_for_number(number)
    if region != _REGION:
        where = _REGION_NAMES.get(region, f"a {region}")
        raise NumberError(
            FOREIGN_NUMBER,
            f"dialled number {_shown(raw)} is {where} number ({e164}), not an Italian one; "
            "rpoguard only proves compliance for Italian numbers",
            e164,
        )

    number_type = phonenumbers.number_type(number)
    if number_type == PhoneNumberType.FIXED_LINE:
        return Number(e164, LINE_FIXED)
    if number_type == PhoneNumberType.MOBILE:
        return Number(e164, LINE_MOBILE)
    if number_type == PhoneNumberType.FIXED_LINE_OR_MOBILE:
        # Italian metadata keeps the two apart (fixed 0…, mobile 3…/43…), so this only happens if a
        # future metadata release merges a range; the leading 0 is what separates them in the plan.
        nsn = phonenumbers.national_significant_number(number)
        return Number(e164, LINE_FIXED if nsn.startswith("0") else LINE_MOBILE)
    kind = _TYPE_NAMES.get(number_type, "a number of no known kind")
    raise NumberError(
        UNSUPPORTED_NUMBER_TYPE,
        f"dialled number {_shown(raw)} ({e164}) is {kind}; "
        "only Italian fixed and mobile numbers can be checked",
        e164,
    )


def normalize_caller_id(raw: str) -> str:
    """Return the E.164 form of a caller ID, Italian or foreign, or raise NumberError(INVALID_NUMBER).

    Same forms as ``normalize`` (no trunk prefix). Whether the number is one the principal declared is
    decided elsewhere; this only says it is a number someone could call back.

    AGCOM's marketing (0844) and survey (0843) ranges are accepted although libphonenumber calls them
    invalid: national ``0843…``/``0844…``, or international with or without the 0 (``+390844…``,
    ``+39844…``, ``0039844…``, ``39844…``), with 6 to 11 digits after the leading 0. They come back as
    ``+39`` plus the national digits with their 0 (``+390844123456``), the way Italian numbers keep their
    0 in E.164, so a declared ``0844 123456`` and a presented ``+39844123456`` compare equal.

    Results are cached: a channel presents the same few caller IDs on every call.
    """
    # Checked before the cache so that junk of any size or type never becomes a cache key.
    _check_text(raw, "caller ID")
    e164, message = _caller_id(raw)
    if e164 is None:
        raise NumberError(INVALID_NUMBER, message)
    return e164


def is_withheld(raw: str | None) -> bool:
    """True when a caller ID presents no number at all.

    Withheld: None, empty or blank, and (any case, surrounding quotes or angle brackets ignored, a SIP/tel
    URI reduced to its user part) ``unknown``, ``anonymous``, ``restricted``, ``private``, ``withheld``,
    ``unavailable``, ``asterisk`` and the Italian ``anonimo``, ``privato``, ``riservato``, ``sconosciuto``.
    The list needs no completeness: anything else still has to be a declared number to pass rule 10, so a
    marker missing here is refused as an undeclared caller ID instead. Presentation flags
    (CALLERID(num-pres) ``prohib_…``) are the caller's to check; this only sees the number string.
    """
    if raw is None:
        return True
    value = raw.strip().strip("\"'<>").strip().lower()
    for scheme in _URI_SCHEMES:
        if value.startswith(scheme):
            value = value[len(scheme) :]
            break
    value = value.split("@", 1)[0].split(";", 1)[0]
    return value in _WITHHELD_MARKERS


@functools.lru_cache(maxsize=1024)
def _caller_id(raw: str) -> tuple[str | None, str]:
    """(E.164, "") or (None, message); errors are cached as data, never as exception objects to re-raise."""
    try:
        cleaned = _clean(raw, "caller ID")
        candidates: dict[str, None] = {}
        for number in _readings(cleaned, raw, "caller ID"):
            candidates[phonenumbers.format_number(number, PhoneNumberFormat.E164)] = None
        for national in _agcom_nationals(cleaned):
            candidates["+" + _COUNTRY_CODE + national] = None
        if len(candidates) > 1:
            raise _ambiguous(raw, "caller ID", list(candidates))
        if not candidates:
            raise _invalid(raw, "caller ID")
    except NumberError as exc:
        return None, str(exc)
    return next(iter(candidates)), ""


def _clean(raw: str, what: str) -> str:
    """Remove separators; raise INVALID_NUMBER when nothing, or far too much, is left."""
    _check_text(raw, what)
    cleaned = _SEPARATORS.sub("", raw)
    if not cleaned:
        raise NumberError(INVALID_NUMBER, f"{what} {_shown(raw)} is empty")
    if len(cleaned) > _MAX_CLEAN_CHARS:
        raise NumberError(INVALID_NUMBER, f"{what} {_shown(raw)} has too many digits for a telephone number")
    return cleaned


def _check_text(raw: object, what: str) -> None:
    if not isinstance(raw, str):
        # Outside the type hints, but a gate must answer with a reason code rather than a traceback.
        raise NumberError(INVALID_NUMBER, f"{what} is not text but a {type(raw).__name__}")
    if len(raw) > _MAX_RAW_CHARS:
        raise NumberError(INVALID_NUMBER, f"{what} {_shown(raw)} is far too long to be a telephone number")


def _readings(cleaned: str, raw: str, what: str) -> list[phonenumbers.PhoneNumber]:
    """Every valid number the cleaned string can mean (two at most: see _spellings)."""
    if _DIALLABLE.fullmatch(cleaned) is None:
        why = _why_junk(cleaned)
        raise NumberError(INVALID_NUMBER, f"{what} {_shown(raw)} is not a telephone number: {why}")
    valid = []
    for _, spelling in _spellings(cleaned):
        try:
            number = phonenumbers.parse(spelling, _REGION)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            valid.append(number)
    return valid


def _spellings(cleaned: str) -> tuple[tuple[bool, str], ...]:
    """The E.164 spellings ('+' and digits) a dialled string may stand for, flagged national or not."""
    if cleaned.startswith("+"):
        return ((False, cleaned),)
    if cleaned.startswith("00"):
        # No Italian national number starts with 00, so this is the IDD prefix and nothing else.
        return ((False, "+" + cleaned[2:]),)
    if cleaned.startswith(_COUNTRY_CODE):
        # Country code without '+', or a national 39x… mobile (390-393, 397 are in use): try both.
        return ((True, "+" + _COUNTRY_CODE + cleaned), (False, "+" + cleaned))
    return ((True, "+" + _COUNTRY_CODE + cleaned),)


def _agcom_nationals(cleaned: str) -> list[str]:
    """National 0843…/0844… numbers (0 included) the cleaned caller ID can mean, if any."""
    nationals = []
    for national_reading, spelling in _spellings(cleaned):
        if not spelling.startswith("+" + _COUNTRY_CODE):
            continue
        digits = spelling[1 + len(_COUNTRY_CODE) :]
        if not national_reading and not digits.startswith("0"):
            # Written internationally people often drop the 0 (+39 844…), as they would for other
            # countries; a national reading must carry it, or 844… would be a different number.
            digits = "0" + digits
        if digits.startswith(_AGCOM_PREFIXES) and _AGCOM_MIN_NATIONAL <= len(digits) <= _AGCOM_MAX_NATIONAL:
            nationals.append(digits)
    return nationals


def _why_junk(cleaned: str) -> str:
    # Only on the error path, so the operator learns what to retype rather than a generic refusal.
    if cleaned.startswith("+0"):
        return "'+' must be followed by a country code, never by 0 (write +39... or 0039..., not both)"
    if any(ch.isdigit() and not ch.isascii() for ch in cleaned):
        return "it contains digits other than 0-9 (another script or fullwidth); retype it with 0-9"
    return "only the digits 0-9, a leading '+', spaces and . - / ( ) may appear in a number"


def _only_one(numbers: list[phonenumbers.PhoneNumber], raw: str, what: str) -> phonenumbers.PhoneNumber:
    if len(numbers) == 1:
        return numbers[0]
    if numbers:
        raise _ambiguous(raw, what, [phonenumbers.format_number(n, PhoneNumberFormat.E164) for n in numbers])
    raise _invalid(raw, what)


def _ambiguous(raw: str, what: str, e164s: list[str]) -> NumberError:
    logger.debug("ambiguous %s %r: %s", what, raw, e164s)
    readings = " and as ".join(e164s)
    return NumberError(
        INVALID_NUMBER,
        f"{what} {_shown(raw)} is ambiguous: it reads as {readings}; "
        "write it with +39 in front so that it means one number",
    )


def _invalid(raw: str, what: str) -> NumberError:
    return NumberError(INVALID_NUMBER, f"{what} {_shown(raw)} is not a valid telephone number")


def _shown(raw: str) -> str:
    if len(raw) > _SHOWN_CHARS:
        return repr(raw[:_SHOWN_CHARS]) + "..."
    return repr(raw)
