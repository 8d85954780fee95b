"""Per-tensor quantization settings (maskc.quantize.rules): precedence, in-order field-wise rule
application, fullmatch semantics, diagnostics, every bad config input, and a property test
against an independent left-to-right fold."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from maskc.errors import InputError, UsageError
from maskc.ir import TensorSpec, expected_tensors
from maskc.quantize.rules import (
    QUANTIZABLE_ROLES,
    QuantSetting,
    Resolution,
    load_rules,
    resolve,
)
from maskc.testmodels import PRESETS

METHODS = ("rtn", "lsq", "gptq")
BUILTIN = QuantSetting(
    bits=4, group_size=32, method="lsq", codebook=False, symmetric=False, scale_bits=8
)
BUILTIN_EMBED = QuantSetting(
    bits=8, group_size=64, method="rtn", codebook=False, symmetric=True, scale_bits=12
)
FIELDS = QuantSetting.field_names()


def specs_of(preset: str = "tiny", **changes) -> list[TensorSpec]:
    arch = PRESETS[preset].to_arch()
    if changes:
        arch = replace(arch, **changes)
    return expected_tensors(arch)


SPECS = specs_of()
MATRICES = [s.name for s in SPECS if s.role in QUANTIZABLE_ROLES]
BLOCK = [s.name for s in SPECS if s.role in QUANTIZABLE_ROLES and s.layer is not None]
EMBED = "model.embed_tokens.weight"


def toml_value(v) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, str):
        return json.dumps(v)
    return str(v)


def write_config(tmp_path, defaults=None, rules=(), name="quant.toml"):
    """Write a quant.toml from dicts (rule ``match`` as a TOML literal string)."""
    lines = []
    if defaults is not None:
        lines.append("[defaults]")
        lines += [f"{k} = {toml_value(v)}" for k, v in defaults.items()]
    for r in rules:
        lines.append("[[rule]]")
        for k, v in r.items():
            lines.append(f"match = '{v}'" if k == "match" else f"{k} = {toml_value(v)}")
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n")
    return p


def run(config=None, cli=None, specs=None, strict=False) -> Resolution:
    return resolve(
        SPECS if specs is None else specs,
        cli or {},
        config,
        BUILTIN,
        BUILTIN_EMBED,
        METHODS,
        strict=strict,
    )


def bad_config(tmp_path, text: str, *needles: str) -> str:
    """The config ``text`` is refused with a one-line InputError naming the file and needles."""
    p = tmp_path / "quant.toml"
    p.write_text(text)
    for call in (lambda: load_rules(p, methods=METHODS), lambda: run(p)):
        with pytest.raises(InputError) as e:
            call()
        msg = str(e.value)
        assert e.value.exit_code == 3
        assert "\n" not in msg
        assert str(p) in msg, msg
        for n in needles:
            assert n.lower() in msg.lower(), (n, msg)
    return msg


# --------------------------------------------------------------------------- precedence


def test_no_config_no_cli_gives_builtins():
    res = run()
    assert list(res.settings) == MATRICES  # canonical order, quantizable only
    assert "model.norm.weight" not in res.settings
    assert all(res.settings[n] == BUILTIN for n in BLOCK)
    assert res.settings[EMBED] == BUILTIN_EMBED
    assert res.warnings == [] and res.rules == []


def test_precedence_chain(tmp_path):
    cfg = write_config(
        tmp_path,
        defaults={"bits": 3, "group_size": 64, "method": "rtn", "scale_bits": 6},
        rules=[{"match": r"model\.layers\.0\.mlp\.down_proj", "bits": 2, "method": "gptq"}],
    )
    # [defaults] over builtin
    res = run(cfg)
    q0 = res.settings["model.layers.0.self_attn.q_proj.weight"]
    assert (q0.bits, q0.group_size, q0.method, q0.scale_bits) == (3, 64, "rtn", 6)
    assert q0.symmetric == BUILTIN.symmetric  # untouched field stays builtin
    # CLI over [defaults]; None means "not given"
    res = run(cfg, cli={"bits": 4, "group_size": None, "method": "lsq"})
    q0 = res.settings["model.layers.0.self_attn.q_proj.weight"]
    assert (q0.bits, q0.group_size, q0.method, q0.scale_bits) == (4, 64, "lsq", 6)
    # rules over CLI
    d0 = res.settings["model.layers.0.mlp.down_proj.weight"]
    assert (d0.bits, d0.group_size, d0.method) == (2, 64, "gptq")
    assert res.cli == {"bits": 4, "method": "lsq"}
    # embedding ignores [defaults] and CLI
    assert res.settings[EMBED] == BUILTIN_EMBED


def test_embed_and_lm_head_only_change_by_rule(tmp_path):
    specs = specs_of("tiny-untied")
    cfg = write_config(
        tmp_path,
        defaults={"bits": 2},
        rules=[{"match": "lm_head", "bits": 4, "skip": True}],
    )
    res = run(cfg, cli={"bits": 3, "method": "gptq"}, specs=specs)
    assert res.settings[EMBED] == BUILTIN_EMBED
    assert res.settings["lm_head.weight"] == replace(BUILTIN_EMBED, bits=4, skip=True)
    assert res.skipped == ["lm_head.weight"]
    assert res.settings["model.layers.1.mlp.up_proj.weight"].bits == 3


def test_rules_apply_in_order_field_by_field(tmp_path):
    cfg = write_config(
        tmp_path,
        rules=[
            {"match": r"model\.layers\.\d+\..*", "bits": 3, "method": "rtn", "codebook": True},
            {"match": r".*\.mlp\..*", "bits": 4, "group_size": 128},
            {"match": r".*down_proj", "method": "gptq"},
        ],
    )
    res = run(cfg)
    s = res.settings
    d = s["model.layers.1.mlp.down_proj.weight"]
    assert (d.bits, d.group_size, d.method, d.codebook) == (4, 128, "gptq", True)
    u = s["model.layers.1.mlp.up_proj.weight"]
    assert (u.bits, u.group_size, u.method, u.codebook) == (4, 128, "rtn", True)
    q = s["model.layers.0.self_attn.q_proj.weight"]
    assert (q.bits, q.group_size, q.method, q.codebook) == (3, BUILTIN.group_size, "rtn", True)
    assert res.applied["model.layers.1.mlp.down_proj.weight"] == (1, 2, 3)
    assert res.applied[EMBED] == ()
    # the same rules in the other order give a different result: order defines it
    cfg2 = write_config(
        tmp_path,
        rules=[
            {"match": r".*\.mlp\..*", "bits": 4, "group_size": 128},
            {"match": r"model\.layers\.\d+\..*", "bits": 3, "method": "rtn", "codebook": True},
        ],
        name="q2.toml",
    )
    assert run(cfg2).settings["model.layers.1.mlp.up_proj.weight"].bits == 3


# --------------------------------------------------------------------------- matching


def test_fullmatch_semantics(tmp_path):
    specs = [
        *specs_of(num_layers=12),
        TensorSpec("model.layers.1x.mlp.down_proj.weight", (64, 160), "down_proj", 1),
        TensorSpec("xmodel.layers.1.mlp.down_proj.weight", (64, 160), "down_proj", 1),
    ]
    cfg = write_config(tmp_path, rules=[{"match": r"model\.layers\.1\.mlp\.down_proj", "bits": 2}])
    res = run(cfg, specs=specs)
    two = [n for n, s in res.settings.items() if s.bits == 2]
    assert two == ["model.layers.1.mlp.down_proj.weight"]
    # a pattern for the full name (with .weight) also matches; a prefix alone does not
    cfg = write_config(
        tmp_path,
        rules=[
            {"match": r"model\.layers\.11\.mlp\.down_proj\.weight", "bits": 2},
            {"match": r"model\.layers\.10", "bits": 3},
        ],
    )
    res = run(cfg, specs=specs)
    assert [n for n, s in res.settings.items() if s.bits == 2] == [
        "model.layers.11.mlp.down_proj.weight"
    ]
    assert not any(s.bits == 3 for s in res.settings.values())
    assert any("rule 2" in w and "matches no tensor" in w for w in res.warnings)
    # alternation is matched as a whole
    cfg = write_config(tmp_path, rules=[{"match": r"model\.embed_tokens|lm_head", "bits": 4}])
    assert run(cfg, specs=specs).settings[EMBED].bits == 4


def test_bias_not_matched_by_module_pattern(tmp_path):
    specs = specs_of("tiny-qwen2")
    assert any(s.name.endswith(".bias") for s in specs)
    cfg = write_config(tmp_path, rules=[{"match": r".*\.q_proj\.bias", "bits": 2}])
    res = run(cfg, specs=specs)
    assert all(not n.endswith(".bias") for n in res.settings)
    assert all(s.bits != 2 for s in res.settings.values())
    (w,) = res.warnings
    assert "rule 1" in w and "no quantizable tensor" in w and "q_proj.bias" in w


def test_norm_only_rule_warns(tmp_path):
    cfg = write_config(tmp_path, rules=[{"match": r".*norm", "bits": 2}])
    res = run(cfg)
    (w,) = res.warnings
    assert w.startswith(f"{cfg}: rule 1 ")
    assert "no quantizable tensor" in w and "model.norm.weight" not in res.settings
    with pytest.raises(InputError, match="strict"):
        run(cfg, strict=True)


# --------------------------------------------------------------------------- diagnostics


def test_never_matching_rule_warning_and_strict(tmp_path):
    cfg = write_config(
        tmp_path,
        rules=[
            {"match": r"model\.layers\.7\..*", "bits": 2},
            {"match": r".*q_proj", "bits": 3},
            {"match": "nothing", "bits": 3},
        ],
    )
    res = run(cfg)
    assert res.warnings == [
        f"{cfg}: rule 1 (match 'model\\.layers\\.7\\..*') matches no tensor",
        f"{cfg}: rule 3 (match 'nothing') matches no tensor",
    ]
    with pytest.raises(InputError) as e:
        run(cfg, strict=True)
    msg = str(e.value)
    assert msg.startswith(f"{cfg}: rule 1 ") and "1 more dead rule" in msg and "\n" not in msg
    # strict passes when every rule is live
    ok = write_config(tmp_path, rules=[{"match": r".*q_proj", "bits": 3}], name="ok.toml")
    assert run(ok, strict=True).warnings == []


def test_conflict_warning(tmp_path):
    cfg = write_config(
        tmp_path,
        rules=[
            {"match": r"model\.layers\.\d+\.mlp\..*", "bits": 4, "symmetric": True},
            {"match": r".*down_proj", "bits": 4},  # same value: no conflict
            {"match": r"model\.layers\.\d+\..*", "bits": 3, "method": "rtn"},
        ],
    )
    res = run(cfg)
    conflict = [w for w in res.warnings if "overrides" in w]
    assert conflict == [
        f"{cfg}: rule 3 overrides rule 1's bits=4 with bits=3 for 4 tensors: "
        "model.layers.0.mlp.gate_proj.weight, model.layers.0.mlp.up_proj.weight, "
        "model.layers.1.mlp.gate_proj.weight, ...",
        f"{cfg}: rule 3 overrides rule 2's bits=4 with bits=3 for 2 tensors: "
        "model.layers.0.mlp.down_proj.weight, model.layers.1.mlp.down_proj.weight",
    ]
    # rule 2 sets only bits, always overridden by rule 3: no effect; rule 1's symmetric stays
    assert f"{cfg}: rule 2 (match '.*down_proj') has no effect" in " ".join(res.warnings)
    assert not any("rule 1 (" in w for w in res.warnings)
    assert res.settings["model.layers.0.mlp.down_proj.weight"].bits == 3
    with pytest.raises(InputError, match=r"rule 2 .* has no effect"):
        run(cfg, strict=True)
    assert all("\n" not in w for w in res.warnings)


def test_shadowed_only_when_every_tensor_and_field_overridden(tmp_path):
    cfg = write_config(
        tmp_path,
        rules=[
            {"match": r".*proj", "bits": 2, "method": "rtn"},
            {"match": r".*proj", "bits": 3},  # method from rule 1 survives
            {"match": r".*_proj", "method": "lsq"},  # now rule 1 is fully shadowed
        ],
    )
    res = run(cfg)
    assert [w for w in res.warnings if "no effect" in w] == [
        f"{cfg}: rule 1 (match '.*proj') has no effect: every tensor it matches has every "
        "field it sets overridden by later rules"
    ]
    cfg = write_config(
        tmp_path,
        rules=[
            {"match": r".*proj", "bits": 2},
            {"match": r".*mlp.*", "bits": 3},  # attention matrices keep rule 1
        ],
    )
    assert not any("no effect" in w for w in run(cfg).warnings)


def test_to_json_is_deterministic_and_path_independent(tmp_path):
    a = tmp_path / "a"
    b = tmp_path / "b"
    a.mkdir()
    b.mkdir()
    rules = [{"match": r".*down_proj", "bits": 2}, {"match": "nope", "bits": 3}]
    ja = run(write_config(a, {"bits": 3}, rules), cli={"method": "rtn"}).to_json()
    jb = run(write_config(b, {"bits": 3}, rules), cli={"method": "rtn"}).to_json()
    assert json.dumps(ja, sort_keys=True) == json.dumps(jb, sort_keys=True)
    assert str(tmp_path) not in json.dumps(ja)
    assert ja["config"]["file"] == "quant.toml" and len(ja["config"]["sha256"]) == 64
    assert [t["name"] for t in ja["tensors"]] == MATRICES
    assert ja["rules"][0] == {"index": 1, "match": ".*down_proj", "set": {"bits": 2}}
    assert ja["warnings"] == ["rule 2 (match 'nope') matches no tensor"]
    assert ja["defaults"] == {"bits": 3} and ja["cli"] == {"method": "rtn"}
    assert run().to_json()["config"] is None


# --------------------------------------------------------------------------- bad inputs


def test_empty_file_ok(tmp_path):
    p = tmp_path / "quant.toml"
    p.write_text("")
    assert load_rules(p) == ({}, [])
    assert run(p).settings == run().settings
    p.write_text("# only a comment\n[defaults]\n")
    assert load_rules(p) == ({}, [])


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_rules(tmp_path / "nope.toml")
    with pytest.raises(InputError, match="no such file"):
        run(tmp_path / "nope.toml")
    with pytest.raises(InputError, match="not a file"):
        load_rules(tmp_path)


def test_bad_toml_syntax_names_line(tmp_path):
    bad_config(tmp_path, "[defaults]\nbits = 3\nbits 4\n", "not valid TOML", "line 3")
    bad_config(tmp_path, "[defaults]\nbits = 3\nbits = 4\n", "not valid TOML", "line 3")


def test_not_utf8(tmp_path):
    p = tmp_path / "quant.toml"
    p.write_bytes(b"[defaults]\nmethod = '\xff'\n")
    with pytest.raises(InputError, match="UTF-8"):
        load_rules(p)


@pytest.mark.parametrize(
    "text, needles",
    [
        ("bits = 3\n", ["top-level", "'bits'", "defaults, rule"]),
        ("[default]\nbits = 3\n", ["top-level", "'default'"]),
        ("[defaults]\nbit = 3\n", ["[defaults]", "'bit'", "valid keys", "group_size"]),
        ("[defaults]\nmatch = 'x'\n", ["[defaults]", "'match'"]),
        (
            "[[rule]]\nmatch = 'a'\nbits = 3\n[[rule]]\nmatch = 'b'\ngroupsize = 64\n",
            ["rule 2", "'groupsize'", "valid keys", "match"],
        ),
        ("defaults = 3\n", ["[defaults]", "must be a table"]),
        ("[rule]\nmatch = 'x'\nbits = 3\n", ["array of tables", "[[rule]]"]),
    ],
)
def test_unknown_keys_and_bad_structure(tmp_path, text, needles):
    bad_config(tmp_path, text, *needles)


@pytest.mark.parametrize(
    "key, value, needles",
    [
        ("bits", '"4"', ['"4" (a string)', "integer"]),
        ("bits", "5", ["2, 3, 4, 8", "got 5"]),
        ("bits", "4.0", ["4.0 (a float)"]),
        ("bits", "true", ["true (a boolean)", "integer"]),
        ("group_size", "0", ["positive multiple of 8", "got 0"]),
        ("group_size", "-64", ["got -64"]),
        ("group_size", "12", ["got 12"]),
        ("group_size", "8192", ["up to 4096"]),
        ("group_size", "false", ["false (a boolean)"]),
        ("scale_bits", "3", ["4..16"]),
        ("scale_bits", "17", ["4..16"]),
        ("method", "4", ["method name", "4 (an integer)"]),
        ("method", '"awq"', ["unknown method 'awq'", "rtn, lsq, gptq"]),
        ("method", '""', ["method name"]),
        ("codebook", "1", ["true or false", "1 (an integer)"]),
        ("symmetric", '"yes"', ["true or false"]),
        ("skip", "[true]", ["true or false", "an array"]),
    ],
)
def test_bad_values(tmp_path, key, value, needles):
    bad_config(tmp_path, f"[defaults]\n{key} = {value}\n", "[defaults]", key, *needles)
    text = f"[[rule]]\nmatch = 'x'\nbits = 3\n[[rule]]\nmatch = 'y'\n{key} = {value}\n"
    bad_config(tmp_path, text, f"rule 2: {key}", *needles)


def test_method_checked_against_callers_list(tmp_path):
    p = write_config(tmp_path, rules=[{"match": ".*", "method": "awq"}])
    assert load_rules(p)[1][0].overrides == (("method", "awq"),)  # no list: any name
    with pytest.raises(InputError, match="rule 1: method unknown method 'awq'"):
        load_rules(p, methods=METHODS)
    res = resolve(SPECS, {}, p, BUILTIN, BUILTIN_EMBED, (*METHODS, "awq"))
    assert res.settings[MATRICES[1]].method == "awq"


@pytest.mark.parametrize(
    "rule, needles",
    [
        ("bits = 3\n", ["rule 1", "missing key 'match'"]),
        ("match = 3\nbits = 3\n", ["rule 1", "match", "3 (an integer)"]),
        ("match = ''\nbits = 3\n", ["rule 1", "non-empty"]),
        ("match = 'model\\.(layers'\nbits = 3\n", ["rule 1", "not a valid regex", "missing )"]),
        ("match = '[a-'\nbits = 3\n", ["rule 1", "not a valid regex"]),
        ("match = 'x'\n", ["rule 1", "sets no field"]),
    ],
)
def test_bad_rules(tmp_path, rule, needles):
    bad_config(tmp_path, "[[rule]]\n" + rule, *needles)


def test_bad_regex_names_rule_index(tmp_path):
    text = "[[rule]]\nmatch = 'ok'\nbits = 3\n[[rule]]\nmatch = 'a(?P<'\nbits = 4\n"
    bad_config(tmp_path, text, "rule 2", "not a valid regex")


def test_cli_values_are_usage_errors():
    with pytest.raises(UsageError, match="--bits: must be one of") as e:
        run(cli={"bits": 5})
    assert e.value.exit_code == 2
    with pytest.raises(UsageError, match="--group-size: must be a positive multiple"):
        run(cli={"group_size": 0})
    with pytest.raises(UsageError, match="--method: unknown method 'foo'; choose one of: rtn"):
        run(cli={"method": "foo"})
    with pytest.raises(ValueError, match="not a QuantSetting field"):
        run(cli={"config": "x"})


def test_invalid_builtins_are_caller_bugs():
    with pytest.raises(ValueError, match="builtin_embed"):
        resolve(SPECS, {}, None, BUILTIN, replace(BUILTIN_EMBED, bits=5), METHODS)
    with pytest.raises(ValueError, match="builtin: method"):
        resolve(SPECS, {}, None, BUILTIN, BUILTIN_EMBED, ("rtn",))


def test_quant_setting_validate():
    BUILTIN.validate(methods=METHODS)
    with pytest.raises(InputError, match=r"here: scale_bits must be in 4\.\.16"):
        replace(BUILTIN, scale_bits=2).validate("here")
    for gs in (8, 16, 24, 4096):
        replace(BUILTIN, group_size=gs).validate()
    assert FIELDS == (
        "bits",
        "group_size",
        "method",
        "codebook",
        "symmetric",
        "scale_bits",
        "skip",
        "format",
    )


def test_size_cap(tmp_path):
    p = tmp_path / "quant.toml"
    p.write_text("#" * ((1 << 20) + 1))
    with pytest.raises(InputError, match="too large"):
        load_rules(p)


# --------------------------------------------------------------------------- property


PRESET_NAMES = ["tiny", "tiny-untied", "tiny-qwen2", "tiny-odd"]
FIELD_VALUES = {
    "bits": st.sampled_from([2, 3, 4, 8]),
    "group_size": st.sampled_from([8, 16, 32, 64, 128, 256, 4096]),
    "method": st.sampled_from(METHODS),
    "codebook": st.booleans(),
    "symmetric": st.booleans(),
    "scale_bits": st.integers(4, 16),
    "skip": st.booleans(),
    "format": st.sampled_from(["int", "mxfp4", "nvfp4"]),
}


@st.composite
def scenario(draw):
    specs = specs_of(draw(st.sampled_from(PRESET_NAMES)))
    names = [s.name for s in specs]
    pattern_pool = [
        ".*",
        r".*proj",
        r".*_proj\.weight",
        r"model\.layers\.\d+\.mlp\..*",
        r"model\.layers\.[01]\.self_attn\.[qk]_proj",
        r"model\.layers\.1.*",
        r".*norm",
        r".*\.bias",
        r"model\.embed_tokens|lm_head",
        "lm_head",
        "model",
        "nothing",
    ]
    for n in names:
        pattern_pool += [re.escape(n), re.escape(n.removesuffix(".weight"))]
    rules = []
    for _ in range(draw(st.integers(0, 6))):
        keys = draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=4, unique=True))
        rule = {"match": draw(st.sampled_from(pattern_pool))}
        rule.update({k: draw(FIELD_VALUES[k]) for k in keys})
        rules.append(rule)
    partial = st.dictionaries(st.sampled_from(FIELDS), st.just(None)).flatmap(
        lambda d: st.fixed_dictionaries({k: FIELD_VALUES[k] for k in d})
    )
    defaults = draw(st.none() | partial)
    cli = draw(partial)
    cli.update({k: None for k in draw(st.lists(st.sampled_from(FIELDS))) if k not in cli})
    return specs, defaults, rules, cli


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(scenario())
def test_property_resolution_is_left_to_right_fold(tmp_path, sc):
    specs, defaults, rules, cli = sc
    cfg = write_config(tmp_path, defaults, rules)
    res = resolve(specs, cli, cfg, BUILTIN, BUILTIN_EMBED, METHODS)

    # independent reference: the obvious loop
    expected = {}
    for spec in specs:
        if spec.role not in QUANTIZABLE_ROLES:
            continue
        if spec.role in ("embed", "lm_head"):
            values = BUILTIN_EMBED.to_json()
        else:
            values = BUILTIN.to_json()
            values.update(defaults or {})
            values.update({k: v for k, v in cli.items() if v is not None})
        short = spec.name[: -len(".weight")] if spec.name.endswith(".weight") else spec.name
        for rule in rules:
            if re.fullmatch(rule["match"], spec.name) or re.fullmatch(rule["match"], short):
                values.update({k: v for k, v in rule.items() if k != "match"})
        if values.get("format") == "int":  # to_json leaves the integer format out
            del values["format"]
        expected[spec.name] = values

    assert list(res.settings) == list(expected)
    assert {n: s.to_json() for n, s in res.settings.items()} == expected
    for s in res.settings.values():
        s.validate(methods=METHODS)
    assert json.loads(json.dumps(res.to_json())) == res.to_json()
