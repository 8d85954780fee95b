"""Quantization in row blocks and in worker processes (maskc/quantize/stream.py): the same
codes, scales and report as quantizing whole matrices, byte-identical builds whatever --jobs
is, atomic unit files, and memory that follows the row block rather than the tensor."""

from __future__ import annotations

import hashlib
import inspect
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from maskc.ingest import load_model
from maskc.pipeline.options import Quiet
from maskc.quantize import resolve_settings
from maskc.quantize import stream as S
from maskc.quantize.driver import quantize_model
from maskc.quantize.matrix import quantize_stack, weight_metrics


def _tree(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _resolve(model, bits=4):
    return resolve_settings(model.specs, bits, None, None, None, False, None)


@pytest.mark.parametrize("chunk_rows", [4096, 5])
def test_row_blocks_match_whole_matrices(model_cache, tmp_path, monkeypatch, chunk_rows):
    """Blocks of 3 rows (straddling q/k/v and gate/up stack boundaries, odd padded columns)
    give exactly what quantizing each whole stack at once gives, and the same error metric,
    also when the error metric's blocks of ``CHUNK_ROWS`` rows (5 here) do not line up with
    the stack's row blocks (as gate/up at an intermediate size of 5,632 and 2,048 columns)."""
    import maskc.quantize.matrix as mq

    gen = model_cache("tiny-odd")
    model = load_model(gen.path)
    res = _resolve(model)
    cp = 96  # tiny-odd: 72 columns padded to groups of 32
    monkeypatch.setattr(S, "BLOCK_ELEMS", 3 * cp)
    monkeypatch.setattr(S, "CHUNK_ROWS", chunk_rows)
    monkeypatch.setattr(mq, "CHUNK_ROWS", chunk_rows)
    q = quantize_model(model, res, None, tmp_path, Quiet())
    stored = {}
    for f in sorted((tmp_path / "quant").glob("*.safetensors")):
        stored.update(load_file(f))
    by_name = {r["name"]: r for r in q.rows}
    stacks = {}
    for layer in [None, *range(model.arch.num_layers)]:
        specs = [s for s in model.specs if s.layer == layer]
        floats, groups = S._groups(specs, res.settings)
        for _site, setting, group in groups:
            stacks[tuple(s.name for s in group)] = setting
        for spec in floats:
            np.testing.assert_array_equal(stored[spec.name], model.read(spec.name))
    assert any(len(names) == 3 for names in stacks)  # q, k, v stacked
    for names, setting in stacks.items():
        ws = [model.read(n) for n in names]
        for n, w, ref in zip(names, ws, quantize_stack(list(names), ws, setting), strict=True):
            for field, arr in ref.arrays().items():
                np.testing.assert_array_equal(stored[f"{n}/{field}"], arr, err_msg=n)
            want = weight_metrics(w, ref.dequantize(), chunk_rows)["rel_error"]
            assert by_name[n]["rel_error"] == want


def test_jobs_do_not_change_the_build(model_cache, tmp_path, cli):
    """--jobs 1 (in-process) and --jobs 2 (worker processes) write byte-identical builds."""
    gen = model_cache("tiny-sharded")
    for j in ("1", "2"):
        r = cli("compile", gen.path, "-o", tmp_path / j, "--no-calib", "--jobs", j)
        assert r.code == 0, r.err
    assert _tree(tmp_path / "1") == _tree(tmp_path / "2")


def test_any_executor_and_a_retried_unit(model_cache, tmp_path):
    """A thread pool (any concurrent.futures Executor) gives the same quant/ as the in-process
    run; a unit run twice rewrites its file identically and leaves no temporary file."""
    gen = model_cache("tiny")
    model = load_model(gen.path)
    res = _resolve(model)
    quantize_model(model, res, None, tmp_path / "a", Quiet())
    with ThreadPoolExecutor(2) as ex:
        quantize_model(model, res, None, tmp_path / "b", Quiet(), executor=ex)
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b")
    names = [s.name for s in model.specs if s.layer == 1]
    args = (str(model.path), str(model.config_path), str(tmp_path / "b"), 1)
    r = S.quantize_unit(*args, S.settings_json(res.settings, names))
    json.dumps(r)  # a small JSON-able result
    assert sorted(r["index"]) == sorted(names)
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b")


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lsq", "gptq"])
def test_calibrated_blocks_side_by_side(model_cache, tmp_path, monkeypatch, method):
    """With calibration, the row blocks of each stack quantized by a pool of threads (several
    in flight, finishing in any order) give the same quant/ files and report as one after the
    other; gptq's blocks (with their Hessian) go to the pool's local threads, never to the
    (remote) executor."""
    from maskc.quantize.driver import Calibration

    gen = model_cache("tiny-odd")
    model = load_model(gen.path)
    res = resolve_settings(model.specs, 3, None, method, None, False, None)
    monkeypatch.setattr(S, "BLOCK_ELEMS", 3 * 96)  # blocks of 3 rows (6 for gptq: CHUNK_ROWS)
    if method == "gptq":
        import maskc.quantize.matrix as mq

        monkeypatch.setattr(S, "CHUNK_ROWS", 6)  # >= 4 blocks per matrix, several in flight
        monkeypatch.setattr(mq, "CHUNK_ROWS", 6)
    calib = Calibration(tuple(range(3, 40)), "ids", 16, method == "gptq")
    a = quantize_model(model, res, calib, tmp_path / "a", Quiet())

    hessians: list[bool] = []  # per block sent to the (remote) executor: carried a Hessian

    class Remote(ThreadPoolExecutor):  # stands for a cluster: records what it is given
        def submit(self, fn, *args, **kw):
            bound = inspect.signature(fn).bind(*args, **kw).arguments
            hessians.append(bound.get("hessian") is not None)
            return super().submit(fn, *args, **kw)

    with Remote(3) as remote, ThreadPoolExecutor(2) as local:
        b = quantize_model(
            model, res, calib, tmp_path / "b", Quiet(), blocks=S.BlockPool(remote, 3, local)
        )
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b")
    assert a.rows == b.rows
    assert hessians and not any(hessians)  # lsq's layers and the 8-bit rtn ones
    if method == "lsq":
        assert len(hessians) > 100


CHILD = r"""
import sys, tracemalloc
from maskc.ingest import load_model
from maskc.pipeline.options import Quiet
from maskc.quantize import resolve_settings
from maskc.quantize import stream as S
from maskc.quantize.driver import quantize_model
S.BLOCK_ELEMS = 1 << 18
model = load_model(sys.argv[1])
res = resolve_settings(model.specs, 4, None, None, None, False, None)
tracemalloc.start()
quantize_model(model, res, None, __import__("pathlib").Path(sys.argv[2]), Quiet())
print(tracemalloc.get_traced_memory()[1])
"""


def test_memory_follows_the_row_block(tmp_path):
    """Quantizing a model whose embedding and lm_head are 32768 x 512 (64 MiB each in float32)
    allocates (numpy's allocations, traced: deterministic, not timed) at most what unit_bytes
    budgets without the interpreter: a block's temporaries (BLOCK_ELEMS = 2**18 weights, ~60
    bytes each: 15 MiB) plus one 4096-row float64 block of the error metric (16 MiB), with
    4 MiB for small arrays; about half of one float32 tensor. Quantizing whole tensors held
    the float32 tensor, its dequantized copy and the float64 grouped view (over 256 MiB)."""
    from dataclasses import replace

    from maskc.testmodels import PRESETS, generate

    spec = replace(
        PRESETS["tiny"],
        name="tall",
        vocab_size=32768,
        hidden_size=512,
        intermediate_size=512,
        num_heads=8,
        num_kv_heads=4,
        num_layers=1,
        tie_word_embeddings=False,
    )
    gen = generate(tmp_path / "tall", spec, seed=0)
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(gen.path), str(tmp_path / "build")],
        capture_output=True,
        text=True,
        check=True,
    )
    peak = int(out.stdout.split()[-1])
    bound = 60 * (1 << 18) + 8 * 4096 * 512 + (4 << 20)
    assert bound < 32768 * 512 * 4
    assert peak < bound, (peak, bound)


