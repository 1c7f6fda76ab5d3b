"""rpoguard.numbers: dialled strings and caller IDs -> E.164 and line type.

Every verdict here that comes from libphonenumber's metadata (a 30x mobile is invalid, 0844 is unknown to
it, 3902123456 reads as a valid number both with and without its 39 as a country code...) is asserted
against phonenumbers itself next to the case, so a metadata release that changes the facts fails with a
clear message instead of silently testing nothing. The whole numbering plan, range by range, is in
tests/support/numbering_plan.py and test_numbering_plan.py.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from phonenumbers import PhoneNumberType

from rpoguard import constants as c
from rpoguard import numbers as numbers_module
from rpoguard.numbers import Number, NumberError, is_withheld, normalize, normalize_caller_id

ROME = "+390612345678"
MILAN = "+390212345678"
MOBILE = "+393312345678"
NUMBER_REASONS = {c.INVALID_NUMBER, c.FOREIGN_NUMBER, c.UNSUPPORTED_NUMBER_TYPE}

# Deterministic examples: a property that fails must fail on every CI run, not one in twenty.
PROPERTY = settings(max_examples=300, deadline=None, derandomize=True)


def pn_facts(e164: str) -> tuple[bool, str | None, int]:
    """(valid, region, type) as phonenumbers itself sees an E.164 string."""
    parsed = phonenumbers.parse(e164, None)
    return (
        phonenumbers.is_valid_number(parsed),
        phonenumbers.region_code_for_number(parsed),
        phonenumbers.number_type(parsed),
    )


def reason_of(raw: str, **kwargs: str) -> NumberError:
    with pytest.raises(NumberError) as info:
        normalize(raw, **kwargs)
    return info.value


# --- normalize: accepted forms -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "e164", "line_type"),
    [
        # Rome 06, ten digits
        ("+390612345678", ROME, c.LINE_FIXED),
        ("+39 06 1234 5678", ROME, c.LINE_FIXED),
        ("+39 0612345678", ROME, c.LINE_FIXED),
        ("0039 06 12345678", ROME, c.LINE_FIXED),
        ("0039-06-1234-5678", ROME, c.LINE_FIXED),
        ("39 06 12345678", ROME, c.LINE_FIXED),
        ("390612345678", ROME, c.LINE_FIXED),
        ("0612345678", ROME, c.LINE_FIXED),
        ("06 1234 5678", ROME, c.LINE_FIXED),
        ("06-1234-5678", ROME, c.LINE_FIXED),
        ("06.1234.5678", ROME, c.LINE_FIXED),
        ("06/12345678", ROME, c.LINE_FIXED),
        ("(06) 1234 5678", ROME, c.LINE_FIXED),
        ("+39 (06) 1234-5678", ROME, c.LINE_FIXED),
        ("  \t06 12345678\n ", ROME, c.LINE_FIXED),
        ("06\u00a01234\u20135678", ROME, c.LINE_FIXED),  # spreadsheet NBSP and en dash
        # Rome 06, nine digits: Italian fixed numbers have no single length
        ("06 1234567", "+39061234567", c.LINE_FIXED),
        # Milan 02
        ("02 1234 5678", MILAN, c.LINE_FIXED),
        ("+39 02 12345678", MILAN, c.LINE_FIXED),
        ("0039 02 1234 5678", MILAN, c.LINE_FIXED),
        ("39 02 1234 5678", MILAN, c.LINE_FIXED),
        # Mobile 331, ten digits
        ("3312345678", MOBILE, c.LINE_MOBILE),
        ("331 234 5678", MOBILE, c.LINE_MOBILE),
        ("331-234-5678", MOBILE, c.LINE_MOBILE),
        ("331.234.56.78", MOBILE, c.LINE_MOBILE),
        ("(331) 2345678", MOBILE, c.LINE_MOBILE),
        ("331/2345678", MOBILE, c.LINE_MOBILE),
        ("+39 331 234 5678", MOBILE, c.LINE_MOBILE),
        ("+393312345678", MOBILE, c.LINE_MOBILE),
        ("0039 331 2345678", MOBILE, c.LINE_MOBILE),
        ("39 331 234 5678", MOBILE, c.LINE_MOBILE),
        ("393312345678", MOBILE, c.LINE_MOBILE),
        # Nine-digit mobile (11 digits in E.164): string rules that want ten digits refuse these wrongly
        ("331 234567", "+39331234567", c.LINE_MOBILE),
        ("+39 331 234567", "+39331234567", c.LINE_MOBILE),
        # Mobile ranges 31x and 43x, outside the classic 32x-39x block
        ("312 345 6789", "+393123456789", c.LINE_MOBILE),
        ("431 234 5678", "+394312345678", c.LINE_MOBILE),
    ],
)
def test_normalize_accepts_common_forms(raw: str, e164: str, line_type: str) -> None:
    valid, region, _ = pn_facts(e164)
    assert valid
    assert region == "IT"
    assert normalize(raw) == Number(e164, line_type)


@pytest.mark.parametrize(
    ("raw", "trunk_prefix", "expected"),
    [
        ("9 06 12345678", "9", ROME),
        ("9-331-2345678", "9", MOBILE),
        ("9 +39 331 2345678", "9", MOBILE),
        ("9 0039 06 12345678", "9", ROME),
        ("0 06 12345678", "0", ROME),
        ("0 3312345678", "0", MOBILE),
        ("000390612345678", "0", ROME),  # trunk 0, then 0039...
        # Without the prefix the input is read as it is ...
        ("+39 06 12345678", "0", ROME),
        ("06 12345678", "9", ROME),
        ("3312345678", "0", MOBILE),
        # ... and with no trunk configured nothing is stripped.
        ("06 12345678", "", ROME),
    ],
)
def test_trunk_prefix_is_stripped_once(raw: str, trunk_prefix: str, expected: str) -> None:
    assert normalize(raw, trunk_prefix=trunk_prefix).e164 == expected


@pytest.mark.parametrize(
    ("raw", "trunk_prefix"),
    [
        # Strict: trunk "0" takes the 0 of a bare national number; what is left is no number.
        ("0612345678", "0"),
        # Stripped exactly once: a doubled trunk prefix stays wrong.
        ("9 9 06 12345678", "9"),
        # Trunk off: the PBX's 9 is a digit of the number.
        ("9 06 12345678", ""),
    ],
)
def test_trunk_prefix_is_strict(raw: str, trunk_prefix: str) -> None:
    assert reason_of(raw, trunk_prefix=trunk_prefix).reason == c.INVALID_NUMBER


# --- normalize: refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "-",
        "()",
        "+",
        "00",
        "0",
        "39",
        "06",
        "abc",
        "06 1234 567a",
        "tel:+390612345678",
        "+39 06 1234 5678 ext 12",
        "06 1234#5678",
        "++390612345678",
        "+0039 06 12345678",  # '+' and 00 together
        "06\x0012345678",
        "\x00",
        "０６ １２３４ ５６７８",  # fullwidth digits: refused, see numbers.py
        "٠٦١٢٣٤٥٦٧٨",  # Arabic-Indic digits
        "＋39 06 12345678",  # fullwidth plus
        "0" * 33,
        "06 " * 20,
        "3" * 10_000,
        "612345678",  # Rome without its 0
    ],
)
def test_junk_is_invalid(raw: str) -> None:
    err = reason_of(raw)
    assert err.reason == c.INVALID_NUMBER
    assert err.e164 is None


@pytest.mark.parametrize("raw", [None, 390612345678, b"0612345678"])
def test_non_text_is_invalid_not_a_crash(raw: object) -> None:
    with pytest.raises(NumberError) as info:
        normalize(raw)  # type: ignore[arg-type]
    assert info.value.reason == c.INVALID_NUMBER
    with pytest.raises(NumberError):
        normalize_caller_id(raw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "e164",
    [
        "+393012345678",  # 30x is no Italian mobile range ...
        "+39301234567",
        "+393031234567",
        "+39312345678",  # ... and 31x mobiles have ten digits, never nine
    ],
)
def test_numbers_phonenumbers_rejects_are_invalid(e164: str) -> None:
    assert not pn_facts(e164)[0]
    national = e164.removeprefix("+39")
    for raw in (national, e164, "00" + e164[1:]):
        assert reason_of(raw).reason == c.INVALID_NUMBER


@pytest.mark.parametrize(
    ("raw", "e164", "region"),
    [
        ("+44 20 7946 0000", "+442079460000", "GB"),
        ("0044 20 7946 0000", "+442079460000", "GB"),
        ("+33 1 42 68 53 00", "+33142685300", "FR"),
        ("0033142685300", "+33142685300", "FR"),
        # Vatican City shares +39 06 698 with Rome: valid, not Italian
        ("+39 06 698 12345", "+390669812345", "VA"),
        ("06 69812345", "+390669812345", "VA"),
        ("0039 06 69812345", "+390669812345", "VA"),
        # Non-geographic (international freephone)
        ("+800 1234 5678", "+80012345678", "001"),
    ],
)
def test_foreign_numbers(raw: str, e164: str, region: str) -> None:
    valid, pn_region, _ = pn_facts(e164)
    assert valid
    assert pn_region == region
    err = reason_of(raw)
    assert err.reason == c.FOREIGN_NUMBER
    assert err.e164 == e164


@pytest.mark.parametrize(
    ("raw", "e164", "pn_type"),
    [
        ("800 123456", "+39800123456", PhoneNumberType.TOLL_FREE),
        ("+39 800 123 456", "+39800123456", PhoneNumberType.TOLL_FREE),
        ("803 123", "+39803123", PhoneNumberType.TOLL_FREE),
        ("899 123456", "+39899123456", PhoneNumberType.PREMIUM_RATE),
        ("0039 899 123 456", "+39899123456", PhoneNumberType.PREMIUM_RATE),
        ("848 123456", "+39848123456", PhoneNumberType.SHARED_COST),
        ("55 1234 5678", "+395512345678", PhoneNumberType.VOIP),
        ("178 123 4567", "+391781234567", PhoneNumberType.PERSONAL_NUMBER),
        # Eleven national digits starting 33: libphonenumber calls it voicemail access, not a mobile
        ("331 0123 4501", "+3933101234501", PhoneNumberType.VOICEMAIL),
    ],
)
def test_italian_numbers_that_are_neither_fixed_nor_mobile(raw: str, e164: str, pn_type: int) -> None:
    assert pn_facts(e164) == (True, "IT", pn_type)
    err = reason_of(raw)
    assert err.reason == c.UNSUPPORTED_NUMBER_TYPE
    assert err.e164 == e164


# --- 39… without + or 00: national first ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "as_national", "as_country_code"),
    [
        # A 390 mobile, or Genoa 010 0070 after country code 39: the reported case
        ("3901000070", "+393901000070", "+3901000070"),
        # A 390 mobile, or Milan 02 123456 after country code 39
        ("3902123456", "+393902123456", "+3902123456"),
        ("390 212 3456", "+393902123456", "+3902123456"),
        # A 390 mobile, or Rome 06 123456...
        ("3906123456", "+393906123456", "+3906123456"),
    ],
)
def test_39_valid_both_ways_is_the_national_mobile(raw: str, as_national: str, as_country_code: str) -> None:
    # Once refused as ambiguous, which blocked calls to real 390 mobiles and rejected whole RPO files that
    # listed one. An Italian reads these digits as the mobile, so rpoguard does too.
    assert pn_facts(as_national) == (True, "IT", PhoneNumberType.MOBILE)
    assert pn_facts(as_country_code) == (True, "IT", PhoneNumberType.FIXED_LINE)
    assert normalize(raw) == Number(as_national, c.LINE_MOBILE)
    assert normalize("+39" + raw) == Number(as_national, c.LINE_MOBILE)
    # The other reading is one '+' or 00 away.
    digits = raw.replace(" ", "")
    assert normalize("+" + digits) == Number(as_country_code, c.LINE_FIXED)
    assert normalize("00" + digits) == Number(as_country_code, c.LINE_FIXED)
    # Caller IDs are read the same way.
    assert normalize_caller_id(raw) == as_national


@pytest.mark.parametrize(
    ("raw", "as_national", "as_country_code", "expected"),
    [
        # Only country code 39 works: twelve national digits is no mobile
        ("390612345678", "+39390612345678", ROME, ROME),
        ("393312345678", "+39393312345678", MOBILE, MOBILE),
        # Only the national 39x mobile works: +39 12345678 is nothing
        ("3912345678", "+393912345678", "+3912345678", "+393912345678"),
        ("393 312 3456", "+393933123456", "+3933123456", "+393933123456"),
    ],
)
def test_39_valid_one_way_is_taken(raw: str, as_national: str, as_country_code: str, expected: str) -> None:
    assert pn_facts(as_national)[0] == (expected == as_national)
    assert pn_facts(as_country_code)[0] == (expected == as_country_code)
    assert normalize(raw).e164 == expected


def test_fixed_line_or_mobile_is_decided_by_the_leading_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    # Italian metadata never answers FIXED_LINE_OR_MOBILE today, so make it.
    monkeypatch.setattr(phonenumbers, "number_type", lambda _number: PhoneNumberType.FIXED_LINE_OR_MOBILE)
    assert normalize("06 12345678") == Number(ROME, c.LINE_FIXED)
    assert normalize("331 2345678") == Number(MOBILE, c.LINE_MOBILE)


def test_unknown_type_of_a_valid_italian_number_is_unsupported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(phonenumbers, "number_type", lambda _number: PhoneNumberType.UNKNOWN)
    err = reason_of("06 12345678")
    assert err.reason == c.UNSUPPORTED_NUMBER_TYPE
    assert err.e164 == ROME


# --- messages and the error type ----------------------------------------------------------------------


def test_messages_name_the_input_and_truncate_it() -> None:
    assert "'06 1234 567a'" in str(reason_of("06 1234 567a"))
    long_junk = "x" * 500
    message = str(reason_of(long_junk))
    assert repr("x" * 40) + "..." in message
    assert "x" * 41 not in message
    assert "+44" in str(reason_of("+44 20 7946 0000"))
    assert "toll-free" in str(reason_of("800 123456"))
    assert "Vatican" in str(reason_of("06 69812345"))


def test_number_error_is_a_value_error_and_survives_pickling() -> None:
    err = reason_of("+44 20 7946 0000")
    assert isinstance(err, ValueError)
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.reason, copy.e164, str(copy)) == (err.reason, err.e164, str(err))


def test_number_is_frozen() -> None:
    number = normalize("06 12345678")
    with pytest.raises(AttributeError):
        number.e164 = MILAN  # type: ignore[misc]


# --- caller IDs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0612345678", ROME),
        ("+39 06 1234 5678", ROME),
        ("39 06 12345678", ROME),
        ("331 234 5678", MOBILE),
        ("0039 331 2345678", MOBILE),
        # Foreign and non-mobile numbers are call-back-able numbers too; declared or not is rule 10's business
        ("+44 20 7946 0000", "+442079460000"),
        ("06 69812345", "+390669812345"),
        ("800 123456", "+39800123456"),
    ],
)
def test_caller_id_valid_numbers(raw: str, expected: str) -> None:
    assert normalize_caller_id(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0844 123456", "+390844123456"),
        ("0844123456", "+390844123456"),
        ("+39 0844 123456", "+390844123456"),
        ("+39 844 123456", "+390844123456"),  # the 0 dropped, as people write it internationally
        ("0039 844 123456", "+390844123456"),
        ("0039 0844 123456", "+390844123456"),
        ("39 844 123456", "+390844123456"),
        ("39 0844 123456", "+390844123456"),
        ("0843 1234567", "+3908431234567"),
        ("+39843 1234567", "+3908431234567"),
        ("0844 123", "+390844123"),  # shortest: 6 digits after the 0
        ("0844 12345678", "+39084412345678"),  # longest: 11 digits after the 0
    ],
)
def test_caller_id_agcom_ranges_override_phonenumbers(raw: str, expected: str) -> None:
    # The override is the point: phonenumbers calls each of these invalid, in either spelling.
    assert not pn_facts(expected)[0]
    assert not pn_facts("+39" + expected.removeprefix("+390"))[0]
    assert normalize_caller_id(raw) == expected
    # Not a callable destination for marketing, though: the dialled-number path does not override.
    assert reason_of(raw).reason == c.INVALID_NUMBER


@pytest.mark.parametrize(
    "raw",
    [
        "0844 12",  # 5 digits after the 0
        "0844 123456789",  # 12 digits after the 0
        "844 123456",  # national form must keep its 0
        "0845 123456",  # not an AGCOM range, and invalid for phonenumbers
        "anonymous",
        "",
        "０８４４ １２３４５６",
    ],
)
def test_caller_id_invalid(raw: str) -> None:
    with pytest.raises(NumberError) as info:
        normalize_caller_id(raw)
    assert info.value.reason == c.INVALID_NUMBER
    assert info.value.e164 is None


def test_caller_id_39_agcom_reading_yields_to_the_national_mobile() -> None:
    # 3984312345 is a valid 398 mobile, and with 39 as country code it would be the AGCOM caller ID
    # 0843 12345: the national reading comes first, an AGCOM one included (it was refused as ambiguous).
    assert pn_facts("+393984312345") == (True, "IT", PhoneNumberType.MOBILE)
    assert not pn_facts("+39084312345")[0]
    assert normalize_caller_id("3984312345") == "+393984312345"
    assert normalize_caller_id("398 431 2345") == "+393984312345"
    # Written with '+' or 00 it can only be the AGCOM number, its dropped 0 put back.
    assert normalize_caller_id("+39 843 12345") == "+39084312345"
    assert normalize_caller_id("0039 843 12345") == "+39084312345"


def test_caller_id_valid_as_written_comes_before_a_restored_agcom_0(monkeypatch: pytest.MonkeyPatch) -> None:
    # No metadata release has made +39 844… valid yet; if one does, the number as written is the one the
    # caller presented, and putting back a 0 that may never have been dropped is only a guess.
    real_is_valid = phonenumbers.is_valid_number

    def is_valid(number: phonenumbers.PhoneNumber) -> bool:
        if (number.country_code, number.national_number, number.italian_leading_zero) == (39, 844123456, None):
            return True
        return real_is_valid(number)

    # Caller IDs are cached: nothing from before may answer here, nothing from here may answer later.
    numbers_module._caller_id.cache_clear()
    monkeypatch.setattr(phonenumbers, "is_valid_number", is_valid)
    try:
        assert normalize_caller_id("+39 844 123456") == "+39844123456"
        assert normalize_caller_id("39 844 123456") == "+39844123456"
        # Written with its 0 it is still the AGCOM number.
        assert normalize_caller_id("+39 0844 123456") == "+390844123456"
    finally:
        numbers_module._caller_id.cache_clear()


def test_caller_id_errors_are_fresh_each_time() -> None:
    # The cache keeps results as data; re-raising one exception object would grow its traceback forever.
    errors = []
    for _ in range(2):
        with pytest.raises(NumberError) as info:
            normalize_caller_id("not a number")
        errors.append(info.value)
    assert errors[0] is not errors[1]
    assert str(errors[0]) == str(errors[1])


@pytest.mark.parametrize(
    ("raw", "withheld"),
    [
        (None, True),
        ("", True),
        ("   ", True),
        ("unknown", True),
        ("Unknown", True),
        ("anonymous", True),
        ("Anonymous", True),
        (" ANONYMOUS ", True),
        ("restricted", True),
        ("Private", True),
        ("withheld", True),
        ("unavailable", True),
        ("asterisk", True),
        ("Anonimo", True),
        ("privato", True),
        ('"Anonymous"', True),
        ("<anonymous>", True),
        ("sip:anonymous@anonymous.invalid", True),
        ("0612345678", False),
        ("+390844123456", False),
        ("sip:0612345678@pbx.example", False),
        ("0", False),
        ("anonymously", False),
    ],
)
def test_is_withheld(raw: str | None, withheld: bool) -> None:
    assert is_withheld(raw) is withheld


# --- properties ---------------------------------------------------------------------------------------

_IT = phonenumbers.PhoneMetadata.metadata_for_region("IT")
assert _IT is not None
# Build valid Italian numbers from libphonenumber's own patterns, ASCII digits only.
_national_patterns = [_IT.fixed_line.national_number_pattern, _IT.mobile.national_number_pattern]


def _italian_fixed_or_mobile(national: str) -> bool:
    parsed = phonenumbers.parse("+39" + national, None)
    return (
        phonenumbers.is_valid_number(parsed)
        and phonenumbers.region_code_for_number(parsed) == "IT"
        and phonenumbers.number_type(parsed) in (PhoneNumberType.FIXED_LINE, PhoneNumberType.MOBILE)
    )


italian_nationals = st.one_of(
    [st.from_regex(re.compile(p, re.ASCII), fullmatch=True) for p in _national_patterns]
).filter(_italian_fixed_or_mobile)


@st.composite
def with_separators(draw: st.DrawFn, digits: str) -> str:
    """The digits with a random separator (or none) after each one, as people type them."""
    separator = st.sampled_from(["", "", "", " ", "-", ".", "/"])
    seps = draw(st.lists(separator, min_size=len(digits), max_size=len(digits)))
    return "".join(d + s for d, s in zip(digits, seps, strict=True)).rstrip(" -./")


# Forms that must always mean exactly the national number; "39"+national is handled apart because it
# means another number when it is itself a valid national one (national first).
_FORMS: list[Callable[[str], str]] = [
    lambda n: n,
    lambda n: "+39" + n,
    lambda n: "+39 " + n,
    lambda n: "0039" + n,
    lambda n: "00 39 " + n,
    lambda n: f" ({n[:3]}) {n[3:]} ",
]


@PROPERTY
@given(national=italian_nationals, form=st.sampled_from(_FORMS), data=st.data())
def test_property_every_form_gives_the_same_number(
    national: str, form: Callable[[str], str], data: st.DataObject
) -> None:
    expected = normalize("+39" + national)
    assert expected.e164 == "+39" + national
    assert normalize(form(national)) == expected
    assert normalize(data.draw(with_separators(national))) == expected
    assert normalize("9" + form(national), trunk_prefix="9") == expected
    # Without '+' or 00 the 39 is a country code only when "39" + national is no valid national number
    # (a short fixed number after 39 spells a 390 mobile); phonenumbers decides which.
    doubled = "39" + national
    if pn_facts("+39" + doubled)[0]:
        assert normalize(doubled) == normalize("+39" + doubled)
        assert normalize(doubled).e164 == "+39" + doubled
        assert normalize_caller_id(doubled) == "+39" + doubled
    else:
        assert normalize(doubled) == expected
        assert normalize_caller_id(doubled) == expected.e164
    assert normalize_caller_id(form(national)) == expected.e164


digit_like = st.from_regex(re.compile(r"\A\+?[0-9 ().\-/]{0,24}\Z", re.ASCII))
trunks = st.sampled_from(["", "0", "9"])


@PROPERTY
@given(raw=st.one_of(italian_nationals, italian_nationals.map(lambda n: "39" + n), digit_like), trunk=trunks)
def test_property_normalize_is_idempotent(raw: str, trunk: str) -> None:
    try:
        number = normalize(raw, trunk_prefix=trunk)
    except NumberError as err:
        if err.e164 is not None:
            # A valid number of the wrong kind stays the same refusal for the same number.
            again = reason_of(err.e164)
            assert (again.reason, again.e164) == (err.reason, err.e164)
        return
    assert normalize(number.e164) == number
    assert normalize(number.e164, trunk_prefix="9") == number
    assert normalize_caller_id(number.e164) == number.e164


@PROPERTY
@given(raw=st.one_of(st.text(), digit_like, st.from_regex(r"\A[0-9+\s]{0,40}\Z")), trunk=trunks)
def test_property_any_text_gives_a_number_or_a_number_error(raw: str, trunk: str) -> None:
    try:
        number = normalize(raw, trunk_prefix=trunk)
    except NumberError as err:
        assert err.reason in c.REASON_CODES
        assert err.reason in NUMBER_REASONS
        assert err.e164 is None or err.e164.startswith("+")
    else:
        assert number.line_type in (c.LINE_FIXED, c.LINE_MOBILE)
        assert number.e164.startswith("+39")
        assert number.e164[1:].isascii()
        assert number.e164[1:].isdigit()
    try:
        e164 = normalize_caller_id(raw)
    except NumberError as err:
        assert err.reason == c.INVALID_NUMBER
    else:
        assert e164.startswith("+")
        assert e164[1:].isascii()
        assert e164[1:].isdigit()
    assert isinstance(is_withheld(raw), bool)


@PROPERTY
@given(
    prefix=st.sampled_from(["843", "844"]),
    subscriber=st.from_regex(re.compile(r"[0-9]{3,8}", re.ASCII), fullmatch=True),
    form=st.sampled_from(["0{}", "+390{}", "+39{}", "00390{}", "0039{}", "390{}", "39{}"]),
)
def test_property_agcom_caller_ids(prefix: str, subscriber: str, form: str) -> None:
    expected = "+390" + prefix + subscriber
    raw = form.format(prefix + subscriber)
    if form.startswith("39") and pn_facts("+39" + raw)[0]:
        # Without '+' or 00, a string that is itself a valid national number (a 390 or 398 mobile of 9 or
        # 10 digits) is that number: national first, as an Italian reads it.
        assert normalize_caller_id(raw) == "+39" + raw
    else:
        assert normalize_caller_id(raw) == expected
