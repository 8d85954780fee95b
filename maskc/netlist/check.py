"""netlist.json checked as a whole (:func:`check_netlist`, called by
:func:`maskc.netlist.load_netlist` after each part parsed on its own): every field against the
others, against the fabric and against the files beside it. Whatever maskc derives when it
writes a netlist is derived again here and compared, exactly and type for type (``true`` is
not ``1``, ``4.0`` is not ``4``):

* ``numerics``: the constants of contract version 1 (``inv_sqrt_hd_q16`` from the head size,
  the lookup tables' names and shapes, also against params.safetensors);
* ``architecture``: as :meth:`ModelArch.to_json` writes it; ``num_layers`` bounded by the
  number of matrices and ops before anything loops over it; RoPE's phase steps in
  params.safetensors from its ``rope_theta``/``rope_scaling``;
* ``fabric``: as :meth:`Fabric.to_json` writes it (its ``derived`` numbers recomputed);
* ``matrices``: exactly the matrices the architecture has (:func:`maskc.ir.expected_tensors`),
  each with its role, layer, shape, file, tile count and tile shape on this fabric, ``s_bound``
  from its level table, and its tiles file's arrays named, typed and shaped as the format
  stores them (the safetensors header: no array read);
* ``ops``: exactly the op list :func:`maskc.netlist.dataflow.build_ops` lowers the
  architecture to (``eps_d`` from ``rms_norm_eps`` and the hidden size);
* ``placement`` and ``sram``: the grid, the tile count, the dies, and the SRAM plan of
  :func:`maskc.sram.netlist_sram` recomputed from the dies' layers and the context;
* ``tokenizer``: its file's sha256, its bos/eos ids as the architecture has them, its chat
  template as the build's tokenizer_config.json has it;
* against what a build's quant/ keeps: each matrix's shape and format (quant/index.json) and
  each rmsnorm's ``gamma_frac`` (from the norm weight in float).

Any difference is an :class:`InputError` (exit 3) naming netlist.json and the field's path:
a netlist maskc did not write this way is refused, never run.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from maskc.errors import InputError
from maskc.ir import ModelArch, expected_tensors
from maskc.netlist.constants import (
    ROPE_BITS,
    gamma_fixed,
    numerics_json,
    rope_phase_steps,
)
from maskc.netlist.dataflow import build_ops, norm_dim
from maskc.netlist.ops import HeadNorm, RmsNorm
from maskc.romformat import FORMAT_KINDS, PERM, QuantFormat, fields_of, is_permutation
from maskc.safetensors_io import WRITABLE, SafetensorsFile

#: netlist.json's top-level keys
KEYS = (
    "architecture",
    "fabric",
    "format",
    "matrices",
    "numerics",
    "ops",
    "placement",
    "sram",
    "tokenizer",
    "version",
)
#: the lookup tables of contract 1 and their shapes (maskc.netlist.constants.compile_luts)
LUTS = {
    "lut.cos": [1 << ROPE_BITS],
    "lut.exp2": [1024],
    "lut.rsqrt": [769],
    "lut.sigmoid": [8192],
}
#: the int64 datapath's limit on ``acc_bits - 1 + 17`` (docs/numerics.md; the writer's
#: MAX_PRODUCT_BITS)
MAX_PRODUCT_BITS = 62
#: ops per dense decoder layer, and outside them (embed; final norm, lm_head, logits)
OPS_PER_LAYER, OPS_OUTSIDE = 16, 4


def ops_per_layer(arch: ModelArch) -> int:
    """The ops of one decoder layer of ``arch`` (:func:`maskc.netlist.dataflow.build_ops`):
    16 dense; a mixture of experts has 11 + the router matmul, route, experts and the residual
    add, Qwen2-MoE's shared expert 7 more, Qwen3's q/k norms 2 more."""
    n = OPS_PER_LAYER if arch.moe is None else 15
    if arch.moe is not None and arch.moe.shared_expert_intermediate_size:
        n += 7
    return n + (2 if arch.qk_norm else 0)


def matrices_per_layer(arch: ModelArch) -> int:
    """The matrices of one decoder layer: q, k, v, o and the MLP's (gate, up, down; or the
    router, Qwen2-MoE's shared gate and expert, and 3 per routed expert)."""
    if arch.moe is None:
        return 7
    shared = 4 if arch.moe.shared_expert_intermediate_size else 0
    return 4 + 1 + shared + 3 * arch.moe.num_experts