def test_fused_lsq_is_the_numpy_expressions():
    """lsq's fused elementwise kernels give bit for bit what its numpy expressions give, with
    uniform and importance weights, padding, zero and tiny groups, ties and outliers."""
    from maskc.quantize.methods import _weights, column_mask, grouped32, lsq_search

    rng = np.random.default_rng(7)
    for c, g, bits in ((256, 32, 4), (72, 32, 4), (200, 64, 3), (64, 32, 8)):
        w = (rng.standard_t(3, size=(300, c)) * 0.02).astype(np.float32)
        w[0] = 0
        w[1, :g] = 1e-30
        w[2] = np.round(w[2] * 64) / 64  # exact ties
        w[3, 5] = 40.0
        x = grouped32(w, g)
        for wt in (column_mask(c, g), _weights((300, c), g, rng.random(c) ** 3)):
            wt = np.broadcast_to(wt, x.shape)
            a = lsq_search(x, wt, bits, fused=True)
            b = lsq_search(x, wt, bits, fused=False)
            for u, v in zip(a, b, strict=True):
                assert u.tobytes() == v.tobytes()


def test_store_dequantizes_in_row_blocks(model_cache, tmp_path, monkeypatch):
    """QuantStore.dequantized reads a large matrix in row blocks: the same float32 values as
    the whole matrix's dequantize(); a field of the wrong shape is still refused."""
    import maskc.quantize.store as store_mod
    from maskc.errors import InputError
    from maskc.safetensors_io import write_safetensors

    gen = model_cache("tiny-odd")
    model = load_model(gen.path)
    q = quantize_model(model, _resolve(model), None, tmp_path, Quiet())
    monkeypatch.setattr(store_mod, "DEQUANT_ROWS", 7)
    for name, e in q.store.index.items():
        whole = q.store.matrix(name).dequantize() if e["kind"] == "quantized" else None
        if whole is not None:
            assert q.store.dequantized(name).tobytes() == whole.tobytes()
        else:
            whole = q.store.float(name).astype(np.float32)
        if whole.ndim == 2:  # any rows alone: the same bytes (the report's lm_head blocks)
            r = len(whole)
            for a, b in ((0, 1), (3, min(11, r)), (r - 2, r), (r, r)):
                assert q.store.dequantized_rows(name, a, b).tobytes() == whole[a:b].tobytes()
    name = "model.layers.0.mlp.down_proj.weight"
    f = tmp_path / q.store.index[name]["file"]
    arrays = load_file(f)
    arrays[f"{name}/scale_e"] = arrays[f"{name}/scale_e"][:-1]
    write_safetensors(f, arrays)
    fresh = store_mod.QuantStore(tmp_path, q.store.index)
    with pytest.raises(InputError, match="scale_e"):
        fresh.dequantized(name)
