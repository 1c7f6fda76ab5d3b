"""rpoguard.numbers fast path: normalize_fast answers only what normalize answers; normalize_for_import is normalize.

The fast path is allowed to say None for anything; what it must never do is give an answer normalize would
not. So every property below is "if the fast path answers, normalize agrees", over inputs built to sit on
the edges of the metadata (generated from its patterns, mutated by one digit, prefixed every way), and a
separate coverage test keeps the fast path from passing by answering nothing.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import phonenumbers
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from phonenumbers import PhoneMetadata, PhoneNumberDesc, PhoneNumberType
from phonenumbers.phonenumberutil import _number_type_helper

from rpoguard import constants as c
from rpoguard import numbers
from rpoguard.numbers import (
    Number,
    NumberError,
    _build_fast_tables,
    _fast_line_type,
    _italian_fast_tables,
    normalize,
    normalize_fast,
    normalize_for_import,
)

# Deterministic: a disagreement must fail on every run. Many examples, because a disagreement would be a
# wrong line type or a foreign number let through on a fraction of a 30-million-row file.
AGREEMENT = settings(
    max_examples=2500,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)

DIGITS = "0123456789"
REGIONS_39 = phonenumbers.COUNTRY_CODE_TO_REGION_CODE[39]

# What may stand before the national significant number in a dialled string; "" is the national form.
PREFIXES = ["", "+39", "0039", "39", "+39 ", "0039 ", "39 ", "+", "00", "+3939", "003939", "3939", "0", "9", "+44"]
# Leading digits that sit on the edges: unassigned 30x mobiles, the 31x/43x mobile ranges, the 39x ranges
# that collide with the country code, Vatican City's 06698, AGCOM 0843/0844, toll-free, premium,
# shared-cost, VoIP, personal numbers and the other first digits.
HEADS = [
    "0", "02", "06", "011", "0831", "0471", "066", "0669", "06698", "066980", "06699", "0843", "0844", "0878",
    "08", "3", "30", "300", "301", "305", "306", "309", "31", "311", "32", "33", "331", "34", "35", "36",
    "37", "38", "39", "390", "391", "392", "393", "397", "399", "4", "43", "431", "5", "55", "6", "7", "70",
    "80", "800", "803", "84", "840", "847", "848", "89", "892", "895", "899", "1", "144", "166", "178",
    "199", "9",
]  # fmt: skip
# Most operators' rows carry one of these, so they are drawn about half the time.
COMMON_PREFIXES = ["", "+39", "0039", "39"]
PREFIX = st.one_of(st.sampled_from(COMMON_PREFIXES), st.sampled_from(PREFIXES))
SEPARATORS = [" ", "-", ".", "/", "(", ")", "\u00a0", "\u2013", "\t"]


def outcome(function: Callable[[str], Number], raw: object) -> tuple[object, ...]:
    """What a normaliser says about raw, in a form that compares equal exactly when the answers are equal."""
    try:
        number = function(raw)  # type: ignore[arg-type]
    except NumberError as exc:
        return ("refused", exc.reason, exc.e164, str(exc))
    return ("number", type(number), number.e164, number.line_type)


def assert_agrees(raw: object) -> None:
    """The two contracts: a fast answer is normalize's answer; normalize_for_import is normalize."""
    expected = outcome(normalize, raw)
    fast = normalize_fast(raw)  # type: ignore[arg-type]
    if fast is not None:
        assert outcome(lambda _: fast, raw) == expected, f"fast path disagrees on {raw!r}"
    assert outcome(normalize_for_import, raw) == expected, f"normalize_for_import disagrees on {raw!r}"


def pn_facts(e164: str) -> tuple[bool, str | None, int]:
    parsed = phonenumbers.parse(e164, None)
    return (
        phonenumbers.is_valid_number(parsed),
        phonenumbers.region_code_for_number(parsed),
        phonenumbers.number_type(parsed),
    )


# --- input strategies ----------------------------------------------------------------------------------


@st.composite
def with_separators(draw: st.DrawFn, text: str) -> str:
    """text, or text with a few separators put in, as spreadsheets and people write numbers."""
    if draw(st.integers(0, 2)) == 0:  # one time in three: the cleaned forms are the ones that matter most
        return text
    chars = list(text)
    for _ in range(draw(st.integers(1, 4))):
        chars.insert(draw(st.integers(0, len(chars))), draw(st.sampled_from(SEPARATORS)))
    return "".join(chars)


