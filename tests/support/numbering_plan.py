"""The Italian numbering plan as rpoguard must read it: one row per range, length and way of writing it.

``PLAN`` is a truth table for number handling that any test can import
(``from support.numbering_plan import PLAN``). Each row is an input as someone writes it (national digits,
with or without spaces, ``+39``, ``0039``, ``39``) and the answer the law and libphonenumber's Italian metadata
give: the E.164 number and line type rpoguard may call, or the reason code it refuses it with.

The ranges come from libphonenumber's metadata for IT and VA (phonenumbers 9.0.x, read with
``PhoneMetadata.metadata_for_region``); tests/unit/test_numbering_plan.py checks every row against
phonenumbers itself, so a metadata release that moves a range fails there with a message that says so.
In short (NSN = national significant number, leading 0 included):

* mobile ``3[2-9]`` at 9 and 10 digits, ``31`` and ``43`` at 10 digits only; ``30x`` is no range at all;
* fixed ``0…`` at 6 to 11 digits after an area code the fixed_line pattern lists; 12 digits for Brindisi
  0831 only; Vatican City's 06 698 is fixed but not Italian (FOREIGN_NUMBER);
* toll-free 800 (9 digits), 803 (6); premium 89x, 0878, 144, 16[346]; shared cost 84x; personal 178
  and 199; VoIP 55 (10 digits); voicemail access ``3[2-8]`` at 11 and 12 digits: all Italian and valid,
  none fixed or mobile (UNSUPPORTED_NUMBER_TYPE);
* AGCOM 0843/0844 (delib. 156/18/CIR) are unknown to the metadata: refused as dialled numbers,
  accepted as caller IDs;
* ``39…`` without ``+`` or ``00`` is read national first: +39 only when the national reading is no valid
  number (numbers.py). So ``3901000070`` is the 390 mobile, and ``39 06 123456`` too (``3906123456``),
  while ``39 06 12345678`` is Rome because ``390612345678`` is no national number.

Rows carry no operator names: with number portability a prefix says who first issued a number, not who
serves it.

For reuse (the gate, the CSV importers, directory, consents, contracts, opt-outs, scrub), take
``valid_rows()`` (callable, with their E.164 and line type) and ``refused_rows()`` (with their reason
code); ``group`` says what kind of range a row is. Rows of group ``junk`` include the empty string and
non-ASCII text, which an importer may reject as a malformed line before it looks at the number.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from rpoguard.constants import (
    FOREIGN_NUMBER,
    INVALID_NUMBER,
    LINE_FIXED,
    LINE_MOBILE,
    UNSUPPORTED_NUMBER_TYPE,
)

__all__ = [
    "GEOGRAPHIC_CODES",
    "MOBILE_PREFIXES",
    "PLAN",
    "VATICAN_LENGTHS",
    "VATICAN_PREFIX",
    "PlanRow",
    "fixed_lengths",
    "geographic_outcome",
    "mobile_lengths",
    "reads_as_national",
    "refused_rows",
    "valid_rows",
]

# Caller-ID expectation "the same number as the dialled-number answer": what a valid number of any kind
# gives, since a caller ID only has to be a number someone can call back.
_SAME: str = "same"


@dataclass(frozen=True, slots=True)
class PlanRow:
    """One input and what rpoguard must make of it.

    ``e164``/``line_type`` for a number rpoguard can call. A refusal has ``reason`` (a rpoguard.constants
    reason code) and, when the input is a valid number of the wrong kind, the ``e164`` the refusal carries.
    ``caller_id`` is what ``normalize_caller_id`` gives for the same input, None when it refuses it.
    """

    id: str
    raw: str
    description: str
    group: str
    e164: str | None = None
    line_type: str | None = None
    reason: str | None = None
    caller_id: str | None = None

    def __post_init__(self) -> None:
        if (self.line_type is None) == (self.reason is None):
            raise ValueError(f"row {self.id}: give a line type or a reason, not both or neither")
        if self.line_type is not None and self.e164 is None:
            raise ValueError(f"row {self.id}: a number rpoguard can call needs its E.164 form")

    @property
    def valid(self) -> bool:
        """True when rpoguard can call it (an Italian fixed or mobile number)."""
        return self.reason is None


def _ok(id_: str, raw: str, e164: str, line_type: str, description: str, group: str) -> PlanRow:
    return PlanRow(id_, raw, description, group, e164=e164, line_type=line_type, caller_id=e164)


def _no(
    id_: str,
    raw: str,
    reason: str,
    description: str,
    group: str,
    e164: str | None = None,
    caller_id: str | None = _SAME,
) -> PlanRow:
    if caller_id == _SAME:
        caller_id = e164
    return PlanRow(id_, raw, description, group, e164=e164, reason=reason, caller_id=caller_id)


# --- the rules the generated rows follow, as the metadata states them ---------------------------------

# 300-399 and the 43x block: every three-digit prefix a mobile can start with, assigned or not.
MOBILE_PREFIXES: tuple[str, ...] = (*(str(p) for p in range(300, 400)), *(str(p) for p in range(430, 440)))


def mobile_lengths(prefix: str) -> tuple[int, ...]:
    r"""NSN lengths at which a number starting with this three-digit prefix is an Italian mobile.

    IT mobile pattern ``3[2-9]\d{7,8}|(?:31|43)\d{8}``, possible lengths 9 and 10.
    """
    if prefix.startswith(("31", "43")):
        return (10,)
    if prefix.startswith("3") and prefix[1] in "23456789":
        return (9, 10)
    return ()


def fixed_lengths(area_code: str) -> tuple[int, ...]:
    r"""NSN lengths (0 included) of a fixed number after an area code the fixed_line pattern lists.

    ``0(?:669[0-79]\d{1,6}|831\d{2,8})|0(?:<area codes>)\d{2,7}``: 6 to 11 digits, and 12 for 0831 only.
    Vatican City's 06698 is not an Italian area code (see the VA rows).
    """
    if area_code.startswith("0831"):
        return (6, 7, 8, 9, 10, 11, 12)
    return (6, 7, 8, 9, 10, 11)


def reads_as_national(digits: str) -> bool:
    r"""Whether a ``39…`` string of digits is itself a valid national number, and so is read national first.

    The only national numbers that start with 39 are the 39x mobiles (IT general pattern
    ``3(?:[0-8]\d{7,10}|9\d{7,8})``, all of it mobile), so this is a question of length.
    """
    return len(digits) in mobile_lengths(digits[:3])


# Vatican City's fixed numbers: +39 like Rome's, but region VA (VA fixed_line 06698\d{1,6}).
VATICAN_PREFIX = "06698"
VATICAN_LENGTHS: tuple[int, ...] = (6, 7, 8, 9, 10, 11)


def geographic_outcome(national: str) -> str:
    """LINE_FIXED, FOREIGN_NUMBER (Vatican City) or INVALID_NUMBER for a national 0… number (0 included)
    that starts with an area code the fixed_line pattern lists."""
    if national.startswith(VATICAN_PREFIX):
        return FOREIGN_NUMBER if len(national) in VATICAN_LENGTHS else INVALID_NUMBER
    return LINE_FIXED if len(national) in fixed_lengths(national[:4]) else INVALID_NUMBER


# A few real area codes across the fixed_line pattern's branches; descriptions name the main town.
GEOGRAPHIC_CODES: tuple[tuple[str, str], ...] = (
    ("02", "Milan 02"),
    ("06", "Rome 06"),
    ("010", "Genoa 010"),
    ("011", "Turin 011"),
    ("055", "Florence 055"),
    ("070", "Cagliari 070"),
    ("081", "Naples 081"),
    ("091", "Palermo 091"),
    ("0187", "La Spezia 0187"),
    ("0331", "Busto Arsizio 0331"),
    ("0471", "Bolzano 0471"),
    ("0831", "Brindisi 0831"),
    ("0669", "Rome 0669 (06 69 outside Vatican City's 06 698)"),
    ("0965", "Reggio Calabria 0965"),
)
_SUBSCRIBER = "1234567890"


def _mobile_rows() -> Iterator[PlanRow]:
    # One subscriber number per prefix and length; test_numbering_plan.py sweeps many more.
    tails = {10: "1234567", 9: "765432"}
    for prefix in MOBILE_PREFIXES:
        for length, tail in tails.items():
            national = prefix + tail
            lengths = mobile_lengths(prefix)
            if length in lengths:
                description = f"mobile {prefix}, {length} digits"
            elif lengths:
                description = f"{prefix[:2]}x mobiles have {lengths[0]} digits only: {length} digits is no number"
            else:
                description = f"{prefix[:2]}x is no mobile range ({length} digits)"
            spaced = f"{prefix} {tail[:3]} {tail[3:]}" if length == 10 else f"{prefix} {tail}"
            forms = {
                "national": (spaced, "national"),
                "plus39": ("+39 " + spaced, "written +39"),
                "0039": ("0039" + national, "written 0039"),
                # 39 + 9 or 10 digits is 11 or 12 digits: no national number, so +39 it is.
                "39": ("39" + national, "written 39 + national, which is no national number: +39"),
            }
            for form, (raw, how) in forms.items():
                row_id = f"mob-{prefix}-{length}-{form}"
                if length in lengths:
                    yield _ok(row_id, raw, "+39" + national, LINE_MOBILE, f"{description}, {how}", "mobile")
                else:
                    yield _no(row_id, raw, INVALID_NUMBER, f"{description}, {how}", "mobile")


def _ex_ambiguous_rows() -> Iterator[PlanRow]:
    """39x mobiles whose digits after 39 also spell a valid number: national first (once refused)."""
    both = (
        ("3901000070", "mobile 390, 10 digits; +39 0100 0070 would be Genoa 010 (the reported case)"),
        ("390 100 0070", "mobile 390, 10 digits, spaced; +39 0100 0070 would be Genoa"),
        ("3901234567", "mobile 390 123 4567; +39 0123 4567 would be fixed 0123"),
        ("3902123456", "mobile 390, 10 digits; +39 02 123456 would be Milan"),
        ("390 212 3456", "mobile 390, spaced; +39 02 123456 would be Milan"),
        ("3906123456", "mobile 390, 10 digits; +39 06 123456 would be Rome"),
        ("39 06 123456", "39 + Rome 06 at 8 digits is the 390 mobile 3906123456, national first"),
        ("3908311234", "mobile 390, 10 digits; +39 0831 1234 would be Brindisi"),
        ("3906691234", "mobile 390, 10 digits; +39 0669 1234 would be Rome 0669"),
        ("3906698123", "mobile 390, 10 digits; +39 06698 123 would be Vatican City"),
        ("390612345", "mobile 390, 9 digits; +39 0612345 would be Rome at 7 digits"),
        ("390765432", "mobile 390, 9 digits; +39 0765432 would be fixed 0765"),
        ("3989451234", "mobile 398, 10 digits; +39 8945 1234 would be premium rate"),
    )
    for i, (raw, description) in enumerate(both):
        digits = raw.replace(" ", "")
        yield _ok(f"both-{i:02d}-{digits}", raw, "+39" + digits, LINE_MOBILE, description, "39-both-readings")
    # The other reading is one '+' or 00 away.
    other = (
        ("+39 0100 0070", "+3901000070", "Genoa 010, 8 digits, written +39 (the other reading of 3901000070)"),
        ("0039 02 123456", "+3902123456", "Milan 02, 8 digits, written 0039 (the other reading of 3902123456)"),
        ("+39 06 123456", "+3906123456", "Rome 06, 8 digits, written +39 (the other reading of 3906123456)"),
    )
    for i, (raw, e164, description) in enumerate(other):
        yield _ok(f"both-other-{i}", raw, e164, LINE_FIXED, description, "39-both-readings")
    yield _ok("both-39-390", "39 390 100 0070", "+393901000070", LINE_MOBILE,
              "39 + mobile 390: 12 digits is no national number, so +39", "39-both-readings")  # fmt: skip
    yield _ok("both-plus-390", "+39 390 100 0070", "+393901000070", LINE_MOBILE,
              "mobile 390 written +39", "39-both-readings")  # fmt: skip


def _geographic_rows() -> Iterator[PlanRow]:
    for code, town in GEOGRAPHIC_CODES:
        lengths = fixed_lengths(code)
        # 5 and 13 digits are outside the general pattern 0\d{5,11}; 12 is outside fixed_line but for 0831.
        for length in range(5, 14):
            national = (code + _SUBSCRIBER * 2)[:length]
            rest = national[len(code) :]
            valid = length in lengths
            description = f"{town}, {length} digits" + ("" if valid else ": no fixed number has this length")
            forms = {
                "national": f"{code} {rest}",
                "plus39": f"+39 {code} {rest}",
                "0039": "0039" + national,
                "39": f"39 {code} {rest}",
            }
            for form, raw in forms.items():
                row_id = f"geo-{code}-{length}-{form}"
                if form == "39" and reads_as_national("39" + national):
                    # 39 + 7 or 8 digits starting 0 is a 390 mobile of 9 or 10 digits.
                    yield _ok(row_id, raw, "+39" + "39" + national, LINE_MOBILE,
                              f"39 + {town} at {length} digits reads as the 390 mobile (national first)",
                              "geographic")  # fmt: skip
                elif valid:
                    how = "" if form == "national" else f", written {form}"
                    yield _ok(row_id, raw, "+39" + national, LINE_FIXED, description + how, "geographic")
                else:
                    yield _no(row_id, raw, INVALID_NUMBER, f"{description}, written {form}", "geographic")


def _vatican_rows() -> Iterator[PlanRow]:
    e164 = "+390669812345"
    for row_id, raw in (
        ("va-national", "06 698 12345"),
        ("va-plus39", "+39 06 69812345"),
        ("va-0039", "0039 0669812345"),
        ("va-39", "39 06 69812345"),  # 390669812345: 12 digits, no national number, so +39
    ):
        yield _no(row_id, raw, FOREIGN_NUMBER, "Vatican City 06 698, 10 digits (+39 but VA)", "vatican", e164)
    yield _no("va-6", "066981", FOREIGN_NUMBER, "Vatican City 06 698, 6 digits", "vatican", "+39066981")
    yield _no("va-11", "06698 123456", FOREIGN_NUMBER, "Vatican City 06 698, 11 digits", "vatican",
              "+3906698123456")  # fmt: skip


def _special_rows() -> Iterator[PlanRow]:
    unsupported = (
        ("tf-800", "800 123 456", "+39800123456", "toll-free 800, 9 digits"),
        ("tf-800-plus39", "+39 800 123456", "+39800123456", "toll-free 800, written +39"),
        ("tf-800-39", "39 800 123456", "+39800123456", "toll-free 800, written 39 (no national 39 number)"),
        ("tf-803", "803 123", "+39803123", "toll-free 803, 6 digits"),
        ("pr-899", "899 123 456", "+39899123456", "premium 899, 9 digits"),
        ("pr-899-0039", "0039 899 123 456", "+39899123456", "premium 899, written 0039"),
        ("pr-892", "892 123", "+39892123", "premium 892, 6 digits"),
        ("pr-8945", "8945 1234", "+3989451234", "premium 894[5-9], 8 digits"),
        ("pr-8938", "8938 123456", "+398938123456", "premium 8938, 10 digits"),
        ("pr-8955", "8955 123456", "+398955123456", "premium 895[5-9], 10 digits"),
        ("pr-0878", "0878 12345", "+39087812345", "premium 0878, 9 digits"),
        ("pr-144", "144 123456", "+39144123456", "premium 144, 9 digits"),
        ("pr-163", "163 123456", "+39163123456", "premium 163, 9 digits"),
        ("pr-164", "164 123456", "+39164123456", "premium 164, 9 digits"),
        ("pr-166", "166 123456", "+39166123456", "premium 166, 9 digits"),
        ("sc-848", "848 123 456", "+39848123456", "shared cost 848, 9 digits"),
        ("sc-840", "840 123456", "+39840123456", "shared cost 840, 9 digits"),
        ("sc-841", "841 123", "+39841123", "shared cost 841, 6 digits"),
        ("sc-847", "847 123", "+39847123", "shared cost 847, 6 digits"),
        ("pn-178", "178 123 4567", "+391781234567", "personal number 178, 10 digits"),
        ("pn-199", "199 123 456", "+39199123456", "personal number 199, 9 digits"),
        ("voip-55", "55 1234 5678", "+395512345678", "VoIP (nomadic) 55, 10 digits"),
        ("voip-55-plus39", "+39 55 1234 5678", "+395512345678", "VoIP 55, written +39"),
        ("vm-331-11", "331 0123 4501", "+3933101234501", "voicemail access 33x, 11 digits"),
        ("vm-331-12", "331 0123 45678", "+39331012345678", "voicemail access 33x, 12 digits"),
        ("vm-381-12", "381 2345 67890", "+39381234567890", "voicemail access 38x, 12 digits"),
        ("vm-320-11", "+39 320 1234 5678", "+3932012345678", "voicemail access 32x, 11 digits, written +39"),
    )
    for row_id, raw, e164, description in unsupported:
        yield _no(row_id, raw, UNSUPPORTED_NUMBER_TYPE, description, "non-geographic", e164)
    invalid = (
        ("tf-800-6", "800 123", "toll-free 800 has 9 digits, never 6"),
        ("vm-39-11", "395 1234 5678", "39x at 11 digits: voicemail is 3[2-8] only, and +39 5… is nothing"),
        ("vm-31-11", "312 3456 7890", "31x at 11 digits: no voicemail range, no mobile"),
        ("n70", "70 1234 5678", "70, 10 digits: inside the general pattern but of no type"),
        ("n1", "123 456 7890", "1…, 10 digits, not 178/199/144/16x: no type"),
        ("old-0330", "0330 123456", "a 0330 mobile as written before 2001: 0330 is no area code"),
        ("rome-no-0", "6 1234 5678", "Rome without its leading 0"),
        ("vm-too-long", "331 0123 456789", "33x at 13 digits: longer than any Italian number"),
    )
    for row_id, raw, description in invalid:
        yield _no(row_id, raw, INVALID_NUMBER, description, "non-geographic")


def _agcom_rows() -> Iterator[PlanRow]:
    # Unknown to libphonenumber; numbers.py accepts them as caller IDs only (docs/law.md §8).
    for row_id, raw, caller_id, description in (
        ("agcom-0844", "0844 123456", "+390844123456", "AGCOM 0844 marketing, 10 digits"),
        ("agcom-0843", "0843 1234567", "+3908431234567", "AGCOM 0843 surveys, 11 digits"),
        ("agcom-0844-6", "0844 12", None, "AGCOM 0844 with 6 digits: too short even as a caller ID"),
        ("agcom-0844-min", "0844 123", "+390844123", "AGCOM 0844, 7 digits, the shortest caller ID"),
        ("agcom-0844-max", "0844 12345678", "+39084412345678", "AGCOM 0844, 12 digits, the longest caller ID"),
        ("agcom-plus39", "+39 0844 123456", "+390844123456", "AGCOM 0844, written +39"),
        ("agcom-plus39-no0", "+39 844 123456", "+390844123456", "AGCOM 0844 written +39 without its 0"),
        ("agcom-0039-no0", "0039 844 123456", "+390844123456", "AGCOM 0844 written 0039 without its 0"),
        ("agcom-39", "39 0844 123456", "+390844123456", "AGCOM 0844 written 39 (no national 39 number)"),
        ("agcom-39-no0", "39 844 123456", "+390844123456", "AGCOM 0844 written 39 without its 0: 11 digits"),
    ):
        yield _no(row_id, raw, INVALID_NUMBER, description + "; refused as a dialled number", "agcom",
                  caller_id=caller_id)  # fmt: skip
    # 39 + 843/844 + 5 digits is 10 digits: a 398 mobile, read national first by the caller-ID path too.
    yield _ok("agcom-39-mobile-843", "39 843 12345", "+393984312345", LINE_MOBILE,
              "mobile 398, 10 digits; +39 843 12345 would be an AGCOM caller ID", "agcom")  # fmt: skip
    yield _ok("agcom-39-mobile-844", "3984412345", "+393984412345", LINE_MOBILE,
              "mobile 398, 10 digits; +39 844 12345 would be an AGCOM caller ID", "agcom")  # fmt: skip


def _foreign_rows() -> Iterator[PlanRow]:
    for row_id, raw, e164, description in (
        ("gb-plus", "+44 20 7946 0000", "+442079460000", "London, United Kingdom"),
        ("gb-00", "0044 20 7946 0000", "+442079460000", "London, written 0044"),
        ("fr-plus", "+33 1 42 68 53 00", "+33142685300", "Paris, France"),
        ("ch-00", "0041 44 668 18 00", "+41446681800", "Zurich, Switzerland"),
        ("us-plus", "+1 202 456 1111", "+12024561111", "Washington, United States"),
        ("sm-plus", "+378 0549 882222", "+3780549882222", "San Marino"),
        ("intl-800", "+800 1234 5678", "+80012345678", "international freephone +800 (non-geographic)"),
    ):
        yield _no(row_id, raw, FOREIGN_NUMBER, description, "foreign", e164)


def _junk_rows() -> Iterator[PlanRow]:
    for row_id, raw, description in (
        ("empty", "", "empty"),
        ("blank", "   ", "blanks only"),
        ("letters", "abc", "letters"),
        ("letter-inside", "06 1234 567a", "a letter among the digits"),
        ("plus0", "+0612345678", "'+' before a national number"),
        ("plus00", "+0039 06 12345678", "'+' and 00 together"),
        ("plusplus", "++39 06 12345678", "two '+'"),
        ("fullwidth", "０６ １２３４ ５６７８", "fullwidth digits"),
        ("arabic-indic", "٠٦١٢٣٤٥٦٧٨", "Arabic-Indic digits"),
        ("tel-uri", "tel:+390612345678", "a tel: URI, not a number"),
        ("extension", "+39 06 1234 5678 ext 12", "an extension after the number"),
        ("too-long", "3" * 40, "40 digits"),
        ("bare-39", "39", "the country code alone"),
        ("short", "12345", "five digits"),
    ):
        yield _no(f"junk-{row_id}", raw, INVALID_NUMBER, description, "junk")


PLAN: tuple[PlanRow, ...] = (
    *_mobile_rows(),
    *_ex_ambiguous_rows(),
    *_geographic_rows(),
    *_vatican_rows(),
    *_special_rows(),
    *_agcom_rows(),
    *_foreign_rows(),
    *_junk_rows(),
)


def valid_rows() -> tuple[PlanRow, ...]:
    """Rows rpoguard can call: Italian fixed and mobile numbers, with their E.164 and line type."""
    return tuple(row for row in PLAN if row.valid)


def refused_rows(reason: str | None = None) -> tuple[PlanRow, ...]:
    """Rows rpoguard refuses, all of them or those with one reason code."""
    return tuple(row for row in PLAN if not row.valid and (reason is None or row.reason == reason))
