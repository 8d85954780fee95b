"""maskc.tokenizer and maskc.chattemplate (issue 19, classes 2 and 3): a tokenizer.json or a
chat template, however hostile, gives a result or an InputError (exit 3), never a panic, a
traceback or a hang. Results are compared with the ``tokenizers`` library and jinja2 used
directly."""

from __future__ import annotations

import copy
import json
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer

from maskc import tokenizer as T
from maskc.chattemplate import SAMPLE_MESSAGES, render_chat
from maskc.errors import InputError
from maskc.testmodels.tokenizer import CHAT_TEMPLATE, tokenizer_json

BASE = tokenizer_json(300)
TEXT = "Hello, world! 2024 ünïcödé  日本語\n\tend"
SPLIT = {"type": "Split", "behavior": "Isolated", "invert": False}
TRUNC = {"direction": "Right", "max_length": 8, "strategy": "LongestFirst", "stride": 0}


def _write(tmp_path, doc, name="tokenizer.json"):
    p = tmp_path / name
    p.write_text(json.dumps(doc))
    return p


def _with_split(pattern: str) -> dict:
    doc = copy.deepcopy(BASE)
    doc["pre_tokenizer"] = {**SPLIT, "pattern": {"Regex": pattern}}
    return doc


def test_known_patterns_run_in_the_process_and_others_in_a_child(tmp_path):
    assert not T.open_tokenizer(_write(tmp_path, BASE)).isolated
    for pat in T.KNOWN_PATTERNS:
        assert not T.open_tokenizer(_write(tmp_path, _with_split(pat))).isolated
    tok = T.open_tokenizer(_write(tmp_path, _with_split(r"\s+|\w+")))
    assert tok.isolated and tok.unknown_patterns == [r"\s+|\w+"]


def test_the_child_process_gives_what_the_library_gives(tmp_path):
    doc = _with_split(r"\p{L}+|\s+|[^\s\p{L}]+")
    p = _write(tmp_path, doc)
    lib = Tokenizer.from_file(str(p))
    tok = T.open_tokenizer(p)
    try:
        ids = tok.encode(TEXT)
        assert ids == lib.encode(TEXT, add_special_tokens=False).ids
        assert tok.decode(ids) == lib.decode(ids, skip_special_tokens=False)
        assert tok._worker is not None and tok._worker.proc.poll() is None  # one child, reused
    finally:
        tok.close()


def test_a_backtracking_regex_is_killed_at_the_time_limit(tmp_path, monkeypatch):
    """Blocks of 21 a's and a b stay under Oniguruma's per-match limit: minutes of work.
    The child process is killed at the limit (made short here)."""
    monkeypatch.setattr(T, "WORKER_SECONDS", 0.5)
    monkeypatch.setattr(T, "SECONDS_PER_CHAR", 0.0)
    tok = T.open_tokenizer(_write(tmp_path, _with_split("(a+)+$")))
    with pytest.raises(InputError, match="more than 0 s, the limit"):
        tok.encode(("a" * 21 + "b") * 500)
    assert tok._worker.proc.poll() is not None  # killed
    assert tok.encode("ab") and tok.isolated  # a fresh child for the next call


def test_a_panic_in_the_process_is_contained_and_prints_nothing(tmp_path, capfd):
    """What the library panics on when truncation is bad (stride >= max_length), loaded
    without maskc's checks: the panic is an InputError, Rust's stderr output is dropped."""
    doc = copy.deepcopy(BASE)
    doc["truncation"] = {"direction": "Right", "max_length": 4, "strategy": "LongestFirst",
                         "stride": 4}  # fmt: skip
    lib = Tokenizer.from_str(json.dumps(doc))
    capfd.readouterr()
    with pytest.raises(InputError, match=r"tokenizer.json: the tokenizer fails to encode.*stride"):
        T._contained(tmp_path / "tokenizer.json", "to encode", lib.encode, TEXT)
    out, err = capfd.readouterr()
    assert err == "" and out == ""


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda d: d.update(truncation={**TRUNC, "stride": 8}), "truncation.stride"),
        (lambda d: d.update(truncation={**TRUNC, "max_length": -1}), "truncation.max_length"),
        (lambda d: d.update(padding={"pad_to_multiple_of": 0}), "padding.pad_to_multiple_of"),
        (lambda d: d["model"].update(type="Nope"), "model.type"),
        (lambda d: d["model"].update(dropout=0.5), "model.dropout"),
        (lambda d: d["model"].update(unk_token="<nope>"), "model.unk_token"),
        (
            lambda d: d.update(model={"type": "Unigram", "vocab": [["a", 0.0]], "unk_id": 5}),
            "model.unk_id",
        ),
        (lambda d: d.update(model=[]), "model"),
    ],
)
def test_fields_the_library_would_panic_on_are_refused(tmp_path, edit, field):
    doc = copy.deepcopy(BASE)
    edit(doc)
    with pytest.raises(InputError, match=f"tokenizer\\.json: {re.escape(field)}"):
        T.open_tokenizer(_write(tmp_path, doc))


def test_valid_truncation_and_padding_are_switched_off(tmp_path):
    doc = copy.deepcopy(BASE)
    doc["truncation"] = {"direction": "Right", "max_length": 4, "strategy": "LongestFirst",
                         "stride": 0}  # fmt: skip
    doc["padding"] = {"strategy": {"Fixed": 64}, "direction": "Right", "pad_to_multiple_of": None,
                      "pad_id": 0, "pad_type_id": 0, "pad_token": "<|endoftext|>"}  # fmt: skip
    tok = T.open_tokenizer(_write(tmp_path, doc))
    lib = Tokenizer.from_str(json.dumps(BASE))
    assert tok.encode(TEXT) == lib.encode(TEXT, add_special_tokens=False).ids


