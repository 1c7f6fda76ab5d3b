"""The whole national numbering plan through rpoguard.numbers: every row of support/numbering_plan.py, then sweeps.

The table holds the truth (what the law and libphonenumber's metadata say a string means); every answer
here is computed by the code under test and compared with it. Two checks keep the table itself honest:
each row's facts are asserted against phonenumbers directly, and so is every number the sweeps generate,
so a metadata release that moves a range fails with "the plan no longer matches libphonenumber" rather
than as a bug in numbers.py.

Each check runs over all rows in one test and reports every row that disagrees: one test per row would
be thousands of test items for a module that has to stay a few seconds long.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable

import phonenumbers
from phonenumbers import PhoneMetadata, PhoneNumberType

from rpoguard import constants as c
from rpoguard.numbers import Number, NumberError, normalize, normalize_caller_id, normalize_fast, normalize_for_import
from support.numbering_plan import (
    GEOGRAPHIC_CODES,
    MOBILE_PREFIXES,
    PLAN,
    PlanRow,
    geographic_outcome,
    mobile_lengths,
    reads_as_national,
    refused_rows,
    valid_rows,
)

NUMBER_REASONS = {c.INVALID_NUMBER, c.FOREIGN_NUMBER, c.UNSUPPORTED_NUMBER_TYPE}
LINE_OF_TYPE = {PhoneNumberType.FIXED_LINE: c.LINE_FIXED, PhoneNumberType.MOBILE: c.LINE_MOBILE}
SHOWN = 40  # disagreements listed in a failure message

Outcome = tuple[str, str | None, str | None]


def expected(row: PlanRow) -> Outcome:
    if row.valid:
        return ("number", row.e164, row.line_type)
    return ("refused", row.reason, row.e164)


def outcome(call: Callable[[str], Number], raw: str) -> Outcome:
    """("number", e164, line type) or ("refused", reason, e164): what the table can say about an answer."""
    try:
        number = call(raw)
    except NumberError as exc:
        return ("refused", exc.reason, exc.e164)
    return ("number", number.e164, number.line_type)


def disagreements(rows: Iterable[PlanRow], call: Callable[[str], Number]) -> list[str]:
    return [
        f"{row.id} {row.raw!r} ({row.description}): {got} instead of {want}"
        for row in rows
        if (got := outcome(call, row.raw)) != (want := expected(row))
    ]


def report(wrong: list[str], total: int) -> str:
    return f"{len(wrong)} of {total} disagree:\n" + "\n".join(wrong[:SHOWN])


def pn_outcome(e164: str) -> str:
    """What libphonenumber alone makes of an E.164 string, in the plan's words."""
    try:
        parsed = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return c.INVALID_NUMBER
    if not phonenumbers.is_valid_number(parsed):
        return c.INVALID_NUMBER
    if phonenumbers.region_code_for_number(parsed) != "IT":
        return c.FOREIGN_NUMBER
    return LINE_OF_TYPE.get(phonenumbers.number_type(parsed), c.UNSUPPORTED_NUMBER_TYPE)


def digits_of(raw: str) -> str:
    return re.sub(r"[\s\-.()/]", "", raw)


# --- the table itself ----------------------------------------------------------------------------------


def test_plan_rows_are_well_formed_and_cover_the_plan() -> None:
    ids = [row.id for row in PLAN]
    assert len(ids) == len(set(ids)), "row ids must be unique"
    for row in PLAN:
        if row.valid:
            assert row.line_type in (c.LINE_FIXED, c.LINE_MOBILE), row
            assert row.e164 is not None and row.e164.startswith("+39"), row
        else:
            assert row.reason in c.REASON_CODES and row.reason in NUMBER_REASONS, row
            # A valid number of the wrong kind carries its E.164 form; an invalid one has none.
            assert (row.e164 is None) == (row.reason == c.INVALID_NUMBER), row
    assert set(valid_rows()) | set(refused_rows()) == set(PLAN)
    assert {row.reason for row in refused_rows()} == NUMBER_REASONS
    # What the plan promises to cover: every mobile prefix at 9 and 10 digits in each written form ...
    for prefix in (str(p) for p in range(310, 400)):
        for length in (9, 10):
            for form in ("national", "plus39", "0039", "39"):
                assert f"mob-{prefix}-{length}-{form}" in ids
    # ... and geographic numbers at every length from 6 to 11 digits (and the refused 5, 12, 13).
    for code, _ in GEOGRAPHIC_CODES:
        for length in range(5, 14):
            assert f"geo-{code}-{length}-national" in ids


