"""compressed-tensors' own library as the independent packer of ``pack-quantized`` checkpoints
(issue 21): a seeded tiny BF16 model is quantized with the library's ``calculate_qparams``
(what llm-compressor's min-max observer computes per group), compressed with its
``PackedQuantizationCompressor`` and written as the library writes a checkpoint (the
compressed state dict through ``safetensors``, config.json's ``quantization_config`` by
``ModelCompressor.update_config`` from its own ``QuantizationConfig``). maskc then imports
every layer exactly: the weights it stores (read back by hand from the build) equal the
library's OWN decompression (``PackedQuantizationCompressor.decompress``) bit for bit, with the
one rounding docs/import-design.md defines (the product exact, rounded once to float32); the
library's native BF16 decompression is that value rounded once more to BF16.

Skipped without ``torch`` and ``compressed-tensors`` (``pip install -e ".[ref]"``); CI installs
them. Nothing here is maskc's code: the packer is the library, the reader of the build is
tests/helpers.py (the ``safetensors`` library and numpy)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import quantizer_output, raw_fields, weights_by_hand
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch", reason='needs torch: pip install -e ".[ref]"')
pytest.importorskip(
    "compressed_tensors", reason='needs compressed-tensors: pip install -e ".[ref]"'
)

from compressed_tensors.compressors import BaseCompressor, ModelCompressor  # noqa: E402
from compressed_tensors.quantization import (  # noqa: E402
    QuantizationArgs,
    QuantizationConfig,
    QuantizationScheme,
)
from compressed_tensors.quantization.utils import calculate_qparams  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from maskc.errors import MaskcError  # noqa: E402
from maskc.ingest import prequant as pq  # noqa: E402
from maskc.pipeline.options import CompileOptions  # noqa: E402
from maskc.safetensors_io import SafetensorsFile  # noqa: E402
from maskc.testmodels import generate  # noqa: E402
from maskc.testmodels.spec import TinySpec  # noqa: E402

#: the library's compressor of format "pack-quantized", looked up as ModelCompressor does
PACKER = BaseCompressor.get_value_from_registry("pack-quantized")
LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _spec(dtype: str) -> TinySpec:
    """A Llama whose widths (128, 256) divide by group sizes 32 and 128, untied (the library
    leaves ``lm_head`` in float: ``ignore``)."""
    return TinySpec(
        name=f"ct-{dtype.lower()}",
        vocab_size=320,
        hidden_size=128,
        intermediate_size=256,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        tie_word_embeddings=False,
        dtype=dtype,
    )


def _args(bits: int, group: int, sym: bool, **kw) -> QuantizationArgs:
    if group > 0:
        return QuantizationArgs(
            num_bits=bits, type="int", symmetric=sym, strategy="group", group_size=group, **kw
        )
    return QuantizationArgs(num_bits=bits, type="int", symmetric=sym, strategy="channel", **kw)


def _compress(w, args: QuantizationArgs, scheme: QuantizationScheme) -> dict:
    """One weight ``[R, C]`` (torch, the model's dtype) as the library compresses it: the
    min-max of each group (llm-compressor's default observer) through ``calculate_qparams``
    (scale in the weight's dtype, integer zero point), then the pack-quantized compressor."""
    r, c = w.shape
    g = args.group_size if args.strategy == "group" else c
    x = w.reshape(r, c // g, g)
    scale, zp = calculate_qparams(x.amin(-1), x.amax(-1), args)
    return PACKER.compress({"weight": w, "weight_scale": scale, "weight_zero_point": zp}, scheme)


def library_checkpoint(src: Path, dst: Path, args: QuantizationArgs) -> QuantizationScheme:
    """Folder ``src`` (a float model) quantized and compressed by compressed-tensors into
    ``dst``: every decoder layer's linear weights, the embedding, norms and ``lm_head`` kept."""
    scheme = QuantizationScheme(targets=["Linear"], weights=args)
    shutil.copytree(src, dst)
    out = {}
    for name, w in sorted(load_file(dst / "model.safetensors").items()):
        parts = name.split(".")
        if name.endswith(".weight") and parts[-2] in LINEAR:
            prefix = name[: -len("weight")]
            out |= {prefix + k: v for k, v in _compress(w, args, scheme).items()}
        else:
            out[name] = w
    save_file(out, dst / "model.safetensors", metadata={"format": "pt"})
    qc = QuantizationConfig(
        config_groups={"group_0": scheme},
        format="pack-quantized",
        ignore=["lm_head"],
        quantization_status="compressed",
    )
    ModelCompressor(quantization_config=qc).update_config(str(dst))
    return scheme


def _decompress(local: dict, scheme: QuantizationScheme) -> tuple:
    """One layer's compressed tensors (local names) decompressed by the library: (the exact
    product rounded once to float32 as numpy, the library's native decompression in the scale's
    dtype). The exact one is the same call with the stored scale widened to float64 (a BF16/F16
    scale times an integer below 2^9 is exact there)."""
    native = PACKER.decompress(local, scheme)["weight"]
    wide = local | {"weight_scale": local["weight_scale"].to(torch.float64)}
    exact = PACKER.decompress(wide, scheme)["weight"]
    assert exact.dtype == torch.float64
    return exact.to(torch.float32).numpy(), native


def library_weights(path: Path, scheme: QuantizationScheme) -> dict[str, tuple]:
    """Each packed layer of safetensors file ``path`` decompressed by the library
    (:func:`_decompress`), by weight name."""
    sd = load_file(path)
    out = {}
    for name in sorted(n for n in sd if n.endswith(".weight_packed")):
        prefix = name[: -len("weight_packed")]
        local = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
        out[prefix + "weight"] = _decompress(local, scheme)
    return out


def _agrees(got: np.ndarray, exact: np.ndarray, native) -> None:
    """maskc's stored float32 weights equal the library's exact decompression bit for bit, and
    rounded once to the library's dtype they are its native decompression."""
    assert np.array_equal(got, exact)
    assert torch.equal(torch.from_numpy(got).to(native.dtype), native)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("ct-models")
    made = {}

    def get(dtype: str = "BF16") -> Path:
        if dtype not in made:
            made[dtype] = generate(root / dtype, _spec(dtype), 0).path
        return Path(made[dtype])

    return get


CASES = [
    (4, 32, True, {}),
    (4, 32, False, {}),
    (4, 128, True, {}),
    (4, 128, False, {}),
    (4, -1, False, {}),  # strategy "channel": one scale per row
    (4, 128, True, {"actorder": "weight"}),  # reordered while calibrating only: no g_idx
    (8, 32, True, {}),
    (8, 128, False, {}),
    (8, -1, True, {}),
]


@pytest.mark.parametrize(("bits", "group", "sym", "kw"), CASES)
def test_library_checkpoint_is_imported_exactly(models, tmp_path, bits, group, sym, kw):
    """The quantize stage on each width, group size and symmetry the library packs: quant/
    holds the library's decompression bit for bit, method "imported", the checkpoint's bits."""
    d = tmp_path / "ckpt"
    scheme = library_checkpoint(models(), d, _args(bits, group, sym, **kw))
    qc = json.loads((d / "config.json").read_text())["quantization_config"]
    assert qc["quant_method"] == "compressed-tensors" and qc["format"] == "pack-quantized"
    refs = library_weights(d / "model.safetensors", scheme)
    assert len(refs) == 14
    out = tmp_path / "build"
    quantizer_output(d, out, CompileOptions(fabric="mini", calibrate=False))
    idx = json.loads((out / "quant" / "index.json").read_text())["tensors"]
    for name, (exact, native) in refs.items():
        assert idx[name]["method"] == "imported", name
        assert idx[name]["format"]["bits"] == bits
        assert (idx[name]["format"]["zero_bits"] == 0) == sym  # no offsets: a symmetric format
        _agrees(weights_by_hand(raw_fields(out, name), exact.shape), exact, native)
    assert idx["lm_head.weight"]["method"] != "imported"


@pytest.mark.slow  # ~15 s: a whole compile, verify and emulate
def test_library_checkpoint_compiles_verifies_and_emulates(models, tmp_path, cli):
    """A 4-bit checkpoint (group 64, asymmetric, so the zero points are packed too; the mini
    fabric's 192-weight tile row takes ROM groups of 32 or 64): inspect recognises it, the
    compile imports every layer "imported, exact", the netlist's tiles read back by hand are
    the library's decompression bit for bit, the layers verify and the emulator runs."""
    d = tmp_path / "ckpt"
    scheme = library_checkpoint(models(), d, _args(4, 64, False))
    refs = library_weights(d / "model.safetensors", scheme)
    r = cli("inspect", d)
    assert r.code == 0, r.err
    assert "compressed-tensors 4-bit, group 64, asymmetric: 14 quantized layers" in r.out
    assert "every layer imported exactly" in r.out
    b = tmp_path / "b"
    r = cli("compile", d, "-o", b, "--fabric", "mini", "--no-verify")  # verified below
    assert r.code == 0, r.err
    assert r.out.count("imported, exact") == 14
    rep = json.loads((b / "reports" / "quant.json").read_text())
    rows = {row["name"]: row for row in rep["tensors"] if row["method"] == "imported"}
    assert set(rows) == set(refs)
    assert all(row["rel_error"] == 0.0 for row in rows.values())
    for name, (exact, native) in refs.items():
        _agrees(weights_by_hand(raw_fields(b, name), exact.shape), exact, native)
    assert cli("verify", b).code == 0
    e = cli("emulate", b, "--prompt", "hello", "--max-tokens", "3")
    assert e.code == 0, e.err


def _refused(r, *needles) -> None:
    assert r.code == 3, (r.code, r.err)
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("maskc: error: "), r.err
    assert "Traceback" not in r.err
    for n in needles:
        assert n in r.err, (n, r.err)


def test_library_3_bit_checkpoint_is_refused(models, tmp_path, cli):
    """The library packs 3 bits densely across words; maskc reads compressed-tensors at 4 and
    8 bits only: exit 3 naming the width, nothing written."""
    d = tmp_path / "ckpt"
    library_checkpoint(models(), d, _args(3, 32, True))
    b = tmp_path / "b"
    _refused(cli("compile", d, "-o", b, "--fabric", "mini"), "with 3 bits is not supported")
    assert not b.exists()


def test_library_float32_scales_are_refused_naming_the_tensor(models, tmp_path, cli):
    """A float32 model gets float32 scales from the library (24 significant bits): no ROM
    step holds them exactly, so the compile refuses (exit 3, naming the first tensor) rather
    than requantize, and writes nothing; inspect says so and exits 0."""
    d = tmp_path / "ckpt"
    library_checkpoint(models("F32"), d, _args(4, 32, True))
    i = cli("inspect", d)
    assert i.code == 0 and "refused" in i.out
    b = tmp_path / "b"
    _refused(cli("compile", d, "-o", b, "--fabric", "mini"), "model.layers.0.", "float model")
    assert not b.exists()


def test_actorder_group_is_written_by_the_library():
    """compressed-tensors' ``actorder: "group"`` (a ``weight_g_idx`` permutation) is written by
    llm-compressor's GPTQ, never by this library's compressor; newer releases (0.20) refuse the
    argument outright. maskc folds it for down_proj (tests/test_prequant_compile.py, packer
    from the description)."""
    try:
        QuantizationArgs(num_bits=4, strategy="group", group_size=32, actorder="group")
    except ValueError as e:
        pytest.skip(f"this compressed-tensors refuses actorder='group': {str(e).splitlines()[0]}")
    pytest.skip("the library's compressor writes no weight_g_idx (llm-compressor's GPTQ does)")


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    bits=st.sampled_from([4, 8]),
    group=st.sampled_from([32, 64, 128, -1]),
    sym=st.booleans(),
    dtype=st.sampled_from([torch.bfloat16, torch.float16]),
    rows=st.integers(9, 40),  # the library cannot unpack its own zero points from one word
    ngroups=st.integers(1, 3),
    extra=st.integers(0, 31),
    seed=st.integers(0, 2**32 - 1),
    binade=st.integers(-12, 4),
)
def test_any_library_layer_is_read_exactly_or_refused(
    tmp_path, bits, group, sym, dtype, rows, ngroups, extra, seed, binade
):
    """Any layer the library packs (widths, group sizes, symmetry, BF16/F16 scales, weights
    of any magnitude, zero groups) is read by maskc (``read_module`` + ``to_rom``) as exactly
    the library's decompression, or refused with a MaskcError naming it: only an asymmetric
    8-bit F16 offset may need more than the ROM's 16-bit signed offset mantissa."""
    cols = (group if group > 0 else 32) * ngroups + (extra if group < 0 else 0)
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((rows, cols)) * 2.0**binade
    w[rng.random((rows, cols)) < 0.05] = 0.0
    if rows > 1:
        w[0] = 0.0  # a row of zeros: eps scales
    wt = torch.from_numpy(w).to(dtype)
    args = _args(bits, group, sym)
    scheme = QuantizationScheme(targets=["Linear"], weights=args)
    packed = _compress(wt, args, scheme)
    path = tmp_path / f"m{seed}.safetensors"
    save_file({f"p.{k}": v for k, v in packed.items()}, path)
    (exact, native) = library_weights(path, scheme)["p.weight"]
    f = SafetensorsFile(path)
    t = pq.read_module(f, "p", pq.Scheme("compressed-tensors", bits, group, sym), "m")
    assert t.shape == (rows, cols)
    assert np.array_equal(pq.dequantize(t), exact)
    try:
        rom = pq.to_rom(t)
    except MaskcError as e:
        assert "p.weight" in str(e) and "\n" not in str(e)
        # the only refusal: 8-bit asymmetric offsets with F16 scales may not fit the fields
        assert bits == 8 and not sym and dtype == torch.float16, str(e)
        return
    _agrees(rom.dequantize(), exact, native)
