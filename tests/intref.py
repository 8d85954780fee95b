"""An independent reference of the chip's integer datapath (numerics contract version 1).

Written from the documents alone — docs/numerics.md ("Weights" and "The integer datapath
(contract version 1)", its LoRA adapters in SRAM, its mixture of experts and its FP4 formats
included) and
docs/netlist.md (the on-disk ``netlist/`` format, the ops ``head_norm``, ``route``,
``experts`` and ``gate_scale`` of version 5) — and sharing no code with ``maskc``
(nothing from the ``maskc`` package is imported). All arithmetic is on plain Python integers;
numpy appears only as the carrier that ``safetensors`` reads the netlist's arrays into, and
every array is turned into Python lists (``.tolist()``) right after it is read. Adapter files
are decoded from their bytes (``struct``).

Speed is not a goal: it is meant for the tiny test models (``maskc testmodel``), where one token
takes a few tens of milliseconds.

Public API::

    ref = IntRef("BUILD/netlist")        # or the BUILD folder that holds netlist/
    ref = IntRef("BUILD", adapters=["ADAPTER_DIR"])    # with PEFT LoRA adapters in SRAM
    ref.reset()                           # empty KV caches, position 0
    logits = ref.step(token)              # one token at the next position -> [vocab] ints
    tokens, rows = generate(ref, prompt, max_new_tokens, temperature=0.0, top_k=0,
                            top_p=1.0, seed=0)
    logits_sha256(rows)                   # hex SHA-256 of the int32 little-endian rows
    load_adapter(folder, ref)             # {base matrix: a_codes, a_m, a_e, b_codes, b_m, b_e}
    vq(values)                            # numerics.md VQ of exact Fractions -> (codes, m, E)

``ref.trace`` may be set to a list: every executed op then appends
``(position, op_index, op_name, out_slot, value)`` (value: a signal list, or an act8 tuple
``(codes, m, e)``), which is how a mismatch against ``maskc emulate`` is located.

Ambiguities found (each resolved by the most literal reading; see the code comments marked
``AMBIGUITY``):

1. (Resolved in the document since: ``emax`` is taken over the visible positions whose value
   vector is not all zero; an all-zero vector has ``m = 0, e = 0``.)
2. Sampling with a single kept token, or with ``p`` of the kept set all in one token: the doc
   says "one draw per sampled token", so one ``next_u64()`` is drawn for every token generated
   with ``temperature > 0``, even when only one token can be chosen. Greedy draws nothing.
3. ``top_p > 1`` (``pq > 65536``): no prefix satisfies ``65536 * s >= pq * total``; the doc's
   "always at least one token" does not say which set then. This module keeps the whole top-k
   set (the whole prefix) in that case. ``pq = 0`` keeps exactly one token.
4. ``tq = round(256 T)``: Python's ``round`` (half to even) is used on the float, as the task
   fixes; the doc only says "round". ``temperature == 0`` means greedy; a positive temperature
   whose ``round(256 T)`` is 0 is raised to ``tq = 1`` ("``>= 1``").
5. Generation never stops early at ``eos_token_id``: neither document says it should, so
   ``generate`` always returns ``max_new_tokens`` tokens. (``maskc.emulate``'s generate stops
   at EOS unless told not to; compare with that turned off.)
6. The per-group step/offset shifts ``SMAX``/``ZMAX`` come from the matrix ``format`` in
   netlist.json (``2^scale_shift_bits - 1``); the result does not depend on them (they cancel
   exactly inside ``rsr``) as long as they are ``>= scale_s``/``zero_s``, which is checked.
   The doc does not spell the key names of ``format``; several spellings are accepted.
7. Tiles: neither numerics.md nor netlist.md says that a tile's first column is a multiple of
   the group size (docs/fabric.md implies it: group sizes divide a tile row). This module does
   not rely on it: each tile group's fields apply to that tile's own ``G`` columns (the partial
   ``A``/``B`` of all tiles of a row are added as integers before the single rounding, as
   numerics.md says), and it checks that every cell ``(r, j)`` is covered by exactly one tile.
8. ``inv_sqrt_hd``: numerics.md defines it as ``round(2^16 / sqrt(hd))``; netlist.md lists it as
   ``numerics.inv_sqrt_hd_q16``. The netlist value is used (it is the chip's constant) and
   checked against the formula. Likewise ``log2e_q16`` (94548) and the four lookup tables are
   read from the netlist and checked against their defining formulas.
9. Symmetric formats: docs/netlist.md marks ``zero_m``/``zero_s`` as present for asymmetric
   formats only and says nothing of ``zero_e``; when they are absent the offset term ``B`` (and
   the embedding's offset term) is 0.
10. The tables' ``round`` does not say how exact halves round (half up or half to even). The
    tables are read from the netlist (they are the contract) and compared with the formulas
    allowing a difference of 1; ``IntRef.table_off_by_one`` counts the entries that differ
    (0 for every table on the test models).
11. (Fixed in netlist.md since: ``numerics.luts`` maps table names to shapes.)
12. (Fixed in netlist.md since: ``codes`` holds one code per weight.)
13. The KV-cache context bound (netlist ``sram``) is not enforced: numerics.md does not say what
    the datapath does past it.
14. LoRA adapter files (docs/sram.md "Adapter files", PEFT layout): the config checks that
    change the computed model are made (LoRA variants, ``r`` in 1..1024, ``lora_alpha`` > 0,
    default 8); the cross-checks of ``target_modules``/``layers_to_transform`` against the
    tensors are not (they refuse adapters, they never change a loaded one's integers).
    A tensor other than ``lora_A``/``lora_B`` of the seven block matrices, or a lora_A without
    its lora_B, is refused (numerics.md: "some of the transformer-block matrices").
15. ``s = lora_alpha / r`` and the shapes ``[r, C]``, ``[R, r]`` use one ``r``: the config's
    ``r`` is used for ``s`` and every tensor's rank must equal it (docs/sram.md: "a rank that
    disagrees with the tensors" is refused).
16. "NaN or infinity is refused": checked on ``A`` and on ``s * B`` (so a ``B`` NaN/infinity,
    and an ``s * B`` product that overflows to infinity, are refused too).
17. The adapter's ``y`` is the matmul's output "a signal, above", i.e. already ``sat32``'d with
    its bias; then ``y' = sat32(y + sum d)`` saturates a second time (the same result unless
    ``y`` saturated). The same adapter folder given twice is added twice.
18. Mixture of experts: each expert's ``y_e`` is "as a dense MLP computes it": the gate and up
    matmuls (no bias: netlist.md names none for an expert), SwiGLU's act8, the down matmul
    (a signal, ``sat32``'d). The ``select`` slot holds the pairs ``(e, P_e)`` in the
    selection's order; the sum over them is exact, so the order does not matter.
19. head_norm: "as the RMSNorm above with D = hd" is read as the same ``eps_d`` formula with
    ``hd`` (the op carries ``eps_d``, which is used and checked against ``round(hd * eps *
    2^40)`` when the architecture gives ``rms_norm_eps``), and the op's one ``gamma`` is shared
    by all its heads.
20. nvfp4's ``tensor_m``: numerics.md defines it per tensor but not its place in the
    netlist; the matrix entry's ``tensor_m`` or the tiles file's ``NAME/tensor_m`` is read.
"""