def test_plan_is_what_libphonenumber_says() -> None:
    wrong = []
    for row in PLAN:
        if row.e164 is not None:
            want = row.line_type if row.valid else row.reason
            if (got := pn_outcome(row.e164)) != want:
                wrong.append(f"{row.id}: libphonenumber says {got} for {row.e164}, the plan {want}")
        digits = digits_of(row.raw)
        if not re.fullmatch(r"\+?[0-9]+", digits):
            continue
        if digits.startswith("+"):
            readings = [digits]
        elif digits.startswith("00"):
            readings = ["+" + digits[2:]]
        elif digits.startswith("39"):
            readings = ["+39" + digits, "+" + digits]
        else:
            readings = ["+39" + digits]
        valid = [reading for reading in readings if pn_outcome(reading) != c.INVALID_NUMBER]
        if row.reason == c.INVALID_NUMBER and valid:
            wrong.append(f"{row.id}: refused as invalid, but libphonenumber calls {valid} valid")
        if row.e164 is not None and valid[:1] != [row.e164]:
            # National first: the first valid reading (national before +39) is the number.
            wrong.append(f"{row.id}: the first valid reading is {valid[:1]}, the plan says {row.e164}")
    assert not wrong, "the plan no longer matches libphonenumber's metadata:\n" + "\n".join(wrong[:SHOWN])


# --- every row through every entry point ---------------------------------------------------------------


def test_normalize_reads_every_row_as_the_plan_says() -> None:
    wrong = disagreements(PLAN, normalize)
    assert not wrong, report(wrong, len(PLAN))


def test_normalize_for_import_reads_every_row_as_the_plan_says() -> None:
    wrong = disagreements(PLAN, normalize_for_import)
    assert not wrong, report(wrong, len(PLAN))


def test_fast_path_gives_the_plan_or_no_answer() -> None:
    wrong = []
    for row in PLAN:
        fast = normalize_fast(row.raw)
        if fast is None:
            continue
        if ("number", fast.e164, fast.line_type) != expected(row):
            wrong.append(f"{row.id} {row.raw!r}: fast path says {fast}, the plan {expected(row)}")
        if fast != normalize(row.raw):
            wrong.append(f"{row.id} {row.raw!r}: fast path says {fast}, normalize {normalize(row.raw)}")
    assert not wrong, report(wrong, len(PLAN))


def test_fast_path_answers_every_callable_row() -> None:
    # The 39… forms included: national first lets the fast path answer the 390 mobiles it used to pass on.
    missed = [f"{row.id} {row.raw!r}" for row in valid_rows() if normalize_fast(row.raw) is None]
    assert not missed, report(missed, len(valid_rows()))


def test_refusals_name_no_ambiguity() -> None:
    for row in refused_rows():
        try:
            normalize(row.raw)
        except NumberError as exc:
            assert "ambiguous" not in str(exc), (row.id, str(exc))


def test_trunk_prefix_0_reads_every_row_the_same() -> None:
    wrong = disagreements(PLAN, lambda raw: normalize("0" + raw, trunk_prefix="0"))
    assert not wrong, report(wrong, len(PLAN))


def test_caller_id_reads_every_row_as_the_plan_says() -> None:
    wrong = []
    for row in PLAN:
        try:
            got: str | None = normalize_caller_id(row.raw)
        except NumberError as exc:
            assert exc.reason == c.INVALID_NUMBER, (row.id, exc.reason)
            got = None
        if got != row.caller_id:
            wrong.append(f"{row.id} {row.raw!r} ({row.description}): caller ID {got}, the plan {row.caller_id}")
    assert not wrong, report(wrong, len(PLAN))