@st.composite
def prefixed_digits(draw: st.DrawFn) -> str:
    """A prefix, an edge-case head and random digits: 5 to 15 digits after the prefix."""
    head = draw(st.sampled_from(HEADS))
    length = draw(st.integers(5, 15))
    tail = draw(st.text(DIGITS, min_size=max(0, length - len(head)), max_size=max(0, length - len(head))))
    return draw(with_separators(draw(PREFIX) + head + tail))


def _descs(region: str) -> list[PhoneNumberDesc]:
    metadata = PhoneMetadata.metadata_for_region(region)
    return [desc for desc in vars(metadata).values() if isinstance(desc, PhoneNumberDesc)]


# Every pattern of every +39 region (IT and VA), every line type and the general descriptions: numbers
# libphonenumber calls valid, of every kind, and numbers right next to them.
PATTERNS = sorted(
    {desc.national_number_pattern for region in REGIONS_39 for desc in _descs(region) if desc.national_number_pattern}
)


@st.composite
def from_metadata(draw: st.DrawFn) -> str:
    pattern = draw(st.sampled_from(PATTERNS))
    nsn = draw(st.from_regex(pattern, fullmatch=True, alphabet=DIGITS))
    return draw(with_separators(draw(PREFIX) + nsn))


def _example_nsns() -> list[str]:
    nsns = {desc.example_number for r in REGIONS_39 for desc in _descs(r) if desc.example_number}
    for region in REGIONS_39:
        for number_type in vars(PhoneNumberType).values():
            if isinstance(number_type, int):
                example = phonenumbers.example_number_for_type(region, number_type)
                if example is not None:
                    nsns.add(phonenumbers.national_significant_number(example))
    return sorted(nsns)


EXAMPLE_NSNS = _example_nsns()


@st.composite
def mutated_examples(draw: st.DrawFn) -> str:
    """An example number as it is, or with one digit changed, dropped or added: the edges of each range."""
    nsn = draw(st.sampled_from(EXAMPLE_NSNS))
    where = draw(st.integers(0, len(nsn)))
    digit = draw(st.sampled_from(DIGITS))
    changed = nsn[:where] + digit + nsn[where + 1 :]
    dropped = nsn[:where] + nsn[where + 1 :]
    added = nsn[:where] + digit + nsn[where:]
    nsn = draw(st.sampled_from([nsn, changed, dropped, added]))
    return draw(with_separators(draw(PREFIX) + nsn))


@st.composite
def thirty_nine_strings(draw: st.DrawFn) -> str:
    """39 without '+' or 00, then a tail: the strings with two readings, which normalize reads national first.

    Tails from every metadata pattern (a fixed number of 6 to 8 digits after 39 spells a 390 mobile, a
    premium 894… one a 398 mobile) and random digits of the lengths around the 9 and 10 of a 39x mobile.
    """
    from_pattern = st.sampled_from(PATTERNS).flatmap(lambda p: st.from_regex(p, fullmatch=True, alphabet=DIGITS))
    # "0" + 6 or 7 digits: most such tails are fixed numbers, so both readings are valid.
    short_fixed = st.text(DIGITS, min_size=6, max_size=7).map(lambda digits: "0" + digits)
    tail = draw(st.one_of(from_pattern, short_fixed, st.text(DIGITS, min_size=4, max_size=11)))
    return draw(with_separators("39" + tail))


RANDOM_TEXT = st.one_of(
    st.text(max_size=30),
    # Near misses: digits of other scripts, fullwidth, letters and repeated plus signs among real digits.
    st.text(alphabet=DIGITS + "+ -().\u00a0\u2013/\u0663\uff10\uff16ab", max_size=24),
)

SOURCES = {
    "prefixed-digits": prefixed_digits(),
    "metadata-patterns": from_metadata(),
    "mutated-examples": mutated_examples(),
    "39-strings": thirty_nine_strings(),
    "random-text": RANDOM_TEXT,
}


