"""The netlist's ops: one frozen dataclass per kind, the only place an op is defined.

An op reads and writes named *slots* holding either a ``signal`` (int32 values with
``signal_frac`` fraction bits) or an ``act8`` vector (codes, mantissa, exponent, group shifts),
as docs/numerics.md defines them. Each op class declares its JSON keys and, per key, what it
holds (a slot it reads or writes and of which type, a matrix, a parameter array, or an integer
with its range), so that:

* :meth:`Op.from_json` checks every key of an untrusted op (type and range; unknown or missing
  keys are errors): a bad op is exit 3, never an internal error;
* :meth:`Op.reads` / :meth:`Op.writes` give the dataflow, which :func:`check_dataflow`
  verifies for a whole op list (every slot written before it is read and of the right type and
  width, every matrix and parameter present, the shapes consistent);
* :meth:`Op.to_json` and :meth:`Op.text` give netlist.json's object and the canonical text
  line (``maskc inspect BUILD --netlist``).

A new op kind is a new class here (registered in :data:`OPS`), its lowering in
:mod:`maskc.netlist.dataflow`, its arithmetic in docs/numerics.md, the emulator and
tests/intref.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from maskc.errors import InputError
from maskc.netlist.constants import GAMMA_FRAC_MAX

SIGNAL = "signal"
ACT8 = "act8"
#: a mixture of experts' routing decision: ``top_k`` (expert, weight) pairs per token
SELECT = "select"
#: a bound far above any real model dimension (config.json fields are capped at 2^24 too)
_DIM_MAX = 1 << 24


def _slot_in(kind: str, key: str | None = None) -> Any:
    return field(metadata={"role": "read", "slot": kind, "key": key})


def _slot_out(kind: str) -> Any:
    return field(metadata={"role": "write", "slot": kind})


def _matrix() -> Any:
    return field(metadata={"role": "matrix"})


def _param(optional: bool = False) -> Any:
    """A params.safetensors name; ``optional``: JSON null or absent means none."""
    meta = {"role": "param", "nullable": optional, "optional": optional}
    return field(default=None, metadata=meta) if optional else field(metadata=meta)


def _name() -> Any:
    """A name that is neither a slot, a matrix nor a parameter (a matrix name pattern)."""
    return field(metadata={"role": "name"})


def _int(lo: int, hi: int, optional: bool = False, omit_none: bool = False) -> Any:
    """An integer key in ``[lo, hi]``; ``optional``: JSON null or absent means None (written as
    null); ``omit_none``: also left out of the JSON when None."""
    meta = {
        "role": "int",
        "lo": lo,
        "hi": hi,
        "nullable": optional or omit_none,
        "optional": optional or omit_none,
        "omit_none": omit_none,
    }
    return field(default=None, metadata=meta) if meta["optional"] else field(metadata=meta)


@dataclass(frozen=True)
class Op:
    """Base of every op kind. Subclasses set :attr:`KIND` and declare their keys as fields."""

    KIND: ClassVar[str] = ""

    @classmethod
    def spec(cls) -> list[tuple[str, str, dict]]:
        """``(attribute, JSON key, metadata)`` of every key, in declaration order."""
        return [(f.name, f.metadata.get("key") or f.name, f.metadata) for f in fields(cls)]

    def reads(self) -> dict[str, str]:
        """``{slot: type}`` the op reads, in order."""
        return {getattr(self, a): m["slot"] for a, _, m in self.spec() if m["role"] == "read"}

    def writes(self) -> dict[str, str]:
        """``{slot: type}`` the op writes."""
        return {getattr(self, a): m["slot"] for a, _, m in self.spec() if m["role"] == "write"}

    def matrices(self) -> list[str]:
        return [getattr(self, a) for a, _, m in self.spec() if m["role"] == "matrix"]

    def params(self) -> list[str]:
        """Names of the params.safetensors arrays the op uses."""
        return [
            getattr(self, a)
            for a, _, m in self.spec()
            if m["role"] == "param" and getattr(self, a) is not None
        ]

    def to_json(self) -> dict:
        d: dict[str, Any] = {"op": self.KIND}
        for a, key, m in self.spec():
            v = getattr(self, a)
            if not (m.get("omit_none") and v is None):
                d[key] = v
        return d

    def text(self) -> str:
        """The op's canonical text: its kind, then ``key=value`` (JSON) in key order."""
        d = self.to_json()
        return " ".join([self.KIND] + [f"{k}={json.dumps(d[k])}" for k in sorted(d) if k != "op"])

    @classmethod
    def from_json(cls, d: object, where: str, matrices=None, params=None) -> Op:
        """Any op from its JSON object (InputError naming ``where`` and the key otherwise):
        every key present and of its type and range, the matrices and parameters it names in
        ``matrices`` / ``params`` (when given), no unknown key."""
        if not isinstance(d, dict):
            raise InputError(f"{where}: must be an object")
        kind = d.get("op")
        op_cls = OPS.get(kind) if isinstance(kind, str) else None
        if op_cls is None:
            known = ", ".join(OPS)
            raise InputError(
                f"{where}: kind {kind!r} is not part of numerics contract 1 (known: {known})"
            )
        where = f"{where} ({kind})"
        missing = [k for _, k, m in op_cls.spec() if k not in d and not m.get("optional")]
        if missing:
            raise InputError(f"{where} lacks {', '.join(missing)}")
        refs = {
            "matrix": ("matrix", matrices, "matrices"),
            "param": ("parameter", params, "params.safetensors"),
        }
        values = {}
        for attr, key, m in op_cls.spec():
            if key in d:
                v = values[attr] = _value(d[key], m, f"{where}: field {key!r}")
                what, table, place = refs.get(m["role"], (None, None, None))
                if table is not None and v is not None and v not in table:
                    raise InputError(f"{where} names {what} {v!r}, not in {place}")
        known_keys = {key for _, key, _ in op_cls.spec()}
        unknown = sorted(set(d) - known_keys - {"op"})
        if unknown:
            quoted = json.dumps(d, sort_keys=True)
            quoted = quoted if len(quoted) <= 300 else quoted[:300] + "..."
            raise InputError(f"{where}: unknown field {', '.join(map(repr, unknown))} in {quoted}")
        op = op_cls(**values)
        if matrices is not None:  # the matrices an op names through a pattern (experts)
            for name in op.matrices():
                if name not in matrices:
                    raise InputError(f"{where} names matrix {name!r}, not in matrices")
        return op


