"""Assertions shared by the test modules."""

from __future__ import annotations

from pathlib import Path


def assert_bad(result, *needles):
    """Exit 3, one line on stderr naming the problem, no traceback, nothing on stdout."""
    assert result.code == 3, (result.code, result.err)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("maskc: error: ")
    assert "Traceback" not in result.err
    for n in needles:
        assert n.lower() in result.err.lower(), (n, result.err)
    assert result.out == ""


def reseal(build: Path, rel: str) -> None:
    """Seal ``build/rel`` into the build's manifest as the compiler would have (its sha256 and
    size), the other entries kept: what an edited build looks like once its hashes pass."""
    import hashlib
    import json

    mp = Path(build) / "manifest.json"
    m = json.loads(mp.read_text())
    data = (Path(build) / rel).read_bytes()
    m["files"][rel] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    mp.write_text(json.dumps(m, indent=2, sort_keys=True) + "\n")


def micro_fabric(dirpath) -> str:
    """A fabric of 16 x 64-cell tiles (the helper's name "micro"): small enough that every
    matrix of the tiny test models is cut into several tiles. Returns the TOML path."""
    import re

    from maskc.fabric import load_fabric

    text = load_fabric("mini").to_toml()
    for key, value in (
        ("name", '"micro"'),
        ("rows", "16"),
        ("columns", "64"),
        ("three_bit", '"cell"'),
        ("scale_rom_bits", "2048"),
        ("tile_columns", "20"),
        ("tile_rows", "20"),
    ):
        text = re.sub(rf"(?m)^{key} = .*$", f"{key} = {value}", text, count=1)
    p = Path(dirpath) / "micro.toml"
    p.write_text(text)
    return str(p)


def quantizer_output(model_path, out, opts):
    """The quantizer's own output for a compile of ``model_path`` with ``opts``: the compile's
    steps up to and including "quantize" run into ``out``, whose quant/ then holds every
    quantized array (a complete build keeps them only in its netlist). Returns that
    QuantStore."""
    from maskc.pipeline.runner import COMPILE, Quiet, run_steps
    from maskc.quantize import QuantStore

    k = [s.name for s in COMPILE].index("quantize")
    values = run_steps(COMPILE[: k + 1], Path(out), Path(model_path), opts, Quiet())
    return QuantStore(Path(out), values["quantized"].store.index)


def raw_fields(build, name) -> dict:
    """Quantized matrix ``name``'s whole fields (``codes`` ``[R, Cp]``, ``levels``, ``scale_m``
    ...) read with the ``safetensors`` library and numpy only: from quant/ when it holds them
    (a build written before they moved), otherwise reassembled by hand from the netlist's
    tiles (docs/netlist.md: nibble-packed codes, blocks, zero padding)."""
    import json

    import numpy as np
    from safetensors.numpy import load_file

    build = Path(build)
    e = json.loads((build / "quant" / "index.json").read_text())["tensors"][name]
    if "file" in e:
        t = load_file(build / e["file"])
        return {k.split("/", 1)[1]: v for k, v in t.items() if k.startswith(name + "/")}
    m = json.loads((build / "netlist" / "netlist.json").read_text())["matrices"][name]
    t = {
        k.split("/", 1)[1]: v
        for k, v in load_file(build / "netlist" / m["file"]).items()
        if k.startswith(name + "/") and not k.endswith(":pad")
    }
    r, c = m["shape"]
    g = m["format"]["group_size"]
    cp = -(-c // g) * g
    w = m["tile_shape"][1]
    codes = t["codes"]
    if codes.shape[-1] * 2 == w:  # two codes a byte, the low nibble first
        un = np.empty((*codes.shape[:-1], w), np.uint8)
        un[..., 0::2], un[..., 1::2] = codes & 15, codes >> 4
        t["codes"] = un
    out = {"levels": t["levels"]}
    if "tensor_m" in t:  # nvfp4: one per matrix, in every tiles file's copy
        out["tensor_m"] = t["tensor_m"]
    for k, v in t.items():
        if k in ("pos", "block", "levels", "tensor_m"):
            continue
        width = {w: cp, w // g: cp // g}.get(v.shape[-1]) if v.ndim == 3 else None
        out[k] = np.zeros((r, width) if v.ndim == 3 else (r,), v.dtype)
    for i, (r0, nr, c0, nc) in enumerate(t["block"].tolist()):
        k = -(-nc // g)
        for f, dst in out.items():
            if f in ("levels", "tensor_m"):
                continue
            src = t[f][i, :nr]
            if src.ndim == 1:
                dst[r0 : r0 + nr] = src
            elif f == "codes":
                dst[r0 : r0 + nr, c0 : c0 + k * g] = src[:, : k * g]
            else:
                dst[r0 : r0 + nr, c0 // g : c0 // g + k] = src[:, :k]
    return out


def weights_by_hand(f: dict, shape):
    """A stored matrix's weights from its raw fields (docs/numerics.md, "Weights"):
    ``scale_m * 2^(scale_e - scale_s) * levels[code] + zero_m * 2^(zero_e - zero_s)``."""
    import numpy as np

    _r, c = shape
    ng = f["scale_m"].shape[1]
    g = -(-f["codes"].shape[1] // ng)
    step = f["scale_m"].astype(np.float64) * np.exp2(
        f["scale_e"].astype(np.float64)[:, None] - f["scale_s"]
    )
    w = np.repeat(step, g, axis=1)[:, :c] * f["levels"].astype(np.float64)[f["codes"][:, :c]]
    if "zero_m" in f:
        off = f["zero_m"].astype(np.float64) * np.exp2(
            f["zero_e"].astype(np.float64)[:, None] - f["zero_s"]
        )
        w += np.repeat(off, g, axis=1)[:, :c]
    return w.astype(np.float32)