# --- sweeps: many more numbers than the table lists, from the same rules ---------------------------------


def number_expectation(e164: str, kind: str) -> Outcome:
    if kind in (c.LINE_FIXED, c.LINE_MOBILE):
        return ("number", e164, kind)
    return ("refused", kind, None if kind == c.INVALID_NUMBER else e164)


def check_everywhere(raw: str, want: Outcome, wrong: list[str]) -> None:
    """normalize, normalize_for_import and the fast path (which must answer a callable number) give want."""
    slow = outcome(normalize, raw)
    if slow != want:
        wrong.append(f"normalize({raw!r}) = {slow}, expected {want}")
    if (imported := outcome(normalize_for_import, raw)) != want:
        wrong.append(f"normalize_for_import({raw!r}) = {imported}, expected {want}")
    fast = normalize_fast(raw)
    if fast is None:
        if want[0] == "number":
            wrong.append(f"normalize_fast({raw!r}) gave no answer for {want}")
    elif ("number", fast.e164, fast.line_type) != slow:
        wrong.append(f"normalize_fast({raw!r}) = {fast}, normalize {slow}")


def test_sweep_every_mobile_prefix() -> None:
    rng = random.Random(310)
    # Random subscriber numbers, and some whose digits after a 39 make a fixed number (+39 0…) too.
    subscribers = ["0000000", "9999999", "1000070", "2123456", "6123456", "8311234", "6698123", "8945123"]
    subscribers += ["".join(rng.choices("0123456789", k=7)) for _ in range(10)]
    wrong: list[str] = []
    checked = 0
    for prefix in MOBILE_PREFIXES:
        for subscriber in subscribers:
            for length in (9, 10):
                national = prefix + subscriber[: length - 3]
                kind = c.LINE_MOBILE if length in mobile_lengths(prefix) else c.INVALID_NUMBER
                if (truth := pn_outcome("+39" + national)) != kind:
                    wrong.append(f"plan says {kind} for {national}, libphonenumber {truth}")
                want = number_expectation("+39" + national, kind)
                # 39 + a mobile is 11 or 12 digits, never a national number: read with country code 39.
                assert not reads_as_national("39" + national)
                for raw in (national, "+39" + national, "0039" + national, "39" + national):
                    check_everywhere(raw, want, wrong)
                    checked += 1
    assert not wrong, report(wrong, checked)


IT = PhoneMetadata.metadata_for_region("IT")
assert IT is not None and IT.fixed_line.national_number_pattern is not None
_FIXED = re.compile(IT.fixed_line.national_number_pattern)
# Every four-digit start of a fixed number (0 and three digits) the metadata's fixed_line pattern lists:
# the shortest fixed number is six digits, so "0abc00" matches exactly when 0abc is one.
AREA_CODES = [f"0{abc:03d}" for abc in range(1000) if _FIXED.fullmatch(f"0{abc:03d}00")]


def test_sweep_every_geographic_area_code() -> None:
    assert len(AREA_CODES) > 600, AREA_CODES  # a metadata change that empties this must not pass unseen
    assert {"0200", "0612", "0101", "0110", "0331", "0471", "0831", "0669"} <= set(AREA_CODES)
    rng = random.Random(6)
    wrong: list[str] = []
    checked = 0
    for code in AREA_CODES:
        for length in range(5, 14):
            national = (code + "".join(rng.choices("0123456789", k=10)))[:length]
            kind = geographic_outcome(national)
            if (truth := pn_outcome("+39" + national)) != kind:
                wrong.append(f"plan says {kind} for {national}, libphonenumber {truth}")
            want = number_expectation("+39" + national, kind)
            if reads_as_national("39" + national):
                # 39 + 7 or 8 digits starting 0: the 390 mobile of 9 or 10 digits, national first.
                want_39 = number_expectation("+3939" + national, c.LINE_MOBILE)
            else:
                want_39 = want
            for raw, want_here in ((national, want), ("+39" + national, want), ("39" + national, want_39)):
                check_everywhere(raw, want_here, wrong)
                checked += 1
    assert not wrong, report(wrong, checked)
