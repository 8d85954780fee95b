"""``maskc export-rtl``: a build's netlist as Verilog (docs/rtl.md).

Writes, into a fresh folder (atomically): the matrix and embedding modules with their mask-ROM
tiles (:mod:`maskc.rtl.matrix`, the personalization), the base-die unit models
(maskc/rtl/verilog/units, copied), the tables and per-op constants as ``$readmemh`` files
(``tables/``), the top module generated from the op list (:mod:`maskc.rtl.top`), a file list
``files.f`` and ``manifest.json`` (every file's SHA-256, the netlist's and build's hashes, the
module hierarchy). Reads only the netlist. Deterministic: the same build gives the same bytes.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path

import numpy as np

from maskc.build import open_build
from maskc.fsutil import atomic_output_dir
from maskc.netlist import load_netlist
from maskc.rtl import top as T
from maskc.rtl.matrix import emit_embed, emit_matrix

#: the base-die unit models shipped in the package (maskc/rtl/verilog/units)
UNIT_FILES = ("maskc_prims.vh", "maskc_q8.vh", "maskc_add.v", "maskc_argmax.v",
              "maskc_attention.v", "maskc_quantize.v", "maskc_rmsnorm.v", "maskc_rope.v",
              "maskc_swiglu.v")  # fmt: skip
UNITS_DIR = "units"
FORMAT = "maskc-rtl"
VERSION = 1


def unit_text(name: str) -> bytes:
    return resources.files("maskc.rtl").joinpath("verilog", "units", name).read_bytes()


def hex_lines(values: np.ndarray, bits: int) -> bytes:
    """``$readmemh`` text: one two's-complement word of ``bits`` per line."""
    mask = (1 << bits) - 1
    digits = (bits + 3) // 4
    return "".join(f"{int(v) & mask:0{digits}x}\n" for v in values.tolist()).encode()


#: param -> word bits in its hex file (rope.phase_step: values < 2^32, stored unsigned)
TABLE_BITS = {"lut.rsqrt": 32, "lut.cos": 16, "lut.exp2": 32, "lut.sigmoid": 32,
              "rope.phase_step": 32}  # fmt: skip


def write_rtl(nl, out: Path, context: int | None = None, progress=None) -> dict:
    """Everything of the export into the (empty) folder ``out``; returns the manifest's
    ``files``/``modules`` part (without hashes of the manifest itself)."""
    plan = T.plan(nl)
    ctx = int(nl.doc["sram"]["context"] if context is None else context)
    files: list[str] = []

    def write(rel: str, data: bytes) -> None:
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        files.append(rel)

    (out / UNITS_DIR).mkdir()
    for name in UNIT_FILES:
        write(f"{UNITS_DIR}/{name}", unit_text(name))
    params = nl.params()
    for name, bits in TABLE_BITS.items():
        write(T.param_file(name), hex_lines(np.asarray(params[name]), bits))
    for name in plan.params:  # gammas
        write(T.param_file(name), hex_lines(np.asarray(params[name]), 16))
    mods, embs = {}, {}
    work = sorted(set(plan.matmuls), key=lambda mb: (mb[0], mb[1] or ""))
    if progress:
        progress.start("writing matrix modules", len(work) + len(plan.embeds))
    before = set()
    for matrix, bias in work:
        mods[(matrix, bias)] = emit_matrix(nl, matrix, out, bias=bias)
        if progress:
            progress.advance(1, matrix)
    for matrix in sorted(set(plan.embeds)):
        embs[matrix] = emit_embed(nl, matrix, out)
        if progress:
            progress.advance(1, matrix)
    a_files = sorted({f for m in (*mods.values(), *embs.values()) for f in m.files} - before)
    files += a_files
    top = T.emit_top(nl, plan, mods, embs, ctx)
    write("maskc_top.v", top.encode())
    verilog = sorted(f for f in files if f.endswith(".v"))
    flist = [f"+incdir+{UNITS_DIR}", *verilog]
    write("files.f", ("\n".join(flist) + "\n").encode())
    hier = {
        T.TOP: {
            "personalization": sorted({m.name for m in (*mods.values(), *embs.values())}),
            "base_die": sorted(n[:-2] for n in UNIT_FILES if n.endswith(".v")),
            "instances": T.instances(top),
        }
    }
    return {
        "top": T.TOP,
        "context": ctx,
        "modules": hier,
        "verilog": verilog,
        "include_dirs": [UNITS_DIR],
        "files": files,
    }


def export_rtl(build: Path, out: Path, force: bool = False, progress=None) -> dict:
    """``maskc export-rtl BUILD -o OUT``: returns the manifest written."""
    b = open_build(build)
    nl = load_netlist(b.path)
    T.check_supported(nl)  # before anything is written
    with atomic_output_dir(out, force=force, inputs=(b.path,)) as tmp:
        info = write_rtl(nl, tmp, progress=progress)
        hashes = {}
        for rel in sorted(info["files"]):
            hashes[rel] = hashlib.sha256((tmp / rel).read_bytes()).hexdigest()
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "build_manifest_sha256": hashlib.sha256(
                (b.path / "manifest.json").read_bytes()
            ).hexdigest(),
            "netlist_sha256": hashlib.sha256(
                (b.path / "netlist" / "netlist.json").read_bytes()
            ).hexdigest(),
            "top": info["top"],
            "context": info["context"],
            "include_dirs": info["include_dirs"],
            "verilog": info["verilog"],
            "modules": info["modules"],
            "files": hashes,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


__all__ = ["export_rtl", "hex_lines", "write_rtl"]
