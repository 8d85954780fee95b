"""Stage 4, netlist: quantized matrices + placement -> the bit-exact functional netlist.

The format is docs/netlist.md; the arithmetic it implies is docs/numerics.md (contract
version 1). :func:`write_netlist` streams one decoder layer's tiles at a time;
:func:`load_netlist` validates a netlist before anything trusts it; :func:`dump_text` is the
canonical text form that tests compare.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from maskc.errors import InputError
from maskc.fabric import Fabric
from maskc.ir import ModelArch
from maskc.netlist.constants import (
    CONTRACT,
    LOG2E_Q16,
    SIGNAL_FRAC,
    compile_luts,
    gamma_fixed,
    inv_sqrt_hd_q16,
    rope_phase_steps,
)
from maskc.quantize.formats import QuantTensor
from maskc.quantize.store import format_from_json, format_to_json, load_quant
from maskc.safetensors_io import SafetensorsFile, write_safetensors

FORMAT = "maskc-netlist"
VERSION = 1
DIR = "netlist"
TILE_FIELDS = ("codes", "scale_m", "scale_s", "zero_m", "zero_s", "scale_e", "zero_e")
#: Activations are read in groups of this many elements; weight groups must be multiples.
ACT_GROUP = 32
#: The largest bound of ``A * m_a`` the int64 datapath accepts (docs/numerics.md).
MAX_PRODUCT_BITS = 62


def tiles_file(layer: int | None) -> str:
    return "tiles/global.safetensors" if layer is None else f"tiles/layer-{layer:03d}.safetensors"


def matrix_bounds(q: QuantTensor) -> tuple[int, int]:
    """``(s_bound, acc_bits)``: the largest possible |group sum S| and the bits (with sign) of
    the worst-case |A| of docs/numerics.md, from the stored fields (exact integers)."""
    g = q.fmt.group_size
    lmax = int(np.abs(q.levels.astype(np.int64)).max())
    s_bound = 127 * g * lmax
    smax = (1 << q.fmt.scale_shift_bits) - 1
    mshift = q.scale_m.astype(np.int64) << (smax - q.scale_s.astype(np.int64))
    a_bound = int(mshift.sum(axis=1).max()) * s_bound
    return s_bound, a_bound.bit_length() + 1


def tile_arrays(q: QuantTensor, blocks: list, tile_rows: int, w: int) -> dict[str, np.ndarray]:
    """The per-tile arrays of matrix ``q`` for its placed ``blocks`` (docs/netlist.md)."""
    g = q.fmt.group_size
    n = len(blocks)
    gw = w // g
    out = {
        "pos": np.array([[b.die, b.x, b.y] for b in blocks], dtype=np.int32).reshape(n, 3),
        "block": np.array(
            [[b.row0, b.rows, b.col0, b.cols] for b in blocks], dtype=np.int32
        ).reshape(n, 4),
        "levels": q.levels,
        "codes": np.zeros((n, tile_rows, w), np.uint8),
        "scale_m": np.zeros((n, tile_rows, gw), np.uint16),
        "scale_s": np.zeros((n, tile_rows, gw), np.uint8),
        "scale_e": np.zeros((n, tile_rows), np.int8),
    }
    if q.zero_m is not None:
        out["zero_m"] = np.zeros((n, tile_rows, gw), np.int16)
        out["zero_s"] = np.zeros((n, tile_rows, gw), np.uint8)
        out["zero_e"] = np.zeros((n, tile_rows), np.int8)
    for t, b in enumerate(blocks):
        r0, nr, c0, nc = b.row0, b.rows, b.col0, b.cols
        ng = -(-nc // g)
        g0 = c0 // g
        out["codes"][t, :nr, : ng * g] = q.codes[r0 : r0 + nr, c0 : c0 + ng * g]
        out["scale_m"][t, :nr, :ng] = q.scale_m[r0 : r0 + nr, g0 : g0 + ng]
        out["scale_s"][t, :nr, :ng] = q.scale_s[r0 : r0 + nr, g0 : g0 + ng]
        out["scale_e"][t, :nr] = q.scale_e[r0 : r0 + nr]
        if q.zero_m is not None:
            out["zero_m"][t, :nr, :ng] = q.zero_m[r0 : r0 + nr, g0 : g0 + ng]
            out["zero_s"][t, :nr, :ng] = q.zero_s[r0 : r0 + nr, g0 : g0 + ng]
            out["zero_e"][t, :nr] = q.zero_e[r0 : r0 + nr]
    return out


def build_ops(arch, norm_fracs: dict[str, int], eps_d: int) -> list[dict]:
    """The dataflow of a Llama-family decoder, op by op (docs/netlist.md, "Ops")."""
    a = arch
    ops: list[dict] = [{"op": "embed", "matrix": "model.embed_tokens.weight", "out": "x"}]

    def norm(name: str) -> dict:
        return {
            "op": "rmsnorm",
            "in": "x",
            "out": "h8",
            "gamma": name,
            "gamma_frac": norm_fracs[name],
            "eps_d": eps_d,
        }

    for i in range(a.num_layers):
        p = f"model.layers.{i}."

        def mm(src, name, out, bias=None, p=p):
            return {
                "op": "matmul",
                "in": src,
                "out": out,
                "matrix": p + name,
                "bias": (p + bias) if bias and a.attention_bias else None,
            }

        ops += [
            {**norm(p + "input_layernorm.weight"), "layer": i},
            mm("h8", "self_attn.q_proj.weight", "q", "self_attn.q_proj.bias"),
            mm("h8", "self_attn.k_proj.weight", "k", "self_attn.k_proj.bias"),
            mm("h8", "self_attn.v_proj.weight", "v", "self_attn.v_proj.bias"),
            {"op": "rope", "in": "q", "out": "q", "heads": a.num_heads},
            {"op": "rope", "in": "k", "out": "k", "heads": a.num_kv_heads},
            {
                "op": "attention",
                "layer": i,
                "q": "q",
                "k": "k",
                "v": "v",
                "out": "att",
                "heads": a.num_heads,
                "kv_heads": a.num_kv_heads,
                "head_dim": a.head_dim,
                "window": a.sliding_window,
            },
            {"op": "quantize", "in": "att", "out": "att8"},
            mm("att8", "self_attn.o_proj.weight", "o"),
            {"op": "add", "a": "x", "b": "o", "out": "x"},
            {**norm(p + "post_attention_layernorm.weight"), "layer": i},
            mm("h8", "mlp.gate_proj.weight", "gate"),
            mm("h8", "mlp.up_proj.weight", "up"),
            {"op": "swiglu", "gate": "gate", "up": "up", "out": "m8"},
            mm("m8", "mlp.down_proj.weight", "down"),
            {"op": "add", "a": "x", "b": "down", "out": "x"},
        ]
    head = "model.embed_tokens.weight" if a.tie_word_embeddings else "lm_head.weight"
    ops += [
        norm("model.norm.weight"),
        {"op": "matmul", "in": "h8", "out": "logits", "matrix": head, "bias": None},
        {"op": "logits", "in": "logits"},
    ]
    return ops


def sram_allocation(placement, arch, fabric) -> dict:
    """Per die: the KV-cache region of its layers, sized for the build's context, and the
    adapter region (the rest) with the LoRA ranks it holds (docs/sram.md). ``max_context`` is
    what the SRAM left after ``reserved_for_adapters`` could hold."""
    from maskc.place import kv_bytes_per_token

    per_layer = kv_bytes_per_token(arch, 1)
    dies = []
    for d in placement.report["per_die"]:
        first, last = d["layers"]
        n = last - first + 1
        bpt = d["kv_bytes_per_token"]
        ctx = placement.context
        kv_bytes = d["kv_bytes"]  # the placement report's SRAM split (place._sram_report)
        dies.append(
            {
                "die": d["die"],
                "bytes": fabric.die.sram_bytes,
                "kv": {
                    "base": 0,
                    "bytes": kv_bytes,
                    "bytes_per_token": bpt,
                    "context": ctx,
                    "layers": [
                        {
                            "layer": first + k,
                            "offset": k * per_layer * ctx,
                            "bytes_per_token": per_layer,
                        }
                        for k in range(n)
                    ],
                },
                "adapters": {
                    "base": kv_bytes,
                    "bytes": d["adapter_bytes"],
                    "max_rank": d["adapter_max_rank"],
                },
            }
        )
    return {
        "context": placement.context,
        "max_context": placement.report["max_context"],
        "reserved_for_adapters": placement.report.get("sram_reserved_for_adapters", 0),
        "dies": dies,
    }


def write_netlist(
    build: Path, arch, index: dict, placement, fabric, tokenizer: dict, events=None
) -> dict:
    """Write ``build/netlist/`` from the build's quant files and ``placement``.

    ``index`` is quant/index.json's ``tensors``; ``tokenizer`` has ``path`` (or None),
    ``bos_token_id``, ``eos_token_id`` and ``chat_template``. Streams one tiles file (one layer)
    at a time. Returns a summary (tiles, bytes, weights) for the compile report."""
    root = build / DIR
    (root / "tiles").mkdir(parents=True, exist_ok=True)
    blocks_of: dict[str, list] = {}
    for b in placement.blocks:
        blocks_of.setdefault(b.tensor, []).append(b)
    opened: dict[str, SafetensorsFile] = {}

    def st(file: str) -> SafetensorsFile:
        if file not in opened:
            opened[file] = SafetensorsFile(build / file)
        return opened[file]

    by_file: dict[str, list[str]] = {}
    matrices: dict[str, dict] = {}
    params: dict[str, np.ndarray] = {}
    norm_fracs: dict[str, int] = {}
    d = arch.hidden_size
    for name, e in index.items():
        if e["kind"] == "quantized":
            if name not in blocks_of:
                raise InputError(f"{name}: quantized but not placed on the fabric")
            by_file.setdefault(tiles_file(blocks_of[name][0].layer), []).append(name)
        elif name.endswith("norm.weight"):
            gq, frac = gamma_fixed(st(e["file"]).read(name).astype(np.float64), d)
            params[name] = gq
            norm_fracs[name] = frac
        elif name.endswith(".bias"):
            b = st(e["file"]).read(name).astype(np.float64)
            params[name] = np.clip(np.rint(b * 2.0**SIGNAL_FRAC), -(2**31), 2**31 - 1).astype(
                np.int32
            )
        else:
            raise InputError(
                f"{name}: kept in float, but the chip holds only quantized matrices; remove "
                "the skip rule"
            )
    if events:
        events.start("writing netlist", sum(len(v) for v in by_file.values()))
    weights = 0
    for file in sorted(by_file):
        arrays: dict[str, np.ndarray] = {}
        for name in by_file[file]:
            e = index[name]
            q = load_quant(build / e["file"], st(e["file"]), name, e)
            bl = blocks_of[name]
            if q.fmt.group_size % ACT_GROUP:
                raise InputError(
                    f"{name}: group size {q.fmt.group_size} is not a multiple of {ACT_GROUP}: the "
                    f"chip reads activations in groups of {ACT_GROUP} (docs/numerics.md); use a "
                    "group size of 32, 64 or 128"
                )
            w = fabric.weights_per_tile_row(q.fmt.bits)
            s_bound, acc_bits = matrix_bounds(q)
            if acc_bits - 1 + 17 > MAX_PRODUCT_BITS:
                raise InputError(
                    f"{name}: its worst-case accumulator needs {acc_bits} bits, beyond the "
                    f"int64 datapath (docs/numerics.md); use fewer scale or level bits"
                )
            for k, v in tile_arrays(q, bl, fabric.tile.rows, w).items():
                arrays[f"{name}/{k}"] = v
            matrices[name] = {
                "file": file,
                "role": bl[0].role,
                "layer": bl[0].layer,
                "shape": list(q.shape),
                "format": format_to_json(q.fmt),
                "tiles": len(bl),
                "tile_shape": [fabric.tile.rows, w],
                "acc_bits": acc_bits,
                "s_bound": s_bound,
            }
            weights += q.shape[0] * q.shape[1]
            if events:
                events.advance(1, name)
        write_safetensors(root / file, arrays, {"maskc": "netlist tiles"})
        del arrays
    eps_d = round(d * arch.rms_norm_eps * 2.0**40)
    params.update(compile_luts())
    params["rope.phase_step"] = rope_phase_steps(arch)
    write_safetensors(root / "params.safetensors", params, {"maskc": "netlist parameters"})
    tok = None
    if tokenizer.get("path") is not None:
        shutil.copyfile(tokenizer["path"], root / "tokenizer.json")
        tok = {
            "file": "tokenizer.json",
            "sha256": hashlib.sha256((root / "tokenizer.json").read_bytes()).hexdigest(),
            "bos_token_id": tokenizer.get("bos_token_id"),
            "eos_token_id": tokenizer.get("eos_token_id"),
            "chat_template": tokenizer.get("chat_template"),
        }
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "numerics": {
            "contract": CONTRACT,
            "signal_bits": 32,
            "signal_frac": SIGNAL_FRAC,
            "act_bits": 8,
            "log2e_q16": LOG2E_Q16,
            "inv_sqrt_hd_q16": inv_sqrt_hd_q16(arch.head_dim),
            "luts": {k: list(v.shape) for k, v in sorted(compile_luts().items())},
        },
        "architecture": arch.to_json(),
        "fabric": fabric.to_json(),
        "placement": {
            "dies": placement.dies,
            "grid": list(placement.grid),
            "tiles_used": len(placement.blocks),
        },
        "matrices": matrices,
        "ops": build_ops(arch, norm_fracs, eps_d),
        "sram": sram_allocation(placement, arch, fabric),
        "tokenizer": tok,
    }
    (root / "netlist.json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    nbytes = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    return {
        "tiles": len(placement.blocks),
        "weights": weights,
        "bytes": nbytes,
        "matrices": len(matrices),
    }


# ---------------------------------------------------------------------------------------------
# Reading


@dataclass
class Netlist:
    """An opened, validated netlist: ``doc`` is netlist.json, arrays are read on demand;
    ``arch`` and ``fabric`` are the typed model architecture and base die it records."""

    path: Path
    doc: dict
    arch: ModelArch
    fabric: Fabric

    @property
    def matrices(self) -> dict:
        return self.doc["matrices"]

    def params(self) -> dict[str, np.ndarray]:
        f = SafetensorsFile(self.path / "params.safetensors")
        return {k: f.read_raw(k) for k in sorted(f.tensors)}

    def tile_arrays(self, name: str, keys: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
        """The arrays of matrix ``name`` (``pos``, ``block``, ``levels``, ``codes``, ...), or
        only ``keys`` of them (``("pos",)`` reads no codes)."""
        m = self.matrices[name]
        f = SafetensorsFile(self.path / m["file"])
        out = {}
        for k in keys or ("pos", "block", "levels", *TILE_FIELDS):
            key = f"{name}/{k}"
            if key in f.tensors:
                out[k] = f.read_raw(key)
        return out

    def matrix(self, name: str) -> QuantTensor:
        """Matrix ``name`` reassembled from its tiles, validated (codes, group fields, exps)."""
        m = self.matrices[name]
        t = self.tile_arrays(name)
        fmt = format_from_json(m["format"], f"{self.path}: matrix {name}")
        r, c = m["shape"]
        g = fmt.group_size
        cp = fmt.padded_cols(c)
        ng = cp // g
        where = f"{self.path}: matrix {name}"
        tr, w = m["tile_shape"]
        n = m["tiles"]
        need = {
            "pos": (n, 3),
            "block": (n, 4),
            "codes": (n, tr, w),
            "scale_m": (n, tr, w // g),
            "scale_s": (n, tr, w // g),
            "scale_e": (n, tr),
        }
        if not fmt.symmetric:
            need.update({"zero_m": (n, tr, w // g), "zero_s": (n, tr, w // g), "zero_e": (n, tr)})
        for k, shape in need.items():
            if k not in t or tuple(t[k].shape) != shape:
                raise InputError(f"{where}: tile array {k!r} missing or not shaped {list(shape)}")
        codes = np.zeros((r, cp), np.uint8)
        covered = np.zeros((r, ng), bool)
        fields = {
            k: np.zeros((r, ng), t[k].dtype)
            for k in ("scale_m", "scale_s", "zero_m", "zero_s")
            if k in t
        }
        rows_e = {k: np.zeros(r, np.int8) for k in ("scale_e", "zero_e") if k in t}
        for i, (r0, nr, c0, nc) in enumerate(t["block"].tolist()):
            if not (
                r0 >= 0
                and 1 <= nr <= tr
                and r0 + nr <= r
                and c0 >= 0
                and 1 <= nc <= w
                and c0 + nc <= c
                and c0 % g == 0
            ):
                raise InputError(f"{where}: tile {i} has an invalid block {[r0, nr, c0, nc]}")
            k = -(-nc // g)
            g0 = c0 // g
            if covered[r0 : r0 + nr, g0 : g0 + k].any():
                raise InputError(f"{where}: tile {i} overlaps another tile")
            covered[r0 : r0 + nr, g0 : g0 + k] = True
            codes[r0 : r0 + nr, c0 : c0 + k * g] = t["codes"][i, :nr, : k * g]
            for f, arr in fields.items():
                arr[r0 : r0 + nr, g0 : g0 + k] = t[f][i, :nr, :k]
            for f, arr in rows_e.items():
                if c0 == 0:
                    arr[r0 : r0 + nr] = t[f][i, :nr]
                elif not np.array_equal(arr[r0 : r0 + nr], t[f][i, :nr]):
                    raise InputError(f"{where}: tile {i} disagrees on the row exponents {f}")
        if not covered.all():
            raise InputError(f"{where}: the tiles do not cover the whole matrix")
        q = QuantTensor(
            name=name,
            shape=(r, c),
            fmt=fmt,
            codes=codes,
            levels=t["levels"],
            scale_m=fields["scale_m"],
            scale_s=fields["scale_s"],
            scale_e=rows_e["scale_e"],
            zero_m=fields.get("zero_m"),
            zero_s=fields.get("zero_s"),
            zero_e=rows_e.get("zero_e"),
        )
        q.validate()
        return q


def _check_matrix_entry(p: Path, name: str, m: object) -> None:
    """A ``matrices`` entry of netlist.json: its format, shapes and tile count well-typed."""
    where = f"{p}: matrix {name}"
    if not isinstance(m, dict):
        raise InputError(f"{where}: must be an object")
    format_from_json(m.get("format"), where)

    def positive_ints(key: str, n: int | None) -> None:
        v = m.get(key)
        v = [v] if n is None else v
        if not (
            isinstance(v, list)
            and len(v) == (n or 1)
            and all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in v)
        ):
            want = f"{n} positive integers" if n else "a positive integer"
            raise InputError(f"{where}: field {key!r} must be {want}")

    positive_ints("shape", 2)
    positive_ints("tile_shape", 2)
    positive_ints("tiles", None)


def load_netlist(build_path: Path) -> Netlist:
    """Open ``BUILD/netlist`` and validate its structure (exit 3 naming the field otherwise).

    Call after :func:`maskc.build.open_build` has checked the hashes."""
    root = Path(build_path) / DIR
    p = root / "netlist.json"
    if not p.is_file():
        raise InputError(f"{build_path}: the build has no netlist (recompile with this maskc)")
    from maskc.ingest.config import read_json_file

    doc = read_json_file(p, "netlist/netlist.json", max_bytes=1 << 30)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise InputError(f"{p}: not a maskc netlist")
    if doc.get("version") != VERSION:
        raise InputError(
            f"{p}: netlist version {doc.get('version')!r}; this maskc reads {VERSION}; recompile"
        )
    num = doc.get("numerics")
    if (
        not isinstance(num, dict)
        or num.get("contract") != CONTRACT
        or num.get("signal_frac") != SIGNAL_FRAC
    ):
        raise InputError(f"{p}: numerics contract differs from version {CONTRACT}; recompile")
    for key in ("architecture", "matrices", "ops", "sram"):
        if key not in doc:
            raise InputError(f"{p}: field {key!r} is missing")
    mats = doc["matrices"]
    if not isinstance(mats, dict) or not isinstance(doc["ops"], list):
        raise InputError(f"{p}: 'matrices' must be an object and 'ops' a list")
    for name, m in mats.items():
        _check_matrix_entry(p, name, m)
    for op in doc["ops"]:
        if not isinstance(op, dict) or "op" not in op:
            raise InputError(f"{p}: every op needs an 'op' field")
        if "matrix" in op and op["matrix"] not in mats:
            raise InputError(f"{p}: op {op['op']} names matrix {op['matrix']!r}, not in matrices")
    tok = doc.get("tokenizer")
    if tok is not None:
        tf = Path(str(tok.get("file", ""))) if isinstance(tok, dict) else Path("")
        if tf.is_absolute() or ".." in tf.parts or not (root / tf).is_file():
            raise InputError(f"{p}: tokenizer file {tf} is not in the netlist")
    for name, m in mats.items():
        mf = Path(str(m.get("file", "")))
        if mf.is_absolute() or ".." in mf.parts or not (root / mf).is_file():
            raise InputError(f"{p}: matrix {name}: file {m.get('file')!r} is not in the netlist")
    arch = ModelArch.from_json(doc["architecture"], f"{p}: architecture")
    return Netlist(root, doc, arch, Fabric.from_json(doc.get("fabric"), str(p)))


# ---------------------------------------------------------------------------------------------
# Canonical text


def _sha(arr: np.ndarray) -> str:
    a = np.ascontiguousarray(arr)
    h = hashlib.sha256(f"{a.dtype.str}{list(a.shape)}".encode())
    h.update(a.reshape(-1).view(np.uint8).data)
    return h.hexdigest()[:16]


def dump_text(nl: Netlist, tiles: bool = True) -> str:
    """The canonical text form: stable across compiles of the same inputs and options."""
    d = nl.doc
    out = [f"{FORMAT} v{d['version']}"]
    num = {k: v for k, v in d["numerics"].items() if k != "luts"}
    out.append("numerics " + " ".join(f"{k}={num[k]}" for k in sorted(num)))
    a = d["architecture"]
    out.append("architecture " + " ".join(f"{k}={json.dumps(a[k])}" for k in sorted(a)))
    f = d["fabric"]
    out.append(f"fabric {f.get('fabric', {}).get('name')} sha={_sha_json(f)}")
    pl = d["placement"]
    out.append(
        f"placement dies={pl['dies']} grid={pl['grid'][0]}x{pl['grid'][1]} tiles={pl['tiles_used']}"
    )
    for k, v in nl.params().items():
        out.append(f"param {k} {v.dtype} {list(v.shape)} sha={_sha(v)}")
    for name in sorted(nl.matrices):
        m = nl.matrices[name]
        fm = m["format"]
        t = nl.tile_arrays(name)
        out.append(
            f"matrix {name} {m['shape'][0]}x{m['shape'][1]} bits={fm['bits']} "
            f"g={fm['group_size']} sym={int(fm['zero_bits'] == 0)} tiles={m['tiles']} "
            f"acc_bits={m['acc_bits']} levels="
            + (str(t["levels"].tolist()) if len(t["levels"]) <= 16 else f"sha={_sha(t['levels'])}")
        )
        if tiles:
            for i in range(m["tiles"]):
                die, x, y = t["pos"][i].tolist()
                r0, nr, c0, nc = t["block"][i].tolist()
                h = hashlib.sha256()
                for k in TILE_FIELDS:
                    if k in t:
                        h.update(np.ascontiguousarray(t[k][i]).view(np.uint8).data)
                out.append(
                    f"  tile d{die} x{x} y{y} rows {r0}+{nr} cols {c0}+{nc} "
                    f"rom={h.hexdigest()[:16]}"
                )
    for i, op in enumerate(d["ops"]):
        rest = " ".join(f"{k}={json.dumps(op[k])}" for k in sorted(op) if k != "op")
        out.append(f"op {i} {op['op']} {rest}")
    s = d["sram"]
    out.append(f"sram context={s['context']} max_context={s['max_context']}")
    for die in s["dies"]:
        kv, ad = die["kv"], die["adapters"]
        out.append(
            f"  die {die['die']} bytes={die['bytes']} kv base={kv['base']} "
            f"bytes={kv['bytes']} per_token={kv['bytes_per_token']} "
            f"layers={[x['layer'] for x in kv['layers']]} adapters base={ad['base']} "
            f"bytes={ad['bytes']} max_rank={ad['max_rank']}"
        )
    tok = d.get("tokenizer")
    if tok:
        out.append(
            f"tokenizer sha={tok['sha256'][:16]} bos={tok['bos_token_id']} "
            f"eos={tok['eos_token_id']} chat_template="
            f"{'none' if tok['chat_template'] is None else _sha_str(tok['chat_template'])}"
        )
    else:
        out.append("tokenizer none")
    return "\n".join(out) + "\n"


def _sha_json(obj) -> str:
    return _sha_str(json.dumps(obj, sort_keys=True))


def _sha_str(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()[:16]


__all__ = ["Netlist", "dump_text", "load_netlist", "write_netlist"]
