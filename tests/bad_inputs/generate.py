"""The bad-input corpus: broken or hostile inputs for every maskc command, generated (never
hand-edited binaries) from a seeded tiny model and a build of it.

    python tests/bad_inputs/generate.py OUT_DIR      # writes the inputs, prints the cases
    python tests/bad_inputs/generate.py --table      # the Markdown table of docs/bad-inputs.md

Each case is a command line (paths relative to OUT_DIR), the exit code it must give, and words
its one-line message must contain. tests/test_bad_inputs.py runs every case and also checks
that no traceback is printed and that no output file or folder is left behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Case:
    name: str
    kind: str  #: model, quant config, fabric, build, adapter, prompt, path
    what: str  #: one line for the table
    args: tuple[str, ...]  #: maskc arguments; "{d}" is the case folder
    code: int
    needles: tuple[str, ...]


CASES: list[Case] = []


def case(name, kind, what, args, code, *needles):
    CASES.append(Case(name, kind, what, tuple(args), code, tuple(needles)))


C = ["compile", "{d}/m", "-o", "{d}/out", "--no-verify"]  # the usual compile of a broken model
E = ["emulate", "{d}/b", "--tokens", "1,2,3", "-n", "2"]

# -- models -------------------------------------------------------------------------------------
case("model-missing", "model", "model folder does not exist", C, 3, "no such")
case("model-no-config", "model", "folder without config.json", C, 3, "config.json")
case("model-config-not-json", "model", "config.json is not JSON", C, 3, "config.json", "json")
case("model-config-no-hidden", "model", "config.json lacks hidden_size", C, 3, "hidden_size")
case("model-arch-gpt2", "model", "unsupported architecture (GPT2LMHeadModel)", C, 3, "gpt2")
case("model-truncated", "model", "model.safetensors cut in half", C, 3, "model.safetensors")
case("model-header-absurd", "model", "header length of 2^60 bytes", C, 3, "header length")
case("model-header-not-json", "model", "header bytes are not JSON", C, 3, "header")
# parser limits (issue 19, class 1): Python's int() refuses literals over 4,300 digits, and deep
# nesting exhausts the parsers' recursion; both must be exit 3 naming the file
LONG = "1" * 5000
case("model-config-long-int", "model", "config.json: a 5,000-digit integer", C, 3,
     "config.json", "4,300 digits")  # fmt: skip
case("model-config-deep", "model", "config.json nested 100,000 deep", C, 3, "config.json",
     "nested too deeply")  # fmt: skip
case("model-header-long-int", "model", "a 5,000-digit integer in a safetensors header", C, 3,
     "header", "4,300 digits")  # fmt: skip
case(
    "model-duplicate-tensor",
    "model",
    "a tensor named twice in one header",
    C,
    3,
    "model.layers.0.mlp.up_proj.weight",
)
case(
    "model-huge-shape",
    "model",
    "a tensor declaring shape [2^40, 2^40]",
    C,
    3,
    "model.layers.0.mlp.up_proj.weight",
)
case(
    "model-zero-size",
    "model",
    "a zero-size weight tensor [0, 64]",
    C,
    3,
    "model.layers.0.mlp.up_proj.weight",
)
case("model-nan", "model", "NaN in a weight", C, 3, "nan", "model.layers.1.self_attn.k_proj")
case("model-int-dtype", "model", "a weight stored as I64", C, 3, "i64")
case("model-extra-tensor", "model", "an unknown extra tensor", C, 3, "model.layers.0.mlp.extra")
case("model-symlink-loop", "model", "the model path is a symlink loop", C, 3, "symlink")
case(
    "model-index-missing-shard",
    "model",
    "shard index names a shard that does not exist",
    C,
    3,
    "model-00002-of-00002.safetensors",
)
case(
    "model-index-lies",
    "model",
    "shard index puts a tensor in the wrong shard",
    C,
    3,
    "model.norm.weight",
)
case("model-inspect-nan", "model", "`inspect` of a model with NaN", ["inspect", "{d}/m"], 3, "nan")
# special files and absurd shapes (issue 19, class 4): every input is checked to be a regular
# file before it is opened (a FIFO would block the read forever), and the declared layer count
# is checked against the weights in time O(tensors) before anything loops over it
case("model-fifo", "model", "model.safetensors is a FIFO", C, 3, "model.safetensors", "fifo")
case("model-tokenizer-folder", "model", "tokenizer.json is a folder", C, 3, "tokenizer.json",
     "folder")  # fmt: skip
case("model-tokenizer-fifo", "model", "tokenizer.json is a FIFO", C, 3, "tokenizer.json", "fifo")
case("model-tokenizer-huge", "model", "tokenizer.json of 300 MB (sparse)", C, 3,
     "tokenizer.json", "too large")  # fmt: skip
L2 = "model.layers.2.input_layernorm.weight"
case("model-layers-absurd", "model", "num_hidden_layers 16777216, weights of 2 layers", C, 3, L2)
case("model-layers-absurd-inspect", "model", "the same, `inspect`", ["inspect", "{d}/m"], 3, L2)
case("model-layers-absurd-plan", "model", "the same, `compile --plan-only`",
     ["compile", "{d}/m", "-o", "{d}/out", "--plan-only"], 3, L2)  # fmt: skip
# mixtures of experts (issue 20): bad MoE fields of config.json (the tiny model's config made a
# Qwen3-MoE/Qwen2-MoE/Mixtral one)
P = ["compile", "{d}/m", "-o", "{d}/out", "--plan-only"]
case("model-moe-experts-0", "model", "Qwen3-MoE num_experts 0", P, 3, "num_experts", "is 0")
case("model-moe-topk-over", "model", "num_experts_per_tok 9 of num_experts 8", P, 3,
     "num_experts_per_tok", "[1, 8]")  # fmt: skip
case("model-moe-experts-absurd", "model", "num_experts 16777216 (a loop bound)", P, 3,
     "num_experts", "[1, 1024]")  # fmt: skip
case("model-moe-expert-mlps-absurd", "model", "1,000 layers x 1,000 experts", P, 3,
     "expert mlps", "65,536")  # fmt: skip
case("model-moe-experts-disagree", "model", "num_experts 8 and num_local_experts 4", P, 3,
     "num_local_experts", "disagree")  # fmt: skip
case("model-moe-sparse-step", "model", "decoder_sparse_step 2 (dense layers between)", P, 3,
     "decoder_sparse_step 2")  # fmt: skip
case("model-moe-mlp-only-layers", "model", "mlp_only_layers [0]", P, 3, "mlp_only_layers")
case("model-moe-mlp-only-not-list", "model", "mlp_only_layers \"all\"", P, 3, "mlp_only_layers",
     "list")  # fmt: skip
case("model-moe-intermediate-0", "model", "moe_intermediate_size 0", P, 3,
     "moe_intermediate_size")  # fmt: skip
case("model-moe-norm-topk-string", "model", 'norm_topk_prob "yes"', P, 3, "norm_topk_prob")
case("model-moe-shared-0", "model", "Qwen2-MoE shared_expert_intermediate_size 0", P, 3,
     "shared_expert_intermediate_size 0")  # fmt: skip
case("model-moe-qwen3-bias", "model", "Qwen3-MoE attention_bias true (biases o_proj)", P, 3,
     "attention_bias")  # fmt: skip
case("model-moe-weights-missing-expert", "model", "Mixtral config over the dense weights", C, 3,
     "block_sparse_moe", "missing")  # fmt: skip
case("model-moe-calib-overflow", "model",
     "`compile --bits 3` (calibrated) of an MoE whose expert 0's SwiGLU output overflows",
     [*C, "--bits", "3"], 3, "layer 0 (experts.0.down_in)", "--no-calib")  # fmt: skip
# finite but extreme numbers (issue 19, class 5): what the chip cannot represent is refused
# before anything is compiled, naming the tensor or field, the value and the range
UP = "model.layers.0.mlp.up_proj.weight"
case("model-weight-3e38", "model", "a matrix weight of +3e38", C, 3, UP, "3e+38", "2^19")
case("model-weight-minus-3e38", "model", "a matrix weight of -3e38", C, 3, UP, "-3e+38", "2^19")
case("model-norm-1e30", "model", "a norm weight of 1e30", C, 3,
     "model.layers.1.post_attention_layernorm.weight", "1e+30")  # fmt: skip
case("model-embed-1e30", "model", "an embedding value of 1e30", C, 3, "model.embed_tokens.weight",
     "1e+30")  # fmt: skip
case("model-inspect-1e30", "model", "`inspect` of a model with a weight of 1e30",
     ["inspect", "{d}/m"], 3, UP, "2^19")  # fmt: skip
case("model-rope-theta-1e308", "model", "rope_theta 1e308 (infinite in float32)", C, 3,
     "rope_theta", "1e+308", "2^64")  # fmt: skip
case("model-rope-theta-0", "model", "rope_theta 0", C, 3, "rope_theta", "(1, 2^64]")
case("model-rope-theta-negative", "model", "rope_theta -10000", C, 3, "rope_theta", "-10000")
case("model-rope-theta-long", "model", "rope_theta a 400-digit integer (beyond float64)", C, 3,
     "rope_theta", "400 digits")  # fmt: skip
case("model-rope-factor-1e-300", "model", "rope_scaling.factor 1e-300", C, 3,
     "rope_scaling.factor", "1e-300")  # fmt: skip
case("model-rope-low-freq-0", "model", "rope_scaling.low_freq_factor 0", C, 3,
     "rope_scaling.low_freq_factor")  # fmt: skip
case("model-eps-1e-300", "model", "rms_norm_eps 1e-300 (0 in float32)", C, 3, "rms_norm_eps",
     "2^-40")  # fmt: skip
case("model-eps-1e300", "model", "rms_norm_eps 1e300", C, 3, "rms_norm_eps", "1e+300")
case("model-partial-rotary", "model", "partial_rotary_factor 0.5", C, 3, "partial_rotary_factor")
# -- quantization configs -----------------------------------------------------------------------
Q = [*C, "--config", "{d}/quant.toml"]
case(
    "quant-bad-regex",
    "quant config",
    "a rule's regex does not compile",
    Q,
    3,
    "quant.toml",
    "regex",
)
case("quant-unknown-key", "quant config", "an unknown key in a rule", Q, 3, "quant.toml", "colour")
case("quant-bits-7", "quant config", "bits = 7", Q, 3, "quant.toml", "bits")
case("quant-not-toml", "quant config", "not TOML", Q, 3, "quant.toml")
case("quant-long-int", "quant config", "bits = a 5,000-digit integer", Q, 3, "quant.toml",
     "4,300 digits")  # fmt: skip
case("quant-deep", "quant config", "an array nested 5,000 deep", Q, 3, "quant.toml",
     "nested too deeply")  # fmt: skip
case(
    "quant-flag-bits",
    "quant config",
    "--bits 5 on the command line",
    [*C, "--bits", "5"],
    2,
    "--bits",
)
# FP4 formats from the command line and quant.toml (issue 21)
case("quant-flag-format", "quant config", "--format fp8 on the command line",
     [*C, "--format", "fp8"], 2, "--format", "fp8")  # fmt: skip
case("quant-flag-format-bits", "quant config", "--bits 3 --format mxfp4 (FP4 fixes 4 bits)",
     [*C, "--bits", "3", "--format", "mxfp4"], 2, "--bits 3", "--format mxfp4")  # fmt: skip
case("quant-format-bad", "quant config", "format = 'fp8' in [defaults]", Q, 3, "quant.toml",
     "format", "fp8")  # fmt: skip
case("quant-format-bits", "quant config", "a rule sets format = 'nvfp4' and bits = 3", Q, 3,
     "quant.toml", "rule 1 bits = 3", "nvfp4")  # fmt: skip
case("quant-format-embed", "quant config", "a rule makes the embedding and lm_head mxfp4", Q, 3,
     "quant.toml", "embed_tokens", "mxfp4")  # fmt: skip
case("quant-format-mx-span", "model",
     "--format mxfp4, an up_proj row whose block scales span 27 binades (> 19)",
     [*C, "--format", "mxfp4"], 4, "up_proj", "row 3 block 1", "19 binades")  # fmt: skip
# FP4 GPTQ (issue 21): like the integer formats' gptq, it needs calibration statistics
case("quant-flag-format-gptq-no-calib", "quant config",
     "--format mxfp4 --method gptq --no-calib (gptq needs calibration)",
     [*C, "--format", "mxfp4", "--method", "gptq", "--no-calib"], 2, "gptq",
     "--no-calib")  # fmt: skip
# calibration sources (issue 24): random ids need no tokenizer; a text does
case("quant-flag-calib-source", "quant config", "--calib-source noise (not text, random, mixed)",
     [*C, "--calib-source", "noise"], 2, "--calib-source", "noise")  # fmt: skip
case("quant-flag-calib-source-no-calib", "quant config", "--calib-source mixed --no-calib",
     [*C, "--calib-source", "mixed", "--no-calib"], 2, "--calib-source",
     "--no-calib")  # fmt: skip
case("model-no-tokenizer-text-calib", "model",
     "no tokenizer.json and --calib-source text (the text cannot be read)",
     [*C, "--calib-source", "text"], 3, "tokenizer.json", "--calib-source random")  # fmt: skip
# -- fabrics -------------------------------------------------------------------------------------
F = [*C, "--fabric", "{d}/fab.toml"]
case("fabric-not-toml", "fabric", "fabric file is not TOML", F, 3, "fab.toml")
case("fabric-long-int", "fabric", "a 5,000-digit integer in the fabric file", F, 3, "fab.toml",
     "4,300 digits")  # fmt: skip
case(
    "fabric-unknown-key",
    "fabric",
    "fabric file with an unknown key",
    F,
    3,
    "fab.toml",
    "warp_drive",
)
case("fabric-negative-sram", "fabric", "sram_bytes = -1", F, 3, "fab.toml", "sram_bytes")
case(
    "fabric-unknown-name", "fabric", "--fabric names no built-in", [*C, "--fabric", "hc9"], 3, "hc9"
)
case("fabric-too-small", "fabric", "a fabric with 4 tiles per die", F, 4, "tiles")
# [card] (issue 20): the optional table of cards and links, every key checked like the rest
case("fabric-card-zero-dies", "fabric", "[card] dies_per_card = 0", F, 3, "fab.toml", "[card]",
     "dies_per_card")  # fmt: skip
case("fabric-card-no-bandwidth", "fabric", "[card] card_link_gb_per_s = 0", F, 3, "fab.toml",
     "card_link_gb_per_s")  # fmt: skip
case("fabric-card-negative-latency", "fabric", "[card] die_link_latency_ns = -5", F, 3,
     "fab.toml", "die_link_latency_ns")  # fmt: skip
case("fabric-card-unknown-key", "fabric", "[card] with an unknown key", F, 3, "fab.toml",
     "lanes")  # fmt: skip
case("fabric-card-missing-key", "fabric", "[card] without static_w", F, 3, "fab.toml",
     "static_w")  # fmt: skip
case("fabric-card-not-table", "fabric", "card = 4 instead of a [card] table", F, 3, "fab.toml",
     "card")  # fmt: skip
case("fabric-no-link", "fabric", "link_gb_per_s = 0 and --dies 2", [*F, "--dies", "2"], 4,
     "link_gb_per_s")  # fmt: skip
# -- builds --------------------------------------------------------------------------------------
case("build-missing", "build", "`emulate` of a folder that does not exist", E, 3, "no such")
case("build-netlist-truncated", "build", "netlist.json truncated", E, 5, "netlist.json")
case(
    "build-params-altered",
    "build",
    "one byte of params.safetensors changed",
    E,
    5,
    "params.safetensors",
)
case("build-tiles-deleted", "build", "a tiles file deleted", E, 5, "missing")
case("build-wrong-version", "build", "manifest of another format version", E, 5, "version")
case("build-manifest-long-int", "build", "manifest.json holds a 5,000-digit integer", E, 3,
     "manifest.json", "4,300 digits")  # fmt: skip
case(
    "build-verify-layer-altered",
    "build",
    "`verify` with a via layer byte changed",
    ["verify", "{d}/b"],
    5,
    "via",
)
case(
    "build-inspect-altered",
    "build",
    "`inspect` of a build with an altered file",
    ["inspect", "{d}/b"],
    5,
    "quant",
)
case(
    "build-diff-altered",
    "build",
    "`diff-layers` with one altered build",
    ["diff-layers", "{d}/b", "{d}/b2"],
    5,
    "netlist.json",
)
# manifest claims (issue 19, class 9): nothing a reader relies on is taken on trust
case("build-tile-hashes-forged", "build", "`verify`: the manifest's per-tile hash map edited "
     "(every file hash still matches)", ["verify", "{d}/b"], 5, "per-tile ROM hash")  # fmt: skip
case("build-stages-forged", "build", "manifest.json claims stages no maskc writes", E, 3,
     "manifest.json", "stages")  # fmt: skip
# model data outside the masks (issue 19, class 10): every file edited consistently with its
# manifest hash, so only the boot image (or the base die's tables) can tell
V = ["verify", "{d}/b"]
case("build-params-gamma-rehashed", "build", "`verify`: a norm gamma edited in "
     "params.safetensors, manifest re-hashed", V, 5, "sram.d0.bin", "layernorm")  # fmt: skip
case("build-params-gamma-emulate", "build", "`emulate`: the same edited gamma (the chip runs on "
     "its boot image)", E, 5, "sram.d0.bin", "layernorm")  # fmt: skip
case("build-boot-image-rehashed", "build", "`verify`: a byte of the SRAM boot image edited, "
     "manifest re-hashed", V, 5, "boot/sram.d0.bin", "differs")  # fmt: skip
case("build-lut-rehashed", "build", "a base-die table (lut.exp2) edited in params.safetensors, "
     "manifest re-hashed", E, 3, "lut.exp2", "base die")  # fmt: skip
# the netlist is trusted too much (issue 19, class 8): netlist.json edited and re-sealed (its
# manifest hash updated), so only the loader's validation can catch it
case("build-netlist-layers-huge", "build", "netlist.json: num_layers = 2^62, re-hashed", E, 3,
     "netlist.json", "num_layers")  # fmt: skip
case("build-netlist-heads-0", "build", "netlist.json: num_heads = 0, re-hashed", E, 3,
     "netlist.json", "num_heads")  # fmt: skip
case("build-netlist-heads-8", "build", "netlist.json: num_heads = 8, not the matrices' shapes",
     E, 3, "netlist.json", "q_proj", "shape")  # fmt: skip
case("build-netlist-numerics", "build", "netlist.json: a numerics constant changed", E, 3,
     "netlist.json", "numerics.log2e_q16")  # fmt: skip
case("build-netlist-gamma-frac", "build", "netlist.json: an rmsnorm's gamma_frac + 1", E, 3,
     "netlist.json", "ops[1].gamma_frac")  # fmt: skip
case("build-netlist-op-no-matrix", "build", "netlist.json: an op names a missing matrix", E, 3,
     "netlist.json", "qq_proj")  # fmt: skip
case("build-netlist-op-order", "build", "netlist.json: two ops swapped (k before q)", E, 3,
     "netlist.json", "ops[2]")  # fmt: skip
# a mixture of experts' netlist (a qwen3-moe build) edited and re-sealed: the new ops and keys
case("build-moe-expert-swapped", "build", "MoE netlist.json: a matrix's expert 0 -> 1", E, 3,
     "netlist.json", "experts.0.gate_proj", "expert")  # fmt: skip
case("build-moe-route-top-k", "build", "MoE netlist.json: the route op's top_k + 1", E, 3,
     "netlist.json", "route", "top_k")  # fmt: skip
case("build-moe-experts-pattern", "build", "MoE netlist.json: an experts op's gate without {e}",
     E, 3, "netlist.json", "'gate'", "{e}")  # fmt: skip
case("build-moe-experts-count", "build", "MoE netlist.json: an experts op over 9 of 8 experts",
     E, 3, "netlist.json", "experts.8.gate_proj", "not in matrices")  # fmt: skip
case("build-moe-head-norm-eps", "build", "MoE netlist.json: a head_norm's eps_d + 1", E, 3,
     "netlist.json", "eps_d")  # fmt: skip
case("build-moe-expert-dies-added", "build",
     "MoE netlist.json: placement.expert_dies added to a one-die build", E, 3, "netlist.json",
     "placement.expert_dies", "placement.dies = 1")  # fmt: skip
# FP4 formats (issue 21; class 11 of the issue 19 scheme): an integer matrix relabelled mxfp4 in a
# version 5 netlist (FP4 matrices need version 6), and an invalid kind
case("build-netlist-format-mxfp4", "build",
     "netlist.json: a matrix's format is mxfp4 in a version 5 netlist, re-hashed", E, 3,
     "netlist.json", "q_proj", "mxfp4", "netlist version 6")  # fmt: skip
case("build-netlist-format-kind", "build", "netlist.json: a matrix's format kind 'fp3'", E, 3,
     "netlist.json", "q_proj", "'kind'", "fp3")  # fmt: skip
case("build-netlist-format-kind-type", "build", "netlist.json: a matrix's format kind is a list",
     E, 3, "netlist.json", "q_proj", "'kind'", "list")  # fmt: skip
# input permutations (issue 21, desc_act on every matrix): q_proj given a gather table in
# params.safetensors (netlist version 6), re-hashed; the table must be a permutation of its
# columns, int32 [C], in a version 6 netlist
case("build-netlist-input-perm-dup", "build",
     "an input permutation (q_proj's gather table) with a column twice, re-hashed", E, 3,
     "netlist.json", "q_proj", "input_perm", "not a permutation")  # fmt: skip
case("build-netlist-input-perm-dtype", "build", "an input permutation stored as int64", E, 3,
     "netlist.json", "q_proj", "input_perm", "int64", "expected int32 [64]")  # fmt: skip
case("build-netlist-input-perm-shape", "build", "an input permutation of 32 of 64 columns", E,
     3, "netlist.json", "q_proj", "input_perm", "expected int32 [64]")  # fmt: skip
case("build-netlist-input-perm-v5", "build", "an input permutation in a version 5 netlist", E,
     3, "netlist.json", "input permutations", "netlist version 6")  # fmt: skip
# -- adapters ------------------------------------------------------------------------------------
A = [*E, "--adapter", "{d}/ad"]
case("adapter-rank-0", "adapter", "r = 0", A, 3, "r = 0")
case("adapter-long-int", "adapter", "adapter_config.json: r is a 5,000-digit integer", A, 3,
     "adapter_config.json", "4,300 digits")  # fmt: skip
case("adapter-nan", "adapter", "NaN in lora_B", A, 3, "nan", "lora_B")
case("adapter-dora", "adapter", "a DoRA adapter (use_dora)", A, 3, "use_dora")
case(
    "adapter-no-weights",
    "adapter",
    "adapter_model.safetensors missing",
    A,
    3,
    "adapter_model.safetensors",
)
case(
    "adapter-wrong-base",
    "adapter",
    "an adapter for a model of other shapes",
    A,
    3,
    "another base model",
)
case("adapter-unknown-module", "adapter", "target_modules names lm_head", A, 3, "lm_head")
# -- prompts -------------------------------------------------------------------------------------
case("prompt-empty", "prompt", "--prompt ''", ["emulate", "{d}/b", "--prompt", ""], 2, "prompt")
case(
    "prompt-tokens-not-ints",
    "prompt",
    "--tokens 1,x,3",
    ["emulate", "{d}/b", "--tokens", "1,x,3"],
    2,
    "--tokens",
)
case(
    "prompt-token-out-of-vocab",
    "prompt",
    "a token id beyond the vocabulary",
    ["emulate", "{d}/b", "--tokens", "1,999999"],
    3,
    "vocabulary",
)
case(
    "prompt-ppl-not-utf8",
    "prompt",
    "--ppl file with invalid UTF-8",
    ["emulate", "{d}/b", "--ppl", "{d}/text.txt"],
    3,
    "text.txt",
    "utf-8",
)
case(
    "prompt-ppl-empty",
    "prompt",
    "--ppl file that is empty",
    ["emulate", "{d}/b", "--ppl", "{d}/text.txt"],
    3,
    "text.txt",
    "empty",
)
case(
    "prompt-calib-not-utf8",
    "prompt",
    "--calib text with invalid UTF-8",
    [*C[:-1], "--calib", "{d}/text.txt", "--bits", "3"],
    3,
    "text.txt",
    "utf-8",
)
case(
    "prompt-too-long",
    "prompt",
    "a prompt longer than the KV cache",
    ["emulate", "{d}/b", "--tokens", ",".join(["5"] * 40), "--context", "32"],
    4,
    "40 tokens",
)
# options (issue 19, class 7): every usage error is one line, exit 2 (click's own ones too)
EB = ["emulate", "{d}/b"]
case("prompt-not-utf8", "prompt", "--prompt with bytes that are not UTF-8",
     [*EB, "--prompt", "ab\udcffcd", "-n", "1"], 2, "utf-8")  # fmt: skip
case("prompt-n-0", "prompt", "-n 0 (click's range check)", [*EB, "--tokens", "1", "-n", "0"], 2,
     "--max-new-tokens")  # fmt: skip
case("prompt-unknown-option", "prompt", "an option that does not exist",
     [*EB, "--tokens", "1", "--frobnicate"], 2, "--frobnicate")  # fmt: skip
case("prompt-temperature-inf", "prompt", "--temperature inf",
     [*EB, "--tokens", "1", "--temperature", "inf"], 2, "--temperature")  # fmt: skip
case("prompt-token-huge", "prompt", "a 30-digit token id", [*EB, "--tokens", "9" * 30], 2,
     "--tokens")  # fmt: skip
case("prompt-ppl-stride", "prompt", "--stride longer than --ctx",
     [*EB, "--ppl", "{d}/text.txt", "--ctx", "8", "--stride", "1000"], 2, "--stride")  # fmt: skip
case("prompt-render-nodir", "prompt", "`render -o` into a folder that does not exist",
     ["render", "{d}/b", "--tile", "T0_0_0", "-o", "{d}/nodir/x.png"], 2, "nodir")  # fmt: skip
case("prompt-diff-png-nodir", "prompt", "`diff-layers --png` into a missing folder",
     ["diff-layers", "{d}/b", "{d}/b", "--png", "{d}/nodir/x.png"], 2, "nodir")  # fmt: skip
# tokenizers and chat templates (issue 19, class 2: the tokenizers library panics or backtracks;
# class 3: chat templates that fail, recurse or never end): exit 3 naming the file and field
TC = "tokenizer_config.json"
case("model-tok-stride", "model", "tokenizer.json: truncation stride >= max_length", C, 3,
     "tokenizer.json", "truncation.stride")  # fmt: skip
case("model-tok-unk", "model", "tokenizer.json: WordLevel unk_token not in the vocabulary", C, 3,
     "tokenizer.json", "model.unk_token")  # fmt: skip
case("model-tok-type", "model", "tokenizer.json: an unknown model type", C, 3, "tokenizer.json",
     "model.type")  # fmt: skip
case("model-template-div0", "model", "chat template divides by zero", C, 3, TC, "chat_template",
     "ZeroDivisionError")  # fmt: skip
case("model-template-recursion", "model", "chat template: a macro calling itself forever", C, 3,
     TC, "chat_template", "recursion")  # fmt: skip
case("model-template-str-int", "model", "chat template adds a string to an int", C, 3, TC,
     "chat_template", "TypeError")  # fmt: skip
case("model-template-power", "model", "chat template computes 2 ** 99999999", C, 3, TC,
     "chat_template", "too large")  # fmt: skip
case("model-template-loops", "model", "chat template: nested range(99999) loops", C, 3, TC,
     "chat_template", "range()")  # fmt: skip
case("model-template-output", "model", "chat template writes 100 MB", C, 3, TC, "chat_template",
     "output")  # fmt: skip
case("prompt-tok-regex", "prompt", "a Split regex `(a+)+$` on a prompt of 40 a's and a b",
     [*EB, "--prompt", "a" * 40 + "b", "-n", "1"], 3, "tokenizer.json", "encode")  # fmt: skip
case("prompt-tok-stride", "prompt", "a build whose tokenizer.json has stride >= max_length",
     [*EB, "--prompt", "hello", "-n", "1"], 3, "tokenizer.json", "truncation.stride")  # fmt: skip
case("prompt-template-div0", "prompt", "`--chat` with a build whose template divides by zero",
     [*EB, "--prompt", "hello", "--chat", "-n", "1"], 3, "chat_template",
     "ZeroDivisionError")  # fmt: skip
# -- paths ---------------------------------------------------------------------------------------
case(
    "path-output-inside-input",
    "path",
    "-o inside the model folder",
    ["compile", "{d}/m", "-o", "{d}/m/out", "--no-verify"],
    2,
    "overlaps",
)
case(
    "path-output-not-empty",
    "path",
    "-o an existing non-empty folder without --force",
    ["compile", "{d}/m", "-o", "{d}/out", "--no-verify"],
    3,
    "not empty",
    "--force",
)
case(
    "path-output-under-a-file",
    "path",
    "-o below a regular file (unwritable)",
    ["compile", "{d}/m", "-o", "{d}/file/out", "--no-verify"],
    2,
    "is a file",
)
case(
    "path-output-is-file",
    "path",
    "-o an existing file",
    ["compile", "{d}/m", "-o", "{d}/file", "--no-verify"],
    3,
    "not a folder",
)
case(
    "path-testmodel-not-empty",
    "path",
    "`testmodel` into a non-empty folder",
    ["testmodel", "{d}/out"],
    3,
    "not empty",
)
# output paths (issue 19, class 6): checked before any work (exit 2); parents made for the
# output are removed again when the compile fails
CO = ["compile", "{d}/m", "--no-verify", "-o"]
case("path-output-empty", "path", "-o ''", [*CO, ""], 2, "-o", "folder name")
case("path-output-dot", "path", "-o .", [*CO, "."], 2, "-o", "folder name")
case("path-output-cwd-parent", "path", "-o / (a parent of the current folder)", [*CO, "/"], 2,
     "-o")  # fmt: skip
case("path-output-name-too-long", "path", "-o a 256-byte folder name", [*CO, "{d}/" + "n" * 256],
     2, "256 bytes")  # fmt: skip
case("path-output-new-parents", "path", "-o new1/new2/build of a bad model leaves no new1",
     [*CO, "{d}/new1/new2/build"], 3, "model.layers.2")  # fmt: skip


# pre-quantized checkpoints (issue 19, class 11; issue 21): GPTQ/AWQ/compressed-tensors layers
# are imported exactly or refused, exit 3 naming the tensor and what does not fit; never
# requantized. The checkpoints are packed by tests/prequant_pack.py from the tiny model.
QP = "model.layers.0.mlp.up_proj"
case("prequant-method-unknown", "model", "quantization_config.quant_method bitsandbytes", C, 3,
     "bitsandbytes", "not supported")  # fmt: skip
case("prequant-gptq-no-bits", "model", "GPTQ quantization_config without bits", C, 3,
     "quantization_config.bits")  # fmt: skip
case("prequant-awq-gemv", "model", "AWQ version gemv (another packing)", C, 3, "gemv")
case("prequant-no-qweight", "model", "config says GPTQ, the weights are float", C, 3,
     "no tensor ends in '.qweight'")  # fmt: skip
case("prequant-float-and-packed", "model", "a GPTQ layer with a float .weight as well", C, 3,
     QP, "both")  # fmt: skip
case("prequant-missing-qzeros", "model", "a GPTQ layer without qzeros", C, 3,
     QP + ".qzeros", "missing")  # fmt: skip
case("prequant-scales-shape", "model", "GPTQ scales of the wrong shape", C, 3,
     QP + ".scales", "expected [2, 160]")  # fmt: skip
case("prequant-qweight-shape", "model", "GPTQ qweight of the wrong shape for config.json", C,
     3, QP, "[160, 64]")  # fmt: skip
case("prequant-scale-negative", "model", "a negative GPTQ scale", C, 3, QP + ".scales", "-1.0")
case("prequant-2bit", "model", "2-bit GPTQ (no ROM format)", C, 3, ".weight",
     "2-bit codes have no ROM format", "compile the float model")  # fmt: skip
case("prequant-group-16", "model", "GPTQ group size 16 (not a multiple of 32)", C, 3,
     ".weight", "group size 16", "compile the float model")  # fmt: skip
case("prequant-desc-act", "model",
     "GPTQ desc_act with a g_idx of uneven groups (16 and 48 columns; issue 21)", C, 3,
     QP + ".weight", "g_idx", "16..48", "compile the float model")  # fmt: skip
case("prequant-scales-span", "model", "a row of GPTQ scales spanning 2^-24..2^15", C, 3,
     QP + ".weight", "row 0", "compile the float model")  # fmt: skip
case("prequant-plan-only", "model",
     "`compile --plan-only` of a pre-quantized checkpoint's config.json without its weights",
     ["compile", "{d}/m/config.json", "-o", "{d}/out", "--plan-only"], 3, "--plan-only",
     "needs its weights")  # fmt: skip
# MXFP4 checkpoints (issue 21): fused expert tensors *_blocks + *_scales (the gpt-oss layout),
# packed by tests/prequant_pack.py from the mixtral preset; refused naming the tensor (exit 3),
# or the mxfp4 ROM format's span of 19 binades (exit 4, naming tensor, row and block)
MX = "model.layers.0.block_sparse_moe.experts."
case("prequant-mxfp4-scale-nan", "model", "an MXFP4 E8M0 scale 0xFF (NaN)", C, 3,
     MX + "down_proj_scales", "0xFF", "[3, 5, 1]")  # fmt: skip
case("prequant-mxfp4-dtype", "model", "MXFP4 scales stored as I16, not U8", C, 3,
     MX + "gate_up_proj_scales", "must be U8")  # fmt: skip
case("prequant-mxfp4-shape", "model", "MXFP4 blocks of the wrong shape for config.json", C, 3,
     MX + "down_proj_blocks", "expected [4, 64, 3, 16]")  # fmt: skip
case("prequant-mxfp4-no-scales", "model", "MXFP4 *_blocks without its *_scales", C, 3,
     MX + "gate_up_proj_scales", "missing")  # fmt: skip
case("prequant-mxfp4-layout", "model", "an attention matrix stored as MXFP4 *_blocks (only "
     "fused experts are)", C, 3, "o_proj_blocks", "only as fused expert weights")  # fmt: skip
case("prequant-mxfp4-bias", "model", "an expert bias (gpt-oss has them; maskc's experts do not)",
     C, 3, MX + "down_proj_bias", "expert biases are not supported")  # fmt: skip
case("prequant-mxfp4-span", "model", "an MXFP4 row whose blocks span 20 binades", C, 4,
     MX + "1.w2.weight", "row 4 block 1", "19 binades")  # fmt: skip

# -- writing the inputs ---------------------------------------------------------------------------


def _header(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    (n,) = struct.unpack_from("<Q", raw)
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def _write_raw(path: Path, header_text: str, data: bytes) -> None:
    h = header_text.encode()
    h += b" " * (-len(h) % 8)
    path.write_bytes(struct.pack("<Q", len(h)) + h + data)


def _edit_header(path: Path, fn) -> None:
    head, data = _header(path)
    fn(head)
    _write_raw(path, json.dumps(head), data)


def _tensors(path: Path) -> dict[str, np.ndarray]:
    from maskc.safetensors_io import SafetensorsFile

    f = SafetensorsFile(path)
    return {k: f.read(k) for k in f.tensors}


def _save(path: Path, tensors: dict) -> None:
    from maskc.safetensors_io import write_safetensors

    write_safetensors(path, tensors, {"format": "pt"})


def _flip(path: Path, offset: int) -> None:
    b = bytearray(path.read_bytes())
    b[offset] ^= 0xFF
    path.write_bytes(bytes(b))


def _rehash(build: Path) -> None:
    """Re-seal ``build``'s manifest after an edit: every file's sha256 and size recomputed, the
    other fields kept (what a careful forger does)."""
    p = build / "manifest.json"
    m = json.loads(p.read_text())
    for rel in m["files"]:
        data = (build / rel).read_bytes()
        m["files"][rel] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    p.write_text(json.dumps(m, indent=2, sort_keys=True) + "\n")


def _edit_param(build: Path, name: str, fn) -> None:
    """Rewrite one array of the build's params.safetensors through ``fn``; re-hash."""
    from maskc.safetensors_io import SafetensorsFile, write_safetensors

    p = build / "netlist" / "params.safetensors"
    f = SafetensorsFile(p)
    t = {k: np.array(f.read_raw(k)) for k in f.tensors}
    t[name] = fn(t[name])
    write_safetensors(p, t, {"maskc": "netlist parameters"})
    _rehash(build)


