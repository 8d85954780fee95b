"""The SRAM boot image: every model-specific value that is not a weight, somewhere physical.

The two masks hold the matrices (codes, scales, level tables) and each tile's configuration.
What else a model brings is small: the RMSNorm gammas with each norm unit's shift and epsilon,
the biases, the RoPE phase steps and the attention scale. On the chip those live in SRAM: each
die's SRAM starts with a **params region** (docs/sram.md) that the boot loader fills at power-up
from the build's boot image, ``boot/sram.d<die>.bin``, before the KV cache and the adapters.
``boot/index.json`` says where each value sits. ``maskc verify`` rebuilds the image from the
netlist and compares it byte for byte, so editing ``params.safetensors`` (or a norm op's
constants) without the image, or the image alone, is exit 5.

The base die's own tables (``lut.rsqrt``, ``lut.cos``, ``lut.exp2``, ``lut.sigmoid``) are not
model data: the base die hard-wires them and they are the same for every model. The netlist's
``params.safetensors`` carries a copy so that the netlist is self-contained, and the loader
refuses a copy that differs from the contract's tables
(:func:`maskc.netlist.constants.compile_luts`).

Layout (docs/sram.md, "The boot image"): per die, entries one after the other from SRAM
address 0, each at a multiple of :data:`ALIGN` bytes, zero padding between them, values
little-endian in the entry's dtype. The entries of a die, in order: ``rope.phase_step``
(int64, head_dim/2) and ``attention.inv_sqrt_hd_q16`` (int64, 1) on every die, then per
non-matrix tensor of the die's layers (layer order, then name; the final norm on the last
layer's die) the tensor (a norm gamma int16, a bias int32, a matrix's input permutation: the
gather table of its input, int32) and, for a norm, ``NAME.gamma_frac`` and
``NAME.eps_d`` (int64, 1 each).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: every entry starts at a multiple of this many bytes (an SRAM line)
ALIGN = 64
FORMAT = "maskc-boot"
VERSION = 1
DIR = "boot"
INDEX = f"{DIR}/index.json"
#: entries on every die: (name, dtype)
DIE_CONSTANTS = (("rope.phase_step", "int64"), ("attention.inv_sqrt_hd_q16", "int64"))
#: the scalar constants of a norm unit, stored after its gamma
NORM_CONSTANTS = ("gamma_frac", "eps_d")

_LAYER = re.compile(r"model\.layers\.(\d+)\.")


@dataclass(frozen=True)
class Entry:
    name: str
    dtype: str
    count: int
    offset: int = 0

    @property
    def nbytes(self) -> int:
        return self.count * np.dtype(self.dtype).itemsize

    def to_json(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "count": self.count, "offset": self.offset}


def param_dtype(name: str) -> str:
    """The stored dtype of a non-matrix tensor: a norm gamma int16, a bias int32, a matrix's
    input permutation (its gather table) int32 (docs/numerics.md)."""
    if name.endswith("norm.weight"):
        return "int16"
    if name.endswith(".bias") or name.endswith(".input_perm"):
        return "int32"
    raise ValueError(f"{name}: not a norm weight, a bias or an input permutation")


def layer_of(name: str) -> int | None:
    m = _LAYER.match(name)
    return int(m.group(1)) if m else None


def _aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def die_entries(
    tensors: list[tuple[str, int]], die_of_layer: list[int], dies: int, head_dim: int
) -> list[list[Entry]]:
    """Per die, its entries with their offsets. ``tensors``: (name, elements) of the model's
    non-matrix tensors (norm gammas, biases); ``die_of_layer[i]``: the die holding layer i."""
    per_die: list[list[tuple[str, str, int]]] = [
        [(n, dt, head_dim // 2 if n == "rope.phase_step" else 1) for n, dt in DIE_CONSTANTS]
        for _ in range(dies)
    ]

    def key(t):
        layer = layer_of(t[0])
        return (len(die_of_layer) if layer is None else layer, t[0])

    for name, count in sorted(tensors, key=key):
        layer = layer_of(name)
        d = die_of_layer[-1] if layer is None else die_of_layer[layer]  # the last layer's
        per_die[d].append((name, param_dtype(name), int(count)))
        if name.endswith("norm.weight"):
            per_die[d] += [(f"{name}.{c}", "int64", 1) for c in NORM_CONSTANTS]
    out = []
    for items in per_die:
        off, entries = 0, []
        for name, dt, count in items:
            entries.append(Entry(name, dt, count, off))
            off = _aligned(off + entries[-1].nbytes)
        out.append(entries)
    return out


def region_bytes(entries: list[Entry]) -> int:
    """Bytes of a die's params region: its entries, aligned."""
    return _aligned(entries[-1].offset + entries[-1].nbytes) if entries else 0


# -- from a netlist ------------------------------------------------------------------------------


def netlist_tensors(nl) -> list[tuple[str, int]]:
    """(name, elements) of the netlist's model-specific params (not the base die's tables)."""
    from maskc.safetensors_io import SafetensorsFile

    return params_tensors(SafetensorsFile(nl.path / "params.safetensors"))


