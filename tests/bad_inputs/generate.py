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
# -- paths ---------------------------------------------------------------------------------------
case(
    "path-output-inside-input",
    "path",
    "-o inside the model folder",
    ["compile", "{d}/m", "-o", "{d}/m/out", "--no-verify"],
    3,
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
    3,
    "cannot create",
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
    p.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    mp = b / "manifest.json"
    m = json.loads(mp.read_text())
    data = p.read_bytes()
    m["files"]["netlist/netlist.json"] = {
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
    }
    mp.write_text(json.dumps(m, indent=2, sort_keys=True) + "\n")


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
    elif name == "quant-bad-regex":
        (d / "quant.toml").write_text('[[rule]]\nmatch = "mlp\\\\.(up"\nbits = 3\n')
    elif name == "quant-unknown-key":
        (d / "quant.toml").write_text('[[rule]]\nmatch = "up_proj"\ncolour = "red"\n')
    elif name == "quant-bits-7":
        (d / "quant.toml").write_text('[[rule]]\nmatch = "up_proj"\nbits = 7\n')
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
    elif name.startswith("build-netlist-") and name != "build-netlist-truncated":
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
    elif name == "path-output-not-empty":
        (d / "out").mkdir()
        (d / "out" / "keep.txt").write_text("mine")
    elif name in ("path-output-under-a-file", "path-output-is-file"):
        (d / "file").write_text("a file")
    elif name == "path-testmodel-not-empty":
        (d / "out").mkdir()
        (d / "out" / "keep.txt").write_text("mine")


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
