"""A disk cache of the matrices prepared for the emulator's kernels (:mod:`prepared`).

Laying a build's matrices out for the kernels reads every tile and re-orders every weight
(about 1.5 s for SmolLM2-135M). The result depends only on the netlist's files, the maskc
version and the kernel, so ``maskc emulate`` keeps it: the second start memory-maps one file.

* **Key**: sha256 of the maskc version, :data:`LAYOUT_VERSION`, the kernel (``c`` or
  ``numba``) and the sha256 of every ``netlist/`` file listed in the build's manifest, which
  :func:`maskc.build.open_build` has just checked. A changed netlist is a different key.
* **Where**: ``$MASKC_CACHE_DIR``, else ``$XDG_CACHE_HOME/maskc/emulate``, else
  ``~/.cache/maskc/emulate``. ``MASKC_CACHE_DIR=off`` turns the cache off.
* **What**: one safetensors file per key (arrays 64-byte aligned, the per-matrix scalars in its
  metadata), written to a temporary name and renamed, so a reader sees it whole or not at
  all. Builds whose prepared matrices exceed :data:`MAX_BYTES` are not cached (an 8B-class
  build would add gigabytes to the user's disk for a second saved at start-up), nor builds
  with FP4 matrices (their layout's extra fields are not stored yet).
* **Trust**: a file that does not parse, or whose arrays do not have the shapes its scalars
  imply, is ignored and the matrices are prepared from the tiles again. The kernels index
  the arrays only within those checked shapes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from maskc.emulate.prepared import Matrix
from maskc.errors import InputError
from maskc.safetensors_io import WRITABLE, SafetensorsFile, write_safetensors
from maskc.textparse import ParseError, json_loads

#: bump when prepared.py's layouts change
LAYOUT_VERSION = 1
#: builds whose prepared matrices are larger are not cached
MAX_BYTES = 2 << 30
ENV = "MASKC_CACHE_DIR"
_FIELDS = ("lev", "msh", "zsh", "ka", "kb")
_SCALARS = ("rows", "cols", "cp", "packed", "d", "off", "has_zero", "rep", "tile", "lmin")


def cache_dir() -> Path | None:
    """The cache folder, or None when ``MASKC_CACHE_DIR=off``."""
    env = os.environ.get(ENV)
    if env is not None:
        return None if env.strip().lower() in ("off", "0", "") else Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "maskc" / "emulate"


def key(manifest: dict, kernel: str) -> str:
    """The cache key of a build (its manifest, hash-checked) for ``kernel``."""
    from maskc import __version__

    files = manifest.get("files") or {}
    doc = {
        "maskc": __version__,
        "layout": LAYOUT_VERSION,
        "kernel": kernel,
        "netlist": {
            k: v.get("sha256") for k, v in sorted(files.items()) if k.startswith("netlist/")
        },
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _shapes(sc: dict) -> dict[str, tuple]:
    """The shapes ``prepare`` gives a matrix's arrays, from its scalars."""
    nb = -(-sc["rows"] // sc["tile"])
    ngw = sc["cp"] // (32 * sc["rep"])
    zw = ngw if sc["has_zero"] else 1
    if sc["tile"] == 16:  # the C kernel's layout
        return {
            "lev": (nb, sc["cp"] // 32, 4 if sc["packed"] else 8, 64),
            "msh": (nb, ngw, 16),
            "zsh": (nb, zw, 16),
            "ka": (nb * 16,),
            "kb": (nb * 16,),
        }
    return {
        "lev": (nb, sc["cp"], sc["tile"] // 2 if sc["packed"] else sc["tile"]),
        "msh": (nb, ngw, sc["tile"]),
        "zsh": (sc["rows"], zw),
        "ka": (sc["rows"],),
        "kb": (sc["rows"],),
    }


def load(k: str) -> dict[str, Matrix] | None:
    """The matrices cached under key ``k`` (memory-mapped, read-only), or None."""
    d = cache_dir()
    if d is None:
        return None
    path = d / f"{k}.safetensors"
    if not path.is_file():
        return None
    try:
        f = SafetensorsFile(path)
        meta = json_loads(f.metadata["maskc.layout"])
        if meta.get("key") != k:
            return None
        raw = np.memmap(path, np.uint8, mode="r")
        out = {}
        for name, sc in meta["matrices"].items():
            arrs = {}
            for fld in _FIELDS:
                info = f.tensors[f"{name}/{fld}"]
                flat = raw[info.begin : info.begin + info.nbytes]
                arrs[fld] = flat.view(WRITABLE[info.dtype]).reshape(info.shape)
            want = _shapes(sc)
            if sc["tile"] not in (16, 128) or any(arrs[f].shape != want[f] for f in _FIELDS):
                return None
            out[name] = Matrix(name, *(sc[s] for s in _SCALARS[:3]), arrs["lev"],
                               bool(sc["packed"]), sc["d"], sc["off"], arrs["msh"], arrs["zsh"],
                               arrs["ka"], arrs["kb"], bool(sc["has_zero"]), sc["rep"],
                               sc["tile"], sc["lmin"])  # fmt: skip
        return out
    except (InputError, ParseError, OSError, KeyError, TypeError, ValueError, ZeroDivisionError):
        return None


def save(k: str, mats: dict[str, Matrix]) -> None:
    """Caches ``mats`` under key ``k`` (atomically; silently skipped when the folder cannot
    be written or the matrices exceed :data:`MAX_BYTES`: the cache only saves time)."""
    d = cache_dir()
    if d is None or sum(a.nbytes for m in mats.values() for a in m.arrays()) > MAX_BYTES:
        return
    if any(m.fp4 for m in mats.values()):  # FP4 layouts (half groups, kt, lut) are not cached
        return
    tensors = {f"{n}/{fld}": getattr(m, fld) for n, m in mats.items() for fld in _FIELDS}
    scalars = {
        n: {s: (int(v) if isinstance(v, bool | np.bool_ | np.integer) else v)
            for s in _SCALARS for v in [getattr(m, s)]}
        for n, m in mats.items()
    }  # fmt: skip
    meta = {"maskc.layout": json.dumps({"key": k, "matrices": scalars}, sort_keys=True)}
    try:
        d.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=d, suffix=".tmp")
        os.close(fd)
        try:
            write_safetensors(tmp, tensors, metadata=meta, align=64)
            os.replace(tmp, d / f"{k}.safetensors")
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    except OSError:
        return