def _value(v: object, m: dict, where: str) -> object:
    if v is None and m.get("nullable"):
        return None
    if m["role"] == "int":
        if not isinstance(v, int) or isinstance(v, bool):
            raise InputError(f"{where} must be an integer")
        if not m["lo"] <= v <= m["hi"]:
            raise InputError(f"{where} is {v}, outside [{m['lo']}, {m['hi']}]")
        return v
    if not isinstance(v, str) or not v or len(v) > 1000:
        raise InputError(f"{where} must be a name (a non-empty string)")
    if m["role"] == "name" and v.count("{e}") != 1:
        raise InputError(f"{where} must hold {{e}} (the expert's index) once")
    return v


@dataclass(frozen=True)
class Embed(Op):
    """Token ids -> their rows of the embedding matrix, dequantized to a signal."""

    KIND: ClassVar[str] = "embed"
    matrix: str = _matrix()
    out: str = _slot_out(SIGNAL)


@dataclass(frozen=True)
class RmsNorm(Op):
    """signal -> act8: RMSNorm with the integer weight ``gamma`` (``gamma_frac`` fraction
    bits) and ``eps_d = round(D * eps * 2^40)``; ``layer`` names the decoder layer (absent for
    the final norm)."""

    KIND: ClassVar[str] = "rmsnorm"
    src: str = _slot_in(SIGNAL, "in")
    out: str = _slot_out(ACT8)
    gamma: str = _param()
    gamma_frac: int = _int(-63, GAMMA_FRAC_MAX)
    eps_d: int = _int(0, (1 << 63) - 1)
    layer: int | None = _int(0, _DIM_MAX, omit_none=True)


@dataclass(frozen=True)
class MatMul(Op):
    """act8 -> signal: the product with a ROM matrix, plus an optional int32 bias."""

    KIND: ClassVar[str] = "matmul"
    src: str = _slot_in(ACT8, "in")
    out: str = _slot_out(SIGNAL)
    matrix: str = _matrix()
    bias: str | None = _param(optional=True)


@dataclass(frozen=True)
class Rope(Op):
    """signal -> signal: rotary position embedding of ``heads`` heads at each token's
    position."""

    KIND: ClassVar[str] = "rope"
    src: str = _slot_in(SIGNAL, "in")
    out: str = _slot_out(SIGNAL)
    heads: int = _int(1, _DIM_MAX)


@dataclass(frozen=True)
class Attention(Op):
    """Stores k and v in the layer's KV cache, then attends (GQA, optional sliding
    ``window``); signal out."""

    KIND: ClassVar[str] = "attention"
    layer: int = _int(0, _DIM_MAX)
    q: str = _slot_in(SIGNAL)
    k: str = _slot_in(SIGNAL)
    v: str = _slot_in(SIGNAL)
    out: str = _slot_out(SIGNAL)
    heads: int = _int(1, _DIM_MAX)
    kv_heads: int = _int(1, _DIM_MAX)
    head_dim: int = _int(2, _DIM_MAX)
    window: int | None = _int(1, 1 << 31, optional=True)


