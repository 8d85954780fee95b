"""The netlist mutation fuzz (issue 19, class 8): every single-field mutation of netlist.json,
and of the tiles files' safetensors headers, written back with the manifest re-hashed so that
only the loader's validation can catch it, gives exit 0, 3 or 5 -- never 70, never a hang, no
traceback -- and when it is accepted (0) the emulator's tokens and logits are those of the
unmutated build: nothing changes the logits silently.

The same for the other files a reader trusts (classes 9 and 10): manifest.json's fields, every
params.safetensors array and every SRAM boot image entry.

The normal suite runs a fixed sample of the mutations (seconds); ``MASKC_FUZZ_FULL=1`` runs
every one of them (minutes)."""

from __future__ import annotations

import copy
import json
import os
import random
import shutil
import signal
import struct
from pathlib import Path

import pytest
from helpers import micro_fabric, reseal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from maskc.netlist.check import first_difference

FULL = os.environ.get("MASKC_FUZZ_FULL") == "1"
#: mutations of the normal suite's sample (the full run has ~10,000 and ~1,500)
SAMPLE = 240
TILE_SAMPLE = 60
#: a case running longer than this is a hang (a refused one takes milliseconds, an accepted
#: one a fraction of a second)
CASE_SECONDS = 60
EMULATE = ("--tokens", "1,2,3", "-n", "2", "--json")
NETLIST = "netlist/netlist.json"


@pytest.fixture(scope="module")
def build(model_cache, tmp_path_factory):
    """A tiny model on a small fabric (several tiles per matrix) over two dies, with SRAM
    reserved for adapters: every part of netlist.json is populated."""
    from maskc.pipeline import CompileOptions, compile_model

    root = tmp_path_factory.mktemp("fuzz")
    b = root / "b"
    opts = CompileOptions(fabric=micro_fabric(root), dies=2, reserve_sram="1KiB", verify=False)
    compile_model(model_cache("tiny").path, b, opts)
    return b


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang(f"a case ran over {CASE_SECONDS} s")


def _timed(fn, *args):
    """``fn(*args)``; a hang fails the test instead of blocking it."""
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(CASE_SECONDS)
    try:
        return fn(*args)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _run_cli(cli, b: Path) -> tuple[int, dict | None, str]:
    """``maskc emulate B --tokens 1,2,3 -n 2 --json`` in-process."""
    r = _timed(cli, "emulate", b, *EMULATE)
    if r.code == 0:
        return 0, json.loads(r.out), r.err
    ok = r.err.startswith("maskc: error: ") and len(r.err.strip().splitlines()) == 1
    return r.code, None, r.err if ok else "not one line: " + r.err


def _run_lib(b: Path) -> tuple[int, dict | None, str]:
    """What ``emulate`` runs, without building the command line each time (the CLI's own
    part, exceptions to exit codes, is :func:`_run_cli`'s): exit code, tokens and logits."""
    from maskc.emulate.run import generate, open_session
    from maskc.emulate.sampling import SamplingParams
    from maskc.errors import MaskcError

    try:
        g = _timed(lambda: generate(open_session(b), [1, 2, 3], 2, SamplingParams()))
    except MaskcError as e:
        return e.exit_code, None, str(e)
    except Hang:
        raise
    except Exception as e:  # what the CLI reports as an internal error
        return 70, None, f"{type(e).__name__}: {e}"
    return 0, {"tokens": g.tokens, "logits_sha256": g.logits_sha256}, ""