def _add_param(build: Path, name: str, value: np.ndarray) -> None:
    """Add one array to the build's params.safetensors (the caller re-hashes)."""
    from maskc.safetensors_io import SafetensorsFile, write_safetensors

    p = build / "netlist" / "params.safetensors"
    f = SafetensorsFile(p)
    t = {k: np.array(f.read_raw(k)) for k in f.tensors}
    t[name] = value
    write_safetensors(p, t, {"maskc": "netlist parameters"})


TEMPLATES = {  # chat templates of the model-template-* and prompt-template-* cases
    "div0": "{{ messages|length // 0 }}",
    "recursion": "{% macro f(x) %}{{ f(x) }}{% endmacro %}{{ f(1) }}",
    "str-int": "{{ messages[0]['content'] + 1 }}",
    "power": "{{ 2 ** 99999999 }}",
    "loops": "{% for i in range(99999) %}{% for j in range(99999) %}x{% endfor %}{% endfor %}",
    "output": "{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}",
}


def _reseal(b: Path) -> None:
    """A build edited on purpose, its hashes updated: what a hostile build looks like once
    the hash check passes (netlist.json's tokenizer hash, then manifest.json)."""
    nj = b / "netlist" / "netlist.json"
    doc = json.loads(nj.read_text())
    tok = (b / "netlist" / "tokenizer.json").read_bytes()
    doc["tokenizer"]["sha256"] = hashlib.sha256(tok).hexdigest()
    nj.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    _rehash(b)


