"""Dialled strings and caller IDs -> E.164 and line type (docs/architecture.md §3 rule 1).

libphonenumber (package ``phonenumberslite``, imported as ``phonenumbers``) is the authority on what is a
valid number: plain string rules disagree with it on real inputs (docs/performance.md, "Number
normalisation"), and every disagreement is either a blocked lawful call or an unproven one. This module
only decides which E.164 spellings a dialled string can mean and in which order, then lets libphonenumber
judge them.

Forms accepted (after removing separators, see ``_SEPARATORS``):

* ``+CC…``              international, any country;
* ``00CC…``             international with the Italian IDD prefix;
* ``39…``               national first (below): a national 39x… mobile, else country code 39 without ``+``;
* anything else         an Italian national number (``0…`` fixed, ``3…`` mobile, ``8…`` special...).

A national number is read as national first: ``39…`` without ``+`` or ``00`` is read as +39 only when the
national reading is not a valid number (a TIM mobile 390 123 4567 is national). That is how an Italian
reads such a string: ``3901000070`` is a mobile in the 390 range, even though ``+39 0100 0070`` would be
a Genoa number, and ``39 06 12345678`` is Rome, because ``390612345678`` is no national number.
Refusing the strings that read both ways would block every call to such mobiles and reject whole RPO
answer files that list one. Whoever means the other reading writes the ``+`` or the
``00``.

Only ASCII digits are digits here. Asterisk extensions, SIP user parts and the CSV files we import carry
ASCII digits; a fullwidth or Arabic-Indic digit means an encoding or copy-paste accident, and refusing it
(fail closed, with a message naming the input) is safer than silently folding it as libphonenumber would.
Separators, on the other hand, may be any Unicode space or dash, because spreadsheets and word processors
put non-breaking spaces and en dashes into numbers that were typed correctly.

Each call decision and each imported row (tens of millions in an import) goes through
``normalize_with_fast_path`` (the importers call it by its other name, ``normalize_for_import``): a fast
path (``normalize_fast``) answers the clean fixed and mobile numbers that make up nearly all of them with
regexes compiled once from libphonenumber's own +39 metadata, and hands everything else to ``normalize``.
libphonenumber stays the authority: the fast path only ever gives the answer ``normalize`` gives, and says
None when it is not sure.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, NamedTuple

import phonenumbers
from phonenumbers import PhoneMetadata, PhoneNumberDesc, PhoneNumberFormat, PhoneNumberType

from rpoguard.constants import (
    FOREIGN_NUMBER,
    INVALID_NUMBER,
    LINE_FIXED,
    LINE_MOBILE,
    UNSUPPORTED_NUMBER_TYPE,
)

__all__ = [
    "Number",
    "NumberError",
    "is_withheld",
    "normalize",
    "normalize_caller_id",
    "normalize_fast",
    "normalize_for_import",
    "normalize_with_fast_path",
]

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

# AGCOM delib. 156/18/CIR (docs/law.md §8): 0843 statistical surveys, 0844 marketing and market research.
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

    ``39…`` is read national first (see the module docstring): ``3902123456`` is the 390 mobile
    ``+393902123456``, ``390212345678`` is Milan ``+390212345678``.

    Raises NumberError with INVALID_NUMBER (not a valid number), FOREIGN_NUMBER (valid but not
    Italian; Vatican City's +39 06 698 included) or UNSUPPORTED_NUMBER_TYPE (Italian but neither fixed
    nor mobile: toll-free, premium, shared-cost, VoIP...). Never raises anything else for a str.
    """
    cleaned = _clean(raw, "dialled number")
    if trunk_prefix and cleaned.startswith(trunk_prefix):
        cleaned = cleaned[len(trunk_prefix) :]
    number = _reading(cleaned, raw, "dialled number")
    if number is None:
        raise _invalid(raw, "dialled number")
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

    ``39…`` is read national first, as by ``normalize``; an AGCOM national reading counts as a valid one.
    Within one reading a number libphonenumber calls valid as written comes before the AGCOM one with its
    0 put back (``+39 844…``), because restoring a dropped 0 is a guess and the written number is not.

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


