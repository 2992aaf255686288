"""Selector specs of `skal simulate --selectors`: parsed by a small grammar, never evaluated."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.base import BaseEstimator

from skal._cli_spec import SelectorSpec, SpecError, format_value, parse_selectors
from skal.cli import SELECTORS, main
from skal.selectors import DISAL, ISAL, CoreSet, Entropy, Margin


class Knobs(BaseEstimator):
    """A stand-in selector whose parameters take any value, to test the value rules."""

    def __init__(self, a=0, b=0.0, c=False, d=None, e="x"):
        self.a, self.b, self.c, self.d, self.e = a, b, c, d, e


REGISTRY = {"knobs": Knobs}


def _params(text, registry=REGISTRY):
    (spec,) = parse_selectors(text, registry)
    return dict(spec.params)


def test_the_example_of_the_issue():
    specs = parse_selectors("disal(batch=stochastic),margin,entropy(batch=cluster)", SELECTORS)
    assert [s.text for s in specs] == ["disal(batch=stochastic)", "margin", "entropy(batch=cluster)"]
    built = [s.build(SELECTORS) for s in specs]
    assert [type(b) for b in built] == [DISAL, Margin, Entropy]
    assert built[0].get_params() == {"weight": 1.0, "mode": "kl", "batch": "stochastic", "transitions": 1,
                                     "drift": "remove", "target_decay": None, "ramp_up": 0,
                                     "snapshot_buffers": "previous", "balance": "predicted"}
    assert built[2].get_params() == {"batch": "cluster"}


@pytest.mark.parametrize("text, expected", [
    ("knobs(a=3)", {"a": 3}),
    ("knobs(a=-3)", {"a": -3}),
    ("knobs(b=0.25)", {"b": 0.25}),
    ("knobs(b=1e-3)", {"b": 0.001}),
    ("knobs(b=.5)", {"b": 0.5}),
    ("knobs(b=inf)", {"b": math.inf}),
    ("knobs(c=true)", {"c": True}),
    ("knobs(c=False)", {"c": False}),
    ("knobs(d=none)", {"d": None}),
    ("knobs(d=None)", {"d": None}),
    ("knobs(e=stochastic)", {"e": "stochastic"}),
    ("knobs(e='last layer')", {"e": "last layer"}),
    ('knobs(e="12")', {"e": "12"}),  # quoted: always a string
    (r"knobs(e='it\'s')", {"e": "it's"}),
    ("  Knobs ( a = 1 , e = 'a, b' )  ", {"a": 1, "e": "a, b"}),
    ("knobs()", {}),
])
def test_values_are_typed_by_the_grammar(text, expected):
    params = _params(text)
    assert params == expected
    assert [type(v) for v in params.values()] == [type(v) for v in expected.values()]


def test_selectors_get_typed_values_that_pass_their_constraints():
    (isal,) = parse_selectors("isal(params='last layer',depth=3,damping=0.5,repeats=2)", SELECTORS)
    built = isal.build(SELECTORS)
    assert isinstance(built, ISAL)
    assert (built.params, built.depth, built.damping, built.repeats) == ("last layer", 3, 0.5, 2)
    (coreset,) = parse_selectors("coreset(subset=none,chunk_size=512)", SELECTORS)
    built = coreset.build(SELECTORS)
    assert isinstance(built, CoreSet) and built.get_params() == {"subset": None, "chunk_size": 512}


@pytest.mark.parametrize("text, message", [
    ("", "no selector given; choose from disal, tidal"),
    ("bogus", "unknown selector 'bogus'; choose from disal, tidal, ll4al, isal, coreset, random, "
              "entropy, margin, least-confidence"),
    ("disal(foo=1)", "disal: unknown parameter 'foo'; its parameters are balance, batch, drift, mode, ramp_up, snapshot_buffers, target_decay, transitions, weight"),
    ("random(batch=topk)", "random: unknown parameter 'batch'; its parameters are (none)"),
    ("disal(mode=bogus)", "disal(mode=bogus): The 'mode' parameter of DISAL must be a str among"),
    ("disal(batch=bogus)", "disal(batch=bogus): The 'batch' parameter of DISAL must be a str among"),
    ("coreset(subset=-1)", "coreset(subset=-1): The 'subset' parameter of CoreSet must be an int "
                           "in the range [1, inf) or None. Got -1 instead."),
    ("disal(batch=", "expected a name or a value at position 12 in 'disal(batch=', found the end"),
    ("disal(batch=stochastic", "expected ',' or ')' at position 22 in 'disal(batch=stochastic', "
                               "found the end"),
    ("disal)", "expected ',' or the end at position 5 in 'disal)', found ')'"),
    ("disal,", "expected a name at position 6 in 'disal,', found the end"),
    ("disal(mode)", "expected '=' at position 10 in 'disal(mode)', found ')'"),
    ("disal(mode='kl)", "unclosed quote ' at position 11 in \"disal(mode='kl)\""),
    ("disal(mode=kl,mode=literal)", "disal: parameter 'mode' given twice"),
    ("margin,disal,margin", "margin is given twice; each spec names one column of the table"),
    ("disal(mode=kl),disal( mode = kl )", "disal(mode=kl) is given twice"),
    ("1disal", "'1disal' at position 0 is not a selector name"),
    ("disal(9=1)", "disal: '9' at position 6 is not a parameter name"),
])
def test_bad_specs_are_refused_with_the_reason(text, message):
    with pytest.raises(SpecError) as info:
        parse_selectors(text, SELECTORS)
    assert str(info.value).startswith(message)


def test_the_command_reports_a_bad_spec_as_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["simulate", "--selectors", "margin,disal(foo=1)", "--out", str(tmp_path / "out")])
    assert info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "skal simulate: error: argument --selectors: disal: unknown parameter 'foo'; "
        "its parameters are balance, batch, drift, mode, ramp_up, snapshot_buffers, target_decay, transitions, weight")
    assert not (tmp_path / "out").exists()


def test_nothing_in_a_spec_is_evaluated(tmp_path):
    marker = tmp_path / "pwned"
    attack = f"disal(batch=__import__('os').system('touch {marker}'))"
    with pytest.raises(SpecError, match=r"expected ',' or '\)' at position 22 .*, found '\('"):
        parse_selectors(attack, SELECTORS)
    with pytest.raises(SpecError, match="The 'batch' parameter of DISAL must be"):  # only ever data
        parse_selectors(f"disal(batch=\"__import__('os').system('touch {marker}')\")", SELECTORS)
    assert not marker.exists()


_values = st.one_of(
    st.integers(-10**6, 10**6),
    st.floats(allow_nan=False, width=64),
    st.booleans(),
    st.none(),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=12),
)


@given(st.dictionaries(st.sampled_from("abcde"), _values, max_size=5))
def test_the_canonical_text_parses_back_to_the_same_spec(params):
    spec = SelectorSpec("knobs", tuple(params.items()))
    (again,) = parse_selectors(spec.text, REGISTRY)
    assert again == spec
    assert [type(v) for _, v in again.params] == [type(v) for v in params.values()]


@pytest.mark.parametrize("value, text", [
    (None, "none"), (True, "true"), (3, "3"), (0.5, "0.5"), ("cluster", "cluster"),
    ("last layer", "'last layer'"), ("3", "'3'"), ("none", "'none'"), ("it's", r"'it\'s'"),
])
def test_format_value(value, text):
    assert format_value(value) == text