def numerics(arch: ModelArch) -> dict:
    """netlist.json's ``numerics`` for ``arch`` (what the writer records), its tables also
    against this module's own list of their shapes."""
    doc = numerics_json(arch)
    assert doc["luts"] == LUTS, "the contract's tables changed: update LUTS"
    return doc


def eps_d(arch: ModelArch) -> int:
    """``round(D * eps * 2^40)`` (docs/numerics.md, RMSNorm)."""
    return round(arch.hidden_size * arch.rms_norm_eps * 2.0**40)


def _show(v: object) -> str:
    s = json.dumps(v, sort_keys=True)
    return s if len(s) <= 80 else s[:77] + "..."


def _key(path: str, k: object) -> str:
    if isinstance(k, int):
        return f"{path}[{k}]"
    k = str(k)
    plain = k.replace("_", "").isalnum()
    return (f"{path}.{k}" if path else k) if plain else f"{path}[{json.dumps(k)}]"


def first_difference(want: object, got: object, path: str) -> str | None:
    """Where ``got`` (parsed JSON) first differs from ``want``, type for type (``bool`` is not
    ``int``, ``int`` is not ``float``): a phrase naming the path, or None when equal."""
    if type(want) is not type(got):
        return f"{path} = {_show(got)}, expected {_show(want)}"
    if isinstance(want, dict):
        for k in want:
            if k not in got:
                return f"{_key(path, k)} is missing"
        for k in got:
            if k not in want:
                return f"{_key(path, k)} is an unknown field"
        for k in want:
            d = first_difference(want[k], got[k], _key(path, k))
            if d:
                return d
        return None
    if isinstance(want, list):
        if len(want) != len(got):
            return f"{path} has {len(got)} items, expected {len(want)}"
        for i, (a, b) in enumerate(zip(want, got, strict=True)):
            d = first_difference(a, b, _key(path, i))
            if d:
                return d
        return None
    if want != got:
        return f"{path} = {_show(got)}, expected {_show(want)}"
    return None


def _same(p: Path, want: object, got: object, path: str, why: str) -> None:
    d = first_difference(want, got, path)
    if d:
        raise InputError(f"{p}: {d} ({why}); recompile")


def _int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_netlist(
    p: Path, doc: dict, arch: ModelArch, fabric, ops: list, params: SafetensorsFile
) -> dict[Path, SafetensorsFile]:
    """Check netlist.json ``doc`` (at ``p``; its parts already parsed: ``arch``, ``fabric``,
    ``ops``; ``params`` the opened params.safetensors) as a whole. Returns the tiles files
    opened on the way (their headers checked), by path."""
    root = p.parent
    unknown = sorted(set(doc) - set(KEYS))
    if unknown:
        raise InputError(f"{p}: {unknown[0]} is an unknown field; recompile")
    missing = [k for k in KEYS if k not in doc]
    if missing:
        raise InputError(f"{p}: field {missing[0]!r} is missing; recompile")
    _same(p, arch.to_json(), doc["architecture"], "architecture", "as maskc writes it")
    from maskc.ingest.config import _MODEL_TYPES  # the model_type of each architecture

    if arch.model_type != _MODEL_TYPES[arch.architecture]:
        raise InputError(
            f"{p}: architecture.model_type = {_show(arch.model_type)}, {arch.architecture} is "
            f"{_show(_MODEL_TYPES[arch.architecture])}; recompile"
        )
    # every loop below runs over the architecture's layers: bound them by the file first
    layers = arch.num_layers
    n_mat = 1 + matrices_per_layer(arch) * layers + (0 if arch.tie_word_embeddings else 1)
    if len(doc["matrices"]) != n_mat:
        raise InputError(
            f"{p}: architecture.num_layers = {layers} (tie_word_embeddings "
            f"{json.dumps(arch.tie_word_embeddings)}) needs {n_mat} matrices, 'matrices' has "
            f"{len(doc['matrices'])}; recompile"
        )
    n_ops = ops_per_layer(arch) * layers + OPS_OUTSIDE
    if len(ops) != n_ops:
        raise InputError(
            f"{p}: architecture.num_layers = {layers} needs {n_ops} ops, 'ops' has {len(ops)}; "
            "recompile"
        )
    _same(p, numerics(arch), doc["numerics"], "numerics", "numerics contract 1")
    _check_params(p, arch, params)
    _same(p, fabric.to_json(), doc["fabric"], "fabric", "the fabric as maskc writes it")
    files = _check_matrices(p, doc, arch, fabric)
    fracs = {op.gamma: op.gamma_frac for op in ops if isinstance(op, RmsNorm | HeadNorm)}
    want = [op.to_json() for op in build_ops(arch, fracs, eps_d(arch))]
    _same(p, want, doc["ops"], "ops", "the dataflow of the architecture")
    _check_perms(p, doc["matrices"], arch, params)
    _check_placement(p, doc, arch, fabric, params)
    _check_tokenizer(p, root, doc["tokenizer"], arch)
    _check_against_quant(p, root.parent, doc["matrices"], ops, arch)
    return files