@dataclass(frozen=True)
class Quantize(Op):
    """signal -> act8 (``Q8(., F)``)."""

    KIND: ClassVar[str] = "quantize"
    src: str = _slot_in(SIGNAL, "in")
    out: str = _slot_out(ACT8)


@dataclass(frozen=True)
class Add(Op):
    """``sat32(a + b)`` of two signals."""

    KIND: ClassVar[str] = "add"
    a: str = _slot_in(SIGNAL)
    b: str = _slot_in(SIGNAL)
    out: str = _slot_out(SIGNAL)


@dataclass(frozen=True)
class SwiGlu(Op):
    """``silu(gate) * up`` of two signals -> act8."""

    KIND: ClassVar[str] = "swiglu"
    gate: str = _slot_in(SIGNAL)
    up: str = _slot_in(SIGNAL)
    out: str = _slot_out(ACT8)


@dataclass(frozen=True)
class Logits(Op):
    """The slot holding the logits: the netlist's output."""

    KIND: ClassVar[str] = "logits"
    src: str = _slot_in(SIGNAL, "in")


@dataclass(frozen=True)
class HeadNorm(Op):
    """signal -> signal: RMSNorm of each of ``heads`` heads over ``head_dim`` values with one
    integer weight ``gamma`` ``[head_dim]`` shared by the heads (Qwen3's q/k norms, before
    RoPE); ``gamma_frac`` and ``eps_d`` as :class:`RmsNorm`'s with ``D = head_dim``."""

    KIND: ClassVar[str] = "head_norm"
    src: str = _slot_in(SIGNAL, "in")
    out: str = _slot_out(SIGNAL)
    heads: int = _int(1, _DIM_MAX)
    gamma: str = _param()
    gamma_frac: int = _int(-63, GAMMA_FRAC_MAX)
    eps_d: int = _int(0, (1 << 63) - 1)
    layer: int = _int(0, _DIM_MAX)


@dataclass(frozen=True)
class Route(Op):
    """signal (the router's scores, one per expert) -> select: the ``top_k`` experts of the
    highest scores (ties to the lowest index) and their weights, the integer softmax over all
    experts (``norm_topk_prob`` 0) or over the selected ones (1)."""

    KIND: ClassVar[str] = "route"
    src: str = _slot_in(SIGNAL, "in")
    out: str = _slot_out(SELECT)
    top_k: int = _int(1, 1 << 16)
    norm_topk_prob: int = _int(0, 1)


#: most routed experts an ``experts`` op names (maskc.ir.MAX_EXPERTS is lower)
EXPERTS_MAX = 1 << 16


@dataclass(frozen=True)
class Experts(Op):
    """act8 + select -> signal: each selected expert's SiLU-gated MLP (its gate, up and down
    matrices: ``gate``/``up``/``down`` with ``{e}`` standing for the expert's index) on the
    act8 input, weighted by the selection's weights and summed exactly, one rounding."""

    KIND: ClassVar[str] = "experts"
    src: str = _slot_in(ACT8, "in")
    sel: str = _slot_in(SELECT)
    out: str = _slot_out(SIGNAL)
    layer: int = _int(0, _DIM_MAX)
    experts: int = _int(1, EXPERTS_MAX)
    gate: str = _name()
    up: str = _name()
    down: str = _name()

    def expert_matrices(self, e: int) -> tuple[str, str, str]:
        """The gate, up and down matrices of expert ``e``."""
        return tuple(p.replace("{e}", str(e)) for p in (self.gate, self.up, self.down))

    def matrices(self) -> list[str]:
        return [n for e in range(self.experts) for n in self.expert_matrices(e)]


@dataclass(frozen=True)
class GateScale(Op):
    """``sigmoid(gate) * src`` (Qwen2-MoE's shared expert): ``gate`` a one-value signal."""

    KIND: ClassVar[str] = "gate_scale"
    gate: str = _slot_in(SIGNAL)
    src: str = _slot_in(SIGNAL, "in")
    out: str = _slot_out(SIGNAL)


#: every op kind of numerics contract 1, by its JSON name
_KINDS = (Embed, RmsNorm, MatMul, Rope, Attention, Quantize, Add, SwiGlu, Logits,
          HeadNorm, Route, Experts, GateScale)  # fmt: skip
OPS: dict[str, type[Op]] = {c.KIND: c for c in _KINDS}


def parse_ops(doc: object, where: str, matrices: dict, params: dict) -> list[Op]:
    """netlist.json's ``ops`` list, every op parsed and checked (:meth:`Op.from_json`)."""
    if not isinstance(doc, list):
        raise InputError(f"{where}: 'ops' must be a list")
    return [Op.from_json(d, f"{where}: op {i}", matrices, params) for i, d in enumerate(doc)]