# --- properties ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", SOURCES.values(), ids=SOURCES.keys())
@AGREEMENT
@given(data=st.data())
def test_fast_path_and_import_agree_with_normalize(source: st.SearchStrategy[str], data: st.DataObject) -> None:
    assert_agrees(data.draw(source, label="raw"))


def test_every_example_number_agrees_in_every_form() -> None:
    # Exhaustive over the small set, so that no example number depends on Hypothesis drawing it.
    for nsn in EXAMPLE_NSNS:
        for prefix in PREFIXES:
            assert_agrees(prefix + nsn)


def realistic_italian_numbers(count: int, seed: int) -> list[str]:
    """Valid Italian fixed and mobile numbers (national significant numbers), as operators' lists hold them."""
    rng = random.Random(seed)
    mobile_prefixes = ["320", "324", "328", "329", "330", "331", "333", "335", "338", "339", "340", "342",
                       "345", "347", "348", "349", "350", "351", "366", "370", "377", "380", "389", "391",
                       "392", "393"]  # fmt: skip
    area_codes = ["02", "06", "010", "011", "030", "035", "039", "040", "041", "045", "049", "050", "051",
                  "055", "059", "070", "071", "075", "080", "081", "089", "090", "091", "095", "0331",
                  "0362", "0471", "0521", "0541", "0583", "0721", "0823", "0884", "0932"]  # fmt: skip
    numbers: list[str] = []
    while len(numbers) < count:
        if rng.random() < 0.6:
            prefix = rng.choice(mobile_prefixes)
            nsn = prefix + "".join(rng.choices(DIGITS, k=rng.choice((6, 7, 7, 7))))
        else:
            prefix = rng.choice(area_codes)
            nsn = prefix + "".join(rng.choices(DIGITS, k=rng.choice((9, 10, 10, 10)) - len(prefix)))
        try:
            normalize(nsn)
        except NumberError:
            continue
        numbers.append(nsn)
    return numbers


def test_fast_path_takes_the_common_forms() -> None:
    rng = random.Random(7)
    forms: list[Callable[[str], str]] = [
        lambda nsn: "+39" + nsn,
        lambda nsn: nsn,
        lambda nsn: "0039" + nsn,
        lambda nsn: "+39 " + nsn[:3] + " " + nsn[3:],
        lambda nsn: nsn[:3] + "-" + nsn[3:],
    ]
    sample = [rng.choice(forms)(nsn) for nsn in realistic_italian_numbers(1000, seed=11)]
    taken = 0
    for raw in sample:
        fast = normalize_fast(raw)
        if fast is not None:
            taken += 1
            assert fast == normalize(raw)
    assert taken >= 0.95 * len(sample), f"fast path took only {taken} of {len(sample)} clean numbers"


# --- the known traps -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    ["3012345678", "300 123 4567", "+39 305 1234567", "0039 309 1234567", "301234567", "+39 306 123456"],
)
def test_30x_numbers_are_refused(raw: str) -> None:
    # A digit count calls these mobiles; the metadata has no 30x mobile range.
    digits = "".join(ch for ch in raw if ch.isdigit())
    assert pn_facts("+39" + digits.removeprefix("0039").removeprefix("39"))[0] is False
    assert normalize_fast(raw) is None
    with pytest.raises(NumberError) as info:
        normalize_for_import(raw)
    assert info.value.reason == c.INVALID_NUMBER


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        ("331234567", "+39331234567"),
        ("331 234567", "+39331234567"),
        ("+39 331 234567", "+39331234567"),
        ("0039331234567", "+39331234567"),
        ("347 123456", "+39347123456"),
    ],
)
def test_nine_digit_mobiles_are_taken(raw: str, e164: str) -> None:
    # A "mobile means ten digits" rule refuses these; the metadata's mobile pattern takes 9 or 10.
    assert pn_facts(e164) == (True, "IT", PhoneNumberType.MOBILE)
    assert normalize_fast(raw) == Number(e164, c.LINE_MOBILE) == normalize(raw)


@pytest.mark.parametrize("raw", ["+39 06 698 12345", "06 6981 2345", "0039 0669812345", "39 06 69812345", "+390669812"])
def test_vatican_numbers_go_to_normalize(raw: str) -> None:
    assert normalize_fast(raw) is None
    with pytest.raises(NumberError) as info:
        normalize_for_import(raw)
    assert info.value.reason == c.FOREIGN_NUMBER
    assert pn_facts(info.value.e164 or "")[:2] == (True, "VA")


