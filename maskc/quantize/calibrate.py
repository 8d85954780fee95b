"""Calibration statistics: what each linear layer's inputs look like on real text.

The quantizer runs the model layer by layer over a few calibration windows, keeping only the
residual stream of those windows (``[windows, ctx, hidden]`` float32) and one layer's weights in
memory. For layer ``i`` it records, for each of the four input sites of the layer's matrices,

* ``attn_in`` -> q_proj, k_proj, v_proj
* ``o_in``    -> o_proj
* ``mlp_in``  -> gate_proj, up_proj
* ``down_in`` -> down_proj

the importance of every input column (mean of ``x_j**2``, llama.cpp's "imatrix") and, when a
method needs it, the Hessian ``X^T X / N`` (float64 ``[in, in]``). After the layer's matrices are
quantized, the residual stream is pushed through the *quantized* layer, so the next layer is
calibrated on what it will really see (sequential GPTQ).

In a mixture of experts the router, the shared expert's gate and its gate/up see every token
(``mlp_in``), the shared expert's down its own SwiGLU output (``shared_expert.down_in``), and a
routed expert ``E`` only the tokens the float router of the layer sends to it (its top-k, as
:mod:`maskc.reference` routes): its gate/up ``experts.E.mlp_in`` (those tokens' rows of
``mlp_in``), its down ``experts.E.down_in`` (its own SwiGLU output on them). An expert no
calibration token selects has no statistics: its matrices are quantized without calibration
(gptq falls back to lsq). An expert's Hessian is computed when its matrices are quantized, from
its rows kept as float32 (one layer holds ``top_k`` x tokens rows of inputs, not ``experts``
Hessians).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from maskc.errors import InputError
from maskc.reference import FloatLlama

#: Largest mean squared input activation (importance) the quantizers take: their float32 sums
#: of ``importance * w**2`` over a group stay finite for |w| < 2^19 and groups up to 2^12.
IMPORTANCE_LIMIT = 2.0**64

#: Which observer site feeds each matrix role (a routed expert's: :data:`EXPERT_SITE_OF_ROLE`).
SITE_OF_ROLE = {
    "q_proj": "attn_in",
    "k_proj": "attn_in",
    "v_proj": "attn_in",
    "o_proj": "o_in",
    "gate_proj": "mlp_in",
    "up_proj": "mlp_in",
    "down_proj": "down_in",
    "router": "mlp_in",
    "shared_expert_gate": "mlp_in",
    "shared_gate_proj": "mlp_in",
    "shared_up_proj": "mlp_in",
    "shared_down_proj": "shared_expert.down_in",
}
#: The observer site of a routed expert's matrices (``{e}``: the expert index)
EXPERT_SITE_OF_ROLE = {
    "expert_gate_proj": "experts.{e}.mlp_in",
    "expert_up_proj": "experts.{e}.mlp_in",
    "expert_down_proj": "experts.{e}.down_in",
}
#: Observer sites whose rows are kept and whose Hessian is computed on demand: the routed experts'
EXPERT_SITE_PREFIX = "experts."


def site_of(spec) -> str | None:
    """The observer site of a :class:`~maskc.ir.TensorSpec`'s inputs (None: not a matrix of a
    decoder layer, e.g. the embedding)."""
    if spec.expert is not None and spec.role in EXPERT_SITE_OF_ROLE:
        return EXPERT_SITE_OF_ROLE[spec.role].format(e=spec.expert)
    return SITE_OF_ROLE.get(spec.role)


@dataclass
class SiteStats:
    """Accumulated statistics of one input site (all float64). With ``rows`` (a list), the
    inputs are kept (float32) when Hessians are collected and :attr:`hessian` sums them when
    asked, in the same order and arithmetic as the running sum."""

    count: int = 0
    sum_sq: np.ndarray | None = None  #: [in]
    xtx: np.ndarray | None = None  #: [in, in] when Hessians are collected
    rows: list[np.ndarray] | None = None  #: the inputs, when the Hessian is computed on demand

    def add(self, x: np.ndarray, hessian: bool) -> None:
        x = np.asarray(x, dtype=np.float32)
        sq = (x.astype(np.float64) ** 2).sum(axis=0)
        self.sum_sq = sq if self.sum_sq is None else self.sum_sq + sq
        if hessian and self.rows is not None:
            self.rows.append(x)
        elif hessian:
            self.xtx = _xtx_add(self.xtx, x)
        self.count += x.shape[0]

    @property
    def importance(self) -> np.ndarray:
        """Mean squared activation per input column, float64 ``[in]``."""
        return self.sum_sq / max(self.count, 1)

    @property
    def hessian(self) -> np.ndarray | None:
        xtx = self.xtx
        for x in self.rows or ():  # computed on each call, not kept
            xtx = _xtx_add(xtx, x)
        return None if xtx is None else xtx / max(self.count, 1)


def _xtx_add(xtx: np.ndarray | None, x: np.ndarray) -> np.ndarray:
    h = (x.T @ x).astype(np.float64)  # float32 matmul, float64 accumulation
    return h if xtx is None else xtx + h


def calibration_windows(ids, ctx: int) -> list[np.ndarray]:
    """The calibration token ids cut into windows of ``ctx`` (the last may be shorter; one of a
    single token is dropped: nothing to attend to), each an int array."""
    return [
        np.asarray(ids[i : i + ctx]) for i in range(0, len(ids), ctx) if len(ids[i : i + ctx]) >= 2
    ]


@dataclass
class LayerCalibrator:
    """Drives a :class:`FloatLlama` one layer at a time over fixed calibration windows.

    ``weights`` supplies float32 tensors by name for the layer being processed; the caller swaps
    in dequantized weights before :meth:`advance`.
    """

    model: FloatLlama
    windows: list[np.ndarray]  #: per window: residual stream float32 [T, hidden]
    hessian: bool = False
    stats: dict[str, SiteStats] = field(default_factory=dict)

    def observe(self, layer: int) -> dict[str, SiteStats]:
        """Run layer ``layer`` with the current weights, recording input statistics per site
        (a routed expert's sites only if some token selected it)."""
        self.stats = {}

        def obs(i: int, site: str, x: np.ndarray) -> None:
            if site not in self.stats:
                keep = site.startswith(EXPERT_SITE_PREFIX)
                self.stats[site] = SiteStats(rows=[] if keep else None)
            self.stats[site].add(x, self.hessian)

        self.model.observer = obs
        try:
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # checked below
                for x in self.windows:
                    self.model.block(layer, x, 0)
        finally:
            self.model.observer = None
        for site, st in sorted(self.stats.items()):
            top = -1.0 if st.sum_sq is None else float(np.max(st.importance, initial=0.0))
            if not top < IMPORTANCE_LIMIT:  # NaN too
                raise InputError(
                    f"calibration: the float model's activations entering layer {layer} "
                    f"({site}) reach a mean square of {top:.3g} on the calibration text, beyond "
                    "the 2^64 the quantizer's float32 arithmetic takes (weights near the chip's "
                    "limits, docs/numerics.md); compile with --no-calib"
                )
        return self.stats

    def advance(self, layer: int) -> None:
        """Push every window's residual stream through layer ``layer`` (current weights)."""
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # checked next time
            self.windows = [self.model.block(layer, x, 0) for x in self.windows]
