"""FP4 reference codec: E2M1 elements with MXFP4 (E8M0 per 32) or NVFP4 (E4M3 per 16 and a
float32 per tensor) block scales. Issue 21 (docs/fp4-design.md): the compiler's
reference for encoding and decoding, and :func:`to_quant`, a matrix as a
:class:`maskc.romformat.QuantTensor` of the ``mxfp4``/``nvfp4`` ROM formats.

Sources (section numbers of the OCP "Microscaling Formats (MX) Specification", version 1.0,
September 2023):

* E2M1 (§5.3.3, FP4): 1 sign, 2 exponent bits (bias 1), 1 mantissa bit; no infinity or NaN;
  magnitudes 0, 0.5 (subnormal), 1, 1.5, 2, 3, 4, 6. Code = sign << 3 | magnitude code.
* E8M0 (§5.4.1): 8 exponent bits, bias 127, no sign, no zero; ``0xFF`` is NaN; value
  ``2**(E - 127)`` for ``E`` in ``[0, 254]``.
* Conversion to MX (§6.3): ``shared_exp = floor(log2(max|V|)) - emax_elem`` (``emax_elem = 2``
  for E2M1), ``X = 2**shared_exp``, each element ``V / X`` rounded to the element format,
  round to nearest, ties to even, magnitudes beyond the largest normal clamped to it (6).
* NVFP4 is NVIDIA's (Blackwell; TensorRT Model Optimizer): E2M1 elements, one E4M3 (OCP FP8
  E4M3, bias 7, max 448, ``S.1111.111`` NaN) scale per 16, one float32 per tensor; value
  ``tensor * block * element``. Its reference recipe: ``tensor = amax(W) / (448 * 6)`` in
  float32, ``block = E4M3(amax(block) / (6 * tensor))``.

Everything here is exact: a float32 weight compared with a rounding threshold times a block's
scale is an exact float64 comparison (the thresholds have 3 significant bits, E4M3 4, float32
24: products below 2**53), so the encoders round the true quotient, not a float64 estimate of
it. No ml_dtypes (the tests check against it).
"""

from __future__ import annotations

import numpy as np

from maskc import romformat
from maskc.errors import InputError

#: E2M1 magnitude of each 3-bit magnitude code (OCP MX v1.0 §5.3.3)
E2M1_MAGNITUDES = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])
#: the value of each 4-bit E2M1 code (code 8 is -0)
E2M1_VALUES = np.concatenate([E2M1_MAGNITUDES, -E2M1_MAGNITUDES])
#: the integer level table of the FP4 ROM formats: twice the E2M1 value of each code
E2M1_LEVELS = romformat.E2M1_LEVELS
#: midpoints between consecutive magnitudes: rounding thresholds
_MIDS = (E2M1_MAGNITUDES[:-1] + E2M1_MAGNITUDES[1:]) / 2
#: largest E2M1 magnitude and its exponent (emax_elem, OCP MX v1.0 Table 1)
E2M1_MAX, E2M1_EMAX = 6.0, 2
E8M0_BIAS, E8M0_NAN = 127, 255
E4M3_MAX = 448.0

MX_BLOCK, NV_BLOCK = 32, 16


def e2m1_encode(x: np.ndarray, scale: np.ndarray | float = 1.0) -> np.ndarray:
    """uint8 E2M1 codes of ``x / scale`` rounded to nearest, ties to even, magnitudes above 6
    saturated to 6; the sign is kept (a negative value that rounds to zero is -0, code 8).

    ``x`` (finite) and ``scale`` (> 0, broadcast against ``x``) are compared exactly: ``|x|``
    against ``midpoint * scale`` (exact when ``scale`` has at most 50 significant bits)."""
    x = np.asarray(x, dtype=np.float64)
    ax = np.abs(x)
    s = np.asarray(scale, dtype=np.float64)
    lo = np.zeros(x.shape, dtype=np.uint8)  # how many midpoints lie strictly below |x|
    tie = np.zeros(x.shape, dtype=bool)
    for m in _MIDS:
        t = m * s
        lo += ax > t
        tie |= ax == t
    # on a tie between magnitude codes k and k + 1 (lo == k) the even one wins
    code = lo + (tie & (lo & 1).astype(bool))
    return (code | (np.signbit(x).astype(np.uint8) << 3)).astype(np.uint8)


