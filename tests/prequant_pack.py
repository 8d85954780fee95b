"""Packers of pre-quantized checkpoints, written from each format's published description
(docs/import-design.md cites them), never from maskc's unpacker; and :func:`quantize_folder`,
which turns a seeded tiny float model into a GPTQ, AWQ or compressed-tensors checkpoint."""

from __future__ import annotations

import numpy as np

# -- packers, from the formats' descriptions ----------------------------------------------------


def _words_from_stream(codes, bits, nwords):
    """Sequential packing: code j at bits bits*j of the little-endian stream of int32 words
    (GPTQ 2/4/8 bits, compressed-tensors' pack_to_int32)."""
    stream = 0
    for j, v in enumerate(codes):
        stream |= int(v) << (bits * j)
    return [(stream >> (32 * w)) & 0xFFFFFFFF for w in range(nwords)]


def _gptq3_words(codes):
    """AutoGPTQ's 3-bit loop: 10 codes, one split over the word boundary (2 + 1 bits), 10
    codes shifted by 1, one split (1 + 2 bits), 10 codes shifted by 2; 32 codes in 3 words."""
    out = []
    for i0 in range(0, len(codes), 32):
        c = [int(v) for v in codes[i0 : i0 + 32]]
        w0 = w1 = w2 = 0
        for j in range(10):
            w0 |= c[j] << (3 * j)
        w0 |= (c[10] << 30) & 0xFFFFFFFF
        w1 |= (c[10] >> 2) & 1
        for j in range(10):
            w1 |= c[11 + j] << (3 * j + 1)
        w1 |= (c[21] << 31) & 0xFFFFFFFF
        w2 |= (c[21] >> 1) & 3
        for j in range(10):
            w2 |= c[22 + j] << (3 * j + 2)
        out += [w0, w1, w2]
    return out


def _i32(words):
    return np.array(words, dtype=np.uint32).view(np.int32)