from __future__ import annotations

import hashlib
import json
import math
import operator
import re
import struct
import sys
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

from safetensors import safe_open

__all__ = [
    "IntRef",
    "SplitMix64",
    "bitlen",
    "generate",
    "greedy",
    "load_adapter",
    "logits_sha256",
    "q8",
    "rdiv",
    "rsr",
    "sample",
    "sat32",
    "term",
    "vq",
]

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1
TERM_BOUND = 1 << 40
MASK64 = (1 << 64) - 1
#: numerics.md "FP4 formats": the level table of mxfp4/nvfp4 (twice the E2M1 value of each
#: code: sign << 3 | magnitude code, magnitudes 0, 0.5, 1, 1.5, 2, 3, 4, 6) and mxfp4's SREF
E2M1_TWICE = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12]
MX_SREF = 19


# ------------------------------------------------------------------------------------------
# Primitives (numerics.md, "Primitives")
# ------------------------------------------------------------------------------------------


def rsr(x: int, k: int) -> int:
    """Rounding shift right: ``k > 0``: ``floor((x + 2^(k-1)) / 2^k)``; ``k <= 0``: ``x * 2^-k``."""
    if k > 0:
        return (x + (1 << (k - 1))) >> k  # Python's >> on int is an arithmetic (floor) shift
    return x << (-k)


def rdiv(a: int, b: int) -> int:
    """Rounding division for ``b > 0``: ``floor((2a + b) / (2b))`` (round half up)."""
    if b <= 0:
        raise ValueError(f"rdiv by {b}")
    return (2 * a + b) // (2 * b)


def sat32(x: int) -> int:
    """Clamp to ``[-2^31, 2^31 - 1]``."""
    if x < INT32_MIN:
        return INT32_MIN
    if x > INT32_MAX:
        return INT32_MAX
    return x


def bitlen(n: int) -> int:
    """Bits of ``n >= 0`` (0 for 0)."""
    if n < 0:
        raise ValueError(f"bitlen of {n}")
    return n.bit_length()


def term(v: int, k: int) -> int:
    """``clamp(rsr(v, k), -2^40, 2^40)``."""
    r = rsr(v, k)
    if r < -TERM_BOUND:
        return -TERM_BOUND
    if r > TERM_BOUND:
        return TERM_BOUND
    return r


ACT_GROUP = 32
ACT_SMAX = 7


def q8(y: list[int], f: int, group: int = ACT_GROUP) -> tuple[list[int], int, int, list[int]]:
    """Q8(y, f, G) of numerics.md "Value types": integers with ``f`` fraction bits -> act8.

    Returns ``(x, m, e, s)``; element ``j`` of group ``a`` (``group`` consecutive elements)
    stands for ``x[j] * m * 2^(e + s[a])``.
    """
    n = len(y)
    ng = -(-n // group)
    a = max((abs(v) for v in y), default=0)
    if a == 0:
        return [0] * n, 0, 0, [0] * ng
    k = max(0, bitlen(a) - 18)
    yp = [rsr(v, k) for v in y]
    ap = max(abs(v) for v in yp)
    assert ap <= 1 << 18
    m = (ap + 126) // 127  # ceil(a' / 127)
    assert 1 <= m < 1 << 12
    x = []
    s = []
    for g0 in range(0, n, group):
        chunk = yp[g0 : g0 + group]
        ga = max(abs(v) for v in chunk)
        d = max(dd for dd in range(ACT_SMAX + 1) if ga * (1 << dd) <= ap)
        s.append(ACT_SMAX - d)
        x.extend(rdiv(v * (1 << d), m) for v in chunk)
    assert all(-127 <= v <= 127 for v in x)
    return x, m, k - ACT_SMAX - f, s


def _dot(a: list[int], b: list[int]) -> int:
    return sum(map(operator.mul, a, b))


# ------------------------------------------------------------------------------------------
# SplitMix64 (numerics.md, "Sampling")
# ------------------------------------------------------------------------------------------


class SplitMix64:
    """SplitMix64 seeded with ``seed mod 2^64``; one ``next_u64`` per sampled token."""

    def __init__(self, seed: int):
        self.s = seed & MASK64

    def next_u64(self) -> int:
        self.s = (self.s + 0x9E3779B97F4A7C15) & MASK64
        z = self.s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)


# ------------------------------------------------------------------------------------------
# Netlist reading
# ------------------------------------------------------------------------------------------


def _read_arrays(path: Path) -> dict[str, list]:
    """Every array of a safetensors file as nested Python lists (numpy only as carrier)."""
    out = {}
    with safe_open(str(path), framework="numpy") as f:
        for name in f.keys():  # noqa: SIM118 (safe_open is not a dict)
            out[name] = f.get_tensor(name).tolist()
    return out


def _fmt_int(fmt: dict, *names: str, default: int | None = None) -> int | None:
    for n in names:
        if n in fmt and fmt[n] is not None:
            return int(fmt[n])
    return default