@pytest.mark.parametrize("raw", ["3901000070", "3902123456", "39 02 123456", "39 0612 3456", "390612345"])
def test_39_strings_valid_both_ways_are_national_and_fast(raw: str) -> None:
    digits = raw.replace(" ", "")
    # Both readings are valid numbers for libphonenumber: national 39x… and 39 as the country code.
    assert pn_facts("+39" + digits) == (True, "IT", PhoneNumberType.MOBILE)
    assert pn_facts("+" + digits)[0] is True
    # National first: the 390 mobile, and the fast path knows it without asking normalize (these were
    # once refused as ambiguous, after a slow trip through normalize).
    assert normalize_fast(raw) == Number("+39" + digits, c.LINE_MOBILE) == normalize(raw)
    assert normalize_for_import(raw) == normalize(raw)


def test_39_string_whose_national_reading_the_tables_do_not_know_goes_to_normalize(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Tables without a 10-digit classifier stand for a metadata release where a 39x… number of 10 digits
    # may be valid as a type the fast path does not answer for. Its national reading is still plausible,
    # so the fast path must not fall back to the +39 reading (Milan 02 123456 here): national first.
    tables = numbers._FAST_TABLES
    classifiers = {length: regex for length, regex in tables.classifiers.items() if length != 10}
    monkeypatch.setattr(numbers, "_FAST_TABLES", tables._replace(classifiers=classifiers))
    # The +39 reading on its own is still one the fast path answers: the trap is real.
    assert normalize_fast("+3902123456") == Number("+3902123456", c.LINE_FIXED)
    assert normalize_fast("3902123456") is None
    assert normalize_for_import("3902123456") == Number("+393902123456", c.LINE_MOBILE)


@pytest.mark.parametrize(
    ("raw", "e164", "line_type"),
    [
        ("39 06 12345678", "+390612345678", c.LINE_FIXED),  # 390612345678 is too long for a national 39x…
        ("39 0331 123456", "+390331123456", c.LINE_FIXED),
        ("393312345678", "+393312345678", c.LINE_MOBILE),
        ("39331234567", "+39331234567", c.LINE_MOBILE),
        ("3921234567", "+393921234567", c.LINE_MOBILE),  # +3921234567 cannot be valid: national it is
        ("393 123 4567", "+393931234567", c.LINE_MOBILE),
    ],
)
def test_39_strings_with_one_valid_reading_are_taken(raw: str, e164: str, line_type: str) -> None:
    assert normalize_fast(raw) == Number(e164, line_type) == normalize(raw)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("800 123456", c.UNSUPPORTED_NUMBER_TYPE),  # toll-free
        ("803123", c.UNSUPPORTED_NUMBER_TYPE),
        ("899 123456", c.UNSUPPORTED_NUMBER_TYPE),  # premium
        ("892123", c.UNSUPPORTED_NUMBER_TYPE),
        ("848 123456", c.UNSUPPORTED_NUMBER_TYPE),  # shared cost
        ("55 1234 5678", c.UNSUPPORTED_NUMBER_TYPE),  # VoIP
        ("178 1234567", c.UNSUPPORTED_NUMBER_TYPE),  # personal
        ("33101234501", c.UNSUPPORTED_NUMBER_TYPE),  # voicemail
        ("0844 123456", c.INVALID_NUMBER),  # AGCOM: unknown to the metadata, refused as a dialled number
        ("0843 123456", c.INVALID_NUMBER),
        ("+44 20 7946 0958", c.FOREIGN_NUMBER),
        ("0044 20 7946 0958", c.FOREIGN_NUMBER),
        ("+0612345678", c.INVALID_NUMBER),
        ("\u0660\u0666\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668", c.INVALID_NUMBER),  # Arabic-Indic
        ("\uff10\uff16\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18", c.INVALID_NUMBER),  # fullwidth
        ("06 1234 5678 ext 12", c.INVALID_NUMBER),
        ("06" + "1" * 40, c.INVALID_NUMBER),
        ("0612345678" + " " * 200, c.INVALID_NUMBER),  # too long before separators are removed
        ("", c.INVALID_NUMBER),
    ],
)
def test_everything_else_goes_to_normalize(raw: str, reason: str) -> None:
    assert normalize_fast(raw) is None
    with pytest.raises(NumberError) as info:
        normalize_for_import(raw)
    assert info.value.reason == reason
    assert outcome(normalize_for_import, raw) == outcome(normalize, raw)


