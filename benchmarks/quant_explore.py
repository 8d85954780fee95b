"""Weight-quantization exploration: which schemes meet the next issue's quality targets.

Fake-quantizes (quantize -> dequantize, float32) the 210 linear matrices of a Llama model
(q, k, v, o, gate, up, down of every layer) with a chosen scheme and measures ctx-512
perplexity with the float32 reference (:class:`maskc.reference.FloatLlama`). The embedding
(tied lm_head) stays float32 -- in SmolLM2 it is already Q8_0-dequantized, so it is not counted.

Protocol: non-overlapping windows of 512 tokens from position 0 (stride 512), no BOS added,
every position but each window's first scored; the first ``--cap`` tokens of each text
(default 4096 = 8 windows). Calibration (GPTQ Hessians, importance matrix) uses persuasion.txt
tokens *after* the evaluation cap, so calibration and evaluation text never overlap.

Hardware scale formats (per group, see ``hw``): ``fp16``; ``iN`` = N-bit integer mantissa
times one power-of-two exponent per tensor (signed mantissas for the min / offset);
``iNeK`` = N-bit integer mantissa plus a K-bit per-group right shift from the per-tensor
exponent (a tiny float). bpw counts codes, every per-group field, per-tensor exponents (8 bits
each) and codebooks.

Usage::

    python benchmarks/quant_explore.py                 # the default list of schemes
    python benchmarks/quant_explore.py --schemes float rtn4_g32_fp16 --cap 4096
    python benchmarks/quant_explore.py --list

Results are merged (by scheme name and cap) into benchmarks/results/quant_explore.json.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from maskc.ingest import load_model
from maskc.reference import FloatLlama

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "out" / "smollm2"
TEXTS = {
    "persuasion": Path(__file__).parent / "texts" / "persuasion.txt",
    "gpl-3": Path(__file__).parent / "texts" / "gpl-3.txt",
}
RESULTS = ROOT / "benchmarks" / "results" / "quant_explore.json"
WINDOW = 512
KINDS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
EXP_BITS = 8  # one per-tensor exponent field


def linear_names(num_layers: int) -> list[str]:
    out = []
    for i in range(num_layers):
        for k in KINDS:
            mod = "self_attn" if k.endswith(("q_proj", "k_proj", "v_proj", "o_proj")) else "mlp"
            out.append(f"model.layers.{i}.{mod}.{k}.weight")
    return out


# ----------------------------------------------------------------------------- scale formats


def hw(v: np.ndarray, fmt: str, signed: bool) -> tuple[np.ndarray, int, int]:
    """Round per-group values ``v`` to a hardware format: (values, bits per group, bits per tensor).

    ``fp16``: IEEE half. ``iN``: integer mantissa of N bits (incl. sign if ``signed``) times
    2**E, one E per tensor chosen so the largest |v| fits. ``iNeK``: the same mantissa plus a
    K-bit per-group shift s in [0, 2**K): value = mant * 2**(E - s), s as large as fits (a small
    float with no implicit bit).
    """
    if fmt == "f32":
        return v.astype(np.float32), 32, 0
    if fmt == "fp16":
        return v.astype(np.float16).astype(np.float32), 16, 0
    if "e" in fmt:
        mb, eb = (int(t) for t in fmt[1:].split("e"))
    else:
        mb, eb = int(fmt[1:]), 0
    mag_bits = mb - 1 if signed else mb
    top = float(2**mag_bits - 1)
    a = np.abs(v).astype(np.float64)
    amax = float(a.max())
    if amax == 0.0:
        return np.zeros_like(v, dtype=np.float32), mb + eb, EXP_BITS
    e_t = np.ceil(np.log2(amax / top))
    if eb:
        # per-group shift: the largest s with a * 2**(s - e_t) <= top, capped to 2**eb - 1
        with np.errstate(divide="ignore"):
            s = np.floor(np.log2(top / np.maximum(a, 1e-300))) + e_t
        s = np.clip(s, 0, 2**eb - 1)
    else:
        s = 0.0
    unit = 2.0 ** (e_t - s)
    mant = np.clip(np.round(v / unit), -top if signed else 0, top)
    return (mant * unit).astype(np.float32), mb + eb, EXP_BITS


# ----------------------------------------------------------------------------- group quantizers


def groups(w: np.ndarray, g: int) -> np.ndarray:
    r, c = w.shape
    if c % g:
        raise ValueError(f"group size {g} does not divide the input dimension {c}")
    return w.reshape(r, c // g, g)


def ls_fit(x: np.ndarray, w: np.ndarray, lv: np.ndarray, s0: np.ndarray, m0: np.ndarray):
    """Weighted least squares of x ~ s * lv + m per group (last axis); keeps s0, m0 if singular."""
    sw = w.sum(-1, keepdims=True)
    sl = (w * lv).sum(-1, keepdims=True)
    sll = (w * lv * lv).sum(-1, keepdims=True)
    sx = (w * x).sum(-1, keepdims=True)
    slx = (w * lv * x).sum(-1, keepdims=True)
    det = sw * sll - sl * sl
    ok = det > 1e-12 * np.maximum(sw * sll, 1e-30)
    safe = np.where(ok, det, 1.0)
    s = np.where(ok, (sw * slx - sl * sx) / safe, s0)
    m = np.where(ok, (sll * sx - sl * slx) / safe, m0)
    return s, m


def assign(x: np.ndarray, s: np.ndarray, m: np.ndarray, n: int) -> np.ndarray:
    ss = np.where(s == 0, 1.0, s)
    return np.clip(np.round((x - m) / ss), 0, n)


def search_sm(x: np.ndarray, w: np.ndarray, bits: int, nstep: int = 20, iters: int = 3):
    """k-quants-style search (llama.cpp make_qkx2_quants): try scale candidates around min-max,
    least-squares (s, m) for each rounding, keep the lowest weighted error; then alternate
    (round, LS) a few times. Returns float (s, m) per group, shape [..., 1]."""
    n = 2**bits - 1
    mn = x.min(-1, keepdims=True)
    mx = x.max(-1, keepdims=True)
    rng = np.maximum(mx - mn, 1e-30)
    best_s, best_m = rng / n, mn
    q = assign(x, best_s, best_m, n)
    best_e = (w * (best_s * q + best_m - x) ** 2).sum(-1, keepdims=True)
    for i in range(nstep + 1):
        iscale = (-1.0 + 0.1 * i + n) / rng
        q = np.clip(np.round(iscale * (x - mn)), 0, n)
        s, m = ls_fit(x, w, q, best_s, best_m)
        e = (w * (s * q + m - x) ** 2).sum(-1, keepdims=True)
        better = e < best_e
        best_s = np.where(better, s, best_s)
        best_m = np.where(better, m, best_m)
        best_e = np.where(better, e, best_e)
    for _ in range(iters):
        q = assign(x, best_s, best_m, n)
        s, m = ls_fit(x, w, q, best_s, best_m)
        e = (w * (s * q + m - x) ** 2).sum(-1, keepdims=True)
        better = e < best_e
        best_s = np.where(better, s, best_s)
        best_m = np.where(better, m, best_m)
        best_e = np.where(better, e, best_e)
    return best_s, best_m


def finish(x, w, s, m, bits, sfmt, mfmt, refine_after_hw=True):
    """Round (s, m) to hardware formats, recompute codes, return (dequantized, field bits)."""
    n = 2**bits - 1
    sq, sb, st = hw(s, sfmt, signed=False)
    mq, mbits, mt = hw(m, mfmt, signed=True)
    q = assign(x, sq, mq, n)
    return sq * q + mq, sb + mbits, st + mt


@dataclass
class Ctx:
    """What a quantizer may use besides the weight: calibration statistics by tensor name."""

    hess: dict[str, np.ndarray] = field(default_factory=dict)  # input Hessian X^T X / N

    def diag(self, name: str) -> np.ndarray | None:
        h = self.hess.get(name)
        return None if h is None else np.diag(h).astype(np.float32)


def q_rtn(bits, g, sfmt, mfmt, sym=False):
    def f(name, w, ctx):
        x = groups(w, g).astype(np.float64)
        n = 2**bits - 1
        if sym:
            # integer grid -half..half-1 (has a zero level); the signed scale maps the group's
            # largest-magnitude weight to -half (llama.cpp Q4_0/Q3 style).
            half = 2 ** (bits - 1)
            idx = np.abs(x).argmax(-1)[..., None]
            s, sb, st = hw(np.take_along_axis(x, idx, -1) / -half, sfmt, signed=True)
            ss = np.where(s == 0, 1.0, s)
            q = np.clip(np.round(x / ss), -half, half - 1)
            deq, fb, tb = s * q, sb, st
        else:
            mn = x.min(-1, keepdims=True)
            s = (x.max(-1, keepdims=True) - mn) / n
            deq, fb, tb = finish(x, None, s, mn, bits, sfmt, mfmt)
        bits_total = w.size * bits + x.shape[0] * x.shape[1] * fb + tb
        return deq.reshape(w.shape).astype(np.float32), bits_total

    return f


def weights_for(x: np.ndarray, name: str, ctx: Ctx, wmode: str) -> np.ndarray:
    if wmode == "uniform":
        return np.ones_like(x)
    if wmode == "x2":
        return x * x + 1e-12
    if wmode == "imat":
        d = ctx.diag(name)
        if d is None:
            raise ValueError(f"no calibration statistics for {name}")
        g = x.shape[-1]
        return np.broadcast_to(d.reshape(1, -1, g).astype(np.float64), x.shape) + 1e-12
    if wmode == "imatx":  # llama.cpp: imatrix * sqrt(sigma2 + x^2)
        d = weights_for(x, name, ctx, "imat")
        sig2 = (x * x).mean(-1, keepdims=True)
        return d * np.sqrt(sig2 + x * x)
    raise ValueError(wmode)


def q_search(bits, g, sfmt, mfmt, wmode="uniform"):
    def f(name, w, ctx):
        x = groups(w, g).astype(np.float64)
        wt = weights_for(x, name, ctx, wmode)
        s, m = search_sm(x, wt, bits)
        deq, fb, tb = finish(x, wt, s, m, bits, sfmt, mfmt)
        return deq.reshape(w.shape).astype(np.float32), w.size * bits + x.shape[0] * x.shape[
            1
        ] * fb + tb

    return f


def q_hqq(bits, g, sfmt, mfmt, iters=20, p=0.7, beta=10.0, kappa=1.01):
    """HQQ (half-quadratic, lp<1 error on the weights): optimize the zero point with fixed scale."""

    def f(name, w, ctx):
        x = groups(w, g).astype(np.float64)
        n = 2**bits - 1
        mn = x.min(-1, keepdims=True)
        s = np.maximum(x.max(-1, keepdims=True) - mn, 1e-30) / n
        z = -mn / s  # x ~ s * (q - z)
        b = beta
        best_e = None
        best_z = z
        for _ in range(iters):
            q = np.clip(np.round(x / s + z), 0, n)
            r = x - s * (q - z)
            # shrinkage for the lp norm
            e = np.sign(r) * np.maximum(
                np.abs(r) - (1.0 / b) * np.maximum(np.abs(r), 1e-12) ** (p - 1), 0
            )
            z = (q - (x - e) / s).mean(-1, keepdims=True)
            b *= kappa
            err = np.abs(x - s * (np.clip(np.round(x / s + z), 0, n) - z)).sum()
            if best_e is None or err < best_e:
                best_e, best_z = err, z
        deq, fb, tb = finish(x, None, s, -s * best_z, bits, sfmt, mfmt)
        return deq.reshape(w.shape).astype(np.float32), w.size * bits + x.shape[0] * x.shape[
            1
        ] * fb + tb

    return f


def kmeans_levels(u: np.ndarray, wt: np.ndarray, k: int, iters: int = 15) -> np.ndarray:
    """Weighted 1-D k-means of values u in ~[0, 1]; starts from the uniform grid."""
    lv = np.linspace(0, 1, k)
    uu, ww = u.ravel(), wt.ravel()
    for _ in range(iters):
        cut = (lv[1:] + lv[:-1]) / 2
        idx = np.searchsorted(cut, uu)
        num = np.bincount(idx, ww * uu, minlength=k)
        den = np.bincount(idx, ww, minlength=k)
        lv = np.where(den > 0, num / np.maximum(den, 1e-30), lv)
        lv = np.sort(lv)
    return lv


def q_codebook(bits, g, sfmt, mfmt, wmode="uniform", lbits=8, rounds=4):
    """Per-tensor non-uniform levels (2**bits integers of ``lbits`` bits, mapped to [0, 1]);
    each group: x ~ s * L[q] + m with (s, m) least squares."""

    def f(name, w, ctx):
        x = groups(w, g).astype(np.float64)
        k = 2**bits
        top = 2**lbits - 1
        wt = weights_for(x, name, ctx, wmode)
        s, m = search_sm(x, wt, bits)
        s, m = s * (k - 1), m  # range per group: x ~ s * u + m with u in [0, 1]
        lv = np.linspace(0, 1, k)
        for _ in range(rounds):
            u = (x - m) / np.where(s == 0, 1.0, s)
            lv = kmeans_levels(np.clip(u, -0.2, 1.2), wt, k)
            lv = (lv - lv[0]) / max(lv[-1] - lv[0], 1e-12)
            lv = np.round(lv * top) / top  # integer levels
            for _ in range(2):
                u = (x - m) / np.where(s == 0, 1.0, s)
                idx = np.searchsorted((lv[1:] + lv[:-1]) / 2, u)
                s, m = ls_fit(x, wt, lv[idx], s, m)
        sq, sb, st = hw(s, sfmt, signed=False)
        mq, mbits, mt = hw(m, mfmt, signed=True)
        u = (x - mq) / np.where(sq == 0, 1.0, sq)
        idx = np.searchsorted((lv[1:] + lv[:-1]) / 2, u)
        deq = sq * lv[idx] + mq
        tot = w.size * bits + x.shape[0] * x.shape[1] * (sb + mbits) + st + mt + k * lbits
        return deq.reshape(w.shape).astype(np.float32), tot

    return f


def q_gptq(bits, g, sfmt, mfmt, wmode="imat", damp=0.01, block=128, act_order=False):
    """GPTQ (Frantar et al.) with per-group asymmetric scales chosen at each group's start by the
    k-quants search on the error-updated weights, rounded to the hardware formats."""

    def f(name, w, ctx):
        h = ctx.hess.get(name)
        if h is None:
            raise ValueError(f"no Hessian for {name}")
        n = 2**bits - 1
        r, c = w.shape
        if c % g or block % g:
            raise ValueError("group size must divide the input dimension and the block")
        h = h.astype(np.float64).copy()
        wq = w.astype(np.float64).copy()
        dead = np.diag(h) == 0
        h[dead, dead] = 1.0
        wq[:, dead] = 0.0
        dg = np.diag(h).copy()
        h[np.diag_indices(c)] += damp * dg.mean()
        hinv = np.linalg.cholesky(np.linalg.inv(h)).T  # upper
        out = np.zeros_like(wq)
        fb_total = 0
        tb_total = 0
        s_list, m_list = [], []
        for i1 in range(0, c, block):
            i2 = min(i1 + block, c)
            w1 = wq[:, i1:i2].copy()
            err1 = np.zeros_like(w1)
            hi = hinv[i1:i2, i1:i2]
            for i in range(i2 - i1):
                if i % g == 0:
                    xg = w1[:, None, i : i + g]
                    if wmode == "imat":
                        wt = np.broadcast_to(dg[None, None, i1 + i : i1 + i + g], xg.shape)
                    else:
                        wt = np.ones_like(xg)
                    s, m = search_sm(xg, wt, bits)
                    sq = s[:, 0, 0]
                    mq = m[:, 0, 0]
                    s_list.append(sq)
                    m_list.append(mq)
                col = w1[:, i]
                # float (s, m) during the feedback loop; the hardware rounding of the scales
                # needs the whole tensor (per-tensor exponent) and is applied at the end
                q = np.clip(np.round((col - mq) / np.where(sq == 0, 1, sq)), 0, n)
                dq = sq * q + mq
                out[:, i1 + i] = dq
                e = (col - dq) / hi[i, i]
                w1[:, i:] -= np.outer(e, hi[i, i:])
                err1[:, i] = e
            wq[:, i2:] -= err1 @ hinv[i1:i2, i2:]
        # hardware rounding of the scales: done once per tensor, codes recomputed from the
        # GPTQ-updated targets would undo the feedback, so instead snap s, m and requantize the
        # GPTQ outputs onto the snapped grid (codes unchanged when the snap is small).
        s_all = np.stack(s_list, 1)[:, :, None]  # [r, ngroups, 1]
        m_all = np.stack(m_list, 1)[:, :, None]
        qcodes = np.clip(np.round((groups(out, g) - m_all) / np.where(s_all == 0, 1, s_all)), 0, n)
        sq, sb, st = hw(s_all, sfmt, signed=False)
        mq, mb2, mt = hw(m_all, mfmt, signed=True)
        deq = (sq * qcodes + mq).reshape(r, c)
        fb_total = r * (c // g) * (sb + mb2)
        tb_total = st + mt
        return deq.astype(np.float32), w.size * bits + fb_total + tb_total

    return f


# ----------------------------------------------------------------------------- schemes

Quantizer = Callable[[str, np.ndarray, Ctx], tuple[np.ndarray, int]]


def mixed(base: Quantizer, high: Quantizer, pick: Callable[[str], bool]) -> Quantizer:
    def f(name, w, ctx):
        return (high if pick(name) else base)(name, w, ctx)

    return f


def build_schemes() -> dict[str, tuple[Quantizer | None, bool]]:
    """name -> (quantizer or None for float, needs calibration)."""
    s: dict[str, tuple[Quantizer | None, bool]] = {"float": (None, False)}
    # --- 4-bit
    s["rtn4_g32_fp16"] = (q_rtn(4, 32, "fp16", "fp16"), False)
    for fmt in ["i12", "i10", "i8", "i8e2", "i7e2", "i7e3", "i6e2", "i8e3", "i6e3", "i5e3", "i4e3"]:
        s[f"rtn4_g32_{fmt}"] = (q_rtn(4, 32, fmt, fmt), False)
    s["rtn4_g64_fp16"] = (q_rtn(4, 64, "fp16", "fp16"), False)
    s["search4_g64_i8e3"] = (q_search(4, 64, "i8e3", "i8e3"), False)
    s["search4_g64_imat_i8e3"] = (q_search(4, 64, "i8e3", "i8e3", "imat"), True)
    # --- 3-bit
    s["rtn3sym_g32_fp16"] = (q_rtn(3, 32, "fp16", "fp16", sym=True), False)
    s["rtn3_g32_fp16"] = (q_rtn(3, 32, "fp16", "fp16"), False)
    s["rtn3_g64_fp16"] = (q_rtn(3, 64, "fp16", "fp16"), False)
    s["search3_g32_fp16"] = (q_search(3, 32, "fp16", "fp16"), False)
    s["search3_g32_x2_fp16"] = (q_search(3, 32, "fp16", "fp16", "x2"), False)
    s["hqq3_g32_fp16"] = (q_hqq(3, 32, "fp16", "fp16"), False)
    s["codebook3_g32_fp16"] = (q_codebook(3, 32, "fp16", "fp16"), False)
    s["search3_g32_imat_fp16"] = (q_search(3, 32, "fp16", "fp16", "imat"), True)
    s["search3_g32_imatx_fp16"] = (q_search(3, 32, "fp16", "fp16", "imatx"), True)
    s["codebook3_g32_imat_fp16"] = (q_codebook(3, 32, "fp16", "fp16", "imat"), True)
    s["gptq3_g32_fp16"] = (q_gptq(3, 32, "fp16", "fp16"), True)
    s["gptq3_g64_fp16"] = (q_gptq(3, 64, "fp16", "fp16"), True)
    s["gptq3_g32_i8e3"] = (q_gptq(3, 32, "i8e3", "i8e3"), True)
    s["gptq3_g64_i8e3"] = (q_gptq(3, 64, "i8e3", "i8e3"), True)
    s["search3_g32_imat_i8e3"] = (q_search(3, 32, "i8e3", "i8e3", "imat"), True)
    s["search3_g64_fp16"] = (q_search(3, 64, "fp16", "fp16"), False)
    s["search3_g64_i8e3"] = (q_search(3, 64, "i8e3", "i8e3"), False)
    s["search3_g64_imat_i8e3"] = (q_search(3, 64, "i8e3", "i8e3", "imat"), True)
    s["codebook3_g64_imat_i8e3"] = (q_codebook(3, 64, "i8e3", "i8e3", "imat"), True)
    # --- 3-bit with 4-bit exceptions (chosen by the per-kind sensitivity sweep)
    hi4 = q_rtn(4, 32, "i8e3", "i8e3")
    s["mix_gptq3_g32_i8e3_4b[down]"] = (
        mixed(q_gptq(3, 32, "i8e3", "i8e3"), hi4, lambda n: n.split(".")[-2] == "down_proj"),
        True,
    )
    for kinds in [
        ("down_proj",),
        ("v_proj", "down_proj"),
        ("v_proj", "k_proj", "down_proj"),
        ("v_proj", "k_proj", "o_proj", "down_proj"),
    ]:
        tag = "+".join(k.split("_")[0] for k in kinds)
        s[f"mix_gptq3_g64_i8e3_4b[{tag}]"] = (
            mixed(q_gptq(3, 64, "i8e3", "i8e3"), hi4, lambda n, ks=kinds: n.split(".")[-2] in ks),
            True,
        )
        s[f"mix_search3_g64_i8e3_4b[{tag}]"] = (
            mixed(q_search(3, 64, "i8e3", "i8e3"), hi4, lambda n, ks=kinds: n.split(".")[-2] in ks),
            False,
        )
        s[f"mix_search3_g64_imat_i8e3_4b[{tag}]"] = (
            mixed(
                q_search(3, 64, "i8e3", "i8e3", "imat"),
                hi4,
                lambda n, ks=kinds: n.split(".")[-2] in ks,
            ),
            True,
        )
    # sensitivity sweep: one kind at 3-bit (search g64 imat), everything else untouched
    for k in KINDS:
        s[f"sens3[{k}]"] = (
            mixed(
                lambda n, w, c: (w, w.size * 32),
                q_search(3, 64, "i8e3", "i8e3", "imat"),
                lambda n, kk=k: n.split(".")[-2] == kk,
            ),
            True,
        )
    return s


# ----------------------------------------------------------------------------- evaluation


def tokens(text: str, tok: Tokenizer, cap: int | None) -> list[int]:
    ids = tok.encode(TEXTS[text].read_text(encoding="utf-8"), add_special_tokens=False).ids
    return ids if cap is None else ids[:cap]


def perplexity(arch, get, ids: list[int]) -> float:
    fl = FloatLlama(arch, get)
    nll, cnt = 0.0, 0
    for st in range(0, len(ids) - 1, WINDOW):
        win = ids[st : st + WINDOW]
        if len(win) < 2:
            break
        fl.reset()
        lg = fl.forward(win).astype(np.float64)[:-1]
        lg -= lg.max(-1, keepdims=True)
        lse = np.log(np.exp(lg).sum(-1))
        tgt = np.asarray(win[1:])
        nll += float((lse - lg[np.arange(len(tgt)), tgt]).sum())
        cnt += len(tgt)
    return float(np.exp(nll / cnt))


class _Recorder:
    """Stands in for a weight in FloatLlama's cache: ``x @ rec.T`` accumulates X^T X."""

    __array_ufunc__ = None

    def __init__(self, w: np.ndarray, key: str, acc: dict, counts: dict):
        self.w, self.key, self.acc, self.counts = w, key, acc, counts

    @property
    def T(self):
        return self

    def __rmatmul__(self, x: np.ndarray) -> np.ndarray:
        if self.key:
            x64 = x.astype(np.float64)
            self.acc[self.key] = self.acc.get(self.key, 0.0) + x64.T @ x64
            self.counts[self.key] = self.counts.get(self.key, 0) + x.shape[0]
        return x @ self.w.T


