"""The bit-exact emulator: runs a build's netlist with the integer arithmetic of
docs/numerics.md (contract version 1).

:class:`Chip` loads only ``BUILD/netlist`` (never the original weights), prepares each matrix
for fast exact evaluation, and executes the netlist's ``ops`` list over a batch of tokens
(prefill is matrix-matrix; decode is one token). All of it is integer arithmetic; kernels.py
states the bounds that keep int32/int64 exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from maskc.emulate import kernels as K
from maskc.emulate.kernels import GROUP as ACT_GROUP
from maskc.emulate.kernels import blocked
from maskc.errors import FitError, InputError
from maskc.netlist import Netlist

I64 = np.int64
#: the bound the loader enforces on a matrix's accumulator (far inside int64)
ACC_LIMIT = 1 << 53


@dataclass
class _Matrix:
    """One matrix ready for exact evaluation (kernels.py, :func:`kernels.prepare_levels`).

    ``lev``/``packed``/``d``/``off``/``accum``: the stored levels and the group sums' integer
    type; ``msh``: int64 blocked ``[NB, Cp/32, 128]`` = ``scale_m * 2^(SMAX - scale_s)`` per
    activation group; ``zsh``: int64 ``[R, Cp/32]`` = ``zero_m * 2^(ZMAX - zero_s)``; ``ka``/``kb``:
    int64 ``[R]`` = ``SMAX - scale_e``, ``ZMAX - zero_e``."""

    name: str
    rows: int
    cols: int
    cp: int
    lev: np.ndarray
    packed: bool
    d: int
    off: int
    accum: np.ndarray  #: a 1-element array of the group sums' dtype (int32 or int64)
    msh: np.ndarray
    zsh: np.ndarray
    ka: np.ndarray
    kb: np.ndarray
    has_zero: bool
    q: object  #: the QuantTensor (the embedding reads rows of it)


def _prepare(q) -> _Matrix:
    f = q.fmt
    r, c = q.shape
    g = f.group_size
    if g % ACT_GROUP:
        raise InputError(f"{q.name}: group size {g} is not a multiple of {ACT_GROUP}")
    rep = g // ACT_GROUP  # activation groups per weight group
    lmax = int(np.abs(q.levels.astype(I64)).max())
    smax = (1 << f.scale_shift_bits) - 1
    mshift = q.scale_m.astype(I64) << (smax - q.scale_s.astype(I64))
    # |acc| <= sum_a mshift * 32 * lmax * 127 * 2^7 must stay < 2^53 (kernels.py)
    if int(mshift.sum(axis=1).max()) * rep * ACT_GROUP * lmax * 127 * 128 >= ACC_LIMIT:
        raise InputError(f"{q.name}: accumulator bound beyond the emulator's exact datapath")
    lev, packed, d, off, accum = K.prepare_levels(q.codes, q.levels)
    msh = blocked(np.repeat(mshift, rep, axis=1))
    if q.zero_m is not None:
        zmax = (1 << f.zero_shift_bits) - 1
        z = q.zero_m.astype(I64) << (zmax - q.zero_s.astype(I64))
        zsh = np.ascontiguousarray(np.repeat(z, rep, axis=1))
        kb = zmax - q.zero_e.astype(I64)
    else:
        zsh = np.zeros((r, 1), I64)
        kb = np.zeros(r, I64)
    return _Matrix(q.name, r, c, f.padded_cols(c), lev, packed, d, off, np.zeros(1, accum), msh,
                   zsh, smax - q.scale_e.astype(I64), kb, q.zero_m is not None, q)  # fmt: skip


#: the fields every op kind needs (docs/netlist.md, "Ops"), and which hold parameter names
_OP_FIELDS = {
    "embed": ("matrix", "out"),
    "rmsnorm": ("in", "out", "gamma", "gamma_frac", "eps_d"),
    "matmul": ("in", "out", "matrix"),
    "rope": ("in", "out", "heads"),
    "attention": ("layer", "q", "k", "v", "out", "heads", "kv_heads", "head_dim"),
    "quantize": ("in", "out"),
    "add": ("a", "b", "out"),
    "swiglu": ("gate", "up", "out"),
    "logits": ("in",),
}


def _check_ops(ops, params: dict, nl: Netlist) -> None:
    """Every op of a known kind, with its fields, reading slots already written, and naming
    parameters that exist (InputError naming the op otherwise)."""
    where = f"{nl.path}/netlist.json"
    written: set[str] = set()
    a = nl.arch
    for i, op in enumerate(ops):
        kind = op.get("op")
        if kind not in _OP_FIELDS:
            raise InputError(f"{where}: op {i}: kind {kind!r} is not part of numerics contract 1")
        missing = [f for f in _OP_FIELDS[kind] if f not in op]
        if missing:
            raise InputError(f"{where}: op {i} ({kind}) lacks {', '.join(missing)}")
        for f in ("in", "a", "b", "q", "k", "v", "gate", "up"):
            if f in op and op[f] not in written:
                raise InputError(f"{where}: op {i} ({kind}) reads slot {op[f]!r} before any op "
                                 "writes it")  # fmt: skip
        for f in ("gamma", "bias"):
            if op.get(f) is not None and op[f] not in params:
                raise InputError(f"{where}: op {i} ({kind}) names parameter {op[f]!r}, not in "
                                 "params.safetensors")  # fmt: skip
        if kind == "attention" and (op["head_dim"] != a.head_dim or op["kv_heads"] < 1
                                    or op["heads"] % op["kv_heads"]):  # fmt: skip
            raise InputError(
                f"{where}: op {i} (attention) heads/kv_heads/head_dim are inconsistent"
            )
        if "out" in op:
            written.add(op["out"])
    if not ops or ops[0].get("op") != "embed" or ops[-1].get("op") != "logits":
        raise InputError(f"{where}: the ops must start with embed and end with logits")


@dataclass
class Act8:
    """act8 values of a batch: codes int64 ``[T, n]``, mantissa and exponent int64 ``[T]``,
    group shifts int64 ``[T, ceil(n / 32)]``."""

    x: np.ndarray
    m: np.ndarray
    e: np.ndarray
    s: np.ndarray


class Chip:
    """A build's netlist, executable. ``forward(tokens)`` -> int32 logits ``[T, vocab]``."""

    def __init__(self, nl: Netlist, context: int | None = None, progress=None, adapters=()) -> None:
        """``adapters``: :class:`maskc.adapters.Adapter` list, loaded into SRAM in order (they
        must fit beside the KV cache of ``context`` tokens: FitError otherwise)."""
        self.nl = nl
        a = nl.arch
        self.vocab = a.vocab_size
        self.F = nl.doc["numerics"]["signal_frac"]
        self.hd = a.head_dim
        sram = nl.doc["sram"]
        self.max_context = sram["max_context"]
        self.context = sram["context"] if context is None else context
        if self.context > self.max_context:
            raise FitError(
                f"--context {self.context}: the fabric's SRAM holds at most "
                f"{self.max_context:,} tokens of KV cache for this model "
                f"({sram['dies'][0]['kv']['bytes_per_token']:,} bytes per token on die 0 of "
                f"{sram['dies'][0]['bytes']:,}); use a smaller --context"
            )
        self.adapters = list(adapters)
        self.lora: dict[str, list] = {}
        if self.adapters:
            from maskc.adapters import check_against, require_fit, to_sram

            for ad in self.adapters:
                check_against(ad, nl.matrices, a.num_layers)
            fit = require_fit(sram, self.adapters, self.context)
            self.max_context = min(self.max_context, *(r["max_context"] for r in fit))
            for ad in self.adapters:
                for sm in to_sram(ad, progress):
                    self.lora.setdefault(sm.matrix, []).append(sm)
        p = nl.params()
        self.params = p
        self.rsqrt = p["lut.rsqrt"].astype(I64)
        self.cos = p["lut.cos"].astype(I64)
        self.exp2 = p["lut.exp2"].astype(I64)
        self.sigmoid = p["lut.sigmoid"].astype(I64)
        self.phase_step = p["rope.phase_step"].astype(I64)  # < 2^32; the kernel works mod 2^64
        self.log2e = nl.doc["numerics"]["log2e_q16"]
        self.inv_sqrt_hd = nl.doc["numerics"]["inv_sqrt_hd_q16"]
        self.ops = nl.doc["ops"]
        _check_ops(self.ops, p, nl)
        self.mats: dict[str, _Matrix] = {}
        names = sorted({op["matrix"] for op in self.ops if "matrix" in op})
        if progress:
            progress.start("loading netlist", len(names))
        for name in names:
            self.mats[name] = _prepare(nl.matrix(name))
            if progress:
                progress.advance(1, name)
        self.n_layers = a.num_layers
        self._nobias = np.zeros(1, I64)
        self._fused = self._fuse(p)
        if progress:  # the kernels compile on first use (then load from numba's disk cache)
            progress.start("preparing kernels (compiled on the first run only)", 1)
        self.reset()
        self.forward([0])
        self.reset()
        if progress:
            progress.advance(1)

    def _fuse(self, params) -> dict[int, tuple[list[int], _Matrix, np.ndarray | None]]:
        """Consecutive matmul ops reading the same act8 (q/k/v; gate/up) run as one kernel call
        over their stacked row blocks when their storage agrees: fewer calls, and the small
        k/v products share the threads. The arithmetic per row is unchanged (row blocks are
        independent). Returns ``{first op index: (op indices, stacked matrix, stacked bias)}``."""
        out = {}
        i = 0
        ops = self.ops
        while i < len(ops):
            if ops[i]["op"] != "matmul":
                i += 1
                continue
            j = i
            while (
                j + 1 < len(ops) and ops[j + 1]["op"] == "matmul"
                and ops[j + 1]["in"] == ops[i]["in"]
                and ops[j + 1]["out"] not in (ops[i]["in"],)
            ):  # fmt: skip
                j += 1
            group = list(range(i, j + 1))
            mats = [self.mats[ops[k]["matrix"]] for k in group]
            m0 = mats[0]
            same = all(
                m.packed == m0.packed and m.d == m0.d and m.off == m0.off and m.cp == m0.cp
                and m.accum.dtype == m0.accum.dtype and m.lev.dtype == m0.lev.dtype
                and m.has_zero == m0.has_zero
                for m in mats
            )  # fmt: skip
            if len(group) > 1 and same:
                out[i] = (group, *self._stack(mats, [ops[k].get("bias") for k in group], params))
            i = j + 1
        return out

    @staticmethod
    def _stack(mats: list[_Matrix], biases, params):
        br = K.BLOCK_ROWS
        total = sum(m.lev.shape[0] for m in mats) * br

        def rows_padded(arrs, width=None):
            shape = (total,) if width is None else (total, width)
            o = np.zeros(shape, I64)
            r = 0
            for m, a in zip(mats, arrs, strict=True):
                o[r : r + m.rows] = a
                r += m.lev.shape[0] * br
            return o

        m0 = mats[0]
        bias = None
        if any(biases):
            bias = rows_padded([params[b].astype(I64) if b else np.zeros(m.rows, I64)
                                for m, b in zip(mats, biases, strict=True)])  # fmt: skip
        st = _Matrix(
            "+".join(m.name for m in mats), total, m0.cols, m0.cp,
            np.ascontiguousarray(np.concatenate([m.lev for m in mats])), m0.packed, m0.d, m0.off,
            m0.accum, np.ascontiguousarray(np.concatenate([m.msh for m in mats])),
            rows_padded([m.zsh for m in mats], m0.zsh.shape[1]),
            rows_padded([m.ka for m in mats]), rows_padded([m.kb for m in mats]), m0.has_zero,
            None,
        )  # fmt: skip
        return st, bias

    @property
    def adapter_note(self) -> str:
        """`` with adapters A, B`` for messages about the context, or empty."""
        if not self.adapters:
            return ""
        return " with adapter " + ", ".join(a.path.name for a in self.adapters)

    # -- state ---------------------------------------------------------------------------------

    def reset(self) -> None:
        """Empty the KV cache; the next token is at position 0."""
        self.pos = 0
        self.cache = [
            {k: None for k in ("xk", "mk", "ek", "xv", "mv", "ev")} for _ in range(self.n_layers)
        ]

    # -- ops -----------------------------------------------------------------------------------

    def embed(self, tokens: np.ndarray) -> np.ndarray:
        q = self.mats[self.ops[0]["matrix"]].q
        f = q.fmt
        z = q.zero_m is not None
        dummy8 = np.zeros((1, 1), np.uint8)
        return K.embed_rows(
            np.asarray(tokens, I64), q.codes, q.levels.astype(I64), q.scale_m, q.scale_s,
            q.scale_e.astype(I64), q.zero_m if z else np.zeros((1, 1), np.int16),
            q.zero_s if z else dummy8, q.zero_e.astype(I64) if z else np.zeros(1, I64),
            f.group_size, (1 << f.scale_shift_bits) - 1, (1 << f.zero_shift_bits) - 1, z,
            q.shape[1], self.F,
        )  # fmt: skip

    def matmul(self, a: Act8, mat: _Matrix, bias: np.ndarray | None) -> np.ndarray:
        t = a.x.shape[0]
        b = self._nobias if bias is None else bias.astype(I64)
        par = t * mat.rows * mat.cp >= K.PARALLEL_MIN_MACS
        return K.matmul(a.x, a.s, a.m, a.e, mat.lev, mat.packed, mat.d, mat.off, mat.msh, mat.accum,
                        mat.ka, mat.zsh, mat.kb, b, mat.has_zero, bias is not None, self.F,
                        mat.rows, par)  # fmt: skip

    def _adapt(self, matrix: str, a: Act8, y: np.ndarray) -> np.ndarray:
        """``y`` plus the loaded adapters of ``matrix`` (docs/numerics.md, "LoRA adapters in
        SRAM"): ``sat32(y + sum of d)``."""
        mods = self.lora.get(matrix)
        if not mods:
            return y
        d = np.zeros_like(y)
        for sm in mods:
            K.lora_add(a.x, a.s, a.m, a.e, sm.a_codes, sm.a_m, sm.a_e, sm.b_codes, sm.b_m,
                       sm.b_e, self.F, d)  # fmt: skip
        return K.add_rows(y, d)

    def rmsnorm(self, h: np.ndarray, gamma: np.ndarray, gamma_frac: int, eps_d: int) -> Act8:
        return Act8(*K.rmsnorm_rows(h, gamma.astype(I64), gamma_frac, eps_d, self.F,
                                    self.rsqrt))  # fmt: skip

    def rope(self, y: np.ndarray, heads: int, positions: np.ndarray) -> np.ndarray:
        return K.rope_rows(y, heads, self.hd, positions, self.phase_step, self.cos)

    def _cache(self, layer: int, kvh: int) -> dict:
        c = self.cache[layer]
        if c["xk"] is None:
            for k in ("k", "v"):
                c["x" + k] = np.zeros((kvh, self.context, self.hd), np.int8)
                c["m" + k] = np.zeros((kvh, self.context), I64)
                c["e" + k] = np.zeros((kvh, self.context), I64)
        return c

    def attention(self, op: dict, q, k, v, positions: np.ndarray) -> np.ndarray:
        heads, kvh, layer = op["heads"], op["kv_heads"], op["layer"]
        c = self._cache(layer, kvh)
        start = int(positions[0])
        K.kv_store(k, kvh, self.hd, self.F, c["xk"], c["mk"], c["ek"], start)
        K.kv_store(v, kvh, self.hd, self.F, c["xv"], c["mv"], c["ev"], start)
        return K.attention_rows(q, positions, heads, kvh, self.hd, op["window"] or 0, self.F,
                                self.inv_sqrt_hd, self.log2e, self.exp2, c["xk"], c["mk"],
                                c["ek"], c["xv"], c["mv"], c["ev"])  # fmt: skip

    def swiglu(self, g: np.ndarray, u: np.ndarray) -> Act8:
        return Act8(*K.swiglu_rows(g, u, self.F, self.sigmoid))

    def quantize(self, y: np.ndarray) -> Act8:
        return Act8(*K.q8_rows(y, np.full(y.shape[0], self.F, I64), ACT_GROUP))

    # -- the model -----------------------------------------------------------------------------

    def forward(self, tokens: list[int]) -> np.ndarray:
        """Run ``tokens`` at the next positions; int32 logits ``[len(tokens), vocab]``."""
        t = len(tokens)
        if t == 0:
            raise ValueError("forward needs at least one token")
        ids = np.asarray(tokens, I64)
        if ids.min() < 0 or ids.max() >= self.vocab:
            raise InputError(f"token id outside the vocabulary (0..{self.vocab - 1})")
        if self.pos + t > self.context:
            raise FitError(
                f"the KV cache holds {self.context:,} tokens (--context; at most "
                f"{self.max_context:,} on this build{self.adapter_note}); this run needs "
                f"{self.pos + t:,}"
            )
        positions = np.arange(self.pos, self.pos + t, dtype=I64)
        slots: dict[str, object] = {}
        p = self.params
        logits = None
        skip = -1
        for idx, op in enumerate(self.ops):
            if idx <= skip:
                continue
            kind = op["op"]
            if idx in self._fused:
                group, st, bias = self._fused[idx]
                y = self.matmul(slots[op["in"]], st, bias)
                r = 0
                for k in group:
                    m = self.mats[self.ops[k]["matrix"]]
                    yk = np.ascontiguousarray(y[:, r : r + m.rows])
                    slots[self.ops[k]["out"]] = self._adapt(m.name, slots[op["in"]], yk)
                    r += m.lev.shape[0] * K.BLOCK_ROWS
                skip = group[-1]
                continue
            if kind == "embed":
                slots[op["out"]] = self.embed(ids)
            elif kind == "rmsnorm":
                slots[op["out"]] = self.rmsnorm(slots[op["in"]], p[op["gamma"]],
                                                op["gamma_frac"], op["eps_d"])  # fmt: skip
            elif kind == "matmul":
                bias = p[op["bias"]] if op.get("bias") else None
                y = self.matmul(slots[op["in"]], self.mats[op["matrix"]], bias)
                slots[op["out"]] = self._adapt(op["matrix"], slots[op["in"]], y)
            elif kind == "rope":
                slots[op["out"]] = self.rope(slots[op["in"]], op["heads"], positions)
            elif kind == "attention":
                slots[op["out"]] = self.attention(op, slots[op["q"]], slots[op["k"]],
                                                  slots[op["v"]], positions)  # fmt: skip
            elif kind == "quantize":
                slots[op["out"]] = self.quantize(slots[op["in"]])
            elif kind == "add":
                slots[op["out"]] = K.add_rows(slots[op["a"]], slots[op["b"]])
            elif kind == "swiglu":
                slots[op["out"]] = self.swiglu(slots[op["gate"]], slots[op["up"]])
            elif kind == "logits":
                logits = slots[op["in"]]
            else:
                raise InputError(f"netlist op {kind!r} is not part of numerics contract 1")
        self.pos += t
        if logits is None:
            raise InputError("the netlist has no logits op")
        return logits.astype(np.int32)


__all__ = ["Act8", "Chip"]