@pytest.mark.parametrize("raw", [None, 3312345678, b"3312345678"])
def test_non_text_goes_to_normalize(raw: object) -> None:
    assert normalize_fast(raw) is None  # type: ignore[arg-type]
    assert outcome(normalize_for_import, raw) == outcome(normalize, raw)
    assert outcome(normalize, raw)[:2] == ("refused", c.INVALID_NUMBER)


# --- the construction itself, on metadata that does not exist (yet) ------------------------------------


def _synthetic(**descs: PhoneNumberDesc) -> PhoneMetadata:
    general = PhoneNumberDesc(national_number_pattern=r"[0-9]\d{8}", possible_length=(9,))
    return PhoneMetadata(id="XX", country_code=999, general_desc=general, register=False, **descs)


SYNTHETIC = {
    # Fixed and mobile overlap on 3…: FIXED_LINE_OR_MOBILE, which normalize files under the leading 0.
    "overlap": _synthetic(
        fixed_line=PhoneNumberDesc(national_number_pattern=r"[03]\d{8}", possible_length=(9,)),
        mobile=PhoneNumberDesc(national_number_pattern=r"3\d{8}", possible_length=(9,)),
    ),
    # Identical patterns: phonenumbers says FIXED_LINE_OR_MOBILE without looking at mobile again.
    "same-pattern": _synthetic(
        fixed_line=PhoneNumberDesc(national_number_pattern=r"[03]\d{8}", possible_length=(9,)),
        mobile=PhoneNumberDesc(national_number_pattern=r"[03]\d{8}", possible_length=(9,)),
    ),
    # A toll-free range inside the fixed-line one: phonenumbers tests toll-free first, so it wins.
    "shadowed": _synthetic(
        fixed_line=PhoneNumberDesc(national_number_pattern=r"0\d{8}", possible_length=(9,)),
        mobile=PhoneNumberDesc(national_number_pattern=r"3\d{8}", possible_length=(9,)),
        toll_free=PhoneNumberDesc(national_number_pattern=r"08\d{7}", possible_length=(9,)),
    ),
    # Possible lengths narrower than the pattern: the length list decides.
    "lengths": _synthetic(
        fixed_line=PhoneNumberDesc(national_number_pattern=r"0\d{5,8}", possible_length=(9,)),
        mobile=PhoneNumberDesc(national_number_pattern=r"3\d{8}", possible_length=(8,)),
    ),
}
LINE_OF_TYPE = {PhoneNumberType.FIXED_LINE: c.LINE_FIXED, PhoneNumberType.MOBILE: c.LINE_MOBILE}


@pytest.mark.parametrize("metadata", SYNTHETIC.values(), ids=SYNTHETIC.keys())
def test_classifier_follows_phonenumbers_type_rules(metadata: PhoneMetadata) -> None:
    tables = _build_fast_tables(metadata, [])
    rng = random.Random(3)
    for _ in range(3000):
        nsn = rng.choice("0358") + "".join(rng.choices(DIGITS, k=rng.choice((5, 7, 8, 9))))
        number_type = _number_type_helper(nsn, metadata)
        expected = LINE_OF_TYPE.get(number_type)
        if number_type == PhoneNumberType.FIXED_LINE_OR_MOBILE:
            expected = c.LINE_FIXED if nsn.startswith("0") else c.LINE_MOBILE
        assert _fast_line_type(nsn, tables) == expected, (nsn, number_type)


def test_unexpected_metadata_shape_disables_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    # If Vatican City came first for +39, region_code_for_number would stop there: the tables assume IT.
    monkeypatch.setitem(phonenumbers.COUNTRY_CODE_TO_REGION_CODE, 39, ("VA", "IT"))
    tables = _italian_fast_tables()
    assert tables.classifiers == {}
    assert _fast_line_type("3312345678", tables) is None