def _edit_netlist(b: Path, name: str) -> None:
    """One field of ``b``'s netlist.json changed, and the manifest's hash of it updated."""
    p = b / "netlist" / "netlist.json"
    doc = json.loads(p.read_text())
    arch, ops = doc["architecture"], doc["ops"]
    if name == "build-netlist-layers-huge":
        arch["num_layers"] = 2**62
    elif name == "build-netlist-heads-0":
        arch["num_heads"] = 0
    elif name == "build-netlist-heads-8":
        arch["num_heads"] = 8
    elif name == "build-netlist-numerics":
        doc["numerics"]["log2e_q16"] += 1
    elif name == "build-netlist-gamma-frac":
        ops[1]["gamma_frac"] += 1
    elif name == "build-netlist-op-no-matrix":
        ops[2]["matrix"] = "model.layers.0.self_attn.qq_proj.weight"
    elif name == "build-netlist-op-order":
        ops[2], ops[3] = ops[3], ops[2]
    elif name.startswith("build-netlist-input-perm-"):
        q = "model.layers.0.self_attn.q_proj.weight"
        doc["matrices"][q]["input_perm"] = f"{q}.input_perm"
        doc["version"] = 5 if name.endswith("-v5") else 6
        perm = np.arange(64, dtype=np.int32)[::-1].copy()
        if name.endswith("-dup"):
            perm[1] = perm[0]
        elif name.endswith("-dtype"):
            perm = perm.astype(np.int64)
        elif name.endswith("-shape"):
            perm = perm[:32].copy()
        _add_param(b, f"{q}.input_perm", perm)
    elif name.startswith("build-netlist-format-"):
        fmt = doc["matrices"]["model.layers.0.self_attn.q_proj.weight"]["format"]
        if name == "build-netlist-format-mxfp4":
            fmt.update(bits=4, group_size=32, scale_bits=0, zero_bits=0, level_bits=5,
                       scale_shift_bits=8, zero_shift_bits=0, kind="mxfp4")  # fmt: skip
        else:
            fmt["kind"] = "fp3" if name == "build-netlist-format-kind" else ["int"]
    elif name == "build-moe-expert-swapped":
        doc["matrices"]["model.layers.0.mlp.experts.0.gate_proj.weight"]["expert"] = 1
    elif name == "build-moe-expert-dies-added":  # experts spread over dies, claimed
        n = arch["moe"]["num_experts"]
        doc["placement"]["expert_dies"] = [[0] * n for _ in range(arch["num_layers"])]
    elif name.startswith("build-moe-"):
        kind = {"build-moe-head-norm-eps": "head_norm", "build-moe-route-top-k": "route"}
        op = next(o for o in ops if o["op"] == kind.get(name, "experts"))
        if name == "build-moe-head-norm-eps":
            op["eps_d"] += 1
        elif name == "build-moe-route-top-k":
            op["top_k"] += 1
        elif name == "build-moe-experts-pattern":
            op["gate"] = op["gate"].replace("{e}", "0")
        else:
            op["experts"] += 1
    p.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    _rehash(b)