def _check_params(p: Path, arch: ModelArch, params: SafetensorsFile) -> None:
    """The lookup tables numerics.luts names, and RoPE's phase steps from the architecture."""
    t = params.tensors
    for name, shape in LUTS.items():
        if name not in t or list(t[name].shape) != shape:
            raise InputError(
                f"{p}: numerics.luts names {name} {shape}, params.safetensors has "
                f"{list(t[name].shape) if name in t else 'no such table'}; recompile"
            )
    key = "rope.phase_step"
    want = rope_phase_steps(arch)
    info = t.get(key)
    if info is None or tuple(info.shape) != want.shape or info.dtype != "I64":
        raise InputError(f"{p}: params.safetensors lacks {key} I64 {list(want.shape)}; recompile")
    if not np.array_equal(params.read_raw(key), want):
        raise InputError(
            f"{p}: architecture.rope_theta/rope_scaling do not give params.safetensors' "
            f"{key}; recompile"
        )


def _check_perms(p: Path, mats: dict, arch: ModelArch, params: SafetensorsFile) -> None:
    """Every input permutation (docs/netlist.md): only on a transformer-block matrix, its
    params array int32 ``[C]`` and a permutation of ``range(C)``; no such array without its
    matrix."""
    layer = {t.name: t.layer for t in expected_tensors(arch) if len(t.shape) == 2}
    used = set()
    for name in sorted(mats):
        key = mats[name].get(PERM)
        if key is None:
            continue
        where = f"{p}: {_key('matrices', name)}.{PERM}"
        if layer[name] is None:
            raise InputError(
                f"{where}: only a transformer-block matrix gathers its input; recompile"
            )
        c = mats[name]["shape"][1]
        info = params.tensors.get(key)
        if info is None:
            raise InputError(f"{where}: params.safetensors has no {key}; recompile")
        if info.dtype != "I32" or tuple(info.shape) != (c,):
            raise InputError(
                f"{where}: {key} is {_np_name(info.dtype)} {list(info.shape)}, expected int32 "
                f"[{c}] (the matrix's columns); recompile"
            )
        if not is_permutation(params.read_raw(key).astype(np.int64), c):
            raise InputError(
                f"{where}: {key} is not a permutation of the {c} inputs (each of 0..{c - 1} "
                "exactly once); recompile"
            )
        used.add(key)
    for key in sorted(params.tensors):
        if key.endswith(f".{PERM}") and key not in used:
            raise InputError(
                f"{p}: params.safetensors holds {key}, which no matrix of netlist.json names; "
                "recompile"
            )


