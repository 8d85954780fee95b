"""The chip, executable: :class:`Chip` runs a build's netlist with the integer arithmetic of
docs/numerics.md (contract version 1).

It loads only ``BUILD/netlist`` (never the original weights), prepares each matrix for fast
exact evaluation (:mod:`maskc.emulate.prepared`), and executes the netlist's typed ops
(:mod:`maskc.netlist.ops`, validated when the netlist was loaded) over a batch of tokens
(prefill is matrix-matrix; decode is one token). All of it is integer arithmetic; kernels.py
states the bounds that keep int32/int64 exact.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from maskc.emulate import kernels as K
from maskc.emulate import layoutcache
from maskc.emulate import moe as M
from maskc.emulate import units as U
from maskc.emulate.backend import _kern
from maskc.emulate.kernels import GROUP as ACT_GROUP
from maskc.emulate.prepared import LOAD_ROWS, Matrix, prepare, stack
from maskc.errors import FitError, InputError
from maskc.netlist import Netlist
from maskc.netlist import ops as O

I64 = np.int64
_LOGITS = "\0logits"  #: the slot the Logits op fills (no netlist name starts with NUL)
#: matrix products ahead whose weights idle threads read into the caches (a few MB: well
#: inside the last-level cache, and more than the units in between leave time for)
PREFETCH_CALLS = 8


@dataclass
class KVState:
    """One sequence's KV cache: ``pos`` tokens stored, per layer the int8 keys and values with
    their act8 mantissas and exponents (allocated on first use, ``context`` tokens each)."""

    pos: int
    cache: list[dict]


@dataclass
class Act8:
    """act8 values of a batch: codes int64 ``[T, n]``, mantissa and exponent int64 ``[T]``,
    group shifts int64 ``[T, ceil(n / 32)]``. When a matrix of the netlist has an input
    permutation, also the integers ``y`` int64 ``[T, n]`` the act8 was made from with their
    fraction bits ``f`` int64 ``[T]`` (``Q8(y, f, 32)``), for :func:`units.gather`."""

    x: np.ndarray
    m: np.ndarray
    e: np.ndarray
    s: np.ndarray
    y: np.ndarray | None = None
    f: np.ndarray | None = None

    def rows(self, rows: np.ndarray) -> Act8:
        """The act8 of the batch rows ``rows``."""
        pre = () if self.y is None else (self.y[rows], self.f[rows])
        return Act8(self.x[rows], self.m[rows], self.e[rows], self.s[rows], *pre)


class Chip:
    """A build's netlist, executable. ``forward(tokens)`` -> int32 logits ``[T, vocab]``."""

    def __init__(
        self,
        nl: Netlist,
        context: int | None = None,
        progress=None,
        adapters=(),
        load_rows: int = LOAD_ROWS,
        cache_key: str | None = None,
    ) -> None:
        """``adapters``: :class:`maskc.adapters.Adapter` list, loaded into SRAM in order (they
        must fit beside the KV cache of ``context`` tokens: FitError otherwise). ``load_rows``:
        rows of a matrix read from the tiles at once while loading (the results do not depend
        on it). ``cache_key``: the build's key in :mod:`maskc.emulate.layoutcache` (given by
        ``open_session``, which checks the build's hashes): the prepared matrices are read
        from the cache when it has them (``from_cache``); ``open_session`` writes them there
        otherwise."""
        from maskc.emulate import backend

        backend.default_threads()
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
        #: the input permutations (the gather tables of the boot image), by matrix
        self.perms = {n: nl.input_perm(n) for n, m in nl.matrices.items() if "input_perm" in m}
        self.lora: dict[str, list] = {}
        if self.adapters:
            from maskc.adapters import check_against, to_sram
            from maskc.sram import require_fit

            for ad in self.adapters:
                check_against(ad, nl.matrices, a.num_layers)
            fit = require_fit(sram, self.adapters, self.context)
            self.max_context = min(self.max_context, *(r["max_context"] for r in fit))
            for ad in self.adapters:
                for sm in to_sram(ad, progress):
                    if sm.matrix in self.perms:  # A's columns in the order its input arrives
                        sm = replace(
                            sm, a_codes=np.ascontiguousarray(sm.a_codes[:, self.perms[sm.matrix]])
                        )
                    self.lora.setdefault(sm.matrix, []).append(sm)
        p = {k: v.astype(I64) for k, v in nl.params().items()}  # small: LUTs, gammas, biases
        self.params = p
        self.rsqrt = p["lut.rsqrt"].astype(I64)
        self.cos = p["lut.cos"].astype(I64)
        self.exp2 = p["lut.exp2"].astype(I64)
        self.sigmoid = p["lut.sigmoid"].astype(I64)
        self.phase_step = p["rope.phase_step"].astype(I64)  # < 2^32; the kernel works mod 2^64
        self.log2e = nl.doc["numerics"]["log2e_q16"]
        self.inv_sqrt_hd = nl.doc["numerics"]["inv_sqrt_hd_q16"]
        self.ops = nl.ops  # typed and checked by load_netlist
        self.mats: dict[str, Matrix] = {}
        self.n_layers = a.num_layers
        self._nobias = np.zeros(1, I64)
        self._handles: dict[tuple, object] = {}  # the C kernel's matrix handles
        self._fused = self._load(p, progress, load_rows, cache_key)
        self._next = self._prefetch_plan()
        #: the die holding each layer's KV cache (its home die; experts may be elsewhere)
        self.home = [0] * a.num_layers
        for d, die in enumerate(sram["dies"]):
            for lay in die["kv"]["layers"]:
                self.home[lay["layer"]] = d
        #: per layer, the die of each routed expert (experts spread over dies), or None
        self.expert_dies = nl.doc["placement"].get("expert_dies")
        #: bytes handed over each link ``(from die, to die)`` so far: the residual stream at a
        #: die boundary (:meth:`_handover`), an expert's input and output between its layer's
        #: home die and its expert die (:func:`maskc.emulate.moe.experts_step`)
        self.link_bytes = {
            (self.home[i - 1], self.home[i]): 0
            for i in range(1, a.num_layers)
            if self.home[i - 1] != self.home[i]
        }
        for layer, dies in enumerate(self.expert_dies or ()):
            for x in sorted(set(dies) - {self.home[layer]}):
                self.link_bytes[(self.home[layer], x)] = 0
                self.link_bytes[(x, self.home[layer])] = 0
        self._steps = self._compile()
        if progress:  # the kernels compile on first use (then load from numba's disk cache)
            progress.start("preparing kernels (compiled on the first run only)", 1)
        self.reset()
        self.forward([0])
        self.reset()
        self.link_bytes.update(dict.fromkeys(self.link_bytes, 0))  # the steps hold this dict
        if progress:
            progress.advance(1)

    def _load(
        self, params, progress, load_rows, cache_key=None
    ) -> dict[int, tuple[list[int], Matrix, np.ndarray | None]]:
        """Prepares every matmul's matrix, one at a time (:func:`prepare`). Consecutive matmul
        ops reading the same act8 (q/k/v; gate/up) run as one kernel call over their stacked
        row blocks when their storage agrees: fewer calls, and the small k/v products share the
        threads. The arithmetic per row is unchanged (row blocks are independent); the members
        keep views of the stack, not copies. Returns ``{first op index: (op indices, stacked
        matrix, stacked bias)}``."""
        ops = self.ops
        names = sorted(
            {name for op in ops for name in op.matrices() if not isinstance(op, O.Embed)}
        )
        if progress:
            progress.start("loading netlist", len(names))
        cached = layoutcache.load(cache_key) if cache_key else None
        if cached is not None and set(cached) == set(names):
            self.mats.update(cached)
            if progress:
                progress.advance(len(names), "from the cache")
        else:
            cached = None

        def load(name: str) -> Matrix:
            if name not in self.mats:
                self.mats[name] = prepare(self.nl, name, load_rows)
                if progress:
                    progress.advance(1, name)
            return self.mats[name]

        out = {}
        seen: set[str] = set()  # matrices of earlier groups (one used twice is not stacked)
        i = 0
        while i < len(ops):
            first = ops[i]
            if not isinstance(first, O.MatMul):
                i += 1
                continue
            j = i
            while (
                j + 1 < len(ops)
                and isinstance(ops[j + 1], O.MatMul)
                and ops[j + 1].src == first.src
                and ops[j + 1].out != first.src
            ):
                j += 1
            group = list(range(i, j + 1))
            fresh = len({ops[k].matrix for k in group}) == len(group) and not any(
                ops[k].matrix in seen for k in group
            )
            seen.update(ops[k].matrix for k in group)
            mats = [load(ops[k].matrix) for k in group]
            perms = [self.perms.get(ops[k].matrix) for k in group]  # one gather for a stack
            same = all(U.same_perm(q, perms[0]) for q in perms)
            if len(group) > 1 and fresh and same and all(m.same_storage(mats[0]) for m in mats):
                biases = [None if ops[k].bias is None else params[ops[k].bias] for k in group]
                out[i] = (group, *stack(mats, biases))
            i = j + 1
        for op in ops:  # every expert's matrices (each run on the rows that selected it)
            if isinstance(op, O.Experts):
                for e in range(op.experts):
                    for name in op.expert_matrices(e):
                        load(name)
        self.from_cache = cached is not None
        return out

    def _prefetch_plan(self) -> dict[int, tuple]:
        """``{op index: the arrays of the next PREFETCH_CALLS matrix products}`` (a
        ``_kern.ranges`` handle holding them; after the last
        product come the first: the next token's). The C kernel's idle threads read them into
        the caches while the calling thread runs the units in between, until the next product
        starts (maskc/emulate/_kern.c)."""
        calls = []
        members = {k for g, _, _ in self._fused.values() for k in g}
        for idx, op in enumerate(self.ops):
            if idx in self._fused:
                calls.append((idx, self._fused[idx][1]))
            elif isinstance(op, O.MatMul) and idx not in members:
                calls.append((idx, self.mats[op.matrix]))
        plan = {}
        for i, (idx, _) in enumerate(calls):
            arrays = []
            for k in range(1, PREFETCH_CALLS + 1):
                nxt = calls[(i + k) % len(calls)][1]
                if nxt.c:
                    arrays += [nxt.lev, nxt.msh, *((nxt.zsh,) if nxt.has_zero else ())]
            if arrays:
                plan[idx] = _kern.ranges(tuple(arrays))
        return plan

    def _compile(self) -> list:
        """The netlist's ops as a list of closures ``step(slots, ids, positions, segs)``
        (``segs``: each sequence's KV state and rows, :meth:`forward_batch`), each with
        its arguments looked up once (decode runs ~400 ops per token: dispatching on each
        op's class and reading its fields every time cost more than some of the ops)."""
        p = self.params
        steps = []
        skip = -1
        home = self.home
        entry = {i: (home[i - 1], home[i]) for i in range(1, len(home)) if home[i - 1] != home[i]}
        for idx, op in enumerate(self.ops):
            if idx <= skip:
                continue
            if isinstance(op, O.RmsNorm) and op.layer in entry:  # a die's first op
                steps.append(self._handover(*entry.pop(op.layer), op.src))
            if idx in self._fused:
                group, st, bias = self._fused[idx]
                parts, r = [], 0
                for k in group:
                    m = self.mats[self.ops[k].matrix]
                    parts.append((self.ops[k].out, m.name, r, r + m.rows))
                    r += m.padded_rows
                perm = self.perms.get(op.matrix)
                steps.append(self._fused_step(op.src, st, bias, self._next.get(idx), parts, perm))
                skip = group[-1]
                continue
            steps.append(self._step(idx, op, p))
        return steps

    def _handover(self, src: int, die: int, slot: str):
        """The step at the start of die ``die``'s layers: the previous die ``src`` hands the
        residual stream ``slot`` over the link in the contract's format, int32 signals
        (docs/numerics.md), and the die goes on from what it received. Counted in
        :attr:`link_bytes`; the values are int32 by the contract (every signal saturates), so
        the logits are those of one die."""
        counts, key = self.link_bytes, (src, die)

        def step(slots, ids, positions, segs):
            x = slots[slot]
            wire = np.ascontiguousarray(x, dtype="<i4").tobytes()  # what crosses the link
            got = np.frombuffer(wire, dtype="<i4").astype(I64).reshape(x.shape)
            if not np.array_equal(got, x):  # an int32 signal by the contract: a bug otherwise
                raise AssertionError(f"die {src} -> {die}: {slot} is not an int32 signal")
            counts[key] += len(wire)
            slots[slot] = got

        return step

    def _fused_step(self, src, st, bias, hint, parts, perm):
        mm, adapt = self.matmul, self._adapt
        lora = any(name in self.lora for _, name, _, _ in parts)

        def step(slots, ids, positions, segs):
            a = U.gather(slots[src], perm)
            y = mm(a, st, bias, hint)
            for out, name, r0, r1 in parts:
                yk = np.ascontiguousarray(y[:, r0:r1])
                slots[out] = adapt(name, a, yk) if lora else yk

        return step

    def _step(self, idx: int, op, p):
        match op:
            case O.Embed():
                embed, matrix, out = self.embed, op.matrix, op.out

                def step(slots, ids, positions, segs):
                    slots[out] = embed(matrix, ids)

            case O.RmsNorm():
                norm, src, out = self.rmsnorm, op.src, op.out
                gamma, gf, eps = p[op.gamma], op.gamma_frac, op.eps_d

                def step(slots, ids, positions, segs):
                    slots[out] = norm(slots[src], gamma, gf, eps)

            case O.MatMul():
                mm, adapt, src, out = self.matmul, self._adapt, op.src, op.out
                mat, hint, name = self.mats[op.matrix], self._next.get(idx), op.matrix
                bias = p[op.bias] if op.bias is not None else None
                lora = name in self.lora
                perm = self.perms.get(name)

                def step(slots, ids, positions, segs):
                    a = U.gather(slots[src], perm)
                    y = mm(a, mat, bias, hint)
                    slots[out] = adapt(name, a, y) if lora else y

            case O.Rope():
                rope, src, out, heads = self.rope, op.src, op.out, op.heads

                def step(slots, ids, positions, segs):
                    slots[out] = rope(slots[src], heads, positions)

            case O.Attention():
                att, q, k, v, out = self.attention, op.q, op.k, op.v, op.out

                def step(slots, ids, positions, segs):
                    qa, ka, va = slots[q], slots[k], slots[v]
                    if len(segs) == 1:
                        slots[out] = att(op, qa, ka, va, positions, segs[0][0])
                        return
                    slots[out] = np.concatenate(
                        [
                            att(op, qa[r0:r1], ka[r0:r1], va[r0:r1], positions[r0:r1], st)
                            for st, r0, r1 in segs
                        ]
                    )

            case O.Quantize():
                quant, src, out = self.quantize, op.src, op.out

                def step(slots, ids, positions, segs):
                    slots[out] = quant(slots[src])

            case O.Add():
                add, a_, b_, out = U.add_rows, op.a, op.b, op.out

                def step(slots, ids, positions, segs):
                    slots[out] = add(slots[a_], slots[b_])

            case O.SwiGlu():
                swiglu, gate, up, out = self.swiglu, op.gate, op.up, op.out

                def step(slots, ids, positions, segs):
                    slots[out] = swiglu(slots[gate], slots[up])

            case O.Logits():
                src = op.src

                def step(slots, ids, positions, segs):
                    slots[_LOGITS] = slots[src]

            case O.HeadNorm():
                src, out, heads, hd, f, rs = op.src, op.out, op.heads, self.hd, self.F, self.rsqrt
                gamma, gf, eps = p[op.gamma], op.gamma_frac, op.eps_d

                def step(slots, ids, positions, segs):
                    slots[out] = M.head_norm_rows(slots[src], heads, hd, gamma, gf, eps, f, rs)

            case O.Route():
                src, out, k, norm = op.src, op.out, op.top_k, bool(op.norm_topk_prob)
                f, log2e, exp2 = self.F, self.log2e, self.exp2

                def step(slots, ids, positions, segs):
                    slots[out] = M.route_rows(slots[src], k, norm, f, log2e, exp2)

            case O.Experts():
                mats = [
                    tuple(self.mats[n] for n in op.expert_matrices(e)) for e in range(op.experts)
                ]
                step = M.experts_step(self, op, mats)

            case O.GateScale():
                gate, src, out, f, sig = op.gate, op.src, op.out, self.F, self.sigmoid

                def step(slots, ids, positions, segs):
                    slots[out] = M.gate_scale_rows(slots[gate], slots[src], f, sig)

            case _:  # load_netlist admits only the kinds of maskc.netlist.ops.OPS
                raise InputError(f"netlist op {op.KIND!r} is not part of numerics contract 1")
        return step

    def resident_bytes(self) -> int:
        """Bytes of the prepared matrices' arrays, each byte once: the members of a stack are
        views of it, and matrices from the layout cache are views of one memory-mapped file
        (only their own ranges count)."""
        spans = sorted(
            (a.__array_interface__["data"][0], a.nbytes)
            for m in self.mats.values()
            for a in m.arrays()
            if a.nbytes
        )
        total, end = 0, 0
        for start, n in spans:
            lo, hi = max(start, end), start + n
            if hi > lo:
                total += hi - lo
            end = max(end, hi)
        return total

    @property
    def adapter_note(self) -> str:
        """`` with adapters A, B`` for messages about the context, or empty."""
        if not self.adapters:
            return ""
        return " with adapter " + ", ".join(a.path.name for a in self.adapters)

    # -- state ---------------------------------------------------------------------------------

    def new_state(self) -> KVState:
        """An empty KV cache (one sequence; :meth:`forward_batch` runs several)."""
        return KVState(
            0,
            [{k: None for k in ("xk", "mk", "ek", "xv", "mv", "ev")} for _ in range(self.n_layers)],
        )

    def reset(self) -> None:
        """Empty the KV cache; the next token is at position 0."""
        self.state = self.new_state()

    @property
    def pos(self) -> int:
        """The position of the next token of the default sequence."""
        return self.state.pos

    # -- ops -----------------------------------------------------------------------------------

    def embed(self, matrix: str, tokens: np.ndarray) -> np.ndarray:
        """Rows ``tokens`` of the embedding, read from the tiles (only those rows' bytes)."""
        ids = np.asarray(tokens, I64)
        mat = self.mats.get(matrix)
        if self.nl.matrices[matrix]["format"].get("kind", "int") != "int":
            # docs/numerics.md: FP4 is for transformer-block matrices; the compiler refuses it
            # for the embedding and lm_head, so only a hand-made netlist gets here
            raise InputError(f"{self.nl.path}: embedding {matrix} in an FP4 format; recompile")
        if mat is not None and mat.c:  # tied: the prepared lm_head holds the same rows
            return U.embed_rows_tiled(
                ids, mat.lev, mat.packed, mat.lmin, mat.msh, mat.zsh, mat.ka, mat.kb,
                mat.has_zero, mat.rep, mat.cols, self.F,
            )  # fmt: skip
        uniq, where = np.unique(ids, return_inverse=True)
        rows = [self.nl.matrix_rows(matrix, int(i), int(i) + 1) for i in uniq.tolist()]
        q = rows[0]
        f = q.fmt
        z = q.zero_m is not None

        def cat(k):
            return np.concatenate([getattr(r, k) for r in rows])

        dummy8 = np.zeros((1, 1), np.uint8)
        return U.embed_rows(
            np.asarray(where, I64).reshape(-1),
            cat("codes"),
            q.levels.astype(I64),
            cat("scale_m"),
            cat("scale_s"),
            cat("scale_e").astype(I64),
            cat("zero_m") if z else np.zeros((1, 1), np.int16),
            cat("zero_s") if z else dummy8,
            cat("zero_e").astype(I64) if z else np.zeros(1, I64),
            f.group_size,
            (1 << f.scale_shift_bits) - 1,
            (1 << f.zero_shift_bits) - 1,
            z,
            q.shape[1],
            self.F,
        )

    def _handle(self, mat: Matrix, bias: np.ndarray | None):
        """The C kernel's handle of ``mat`` with ``bias`` (made once: it holds the arrays)."""
        key = (id(mat), None if bias is None else id(bias))
        h = self._handles.get(key)
        if h is None:
            b = self._nobias
            if bias is not None:
                b = np.zeros(mat.padded_rows, I64)
                b[: len(bias)] = bias
            h = self._handles[key] = _kern.matrix(
                mat.lev, mat.packed, mat.lev.shape[0], mat.msh.shape[1], mat.rep, mat.lmin,
                mat.msh.dtype == np.int16, mat.msh, mat.zsh.dtype == np.int16, mat.zsh,
                mat.has_zero, mat.ka, mat.kb, b, bias is not None, mat.rows, mat.cp,
                mat.lut, mat.half, mat.kt,
            )  # fmt: skip
        return h

    def matmul(self, a: Act8, mat: Matrix, bias: np.ndarray | None, hint=None) -> np.ndarray:
        """``hint``: the next products' arrays (``_kern.ranges``), prefetched by idle threads
        (C kernel only)."""
        t = a.x.shape[0]
        if mat.c:  # the compiled kernel (maskc/emulate/_kern.c): the same integers
            y = np.empty((t, mat.rows), I64)
            h = self._handle(mat, bias)
            _kern.matmul(a.x, a.s, a.m, a.e, a.x.shape[1], self.F, h, y, hint)
            return y
        b = self._nobias if bias is None else bias.astype(I64)
        par = t * mat.rows * mat.cp >= K.PARALLEL_MIN_MACS
        return K.matmul(
            a.x,
            a.s,
            a.m,
            a.e,
            mat.lev,
            mat.packed,
            mat.msh.dtype == np.int16,
            mat.d,
            mat.off,
            mat.msh,
            mat.rep,
            mat.ka,
            mat.zsh,
            mat.kb,
            b,
            mat.has_zero,
            bias is not None,
            self.F,
            mat.rows,
            par,
            mat.half,
            mat.kt,
        )

    def _adapt(self, matrix: str, a: Act8, y: np.ndarray) -> np.ndarray:
        """``y`` plus the loaded adapters of ``matrix`` (docs/numerics.md, "LoRA adapters in
        SRAM"): ``sat32(y + sum of d)``."""
        mods = self.lora.get(matrix)
        if not mods:
            return y
        d = np.zeros_like(y)
        for sm in mods:
            K.lora_add(
                a.x,
                a.s,
                a.m,
                a.e,
                sm.a_codes,
                sm.a_m,
                sm.a_e,
                sm.b_codes,
                sm.b_m,
                sm.b_e,
                self.F,
                d,
            )
        return U.add_rows(y, d)

    def rmsnorm(self, h: np.ndarray, gamma: np.ndarray, gamma_frac: int, eps_d: int) -> Act8:
        if self.perms:  # keep the vector Q8 reads, for the gathers (the same act8)
            y, f = U.rmsnorm_pre_rows(h, gamma, gamma_frac, eps_d, self.F, self.rsqrt)
            return self._q8(y, f)
        fn = U.rmsnorm_rows_par if h.shape[0] >= K.PARALLEL_MIN_ROWS else U.rmsnorm_rows
        return Act8(*fn(h, gamma, gamma_frac, eps_d, self.F, self.rsqrt))

    def _q8(self, y: np.ndarray, f: np.ndarray) -> Act8:
        """``Q8(y, f, 32)`` of every row, keeping ``y`` and ``f`` (:func:`units.gather`)."""
        fn = K.q8_rows_par if y.shape[0] >= K.PARALLEL_MIN_ROWS else K.q8_rows
        return Act8(*fn(y, f, ACT_GROUP), y, f)

    def rope(self, y: np.ndarray, heads: int, positions: np.ndarray) -> np.ndarray:
        return U.rope_rows(y, heads, self.hd, positions, self.phase_step, self.cos)

    def _cache(self, state: KVState, layer: int, kvh: int) -> dict:
        c = state.cache[layer]
        if c["xk"] is None:
            for k in ("k", "v"):
                c["x" + k] = np.zeros((kvh, self.context, self.hd), np.int8)
                c["m" + k] = np.zeros((kvh, self.context), I64)
                c["e" + k] = np.zeros((kvh, self.context), I64)
        return c

    def attention(self, op: O.Attention, q, k, v, positions: np.ndarray, state=None) -> np.ndarray:
        """Attention of one sequence's rows over its KV cache (``state``; default: the chip's
        own sequence)."""
        heads, kvh, layer = op.heads, op.kv_heads, op.layer
        c = self._cache(self.state if state is None else state, layer, kvh)
        start = int(positions[0])
        U.kv_store(k, kvh, self.hd, self.F, c["xk"], c["mk"], c["ek"], start)
        U.kv_store(v, kvh, self.hd, self.F, c["xv"], c["mv"], c["ev"], start)
        fn = U.attention_rows_par if q.shape[0] >= K.PARALLEL_MIN_ROWS else U.attention_rows
        return fn(
            q,
            positions,
            heads,
            kvh,
            self.hd,
            op.window or 0,
            self.F,
            self.inv_sqrt_hd,
            self.log2e,
            self.exp2,
            c["xk"],
            c["mk"],
            c["ek"],
            c["xv"],
            c["mv"],
            c["ev"],
        )

    def swiglu(self, g: np.ndarray, u: np.ndarray) -> Act8:
        if self.perms:
            h = U.swiglu_pre_rows(g, u, self.F, self.sigmoid)
            return self._q8(h, np.full(h.shape[0], self.F, I64))
        fn = U.swiglu_rows_par if g.shape[0] >= K.PARALLEL_MIN_ROWS else U.swiglu_rows
        return Act8(*fn(g, u, self.F, self.sigmoid))

    def quantize(self, y: np.ndarray) -> Act8:
        if self.perms:
            return self._q8(y, np.full(y.shape[0], self.F, I64))
        fn = K.q8_rows_par if y.shape[0] >= K.PARALLEL_MIN_ROWS else K.q8_rows
        return Act8(*fn(y, np.full(y.shape[0], self.F, I64), ACT_GROUP))

    # -- the model -----------------------------------------------------------------------------

    def forward(self, tokens: list[int]) -> np.ndarray:
        """Run ``tokens`` at the next positions; int32 logits ``[len(tokens), vocab]``."""
        return self.forward_batch([self.state], [tokens])[0]

    def forward_batch(self, states: list[KVState], tokens: list[list[int]]) -> list[np.ndarray]:
        """Run several sequences together, each ``tokens[i]`` at the next positions of its own
        KV cache ``states[i]``: their rows share every matrix product (one read of the
        weights for all), and attention runs per sequence. The logits of each are exactly
        those of running it alone (``[len(tokens[i]), vocab]`` int32 each)."""
        if len(states) != len(tokens) or not states:
            raise ValueError("forward_batch needs one token list per state")
        if len({id(s) for s in states}) != len(states):
            raise ValueError("forward_batch: a state appears twice")
        segs, r = [], 0
        for st, toks in zip(states, tokens, strict=True):
            t = len(toks)
            if t == 0:
                raise ValueError("forward needs at least one token")
            if st.pos + t > self.context:
                raise FitError(
                    f"the KV cache holds {self.context:,} tokens (--context; at most "
                    f"{self.max_context:,} on this build{self.adapter_note}); this run needs "
                    f"{st.pos + t:,}"
                )
            segs.append((st, r, r + t))
            r += t
        ids = np.asarray([i for toks in tokens for i in toks], I64)
        if ids.min() < 0 or ids.max() >= self.vocab:
            raise InputError(f"token id outside the vocabulary (0..{self.vocab - 1})")
        positions = np.concatenate(
            [np.arange(st.pos, st.pos + (r1 - r0), dtype=I64) for st, r0, r1 in segs]
        )
        slots: dict[str, object] = {}
        for step in self._steps:
            step(slots, ids, positions, segs)
        logits = slots.get(_LOGITS)
        if logits is None:
            raise InputError("the netlist has no logits op")
        for st, r0, r1 in segs:
            st.pos += r1 - r0
        out = logits.astype(np.int32)
        return [out[r0:r1] for _, r0, r1 in segs]


__all__ = ["Act8", "Chip", "KVState"]