def normalize_fast(raw: str) -> Number | None:
    """``normalize(raw)`` for the common clean forms, without calling libphonenumber; None when not sure.

    Answers, after the separator removal ``normalize`` does, only for ``+39…``, ``0039…``, a national
    number (``0…`` fixed, ``3…``/``43…`` mobile), and ``39…`` read national first as ``normalize`` reads
    it: the national 39x… number when the tables know it as fixed or mobile, the +39 reading when the
    national one cannot be valid at all, and None when the national one might be valid as something the
    tables do not answer for. The number must be an Italian fixed or mobile number by libphonenumber's
    metadata. Everything else gives None, never an exception: errors, foreign, Vatican and AGCOM numbers,
    toll-free, premium, VoIP and the other types, non-ASCII digits, non-str input. None means "ask
    ``normalize``", not "invalid".

    A Number it returns is the one ``normalize(raw)`` returns (same e164, same line type): the regexes
    are built at import from the metadata libphonenumber validates with, under the rules it applies
    (see ``_build_fast_tables``), so a metadata update moves both alike; if the metadata stops looking
    the way those rules assume, the fast path switches itself off (always None) instead of guessing.
    No trunk prefix: a PBX's dialled string goes to ``normalize(raw, trunk_prefix=...)``.
    """
    if not isinstance(raw, str) or len(raw) > _MAX_RAW_CHARS:
        return None
    # Bare digits and E.164 are the bulk of an import, and have nothing for _SEPARATORS to remove.
    digits = raw[1:] if raw.startswith("+") else raw
    cleaned = raw if digits.isascii() and digits.isdigit() else _SEPARATORS.sub("", raw)
    if len(cleaned) > _MAX_CLEAN_CHARS:
        return None
    # The same cases, in the same order, as _spellings: each branch is the reading normalize would try.
    if cleaned.startswith("+"):
        return _fast_number(cleaned[len(_PLUS_CC) :]) if cleaned.startswith(_PLUS_CC) else None
    if cleaned.startswith("00"):
        return _fast_number(cleaned[len(_IDD_CC) :]) if cleaned.startswith(_IDD_CC) else None
    if cleaned.startswith(_COUNTRY_CODE):
        return _fast_two_readings(cleaned)
    return _fast_number(cleaned)


def normalize_with_fast_path(raw: str) -> Number:
    """``normalize(raw)`` with no trunk prefix, fast on clean input: the gate calls it once a call and the
    importers once a row (as ``normalize_for_import``).

    Same result as ``normalize(raw)`` for every input, the same NumberError (reason, message, e164) when
    it refuses: ``normalize_fast`` answers when it is sure and ``normalize`` answers everything else.
    """
    number = normalize_fast(raw)
    if number is not None:
        return number
    return normalize(raw)


# The importers' name for it.
normalize_for_import: Final = normalize_with_fast_path


@functools.lru_cache(maxsize=1024)
def _caller_id(raw: str) -> tuple[str | None, str]:
    """(E.164, "") or (None, message); errors are cached as data, never as exception objects to re-raise."""
    try:
        cleaned = _clean(raw, "caller ID")
        _check_diallable(cleaned, raw, "caller ID")
        for national_reading, spelling in _spellings(cleaned):
            number = _valid_number(spelling)
            if number is not None:
                return phonenumbers.format_number(number, PhoneNumberFormat.E164), ""
            agcom = _agcom_national(national_reading, spelling)
            if agcom is not None:
                return "+" + _COUNTRY_CODE + agcom, ""
        raise _invalid(raw, "caller ID")
    except NumberError as exc:
        return None, str(exc)


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


