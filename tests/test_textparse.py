"""maskc.textparse, the one guarded JSON/TOML loader (issue 19, class 1): whatever the text,
it returns a document or raises ParseError, never another exception (Python's parsers raise
ValueError for integer literals over 4,300 digits and RecursionError for deep nesting)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maskc.textparse import ParseError, json_loads, toml_loads

PIECES = ["{", "}", "[", "]", ",", ":", '"a"', '"a"', "1", "1" * 4400, "-", ".5e9", "true",
          "null", " ", "\n", "=", "x", "[[t]]", '"\\u12"', "\x00", "9" * 10]  # fmt: skip
texts = st.one_of(
    st.text(max_size=200),
    st.lists(st.sampled_from(PIECES), max_size=60).map("".join),
    st.integers(1, 200_000).map(lambda n: "[" * n + "]" * n),
    st.integers(1, 20_000).map(lambda n: "x = " + "[" * n + "]" * n),
    st.integers(4200, 9000).map(lambda n: '{"a": ' + "7" * n + "}"),
    st.integers(4200, 9000).map(lambda n: "a = " + "7" * n),
)


@settings(max_examples=400, deadline=None)
@given(text=texts)
def test_json_is_a_document_or_a_parse_error(text):
    try:
        json_loads(text)
        json_loads(text.encode("utf-8", "surrogatepass"))
    except ParseError as e:
        assert e.detail and "\n" not in e.detail


@settings(max_examples=400, deadline=None)
@given(text=texts)
def test_toml_is_a_document_or_a_parse_error(text):
    try:
        assert isinstance(toml_loads(text), dict)
    except ParseError as e:
        assert e.detail


def test_the_limits_are_named():
    with pytest.raises(ParseError, match="4,300 digits"):
        json_loads('{"n": ' + "1" * 5000 + "}")
    with pytest.raises(ParseError, match="nested too deeply"):
        json_loads("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ParseError, match="4,300 digits"):
        toml_loads("n = " + "1" * 5000)
    with pytest.raises(ParseError, match="nested too deeply"):
        toml_loads("n = " + "[" * 5000 + "]" * 5000)
    with pytest.raises(ParseError) as e:
        json_loads('{"a": 1, "a": 2}')
    assert e.value.key == "a"
    assert json_loads('{"a": 1, "a": 2}', unique=False) == {"a": 2}
    with pytest.raises(ParseError, match="UTF-8"):
        json_loads(b'{"a": "\xff"}')