def _leaves(node, path=()):
    """Every value of a JSON document (containers too), by path."""
    yield path
    if isinstance(node, dict):
        for k in sorted(node):
            yield from _leaves(node[k], (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _leaves(v, (*path, i))


DELETE = object()


def _values(v) -> list:
    """The mutations of one value: numbers moved and blown up, every other JSON type, the key
    or item deleted (a NaN has no JSON spelling)."""
    out: list = []
    if isinstance(v, int | float) and not isinstance(v, bool):
        out += [0, -1, v + 1, v - 1, v * 2, 2**62, -(2**62), 1.5, v + 0.5]
        if isinstance(v, int):
            out.append(float(v))
    if isinstance(v, str):
        out += ["", v + "x"]
    if isinstance(v, bool):
        out.append(not v)
    out += ["x", None, True, 7, [], {}, DELETE]
    return [m for m in out if not (type(m) is type(v) and m == v)]


def _mutations(doc) -> list[tuple[tuple, object]]:
    return [(p, m) for p in _leaves(doc) if p for m in _values(_get(doc, p))]


def _get(doc, path):
    for k in path:
        doc = doc[k]
    return doc


def _apply(doc, path, value):
    doc = copy.deepcopy(doc)
    parent = _get(doc, path[:-1])
    if value is DELETE:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return doc


def _pick(items: list, n: int, seed: int) -> list:
    return items if FULL else random.Random(seed).sample(items, min(n, len(items)))


def _fuzz(run, b: Path, rel: str, cases: list, write) -> dict:
    """Each case written by ``write(case)`` into ``b/rel``, re-hashed, run by ``run(b)``; the
    tally of outcomes."""
    good = (b / rel).read_bytes()
    code, base, err = run(b)
    assert code == 0, err
    tally: dict = {}
    bad = []
    accepted: set[str] = set()
    for c in cases:
        write(c)
        reseal(b, rel)
        try:
            code, out, err = run(b)
        except Hang as e:
            code, out, err = "hang", None, str(e)
        if code == 0 and (out["tokens"], out["logits_sha256"]) != (
            base["tokens"],
            base["logits_sha256"],
        ):
            code = "0, logits changed"
        tally[code] = tally.get(code, 0) + 1
        if code == 0:
            accepted.add(str(c[0]) if isinstance(c[0], tuple) else str(c[:2]))
        if code not in (0, 3, 5) or "Traceback" in err or "not one line" in err:
            bad.append((c, code, err.strip()[:300]))
    (b / rel).write_bytes(good)
    reseal(b, rel)
    print(f"{rel}: {len(cases)} mutations: {tally}")
    if FULL:
        print("accepted, unchanged:", "; ".join(sorted(accepted)))
    assert not bad, bad[:10]
    return tally


def test_every_netlist_json_mutation_is_accepted_unchanged_or_refused(build, cli, tmp_path):
    """Single-field mutations of netlist.json (a fixed sample; all with MASKC_FUZZ_FULL=1),
    always including the ones the outside tester reported and those the full run found, run
    through the CLI."""
    b = tmp_path / "b"
    shutil.copytree(build, b)
    doc = json.loads((b / NETLIST).read_text())
    reported = [
        (("architecture", "num_layers"), 2**62),
        (("architecture", "num_heads"), 0),
        (("architecture", "num_heads"), 8),
        (("architecture", "hidden_size"), 128),
        (("numerics", "inv_sqrt_hd_q16"), 16385),
        (("ops", 1, "gamma_frac"), doc["ops"][1]["gamma_frac"] + 1),
        (("ops", 1, "eps_d"), doc["ops"][1]["eps_d"] + 1),
        (("sram", "context"), doc["sram"]["context"] - 1),
        (("tokenizer", "eos_token_id"), 113),
        (("matrices", "model.embed_tokens.weight", "format", "zero_bits"), 0),
        (("ops", 10, "b"), "x"),  # add x x: was an IndexError (exit 70), found by the full run
    ]
    cases = _pick(_mutations(doc), SAMPLE, 19)

    def write(case):
        text = json.dumps(_apply(doc, *case), indent=1, sort_keys=True) + "\n"
        (b / NETLIST).write_text(text)

    _fuzz(lambda b: _run_cli(cli, b), b, NETLIST, reported, write)
    tally = _fuzz(_run_lib, b, NETLIST, cases, write)
    assert tally.get(3, 0) > len(cases) // 2


def _header(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    (n,) = struct.unpack_from("<Q", raw)
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def test_every_tile_header_mutation_is_accepted_unchanged_or_refused(build, cli, tmp_path):
    """Single-field mutations of a tiles file's safetensors header (each array's dtype, shape
    and data offsets), the file re-hashed: never exit 70, never a silent change."""
    b = tmp_path / "b"
    shutil.copytree(build, b)
    rel = "netlist/tiles/layer-001.safetensors"
    head, data = _header(b / rel)
    dtypes = ["U8", "I8", "I16", "U16", "I32", "I64", "F32", "BF16", "BOOL", "nope"]
    cases = []
    for k in sorted(h for h in head if h != "__metadata__"):
        e = head[k]
        for dt in dtypes:
            if dt != e["dtype"]:
                cases.append((k, "dtype", dt))
        for i in range(len(e["shape"])):
            for v in (0, e["shape"][i] - 1, e["shape"][i] + 1, e["shape"][i] * 2, 2**40):
                cases.append((k, "shape", i, v))
        cases += [(k, "shape", "drop"), (k, "shape", "add")]
        for i in (0, 1):
            for dv in (-8, -1, 1, 8, 2**40):
                cases.append((k, "data_offsets", i, e["data_offsets"][i] + dv))
    cases = _pick(cases, TILE_SAMPLE, 8)

    def write(case):
        h = copy.deepcopy(head)
        e = h[case[0]]
        if case[1] == "dtype":
            e["dtype"] = case[2]
        elif case[1:] == ("shape", "drop"):
            e["shape"] = e["shape"][:-1]
        elif case[1:] == ("shape", "add"):
            e["shape"] = [*e["shape"], 1]
        else:
            e[case[1]][case[2]] = case[3]
        text = json.dumps(h).encode()
        text += b" " * (-len(text) % 8)
        (b / rel).write_bytes(struct.pack("<Q", len(text)) + text + data)

    _fuzz(_run_lib, b, rel, cases, write)


# -- the manifest's claims and the boot image (issue 19, classes 9 and 10) --------------------

MANIFEST_SAMPLE = 120


@pytest.mark.slow
def test_every_manifest_mutation_is_accepted_unchanged_or_refused(build, tmp_path):
    """Single-field mutations of manifest.json (nothing to re-hash: it seals the others): every
    one is refused (3/5) or changes nothing the emulator computes, and a mutated per-tile hash
    map makes ``verify`` fail (exit 5), never pass."""
    from maskc.errors import MaskcError
    from maskc.layout import verify_build

    b = tmp_path / "b"
    shutil.copytree(build, b)
    mp = b / "manifest.json"
    good = mp.read_text()
    doc = json.loads(good)
    code, base, err = _run_lib(b)
    assert code == 0, err
    cases = _pick(_mutations(doc), MANIFEST_SAMPLE, 9)
    cases += [(("tiles", sorted(doc["tiles"])[0]), doc["tiles"][sorted(doc["tiles"])[1]])]
    bad, tally = [], {}
    for path, value in cases:
        mp.write_text(json.dumps(_apply(doc, path, value), indent=2, sort_keys=True))
        code, out, err = _run_lib(b)
        if code == 0 and (out["tokens"], out["logits_sha256"]) != (
            base["tokens"],
            base["logits_sha256"],
        ):
            code = "0, logits changed"
        if code == 0 and path[0] == "tiles":  # accepted by emulate (it does not read the map)
            try:
                problems = _timed(verify_build, b)["problems"]
            except MaskcError as e:
                problems = [str(e)]
            if value is not DELETE and not problems:
                code = "verify passed a forged tile hash"
        tally[code] = tally.get(code, 0) + 1
        if code not in (0, 3, 5):
            bad.append((path, value, code, err[:200]))
    mp.write_text(good)
    print(f"manifest.json: {len(cases)} mutations: {tally}")
    assert not bad, bad[:10]


def test_every_params_and_boot_edit_is_refused(build, tmp_path):
    """One value of every params.safetensors array, and one byte of every boot image entry,
    changed and re-hashed: the emulator refuses the build (the base die's tables: exit 3; the
    model's values, which must agree with the SRAM boot image: exit 5, naming the entry).
    Nothing changes the logits silently."""
    import numpy as np

    from maskc.safetensors_io import SafetensorsFile, write_safetensors

    b = tmp_path / "b"
    shutil.copytree(build, b)
    rel = "netlist/params.safetensors"
    good = (b / rel).read_bytes()
    f = SafetensorsFile(b / rel)
    arrays = {k: np.array(f.read_raw(k)) for k in f.tensors}
    del f
    bad = []
    for name in sorted(arrays):
        edited = dict(arrays)
        edited[name] = arrays[name].copy()
        edited[name].flat[0] += 1
        write_safetensors(b / rel, edited, {"maskc": "netlist parameters"})
        reseal(b, rel)
        code, _, err = _run_lib(b)
        # the base die's tables: 3; RoPE's steps are also derived from netlist.json: 3 or 5
        want = (3,) if name.startswith("lut.") else (3, 5) if name == "rope.phase_step" else (5,)
        if code not in want:
            bad.append((name, code, err[:200]))
    (b / rel).write_bytes(good)
    reseal(b, rel)
    index = json.loads((b / "boot" / "index.json").read_text())
    for die in index["dies"]:
        rel = f"boot/{die['file']}"
        image = (b / rel).read_bytes()
        for e in die["entries"]:
            edited = bytearray(image)
            edited[e["offset"]] ^= 1
            (b / rel).write_bytes(bytes(edited))
            reseal(b, rel)
            code, _, err = _run_lib(b)
            if code != 5 or e["name"] not in err:
                bad.append((rel, e["name"], code, err[:200]))
        (b / rel).write_bytes(image)
        reseal(b, rel)
    assert not bad, bad[:10]
    assert _run_lib(b)[0] == 0


# -- the comparison every check above relies on -----------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=4),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_json, st.data())
def test_first_difference_finds_every_single_change(doc, data):
    """A JSON value equals itself; any single mutation of any of its values (a different value
    or type, a deleted key) is found, type for type (``true`` is not ``1``, ``1.0`` not
    ``1``), at a path naming it."""
    assert first_difference(doc, copy.deepcopy(doc), "doc") is None
    paths = [p for p in _leaves(doc) if p]
    if not paths:
        return
    path = data.draw(st.sampled_from(paths))
    new = data.draw(_json | st.just(DELETE))
    old = _get(doc, path)
    if new is not DELETE and type(new) is type(old) and new == old:
        return
    d = first_difference(doc, _apply(doc, path, new), "doc")
    assert d is not None
    assert d.startswith("doc")