# -- property: tokenizer.json fields mutated at random ---------------------------------------------
FIELDS = [
    ("truncation",), ("truncation", "max_length"), ("truncation", "stride"),
    ("truncation", "strategy"), ("padding",), ("padding", "pad_to_multiple_of"),
    ("padding", "strategy"), ("padding", "pad_id"), ("model", "type"), ("model", "unk_token"),
    ("model", "dropout"), ("model", "byte_fallback"), ("model", "fuse_unk"),
    ("model", "continuing_subword_prefix"), ("pre_tokenizer",), ("normalizer",), ("decoder",),
    ("post_processor",), ("added_tokens",), ("version",),
]  # fmt: skip
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.sampled_from([2**31, 2**64, 10**30, 0.5, -1.5]),
    st.sampled_from(["", "a", "<unk>", "<|endoftext|>", "BPE", "WordLevel", "Right", "(a+)+$"]),
    st.sampled_from(
        [
            {},
            [],
            {"max_length": 3, "stride": 2},
            {"type": "Whitespace"},
            {
                "type": "Split",
                "pattern": {"Regex": "(a|aa)+b"},
                "behavior": "Removed",
                "invert": True,
            },
            {"Fixed": 3},
            {"type": "Replace", "pattern": {"Regex": "a+"}, "content": "b"},
            {"type": "Lowercase"},
        ]
    ),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    edits=st.lists(st.tuples(st.sampled_from(FIELDS), VALUES), min_size=1, max_size=3),
    text=st.text(max_size=40),
)
def test_a_mutated_tokenizer_json_works_or_is_an_input_error(tmp_path, edits, text):
    doc = copy.deepcopy(BASE)
    for path, value in edits:
        node = doc
        for k in path[:-1]:
            if not isinstance(node.get(k), dict):
                node[k] = {}
            node = node[k]
        node[path[-1]] = copy.deepcopy(value)
    try:
        tok = T.open_tokenizer(_write(tmp_path, doc))
    except InputError as e:
        assert "\n" not in str(e)
        return
    try:
        tok.decode(tok.encode(text))
    except InputError as e:
        assert "\n" not in str(e)
    finally:
        tok.close()


# -- chat templates -------------------------------------------------------------------------------
def _jinja(template: str, messages, **kw) -> str:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(messages=messages, **kw)


def test_a_template_renders_as_jinja_renders_it():
    msgs = [{"role": "user", "content": "hi {{ there }} ünï"}]
    other = (
        "{% for m in messages %}{{ m.role|upper }}:{{ m.content }}{% endfor %}"
        "{{ (7 ** 3) % 10 }}{{ 'ab' * 3 }}{{ range(5)|join(',') }}"
    )
    for tpl in (CHAT_TEMPLATE, other):
        got = render_chat(tpl, "t", msgs, add_generation_prompt=True)
        assert got == _jinja(tpl, msgs, add_generation_prompt=True)


@pytest.mark.parametrize(
    "template, words",
    [
        ("{{ 1 // 0 }}", "ZeroDivisionError"),
        ("{% macro f(x) %}{{ f(x) }}{% endmacro %}{{ f(1) }}", "recursion"),
        ("{{ 'a' + 1 }}", "TypeError"),
        ("{{ 2 ** 99999999 }}", "too large"),
        (
            "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}",
            "range()",
        ),
        (
            "{% for a in 'x' * 999 %}{% for b in 'x' * 999 %}{% for c in 'x' * 999 %}"
            "{% endfor %}{% endfor %}{% endfor %}",
            "steps",
        ),
        ("{% for i in range(9999) %}{{ 'x' * 999 }}{% endfor %}", "output"),
        ("{{ 'x' * 99999999 }}", "repetition"),
        (
            "{% set ns = namespace(s='x') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}"
            "{% endfor %}",
            "characters",
        ),
        ("{{ 'x'|center(999999999) }}", "argument"),
        ("{{ '{:>999999999}'.format(1) }}", "format width"),
        ("{{ ''.__class__.__mro__ }}", "SecurityError"),
        ("{{ raise_exception('no system role') }}", "no system role"),
        ("{% for %}", "TemplateSyntaxError"),
    ],
)
def test_a_hostile_template_is_an_input_error(template, words):
    with pytest.raises(InputError, match=r"tokenizer_config\.json: chat_template") as e:
        render_chat(template, "tokenizer_config.json: chat_template")
    assert words in str(e.value) and "\n" not in str(e.value)


PIECES = [
    "{{ messages[0].content }}", "{% for i in range(N) %}", "{% endfor %}", "{% if x %}",
    "{% endif %}", "{{ 'ab' * N }}", "{{ N ** N }}", "{{ N // 0 }}", "{{ x ~ x }}",
    "{% set x = N %}", "{{ x|string|center(N) }}", "{{ x + 'a' }}", "{% macro m(k) %}",
    "{{ m(k) }}", "{% endmacro %}", "{{ m(1) }}", "{{ loop.index }}", "{% break %}", "text",
    "{{ messages|tojson }}", "{{ '%5d' % N }}", "{{ range(N)|list|length }}", "{{ x.__dict__ }}",
]  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(
    pieces=st.lists(st.sampled_from(PIECES), max_size=12),
    numbers=st.lists(st.sampled_from([0, 1, 7, 999, 99999, 10**7]), min_size=12, max_size=12),
)
def test_a_random_template_renders_or_is_an_input_error(pieces, numbers):
    template = "".join(p.replace("N", str(n)) for p, n in zip(pieces, numbers, strict=False))
    try:
        assert isinstance(render_chat(template, "t", SAMPLE_MESSAGES), str)
    except InputError as e:
        assert "\n" not in str(e)