def _check_diallable(cleaned: str, raw: str, what: str) -> None:
    if _DIALLABLE.fullmatch(cleaned) is None:
        why = _why_junk(cleaned)
        raise NumberError(INVALID_NUMBER, f"{what} {_shown(raw)} is not a telephone number: {why}")


def _reading(cleaned: str, raw: str, what: str) -> phonenumbers.PhoneNumber | None:
    """The number the cleaned string means: its first valid spelling (see _spellings), or None."""
    _check_diallable(cleaned, raw, what)
    for _, spelling in _spellings(cleaned):
        number = _valid_number(spelling)
        if number is not None:
            return number
    return None


def _valid_number(spelling: str) -> phonenumbers.PhoneNumber | None:
    try:
        number = phonenumbers.parse(spelling, _REGION)
    except phonenumbers.NumberParseException:
        return None
    return number if phonenumbers.is_valid_number(number) else None


def _spellings(cleaned: str) -> tuple[tuple[bool, str], ...]:
    """The E.164 spellings ('+' and digits) a dialled string may stand for, flagged national or not.

    In the order they are tried: the first one that is a valid number is the number, later ones are not
    looked at. Only ``39…`` has two, and its national reading comes first (the module docstring's rule).
    """
    if cleaned.startswith("+"):
        return ((False, cleaned),)
    if cleaned.startswith("00"):
        # No Italian national number starts with 00, so this is the IDD prefix and nothing else.
        return ((False, "+" + cleaned[2:]),)
    if cleaned.startswith(_COUNTRY_CODE):
        # A national 39x… mobile (the metadata's mobile pattern takes all of 390-399) before country
        # code 39 without '+': Italians write their mobiles without any prefix, and that is what such a
        # string means to whoever typed it.
        return ((True, "+" + _COUNTRY_CODE + cleaned), (False, "+" + cleaned))
    return ((True, "+" + _COUNTRY_CODE + cleaned),)


def _agcom_national(national_reading: bool, spelling: str) -> str | None:
    """The national 0843…/0844… number (0 included) one spelling of a caller ID means, if it is one."""
    if not spelling.startswith("+" + _COUNTRY_CODE):
        return None
    digits = spelling[1 + len(_COUNTRY_CODE) :]
    if not national_reading and not digits.startswith("0"):
        # Written internationally people often drop the 0 (+39 844…), as they would for other
        # countries; a national reading must carry it, or 844… would be a different number.
        digits = "0" + digits
    if digits.startswith(_AGCOM_PREFIXES) and _AGCOM_MIN_NATIONAL <= len(digits) <= _AGCOM_MAX_NATIONAL:
        return digits
    return None


def _why_junk(cleaned: str) -> str:
    # Only on the error path, so the operator learns what to retype rather than a generic refusal.
    if cleaned.startswith("+0"):
        return "'+' must be followed by a country code, never by 0 (write +39... or 0039..., not both)"
    if any(ch.isdigit() and not ch.isascii() for ch in cleaned):
        return "it contains digits other than 0-9 (another script or fullwidth); retype it with 0-9"
    return "only the digits 0-9, a leading '+', spaces and . - / ( ) may appear in a number"


def _invalid(raw: str, what: str) -> NumberError:
    return NumberError(INVALID_NUMBER, f"{what} {_shown(raw)} is not a valid telephone number")


def _shown(raw: str) -> str:
    if len(raw) > _SHOWN_CHARS:
        return repr(raw[:_SHOWN_CHARS]) + "..."
    return repr(raw)


# --- Fast path tables ----------------------------------------------------------------------------------
#
# phonenumbers.parse("+39" + digits) keeps the digits as they are as the national significant number (NSN):
# Italy has no national prefix to strip and the leading 0 is kept (italian_leading_zero), so the E.164 form
# is "+39" + NSN. is_valid_number and number_type then look, for region IT, at the NSN only. The tables
# below reproduce that check for NSNs whose answer is fixed or mobile, from the same metadata.