def check_dataflow(ops: list[Op], matrices: dict, params: dict, arch, where: str) -> None:
    """The op list as a whole (ops from :func:`parse_ops`, whose matrices and parameters
    exist): it starts with ``embed`` and ends with ``logits``; every slot is written before it
    is read, with the type and width the reader expects; matrix, parameter and slot shapes agree
    (``matrices``: netlist.json's entries; ``params``: name -> shape of params.safetensors);
    attention agrees with ``arch`` (a ModelArch)."""
    if not ops or not isinstance(ops[0], Embed) or not isinstance(ops[-1], Logits):
        raise InputError(f"{where}: the ops must start with embed and end with logits")
    slots: dict[str, tuple[str, int]] = {}  # slot -> (type, width)
    hd = arch.head_dim
    for i, op in enumerate(ops):
        w = f"{where}: op {i} ({op.KIND})"
        ins = []
        # every read in order, an op reading one slot twice (add x x) included: not reads(),
        # whose dict keeps a slot once
        read = [(getattr(op, a), m["slot"]) for a, _, m in op.spec() if m["role"] == "read"]
        for s, kind in read:
            if s not in slots:
                raise InputError(f"{w} reads slot {s!r} before any op writes it")
            if slots[s][0] != kind:
                raise InputError(f"{w} reads slot {s!r} as {kind}, but it holds {slots[s][0]}")
            ins.append(slots[s][1])
        width = _width(op, ins, matrices, params, arch, w)
        if isinstance(op, Attention) and (
            op.head_dim != hd or op.heads % op.kv_heads or op.layer >= arch.num_layers
        ):
            raise InputError(
                f"{w}: heads/kv_heads/head_dim/layer are inconsistent with the architecture"
            )
        for s, kind in op.writes().items():
            slots[s] = (kind, width)


def _width(op: Op, ins: list[int], matrices: dict, params: dict, arch, where: str) -> int:
    """The width of what ``op`` writes, checking the widths it reads (``ins``, in read order)."""

    def need(got: int, want: int, what: str) -> None:
        if got != want:
            raise InputError(f"{where}: {what} has {got} values, expected {want}")

    match op:
        case Embed():
            return matrices[op.matrix]["shape"][1]
        case RmsNorm():
            need(params[op.gamma][0] if len(params[op.gamma]) == 1 else -1, ins[0], "gamma")
            return ins[0]
        case MatMul():
            rows, cols = matrices[op.matrix]["shape"]
            need(ins[0], cols, f"the input of {op.matrix}")
            if op.bias is not None:
                need(params[op.bias][0] if len(params[op.bias]) == 1 else -1, rows, "bias")
            return rows
        case Rope():
            need(ins[0], op.heads * arch.head_dim, "the rotated vector")
            return ins[0]
        case Attention():
            need(ins[0], op.heads * op.head_dim, "q")
            need(ins[1], op.kv_heads * op.head_dim, "k")
            need(ins[2], op.kv_heads * op.head_dim, "v")
            return ins[0]
        case Add() | SwiGlu():
            need(ins[1], ins[0], "the second operand")
            return ins[0]
        case HeadNorm():
            need(params[op.gamma][0] if len(params[op.gamma]) == 1 else -1, arch.head_dim, "gamma")
            need(ins[0], op.heads * arch.head_dim, "the normed heads")
            return ins[0]
        case Route():
            moe = arch.moe
            if moe is None or op.top_k != moe.top_k:
                raise InputError(f"{where}: top_k is inconsistent with the architecture")
            need(ins[0], moe.num_experts, "the router's scores")
            return op.top_k
        case Experts():
            moe = arch.moe
            if moe is None or op.experts != moe.num_experts or op.layer >= arch.num_layers:
                raise InputError(f"{where}: experts/layer are inconsistent with the architecture")
            need(ins[1], moe.top_k, "the selection")
            rows = cols = -1
            for e in range(op.experts):
                g, u, d = (matrices[n]["shape"] for n in op.expert_matrices(e))
                need(g[1], ins[0], f"the input of expert {e}'s gate")
                need(u[1], ins[0], f"the input of expert {e}'s up")
                need(u[0], g[0], f"expert {e}'s up")
                need(d[1], g[0], f"the input of expert {e}'s down")
                rows = d[0] if e == 0 else rows
                need(d[0], rows, f"expert {e}'s down")
            return rows
        case GateScale():
            need(ins[0], 1, "the gate")
            return ins[1]
        case Quantize():
            return ins[0]
        case Logits():
            need(ins[0], arch.vocab_size, "the logits")
            return ins[0]
    raise AssertionError(f"no width rule for {op.KIND}")  # every kind of OPS has one
