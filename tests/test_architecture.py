"""The shape of the code: the rules of DEVELOPERS.md that a test can check.

* importing the emulator does not import the compiler's quantizers (the chip shares no code with
  them);
* no module is over 700 lines, and a package's ``__init__.py`` only re-exports (and the
  top package states ``__version__``);
* the compile's steps form a valid chain (each step's inputs made by an earlier step), and
  ``--plan-only`` reuses the compile's steps;
* every op kind round-trips through its JSON and text form, and every malformed op is an
  InputError (exit 3), never another exception.
"""

from __future__ import annotations

import ast
import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest

from maskc.errors import InputError

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "maskc"


def test_the_emulator_does_not_import_the_quantizers():
    code = "import maskc.emulate, sys; assert 'maskc.quantize' not in sys.modules, 'imported'"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr


def test_no_module_is_over_700_lines():
    long = {
        str(p.relative_to(ROOT)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 700
    }
    assert not long, long


def test_package_inits_only_re_export():
    for init in PACKAGE.rglob("__init__.py"):
        text = init.read_text()
        assert len(text.splitlines()) < 60, init
        tree = ast.parse(text)
        for i, node in enumerate(tree.body):
            docstring = (
                i == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            )
            dunder = isinstance(node, ast.Assign) and [t.id for t in node.targets] in (
                ["__all__"],
                ["__version__"],
            )
            assert docstring or dunder or isinstance(node, ast.Import | ast.ImportFrom), (
                f"{init.relative_to(ROOT)} line {node.lineno}: only imports and __all__"
            )


@pytest.mark.parametrize("which", ["COMPILE", "PLAN"])
def test_every_step_reads_only_what_earlier_steps_made(which):
    from maskc import pipeline

    steps = getattr(pipeline, which)
    have = {"model_path", "opts", "build", "events"}
    names = [s.name for s in steps]
    assert len(set(names)) == len(names)
    for step in steps:
        needs = set(inspect.signature(step.fn).parameters)
        assert needs <= have, (step.name, needs - have)
        assert not have & set(step.makes), (step.name, "remakes", have & set(step.makes))
        have |= set(step.makes)


def test_plan_only_reuses_the_compile_steps():
    from maskc.pipeline import COMPILE, PLAN

    compile_fns = {s.fn for s in COMPILE}
    shared = [s.name for s in PLAN if s.fn in compile_fns]
    assert shared == ["fabric", "settings", "place"]


@pytest.fixture(scope="module")
def netlist_doc(tmp_path_factory):
    """netlist.json of compiled tiny models: one with q/k/v biases (both optional op keys set
    and unset), Qwen2-MoE (route, experts, gate_scale) and Qwen3-MoE (head_norm): every op
    kind."""
    from maskc.netlist import load_netlist
    from maskc.pipeline import CompileOptions, compile_model
    from maskc.testmodels import generate

    root = tmp_path_factory.mktemp("arch")
    out = []
    for preset in ("tiny-qwen2", "qwen2-moe", "qwen3-moe"):
        gen = generate(root / preset / "m", preset, 0)
        compile_model(gen.path, root / preset / "b", CompileOptions(calibrate=False, verify=False))
        out.append(load_netlist(root / preset / "b"))
    return out


def test_every_op_kind_round_trips(netlist_doc):
    from maskc.netlist.ops import OPS, Op

    assert {op.KIND for nl in netlist_doc for op in nl.ops} == set(OPS)
    for nl in netlist_doc:
        for raw, op in zip(nl.doc["ops"], nl.ops, strict=True):
            assert op.to_json() == raw
            assert Op.from_json(json.loads(json.dumps(raw)), "op") == op
            line = op.text()
            assert line.split()[0] == raw["op"] and "op=" not in line


def _mutations(raw: dict):
    """Single-key corruptions of one op: removed, wrong type, out of range, unknown key."""
    for key in raw:
        if key == "op":
            yield {**raw, "op": "nope"}
            yield {**raw, "op": 7}
            continue
        yield {k: v for k, v in raw.items() if k != key}
        for bad in ("", 1.5, True, [1], {"a": 1}, -1, 1 << 70, "no.such.thing", None):
            yield {**raw, key: bad}
    yield {**raw, "extra": 1}


def test_every_malformed_op_is_an_input_error(netlist_doc):
    """Each corrupted op either still parses to a valid dataflow or raises InputError: never a
    TypeError, KeyError or the like (those would be exit 70)."""
    from maskc.netlist.ops import check_dataflow, parse_ops

    rejected = 0
    for nl in netlist_doc:
        mats = nl.matrices
        params = {k: v.shape for k, v in nl.params().items()}
        base = nl.doc["ops"]
        seen_kinds = set()
        for i, raw in enumerate(base):
            if raw["op"] in seen_kinds:
                continue
            seen_kinds.add(raw["op"])
            for bad in _mutations(raw):
                ops = [*base[:i], bad, *base[i + 1 :]]
                try:
                    check_dataflow(parse_ops(ops, "n", mats, params), mats, params, nl.arch, "n")
                except InputError:
                    rejected += 1
    assert rejected > 100