def _make(name: str, d: Path, model: Path, build: Path) -> None:
    w = d / "m" / "model.safetensors"
    up = "model.layers.0.mlp.up_proj.weight"

    def model_copy():
        shutil.copytree(model, d / "m")

    def cfg(fn):
        p = d / "m" / "config.json"
        c = json.loads(p.read_text())
        fn(c)
        p.write_text(json.dumps(c))

    def build_copy(dst="b"):
        shutil.copytree(build, d / dst)

    def adapter(**kw):
        from maskc.ingest import load_model
        from maskc.testmodels import write_lora_adapter

        return write_lora_adapter(d / "ad", load_model(model).arch, rank=2, seed=0, **kw)

    def edit_cfg(path, **kv):
        c = json.loads(path.read_text())
        c.update(kv)
        path.write_text(json.dumps(c))

    kind = name.split("-", 1)[0]
    if kind == "prequant":
        _prequant(name, d, model)
        return
    needs_model = kind in ("model", "quant", "fabric", "path") or name == "prompt-calib-not-utf8"
    if needs_model and name != "model-missing":
        model_copy()
    needs_build = kind in ("build", "adapter", "prompt") and name != "prompt-calib-not-utf8"
    if needs_build and name != "build-missing":
        build_copy()

    if name == "model-no-config":
        (d / "m" / "config.json").unlink()
    elif name == "model-config-not-json":
        (d / "m" / "config.json").write_text("{hidden_size: 64,")
    elif name == "model-config-no-hidden":
        cfg(lambda c: c.pop("hidden_size"))
    elif name == "model-arch-gpt2":
        cfg(lambda c: c.update(architectures=["GPT2LMHeadModel"], model_type="gpt2"))
    elif name == "model-truncated":
        w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    elif name == "model-header-absurd":
        w.write_bytes(struct.pack("<Q", 1 << 60) + w.read_bytes()[8:])
    elif name == "model-header-not-json":
        _write_raw(w, "\x00not json at all", _header(w)[1])
    elif name == "model-config-long-int":
        p = d / "m" / "config.json"
        p.write_text(p.read_text().replace('"hidden_size": 64', f'"hidden_size": {LONG}', 1))
    elif name == "model-config-deep":
        (d / "m" / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    elif name == "model-header-long-int":
        head, data = _header(w)
        text = json.dumps(head)
        text = text.replace('"data_offsets": [0,', f'"data_offsets": [{LONG},', 1)
        _write_raw(w, text, data)
    elif name == "model-duplicate-tensor":
        head, data = _header(w)
        text = json.dumps(head)
        dup = json.dumps({up: head[up]})[1:-1]
        _write_raw(w, text[:-1] + ", " + dup + "}", data)
    elif name == "model-huge-shape":
        _edit_header(w, lambda h: h[up].update(shape=[1 << 40, 1 << 40]))
    elif name == "model-zero-size":
        t = _tensors(w)
        t[up] = np.zeros((0, t[up].shape[1]), t[up].dtype)
        _save(w, t)
    elif name in ("model-nan", "model-inspect-nan"):
        t = _tensors(w)
        k = "model.layers.1.self_attn.k_proj.weight"
        t[k] = t[k].copy()
        t[k][0, 3] = np.nan
        _save(w, t)
    elif name in ("model-weight-3e38", "model-weight-minus-3e38", "model-inspect-1e30"):
        t = _tensors(w)
        t[up] = t[up].copy()
        t[up][7, 9] = {"model-weight-3e38": 3e38, "model-inspect-1e30": 1e30}.get(name, -3e38)
        _save(w, t)
    elif name in ("model-norm-1e30", "model-embed-1e30"):
        t = _tensors(w)
        k = (
            "model.embed_tokens.weight"
            if "embed" in name
            else "model.layers.1.post_attention_layernorm.weight"
        )
        t[k] = t[k].copy()
        t[k].reshape(-1)[5] = 1e30
        _save(w, t)
    elif name.startswith("model-rope-theta-") and name != "model-rope-theta-long":
        theta = {"1e308": 1e308, "0": 0.0, "negative": -10000.0}[name.split("-")[-1]]
        cfg(lambda c: c.update(rope_theta=theta))
    elif name == "model-rope-theta-long":
        p = d / "m" / "config.json"
        p.write_text(p.read_text().replace('"rope_theta": 10000.0', f'"rope_theta": {"9" * 400}'))
    elif name in ("model-rope-factor-1e-300", "model-rope-low-freq-0"):
        rs = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
              "original_max_position_embeddings": 128}  # fmt: skip
        rs.update(factor=1e-300) if "factor" in name else rs.update(low_freq_factor=0.0)
        cfg(lambda c: c.update(rope_scaling=rs))
    elif name in ("model-eps-1e-300", "model-eps-1e300"):
        cfg(lambda c: c.update(rms_norm_eps=float(name.split("-", 2)[2])))
    elif name == "model-partial-rotary":
        cfg(lambda c: c.update(partial_rotary_factor=0.5))
    elif name == "model-moe-calib-overflow":
        from maskc.testmodels import generate

        generate(d / "m", "qwen3-moe", 0, overwrite=True)
        t = _tensors(w)  # expert 0's gate/up at +-2^15 (in range): a mean square over 2^64
        rng = np.random.default_rng(0)
        for k in ("gate_proj", "up_proj"):
            n = f"model.layers.0.mlp.experts.0.{k}.weight"
            t[n] = (np.where(rng.random(t[n].shape) < 0.5, -1, 1) * 2.0**15).astype(t[n].dtype)
        _save(w, t)
    elif name.startswith("model-moe-"):
        arch, kv = "Qwen3MoeForCausalLM", {"num_experts": 8, "num_experts_per_tok": 2}
        kv.update(
            {
                "model-moe-experts-0": {"num_experts": 0},
                "model-moe-topk-over": {"num_experts_per_tok": 9},
                "model-moe-experts-absurd": {"num_experts": 1 << 24},
                "model-moe-expert-mlps-absurd": {"num_experts": 1000, "num_hidden_layers": 1000},
                "model-moe-experts-disagree": {"num_local_experts": 4},
                "model-moe-sparse-step": {"decoder_sparse_step": 2},
                "model-moe-mlp-only-layers": {"mlp_only_layers": [0]},
                "model-moe-mlp-only-not-list": {"mlp_only_layers": "all"},
                "model-moe-intermediate-0": {"moe_intermediate_size": 0},
                "model-moe-norm-topk-string": {"norm_topk_prob": "yes"},
                "model-moe-shared-0": {"shared_expert_intermediate_size": 0},
                "model-moe-qwen3-bias": {"attention_bias": True},
            }.get(name, {})
        )
        if name == "model-moe-shared-0":
            arch = "Qwen2MoeForCausalLM"
        elif name == "model-moe-weights-missing-expert":
            arch, kv = "MixtralForCausalLM", {"num_local_experts": 2}
        types = {"Qwen3MoeForCausalLM": "qwen3_moe", "Qwen2MoeForCausalLM": "qwen2_moe"}
        kv.update(architectures=[arch], model_type=types.get(arch, "mixtral"))
        cfg(lambda c: c.update(kv))
    elif name == "model-int-dtype":
        t = _tensors(w)
        t[up] = t[up].astype(np.int64)
        _save(w, t)
    elif name == "model-extra-tensor":
        t = _tensors(w)
        t["model.layers.0.mlp.extra.weight"] = np.ones((4, 4), np.float32)
        _save(w, t)
    elif name == "model-symlink-loop":
        shutil.rmtree(d / "m")
        os.symlink(d / "m", d / "m")
    elif name in ("model-index-missing-shard", "model-index-lies"):
        t = _tensors(w)
        w.unlink()
        names = sorted(t)
        half = len(names) // 2
        s1, s2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
        _save(d / "m" / s1, {k: t[k] for k in names[:half]})
        wmap = {k: s1 if i < half else s2 for i, k in enumerate(names)}
        if name == "model-index-lies":
            _save(d / "m" / s2, {k: t[k] for k in names[half:]})
            wmap["model.norm.weight"] = s1 if wmap["model.norm.weight"] == s2 else s2
        (d / "m" / "model.safetensors.index.json").write_text(json.dumps({"weight_map": wmap}))
    elif name == "model-fifo":
        w.unlink()
        os.mkfifo(w)
    elif name == "model-no-tokenizer-text-calib":
        (d / "m" / "tokenizer.json").unlink()
    elif name == "model-tokenizer-folder":
        (d / "m" / "tokenizer.json").unlink()
        (d / "m" / "tokenizer.json").mkdir()
    elif name == "model-tokenizer-fifo":
        (d / "m" / "tokenizer.json").unlink()
        os.mkfifo(d / "m" / "tokenizer.json")
    elif name == "model-tokenizer-huge":
        with open(d / "m" / "tokenizer.json", "r+b") as f:
            f.truncate(300 << 20)  # sparse: no disk used
    elif name.startswith("model-layers-absurd") or name == "path-output-new-parents":
        cfg(lambda c: c.update(num_hidden_layers=1 << 24))
    elif name == "quant-bad-regex":
        (d / "quant.toml").write_text('[[rule]]\nmatch = "mlp\\\\.(up"\nbits = 3\n')
    elif name == "quant-unknown-key":
        (d / "quant.toml").write_text('[[rule]]\nmatch = "up_proj"\ncolour = "red"\n')
    elif name == "quant-bits-7":
        (d / "quant.toml").write_text('[[rule]]\nmatch = "up_proj"\nbits = 7\n')
    elif name == "quant-format-bad":
        (d / "quant.toml").write_text('[defaults]\nformat = "fp8"\n')
    elif name == "quant-format-bits":
        (d / "quant.toml").write_text('[[rule]]\nmatch = ".*up_proj"\nformat = "nvfp4"\nbits = 3\n')
    elif name == "quant-format-embed":
        (d / "quant.toml").write_text(
            '[[rule]]\nmatch = "model.embed_tokens|lm_head"\nformat = "mxfp4"\n'
        )
    elif name == "quant-format-mx-span":
        t = _tensors(w)
        t[up] = t[up].copy()
        t[up][3, :32] = 1.0  # block 0: E = 125; block 1: E = 98
        t[up][3, 32:64] = 1e-8
        _save(w, t)
    elif name == "quant-not-toml":
        (d / "quant.toml").write_text("[[rule]\nmatch = \n")
    elif name == "quant-long-int":
        (d / "quant.toml").write_text(f'[[rule]]\nmatch = "up_proj"\nbits = {LONG}\n')
    elif name == "quant-deep":
        (d / "quant.toml").write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    elif kind == "fabric" and name != "fabric-unknown-name":
        from maskc.fabric import load_fabric

        text = load_fabric("mini").to_toml()
        if name == "fabric-not-toml":
            text = text.replace("[die]", "[die", 1)
        elif name == "fabric-long-int":
            text = text.replace("[die]\n", f"[die]\nsram_bytes_x = {LONG}\n", 1)
        elif name == "fabric-unknown-key":
            text = text.replace("[die]\n", "[die]\nwarp_drive = 1\n", 1)
        elif name == "fabric-negative-sram":
            text = (
                "\n".join(
                    "sram_bytes = -1" if ln.startswith("sram_bytes") else ln
                    for ln in text.splitlines()
                )
                + "\n"
            )
        elif name.startswith("fabric-card-"):
            card = {
                "dies_per_card": "2",
                "static_w": "10.0",
                "die_link_gb_per_s": "100.0",
                "die_link_latency_ns": "50.0",
                "die_link_pj_per_bit": "1.0",
                "card_link_gb_per_s": "10.0",
                "card_link_latency_ns": "1000.0",
                "card_link_pj_per_bit": "4.0",
            }
            edit = {
                "fabric-card-zero-dies": ("dies_per_card", "0"),
                "fabric-card-no-bandwidth": ("card_link_gb_per_s", "0"),
                "fabric-card-negative-latency": ("die_link_latency_ns", "-5"),
                "fabric-card-unknown-key": ("lanes", "4"),
                "fabric-card-missing-key": ("static_w", None),
            }.get(name)
            if edit:
                card[edit[0]] = edit[1]
            body = "".join(f"{k} = {v}\n" for k, v in card.items() if v is not None)
            if name == "fabric-card-not-table":
                text = "card = 4\n" + text
            else:
                text += f"\n[card]\n{body}"
        elif name == "fabric-no-link":
            text = text.replace("link_gb_per_s = ", "link_gb_per_s = 0.0 #", 1)
        elif name == "fabric-too-small":
            lines = []
            for ln in text.splitlines():
                if ln.startswith(("tile_columns", "tile_rows")):
                    ln = ln.split("=")[0] + "= 2"
                lines.append(ln)
            text = "\n".join(lines) + "\n"
        (d / "fab.toml").write_text(text)
    elif name == "build-netlist-truncated":
        p = d / "b" / "netlist" / "netlist.json"
        p.write_bytes(p.read_bytes()[:100])
    elif name == "build-params-altered":
        _flip(d / "b" / "netlist" / "params.safetensors", 200)
    elif name == "build-tiles-deleted":
        next(iter(sorted((d / "b" / "netlist" / "tiles").iterdir()))).unlink()
    elif name == "build-wrong-version":
        edit_cfg(d / "b" / "manifest.json", version=99)
    elif name == "build-manifest-long-int":
        p = d / "b" / "manifest.json"
        p.write_text(p.read_text().replace('"version": 1', f'"version": {LONG}', 1))
    elif name == "build-verify-layer-altered":
        p = next(iter(sorted((d / "b" / "layers").glob("via.*"))))
        _flip(p, p.stat().st_size // 2)
    elif name == "build-inspect-altered":
        p = next(iter(sorted((d / "b" / "quant").glob("*.safetensors"))))
        _flip(p, p.stat().st_size - 1)
    elif name == "build-diff-altered":
        build_copy("b2")
        p = d / "b2" / "netlist" / "netlist.json"
        p.write_text(p.read_text().replace('"version"', '"version" ', 1))
    elif name == "build-tile-hashes-forged":
        p = d / "b" / "manifest.json"
        m = json.loads(p.read_text())
        first, second = sorted(m["tiles"])[:2]
        m["tiles"][first] = m["tiles"][second]
        p.write_text(json.dumps(m, indent=2, sort_keys=True) + "\n")
    elif name == "build-stages-forged":
        edit_cfg(d / "b" / "manifest.json", stages=["ingest", "layout"])
    elif name in ("build-params-gamma-rehashed", "build-params-gamma-emulate"):
        _edit_param(d / "b", "model.layers.0.input_layernorm.weight", lambda g: g + 1)
    elif name == "build-boot-image-rehashed":
        _flip(d / "b" / "boot" / "sram.d0.bin", 130)  # inside layer 0's first gamma
        _rehash(d / "b")
    elif name == "build-lut-rehashed":

        def nudge(t):
            t[5] += 1
            return t

        _edit_param(d / "b", "lut.exp2", nudge)
    elif name.startswith("build-netlist-") and name != "build-netlist-truncated":
        _edit_netlist(d / "b", name)
    elif name.startswith("build-moe-"):
        shutil.rmtree(d / "b")
        shutil.copytree(_moe_build(build.parent), d / "b")
        _edit_netlist(d / "b", name)
    elif name == "adapter-rank-0":
        edit_cfg(adapter() / "adapter_config.json", r=0)
    elif name == "adapter-long-int":
        p = adapter() / "adapter_config.json"
        p.write_text(p.read_text().replace('"r": 2', f'"r": {LONG}', 1))
    elif name == "adapter-nan":
        p = adapter() / "adapter_model.safetensors"
        t = {k: v.astype(np.float32) for k, v in _tensors(p).items()}
        k = sorted(x for x in t if x.endswith("lora_B.weight"))[0]
        t[k][0, 0] = np.nan
        _save(p, t)
    elif name == "adapter-dora":
        edit_cfg(adapter() / "adapter_config.json", use_dora=True)
    elif name == "adapter-no-weights":
        (adapter() / "adapter_model.safetensors").unlink()
    elif name == "adapter-wrong-base":
        p = adapter() / "adapter_model.safetensors"
        t = _tensors(p)
        _save(
            p,
            {
                k: np.zeros((v.shape[0], v.shape[1] + 8) if "lora_A" in k else v.shape, np.float32)
                for k, v in t.items()
            },
        )
    elif name == "adapter-unknown-module":
        edit_cfg(adapter() / "adapter_config.json", target_modules=["q_proj", "lm_head"])
    elif name in ("prompt-ppl-not-utf8", "prompt-calib-not-utf8"):
        (d / "text.txt").write_bytes(b"The quick brown fox \xff\xfe jumps" * 20)
    elif name == "prompt-ppl-empty":
        (d / "text.txt").write_bytes(b"")
    elif name == "prompt-ppl-stride":
        (d / "text.txt").write_text("a short text to score, " * 20, encoding="utf-8")
    elif name.startswith(("model-tok-", "prompt-tok-")):
        p = d / ("m/tokenizer.json" if kind == "model" else "b/netlist/tokenizer.json")
        doc = json.loads(p.read_text())
        if name.endswith("-stride"):
            doc["truncation"] = {
                "direction": "Right", "max_length": 8, "strategy": "LongestFirst", "stride": 8
            }  # fmt: skip
        elif name == "model-tok-unk":
            words = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "hello", "world"]
            doc["model"] = {
                "type": "WordLevel", "vocab": {w: i for i, w in enumerate(words)},
                "unk_token": "<unk>",
            }  # fmt: skip
            doc["pre_tokenizer"] = {"type": "Whitespace"}
        elif name == "model-tok-type":
            doc["model"]["type"] = "SentencePieceBPE"
        elif name == "prompt-tok-regex":
            doc["pre_tokenizer"] = {
                "type": "Split", "pattern": {"Regex": "(a+)+$"}, "behavior": "Isolated",
                "invert": False,
            }  # fmt: skip
        p.write_text(json.dumps(doc))
        if kind == "prompt":
            _reseal(d / "b")
    elif name.startswith(("model-template-", "prompt-template-")):
        template = TEMPLATES[name.split("-", 2)[2]]
        if kind == "model":
            p = d / "m" / "tokenizer_config.json"
            edit_cfg(p, chat_template=template)
        else:
            p = d / "b" / "netlist" / "netlist.json"
            doc = json.loads(p.read_text())
            doc["tokenizer"]["chat_template"] = template
            p.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
            edit_cfg(d / "b" / "tokenizer_config.json", chat_template=template)  # its source
            _reseal(d / "b")
    elif name == "path-output-not-empty":
        (d / "out").mkdir()
        (d / "out" / "keep.txt").write_text("mine")
    elif name in ("path-output-under-a-file", "path-output-is-file"):
        (d / "file").write_text("a file")
    elif name == "path-testmodel-not-empty":
        (d / "out").mkdir()
        (d / "out" / "keep.txt").write_text("mine")