def _pack_seq(codes, bits):
    """Pack the last axis of an int matrix sequentially (3 bits: AutoGPTQ's loop)."""
    n = codes.shape[-1]
    if bits == 3:
        rows = [_gptq3_words(list(r) + [0] * (-n % 32)) for r in codes]
    else:
        per = 32 // bits
        rows = [_words_from_stream(r, bits, -(-n // per)) for r in codes]
    return _i32(rows)


def pack_gptq(q, zero, scale, bits, v1=True, g_idx=None):
    """q [R, C], zero [R, NG] (integers), scale [R, NG] float16 -> the GPTQ tensors."""
    out = {
        "qweight": np.ascontiguousarray(_pack_seq(q, bits).T),  # packed along in: [C*b/32, R]
        "qzeros": _pack_seq(zero.T - (1 if v1 else 0), bits),  # [NG, R*b/32]
        "scales": np.ascontiguousarray(scale.T.astype(np.float16)),
    }
    if g_idx is not None:
        out["g_idx"] = g_idx.astype(np.int32)
    return out


AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]


def _awq_words(cols):
    """8 output columns per word, nibble n holding column 8k + AWQ_ORDER[n]."""
    words = []
    for k in range(len(cols) // 8):
        w = 0
        for n in range(8):
            w |= int(cols[8 * k + AWQ_ORDER[n]]) << (4 * n)
        words.append(w)
    return words


def pack_awq(q, zero, scale):
    return {
        "qweight": _i32([_awq_words(row) for row in q.T]),  # [C, R/8]
        "qzeros": _i32([_awq_words(row) for row in zero.T]),  # [NG, R/8]
        "scales": np.ascontiguousarray(scale.T.astype(np.float16)),
    }


def pack_ct(q_signed, zp_signed, scale, bits):
    """compressed-tensors pack-quantized: signed values + 2^(bits-1), sequential along in;
    zero points packed along dimension 0 (out)."""
    off = 1 << (bits - 1)
    out = {
        "weight_packed": _pack_seq(q_signed + off, bits),
        "weight_scale": scale,
        "weight_shape": np.array(q_signed.shape, dtype=np.int64),
    }
    if zp_signed is not None:
        out["weight_zero_point"] = np.ascontiguousarray(_pack_seq((zp_signed + off).T, bits).T)
    return out


# -- a whole checkpoint -------------------------------------------------------------------------

LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _rtn(w, bits, group, sym, lo_zero):
    """Round-to-nearest with float16 scales: integer codes [R, C], zeros [R, NG], scales."""
    r, c = w.shape
    ng = c // group
    g = w.astype(np.float64).reshape(r, ng, group)
    top = (1 << bits) - 1
    if sym:
        amax = np.maximum(np.abs(g).max(axis=2), 1e-6)
        scale = (amax / ((1 << (bits - 1)) - 1)).astype(np.float16)
        zero = np.full((r, ng), 1 << (bits - 1), dtype=np.int64)
    else:
        lo, hi = np.minimum(g.min(axis=2), 0), np.maximum(g.max(axis=2), 0)
        scale = np.maximum((hi - lo) / top, 1e-6).astype(np.float16)
        zero = np.clip(np.rint(-lo / scale.astype(np.float64)), lo_zero, top).astype(np.int64)
    s = scale.astype(np.float64)[:, :, None]
    q = np.clip(np.rint(g / s) + zero[:, :, None], 0, top).astype(np.int64)
    return q.reshape(r, c), zero, scale


def quantize_folder(src, dst, method, bits=4, group=32, sym=False, v1=True):
    """Folder ``src`` (a float model) as a ``method`` checkpoint in ``dst``: every decoder
    layer's linear weights rounded to nearest and packed; the rest copied. Returns the
    quantization_config written and each packed weight's definition ``scale * (q - zero)``
    (float64, exact: an F16 scale times an integer below 2^9), by weight name."""
    import json
    import shutil

    from maskc.safetensors_io import SafetensorsFile, write_safetensors

    shutil.copytree(src, dst)
    st = SafetensorsFile(dst / "model.safetensors")
    out, refs = {}, {}
    for name in sorted(st.tensors):
        w = st.read(name)
        parts = name.split(".")
        if not (name.endswith(".weight") and len(parts) > 2 and parts[-2] in LINEAR):
            out[name] = w
            continue
        prefix = name[: -len(".weight")]
        q, zero, scale = _rtn(np.asarray(w, dtype=np.float32), bits, group, sym, 1 if v1 else 0)
        zg = np.repeat(zero, group, axis=1)
        refs[name] = np.repeat(scale.astype(np.float64), group, axis=1) * (q - zg)
        if method == "gptq":
            packed = pack_gptq(q, zero, scale, bits, v1=v1)
        elif method == "awq":
            packed = pack_awq(q, zero, scale)
        else:
            off = 1 << (bits - 1)
            packed = pack_ct(q - off, None if sym else zero - off, scale, bits)
        out |= {f"{prefix}.{k}": v for k, v in packed.items()}
    del st
    write_safetensors(dst / "model.safetensors", out)
    if method == "gptq":
        qc = {"quant_method": "gptq", "bits": bits, "group_size": group, "sym": sym}
        qc |= {"desc_act": False, "checkpoint_format": "gptq" if v1 else "gptq_v2"}
    elif method == "awq":
        qc = {"quant_method": "awq", "bits": 4, "group_size": group, "zero_point": not sym}
        qc["version"] = "gemm"
    else:
        weights = {"num_bits": bits, "type": "int", "symmetric": sym, "strategy": "group"}
        weights["group_size"] = group
        qc = {
            "quant_method": "compressed-tensors",
            "format": "pack-quantized",
            "config_groups": {"group_0": {"targets": ["Linear"], "weights": weights}},
            "ignore": ["lm_head"],
        }
    cfg = json.loads((dst / "config.json").read_text())
    cfg["quantization_config"] = qc
    (dst / "config.json").write_text(json.dumps(cfg, indent=2))
    return qc, refs
