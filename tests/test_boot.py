"""The SRAM boot image (issue 19, class 10): every model-specific value that is not a weight is
in boot/sram.d<die>.bin, laid out as docs/sram.md says. Decoded here from the document alone
(struct offsets, numpy.frombuffer) and compared with params.safetensors read by the
`safetensors` library and with the norm ops of netlist.json."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from helpers import micro_fabric, reseal
from safetensors.numpy import load_file


@pytest.fixture(scope="module")
def two_dies(model_cache, tmp_path_factory):
    from maskc.pipeline import CompileOptions, compile_model

    root = tmp_path_factory.mktemp("boot")
    b = root / "b"
    compile_model(model_cache("tiny").path, b, CompileOptions(fabric=micro_fabric(root), dies=2))
    return b


def _decode(build) -> dict[int, dict[str, np.ndarray]]:
    """docs/sram.md: per die, entries at 64-byte multiples, little-endian, in index order."""
    index = json.loads((build / "boot" / "index.json").read_text())
    assert index["format"] == "maskc-boot" and index["version"] == 1 and index["align"] == 64
    out = {}
    for die in index["dies"]:
        data = (build / "boot" / die["file"]).read_bytes()
        assert len(data) == die["bytes"] and len(data) % 64 == 0
        vals, end = {}, 0
        for e in die["entries"]:
            dt = np.dtype(e["dtype"]).newbyteorder("<")
            assert e["offset"] % 64 == 0 and e["offset"] >= end
            assert not any(data[end : e["offset"]])  # zero padding
            end = e["offset"] + dt.itemsize * e["count"]
            vals[e["name"]] = np.frombuffer(data, dt, e["count"], e["offset"])
        assert not any(data[end:])
        out[die["die"]] = vals
    return out


def test_the_boot_image_holds_every_model_value_on_its_die(two_dies):
    build = two_dies
    doc = json.loads((build / "netlist" / "netlist.json").read_text())
    params = load_file(str(build / "netlist" / "params.safetensors"))
    dies = _decode(build)
    assert sorted(dies) == [0, 1]
    die_of = {lay["layer"]: d["die"] for d in doc["sram"]["dies"] for lay in d["kv"]["layers"]}
    assert set(die_of.values()) == {0, 1}
    seen = set()
    for name, value in params.items():
        if name.startswith("lut."):  # the base die's tables: not model data
            assert all(name not in v for v in dies.values())
            continue
        if name == "rope.phase_step":  # every die rotates its layers' q and k
            for v in dies.values():
                assert np.array_equal(v[name], value)
            continue
        m = re.match(r"model\.layers\.(\d+)\.", name)
        d = die_of[int(m.group(1))] if m else 1  # the final norm: the last die
        assert np.array_equal(dies[d][name], value.ravel()), name
        assert all(name not in dies[o] for o in dies if o != d)
        seen.add(name)
    norms = [op for op in doc["ops"] if op["op"] == "rmsnorm"]
    assert {op["gamma"] for op in norms} <= seen and len(norms) == 5
    for op in norms:
        d = die_of[op["layer"]] if "layer" in op else 1
        assert dies[d][op["gamma"] + ".gamma_frac"].tolist() == [op["gamma_frac"]]
        assert dies[d][op["gamma"] + ".eps_d"].tolist() == [op["eps_d"]]
    for v in dies.values():
        assert v["attention.inv_sqrt_hd_q16"].tolist() == [doc["numerics"]["inv_sqrt_hd_q16"]]
    # the SRAM plan reserves exactly the image at address 0 of each die
    for d in doc["sram"]["dies"]:
        size = (build / "boot" / f"sram.d{d['die']}.bin").stat().st_size
        assert d["params"] == {"base": 0, "bytes": size} and d["kv"]["base"] == size


def test_verify_catches_a_norm_constant_edited_with_its_hash(two_dies, tmp_path, cli):
    """eps_d of one norm op changed in netlist.json, the manifest re-sealed: the netlist still
    loads (any eps_d is valid) but no longer matches the boot image."""
    b = tmp_path / "b"
    shutil.copytree(two_dies, b)
    nj = b / "netlist" / "netlist.json"
    doc = json.loads(nj.read_text())
    op = next(op for op in doc["ops"] if op["op"] == "rmsnorm")
    op["eps_d"] += 1
    nj.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    reseal(b, "netlist/netlist.json")
    r = cli("verify", b)
    assert r.code in (3, 5) and "Traceback" not in r.err, r
    if r.code == 5:
        assert f"{op['gamma']}.eps_d differs" in r.err, r