def params_tensors(f) -> list[tuple[str, int]]:
    """(name, elements) of the model-specific arrays of an opened params.safetensors ``f``:
    the norm gammas and biases (not the base die's tables, not the RoPE steps)."""
    return sorted(
        (k, int(np.prod(t.shape, dtype=np.int64)))
        for k, t in f.tensors.items()
        if not k.startswith("lut.") and k != "rope.phase_step"
    )


def netlist_layout(nl) -> list[list[Entry]]:
    """The boot layout the netlist implies (its sram plan's dies and their layers)."""
    from maskc.sram import die_layers

    sets = die_layers(nl.doc["sram"])
    die_of_layer = [0] * nl.arch.num_layers
    for d, layers in enumerate(sets):
        for i in layers:
            die_of_layer[i] = d
    return die_entries(netlist_tensors(nl), die_of_layer, len(sets), nl.arch.head_dim)


def netlist_values(nl) -> dict[str, np.ndarray]:
    """Every entry's value, from the netlist: params, the norm ops' constants, numerics."""
    params = nl.params()
    vals = {k: v for k, v in params.items() if not k.startswith("lut.")}
    vals["attention.inv_sqrt_hd_q16"] = np.array([nl.doc["numerics"]["inv_sqrt_hd_q16"]])
    for op in nl.ops:
        if op.KIND in ("rmsnorm", "head_norm"):
            for c in NORM_CONSTANTS:
                vals[f"{op.gamma}.{c}"] = np.array([getattr(op, c)])
    return vals


def die_image(entries: list[Entry], values: dict[str, np.ndarray]) -> bytes:
    """A die's boot image: every entry's value at its offset, little-endian, zero padding."""
    buf = bytearray(region_bytes(entries))
    for e in entries:
        v = np.asarray(values[e.name]).ravel()
        w = v.astype(np.dtype(e.dtype).newbyteorder("<"))
        if v.size != e.count or not np.array_equal(w.astype(np.int64), v.astype(np.int64)):
            raise ValueError(f"{e.name}: {v.size} values do not fit {e.count} x {e.dtype}")
        buf[e.offset : e.offset + e.nbytes] = w.tobytes()
    return bytes(buf)


def write_boot(nl, build: Path) -> dict:
    """``boot/sram.d<die>.bin`` and ``boot/index.json`` for netlist ``nl``; returns the index.
    The layout must be the params region the netlist's SRAM plan reserved (a bug otherwise)."""
    from maskc.build import write_json

    root = build / DIR
    root.mkdir(parents=True, exist_ok=True)
    values = netlist_values(nl)
    dies = []
    for d, (entries, plan) in enumerate(
        zip(netlist_layout(nl), nl.doc["sram"]["dies"], strict=True)
    ):
        if region_bytes(entries) != plan["params"]["bytes"]:
            raise RuntimeError(
                f"die {d}: boot image {region_bytes(entries)} bytes, plan says "
                f"{plan['params']['bytes']}"
            )
        image = die_image(entries, values)
        file = f"sram.d{d}.bin"
        (root / file).write_bytes(image)
        dies.append(
            {
                "die": d,
                "file": file,
                "base": plan["params"]["base"],
                "bytes": len(image),
                "sha256": hashlib.sha256(image).hexdigest(),
                "entries": [e.to_json() for e in entries],
            }
        )
    index = {"format": FORMAT, "version": VERSION, "align": ALIGN, "dies": dies}
    write_json(root / "index.json", index)
    return index


def verify_boot(nl, build: Path, limit: int = 10) -> list[str]:
    """The boot image against the netlist: the index must be the layout the netlist implies
    and every die's file the image of the netlist's values, byte for byte. Returns problems,
    each naming the file and the first differing entry."""
    from maskc.ingest.config import read_json_file

    ipath = build / INDEX
    if not ipath.is_file():
        return [f"{INDEX} is missing: the build has no boot image (recompile with this maskc)"]
    index = read_json_file(ipath, INDEX, max_bytes=1 << 26)
    layout = netlist_layout(nl)
    values = netlist_values(nl)
    problems = []
    want_dies = [
        {"die": d, "entries": [e.to_json() for e in entries]} for d, entries in enumerate(layout)
    ]
    got_dies = index.get("dies") if isinstance(index, dict) else None
    if (
        not isinstance(got_dies, list)
        or [
            {"die": x.get("die"), "entries": x.get("entries")} if isinstance(x, dict) else x
            for x in got_dies
        ]
        != want_dies
    ):
        problems.append(f"{INDEX}: the layout is not the one the netlist implies; recompile")
    for d, entries in enumerate(layout):
        file = build / DIR / f"sram.d{d}.bin"
        if not file.is_file():
            problems.append(f"{DIR}/{file.name} is missing")
            continue
        got, want = file.read_bytes(), die_image(entries, values)
        if got == want:
            continue
        bad = next(
            (e.name for e in entries if got[e.offset : e.offset + e.nbytes]
             != want[e.offset : e.offset + e.nbytes]),
            f"its size ({len(got)} bytes, the layout has {len(want)})",
        )  # fmt: skip
        problems.append(
            f"{DIR}/{file.name}: {bad} differs from the netlist (the boot image and "
            "params.safetensors disagree)"
        )
    return problems[:limit]
