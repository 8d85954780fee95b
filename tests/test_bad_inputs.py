"""The bad-input corpus (tests/bad_inputs/generate.py): every case gives its documented exit
code and a one-line message naming the problem, never a traceback, and leaves no output
behind; docs/bad-inputs.md lists exactly these cases."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "bad_inputs"))
import generate as corpus


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    return dict((c.name, (c, d)) for c, d in corpus.generate(tmp_path_factory.mktemp("bad")))


def _tree(d: Path) -> dict[str, int]:
    out = {}
    for p in sorted(d.rglob("*")) if not d.is_symlink() else []:
        if p.is_symlink():
            out[str(p)] = -1
        elif p.is_file():
            out[str(p)] = p.stat().st_mtime_ns
        else:
            out[str(p)] = 0
    return out


def test_the_corpus_is_large_and_covers_every_kind():
    assert len(corpus.CASES) >= 40
    assert len({c.name for c in corpus.CASES}) == len(corpus.CASES)
    kinds = {c.kind for c in corpus.CASES}
    assert kinds == {"model", "quant config", "fabric", "build", "adapter", "prompt", "path"}
    assert {c.args[0] for c in corpus.CASES} >= {
        "compile",
        "emulate",
        "inspect",
        "verify",
        "diff-layers",
        "testmodel",
    }


@pytest.mark.slow
@pytest.mark.parametrize("name", [c.name for c in corpus.CASES])
def test_bad_input(cases, cli, name):
    case, d = cases[name]
    before = _tree(d)
    r = cli(*(a.replace("{d}", str(d)) for a in case.args))
    assert "Traceback" not in r.err + r.out
    assert r.code == case.code, (name, r.code, r.err)
    lines = [ln for ln in r.err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("maskc: error: "), (name, r.err)
    for n in case.needles:
        assert n.lower() in lines[0].lower(), (name, n, lines[0])
    assert _tree(d) == before, name  # nothing written, nothing left behind


def test_docs_table_lists_every_case():
    doc = (Path(__file__).parents[1] / "docs" / "bad-inputs.md").read_text()
    assert corpus.table() in doc


def test_unknown_special_token_in_a_prompt_is_text(cases, cli):
    """``<|nope|>`` is not a special token of the model: like Hugging Face, maskc tokenizes it
    as text (several ordinary tokens), never as an unknown id."""
    _, d = cases["prompt-empty"]
    r = cli("emulate", d / "b", "--prompt", "<|nope|>", "-n", "1", "--json")
    assert r.code == 0, r.err
    assert len(json.loads(r.out)["prompt_tokens"]) > 1