def _prequant(name: str, d: Path, model: Path) -> None:
    """A pre-quantized checkpoint in ``d/m`` (packed by tests/prequant_pack.py), broken as
    case ``name`` says."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from prequant_pack import quantize_folder

    from maskc.safetensors_io import SafetensorsFile, write_safetensors

    if name.startswith("prequant-mxfp4-"):
        _prequant_mxfp4(name, d)
        return
    m, qp = d / "m", "model.layers.0.mlp.up_proj"
    kw = {"2bit": {"bits": 2}, "group-16": {"group": 16}}.get(name.split("-", 1)[1], {})
    quantize_folder(model, m, "gptq", **kw)
    st = SafetensorsFile(m / "model.safetensors")
    t = {n: st.read_raw(n) for n in sorted(st.tensors)}
    del st
    c = json.loads((m / "config.json").read_text())
    qc = c["quantization_config"]
    if name == "prequant-method-unknown":
        c["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    elif name == "prequant-gptq-no-bits":
        qc.pop("bits")
    elif name == "prequant-awq-gemv":
        c["quantization_config"] = {"quant_method": "awq", "bits": 4, "version": "gemv"}
    elif name == "prequant-no-qweight":
        shutil.rmtree(m)
        shutil.copytree(model, m)
        c = json.loads((m / "config.json").read_text()) | {"quantization_config": qc}
        t = None
    elif name == "prequant-float-and-packed":
        t[qp + ".weight"] = np.zeros((160, 64), dtype=np.float32)
    elif name == "prequant-missing-qzeros":
        t.pop(qp + ".qzeros")
    elif name == "prequant-scales-shape":
        t[qp + ".scales"] = t[qp + ".scales"][:1]
    elif name == "prequant-qweight-shape":
        t[qp + ".qweight"] = t[qp + ".qweight"][:4]
    elif name == "prequant-scale-negative":
        t[qp + ".scales"][0, 0] = -1.0
    elif name == "prequant-desc-act":
        qc["desc_act"] = True
        t[qp + ".g_idx"] = (np.arange(64) >= 16).astype(np.int32)  # groups of 16 and 48
    elif name == "prequant-scales-span":
        t[qp + ".scales"][0, 0] = np.float16(2.0**-24)
        t[qp + ".scales"][1, 0] = np.float16(2.0**15)
    if t is not None:
        write_safetensors(m / "model.safetensors", t)
    (m / "config.json").write_text(json.dumps(c))


def _prequant_mxfp4(name: str, d: Path) -> None:
    """An MXFP4 checkpoint of the mixtral preset in ``d/m``, broken as case ``name`` says."""
    from prequant_pack import mxfp4_folder

    from maskc.safetensors_io import SafetensorsFile, write_safetensors
    from maskc.testmodels import generate as make_model

    src, m, p = d / "src", d / "m", "model.layers.0.block_sparse_moe.experts."
    mxfp4_folder(make_model(src, "mixtral", 0).path, m)
    shutil.rmtree(src)
    st = SafetensorsFile(m / "model.safetensors")
    t = {n: st.read_raw(n) for n in sorted(st.tensors)}
    del st
    if name == "prequant-mxfp4-scale-nan":
        t[p + "down_proj_scales"][3, 5, 1] = 0xFF
    elif name == "prequant-mxfp4-dtype":
        t[p + "gate_up_proj_scales"] = t[p + "gate_up_proj_scales"].astype(np.int16)
    elif name == "prequant-mxfp4-shape":
        t[p + "down_proj_blocks"] = t[p + "down_proj_blocks"][:, :, :2]
    elif name == "prequant-mxfp4-no-scales":
        del t[p + "gate_up_proj_scales"]
    elif name == "prequant-mxfp4-layout":
        t["model.layers.0.self_attn.o_proj_blocks"] = np.zeros((64, 2, 16), np.uint8)
        t["model.layers.0.self_attn.o_proj_scales"] = np.zeros((64, 2), np.uint8)
    elif name == "prequant-mxfp4-bias":
        t[p + "down_proj_bias"] = np.zeros((4, 64), np.float32)
    elif name == "prequant-mxfp4-span":
        t[p + "down_proj_blocks"][1, 4, :2] = 0x11  # nonzero codes in blocks 0 and 1 of row 4
        t[p + "down_proj_scales"][1, 4, :2] = (130, 110)
    write_safetensors(m / "model.safetensors", t)


def _moe_build(base: Path) -> Path:
    """A build of the qwen3-moe preset (head norms, route, experts) under ``base``, made
    once."""
    from maskc.pipeline import CompileOptions, compile_model
    from maskc.testmodels import generate as make_model

    build = base / "moe-build"
    if not build.exists():
        model = make_model(base / "moe-model", "qwen3-moe", 0).path
        compile_model(model, build, CompileOptions(verify=False))
    return build


def generate(out: Path, cases: list[Case] | None = None) -> list[tuple[Case, Path]]:
    """Write every case's inputs under ``out/<case>/`` (a tiny model and its build are made
    first, under ``out/_base``); return ``(case, folder)`` pairs."""
    from maskc.pipeline import CompileOptions, compile_model
    from maskc.testmodels import generate as make_model

    out = Path(out)
    base = out / "_base"
    model = make_model(base / "model", "tiny", 0).path
    build = base / "build"
    compile_model(model, build, CompileOptions(verify=False))
    done = []
    for c in cases or CASES:
        d = out / c.name
        d.mkdir(parents=True)
        _make(c.name, d, model, build)
        done.append((c, d))
    return done


def table() -> str:
    rows = ["| case | input | command | exit |", "|---|---|---|---|"]
    for c in CASES:
        rows.append(f"| `{c.name}` | {c.what} | `maskc {c.args[0]}` | {c.code} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    if sys.argv[1:] == ["--table"]:
        sys.stdout.write(table())
    elif len(sys.argv) == 2:
        for c, d in generate(Path(sys.argv[1])):
            print(c.name, c.code, " ".join(a.replace("{d}", str(d)) for a in c.args))
    else:
        sys.exit(__doc__)