class Matrix:
    """One quantized matrix, reassembled from its tiles into per-row group lists.

    ``rows[r]`` is a list of ``(group_key, L, a_coef, b_coef)``: ``group_key`` indexes
    ``groups`` (``(c_start, c_end)`` real matrix columns of one tile group), ``L`` the levels
    ``levels[codes[r, j]]`` of those columns, ``a_coef = scale_m * 2^(SMAX - scale_s)`` and
    ``b_coef = zero_m * 2^(ZMAX - zero_s)`` (0 for symmetric formats). Per row,
    ``scale_e[r]`` and ``zero_e[r]``. This is numerics.md "Matrix-vector product", with the
    tiles of a row adding their partial ``A`` and ``B`` before the single rounding.
    """

    def __init__(self, name: str, meta: dict, arrays: dict[str, list]):
        self.name = name
        self.meta = meta
        R, C = (int(v) for v in meta["shape"])
        self.R, self.C = R, C
        fmt = meta.get("format") or {}
        G = _fmt_int(fmt, "group_size", "group", "G")
        if G is None:
            raise ValueError(f"{name}: no group_size in format {fmt}")
        self.G = G
        pre = name + "/"
        need = ["block", "levels", "codes", "scale_m", "scale_s", "scale_e"]
        for k in need:
            if pre + k not in arrays:
                raise ValueError(f"{name}: tiles file lacks {pre + k}")
        blocks = arrays[pre + "block"]
        tiles_levels = arrays[pre + "levels"]
        # AMBIGUITY (netlist.md): NAME/levels is int16 [2^bits] "the same in every tile";
        # accept a per-tile [n, 2^bits] array too, and require all equal.
        if tiles_levels and isinstance(tiles_levels[0], list):
            for lv in tiles_levels[1:]:
                if lv != tiles_levels[0]:
                    raise ValueError(f"{name}: levels differ between tiles")
            levels = tiles_levels[0]
        else:
            levels = tiles_levels
        bits = _fmt_int(fmt, "bits", "code_bits")
        if bits is not None and len(levels) != 1 << bits:
            raise ValueError(f"{name}: {len(levels)} levels for {bits} bits")
        # numerics.md "FP4 formats": format kind mxfp4/nvfp4 (absent: int), the fixed level
        # table twice E2M1, a shift reference SREF and nvfp4's tensor mantissa
        kind = fmt.get("kind", "int")
        if kind not in ("int", "mxfp4", "nvfp4"):
            raise ValueError(f"{name}: unknown format kind {kind!r}")
        self.kind = kind
        if kind == "int":
            if any(levels[i] >= levels[i + 1] for i in range(len(levels) - 1)):
                raise ValueError(f"{name}: levels not strictly increasing")
        elif levels != E2M1_TWICE:
            raise ValueError(f"{name}: an {kind} level table must be twice E2M1")
        if kind != "int" and (asym_keys := [k for k in arrays if k.startswith(name + "/zero_")]):
            raise ValueError(f"{name}: an FP4 format is symmetric, found {asym_keys[0]}")
        self.tensor_m = 1
        if kind == "nvfp4":
            # AMBIGUITY 20: numerics.md gives tensor_m as a per-tensor field (uint32 [1]) but
            # not where the netlist keeps it; read the matrix entry's "tensor_m" or the
            # tiles file's NAME/tensor_m (every tile the same).
            tm = meta.get("tensor_m", arrays.get(name + "/tensor_m"))
            while isinstance(tm, list):
                if any(v != tm[0] for v in tm):
                    raise ValueError(f"{name}: tensor_m differs between tiles")
                tm = tm[0]
            if not isinstance(tm, int) or not 1 <= tm < 1 << 24:
                raise ValueError(f"{name}: nvfp4 needs a 24-bit tensor_m >= 1, got {tm!r}")
            self.tensor_m = tm
        elif (name + "/tensor_m") in arrays or "tensor_m" in meta:
            raise ValueError(f"{name}: only nvfp4 has tensor_m")
        self.levels = levels
        codes = arrays[pre + "codes"]
        # netlist.md, version 2 and 3: codes of 4 bits or fewer are stored two per byte, cell 2j in
        # the low nibble and cell 2j+1 in the high one ([n, TR, W // 2]).
        if bits is not None and bits <= 4:
            codes = [[[v >> s & 15 for v in row for s in (0, 4)] for row in tile] for tile in codes]
        scale_m = arrays[pre + "scale_m"]
        scale_s = arrays[pre + "scale_s"]
        scale_e = arrays[pre + "scale_e"]
        asym = (pre + "zero_m") in arrays
        zero_m = arrays.get(pre + "zero_m")
        zero_s = arrays.get(pre + "zero_s")
        zero_e = arrays.get(pre + "zero_e")
        if asym and zero_s is None:
            raise ValueError(f"{name}: zero_m without zero_s")
        self.asym = asym

        ssb = _fmt_int(fmt, "scale_shift_bits", "step_shift_bits", "scale_shift")
        zsb = _fmt_int(fmt, "zero_shift_bits", "offset_shift_bits", "zero_shift")
        max_ss = max((v for t in scale_s for row in t for v in row), default=0)
        max_zs = max((v for t in zero_s for row in t for v in row), default=0) if asym else 0
        # AMBIGUITY 6: SMAX/ZMAX from the format; they cancel inside rsr, so only ">= shift"
        # matters. Fall back to the largest stored shift when the key is not found.
        self.SMAX = (1 << ssb) - 1 if ssb is not None else max_ss
        self.ZMAX = (1 << zsb) - 1 if zsb is not None else max_zs
        if max_ss > self.SMAX or max_zs > self.ZMAX:
            raise ValueError(f"{name}: a stored shift exceeds 2^shift_bits - 1")
        # the shift reference of the product (numerics.md "FP4 matrices"): 19 for mxfp4
        self.SREF = MX_SREF if kind == "mxfp4" else self.SMAX

        n = len(blocks)
        if meta.get("tiles") is not None and int(meta["tiles"]) != n:
            raise ValueError(f"{name}: {n} tiles stored, netlist.json says {meta['tiles']}")
        covered = [[0] * C for _ in range(R)]
        self.scale_e: list[int | None] = [None] * R
        self.zero_e: list[int | None] = [None] * R
        groups: dict[tuple[int, int], int] = {}
        rows: list[list[tuple[int, list[int], int, int]]] = [[] for _ in range(R)]
        for t in range(n):
            r0, nr, c0, nc = blocks[t]
            if r0 < 0 or nr < 0 or c0 < 0 or nc < 0 or r0 + nr > R or c0 + nc > C:
                raise ValueError(f"{name}: tile {t} block {blocks[t]} outside [{R}, {C}]")
            tcodes = codes[t]
            W = len(tcodes[0]) if tcodes else 0
            if nr > len(tcodes) or nc > W:
                raise ValueError(f"{name}: tile {t} block larger than the tile")
            ngroups = (nc + G - 1) // G
            for rr in range(nr):
                r = r0 + rr
                se = scale_e[t][rr]
                if self.scale_e[r] is None:
                    self.scale_e[r] = se
                elif self.scale_e[r] != se:
                    raise ValueError(f"{name}: scale_e of row {r} differs between tiles")
                ze = zero_e[t][rr] if zero_e is not None else 0
                if self.zero_e[r] is None:
                    self.zero_e[r] = ze
                elif self.zero_e[r] != ze:
                    raise ValueError(f"{name}: zero_e of row {r} differs between tiles")
                crow = tcodes[rr]
                cov = covered[r]
                for gi in range(ngroups):
                    lo = gi * G
                    hi = min(lo + G, nc)
                    cs, ce = c0 + lo, c0 + hi
                    for j in range(cs, ce):
                        cov[j] += 1
                    sm = scale_m[t][rr][gi]
                    ss = scale_s[t][rr][gi]
                    if ss <= self.SREF:
                        a_coef = sm << (self.SREF - ss)
                    elif any(levels[c] for c in crow[lo:hi]):
                        raise ValueError(
                            f"{name}: row {r} group at column {cs}: scale_s {ss} > SREF "
                            f"{self.SREF} with a nonzero level"
                        )
                    else:  # an all-zero mxfp4 block: nothing to add at any factor
                        a_coef = 0
                    if asym:
                        b_coef = zero_m[t][rr][gi] << (self.ZMAX - zero_s[t][rr][gi])
                    else:
                        b_coef = 0
                    # numerics.md "FP4 matrices": the pieces a ∩ g of the activation groups
                    # (32) and this weight group (a whole activation group when G is a
                    # multiple of 32 and the group starts on one; halves for G = 16)
                    a0 = cs
                    while a0 < ce:
                        a1 = min((a0 // ACT_GROUP + 1) * ACT_GROUP, ce)
                        L = [levels[c] for c in crow[a0 - c0 : a1 - c0]]
                        key = groups.setdefault((a0, a1), len(groups))
                        rows[r].append((key, L, a_coef, b_coef))
                        a0 = a1
        for r in range(R):
            if any(c != 1 for c in covered[r]):
                bad = [j for j, c in enumerate(covered[r]) if c != 1][:5]
                raise ValueError(
                    f"{name}: row {r} columns {bad} covered {[covered[r][j] for j in bad]} times"
                )
        self.groups = [None] * len(groups)
        for k, i in groups.items():
            self.groups[i] = k
        self.rows = rows

    def matvec(self, act, bias: list[int] | None, F: int) -> list[int]:
        """numerics.md "Matrix-vector product": act8 ``(x, m_a, e_a, s)`` -> signal."""
        x, m_a, e_a, sa = act
        if len(x) != self.C:
            raise ValueError(f"{self.name}: input length {len(x)}, expected {self.C}")
        # the act8 group shift of activation group a scales both sums by 2^s_a
        xs = [x[cs:ce] for cs, ce in self.groups]
        sh = [sa[cs // ACT_GROUP] for cs, _ in self.groups]
        X = [sum(v) << k for v, k in zip(xs, sh, strict=True)]
        out = []
        SREF, ZMAX, tm = self.SREF, self.ZMAX, self.tensor_m
        for r in range(self.R):
            A = 0
            B = 0
            for key, L, a_coef, b_coef in self.rows[r]:
                S = _dot(xs[key], L) << sh[key]
                A += a_coef * S
                if b_coef:
                    B += b_coef * X[key]
            y = term(A * m_a * tm, SREF - self.scale_e[r] - e_a - F) + term(
                B * m_a, ZMAX - self.zero_e[r] - e_a - F
            )
            if bias is not None:
                y += bias[r]
            out.append(sat32(y))
        return out

    def embed_row(self, t: int, F: int) -> list[int]:
        """numerics.md "Embedding lookup": row ``t`` exactly, as a signal."""
        if not 0 <= t < self.R:
            raise ValueError(f"token {t} outside the vocabulary [0, {self.R})")
        if self.kind != "int":  # numerics.md: FP4 only for transformer-block matrices
            raise ValueError(f"{self.name}: an embedding in {self.kind}")
        h = [None] * self.C
        se, ze = self.scale_e[t], self.zero_e[t]
        for key, L, a_coef, b_coef in self.rows[t]:
            cs, _ = self.groups[key]
            off = term(b_coef, self.ZMAX - ze - F)
            for i, lv in enumerate(L):
                h[cs + i] = sat32(term(a_coef * lv, self.SMAX - se - F) + off)
        return h


def _resolve_netlist_dir(path: str | Path) -> Path:
    p = Path(path)
    if (p / "netlist.json").is_file():
        return p
    if (p / "netlist" / "netlist.json").is_file():
        return p / "netlist"
    if p.is_file() and p.name == "netlist.json":
        return p.parent
    raise FileNotFoundError(f"no netlist.json in {p} or {p / 'netlist'}")


# ------------------------------------------------------------------------------------------
# LoRA adapters (numerics.md "LoRA adapters in SRAM")
# ------------------------------------------------------------------------------------------

_LORA_NAME = re.compile(
    r"base_model\.model\.(model\.layers\.\d+\."
    r"(?:self_attn\.[qkvo]_proj|mlp\.(?:gate|up|down)_proj))\.lora_([AB])\.weight"
)
_FLOAT_BYTES = {"F32": 4, "F16": 2, "BF16": 2}
_LORA_VARIANTS = (
    "use_dora",
    "modules_to_save",
    "rank_pattern",
    "alpha_pattern",
    "fan_in_fan_out",
    "layer_replication",
)


def _read_floats(path: Path) -> dict[str, tuple[list[int], list[float]]]:
    """Every tensor of a safetensors file as ``(shape, flat list of floats)``, from its bytes."""
    raw = path.read_bytes()
    (n,) = struct.unpack_from("<Q", raw, 0)
    data = raw[8 + n :]
    out = {}
    for name, info in json.loads(raw[8 : 8 + n]).items():
        if name == "__metadata__":
            continue
        dt, shape, (lo, hi) = info["dtype"], info["shape"], info["data_offsets"]
        count = math.prod(shape)
        if dt not in _FLOAT_BYTES or hi - lo != count * _FLOAT_BYTES[dt] or hi > len(data):
            raise ValueError(f"{path}: tensor {name}: dtype {dt}, shape {shape}, bytes {lo}..{hi}")
        buf = data[lo:hi]
        if dt == "BF16":  # the upper 16 bits of a float32 (little-endian: bytes 2 and 3)
            wide = bytearray(4 * count)
            wide[2::4], wide[3::4] = buf[0::2], buf[1::2]
            buf, dt = bytes(wide), "F32"
        out[name] = (shape, list(struct.unpack(f"<{count}{'f' if dt == 'F32' else 'e'}", buf)))
    return out


def _floor_log2(q: Fraction) -> int:
    n, d = q.numerator, q.denominator
    k = n.bit_length() - d.bit_length()  # floor(log2 q) is k or k - 1
    return k if n << max(0, -k) >= d << max(0, k) else k - 1


def vq(v: list[Fraction]) -> tuple[list[int], int, int]:
    """numerics.md "VQ": exact reals -> ``(codes, m, E)``, step ``m * 2^E``, exactly."""
    a = max((abs(x) for x in v), default=0)
    if a == 0:
        return [0] * len(v), 0, 0
    E = _floor_log2(a / 127) - 14  # 2^14 <= a / (127 * 2^E) < 2^15
    m = math.floor(a / 127 / Fraction(2) ** E + Fraction(1, 2))
    if E < -128:
        return [0] * len(v), 0, 0
    if E > 127:
        raise ValueError(f"VQ: exponent {E} > 127 (values beyond 2^141)")
    step = m * Fraction(2) ** E
    return [max(-127, min(127, math.floor(x / step + Fraction(1, 2)))) for x in v], m, E


def load_adapter(path: str | Path, ref: IntRef) -> dict[str, dict[str, list]]:
    """A PEFT LoRA adapter folder -> per base matrix name, its SRAM integers.

    Each value holds ``a_codes`` ``[r][C]``, ``a_m``, ``a_e`` ``[r]``, ``b_codes`` ``[R][r]``,
    ``b_m``, ``b_e`` ``[R]`` (Python ints), quantized from ``A`` and ``s * B`` with ``vq``.
    """
    path = Path(path)
    cfg = json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))
    # docs/sram.md "Adapter files": LoRA variants that change the float model are refused
    bad = [k for k in _LORA_VARIANTS if cfg.get(k)]
    if bad or cfg.get("peft_type", "LORA") != "LORA" or cfg.get("bias", "none") != "none":
        raise ValueError(f"{path}: a LoRA variant this reference does not run ({bad or cfg})")
    r, alpha = cfg["r"], cfg.get("lora_alpha", 8)
    if not (isinstance(r, int) and 1 <= r <= 1024) or not alpha > 0:
        raise ValueError(f"{path}: r = {r} (1..1024), lora_alpha = {alpha} (> 0)")
    s = alpha / math.sqrt(r) if cfg.get("use_rslora", False) else alpha / r
    pairs: dict[str, dict[str, tuple[list[int], list[float]]]] = {}
    for name, t in _read_floats(path / "adapter_model.safetensors").items():
        mt = _LORA_NAME.fullmatch(name)
        if mt is None:  # AMBIGUITY 14
            raise ValueError(f"{path}: tensor {name} is not a LoRA A/B of a block matrix")
        pairs.setdefault(mt[1] + ".weight", {})[mt[2]] = t
    out = {}
    for base, ab in sorted(pairs.items()):
        mat = ref.matrices.get(base)
        if mat is None or set(ab) != {"A", "B"}:
            raise ValueError(f"{path}: {base}: no such netlist matrix, or lora_A/B missing")
        R, C = mat.R, mat.C
        (shape_a, A), (shape_b, B) = ab["A"], ab["B"]
        if shape_a != [r, C] or shape_b != [R, r] or C > 16384:
            raise ValueError(f"{path}: {base} [{R}, {C}]: lora_A {shape_a}, lora_B {shape_b}")
        sB = [b * s for b in B]  # each a Python float (double) product, rounded once
        if not all(math.isfinite(x) for x in A + sB):
            raise ValueError(f"{path}: {base}: NaN or infinity")
        qa = [vq([Fraction(x) for x in A[k * C : (k + 1) * C]]) for k in range(r)]
        qb = [vq([Fraction(x) for x in sB[i * r : (i + 1) * r]]) for i in range(R)]
        out[base] = {
            "a_codes": [q[0] for q in qa],
            "a_m": [q[1] for q in qa],
            "a_e": [q[2] for q in qa],
            "b_codes": [q[0] for q in qb],
            "b_m": [q[1] for q in qb],
            "b_e": [q[2] for q in qb],
        }
    return out


def _lora_delta(ad: dict[str, list], act, F: int) -> list[int]:
    """numerics.md "LoRA adapters in SRAM", Datapath: one adapter's ``d`` for act8 ``act``."""
    x, m_a, e_a, sa = act
    xs = [xj << sa[j // ACT_GROUP] for j, xj in enumerate(x)]  # 2^(s_a) * x_j
    u = [
        sat32(term(_dot(xs, row) * m_a * am, -(e_a + ae) - F))
        for row, am, ae in zip(ad["a_codes"], ad["a_m"], ad["a_e"], strict=True)
    ]
    xu, mu, Eu = _whole(u, F)  # Q8(u, F, r), one group, the shift folded into Eu
    return [
        term(_dot(xu, row) * mu * bm, -(Eu + be) - F)
        for row, bm, be in zip(ad["b_codes"], ad["b_m"], ad["b_e"], strict=True)
    ]


# ------------------------------------------------------------------------------------------
# The reference machine
# ------------------------------------------------------------------------------------------


class IntRef:
    """Executes a netlist's ``ops`` (docs/netlist.md "Ops") one token at a time.

    ``step(token)`` runs every op at the current position (0 after ``reset``), advances the
    position and returns the logits (int32 signal, F fraction bits) as a list of ints.
    """

    def __init__(self, netlist_dir: str | Path, adapters: Iterable[str | Path] = ()):
        self.dir = _resolve_netlist_dir(netlist_dir)
        self.net = json.loads((self.dir / "netlist.json").read_text(encoding="utf-8"))
        net = self.net
        if net.get("format") != "maskc-netlist" or net.get("version") not in (3, 4, 5, 6):
            raise ValueError(
                f"not a maskc-netlist version 3 to 6: {net.get('format')} {net.get('version')}"
            )
        num = net["numerics"]
        if num.get("contract") != 1:
            raise ValueError(f"numerics contract {num.get('contract')}, this reference is 1")
        self.F = int(num["signal_frac"])
        self.arch = net.get("architecture", {})

        params = _read_arrays(self.dir / "params.safetensors")
        self.params = params
        self.RSQRT = params["lut.rsqrt"]
        self.COS = params["lut.cos"]
        self.EXP2 = params["lut.exp2"]
        self.SIGMOID = params["lut.sigmoid"]
        self.phase_step = params["rope.phase_step"]
        self.log2e_q16 = int(num.get("log2e_q16", 94548))
        self.inv_sqrt_hd = num.get("inv_sqrt_hd_q16")
        self._check_tables()

        # Matrices: read every tiles file once, reassemble each matrix.
        mats = net["matrices"]
        if isinstance(mats, list):  # accept a list of {"name": ...} as well as a dict
            mats = {m["name"]: m for m in mats}
        files: dict[str, dict[str, list]] = {}
        self.matrices: dict[str, Matrix] = {}
        for name, meta in mats.items():
            fname = meta["file"]
            fpath = self.dir / fname
            if not fpath.is_file():
                fpath = self.dir / "tiles" / fname
            key = str(fpath)
            if key not in files:
                files[key] = _read_arrays(fpath)
            self.matrices[name] = Matrix(name, meta, files[key])
        del files

        # Input permutations (numerics.md "Input permutation"): matrix -> P, P[j] the input
        # that column j of the stored matrix reads
        self.perms: dict[str, list[int]] = {}
        for name, meta in mats.items():
            key = meta.get("input_perm")
            if key is not None:
                perm = [int(v) for v in params[key]]
                if sorted(perm) != list(range(self.matrices[name].C)):
                    raise ValueError(f"{name}: input_perm is not a permutation")
                self.perms[name] = perm

        # LoRA adapters (SRAM): one dict per folder, {base matrix name: integer fields}
        self.adapters = [load_adapter(p, self) for p in adapters]
        for ad in self.adapters:  # A's columns in the order the gathered input arrives
            for name, fields in ad.items():
                if name in self.perms:
                    fields["a_codes"] = [
                        [row[j] for j in self.perms[name]] for row in fields["a_codes"]
                    ]
        self.ops = net["ops"]
        self.trace: list | None = None
        self.reset()

    def _check_tables(self) -> None:
        """The tables and constants against their defining formulas (numerics.md)."""
        want_rsqrt = [round(2**16 / math.sqrt((256 + i) / 256)) for i in range(769)]
        want_cos = [round(2**14 * math.cos(2 * math.pi * n / 2**14)) for n in range(16384)]
        want_exp2 = [round(2**15 * 2 ** (-f / 1024)) for f in range(1024)]
        want_sig = [round(2**15 / (1 + math.exp(-(n - 4096) / 256))) for n in range(8192)]
        for label, got, want in (
            ("lut.rsqrt", self.RSQRT, want_rsqrt),
            ("lut.cos", self.COS, want_cos),
            ("lut.exp2", self.EXP2, want_exp2),
            ("lut.sigmoid", self.SIGMOID, want_sig),
        ):
            if len(got) != len(want):
                raise ValueError(f"{label}: {len(got)} entries, numerics.md says {len(want)}")
            # Float rounding of exact halves may differ by one between implementations of the
            # formula; the netlist's table is the contract, so only a gross mismatch is an error.
            bad = [i for i, (g, w) in enumerate(zip(got, want, strict=True)) if abs(g - w) > 1]
            if bad:
                raise ValueError(f"{label} differs from its formula at {bad[:5]}")
        self.table_off_by_one = {
            label: sum(1 for g, w in zip(got, want, strict=True) if g != w)
            for label, got, want in (
                ("lut.rsqrt", self.RSQRT, want_rsqrt),
                ("lut.cos", self.COS, want_cos),
                ("lut.exp2", self.EXP2, want_exp2),
                ("lut.sigmoid", self.SIGMOID, want_sig),
            )
        }
        if self.log2e_q16 != round(math.log2(math.e) * 2**16):
            raise ValueError(f"log2e_q16 = {self.log2e_q16}, expected 94548")

    # --------------------------------------------------------------------------------------

    def reset(self) -> None:
        """Empty every layer's KV cache; the next token is at position 0."""
        self.pos = 0
        # kv[layer] = list over positions of (keys, values), each a list over kv heads of
        # act8 (codes, m, e) as stored in SRAM.
        self.kv: dict[int, list] = {}

    @property
    def vocab(self) -> int:
        v = self.arch.get("vocab_size", self.arch.get("vocab"))
        return int(v) if v is not None else -1

    def step(self, token: int) -> list[int]:
        """Run one token at the current position; return its int32 logits."""
        F = self.F
        slots: dict[str, object] = {}
        logits = None
        for idx, op in enumerate(self.ops):
            kind = op["op"]
            if kind == "embed":
                out = self.matrices[op["matrix"]].embed_row(int(token), F)
                slots[op["out"]] = out
            elif kind == "rmsnorm":
                out = self._rmsnorm(slots[op["in"]], op)
                slots[op["out"]] = out
            elif kind == "matmul":
                bias = self.params[op["bias"]] if op.get("bias") else None
                name = op["matrix"]
                act = self._gather(_act(slots[op["in"]]), name)
                out = self.matrices[name].matvec(act, bias, F)
                ds = [_lora_delta(ad[name], act, F) for ad in self.adapters if name in ad]
                if ds:  # y'[i] = sat32(y[i] + sum of the adapters' d[i])
                    out = [sat32(y + sum(d)) for y, *d in zip(out, *ds, strict=True)]
                slots[op["out"]] = out
            elif kind == "rope":
                out = self._rope(slots[op["in"]], int(op["heads"]))
                slots[op["out"]] = out
            elif kind == "attention":
                out = self._attention(slots, op)
                slots[op["out"]] = out
            elif kind == "quantize":
                out = _q8_keep(_signal(slots[op["in"]]), F)
                slots[op["out"]] = out
            elif kind == "add":
                a, b = _signal(slots[op["a"]]), _signal(slots[op["b"]])
                if len(a) != len(b):
                    raise ValueError(f"op {idx} add: lengths {len(a)} and {len(b)}")
                out = [sat32(u + v) for u, v in zip(a, b, strict=True)]
                slots[op["out"]] = out
            elif kind == "swiglu":
                out = self._swiglu(_signal(slots[op["gate"]]), _signal(slots[op["up"]]))
                slots[op["out"]] = out
            elif kind == "logits":
                out = _signal(slots[op["in"]])
                logits = out
            elif kind == "head_norm":
                out = self._head_norm(_signal(slots[op["in"]]), op)
                slots[op["out"]] = out
            elif kind == "route":
                out = self._route(_signal(slots[op["in"]]), int(op["top_k"]), op["norm_topk_prob"])
                slots[op["out"]] = out
            elif kind == "experts":
                out = self._experts(_act(slots[op["in"]]), slots[op["sel"]], op)
                slots[op["out"]] = out
            elif kind == "gate_scale":
                out = self._gate_scale(_signal(slots[op["gate"]]), _signal(slots[op["in"]]))
                slots[op["out"]] = out
            else:
                raise ValueError(f"op {idx}: unknown op {kind!r}")
            if self.trace is not None:
                self.trace.append((self.pos, idx, kind, op.get("out", op.get("in")), out))
        if logits is None:
            raise ValueError("the netlist has no logits op")
        if self.vocab > 0 and len(logits) != self.vocab:
            raise ValueError(f"{len(logits)} logits, vocabulary {self.vocab}")
        self.pos += 1
        return list(logits)

    # --- ops ----------------------------------------------------------------------------

    def _rmsnorm(self, h, op) -> tuple[list[int], int, int]:
        """numerics.md "RMSNorm -> act8"."""
        h = _signal(h)
        F = self.F
        gamma = self.params[op["gamma"]]
        gamma_frac = int(op["gamma_frac"])
        eps_d = int(op["eps_d"])
        if len(gamma) != len(h):
            raise ValueError(f"rmsnorm: gamma {len(gamma)} for {len(h)} values")
        a = max(abs(v) for v in h)
        p = max(0, bitlen(a) - 15)
        u = [rsr(v, p) for v in h]
        ss = sum(v * v for v in u)
        v = ss + rsr(eps_d, 40 - 2 * F + 2 * p)
        if v == 0:
            return _q8_keep([0] * len(h), 0)  # x = 0, m = 0, e = 0, s = 0
        k = (bitlen(v) - 1) // 2
        i = rsr(v, 2 * k - 8) - 256
        assert 0 <= i <= 768, i
        rs = self.RSQRT[i]
        y = [uj * rs * gj for uj, gj in zip(u, gamma, strict=True)]
        return _q8_keep(y, gamma_frac + 16 + k)

    def _rope(self, y, heads: int) -> list[int]:
        """numerics.md "RoPE" at the current position (rotate_half pairs, per head)."""
        y = _signal(y)
        if len(y) % heads:
            raise ValueError(f"rope: {len(y)} values for {heads} heads")
        hd = len(y) // heads
        half = hd // 2
        if len(self.phase_step) != half:
            raise ValueError(f"rope: {len(self.phase_step)} phase steps for head_dim {hd}")
        pos = self.pos
        cs = []
        for i in range(half):
            phase = (pos * self.phase_step[i]) % (1 << 32)
            n = ((phase + (1 << 17)) >> 18) % (1 << 14)
            cs.append((self.COS[n], self.COS[(n - 4096) % (1 << 14)]))
        out = list(y)
        for h in range(heads):
            base = h * hd
            for i in range(half):
                c, s = cs[i]
                a = y[base + i]
                b = y[base + i + half]
                out[base + i] = sat32(rsr(a * c - b * s, 14))
                out[base + i + half] = sat32(rsr(b * c + a * s, 14))
        return out

    def _attention(self, slots, op) -> list[int]:
        """numerics.md "Attention": store k, v (Q8(., F)) in the layer's cache, then attend."""
        F = self.F
        heads = int(op["heads"])
        kvh = int(op["kv_heads"])
        hd = int(op["head_dim"])
        window = op.get("window")
        layer = op["layer"]
        q = _signal(slots[op["q"]])
        k = _signal(slots[op["k"]])
        v = _signal(slots[op["v"]])
        if len(q) != heads * hd or len(k) != kvh * hd or len(v) != kvh * hd:
            raise ValueError(f"attention layer {layer}: q/k/v lengths {len(q)}/{len(k)}/{len(v)}")
        if heads % kvh:
            raise ValueError(f"attention: {heads} heads, {kvh} kv heads")
        inv = round(2**16 / math.sqrt(hd))
        if self.inv_sqrt_hd is not None and int(self.inv_sqrt_hd) != inv:
            raise ValueError(f"inv_sqrt_hd_q16 = {self.inv_sqrt_hd}, formula gives {inv}")
        if self.inv_sqrt_hd is not None:
            inv = int(self.inv_sqrt_hd)

        cache = self.kv.setdefault(layer, [])
        p = self.pos
        if len(cache) != p:
            raise ValueError(f"attention layer {layer}: cache holds {len(cache)} at position {p}")
        keys = [_whole(k[j * hd : (j + 1) * hd], F) for j in range(kvh)]
        vals = [_whole(v[j * hd : (j + 1) * hd], F) for j in range(kvh)]
        for _x, m_, e_ in keys + vals:  # the SRAM scale word: m in 24 bits, e an int8
            assert 0 <= m_ < 1 << 24 and -128 <= e_ < 128
        cache.append((keys, vals))

        lo = 0
        if window is not None and int(window) > 0:
            lo = max(0, p - int(window) + 1)  # t > p - window
        visible = range(lo, p + 1)
        group = heads // kvh
        log2e = self.log2e_q16
        out: list[int] = []
        for h in range(heads):
            kv = h // group
            xq, mq, eq = _whole([val * inv for val in q[h * hd : (h + 1) * hd]], F + 16)
            z = []
            for t in visible:
                xk, mk, ek = cache[t][0][kv]
                d = _dot(xq, xk)
                z.append(sat32(rsr(d * mq * mk, -(eq + ek) - F)))
            zmax = max(z)
            pr = []
            for zt in z:
                w = rsr((zmax - zt) * log2e, F + 6)
                pr.append(rsr(self.EXP2[w % 1024], w >> 10) if (w >> 10) < 32 else 0)
            tot = sum(pr)
            assert tot >= 1 << 15
            R = (1 << 46) // tot
            P = [rsr(pt * R, 31) for pt in pr]
            vs = [cache[t][1][kv] for t in visible]
            # emax over the visible positions whose value vector is not all zero (m != 0)
            emax = max((ev for _, mv, ev in vs if mv), default=0)
            o = [0] * hd
            for Pt, (xv, mv, ev) in zip(P, vs, strict=True):
                Wt = rsr(Pt * mv, emax - ev)
                if Wt:
                    for i in range(hd):
                        o[i] += Wt * xv[i]
            out.extend(sat32(rsr(oi, 15 - emax - F)) for oi in o)
        return out

    # --- mixture of experts (numerics.md "Mixture of experts") ----------------------------

    def _route(self, z: list[int], top_k: int, norm_topk_prob) -> list[tuple[int, int]]:
        """Selection and weights: ``[(e, P_e)]`` for the ``top_k`` experts, best first."""
        if norm_topk_prob not in (0, 1):
            raise ValueError(f"route: norm_topk_prob {norm_topk_prob!r}")
        if not 1 <= top_k <= len(z):
            raise ValueError(f"route: top_k {top_k} of {len(z)} experts")
        F = self.F
        order = sorted(range(len(z)), key=lambda e: (-z[e], e))
        chosen = order[:top_k]
        zmax = max(z)
        assert zmax == z[chosen[0]]
        p = []
        for ze in z:
            w = rsr((zmax - ze) * self.log2e_q16, F + 6)
            p.append(rsr(self.EXP2[w % 1024], w >> 10) if (w >> 10) < 32 else 0)
        tot = sum(p[e] for e in chosen) if norm_topk_prob else sum(p)
        assert tot >= 1 << 15
        R = (1 << 46) // tot
        return [(e, rsr(p[e] * R, 31)) for e in chosen]

    def _experts(self, act, sel, op) -> list[int]:
        """Each selected expert's MLP on ``act``, weighted: ``sat32(rsr(sum P_e * y_e, 15))``."""
        if not isinstance(sel, list):
            raise TypeError("experts: its 'sel' slot is not a selection")
        F = self.F
        n = int(op["experts"])
        acc = None
        for e, P in sel:
            if not 0 <= e < n:
                raise ValueError(f"experts: expert {e} of {n}")
            gate, up, down = (
                self.matrices[op[k].replace("{e}", str(e))] for k in ("gate", "up", "down")
            )
            g = gate.matvec(self._gather(act, gate.name), None, F)
            u = up.matvec(self._gather(act, up.name), None, F)
            y = down.matvec(self._gather(self._swiglu(g, u), down.name), None, F)
            acc = [0] * len(y) if acc is None else acc
            for j, yj in enumerate(y):
                acc[j] += P * yj
        return [sat32(rsr(a, 15)) for a in acc]

    def _gather(self, act, name: str):
        """numerics.md "Input permutation": a matrix with one reads ``Q8(v[P], f, 32)``, ``v``
        the vector (with ``f`` fraction bits) its input's act8 was made from."""
        perm = self.perms.get(name)
        if perm is None:
            return act
        y, f = act.pre
        return q8([y[j] for j in perm], f, ACT_GROUP)

    def _gate_scale(self, g: list[int], y: list[int]) -> list[int]:
        """Qwen2-MoE's shared expert: ``sat32(rsr(SIGMOID[n] * y, 15))``, ``n`` from ``g[0]``."""
        if len(g) != 1:
            raise ValueError(f"gate_scale: a gate of {len(g)} values")
        n = min(max(rsr(g[0], self.F - 8), -4096), 4095) + 4096
        s = self.SIGMOID[n]
        return [sat32(rsr(s * yj, 15)) for yj in y]

    def _head_norm(self, y: list[int], op) -> list[int]:
        """q/k norms: RMSNorm of each head over head_dim, a signal out."""
        F = self.F
        heads = int(op["heads"])
        gamma = self.params[op["gamma"]]
        hd = len(gamma)
        if len(y) != heads * hd:
            raise ValueError(f"head_norm: {len(y)} values for {heads} heads of {hd}")
        eps_d = int(op["eps_d"])
        eps = self.arch.get("rms_norm_eps")
        if eps is not None and eps_d != round(hd * eps * 2**40):
            raise ValueError(f"head_norm: eps_d {eps_d}, round(hd * eps * 2^40) differs")
        c0 = int(op["gamma_frac"]) + 16 - F
        out = []
        for h in range(heads):
            v_ = y[h * hd : (h + 1) * hd]
            a = max(abs(v) for v in v_)
            p = max(0, bitlen(a) - 15)
            u = [rsr(v, p) for v in v_]
            v = sum(x * x for x in u) + rsr(eps_d, 40 - 2 * F + 2 * p)
            if v == 0:
                out += [0] * hd
                continue
            k = (bitlen(v) - 1) // 2
            i = rsr(v, 2 * k - 8) - 256
            assert 0 <= i <= 768, i
            out += [
                sat32(rsr(uj * self.RSQRT[i] * gj, c0 + k)) for uj, gj in zip(u, gamma, strict=True)
            ]
        return out

    def _swiglu(self, g: list[int], u: list[int]) -> tuple[list[int], int, int]:
        """numerics.md "SwiGLU -> act8"."""
        F = self.F
        if len(g) != len(u):
            raise ValueError(f"swiglu: gate {len(g)}, up {len(u)}")
        h = []
        for gj, uj in zip(g, u, strict=True):
            n = min(max(rsr(gj, F - 8), -4096), 4095) + 4096
            s = rsr(gj * self.SIGMOID[n], 15)
            h.append(sat32(rsr(s * uj, F)))
        return _q8_keep(h, F)


class _Act8(tuple):
    """An act8 ``(x, m, e, s)`` that remembers the vector ``y`` and fraction bits ``f`` it was
    made from (``pre``), which a matrix with an input permutation gathers."""

    pre: tuple[list[int], int]


def _q8_keep(y: list[int], f: int) -> _Act8:
    """``Q8(y, f, 32)`` remembering ``(y, f)``."""
    out = _Act8(q8(y, f, ACT_GROUP))
    out.pre = (list(y), f)
    return out


def _whole(y: list[int], f: int) -> tuple[list[int], int, int]:
    """Q8 with the whole vector as one group, its shift folded into the exponent (attention)."""
    x, m, e, s = q8(y, f, len(y))
    return x, m, e + s[0]


def _signal(v) -> list[int]:
    if isinstance(v, tuple):
        raise TypeError("an act8 slot where a signal was expected")
    return v


def _act(v) -> tuple[list[int], int, int]:
    if not isinstance(v, tuple):
        raise TypeError("a signal slot where an act8 was expected")
    return v


# ------------------------------------------------------------------------------------------
# Sampling and generation (numerics.md "Sampling", "Logits hash")
# ------------------------------------------------------------------------------------------


def greedy(logits: list[int]) -> int:
    """Index of the largest logit; ties go to the lowest token id."""
    best = 0
    for i in range(1, len(logits)):
        if logits[i] > logits[best]:
            best = i
    return best


def sample(
    logits: list[int],
    tq: int,
    top_k: int,
    pq: int,
    rng: SplitMix64,
    F: int = 12,
    log2e_q16: int = 94548,
    exp2: list[int] | None = None,
) -> int:
    """One sampled token, numerics.md "Sampling" (one ``next_u64`` draw)."""
    if exp2 is None:
        exp2 = [round(2**15 * 2 ** (-f / 1024)) for f in range(1024)]
    z = [rdiv(li * 256, tq) for li in logits]
    order = sorted(range(len(z)), key=lambda i: (-z[i], i))
    if top_k > 0:
        order = order[:top_k]
    zmax = z[order[0]]
    p = {}
    for i in order:
        w = rsr((zmax - z[i]) * log2e_q16, F + 6)
        p[i] = rsr(exp2[w % 1024], w >> 10) if (w >> 10) < 32 else 0
    total = sum(p[i] for i in order)
    kept = order  # AMBIGUITY 3: no prefix satisfies the condition (pq > 65536) -> keep all
    s = 0
    for n, i in enumerate(order):
        s += p[i]
        if 65536 * s >= pq * total:
            kept = order[: n + 1]
            break
    s = sum(p[i] for i in kept)
    r = (rng.next_u64() * s) >> 64
    run = 0
    for i in kept:
        run += p[i]
        if run > r:
            return i
    raise AssertionError("sampling fell off the kept set")  # unreachable: r < s


def generate(
    ref: IntRef,
    prompt: list[int],
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int = 0,
) -> tuple[list[int], list[list[int]]]:
    """Reset ``ref``, feed ``prompt``, generate ``max_new_tokens`` tokens.

    Returns the generated ids and the logits of every generated position (the prompt's last
    position, then each decode step; the last generated token is not fed back). Greedy when
    ``temperature == 0``. Never stops early at EOS (AMBIGUITY 5).
    """
    if not prompt:
        raise ValueError("empty prompt")
    if temperature < 0:
        raise ValueError("negative temperature")
    # AMBIGUITY 4: Python's round() on the float (round half to even), as fixed for this
    # reference: tq = round(256 T) (at least 1), pq = round(65536 top_p).
    sampled = temperature > 0
    tq = max(1, round(256 * temperature)) if sampled else 0
    pq = round(65536 * top_p)
    rng = SplitMix64(seed)
    ref.reset()
    logits = None
    for t in prompt:
        logits = ref.step(t)
    tokens: list[int] = []
    rows: list[list[int]] = []
    for n in range(max_new_tokens):
        rows.append(logits)
        if sampled:
            tok = sample(logits, tq, top_k, pq, rng, ref.F, ref.log2e_q16, ref.EXP2)
        else:
            tok = greedy(logits)
        tokens.append(tok)
        if n + 1 < max_new_tokens:
            logits = ref.step(tok)
    return tokens, rows


def logits_sha256(rows: list[list[int]]) -> str:
    """SHA-256 of every row's int32 little-endian values, rows in order."""
    h = hashlib.sha256()
    for row in rows:
        h.update(struct.pack(f"<{len(row)}i", *row))
    return h.hexdigest()


def _main(argv: list[str]) -> int:
    import argparse
    import time

    ap = argparse.ArgumentParser(description="Run the integer reference on a netlist.")
    ap.add_argument("netlist")
    ap.add_argument("--tokens", default="1,2,3,4,5", help="prompt token ids, comma separated")
    ap.add_argument("-n", "--max-new-tokens", type=int, default=8)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--top-k", type=int, default=0)
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--adapter",
        action="append",
        default=[],
        metavar="DIR",
        help="a PEFT LoRA adapter folder (repeatable)",
    )
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    ref = IntRef(args.netlist, args.adapter)
    t1 = time.perf_counter()
    prompt = [int(t) for t in args.tokens.split(",") if t.strip()]
    tokens, rows = generate(
        ref, prompt, args.max_new_tokens, args.temperature, args.top_k, args.top_p, args.seed
    )
    t2 = time.perf_counter()
    print(
        json.dumps(
            {
                "tokens": tokens,
                "logits_sha256": logits_sha256(rows),
                "load_s": round(t1 - t0, 3),
                "run_s": round(t2 - t1, 3),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
