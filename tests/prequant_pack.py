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


def quantize_folder(src, dst, method, bits=4, group=32, sym=False, v1=True, desc_act=()):
    """Folder ``src`` (a float model) as a ``method`` checkpoint in ``dst``: every decoder
    layer's linear weights rounded to nearest (in groups of ``group`` input columns; -1, GPTQ
    only: one group per row) and packed; the rest copied. Returns the
    quantization_config written and each packed weight's definition ``scale * (q - zero)``
    (float64, exact: an F16 scale times an integer below 2^9), by weight name.

    ``desc_act`` (GPTQ): the modules (e.g. ``("down_proj",)``) quantized in an activation
    order, as GPTQ's ``desc_act`` does: a seeded permutation ``P`` of the input columns, group
    ``k`` = columns ``P[kG:(k+1)G]``, ``g_idx[P[j]] = j // G``; qweight stays in the original
    column order."""
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
        w = np.asarray(w, dtype=np.float32)
        order = np.arange(w.shape[1])
        if parts[-2] in desc_act:
            order = np.random.default_rng(len(refs)).permutation(w.shape[1])
        gs = w.shape[1] if group == -1 else group  # -1: one group per row (per channel)
        q, zero, scale = _rtn(w[:, order], bits, gs, sym, 1 if v1 else 0)
        q[:, order] = q.copy()  # back to the original column order
        g_idx = np.empty(w.shape[1], dtype=np.int64)
        g_idx[order] = np.arange(w.shape[1]) // gs
        refs[name] = scale.astype(np.float64)[:, g_idx] * (q - zero[:, g_idx])
        if method == "gptq":
            packed = pack_gptq(q, zero, scale, bits, v1=v1, g_idx=g_idx if desc_act else None)
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
        qc |= {"desc_act": bool(desc_act), "checkpoint_format": "gptq" if v1 else "gptq_v2"}
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


# -- MXFP4 (gpt-oss layout), from the published description ------------------------------------
# transformers src/transformers/integrations/mxfp4.py (convert_moe_packed_tensors, FP4_VALUES)
# and openai/gpt-oss gpt_oss/torch/weights.py (Checkpoint._get_mxfp4_tensor): byte k of a
# 16-byte block holds element 2k in its low nibble and 2k + 1 in its high nibble; an element is
# FP4_VALUES[code] * 2**(scale - 127); gate_up rows interleave gate (even) and up (odd).

_MAGNITUDES = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]
FP4_VALUES = _MAGNITUDES + [-v for v in _MAGNITUDES]  # codes 8..15: the sign set


def mx_quantize(w):
    """A float matrix [R, C] (C a multiple of 32) as MXFP4 codes [R, C] and E8M0 scales
    [R, C/32]: the block's scale 2**(floor(log2 amax) - 2), each element the nearest FP4 value
    (clamped to 6). Any codes are a valid checkpoint; this is the test's own rounding."""
    w = np.asarray(w, dtype=np.float64)
    r, c = w.shape
    b = w.reshape(r, c // 32, 32)
    amax = np.abs(b).max(axis=2)
    e = np.where(amax > 0, np.floor(np.log2(np.where(amax > 0, amax, 1))) - 2 + 127, 0)
    e = np.clip(e, 0, 254).astype(np.uint8)
    x = b / np.exp2(e.astype(np.float64) - 127)[:, :, None]
    vals = np.array(FP4_VALUES)
    codes = np.abs(x[..., None] - vals).argmin(axis=-1).astype(np.uint8)
    return codes.reshape(r, c), e


def mx_pack(codes):
    """E2M1 codes [..., C] (C a multiple of 32) -> blocks uint8 [..., C/32, 16]."""
    codes = np.asarray(codes, dtype=np.uint8)
    pairs = codes.reshape(*codes.shape[:-1], codes.shape[-1] // 32, 16, 2)
    return (pairs[..., 0] | (pairs[..., 1] << 4)).astype(np.uint8)


def mx_value(codes, scales):
    """float64 [R, C]: FP4_VALUES[code] * 2**(scale - 127), the reference readers' definition."""
    v = np.array(FP4_VALUES)[np.asarray(codes, dtype=np.intp)]
    return v * np.repeat(np.exp2(np.asarray(scales, dtype=np.float64) - 127), 32, axis=-1)


def mxfp4_folder(src, dst, fused=("gate_up_proj", "down_proj")):
    """Folder ``src`` (a float MoE model: mixtral or qwen3-moe preset) as an MXFP4 checkpoint in
    ``dst``: every layer's experts fused as ``fused`` (gate_up rows interleaved) and packed, the
    rest copied. Returns each expert matrix's definition (float64), by maskc weight name."""
    import json
    import shutil

    from maskc.safetensors_io import SafetensorsFile, write_safetensors

    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    mixtral = cfg["architectures"][0] == "MixtralForCausalLM"
    names = ("w1", "w3", "w2") if mixtral else ("gate_proj", "up_proj", "down_proj")
    sub = "block_sparse_moe" if mixtral else "mlp"
    n_exp = cfg.get("num_local_experts", cfg.get("num_experts"))
    st = SafetensorsFile(dst / "model.safetensors")
    out = {n: st.read(n) for n in sorted(st.tensors)}
    del st
    refs = {}
    for n in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{n}.{sub}.experts."
        for what in fused:
            parts = names[:2] if what == "gate_up_proj" else names[2:]
            codes, scales = [], []
            for e in range(n_exp):
                mats = []
                for part in parts:
                    name = f"{p}{e}.{part}.weight"
                    q, s = mx_quantize(np.asarray(out.pop(name), dtype=np.float32))
                    refs[name] = mx_value(q, s)
                    mats.append((q, s))
                (gq, gs), (uq, us) = mats if len(mats) == 2 else (mats[0], mats[0])
                if len(mats) == 2:  # interleave gate (even rows) and up (odd rows)
                    q = np.stack([gq, uq], axis=1).reshape(-1, gq.shape[1])
                    s = np.stack([gs, us], axis=1).reshape(-1, gs.shape[1])
                else:
                    q, s = gq, gs
                codes.append(q)
                scales.append(s)
            out[f"{p}{what}_blocks"] = mx_pack(np.stack(codes))
            out[f"{p}{what}_scales"] = np.stack(scales)
    write_safetensors(dst / "model.safetensors", out)
    cfg["quantization_config"] = {
        "quant_method": "mxfp4",
        "modules_to_not_convert": [
            "model.layers.*.self_attn",
            f"model.layers.*.{sub}.gate",
            "model.embed_tokens",
            "lm_head",
        ],
    }
    (dst / "config.json").write_text(json.dumps(cfg, indent=2))
    return refs