def e2m1_decode(codes: np.ndarray) -> np.ndarray:
    """float64 values of E2M1 codes (``codes < 16``)."""
    return E2M1_VALUES[np.asarray(codes, dtype=np.intp)]


def e8m0_decode(e: np.ndarray) -> np.ndarray:
    """float64 ``2**(E - 127)``; NaN for ``0xFF``."""
    e = np.asarray(e, dtype=np.int64)
    return np.where(e == E8M0_NAN, np.nan, np.ldexp(1.0, e - E8M0_BIAS))


def e4m3_decode(b: np.ndarray) -> np.ndarray:
    """float64 value of OCP FP8 E4M3 bytes (bias 7, no infinity, ``S.1111.111`` NaN)."""
    b = np.asarray(b, dtype=np.int64)
    ef, mf = (b >> 3) & 15, b & 7
    mag = np.where(ef > 0, np.ldexp((8 + mf).astype(np.float64), ef - 10), np.ldexp(mf, -9))
    mag = np.where((ef == 15) & (mf == 7), np.nan, mag)
    return np.where(b & 0x80, -mag, mag)


def e4m3_encode(v: np.ndarray) -> np.ndarray:
    """uint8 E4M3 bytes of ``v >= 0`` rounded to nearest, ties to even, saturated to 448."""
    v = np.asarray(v, dtype=np.float64)
    _, ex = np.frexp(v)  # v = f * 2**ex, f in [0.5, 1): floor(log2 v) = ex - 1
    e = np.maximum(ex - 1, -6)  # E4M3's smallest normal exponent is -6
    ulp = np.ldexp(1.0, e - 3)
    q = np.rint(v / ulp)  # exact: a division by a power of two; rint: ties to even
    val = np.minimum(q * ulp, E4M3_MAX)
    _, vx = np.frexp(val)
    normal = val >= 2.0**-6
    ef = np.where(normal, vx - 1 + 7, 0)
    mf = np.where(normal, np.ldexp(val, -(vx - 1) + 3) - 8, np.ldexp(val, 9))
    return (ef * 8 + mf).astype(np.uint8)


