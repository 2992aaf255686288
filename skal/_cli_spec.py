"""Selector specs of ``skal simulate --selectors``: ``"disal(batch=stochastic),margin"``.

A small tokenizer and recursive-descent parser; nothing is evaluated. The
grammar::

    specs  := spec ("," spec)*
    spec   := NAME ["(" [param ("," param)*] ")"]
    param  := KEY "=" value
    value  := 'quoted' | "quoted" | WORD

A bare ``WORD`` value is an int (``12``, ``-3``), a float (``0.5``, ``1e-3``),
a bool (``true``/``false``), ``none``, or else a string (``stochastic``);
quoted values are always strings. Keys are checked against the selector's
``get_params()`` and values against its parameter constraints, so a bad spec
fails before anything trains.
"""

import re
from dataclasses import dataclass

from .selectors.batch import resolve_batch

_PUNCTUATION = "(),="
_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?|[+-]?(inf|nan)", re.IGNORECASE)
_WORD = re.compile(r"[^\s(),='\"]+")
_NAME = re.compile(r"[a-z][a-z0-9_-]*")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CONSTANTS = {"true": True, "false": False, "none": None, "null": None}


class SpecError(ValueError):
    """A malformed or invalid selector spec; the message says where and why."""


@dataclass(frozen=True)
class SelectorSpec:
    """One parsed spec: the selector's name, its parameters and its canonical text."""

    name: str
    params: tuple  # ((key, value), ...) in the order given

    @property
    def text(self):
        """The canonical spec string (the method's name in tables); it parses back to itself."""
        if not self.params:
            return self.name
        return f"{self.name}({','.join(f'{k}={format_value(v)}' for k, v in self.params)})"

    def build(self, registry):
        """A new selector instance with these parameters set."""
        return registry[self.name]().set_params(**dict(self.params))


def format_value(value):
    """The spec text of a parameter value (inverse of the parser's value rule)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if _WORD.fullmatch(value) and _word_value(value) == value:
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _word_value(word):
    if _INT.fullmatch(word):
        return int(word)
    if _FLOAT.fullmatch(word):
        return float(word)
    return _CONSTANTS.get(word.lower(), word)


def _tokens(text):
    """``(kind, value, position)`` tuples; kind is a punctuation mark, "word" or "string"."""
    i = 0
    while i < len(text):
        char = text[i]
        if char.isspace():
            i += 1
        elif char in _PUNCTUATION:
            yield char, char, i
            i += 1
        elif char in "'\"":
            start, i, chars = i, i + 1, []
            while i < len(text) and text[i] != char:
                if text[i] == "\\" and i + 1 < len(text):
                    i += 1
                chars.append(text[i])
                i += 1
            if i == len(text):
                raise SpecError(f"unclosed quote {char} at position {start} in {text!r}")
            yield "string", "".join(chars), start
            i += 1
        else:
            word = _WORD.match(text, i).group()
            yield "word", word, i
            i += len(word)
    yield "end", None, len(text)


class _Parser:
    def __init__(self, text):
        self.text = text
        self.tokens = list(_tokens(text))
        self.i = 0

    def peek(self):
        return self.tokens[self.i]

    def take(self, *kinds):
        kind, value, position = self.tokens[self.i]
        if kind not in kinds:
            seen = "the end" if kind == "end" else repr(value)
            raise SpecError(f"expected {' or '.join(map(_describe, kinds))} at position "
                            f"{position} in {self.text!r}, found {seen}")
        self.i += 1
        return value

    def specs(self):
        specs = [self.spec()]
        while self.peek()[0] == ",":
            self.take(",")
            specs.append(self.spec())
        self.take(",", "end")
        return specs

    def spec(self):
        position = self.peek()[2]
        name = self.take("word").lower()
        if not _NAME.fullmatch(name):
            raise SpecError(f"{name!r} at position {position} is not a selector name")
        params = []
        if self.peek()[0] == "(":
            self.take("(")
            if self.peek()[0] != ")":
                params.append(self.param(name))
                while self.peek()[0] == ",":
                    self.take(",")
                    params.append(self.param(name))
            self.take(",", ")")
        keys = [key for key, _ in params]
        for key in keys:
            if keys.count(key) > 1:
                raise SpecError(f"{name}: parameter {key!r} given twice")
        return SelectorSpec(name, tuple(params))

    def param(self, name):
        position = self.peek()[2]
        key = self.take("word")
        if not _KEY.fullmatch(key):
            raise SpecError(f"{name}: {key!r} at position {position} is not a parameter name")
        self.take("=")
        kind = self.peek()[0]
        value = self.take("word", "string")
        return key, (value if kind == "string" else _word_value(value))


def _describe(kind):
    return {"word": "a name", "string": "a value", "end": "the end"}.get(kind, repr(kind))


def parse_selectors(text, registry):
    """Parse and check ``--selectors``: a list of :class:`SelectorSpec`, in the order given.

    Parameters
    ----------
    text : str
        Comma-separated specs.
    registry : dict of str to selector class
        The names the command knows.

    Returns
    -------
    list of SelectorSpec

    Raises
    ------
    SpecError
        On a syntax error, an unknown name or parameter, a bad value, or the
        same spec given twice; the message names the culprit.
    """
    if not text.strip():
        raise SpecError(f"no selector given; choose from {', '.join(registry)}")
    specs = _Parser(text).specs()
    for spec in specs:
        check_spec(spec, registry)
    texts = [spec.text for spec in specs]
    for t in texts:
        if texts.count(t) > 1:
            raise SpecError(f"{t} is given twice; each spec names one column of the table")
    return specs


def check_spec(spec, registry):
    """Refuse an unknown name, key or value of ``spec`` (the selector is built and validated)."""
    if spec.name not in registry:
        raise SpecError(f"unknown selector {spec.name!r}; choose from {', '.join(registry)}")
    allowed = sorted(registry[spec.name]().get_params())
    for key, _ in spec.params:
        if key not in allowed:
            raise SpecError(f"{spec.name}: unknown parameter {key!r}; its parameters are "
                            f"{', '.join(allowed) if allowed else '(none)'}")
    selector = spec.build(registry)
    try:
        if hasattr(selector, "_parameter_constraints"):
            selector._validate_params()
        if "batch" in allowed:
            resolve_batch(selector.batch)
    except (ValueError, TypeError) as error:  # sklearn's InvalidParameterError is both
        raise SpecError(f"{spec.text}: {error}") from None
    return selector
