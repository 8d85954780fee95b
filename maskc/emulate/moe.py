"""The emulator's mixture-of-experts units (docs/numerics.md, "Mixture of experts"): the
router's selection and weights, the experts' weighted sum, the shared expert's sigmoid gate,
and Qwen3's per-head q/k norms, as integer loops on the primitives of
:mod:`maskc.emulate.kernels` (whose bounds they share).

:func:`experts_step` runs an ``experts`` op over a batch: each selected expert once, on the
rows of the tokens that selected it (decode: one token, its ``top_k`` experts), so only the
selected experts' matrices are read. The weighted sum is exact in int64, so the grouping
cannot change a bit: prefill equals token-by-token decode.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from maskc.emulate import units as U
from maskc.emulate.kernels import bitlen, exp_weight, rsr, sat32, term

I64 = np.int64
#: fraction bits of an expert's weight ``P`` (docs/numerics.md)
P_FRAC = 15


@njit(cache=True)
def route_rows(z, top_k, norm_topk, f, log2e, exp2_lut):  # pragma: no cover - compiled
    """Per row of router scores ``z`` [T, E]: the ``top_k`` experts by score (ties to the
    lowest index; int64 [T, top_k], best first) and their weights ``P`` (int64 [T, top_k],
    15 fraction bits): ``p_e`` by the exp2 table (``p <= 2^15``), ``R = 2^46 // T`` over all
    experts or over the selected ones (``norm_topk``), ``P = rsr(p * R, 31) <= 2^15``."""
    t_n, n_e = z.shape
    sel = np.empty((t_n, top_k), np.int64)
    wts = np.empty((t_n, top_k), np.int64)
    p = np.empty(n_e, np.int64)
    for t in range(t_n):
        taken = np.zeros(n_e, np.bool_)
        for k in range(top_k):  # the best not taken yet; ">" keeps the lowest index on ties
            best = -1
            for e in range(n_e):
                if not taken[e] and (best < 0 or z[t, e] > z[t, best]):
                    best = e
            taken[best] = True
            sel[t, k] = best
        zmax = z[t, sel[t, 0]]
        tot = np.int64(0)
        for e in range(n_e):  # (zmax - z) < 2^32, times log2e < 2^49
            p[e] = exp_weight(zmax - z[t, e], log2e, f, exp2_lut)
            if not norm_topk:
                tot += p[e]
        if norm_topk:
            for k in range(top_k):
                tot += p[sel[t, k]]
        r = (np.int64(1) << 46) // tot  # tot >= 2^15 (the best expert's p): r <= 2^31
        for k in range(top_k):
            wts[t, k] = rsr(p[sel[t, k]] * r, 31)  # p * r <= 2^46
    return sel, wts


@njit(cache=True)
def weigh_into(acc, rows, wts, y):  # pragma: no cover - compiled
    """``acc[rows[i]] += wts[i] * y[i]``: ``|wts| <= 2^15``, ``|y| < 2^31``, at most ``top_k
    <= 1024`` terms per row: ``|acc| < 2^56``, exact in int64 in any order."""
    for i in range(rows.shape[0]):
        r = rows[i]
        w = wts[i]
        for j in range(y.shape[1]):
            acc[r, j] += w * y[i, j]


@njit(cache=True)
def weighted_out(acc):  # pragma: no cover - compiled
    """``sat32(rsr(acc, 15))`` of every element."""
    out = np.empty_like(acc)
    for t in range(acc.shape[0]):
        for j in range(acc.shape[1]):
            out[t, j] = sat32(rsr(acc[t, j], P_FRAC))
    return out


@njit(cache=True)
def gate_scale_rows(g, y, f, sig_lut):  # pragma: no cover - compiled
    """``sat32(rsr(SIGMOID[n] * y, 15))`` with ``n`` from the one-value gate ``g`` [T, 1]
    (SwiGLU's index); ``|SIGMOID * y| < 2^15 * 2^31``."""
    out = np.empty_like(y)
    for t in range(y.shape[0]):
        s = np.int64(sig_lut[min(max(rsr(g[t, 0], f - 8), -4096), 4095) + 4096])
        for j in range(y.shape[1]):
            out[t, j] = sat32(rsr(s * y[t, j], 15))
    return out


@njit(cache=True)
def head_norm_rows(h, heads, hd, gamma, gamma_frac, eps_d, f, rsqrt_lut):  # pragma: no cover
    """RMSNorm of each head of every row (``D = hd``), a signal out (docs/numerics.md, "q/k
    norms"). ``|u * RSQRT * gamma| < 2^47``; the final shift goes through ``term``'s clamp
    (2^40) before ``sat32``: the same result as the unclamped shift, overflow-free for any
    ``gamma_frac`` a netlist may hold."""
    out = np.empty_like(h)
    u = np.empty(hd, np.int64)
    for t in range(h.shape[0]):
        for hh in range(heads):
            base = hh * hd
            a = 0
            for j in range(hd):
                a = max(a, abs(h[t, base + j]))
            p = max(bitlen(a) - 15, 0)
            ss = np.int64(0)
            for j in range(hd):
                u[j] = rsr(h[t, base + j], p)
                ss += u[j] * u[j]  # <= hd * 2^30
            v = ss + rsr(np.int64(eps_d), 40 - 2 * f + 2 * p)
            if v == 0:
                for j in range(hd):
                    out[t, base + j] = 0
                continue
            k = (bitlen(v) - 1) // 2
            r = np.int64(rsqrt_lut[rsr(v, 2 * k - 8) - 256])
            for j in range(hd):
                out[t, base + j] = sat32(term(u[j] * r * gamma[j], gamma_frac + 16 + k - f))
    return out


def to_wire(a, what: str):
    """act8 ``a`` as it crosses a link (codes int8, mantissa and exponent int16 each, one
    byte per group shift, little-endian) and back: ``(bytes on the wire, the act8 received)``.
    In range by the contract (a bug otherwise)."""
    from maskc.emulate.chip import Act8

    parts = [(a.x, "<i1"), (a.m, "<i2"), (a.e, "<i2"), (a.s, "u1")]
    wires = [np.ascontiguousarray(v, dtype=dt).tobytes() for v, dt in parts]
    back = [
        np.frombuffer(w, dtype=dt).astype(I64).reshape(v.shape)
        for w, (v, dt) in zip(wires, parts, strict=True)
    ]
    if not all(np.array_equal(b, v) for b, (v, _) in zip(back, parts, strict=True)):
        raise AssertionError(f"{what}: the act8 input is out of its wire format's range")
    return sum(len(w) for w in wires), Act8(*back)


def signal_wire(y, what: str):
    """int32 signals ``y`` across a link and back: ``(bytes, the values received)``."""
    wire = np.ascontiguousarray(y, dtype="<i4").tobytes()
    got = np.frombuffer(wire, dtype="<i4").astype(I64).reshape(y.shape)
    if not np.array_equal(got, y):
        raise AssertionError(f"{what}: an expert's output is not an int32 signal")
    return len(wire), got


def experts_step(chip, op, experts: list[tuple]):
    """The step of ``experts`` op ``op`` (:meth:`maskc.emulate.chip.Chip._compile`):
    ``experts[e]`` is expert ``e``'s ``(gate, up, down)`` prepared matrices. An expert on
    another die than its layer's home die (``chip.expert_dies``) receives the selecting
    tokens' act8 input over the link and sends its int32 output back, weighed and summed on
    the home die (the same integers: the logits are those of one die); the bytes are counted
    in ``chip.link_bytes``."""
    src, sel, out = op.src, op.sel, op.out
    perms = [tuple(chip.perms.get(n) for n in op.expert_matrices(e)) for e in range(op.experts)]
    mm, swiglu = chip.matmul, chip.swiglu
    home, counts = chip.home[op.layer], chip.link_bytes
    away = {}  # expert -> its die, when not the home die
    if chip.expert_dies is not None:
        away = {e: d for e, d in enumerate(chip.expert_dies[op.layer]) if d != home}

    def step(slots, ids, positions, segs):
        a = slots[src]
        chosen, wts = slots[sel]
        t_n = a.x.shape[0]
        acc = None
        # each expert once, on the rows that selected it (a token selects an expert once)
        for e in np.unique(chosen).tolist():
            rows, k = np.nonzero(chosen == e)
            sub = a if len(rows) == t_n else a.rows(rows)
            g, u, d = experts[e]
            pg, pu, pd = perms[e]
            # gate's and up's inputs, gathered on the home die (one act8 when they share it)
            ag = U.gather(sub, pg)
            au = ag if U.same_perm(pu, pg) else U.gather(sub, pu)
            x = away.get(e)
            if x is not None:  # to the expert's die: each distinct act8 once
                n, ag2 = to_wire(ag, f"layer {op.layer} expert {e}")
                counts[(home, x)] += n
                if au is not ag:
                    n, au = to_wire(au, f"layer {op.layer} expert {e}")
                    counts[(home, x)] += n
                else:
                    au = ag2
                ag = ag2
            y = mm(U.gather(swiglu(mm(ag, g, None), mm(au, u, None)), pd), d, None)
            if x is not None:  # its output back to the home die
                n, y = signal_wire(y, f"layer {op.layer} expert {e}")
                counts[(x, home)] += n
            if acc is None:
                acc = np.zeros((t_n, y.shape[1]), I64)
            weigh_into(acc, rows.astype(I64), np.ascontiguousarray(wts[rows, k]), y)
        slots[out] = weighted_out(acc)

    return step