def _blocks(w: np.ndarray, block: int) -> np.ndarray:
    """float64 ``[R, NB, block]``: ``w`` padded with zero columns to a multiple of ``block``."""
    w = np.asarray(w, dtype=np.float64)
    r, c = w.shape
    cp = -(-c // block) * block
    if cp > c:
        w = np.concatenate([w, np.zeros((r, cp - c))], axis=1)
    return w.reshape(r, cp // block, block)


def mx_encode(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MXFP4 of a float ``[R, C]`` matrix by OCP MX v1.0 §6.3: ``(codes uint8 [R, Cp],
    scales uint8 [R, Cp/32] E8M0)``. An all-zero block gets ``E = 0`` (the smallest scale)."""
    b = _blocks(w, MX_BLOCK)
    amax = np.abs(b).max(axis=2)
    _, ex = np.frexp(amax)  # floor(log2 amax) = ex - 1 for amax > 0
    shared = np.where(amax > 0, ex - 1 - E2M1_EMAX, -E8M0_BIAS)
    e = np.clip(shared + E8M0_BIAS, 0, E8M0_NAN - 1).astype(np.uint8)
    codes = e2m1_encode(b, e8m0_decode(e)[:, :, None])
    return codes.reshape(w.shape[0], -1), e


def mx_decode(codes: np.ndarray, scales: np.ndarray, cols: int) -> np.ndarray:
    """float64 ``[R, cols]``: ``E2M1(code) * 2**(E - 127)`` (exact; NaN for an ``0xFF`` scale)."""
    step = np.repeat(e8m0_decode(scales), MX_BLOCK, axis=1)
    return (e2m1_decode(codes) * step)[:, :cols]


def nv_tensor_scale(w: np.ndarray) -> np.float32:
    """The NVFP4 per-tensor float32 scale ``amax / (448 * 6)`` (1 for an all-zero matrix, at
    least the smallest positive float32)."""
    return nv_tensor_scale_of(float(np.abs(np.asarray(w, dtype=np.float64)).max(initial=0.0)))


def nv_tensor_scale_of(amax: float) -> np.float32:
    """:func:`nv_tensor_scale` of a matrix whose largest magnitude is ``amax`` (a pre-pass over
    row blocks gives it in the memory of one block)."""
    if amax == 0:
        return np.float32(1.0)
    ts = np.float32(amax / (E4M3_MAX * E2M1_MAX))
    return max(ts, np.float32(np.ldexp(1.0, -149)))


def nv_encode(
    w: np.ndarray, tensor_scale: np.float32 | None = None
) -> tuple[np.ndarray, np.ndarray, np.float32]:
    """NVFP4 of a float ``[R, C]`` matrix: ``(codes uint8 [R, Cp], scales uint8 [R, Cp/16]
    E4M3, tensor float32)`` with NVIDIA's recipe (module docstring). A block whose scale
    rounds to 0 is stored as zeros (codes 0)."""
    ts = nv_tensor_scale(w) if tensor_scale is None else np.float32(tensor_scale)
    b = _blocks(w, NV_BLOCK)
    amax = np.abs(b).max(axis=2)
    sb = e4m3_encode(amax / (E2M1_MAX * float(ts)))
    step = e4m3_decode(sb) * float(ts)  # exact: 4 x 24 significant bits
    codes = e2m1_encode(b, np.where(step > 0, step, 1.0)[:, :, None])
    codes[step == 0] = 0
    return codes.reshape(w.shape[0], -1), sb, ts


def nv_decode(codes: np.ndarray, scales: np.ndarray, ts: np.float32, cols: int) -> np.ndarray:
    """float64 ``[R, cols]``: ``E2M1(code) * E4M3(block) * tensor`` (exact)."""
    step = np.repeat(e4m3_decode(scales) * float(ts), NV_BLOCK, axis=1)
    return (e2m1_decode(codes) * step)[:, :cols]


# -- the contract's step form (docs/fp4-design.md) ----------------------------------------------
#: the fixed row exponent of MXFP4 in the contract's step ``m * 2**(e - s)``
MX_ROW_EXP = 126


def mx_step_fields(scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """E8M0 bytes as the contract's group step with the E2M1 levels doubled:
    ``(scale_m = 1, scale_s = 254 - E)`` with row exponent :data:`MX_ROW_EXP`, so
    ``2**(126 - (254 - E)) * 2 * e2m1 = 2**(E - 127) * e2m1``."""
    e = np.asarray(scales, dtype=np.int64)
    return np.ones(e.shape, dtype=np.int64), (E8M0_NAN - 1) - e


def nv_step_fields(scales: np.ndarray, ts: np.float32) -> tuple[np.ndarray, np.ndarray, int, int]:
    """E4M3 bytes (positive) and the float32 tensor scale as the contract's step with doubled
    levels: ``(scale_m [4 bits], scale_s [0, 14], row exponent, tensor mantissa)`` with
    ``block * tensor * e2m1 = tensor_m * scale_m * 2**(row_exp - scale_s) * 2 * e2m1``."""
    b = np.asarray(scales, dtype=np.int64)
    ef, mf = (b >> 3) & 15, b & 7
    m = np.where(ef > 0, mf + 8, mf)
    s = 15 - np.maximum(ef, 1)  # E4M3 = m * 2**(max(ef, 1) - 10) = m * 2**(5 - s)
    f, ex = np.frexp(np.float64(ts))  # ts = tm * 2**te, tm a 24-bit integer
    tm, te = int(np.ldexp(f, 24)), int(ex) - 24
    return m, s, te + 5 - 1, tm  # the -1 undoes the doubled levels


# -- the ROM formats (maskc/romformat.py FP4_FORMATS) ---------------------------------------------
def mx_row_fields(scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """E8M0 bytes ``[R, NB]`` in the per-row form the datapath needs: ``(scale_e [R] =
    Emax_r - 128, scale_s [R, NB] = Emax_r - E)``, so ``2**(scale_e - scale_s) * 2 * e2m1 =
    2**(E - 127) * e2m1`` and the row's largest block has ``scale_s = 0``."""
    e = np.asarray(scales, dtype=np.int64)
    emax = e.max(axis=1)
    return emax - 128, emax[:, None] - e


def to_quant(name: str, w: np.ndarray, kind: str) -> romformat.QuantTensor:
    """Matrix ``w`` (float ``[R, C]``, finite) in FP4 ROM format ``kind``: mxfp4 by OCP MX v1.0
    §6.3 (method ``ocp``), nvfp4 by NVIDIA's recipe (method ``nv``). Exact: the result's
    :meth:`~maskc.romformat.QuantTensor.dequantize` is :func:`mx_decode` / :func:`nv_decode`
    rounded once to float32. Raises FitError for an mxfp4 row whose block scales span more than
    ``MX_SREF`` binades, InputError for an nvfp4 tensor scale below ``2**-109``."""
    return quantize_fp4(name, w, kind, "ocp" if kind == "mxfp4" else "nv")


#: the scale-fitting methods of each FP4 format (``search``: the measured neighbour search;
#: ``gptq``: GPTQ error feedback with the search's block scales, :mod:`maskc.quantize.fp4gptq`)
METHODS = {"mxfp4": ("ocp", "search", "gptq"), "nvfp4": ("nv", "search", "gptq")}


def quantize_fp4(
    name: str,
    w: np.ndarray,
    kind: str,
    method: str,
    importance: np.ndarray | None = None,
    tensor_scale: np.float32 | None = None,
    row0: int = 0,
) -> romformat.QuantTensor:
    """Matrix ``w`` (float ``[R, C]``) in FP4 ROM format ``kind`` by ``method``
    (:data:`METHODS`, but ``gptq``: :mod:`maskc.quantize.fp4gptq`): ``ocp`` / ``nv`` as
    :func:`to_quant`; ``search`` starts from those scales and gives each block the
    neighbouring scale (MX: ``E + 1``; NV: the E4M3 values one below and one above) when
    that lowers the block's squared error, weighted per input column by ``importance``
    (mean squared activation, ``[C]``) when given. ``tensor_scale``
    (nvfp4): the float32 tensor scale, from the whole matrix when ``w`` is a block of its rows
    (default: ``w``'s own); ``row0``: the first row's index in the matrix (for messages)."""
    if method not in METHODS[kind] or method == "gptq":
        raise ValueError(f"{name}: method {method!r} is not an {kind} method of quantize_fp4")
    r, c = w.shape
    codes, scales, ts = encode(w, kind, method == "search", importance, tensor_scale)
    if kind == "mxfp4":
        return mx_quant(name, (r, c), codes, scales, method, row0)
    return nv_quant(name, (r, c), codes, scales, ts, method)


def encode(
    w: np.ndarray,
    kind: str,
    search: bool,
    importance: np.ndarray | None = None,
    tensor_scale: np.float32 | None = None,
) -> tuple[np.ndarray, np.ndarray, np.float32 | None]:
    """``(codes uint8 [R, Cp], block scales uint8 [R, Cp/block], tensor scale)`` of float
    ``w`` ``[R, C]`` in ``kind``: the format's recipe (:func:`mx_encode`, :func:`nv_encode`;
    the tensor scale ``tensor_scale`` or ``w``'s own; None for mxfp4), then with ``search``
    the neighbouring block scales (:func:`quantize_fp4`) weighted per column by
    ``importance`` ``[C]`` (None: uniform)."""
    c = w.shape[1]
    wt = None
    if search:
        wt = np.zeros(-(-c // MX_BLOCK) * MX_BLOCK)
        wt[:c] = 1.0 if importance is None else np.asarray(importance, np.float64)
    if kind == "mxfp4":
        codes, e = mx_encode(w)
        if wt is not None:
            codes, e = _mx_search(w, codes, e, wt)
        return codes, e, None
    codes, sb, ts = nv_encode(w, tensor_scale)
    if wt is not None:
        codes, sb = _nv_search(w, codes, sb, ts, wt[: -(-c // NV_BLOCK) * NV_BLOCK])
    return codes, sb, ts


def _block_error(b: np.ndarray, codes: np.ndarray, step: np.ndarray, wt: np.ndarray):
    """Weighted squared error ``[R, NB]`` of blocks ``b`` ``[R, NB, K]`` stored as ``codes``
    with ``step`` ``[R, NB]``."""
    d = b - e2m1_decode(codes) * step[:, :, None]
    return np.einsum("rbk,bk->rb", d * d, wt)


def _mx_search(w, codes, e, wt):
    b = _blocks(w, MX_BLOCK)
    wt = wt.reshape(b.shape[1], MX_BLOCK)
    codes = codes.reshape(b.shape)
    best = _block_error(b, codes, e8m0_decode(e), wt)
    e1 = np.minimum(e.astype(np.int64) + 1, E8M0_NAN - 1).astype(np.uint8)
    step1 = e8m0_decode(e1)
    c1 = e2m1_encode(b, step1[:, :, None])
    err1 = _block_error(b, c1, step1, wt)
    better = err1 < best
    codes = np.where(better[:, :, None], c1, codes)
    return codes.reshape(w.shape[0], -1), np.where(better, e1, e)


def _nv_search(w, codes, sb, ts, wt):
    b = _blocks(w, NV_BLOCK)
    wt = wt.reshape(b.shape[1], NV_BLOCK)
    codes = codes.reshape(b.shape)

    def trial(byte):
        step = e4m3_decode(byte) * float(ts)  # exact: 4 x 24 significant bits
        cs = e2m1_encode(b, np.where(step > 0, step, 1.0)[:, :, None])
        cs[step == 0] = 0
        return cs, _block_error(b, cs, step, wt)

    best = _block_error(b, codes, e4m3_decode(sb) * float(ts), wt)
    base = sb.astype(np.int64)
    for delta in (-1, 1):
        cand = np.clip(base + delta, 0, 0x7E).astype(np.uint8)  # 0x7F is E4M3's NaN
        cs, err = trial(cand)
        better = (err < best) & (base > 0)  # an all-zero block keeps scale 0
        codes = np.where(better[:, :, None], cs, codes)
        sb = np.where(better, cand, sb)
        best = np.where(better, err, best)
    return codes.reshape(w.shape[0], -1), sb


def mx_quant(name, shape, codes, e, method: str, row0: int = 0) -> romformat.QuantTensor:
    """The validated mxfp4 :class:`~maskc.romformat.QuantTensor` of E2M1 ``codes`` ``[R, Cp]``
    and E8M0 block scales ``e`` ``[R, Cp/32]`` (per-row form, :func:`mx_row_fields`); a row
    whose scales span more than ``MX_SREF`` binades is a FitError naming row ``row0 + i``."""
    se, ss = mx_row_fields(e)
    arrays = {"scale_m": np.ones(ss.shape, np.uint16), "scale_s": ss}
    return _assemble(name, shape, "mxfp4", codes, se, arrays, method, row0)


def nv_quant(name, shape, codes, sb, ts, method: str) -> romformat.QuantTensor:
    """The validated nvfp4 :class:`~maskc.romformat.QuantTensor` of E2M1 ``codes``, E4M3
    block scales ``sb`` (positive bytes) and float32 tensor scale ``ts``."""
    m, ss, se, tm = nv_step_fields(sb, ts)
    if not romformat.EXP_MIN <= se <= romformat.EXP_MAX:
        raise InputError(
            f"{name}: nvfp4 tensor scale {float(ts):g} is below 2^-109 (the row exponent "
            "would not fit int8); use the integer format for this tensor"
        )
    arrays = {"scale_m": m, "scale_s": ss, "tensor_m": np.array([tm], np.uint32)}
    return _assemble(name, shape, "nvfp4", codes, np.full(shape[0], se), arrays, method)


def _assemble(name, shape, kind, codes, se, arrays, method, row0=0) -> romformat.QuantTensor:
    arrays = {k: v.astype(romformat.FIELD[k].dtype) for k, v in arrays.items()}
    arrays["scale_e"] = np.asarray(se).astype(np.int8)
    arrays["codes"] = np.ascontiguousarray(codes, np.uint8)
    arrays["levels"] = E2M1_LEVELS.copy()
    fmt = romformat.FP4_FORMATS[kind]
    if kind == "mxfp4":  # the span first, naming the row in the whole matrix
        q = romformat.QuantTensor(name, shape, fmt, **arrays)
        romformat.check_mx_span(q, row0)
    return romformat.from_arrays(name, shape, fmt, arrays, method)