_PLUS_CC: Final = "+" + _COUNTRY_CODE
_IDD_CC: Final = "00" + _COUNTRY_CODE
_FIXED_OR_MOBILE_DESCS: Final = frozenset({"general_desc", "fixed_line", "mobile"})


class _FastTables(NamedTuple):
    # NSN length -> regex that fully matches exactly the NSNs libphonenumber calls Italian fixed or
    # mobile; the named group that matched ("both", "fixed", "mobile") is the line type.
    classifiers: dict[int, re.Pattern[str]]
    # NSN length -> regex matching every NSN that could be valid for any +39 region (a superset).
    plausible: dict[int, re.Pattern[str]]


def _fast_number(nsn: str) -> Number | None:
    line_type = _fast_line_type(nsn, _FAST_TABLES)
    if line_type is None:
        return None
    return Number(_PLUS_CC + nsn, line_type)


def _fast_two_readings(cleaned: str) -> Number | None:
    """A 39… string, national reading first as in _spellings; None when only normalize can tell."""
    if not (cleaned.isascii() and cleaned.isdigit()):
        return None
    national = _fast_number(cleaned)
    if national is not None:
        # A valid national reading is the answer, whatever the +39 reading would have been.
        return national
    if _fast_plausible(cleaned, _FAST_TABLES):
        # The national reading may still be valid as a type the tables do not answer for (voicemail,
        # say), which would win over +39; only normalize can tell.
        return None
    return _fast_number(cleaned[len(_COUNTRY_CODE) :])


def _fast_line_type(nsn: str, tables: _FastTables) -> str | None:
    classifier = tables.classifiers.get(len(nsn))
    # ASCII only: \d in the metadata patterns would also match other scripts' digits, which normalize refuses.
    if classifier is None or not (nsn.isascii() and nsn.isdigit()):
        return None
    match = classifier.fullmatch(nsn)
    if match is None:
        return None
    group = match.lastgroup
    if group == "both":
        # normalize's FIXED_LINE_OR_MOBILE rule, so that a metadata release merging ranges changes both alike.
        return LINE_FIXED if nsn.startswith("0") else LINE_MOBILE
    return LINE_FIXED if group == "fixed" else LINE_MOBILE


def _fast_plausible(nsn: str, tables: _FastTables) -> bool:
    plausible = tables.plausible.get(len(nsn))
    return plausible is not None and plausible.fullmatch(nsn) is not None


def _desc_regex(desc: PhoneNumberDesc | None, length: int) -> str | None:
    """Regex text for phonenumbers' _is_number_matching_desc at one NSN length, or None if it never matches.

    That function says no for a missing desc or an empty pattern, no when the desc lists possible lengths
    and the NSN's length is not one of them, and otherwise asks for a full match of the pattern.
    """
    if desc is None or not desc.national_number_pattern:
        return None
    if desc.possible_length and length not in desc.possible_length:
        return None
    return f"(?:{desc.national_number_pattern})"