def calibrate(model, ids: list[int]) -> dict[str, np.ndarray]:
    """Per linear weight name: the input Hessian X^T X / N over the float model's activations."""
    arch = model.arch
    fl = FloatLlama(arch, model.read)
    acc: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    names = linear_names(arch.num_layers)
    share = {"k_proj": "q_proj", "v_proj": "q_proj", "up_proj": "gate_proj"}
    for n in names:
        kind = n.split(".")[-2]
        fl._cache[n] = _Recorder(model.read(n), "" if kind in share else n, acc, counts)
    for st in range(0, len(ids) - WINDOW + 1, WINDOW):
        fl.reset()
        fl.forward(ids[st : st + WINDOW])
    hess = {}
    for n in names:
        kind = n.split(".")[-2]
        src = n.replace(kind, share[kind]) if kind in share else n
        hess[n] = (acc[src] / counts[src]).astype(np.float32)
    return hess


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--schemes", nargs="*", default=None)
    ap.add_argument("--cap", type=int, default=4096, help="tokens per text (0: whole text)")
    ap.add_argument("--calib-windows", type=int, default=8)
    ap.add_argument("--texts", nargs="*", default=list(TEXTS))
    ap.add_argument("--list", action="store_true")
    args = ap.parse_args()
    schemes = build_schemes()
    if args.list:
        print("\n".join(schemes))
        return
    chosen = args.schemes or [
        "float",
        "rtn4_g32_fp16",
        "rtn4_g32_i8e3",
        "rtn4_g32_i7e2",
        "rtn3_g32_fp16",
        "search3_g64_i8e3",
        "search3_g64_imat_i8e3",
        "mix_search3_g64_imat_i8e3_4b[v+k+o+down]",
        "gptq3_g32_i8e3",
        "mix_gptq3_g64_i8e3_4b[v+k+o+down]",
    ]
    cap = args.cap or None
    model = load_model(MODEL)
    arch = model.arch
    tok = Tokenizer.from_file(str(MODEL / "tokenizer.json"))
    ids = {t: tokens(t, tok, cap) for t in args.texts}
    names = linear_names(arch.num_layers)
    base = {n: model.read(n) for n in names}
    ctx = Ctx()
    if any(schemes[c][1] for c in chosen):
        t0 = time.time()
        allp = tokens("persuasion", tok, None)
        start = cap or 0
        calib = allp[start : start + args.calib_windows * WINDOW]
        if len(calib) < WINDOW:
            raise SystemExit("not enough persuasion tokens after the cap for calibration")
        ctx.hess = calibrate(model, calib)
        print(
            f"calibration: {len(calib)} tokens of persuasion after token {start}, "
            f"{time.time() - t0:.1f}s"
        )
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    key_cap = f"cap{cap or 'all'}"
    store = results.setdefault(key_cap, {})
    for name in chosen:
        fn, _ = schemes[name]
        t0 = time.time()
        if fn is None:
            qw, bpw, qt = base, 32.0, 0.0
        else:
            qw, total_bits, nel = {}, 0, 0
            for n in names:
                wq, b = fn(n, base[n], ctx)
                qw[n] = wq
                total_bits += b
                nel += base[n].size
            bpw = total_bits / nel
            qt = time.time() - t0

        def get(n, qw=qw):
            return qw[n] if n in qw else model.read(n)

        row = {"bpw": round(bpw, 4), "quant_s": round(qt, 2)}
        for t, tid in ids.items():
            row[t] = perplexity(arch, get, tid)
        store[name] = row
        fl_row = store.get("float")
        ratios = ""
        if fl_row:
            ratios = " ".join(f"{t}={row[t] / fl_row[t]:.4f}x" for t in ids if t in fl_row)
        ppl = " ".join(f"{t}={row[t]:.3f}" for t in ids)
        print(f"{name:45s} bpw={bpw:6.3f} q={qt:6.1f}s {ppl} {ratios}", flush=True)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        results["meta"] = {
            "model": str(MODEL.relative_to(ROOT)),
            "window": WINDOW,
            "embedding": "float32 (source is Q8_0-dequantized), not counted in bpw",
            "tokens": {k: len(v) for k, v in ids.items()},
            "calibration": f"{args.calib_windows} windows of persuasion after the cap",
        }
        RESULTS.write_text(json.dumps(results, indent=1, sort_keys=True))
    fl_row = store.get("float")
    print(f"\n{'scheme':45s} {'bpw':>6s} {'q s':>6s} " + " ".join(f"{t:>16s}" for t in ids))
    for name in sorted(store, key=lambda k: store[k]["bpw"]):
        row = store[name]
        cells = []
        for t in ids:
            if t not in row:
                cells.append(f"{'-':>16s}")
                continue
            r = f"{row[t] / fl_row[t]:.3f}x" if fl_row and t in fl_row else ""
            cells.append(f"{row[t]:8.3f} {r:>7s}")
        print(f"{name:45s} {row['bpw']:6.3f} {row['quant_s']:6.1f} " + " ".join(cells))


if __name__ == "__main__":
    main()
