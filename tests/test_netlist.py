"""The functional netlist (docs/netlist.md): contents, reassembly, canonical dump, integrity."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from helpers import micro_fabric, quantizer_output
from safetensors.numpy import load_file

from maskc.build import write_manifest
from maskc.netlist import load_netlist


@pytest.fixture(scope="module")
def built(model_cache, tmp_path_factory):
    """tiny models compiled on a small fabric that cuts every matrix into several tiles."""
    from maskc.pipeline import CompileOptions, compile_model

    out = {}
    root = tmp_path_factory.mktemp("nl")
    fab = micro_fabric(root)
    for preset in ("tiny", "tiny-qwen2"):
        gen = model_cache(preset)
        b = root / preset
        compile_model(gen.path, b, CompileOptions(fabric=fab))
        out[preset] = b
        # the quantizer's output for the same inputs, which the build keeps only as tiles
        _QUANT[b] = quantizer_output(gen.path, root / f"{preset}-quant", CompileOptions(fabric=fab))
    return out


_QUANT: dict = {}


def _quant(build, name):
    """Matrix ``name`` as the quantizer wrote it (quant/ of a compile stopped after quantize)."""
    store = _QUANT[build]
    e = store.index[name]
    assert "stored" not in e
    return store.matrix(name)


def test_netlist_files_and_structure(built):
    b = built["tiny"]
    root = b / "netlist"
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) == [
        "netlist.json",
        "params.safetensors",
        "tiles/global.safetensors",
        "tiles/layer-000.safetensors",
        "tiles/layer-001.safetensors",
        "tokenizer.json",
    ]
    doc = json.loads((root / "netlist.json").read_text())
    assert doc["format"] == "maskc-netlist" and doc["version"] == 5
    assert doc["numerics"]["contract"] == 1 and doc["numerics"]["signal_frac"] == 12
    kinds = [op["op"] for op in doc["ops"]]
    assert kinds[0] == "embed" and kinds[-1] == "logits"
    assert kinds.count("attention") == 2 and kinds.count("rmsnorm") == 5
    # every op's matrix exists; the tied head reads the embedding's tiles
    assert doc["ops"][-2]["matrix"] == "model.embed_tokens.weight"
    a = doc["architecture"]
    per_token = 2 * a["num_kv_heads"] * (a["head_dim"] + 4)
    for die in doc["sram"]["dies"]:
        kv = die["kv"]
        assert kv["bytes_per_token"] == per_token * len(kv["layers"])
        pr = die["params"]  # the boot image, then the KV cache, then the adapters
        assert pr["base"] == 0 and kv["base"] == pr["bytes"] > 0
        assert die["adapters"]["base"] == kv["base"] + kv["bytes"]
        assert pr["bytes"] + kv["bytes"] + die["adapters"]["bytes"] == die["bytes"]
        assert kv["bytes"] == kv["bytes_per_token"] * doc["sram"]["context"]
    assert doc["tokenizer"]["chat_template"] and doc["tokenizer"]["eos_token_id"] == 2
    # the compile report records the netlist and the manifest the inputs and options
    man = json.loads((b / "manifest.json").read_text())
    assert man["stages"] == ["ingest", "quantize", "place", "netlist", "layout"]
    assert "model/config.json" in man["inputs"] and man["options"]["fabric_name"] == "micro"


def test_tiles_reassemble_to_the_quantized_matrices(built):
    """Every matrix read back from its tiles equals the quantizer's output, field by field, and
    every tile sits at a distinct grid position."""
    for b in built.values():
        nl = load_netlist(b)
        grid = nl.doc["placement"]["grid"]
        seen = set()
        for name, meta in nl.matrices.items():
            got, want = nl.matrix(name), _quant(b, name)
            for f in (
                "codes",
                "levels",
                "scale_m",
                "scale_s",
                "scale_e",
                "zero_m",
                "zero_s",
                "zero_e",
            ):
                a, w = getattr(got, f), getattr(want, f)
                assert (a is None) == (w is None) and (a is None or np.array_equal(a, w)), f
            pos = load_file(str(nl.path / meta["file"]))[f"{name}/pos"]
            assert len(pos) == meta["tiles"] > 1
            for d, x, y in pos.tolist():
                assert 0 <= x < grid[0] and 0 <= y < grid[1]
                assert (d, x, y) not in seen
                seen.add((d, x, y))
        assert len(seen) == nl.doc["placement"]["tiles_used"]


def test_quant_keeps_no_quantized_arrays(built):
    """A complete build's quant/ holds only the float tensors (read with the safetensors
    library); quant/index.json marks every quantized matrix as stored in the netlist."""
    for b in built.values():
        doc = json.loads((b / "quant" / "index.json").read_text())
        assert doc["version"] == 2
        idx = doc["tensors"]
        floats = {n for n, e in idx.items() if e["kind"] == "float"}
        assert floats and len(floats) < len(idx)
        for name, e in idx.items():
            if e["kind"] == "quantized":
                assert e["stored"] == "netlist" and "file" not in e, name
        stored = set()
        for f in sorted((b / "quant").glob("*.safetensors")):
            t = load_file(str(f))
            assert all(v.dtype == np.float32 for v in t.values()), f
            stored |= set(t)
        assert stored == floats
        # what quant/ held before for the same inputs: every array, in one byte per code
        qdir = _QUANT[b].build / "quant"
        before = sum(p.stat().st_size for p in qdir.glob("*.safetensors"))
        after = sum(p.stat().st_size for p in (b / "quant").glob("*.safetensors"))
        assert after * 20 < before


@pytest.mark.parametrize("rows_per_block", [5, 4096])
def test_quant_store_reads_matrices_back_from_the_netlist(built, monkeypatch, rows_per_block):
    """QuantStore reads each quantized matrix of a complete build from the netlist's tiles:
    every field equal to the quantizer's own output, and dequantized (in row blocks that cut
    across tiles when ``rows_per_block`` is 5) to the same float32 bytes."""
    import maskc.quantize.store as store_mod

    monkeypatch.setattr(store_mod, "DEQUANT_ROWS", rows_per_block)
    for b in built.values():
        idx = json.loads((b / "quant" / "index.json").read_text())["tensors"]
        store = store_mod.QuantStore(b, idx)
        want_store = _QUANT[b]
        for name, e in idx.items():
            if e["kind"] != "quantized":
                assert np.array_equal(store.float(name), want_store.float(name))
                continue
            assert store.in_netlist(name)
            got, want = store.matrix(name), want_store.matrix(name)
            assert got.shape == want.shape and got.fmt == want.fmt and got.method == want.method
            for f in ("codes", "levels", "scale_m", "scale_s", "scale_e", "zero_m", "zero_s"):
                a, w = getattr(got, f), getattr(want, f)
                assert (a is None) == (w is None) and (a is None or np.array_equal(a, w)), f
            whole = want_store.dequantized(name)
            assert store.dequantized(name).tobytes() == whole.tobytes()
            a, b = len(whole) // 3, len(whole) // 3 + 6  # rows alone, across a tile edge or not
            assert store.dequantized_rows(name, a, b).tobytes() == whole[a:b].tobytes()


def test_a_build_with_quant_arrays_still_reads(built, tmp_path, cli):
    """A build written before the arrays moved to the netlist (quant/ holding every array,
    index version 1) still reads: inspect --tensor and emulate --compare-dequantized give the
    same output as on the complete build."""
    b = tmp_path / "old"
    shutil.copytree(built["tiny"], b)
    shutil.rmtree(b / "quant")
    shutil.copytree(_QUANT[built["tiny"]].build / "quant", b / "quant")
    assert json.loads((b / "quant" / "index.json").read_text())["version"] == 1
    man = json.loads((b / "manifest.json").read_text())
    write_manifest(b, man["stages"])
    name = "model.layers.1.mlp.up_proj.weight"
    for args in (
        ("inspect", "--tensor", name, "--json"),
        ("emulate", "--tokens", "1,5,9", "--compare-dequantized", "--json"),
    ):
        old, new = cli(args[0], b, *args[1:]), cli(args[0], built["tiny"], *args[1:])
        assert old.code == new.code == 0, (old.err, new.err)
        assert old.out == new.out.replace(str(built["tiny"]), str(b))


def test_qwen2_biases_and_norms_are_fixed_point(built):
    nl = load_netlist(built["tiny-qwen2"])
    p = nl.params()
    b = p["model.layers.0.self_attn.q_proj.bias"]
    assert b.dtype == np.int32
    g = p["model.layers.0.input_layernorm.weight"]
    assert g.dtype == np.int16 and np.abs(g).max() >= 2**14  # the largest frac that fits
    ops = [op for op in nl.doc["ops"] if op["op"] == "matmul" and op.get("bias")]
    assert len(ops) == 6  # q, k, v of two layers


def test_dump_is_canonical_across_compiles(model_cache, tmp_path, cli):
    gen = model_cache("tiny-gqa-bf16")
    dumps = []
    for k in range(2):
        out = tmp_path / f"b{k}"
        assert cli("compile", gen.path, "-o", out).code == 0
        r = cli("inspect", out, "--netlist")
        assert r.code == 0, r.err
        dumps.append(r.out)
    assert dumps[0] == dumps[1]
    lines = dumps[0].splitlines()
    assert lines[0] == "maskc-netlist v5"
    tiles = [ln for ln in lines if ln.startswith("  tile ")]
    doc = json.loads((tmp_path / "b0" / "netlist" / "netlist.json").read_text())
    assert len(tiles) == doc["placement"]["tiles_used"]
    assert sum(ln.startswith("op ") for ln in lines) == len(doc["ops"])
    for f in ("netlist.json", "params.safetensors", "tiles/layer-000.safetensors"):
        a = (tmp_path / "b0" / "netlist" / f).read_bytes()
        assert a == (tmp_path / "b1" / "netlist" / f).read_bytes(), f


@pytest.mark.parametrize(
    "rel",
    [
        "netlist/netlist.json",
        "netlist/params.safetensors",
        "netlist/tiles/layer-001.safetensors",
        "netlist/tiles/global.safetensors",
        "netlist/tokenizer.json",
    ],
)
def test_tampering_with_any_netlist_file_is_exit_5(built, tmp_path, cli, rel):
    b = tmp_path / "b"
    shutil.copytree(built["tiny"], b)
    p = b / rel
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x01
    p.write_bytes(bytes(data))
    for args in (("inspect", b, "--netlist"), ("emulate", b, "--tokens", "1,2", "-n", "1")):
        r = cli(*args)
        assert r.code == 5 and rel in r.err and "Traceback" not in r.err, (args, r)


def test_a_consistent_but_invalid_netlist_is_exit_3(built, tmp_path, cli):
    """A netlist edited and re-sealed (hashes updated) is still validated before use."""
    b = tmp_path / "b"
    shutil.copytree(built["tiny"], b)
    man = json.loads((b / "manifest.json").read_text())
    nj = b / "netlist" / "netlist.json"
    doc = json.loads(nj.read_text())
    doc["ops"][1]["matrix"] = "no.such.matrix"
    doc["ops"][1]["op"] = "matmul"
    nj.write_text(json.dumps(doc))
    write_manifest(b, man["stages"])
    r = cli("emulate", b, "--tokens", "1,2", "-n", "1")
    assert r.code == 3 and "no.such.matrix" in r.err, r
    doc["ops"][1]["matrix"] = doc["ops"][2]["matrix"]
    doc["tokenizer"]["file"] = "../manifest.json"
    nj.write_text(json.dumps(doc))
    write_manifest(b, man["stages"])
    r = cli("emulate", b, "--tokens", "1,2", "-n", "1")
    assert r.code == 3 and "tokenizer file" in r.err, r
    doc["tokenizer"]["file"] = "tokenizer.json"
    for op_edit, needle in (
        ({"op": "rmsnorm", "in": "x"}, "lacks"),
        ({"op": "fft", "in": "x"}, "fft"),
        ({**doc["ops"][1], "gamma": "nope"}, "nope"),
        ({**doc["ops"][1], "in": "later"}, "later"),
    ):
        bad = json.loads(json.dumps(doc))
        bad["ops"][1] = op_edit
        nj.write_text(json.dumps(bad))
        write_manifest(b, man["stages"])
        r = cli("emulate", b, "--tokens", "1,2", "-n", "1")
        assert r.code == 3 and needle in r.err and "Traceback" not in r.err, (op_edit, r)
    doc["ops"][1] = {"op": "rmsnorm", "in": "x"}
    doc["version"] = 99
    nj.write_text(json.dumps(doc))
    write_manifest(b, man["stages"])
    r = cli("inspect", b, "--netlist")
    assert r.code == 3 and "version" in r.err, r


def test_overlapping_tiles_are_refused(built, tmp_path):
    """Tile blocks are checked: two tiles claiming the same cells is an input error."""
    from maskc.errors import InputError
    from maskc.safetensors_io import write_safetensors

    b = tmp_path / "b"
    shutil.copytree(built["tiny"], b)
    f = b / "netlist" / "tiles" / "layer-000.safetensors"
    arrays = load_file(str(f))
    name = "model.layers.0.mlp.down_proj.weight"
    blk = arrays[f"{name}/block"].copy()
    assert len(blk) >= 2
    blk[1] = blk[0]
    arrays[f"{name}/block"] = blk
    write_safetensors(f, arrays)
    with pytest.raises(InputError, match=r"overlaps|cover"):
        load_netlist(b).matrix(name)


def test_group_size_not_a_multiple_of_32_is_refused(model_cache, tmp_path, cli):
    """The chip reads activations in groups of 32 (docs/numerics.md): -g 16 places on hc1 but
    cannot be computed, so compile stops at the netlist with exit 3 and writes nothing."""
    r = cli("compile", model_cache("tiny").path, "-o", tmp_path / "b", "-g", "16")
    assert r.code == 3 and "multiple of 32" in r.err and "Traceback" not in r.err, r
    assert not (tmp_path / "b").exists()


def test_a_mistyped_matrix_entry_is_exit_3(model_cache, tmp_path):
    """Found by the mutation fuzzer: a netlist.json whose matrix ``format`` has a misspelt
    field was a TypeError (exit 70); now every matrix entry is checked at load."""
    from maskc.errors import InputError
    from maskc.netlist import load_netlist
    from maskc.pipeline import CompileOptions, compile_model

    b = tmp_path / "b"
    compile_model(model_cache("tiny").path, b, CompileOptions(verify=False))
    p = b / "netlist" / "netlist.json"
    good = p.read_text()
    name = "model.layers.0.mlp.up_proj.weight"
    for edit, needle in (
        (lambda m: m["format"].update(roup_size=m["format"].pop("group_size")), "roup_size"),
        (lambda m: m["format"].update(bits="4"), "bits"),
        (lambda m: m.update(shape=[64]), "shape"),
        (lambda m: m.update(tiles=0), "tiles"),
        (lambda m: m.update(tile_shape=[64, True]), "tile_shape"),
    ):
        doc = json.loads(good)
        edit(doc["matrices"][name])
        p.write_text(json.dumps(doc))
        with pytest.raises(InputError, match=needle):
            load_netlist(b)


# -- storage: nibble-packed, narrow, aligned, memory-mapped tiles (netlist version 3) -------------


def _raw_tensor(path, key):
    """dtype string, shape and absolute file offset of ``key``, parsed from the safetensors
    header with struct/json only."""
    import struct

    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    e = json.loads(data[8 : 8 + n])[key]
    return e["dtype"], e["shape"], 8 + n + e["data_offsets"][0], data


def test_codes_are_nibble_packed_aligned_and_memory_mapped(built):
    """Every matrix of 4 bits or fewer stores uint8 [n, TR, W // 2], cell 2j in the low nibble
    and 2j + 1 in the high one (unpacked here with numpy bit operations), 8-byte aligned; 8-bit
    codes stay [n, TR, W]. packed_codes is a read-only memory map of exactly those bytes."""
    from maskc.netlist.loader import packed_codes, unpack_codes

    nl = load_netlist(built["tiny"])
    kinds = set()
    for name, m in nl.matrices.items():
        tr, w = m["tile_shape"]
        bits = m["format"]["bits"]
        path = nl.path / m["file"]
        dtype, shape, off, data = _raw_tensor(path, f"{name}/codes")
        assert dtype == "U8" and off % 8 == 0
        raw = np.frombuffer(data, np.uint8, int(np.prod(shape)), off).reshape(shape)
        if bits <= 4:
            kinds.add("packed")
            assert shape == [m["tiles"], tr, w // 2]
            mine = np.empty((m["tiles"], tr, w), np.uint8)
            mine[..., 0::2] = np.bitwise_and(raw, 0x0F)
            mine[..., 1::2] = np.right_shift(raw, 4)
        else:
            kinds.add("bytes")
            assert shape == [m["tiles"], tr, w]
            mine = raw
        # the tiles hold the quantizer's codes (independent reassembly from the blocks)
        want = _quant(built["tiny"], name).codes
        blocks = load_file(str(path))[f"{name}/block"]
        for i, (r0, nr, c0, nc) in enumerate(blocks.tolist()):
            assert np.array_equal(mine[i, :nr, :nc], want[r0 : r0 + nr, c0 : c0 + nc])
            assert not mine[i, nr:].any() and not mine[i, :, nc:].any()  # padding is zero
        for src in (nl, path):
            p = packed_codes(src, name)
            assert isinstance(p, np.memmap) and not p.flags.writeable
            assert p.offset == off and np.array_equal(p, raw)
        assert np.array_equal(unpack_codes(packed_codes(nl, name), w), mine)
        t = nl.tile_arrays(name)
        assert np.array_equal(t["codes"][1], mine[1])
        assert np.array_equal(t["codes"][1:3, :2], mine[1:3, :2])
        assert np.array_equal(t["codes"][0, 3], mine[0, 3])
    assert kinds == {"packed", "bytes"}  # the tiny model has both (8-bit embedding)


@pytest.mark.parametrize("version", [1, 6])
def test_an_older_netlist_is_a_clear_error(built, tmp_path, cli, version):
    """Version 1 (one byte per code) and unknown versions are refused, naming the version."""
    b = tmp_path / "b"
    shutil.copytree(built["tiny"], b)
    man = json.loads((b / "manifest.json").read_text())
    nj = b / "netlist" / "netlist.json"
    doc = json.loads(nj.read_text())
    doc["version"] = version
    nj.write_text(json.dumps(doc))
    write_manifest(b, man["stages"])
    for args in (("inspect", b, "--netlist"), ("verify", b), ("emulate", b, "--tokens", "1")):
        r = cli(*args)
        assert r.code == 3 and f"netlist version {version}" in r.err and "recompile" in r.err, r
        assert "Traceback" not in r.err


def test_group_fields_are_stored_in_their_rom_bits(built):
    """Version 3 stores each group field of at most 8 ROM bits in one byte (int8 when signed):
    read with the safetensors library, the tiles hold the quantizer's values exactly, and the
    loader hands them back in the field's own dtype."""
    nl = load_netlist(built["tiny"])
    for name, m in nl.matrices.items():
        raw = load_file(str(nl.path / m["file"]))
        fmt = m["format"]
        want = _quant(built["tiny"], name)
        wide = nl.tile_arrays(name)
        for f, bits_key, dt in (
            ("scale_m", "scale_bits", np.uint8),
            ("scale_s", "scale_shift_bits", np.uint8),
            ("zero_m", "zero_bits", np.int8),
            ("zero_s", "zero_shift_bits", np.uint8),
        ):
            assert fmt[bits_key] <= 8
            assert raw[f"{name}/{f}"].dtype == dt, (name, f)
            assert wide[f][0].dtype == getattr(want, f).dtype
            for i, (r0, nr, c0, nc) in enumerate(raw[f"{name}/block"].tolist()):
                k, g0 = -(-nc // fmt["group_size"]), c0 // fmt["group_size"]
                got = raw[f"{name}/{f}"][i, :nr, :k].astype(np.int64)
                assert np.array_equal(got, getattr(want, f)[r0 : r0 + nr, g0 : g0 + k])
                assert np.array_equal(wide[f][i], raw[f"{name}/{f}"][i].astype(wide[f].dtype))


def test_a_version_2_netlist_still_reads(built, tmp_path):
    """Version 2 stored every group field in its own dtype (uint16/int16 mantissas): such a
    build reads the same matrices as version 3, and version 3's narrow fields under a version 2
    netlist.json are refused naming the field."""
    from maskc.errors import InputError
    from maskc.safetensors_io import write_safetensors

    b = tmp_path / "b"
    shutil.copytree(built["tiny"], b)
    man = json.loads((b / "manifest.json").read_text())
    nj = b / "netlist" / "netlist.json"
    doc = json.loads(nj.read_text())
    doc["version"] = 2
    nj.write_text(json.dumps(doc))
    write_manifest(b, man["stages"])
    with pytest.raises(InputError, match=r"scale_m.*version 2 stores uint16.*recompile"):
        load_netlist(b).matrix("model.layers.0.self_attn.q_proj.weight")
    wide = {"scale_m": np.uint16, "zero_m": np.int16, "scale_s": np.uint8, "zero_s": np.uint8}
    for f in sorted((b / "netlist" / "tiles").glob("*.safetensors")):
        t = {k: v for k, v in load_file(str(f)).items() if not k.endswith(":pad")}
        for k in t:
            if k.rsplit("/", 1)[-1] in wide:
                t[k] = t[k].astype(wide[k.rsplit("/", 1)[-1]])
        write_safetensors(f, t, align=8)
    old, new = load_netlist(b), load_netlist(built["tiny"])
    for name in new.matrices:
        a, c = old.matrix(name), new.matrix(name)
        for f in ("codes", *wide):
            x, y = getattr(a, f), getattr(c, f)
            assert (x is None) == (y is None) and (x is None or np.array_equal(x, y)), (name, f)


@pytest.mark.parametrize(
    "array, pattern",
    [("scale_m", r"scale_m.*uint16.*recompile"), ("codes", r"codes.*recompile")],
)
def test_an_older_tile_layout_in_a_version_3_netlist_is_refused(built, tmp_path, array, pattern):
    """A tiles file in an older layout under a version-3 netlist.json is refused, naming the
    array: scale_m as uint16 (version 2), codes one per byte (version 1)."""
    from maskc.errors import InputError
    from maskc.safetensors_io import write_safetensors

    b = tmp_path / "b"
    shutil.copytree(built["tiny"], b)
    nl = load_netlist(b)
    name = "model.layers.0.self_attn.q_proj.weight"
    path = nl.path / nl.matrices[name]["file"]
    t = {k: v for k, v in load_file(str(path)).items() if not k.endswith(":pad")}
    if array == "codes":
        t[f"{name}/codes"] = nl.tile_arrays(name)["codes"][:]
    else:
        t[f"{name}/scale_m"] = t[f"{name}/scale_m"].astype(np.uint16)
    write_safetensors(path, t, align=8)
    with pytest.raises(InputError, match=pattern):
        load_netlist(b).matrix(name)


def test_a_manifest_of_a_big_model_is_not_refused_for_its_size(built, tmp_path, cli):
    """manifest.json lists a ROM hash per tile: an 8B model's is ~4 MB. A manifest above the
    4 MiB that config files are limited to still opens (verify reads it)."""
    b = tmp_path / "b"
    shutil.copytree(built["tiny"], b)
    m = b / "manifest.json"
    m.write_text(m.read_text() + " " * (5 << 20))  # trailing whitespace: the same JSON
    r = cli("verify", b)
    assert r.code == 0, r
