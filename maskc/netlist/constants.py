"""Compile-time constants of numerics contract version 1 (docs/numerics.md).

Everything transcendental is evaluated here, once, by the compiler, in float64, and stored in
the netlist as integers; nothing at run time calls ``exp``, ``cos`` or ``sqrt``.
"""

from __future__ import annotations

import functools
import math

import numpy as np

CONTRACT = 1
#: fraction bits of a signal (int32): F in docs/numerics.md
SIGNAL_FRAC = 12
LOG2E_Q16 = round(math.log2(math.e) * 65536)  # 94548
#: RoPE angle table: 2**ROPE_BITS angles, values in Q14
ROPE_BITS = 14
#: gamma_q fraction bits are at most this
GAMMA_FRAC_MAX = 24
#: eps_d = round(D * eps * 2**EPS_FRAC)
EPS_FRAC = 40


@functools.cache
def compile_luts() -> dict[str, np.ndarray]:
    """``lut.rsqrt`` int32[769], ``lut.cos`` int16[16384], ``lut.exp2`` int32[1024],
    ``lut.sigmoid`` int32[8192] (definitions in docs/numerics.md)."""
    rsqrt = [round(65536 / math.sqrt((256 + i) / 256)) for i in range(769)]
    n = 1 << ROPE_BITS
    cos = [round(16384 * math.cos(2 * math.pi * k / n)) for k in range(n)]
    exp2 = [round(32768 * 2.0 ** (-f / 1024)) for f in range(1024)]
    sig = [round(32768 / (1 + math.exp(-(k - 4096) / 256))) for k in range(8192)]
    return {
        "lut.rsqrt": np.array(rsqrt, np.int32),
        "lut.cos": np.array(cos, np.int16),
        "lut.exp2": np.array(exp2, np.int32),
        "lut.sigmoid": np.array(sig, np.int32),
    }


def gamma_fixed(gamma: np.ndarray, d: int) -> tuple[np.ndarray, int]:
    """``(gamma_q int16 [D], gamma_frac)``: ``round(gamma * sqrt(D) * 2**frac)`` with the largest
    ``frac <= GAMMA_FRAC_MAX`` that keeps every ``|gamma_q| < 2**15``."""
    g = np.asarray(gamma, np.float64) * math.sqrt(d)
    for frac in range(GAMMA_FRAC_MAX, -64, -1):
        q = np.rint(g * 2.0**frac)
        if np.abs(q).max(initial=0) < 2**15:
            return q.astype(np.int16), frac
    raise ValueError("norm weight too large for int16 gamma")  # needs |gamma| > 2**78


def numerics_json(arch) -> dict:
    """netlist.json's ``numerics``: the contract's constants for ``arch`` (what the writer
    records and the loader's check expects)."""
    return {
        "contract": CONTRACT,
        "signal_bits": 32,
        "signal_frac": SIGNAL_FRAC,
        "act_bits": 8,
        "log2e_q16": LOG2E_Q16,
        "inv_sqrt_hd_q16": inv_sqrt_hd_q16(arch.head_dim),
        "luts": {k: list(v.shape) for k, v in sorted(compile_luts().items())},
    }


def inv_sqrt_hd_q16(head_dim: int) -> int:
    return round(65536 / math.sqrt(head_dim))


def rope_phase_steps(arch) -> np.ndarray:
    """int64 ``[head_dim/2]``: ``round(inv_freq * 2**32 / (2 pi))``, inv_freq as Hugging Face
    computes it (float32, Llama-3.1 scaling included)."""
    from maskc.reference import rope_inv_freq

    inv = rope_inv_freq(arch).astype(np.float64)
    return np.array([round(float(f) * 2.0**32 / (2 * math.pi)) for f in inv], np.int64)
