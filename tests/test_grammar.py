"""Tests for cube.grammar: the Slicer cut / drilldown / aggregates / order grammar."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cube.errors import GrammarError
from cube.grammar import (
    SPECIAL_CHARACTERS,
    Cut,
    DrilldownSpec,
    OrderSpec,
    PointCut,
    RangeCut,
    SetCut,
    escape_key,
    format_cut,
    format_cuts,
    format_drilldown,
    format_names,
    format_order,
    parse_cut,
    parse_cuts,
    parse_drilldown,
    parse_names,
    parse_order,
    unescape_key,
)

pytestmark = pytest.mark.unit


# --- cuts: examples -----------------------------------------------------------------------

CUT_EXAMPLES: list[tuple[str, tuple[Cut, ...]]] = [
    ("", ()),
    ("tenure:private", (PointCut("tenure", ("private",)),)),
    (
        "geography:E12000007,E09000001",
        (PointCut("geography", ("E12000007", "E09000001")),),
    ),
    (
        "geography@lad:E12000007,E09000001",
        (PointCut("geography", ("E12000007", "E09000001"), hierarchy="lad"),),
    ),
    ("!tenure:private", (PointCut("tenure", ("private",), invert=True),)),
    ("!geo@h:a", (PointCut("geo", ("a",), hierarchy="h", invert=True),)),
    ("tenure:private;social", (SetCut("tenure", (("private",), ("social",))),)),
    (
        "geo:E1,E2;E3;E4,E5,E6",
        (SetCut("geo", (("E1", "E2"), ("E3",), ("E4", "E5", "E6"))),),
    ),
    ("!geo@h:a;b", (SetCut("geo", (("a",), ("b",)), hierarchy="h", invert=True),)),
    ("date:2020-2021", (RangeCut("date", ("2020",), ("2021",)),)),
    ("date:2020,1-2021,6", (RangeCut("date", ("2020", "1"), ("2021", "6")),)),
    ("date:2020-", (RangeCut("date", ("2020",), None),)),
    ("date:-2021", (RangeCut("date", None, ("2021",)),)),
    ("!date@fy:2020-", (RangeCut("date", ("2020",), None, hierarchy="fy", invert=True),)),
    # escapes of every special character
    ("k:a\\\\b", (PointCut("k", ("a\\b",)),)),
    ("k:a\\!b", (PointCut("k", ("a!b",)),)),
    ("k:a\\|b", (PointCut("k", ("a|b",)),)),
    ("k:a\\:b", (PointCut("k", ("a:b",)),)),
    ("k:a\\;b", (PointCut("k", ("a;b",)),)),
    ("k:a\\,b", (PointCut("k", ("a,b",)),)),
    ("k:a\\-b", (PointCut("k", ("a-b",)),)),
    ("k:\\-", (PointCut("k", ("-",)),)),
    ("k:\\\\", (PointCut("k", ("\\",)),)),
    ("date:2020\\-01-2021\\-06", (RangeCut("date", ("2020-01",), ("2021-06",)),)),
    ("k:a\\;b;c", (SetCut("k", (("a;b",), ("c",))),)),
    ("k:a\\|b|j:c", (PointCut("k", ("a|b",)), PointCut("j", ("c",)))),
    ("k:a\\\\|j:c", (PointCut("k", ("a\\",)), PointCut("j", ("c",)))),
    # an unescaped "!" or "@" inside a key is literal (Cubes compatibility)
    ("k:!a", (PointCut("k", ("!a",)),)),
    ("k:a@b", (PointCut("k", ("a@b",)),)),
    # unicode and spaces
    ("region:Île\\-de\\-France", (PointCut("region", ("Île-de-France",)),)),
    ("region:Île de France", (PointCut("region", ("Île de France",)),)),
    ("name:日本,東京", (PointCut("name", ("日本", "東京")),)),
    ("x: a ", (PointCut("x", (" a ",)),)),
    # several cuts
    (
        "!tenure:private|geography@lad:E1,E2;E3|date:2020-",
        (
            PointCut("tenure", ("private",), invert=True),
            SetCut("geography", (("E1", "E2"), ("E3",)), hierarchy="lad"),
            RangeCut("date", ("2020",), None),
        ),
    ),
    ("_a1:x|B_2:y", (PointCut("_a1", ("x",)), PointCut("B_2", ("y",)))),
]


@pytest.mark.parametrize(("text", "expected"), CUT_EXAMPLES)
def test_parse_cuts_examples(text: str, expected: tuple[Cut, ...]) -> None:
    assert parse_cuts(text) == expected


@pytest.mark.parametrize(("text", "expected"), CUT_EXAMPLES)
def test_format_of_parsed_examples_reparses(text: str, expected: tuple[Cut, ...]) -> None:
    assert parse_cuts(format_cuts(expected)) == expected


@pytest.mark.parametrize(
    ("cuts", "text"),
    [
        ((PointCut("geo", ("a", "b")),), "geo:a,b"),
        ((PointCut("geo", ("a",), hierarchy="h", invert=True),), "!geo@h:a"),
        ((SetCut("geo", (("a",), ("b", "c"))),), "geo:a;b,c"),
        ((RangeCut("d", ("2020",), None),), "d:2020-"),
        ((RangeCut("d", None, ("2021",)),), "d:-2021"),
        ((RangeCut("d", ("a",), ("b",)),), "d:a-b"),
        (
            (PointCut("k", ("a-b", "c,d", "e|f", "g:h", "i;j", "k!l", "m\\n")),),
            "k:a\\-b,c\\,d,e\\|f,g\\:h,i\\;j,k\\!l,m\\\\n",
        ),
        ((PointCut("a", ("x",)), PointCut("b", ("y",))), "a:x|b:y"),
        ((), ""),
    ],
)
def test_format_cuts_canonical(cuts: tuple[Cut, ...], text: str) -> None:
    assert format_cuts(cuts) == text


def test_parse_cut_single() -> None:
    assert parse_cut("!geo@h:a;b") == SetCut("geo", (("a",), ("b",)), "h", True)
    assert format_cut(RangeCut("d", None, ("x",))) == "d:-x"


def test_parse_cut_offset_shifts_positions() -> None:
    with pytest.raises(GrammarError) as info:
        parse_cut("geo:a,,b", offset=10)
    assert info.value.position == 16
    assert info.value.value == "geo:a,,b"


def test_parse_cut_rejects_pipe() -> None:
    with pytest.raises(GrammarError) as info:
        parse_cut("a:x|b:y")
    assert info.value.position == 3


def test_escape_and_unescape_key() -> None:
    assert escape_key("a-b") == "a\\-b"
    assert escape_key(SPECIAL_CHARACTERS) == "".join("\\" + c for c in SPECIAL_CHARACTERS)
    assert escape_key("plain text é") == "plain text é"
    assert unescape_key("a\\-b\\\\") == "a-b\\"
    assert unescape_key("a!b") == "a!b"
    for bad, position in [("a-b", 1), ("a\\", 1), ("\\x", 0), ("", 0), ("a,b", 1)]:
        with pytest.raises(GrammarError) as info:
            unescape_key(bad)
        assert info.value.position == position


# --- cuts: errors -------------------------------------------------------------------------

CUT_ERRORS: list[tuple[str, int, str]] = [
    # (text, position, fragment that the message must contain)
    ("geo", 3, "'geo'"),
    ("geo:", 4, "'geo:'"),
    ("geo:a,,b", 6, "'a,,b'"),
    ("geo:a,", 6, "'a,'"),
    ("geo:,a", 4, "',a'"),
    ("geo:-", 4, "'geo:-'"),
    ("1geo:a", 0, "'1geo'"),
    ("geo@:a", 4, "'geo@:a'"),
    ("geo@1h:a", 4, "'1h'"),
    ("geo@h@i:a", 5, "'geo@h@i:a'"),
    ("ge-o:a", 2, "'ge-o'"),
    (":a", 0, "':a'"),
    ("!:a", 1, "'!:a'"),
    ("!!geo:a", 1, "'!geo'"),
    (" geo:a", 0, "' geo'"),
    ("geo :a", 3, "'geo '"),
    ("geo:a\\", 5, "'geo:a\\\\'"),
    ("geo:a\\x", 5, "'\\\\x'"),
    ("geo:a\\ ", 5, "'\\\\ '"),
    ("geo:a|", 6, "'geo:a|'"),
    ("geo:a||b:c", 6, "'geo:a||b:c'"),
    ("|geo:a", 0, "'|geo:a'"),
    ("geo:a:b", 5, "':'"),
    ("geo:a;", 6, "'geo:a;'"),
    ("geo:;a", 4, "'geo:;a'"),
    ("geo:a;;b", 6, "'geo:a;;b'"),
    ("geo:a;b,,c", 8, "'b,,c'"),
    ("geo:a;b-c", 7, "'geo:a;b-c'"),
    ("geo:a-b;c", 5, "'geo:a-b;c'"),
    ("geo:a-b-c", 7, "'geo:a-b-c'"),
    ("geo:a,-b", 6, "'a,'"),
    ("geo:a-,b", 6, "',b'"),
    ("ok:x|geo:a,,b", 11, "'a,,b'"),
    ("ok:x|b@:c", 7, "'b@:c'"),
    ("ok:x|1b:c", 5, "'1b'"),
    ("ok:x|geo", 8, "'geo'"),
    ("é:a", 0, "'é'"),
]


@pytest.mark.parametrize(("text", "position", "fragment"), CUT_ERRORS)
def test_cut_errors(text: str, position: int, fragment: str) -> None:
    with pytest.raises(GrammarError) as info:
        parse_cuts(text, parameter="cut")
    error = info.value
    assert error.position == position
    assert error.parameter == "cut"
    assert error.value == text
    assert fragment in error.message
    assert error.message.endswith(f"(at position {position})")
    assert error.to_dict()["position"] == position


def test_cut_error_message_example() -> None:
    with pytest.raises(GrammarError, match=r"empty key in path 'a,,b' \(at position 6\)"):
        parse_cuts("geo:a,,b")


def test_error_reports_given_parameter_name() -> None:
    with pytest.raises(GrammarError) as info:
        parse_cuts("geo", parameter="cut2")
    assert info.value.parameter == "cut2"


# --- cut dataclass invariants -------------------------------------------------------------


@pytest.mark.parametrize(
    "build",
    [
        lambda: PointCut("geo", ()),
        lambda: PointCut("geo", ("",)),
        lambda: PointCut("1geo", ("a",)),
        lambda: PointCut("geo", ("a",), hierarchy=""),
        lambda: SetCut("geo", (("a",),)),
        lambda: SetCut("geo", ()),
        lambda: SetCut("geo", (("a",), ())),
        lambda: RangeCut("geo", None, None),
        lambda: RangeCut("geo", (), ("a",)),
        lambda: DrilldownSpec("a b"),
        lambda: DrilldownSpec("a", level="1"),
        lambda: OrderSpec("a..b"),
    ],
)
def test_invariants_raise_value_error(build: object) -> None:
    assert callable(build)
    with pytest.raises(ValueError):
        build()


def test_string_path_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        PointCut("geo", "abc")  # type: ignore[arg-type]


def test_lists_are_normalised_to_tuples() -> None:
    cut = SetCut("geo", [["a"], ["b"]])  # type: ignore[arg-type]
    assert cut == SetCut("geo", (("a",), ("b",)))
    assert hash(cut) == hash(SetCut("geo", (("a",), ("b",))))


# --- drilldown ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", ()),
        ([], ()),
        ([""], ()),
        ("geo", (DrilldownSpec("geo"),)),
        ("geo:lad", (DrilldownSpec("geo", level="lad"),)),
        ("geo@h:lad", (DrilldownSpec("geo", "h", "lad"),)),
        ("geo@h", (DrilldownSpec("geo", "h"),)),
        (
            "geo:lad|date,tenure@t",
            (
                DrilldownSpec("geo", level="lad"),
                DrilldownSpec("date"),
                DrilldownSpec("tenure", "t"),
            ),
        ),
        (
            ["geo:lad", "date|x"],
            (DrilldownSpec("geo", level="lad"), DrilldownSpec("date"), DrilldownSpec("x")),
        ),
        (("", "geo"), (DrilldownSpec("geo"),)),
    ],
)
def test_parse_drilldown_examples(
    value: str | list[str], expected: tuple[DrilldownSpec, ...]
) -> None:
    assert parse_drilldown(value) == expected


@pytest.mark.parametrize(
    ("value", "position", "fragment"),
    [
        ("a||b", 2, "'a||b'"),
        ("a,", 2, "'a,'"),
        ("|a", 0, "'|a'"),
        ("geo:", 4, "'geo:'"),
        ("geo@", 4, "'geo@'"),
        ("geo@:lad", 4, "'geo@:lad'"),
        ("geo:lad:x", 7, "':'"),
        ("geo:lad@h", 7, "'@'"),
        ("1geo", 0, "'1geo'"),
        ("a|ge-o", 4, "'ge-o'"),
        ("geo:l d", 5, "'l d'"),
    ],
)
def test_drilldown_errors(value: str, position: int, fragment: str) -> None:
    with pytest.raises(GrammarError) as info:
        parse_drilldown(value)
    assert info.value.position == position
    assert info.value.parameter == "drilldown"
    assert info.value.value == value
    assert fragment in info.value.message


def test_drilldown_error_in_repeated_value_names_that_value() -> None:
    with pytest.raises(GrammarError) as info:
        parse_drilldown(["geo", "a||b"])
    assert info.value.value == "a||b"
    assert info.value.position == 2


def test_format_drilldown() -> None:
    specs = (DrilldownSpec("geo", "h", "lad"), DrilldownSpec("date"), DrilldownSpec("t", "x"))
    assert format_drilldown(specs) == "geo@h:lad|date|t@x"
    assert format_drilldown(()) == ""


# --- aggregates / names -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", ()),
        ("claimants", ("claimants",)),
        ("claimants|amount_sum", ("claimants", "amount_sum")),
        ("claimants,amount_sum", ("claimants", "amount_sum")),
        (["a", "b|c", ""], ("a", "b", "c")),
    ],
)
def test_parse_names(value: str | list[str], expected: tuple[str, ...]) -> None:
    assert parse_names(value, parameter="aggregates") == expected


@pytest.mark.parametrize(
    ("value", "position", "fragment"),
    [("a||b", 2, "'a||b'"), ("a|", 2, "'a|'"), ("a|b c", 3, "'b c'"), ("a.b", 1, "'a.b'")],
)
def test_names_errors(value: str, position: int, fragment: str) -> None:
    with pytest.raises(GrammarError) as info:
        parse_names(value, parameter="aggregates")
    assert info.value.position == position
    assert info.value.parameter == "aggregates"
    assert fragment in info.value.message


def test_format_names() -> None:
    assert format_names(["a", "b"]) == "a|b"
    with pytest.raises(ValueError):
        format_names(["a|b"])


# --- order --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", ()),
        ("claimants", (OrderSpec("claimants"),)),
        ("claimants:asc", (OrderSpec("claimants"),)),
        ("claimants:desc", (OrderSpec("claimants", descending=True),)),
        ("claimants:DESC", (OrderSpec("claimants", descending=True),)),
        ("claimants:Asc", (OrderSpec("claimants"),)),
        (
            "geography.la_name:desc|claimants,date.year",
            (
                OrderSpec("geography.la_name", True),
                OrderSpec("claimants"),
                OrderSpec("date.year"),
            ),
        ),
        (["a:desc", "b"], (OrderSpec("a", True), OrderSpec("b"))),
    ],
)
def test_parse_order(value: str | list[str], expected: tuple[OrderSpec, ...]) -> None:
    assert parse_order(value) == expected


@pytest.mark.parametrize(
    ("value", "position", "fragment"),
    [
        ("a:", 2, "'a:'"),
        ("a:up", 2, "'up'"),
        ("a:desc:asc", 2, "'desc:asc'"),
        ("a.", 1, "'a.'"),
        (".a", 0, "'.a'"),
        ("a..b", 1, "'a..b'"),
        ("x|1a", 2, "'1a'"),
        ("a||b", 2, "'a||b'"),
        ("a:ſesc", 2, "'ſesc'"),
    ],
)
def test_order_errors(value: str, position: int, fragment: str) -> None:
    with pytest.raises(GrammarError) as info:
        parse_order(value)
    assert info.value.position == position
    assert info.value.parameter == "order"
    assert fragment in info.value.message


def test_format_order() -> None:
    specs = (OrderSpec("geography.la_name", True), OrderSpec("claimants"))
    assert format_order(specs) == "geography.la_name:desc|claimants"


# --- hypothesis: round trips --------------------------------------------------------------

# The first test to draw unicode text builds Hypothesis's character tables (about a second on a
# cold cache), which would otherwise trip the "input generation is slow" health check.
cold_start_ok = settings(suppress_health_check=[HealthCheck.too_slow])

_NAME_START = "abcxyzABCXYZ_"
names = st.builds(
    str.__add__,
    st.sampled_from(_NAME_START),
    st.text(alphabet=_NAME_START + "0129", max_size=6),
)
attributes = st.lists(names, min_size=1, max_size=3).map(".".join)
keys = st.text(
    alphabet=st.one_of(st.sampled_from(SPECIAL_CHARACTERS + "@! "), st.characters()),
    min_size=1,
    max_size=8,
)
paths = st.lists(keys, min_size=1, max_size=3).map(tuple)
hierarchies = st.none() | names


@st.composite
def cuts(draw: st.DrawFn) -> Cut:
    dimension = draw(names)
    hierarchy = draw(hierarchies)
    invert = draw(st.booleans())
    kind = draw(st.sampled_from(["point", "set", "range"]))
    if kind == "point":
        return PointCut(dimension, draw(paths), hierarchy, invert)
    if kind == "set":
        return SetCut(
            dimension, tuple(draw(st.lists(paths, min_size=2, max_size=4))), hierarchy, invert
        )
    low = draw(st.none() | paths)
    high = draw(paths) if low is None else draw(st.none() | paths)
    return RangeCut(dimension, low, high, hierarchy, invert)


@cold_start_ok
@given(st.lists(cuts(), max_size=4).map(tuple))
def test_cuts_round_trip(value: tuple[Cut, ...]) -> None:
    assert parse_cuts(format_cuts(value)) == value


@cold_start_ok
@given(cuts())
def test_cut_round_trip(cut: Cut) -> None:
    assert parse_cut(format_cut(cut)) == cut


@cold_start_ok
@given(keys)
def test_key_escape_round_trip(key: str) -> None:
    assert unescape_key(escape_key(key)) == key


drilldowns = st.builds(DrilldownSpec, names, hierarchies, st.none() | names)


@cold_start_ok
@given(st.lists(drilldowns, max_size=5).map(tuple))
def test_drilldown_round_trip(specs: tuple[DrilldownSpec, ...]) -> None:
    assert parse_drilldown(format_drilldown(specs)) == specs


@cold_start_ok
@given(st.lists(names, max_size=5).map(tuple))
def test_names_round_trip(value: tuple[str, ...]) -> None:
    assert parse_names(format_names(value), parameter="aggregates") == value


@cold_start_ok
@given(st.lists(st.builds(OrderSpec, attributes, st.booleans()), max_size=5).map(tuple))
def test_order_round_trip(specs: tuple[OrderSpec, ...]) -> None:
    assert parse_order(format_order(specs)) == specs


# --- hypothesis: fuzz (only GrammarError, with a sane position) ---------------------------

grammar_text = st.text(
    alphabet=st.one_of(st.sampled_from(SPECIAL_CHARACTERS + "@!.abAB_1 "), st.characters()),
    max_size=30,
)


def _check_error(error: GrammarError, text: str) -> None:
    assert error.position is not None
    assert 0 <= error.position <= len(text)
    assert error.value == text


@cold_start_ok
@given(st.one_of(st.text(), grammar_text))
def test_parse_cuts_fuzz(text: str) -> None:
    try:
        parsed = parse_cuts(text)
    except GrammarError as error:
        _check_error(error, text)
    else:
        assert parse_cuts(format_cuts(parsed)) == parsed


@cold_start_ok
@given(st.one_of(st.text(), grammar_text))
def test_parse_cut_fuzz(text: str) -> None:
    try:
        parsed = parse_cut(text)
    except GrammarError as error:
        _check_error(error, text)
    else:
        assert parse_cut(format_cut(parsed)) == parsed


@cold_start_ok
@given(st.one_of(st.text(), grammar_text))
def test_parse_drilldown_fuzz(text: str) -> None:
    try:
        parsed = parse_drilldown(text)
    except GrammarError as error:
        _check_error(error, text)
    else:
        assert parse_drilldown(format_drilldown(parsed)) == parsed


@cold_start_ok
@given(st.lists(grammar_text, max_size=3))
def test_parse_drilldown_repeated_fuzz(values: list[str]) -> None:
    try:
        parse_drilldown(values)
    except GrammarError as error:
        assert error.value in values


@cold_start_ok
@given(st.one_of(st.text(), grammar_text))
def test_parse_names_fuzz(text: str) -> None:
    try:
        parsed = parse_names(text, parameter="aggregates")
    except GrammarError as error:
        _check_error(error, text)
    else:
        assert parse_names(format_names(parsed), parameter="aggregates") == parsed


@cold_start_ok
@given(st.one_of(st.text(), grammar_text))
def test_parse_order_fuzz(text: str) -> None:
    try:
        parsed = parse_order(text)
    except GrammarError as error:
        _check_error(error, text)
    else:
        assert parse_order(format_order(parsed)) == parsed