def _check_matrices(p: Path, doc: dict, arch: ModelArch, fabric) -> dict[Path, SafetensorsFile]:
    """Each matrix entry against the architecture, the fabric and its tiles file's header."""
    from maskc.netlist.loader import (
        ACT_GROUP,
        FP4_VERSION,
        group_ok,
        packed_width,
        stored_dtype,
        tiles_file,
        version6_feature,
    )

    mats = doc["matrices"]
    specs = {t.name: t for t in expected_tensors(arch) if len(t.shape) == 2}
    for name in sorted(mats):
        if name not in specs:
            raise InputError(
                f"{p}: matrices[{json.dumps(name)}] is not a matrix of the architecture; recompile"
            )
    keys = ("hidden_size", "num_heads", "num_kv_heads", "head_dim", "intermediate_size")
    shapes = " ".join(f"{k}={getattr(arch, k)}" for k in (*keys, "vocab_size"))
    by_file: dict[str, list[str]] = {}
    for name, spec in specs.items():
        where = _key("matrices", name)
        if name not in mats:
            raise InputError(f"{p}: {where} is missing (the architecture has it); recompile")
        m = mats[name]
        fmt = QuantFormat.from_json(m["format"], f"{p}: {where}", FORMAT_KINDS)
        bits, g = fmt.bits, fmt.group_size
        if fmt.fp4 and doc["version"] < FP4_VERSION:
            raise InputError(
                f"{p}: {where}.format.kind = {fmt.kind}: FP4 matrices need netlist version "
                f"{FP4_VERSION}, this netlist is version {doc['version']}; recompile"
            )
        if bits not in (3, 4, 8):
            raise InputError(f"{p}: {where}.format.bits = {bits}: no tile of a fabric holds it")
        w = fabric.weights_per_tile_row(bits)
        tr = fabric.tile.rows
        if not group_ok(fmt) or w % g:
            raise InputError(
                f"{p}: {where}.format.group_size = {g}: must be a multiple of {ACT_GROUP} "
                f"(FP4: or divide it) dividing the {w} weights of a tile row; recompile"
            )
        r, c = spec.shape
        tiles = -(-r // tr) * -(-c // w)
        want = {
            "file": tiles_file(spec.layer),
            "role": spec.role,
            "layer": spec.layer,
            # version 5 names each matrix's expert (a version 2-4 netlist.json edited from a
            # version 5 build may keep the key)
            **({"expert": spec.expert} if doc["version"] >= 5 or "expert" in m else {}),
            "shape": [r, c],
            "format": fmt.to_json(),
            "tiles": tiles,
            "tile_shape": [tr, w],
            "acc_bits": m.get("acc_bits"),
            "s_bound": m.get("s_bound"),
            # an input permutation (version 6): its gather table's params key
            **({PERM: f"{name}.{PERM}"} if PERM in m else {}),
        }
        _same(p, want, m, where, f"the architecture ({shapes}) on this fabric")
        ab, sb = m["acc_bits"], m["s_bound"]
        if not (_int(ab) and _int(sb) and sb > 0 and sb.bit_length() + 1 <= ab):
            raise InputError(
                f"{p}: {where}: acc_bits/s_bound must be integers with s_bound > 0 "
                "and acc_bits above its bits; recompile"
            )
        if ab - 1 + 17 > MAX_PRODUCT_BITS:
            raise InputError(
                f"{p}: {where}.acc_bits = {ab} is beyond the int64 datapath "
                f"(at most {MAX_PRODUCT_BITS - 16}); recompile"
            )
        by_file.setdefault(want["file"], []).append(name)
    feature = version6_feature(mats)
    if doc["version"] >= FP4_VERSION and feature is None:
        raise InputError(
            f"{p}: netlist version {doc['version']} is for FP4 matrices or input permutations "
            f"and this one has neither (maskc writes it as version {FP4_VERSION - 1}); recompile"
        )
    if doc["version"] < FP4_VERSION and feature is not None:
        raise InputError(
            f"{p}: {feature} need netlist version {FP4_VERSION}, this netlist is version "
            f"{doc['version']}; recompile"
        )
    version = doc["version"]
    opened: dict[Path, SafetensorsFile] = {}
    for file in sorted(by_file):
        path = p.parent / file
        f = opened[path] = SafetensorsFile(path)
        expect: dict[str, tuple[str, tuple]] = {}
        for name in by_file[file]:
            m = mats[name]
            fmt = QuantFormat.from_json(m["format"], name, FORMAT_KINDS)
            n, (tr, w) = m["tiles"], m["tile_shape"]
            g = fmt.group_size
            axis = {"weight": (n, tr, w), "group": (n, tr, w // g), "row": (n, tr), "tensor": (1,)}
            expect[f"{name}/pos"] = ("I32", (n, 3))
            expect[f"{name}/block"] = ("I32", (n, 4))
            expect[f"{name}/levels"] = ("I16", (1 << fmt.bits,))
            for fd in fields_of(fmt):
                if fd.axis == "level":
                    continue
                dt = stored_dtype(fd, fmt) if version >= 3 else fd.dtype
                shape = axis[fd.axis]
                if fd.name == "codes":
                    shape = (n, tr, packed_width(fmt.bits, w))
                expect[f"{name}/{fd.name}"] = (_st_name(dt), shape)
        got = {k: v for k, v in f.tensors.items() if not k.endswith(":pad")}
        for k in sorted(set(got) - set(expect)):
            raise InputError(f"{path}: array {k!r} belongs to no matrix of netlist.json; recompile")
        for k, (dt, shape) in sorted(expect.items()):
            name, a = k.rsplit("/", 1)
            info = got.get(k)
            if info is None:
                raise InputError(f"{path}: matrix {name}: tile array {a!r} is missing; recompile")
            if tuple(info.shape) != shape or info.dtype != dt:
                raise InputError(
                    f"{path}: matrix {name}: tile array {a!r} is {_np_name(info.dtype)} "
                    f"{list(info.shape)}, netlist version {version} stores {_np_name(dt)} "
                    f"{list(shape)} "
                    "(netlist.json's format, tiles and tile_shape); recompile"
                )
        for name in by_file[file]:
            levels = f.read_raw(f"{name}/levels").astype(np.int64)
            g = mats[name]["format"]["group_size"]
            s_bound = 127 * g * int(np.abs(levels).max(initial=0))
            if mats[name]["s_bound"] != s_bound:
                raise InputError(
                    f"{p}: {_key('matrices', name)}.s_bound = {mats[name]['s_bound']}, its level "
                    f"table gives {s_bound}; recompile"
                )
    return opened


def _st_name(dt: np.dtype) -> str:
    """The safetensors name of numpy dtype ``dt`` (of a tile array)."""
    return next(k for k in ("U8", "I8", "U16", "I16", "I32", "U32") if WRITABLE[k] == np.dtype(dt))


def _np_name(st_dtype: str) -> str:
    """``U16`` -> ``uint16`` (as the loader's messages name dtypes)."""
    return str(WRITABLE[st_dtype]) if st_dtype in WRITABLE else st_dtype


def _check_placement(p: Path, doc: dict, arch: ModelArch, fabric, params: SafetensorsFile) -> None:
    """``placement`` and ``sram``: recomputed from the dies' layers, the context and the
    SRAM reserved for adapters that ``sram`` records; from version 4 each die's SRAM starts
    with the params region of its boot image (:mod:`maskc.boot`)."""
    from maskc.boot import die_entries, params_tensors, region_bytes
    from maskc.sram import die_sram, kv_bytes_per_token, rank_budget

    pl, sram = doc["placement"], doc["sram"]
    if not isinstance(pl, dict) or not isinstance(sram, dict):
        raise InputError(f"{p}: 'placement' and 'sram' must be objects; recompile")
    dies = pl.get("dies")
    layers = arch.num_layers
    spread = _spread(p, doc, arch, fabric) if "expert_dies" in pl else None
    if spread is not None and not (_int(dies) and dies == spread.dies):
        raise InputError(
            f"{p}: placement.expert_dies spreads the experts over {spread.dies} dies (the "
            f"layers' home dies and expert dies), placement.dies = {_show(dies)}; recompile"
        )
    if spread is None and not (_int(dies) and 1 <= dies <= layers):
        raise InputError(
            f"{p}: placement.dies = {_show(dies)}, must be 1 to {layers} "
            "(the number of layers); recompile"
        )
    tiles = sum(m["tiles"] for m in doc["matrices"].values())
    if tiles > dies * fabric.tiles_per_die:
        raise InputError(
            f"{p}: the matrices need {tiles:,} tiles, {dies} die(s) of the fabric hold "
            f"{dies * fabric.tiles_per_die:,}; recompile"
        )
    want = {
        "dies": dies,
        "grid": [fabric.die.tile_columns, fabric.die.tile_rows],
        "tiles_used": tiles,
    }
    if spread is not None:
        want["expert_dies"] = [list(x) for x in spread.expert_die]
    _same(p, want, pl, "placement", "the matrices on this fabric")
    # the dies' layers: contiguous runs covering every layer in order
    sd = sram.get("dies")
    if not (isinstance(sd, list) and len(sd) == dies):
        raise InputError(f"{p}: sram.dies must list the {dies} dies of the placement; recompile")
    runs, start = [], 0
    for d, die in enumerate(sd):
        if spread is not None:  # the home dies' layers; compared whole below
            runs.append(spread.layers_of(d))
            continue
        kv = die.get("kv") if isinstance(die, dict) else None
        lay = kv.get("layers") if isinstance(kv, dict) else None
        if not (isinstance(lay, list) and 1 <= len(lay) <= layers - start):
            raise InputError(
                f"{p}: sram.dies[{d}].kv.layers must list the die's layers after "
                f"layer {start - 1}; recompile"
            )
        runs.append(list(range(start, start + len(lay))))
        start += len(lay)
    if spread is None and start != layers:
        raise InputError(f"{p}: sram.dies hold {start} layers, the architecture {layers}")
    ctx, reserved = sram.get("context"), sram.get("reserved_for_adapters")
    total = fabric.die.sram_bytes
    if not (_int(reserved) and 0 <= reserved < total):
        raise InputError(
            f"{p}: sram.reserved_for_adapters = {_show(reserved)}, must be 0 to "
            f"{total - 1:,} (bytes of a die's SRAM); recompile"
        )
    die_of_layer = [0] * layers
    for d, run in enumerate(runs):
        for i in run:
            die_of_layer[i] = d
    # version 4 starts each die's SRAM with its params region; a version 2/3 netlist.json has
    # none, unless it came from a version 4 build (its tiles read the same)
    with_params = doc["version"] >= 4 or any(isinstance(x, dict) and "params" in x for x in sd)
    pb = (
        [region_bytes(e) for e in die_entries(params_tensors(params), die_of_layer, dies,
                                              arch.head_dim)]
        if with_params
        else [0] * dies
    )  # fmt: skip
    max_ctx = min(
        max(total - reserved - pb[d], 0) // kv_bytes_per_token(arch, len(run))
        for d, run in enumerate(runs)
        if run
    )
    if not (_int(ctx) and 1 <= ctx <= max_ctx):
        raise InputError(
            f"{p}: sram.context = {_show(ctx)}, must be 1 to {max_ctx:,} (what the "
            "SRAM holds); recompile"
        )
    per_layer = kv_bytes_per_token(arch, 1)
    out = []
    for d, run in enumerate(runs):
        rest = total - pb[d] - kv_bytes_per_token(arch, len(run)) * ctx
        ranks = rank_budget(doc["matrices"], set(run), rest)
        out.append(die_sram(d, total, pb[d] if with_params else None, run, per_layer, ctx, ranks))
    want = {"context": ctx, "max_context": max_ctx, "reserved_for_adapters": reserved, "dies": out}
    _same(p, want, sram, "sram", "the SRAM plan of the placement")


def _spread(p: Path, doc: dict, arch: ModelArch, fabric):
    """The experts-over-dies layout the matrices' tile counts give (``placement.expert_dies``
    present): :func:`maskc.place.spread.spread_experts`, as the placer computed it."""
    from maskc.place.spread import spread_experts

    if arch.moe is None:
        raise InputError(f"{p}: placement.expert_dies in a model without experts; recompile")
    units = [
        (m["layer"], m["expert"], m["tiles"], m["role"] == "embed")
        for m in doc["matrices"].values()
    ]
    got = spread_experts(units, arch.num_layers, arch.moe.num_experts, fabric.tiles_per_die)
    if got is None:
        raise InputError(
            f"{p}: placement.expert_dies: the experts do not fit these dies; recompile"
        )
    return got


def _check_tokenizer(p: Path, root: Path, tok: object, arch: ModelArch) -> None:
    """``tokenizer``: null exactly when the netlist has no tokenizer.json; its hash, the
    architecture's bos/eos ids, and the chat template of the build's tokenizer_config.json (a
    copy of the model's; none without it)."""
    if tok is None:
        if (root / "tokenizer.json").exists():
            raise InputError(
                f"{p}: tokenizer = null, but the netlist has a tokenizer.json; recompile"
            )
        return
    if not isinstance(tok, dict):
        raise InputError(f"{p}: tokenizer must be an object or null; recompile")
    if tok.get("file") != "tokenizer.json":
        raise InputError(
            f'{p}: tokenizer.file = {_show(tok.get("file"))}, expected "tokenizer.json"; recompile'
        )
    f = root / "tokenizer.json"
    h = hashlib.sha256()
    with open(f, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    tc = root.parent / "tokenizer_config.json"
    if tc.is_file():
        from maskc.ingest.config import read_json_file

        cfg = read_json_file(tc, "tokenizer_config.json")
        ct = cfg.get("chat_template") if isinstance(cfg, dict) else None
        tpl = ct if isinstance(ct, str) else None
    else:
        tpl = None
    want = {
        "file": "tokenizer.json",
        "sha256": h.hexdigest(),
        "bos_token_id": arch.bos_token_id,
        "eos_token_id": arch.eos_token_ids[0] if arch.eos_token_ids else None,
        "chat_template": tpl,
    }
    _same(p, want, tok, "tokenizer", "the tokenizer file and the architecture's token ids")


def _check_against_quant(p: Path, build: Path, mats: dict, ops: list, arch: ModelArch) -> None:
    """What a build's quant/ still holds (docs/netlist.md): quant/index.json's shape and format
    of every matrix (the format's ROM widths, which the values in the tiles need not show),
    and each rmsnorm's ``gamma_frac`` as the compiler picks it from the norm weight kept there
    in float (nothing in the netlist determines it). A netlist without quant/ beside it is not
    checked against it."""
    index_path = build / "quant" / "index.json"
    if not index_path.is_file():
        return
    from maskc.ingest.config import read_json_file

    index = read_json_file(index_path, "quant/index.json", max_bytes=1 << 30)
    tensors = index.get("tensors") if isinstance(index, dict) else None
    if not isinstance(tensors, dict):
        raise InputError(f"{index_path}: field 'tensors' must be an object")
    for name, m in mats.items():
        e = tensors.get(name)
        e = e if isinstance(e, dict) else {}
        want = {"shape": e.get("shape"), "format": e.get("format"), PERM: bool(e.get(PERM))}
        got = {"shape": m["shape"], "format": m["format"], PERM: PERM in m}
        _same(p, want, got, _key("matrices", name), "as quant/index.json records the matrix")
    files: dict[Path, SafetensorsFile] = {}
    for i, op in enumerate(ops):
        if not isinstance(op, RmsNorm | HeadNorm):
            continue
        d = norm_dim(arch, op.gamma)
        e = tensors.get(op.gamma)
        rel = Path(str(e.get("file"))) if isinstance(e, dict) else Path("")
        if (
            not isinstance(e, dict)
            or e.get("kind") != "float"
            or rel.is_absolute()
            or ".." in rel.parts
            or not (build / rel).is_file()
        ):
            raise InputError(f"{index_path}: {op.gamma} is not a float tensor of quant/")
        f = files.get(rel) or files.setdefault(rel, SafetensorsFile(build / rel))
        info = f.tensors.get(op.gamma)
        if info is None or tuple(info.shape) != (d,):
            raise InputError(f"{build / rel}: {op.gamma} is not a vector of {d} values")
        g = f.read(op.gamma).astype(np.float64)
        try:
            if not np.isfinite(g).all():
                raise ValueError
            frac = gamma_fixed(g, d)[1]
        except ValueError:
            raise InputError(f"{build / rel}: {op.gamma} is not a usable norm weight") from None
        if frac != op.gamma_frac:
            raise InputError(
                f"{p}: ops[{i}].gamma_frac = {op.gamma_frac}, the compiler picks {frac} for "
                f"{op.gamma} (kept in quant/); recompile"
            )