def _build_fast_tables(main: PhoneMetadata, others: Sequence[PhoneMetadata]) -> _FastTables:
    """Compile the classifiers from ``main`` (the region libphonenumber parses +39 with and tries first).

    For an NSN of length n the classifier is, in phonenumbers' terms (_number_type_helper):

    * general_desc matches (else the type is UNKNOWN and the number invalid for the region);
    * no other desc of the region matches at all. phonenumbers tests premium, toll-free, shared-cost,
      VoIP, personal, pager, UAN and voicemail before fixed line, so any of them wins; refusing every
      desc that is not general/fixed/mobile is a superset of that order and needs no copy of it;
    * then "both" when fixed line and mobile both match (FIXED_LINE_OR_MOBILE, or fixed line alone when
      the metadata declares the two patterns the same), "fixed", or "mobile", tried in that order as
      phonenumbers does.

    A number whose type for ``main`` is known belongs to ``main`` (region_code_for_number stops at the
    first region without leading digits whose type is not UNKNOWN), so the answer is Italian. The leading
    digits of the regions after it (Vatican City's 06698) are refused anyway: it costs nothing and keeps
    the fast path away from numbers whose region a metadata change could move.
    """
    other_descs = [
        desc
        for name, desc in vars(main).items()
        if isinstance(desc, PhoneNumberDesc) and name not in _FIXED_OR_MOBILE_DESCS
    ]
    not_other_regions = "".join(f"(?!(?:{other.leading_digits}))" for other in others if other.leading_digits)
    classifiers: dict[int, re.Pattern[str]] = {}
    plausible: dict[int, re.Pattern[str]] = {}
    for length in range(1, _MAX_CLEAN_CHARS + 1):
        generals = [text for meta in (main, *others) if (text := _desc_regex(meta.general_desc, length))]
        if generals:
            plausible[length] = re.compile("|".join(generals))

        general = _desc_regex(main.general_desc, length)
        fixed = _desc_regex(main.fixed_line, length)
        mobile = _desc_regex(main.mobile, length)
        alternatives: list[tuple[str, str]] = []
        if main.same_mobile_and_fixed_line_pattern:
            if fixed:
                alternatives.append(("both", fixed))
        else:
            if fixed and mobile:
                alternatives.append(("both", rf"(?={mobile}\Z){fixed}"))
            if fixed:
                alternatives.append(("fixed", fixed))
            if mobile:
                alternatives.append(("mobile", mobile))
        if general is None or not alternatives:
            continue
        others_here = [text for desc in other_descs if (text := _desc_regex(desc, length))]
        parts = [not_other_regions, rf"(?={general}\Z)"]
        if others_here:
            parts.append(rf"(?!(?:{'|'.join(others_here)})\Z)")
        parts.append("(?:" + "|".join(f"(?P<{name}>{text})" for name, text in alternatives) + ")")
        classifier = re.compile("".join(parts))
        if classifier.groups != len(alternatives):
            # A capturing group inside a metadata pattern would make lastgroup unreliable.
            raise ValueError(f"metadata pattern with a capturing group (NSN length {length})")
        classifiers[length] = classifier
    return _FastTables(classifiers, plausible)


def _italian_fast_tables() -> _FastTables:
    """The tables for +39, or empty ones (every number to normalize) if the metadata breaks an assumption."""
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(int(_COUNTRY_CODE), ())
    metadata = [PhoneMetadata.metadata_for_region(region, None) for region in regions]
    main = metadata[0] if metadata else None
    if (
        main is None
        or regions[0] != _REGION
        or phonenumbers.region_code_for_country_code(int(_COUNTRY_CODE)) != _REGION
        or None in metadata
        # With leading digits the region would be chosen by prefix, not by type; with a national prefix
        # to strip, the NSN would no longer be the digits after +39.
        or main.leading_digits is not None
        or main.national_prefix_for_parsing
    ):
        logger.warning("phonenumbers' +39 metadata is not shaped as expected; fast number path disabled")
        return _FastTables({}, {})
    try:
        return _build_fast_tables(main, [meta for meta in metadata[1:] if meta is not None])
    except (re.error, ValueError) as exc:
        logger.warning("fast number path disabled: %s", exc)
        return _FastTables({}, {})


_FAST_TABLES: Final = _italian_fast_tables()


def national_form(e164: str) -> str:
    """The form Italians dial: +390612345678 -> 0612345678, +393331234567 -> 3331234567."""
    return e164.removeprefix("+39") if e164.startswith("+39") else e164


_DIGIT_RUN = re.compile(r"\+?\d[\d .\-/]{4,}\d")


def redact(text: object) -> str:
    """Text for the log with phone numbers masked (+39333*****67): logs travel further than the
    database, and only the audit log may hold whole numbers."""

    def mask(match: re.Match[str]) -> str:
        digits = match.group(0)
        return digits[:4] + "*" * max(len(digits) - 6, 1) + digits[-2:]

    return _DIGIT_RUN.sub(mask, str(text))
