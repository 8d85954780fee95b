"""Stage 4, netlist: the quantized model + its placement -> ``BUILD/netlist/`` (docs/netlist.md).

:func:`write_netlist` streams one tiles file (one decoder layer) at a time: each matrix is read
from the quant store, cut into its placed blocks' ROM content (:func:`tile_arrays`), and
written with every tile's position; then the fixed-function parameters (norm weights as
integers, biases, lookup tables), the ops (:func:`maskc.netlist.dataflow.build_ops`), the SRAM
allocation (:mod:`maskc.sram`) and the tokenizer.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

from maskc.errors import InputError
from maskc.ir import ModelArch, expert_of
from maskc.netlist.constants import (
    SIGNAL_FRAC,
    compile_luts,
    gamma_fixed,
    numerics_json,
    rope_phase_steps,
)
from maskc.netlist.dataflow import build_ops, norm_dim
from maskc.netlist.loader import (
    ACT_GROUP,
    DIR,
    FORMAT,
    PACK_BITS,
    group_ok,
    pack_codes,
    stored_dtype,
    tiles_file,
    version_for,
)
from maskc.romformat import FIELD, PERM, QuantTensor, fields_of
from maskc.safetensors_io import write_safetensors
from maskc.sram import netlist_sram

#: The largest bound of ``A * m_a`` the int64 datapath accepts (docs/numerics.md).
MAX_PRODUCT_BITS = 62


def group_factor(fmt, scale_m: np.ndarray, scale_s: np.ndarray) -> np.ndarray:
    """int64 ``scale_m << clip(SREF - scale_s, 0, SREF)``: each group's factor in the
    accumulator (``SREF`` = :attr:`~maskc.romformat.QuantFormat.shift_ref`; an mxfp4 block
    below its row's span holds only zero codes and counts as ``scale_m``)."""
    sref = fmt.shift_ref
    sh = np.clip(sref - scale_s.astype(np.int64), 0, sref)
    return scale_m.astype(np.int64) << sh


def matrix_bounds(q: QuantTensor) -> tuple[int, int]:
    """``(s_bound, acc_bits)``: the largest possible |group sum S| and the bits (with sign) of
    the worst-case |A| of docs/numerics.md, from the stored fields (exact integers)."""
    g = q.fmt.group_size
    lmax = int(np.abs(q.levels.astype(np.int64)).max())
    s_bound = 127 * g * lmax
    mshift = group_factor(q.fmt, q.scale_m, q.scale_s)
    a_bound = int(mshift.sum(axis=1).max()) * s_bound
    return s_bound, a_bound.bit_length() + 1


def _implicit(fd, fmt) -> int:
    return fd.limits(fmt)[0] if fd.rom_bits(fmt) == 0 else 0


def tile_arrays(q: QuantTensor, blocks: list, tile_rows: int, w: int) -> dict[str, np.ndarray]:
    """The per-tile arrays of matrix ``q`` for its placed ``blocks`` (docs/netlist.md): every
    field of the format cut to the tiles' ``[tile_rows, w]`` cells (zero outside the block),
    the shared level table (and nvfp4's ``tensor_m``), each tile's position and block."""
    g = q.fmt.group_size
    n = len(blocks)
    shapes = {"weight": (n, tile_rows, w), "group": (n, tile_rows, w // g), "row": (n, tile_rows)}
    per_tile = [fd for fd in fields_of(q.fmt) if fd.axis not in ("level", "tensor")]
    out = {
        "pos": np.array([[b.die, b.x, b.y] for b in blocks], dtype=np.int32).reshape(n, 3),
        "block": np.array(
            [[b.row0, b.rows, b.col0, b.cols] for b in blocks], dtype=np.int32
        ).reshape(n, 4),
        "levels": q.levels,
        **({} if q.tensor_m is None else {"tensor_m": q.tensor_m}),
        # outside the block a field holds 0, or its one value when not stored (mxfp4's scale_m)
        **{fd.name: np.full(shapes[fd.axis], _implicit(fd, q.fmt), fd.dtype) for fd in per_tile},
    }
    for t, b in enumerate(blocks):
        r0, nr = b.row0, b.rows
        ng = -(-b.cols // g)
        g0 = b.col0 // g
        for fd in per_tile:
            src = getattr(q, fd.name)[r0 : r0 + nr]
            if fd.axis == "weight":
                out[fd.name][t, :nr, : ng * g] = src[:, b.col0 : b.col0 + ng * g]
            elif fd.axis == "group":
                out[fd.name][t, :nr, :ng] = src[:, g0 : g0 + ng]
            else:
                out[fd.name][t, :nr] = src
    return out


def write_netlist(
    build: Path, arch: ModelArch, quant, placement, fabric, tokenizer: dict, events=None
) -> dict:
    """Write ``build/netlist/`` from the quant store ``quant`` and ``placement``.

    ``tokenizer`` has ``path`` (or None), ``bos_token_id``, ``eos_token_id`` and
    ``chat_template``. Streams one tiles file (one layer) at a time. Returns a summary (tiles,
    bytes, weights, matrices) for the compile report."""
    root = build / DIR
    (root / "tiles").mkdir(parents=True, exist_ok=True)
    blocks_of: dict[str, list] = {}
    for b in placement.blocks:
        blocks_of.setdefault(b.tensor, []).append(b)
    by_file: dict[str, list[str]] = {}
    matrices: dict[str, dict] = {}
    params: dict[str, np.ndarray] = {}
    norm_fracs: dict[str, int] = {}
    d = arch.hidden_size
    for name in quant.index:
        if quant.kind(name) == "quantized":
            if name not in blocks_of:
                raise InputError(f"{name}: quantized but not placed on the fabric")
            by_file.setdefault(tiles_file(blocks_of[name][0].layer), []).append(name)
        elif name.endswith("norm.weight"):
            gq, frac = gamma_fixed(quant.float(name).astype(np.float64), norm_dim(arch, name))
            params[name] = gq
            norm_fracs[name] = frac
        elif name.endswith(".bias"):
            b = quant.float(name).astype(np.float64)
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
            q = quant.matrix(name)
            bl = blocks_of[name]
            if not group_ok(q.fmt):
                raise InputError(
                    f"{name}: group size {q.fmt.group_size} is not a multiple of {ACT_GROUP}: the "
                    f"chip reads activations in groups of {ACT_GROUP} (docs/numerics.md); use a "
                    "group size of 32, 64 or 128"
                )
            w = fabric.weights_per_tile_row(q.fmt.bits)
            if q.fmt.bits <= PACK_BITS and w % 2:
                raise InputError(
                    f"{name}: the fabric's tile rows hold {w} {q.fmt.bits}-bit weights, an odd "
                    "number: the netlist stores codes in pairs (docs/netlist.md); use an even "
                    "number of columns"
                )
            s_bound, acc_bits = matrix_bounds(q)
            if acc_bits - 1 + 17 > MAX_PRODUCT_BITS:
                raise InputError(
                    f"{name}: its worst-case accumulator needs {acc_bits} bits, beyond the "
                    f"int64 datapath (docs/numerics.md); use fewer scale or level bits"
                )
            for k, v in tile_arrays(q, bl, fabric.tile.rows, w).items():
                if k == "codes":
                    v = pack_codes(v, q.fmt.bits)
                elif k in FIELD:  # in range by QuantTensor.validate: exact
                    v = v.astype(stored_dtype(FIELD[k], q.fmt), copy=False)
                arrays[f"{name}/{k}"] = v
            matrices[name] = {
                "file": file,
                "role": bl[0].role,
                "layer": bl[0].layer,
                "expert": expert_of(name),
                "shape": list(q.shape),
                "format": q.fmt.to_json(),
                "tiles": len(bl),
                "tile_shape": [fabric.tile.rows, w],
                "acc_bits": acc_bits,
                "s_bound": s_bound,
            }
            perm = quant.input_perm(name)
            if perm is not None:  # the gather table of its input (docs/numerics.md)
                if bl[0].layer is None:
                    raise InputError(
                        f"{name}: an input permutation outside the transformer blocks; only "
                        "their matrices gather their input"
                    )
                params[f"{name}.{PERM}"] = perm.astype(np.int32)
                matrices[name][PERM] = f"{name}.{PERM}"
            weights += q.shape[0] * q.shape[1]
            if events:
                events.advance(1, name)
        write_safetensors(root / file, arrays, {"maskc": "netlist tiles"}, align=8)
        del arrays
    eps_d = round(d * arch.rms_norm_eps * 2.0**40)
    params.update(compile_luts())
    params["rope.phase_step"] = rope_phase_steps(arch)
    write_safetensors(root / "params.safetensors", params, {"maskc": "netlist parameters"})
    doc = {
        "format": FORMAT,
        "version": version_for(matrices),
        "numerics": numerics_json(arch),
        "architecture": arch.to_json(),
        "fabric": fabric.to_json(),
        "placement": {
            "dies": placement.dies,
            "grid": list(placement.grid),
            "tiles_used": len(placement.blocks),
            **_expert_dies(placement),
        },
        "matrices": matrices,
        "ops": [op.to_json() for op in build_ops(arch, norm_fracs, eps_d)],
        "sram": netlist_sram(placement, arch, fabric),
        "tokenizer": _write_tokenizer(root, tokenizer),
    }
    (root / "netlist.json").write_text(
        json.dumps(doc, indent=1, sort_keys=True, allow_nan=False) + "\n"
    )
    nbytes = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    return {
        "tiles": len(placement.blocks),
        "weights": weights,
        "bytes": nbytes,
        "matrices": len(matrices),
    }


def _write_tokenizer(root: Path, tokenizer: dict) -> dict | None:
    """The tokenizer into the netlist (a hard link to ``tokenizer["path"]``, the build's copy,
    where the filesystem allows: one copy on disk); what netlist.json records of it."""
    if tokenizer.get("path") is None:
        return None
    try:
        os.link(tokenizer["path"], root / "tokenizer.json")
    except OSError:
        shutil.copyfile(tokenizer["path"], root / "tokenizer.json")
    return {
        "file": "tokenizer.json",
        "sha256": hashlib.sha256((root / "tokenizer.json").read_bytes()).hexdigest(),
        "bos_token_id": tokenizer.get("bos_token_id"),
        "eos_token_id": tokenizer.get("eos_token_id"),
        "chat_template": tokenizer.get("chat_template"),
    }


def _expert_dies(placement) -> dict:
    """``expert_dies`` (per layer, the die of each routed expert) when experts are spread over
    dies (:mod:`maskc.place.spread`); nothing otherwise (a layer's experts on its die)."""
    ep = placement.report.get("experts", {})
    return {"expert_dies": ep["expert_dies"]} if "expert_dies" in ep else {}
