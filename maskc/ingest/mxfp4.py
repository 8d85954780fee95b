"""MXFP4 checkpoints: fused expert weights stored as ``*_blocks`` + ``*_scales``.

The layout of the open-weight MoE releases (OpenAI's gpt-oss, ``quantization_config =
{"quant_method": "mxfp4", "modules_to_not_convert": [...]}``) as transformers and gpt-oss read
it (docs/import-design.md, "MXFP4", cites both). For decoder layer ``n`` of a mixture-of-experts
model with ``E`` experts, hidden size ``H`` and expert width ``I`` (``P`` = the layer's MoE module:
``model.layers.n.mlp.``, Mixtral's ``model.layers.n.block_sparse_moe.``)::

    P experts.gate_up_proj_blocks   U8 [E, 2I, H/32, 16]   row 2i: gate row i, row 2i+1: up row i
    P experts.gate_up_proj_scales   U8 [E, 2I, H/32]       one E8M0 per 32 inputs
    P experts.down_proj_blocks      U8 [E, H, I/32, 16]
    P experts.down_proj_scales      U8 [E, H, I/32]

Byte ``k`` of a block holds input ``2k`` in its low nibble and ``2k + 1`` in its high nibble,
each an E2M1 code (sign << 3 | magnitude code); weight = ``E2M1(code) * 2**(scale - 127)``.
Nothing else is stored this way in a real release (attention, router, embedding and head stay
in float: ``modules_to_not_convert``), so a ``*_blocks``/``*_scales`` tensor anywhere else, or
an expert bias (``*_bias``: maskc's experts have none), is refused naming it.

Each expert's gate, up and down matrix is one imported layer (:class:`MxImported`, read one
expert at a time); :func:`to_rom` maps it onto the ``mxfp4`` ROM format exactly (the codes
are the cells, every block's E8M0 is the row exponent minus the block's shift).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from maskc.errors import InputError, UnsupportedError
from maskc.ir import ModelArch
from maskc.limits import WEIGHT_LIMIT

METHOD = "mxfp4"
BLOCK = 32  #: inputs per E8M0 scale (OCP MX v1.0)
E8M0_NAN = 0xFF
#: the fused tensors of one layer's experts, and which expert matrices each holds
FUSED = {"gate_up_proj": ("gate", "up"), "down_proj": ("down",)}
#: the suffixes of one fused module's tensors
SUFFIXES = ("_blocks", "_scales")
#: E2M1 magnitude of each 4-bit code (code 8..15: negative); OCP MX v1.0 §5.3.3
_MAGNITUDE = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6] * 2)
_FUSED_NAME = re.compile(
    r"(model\.layers\.(\d{1,9})\.(?:mlp|block_sparse_moe)\.experts\.(gate_up_proj|down_proj))"
    r"(_blocks|_scales|_bias)"
)
#: maskc's name of each expert matrix, by architecture family (Mixtral: w1/w3/w2)
_NAMES = {
    True: {"gate": "w1", "up": "w3", "down": "w2"},
    False: {"gate": "gate_proj", "up": "up_proj", "down": "down_proj"},
}


@dataclass
class MxImported:
    """One expert matrix of an MXFP4 checkpoint: ``w = E2M1(codes) * 2**(scales - 127)``."""

    name: str  #: maskc's weight name, ``...experts.E.<gate/up/down>.weight``
    shape: tuple[int, int]  #: ``[R, C]`` = ``[out, in]``
    codes: np.ndarray  #: uint8 ``[R, C]`` E2M1 codes
    scales: np.ndarray  #: uint8 ``[R, C / 32]`` E8M0 exponents (never 0xFF)
    method: str = METHOD


def _moe_module(arch: ModelArch, n: int) -> str:
    sub = "block_sparse_moe" if arch.architecture == "MixtralForCausalLM" else "mlp"
    return f"model.layers.{n}.{sub}."


def _expected(arch: ModelArch, fused: str) -> tuple[int, int, int]:
    """``(E, rows, cols)`` of fused tensor ``fused`` (``gate_up_proj``: ``2I x H``)."""
    moe = arch.moe
    h, i = arch.hidden_size, moe.expert_intermediate_size
    return (moe.num_experts, 2 * i, h) if fused == "gate_up_proj" else (moe.num_experts, h, i)


def expert_names(arch: ModelArch, prefix: str) -> dict[str, tuple[int, str]]:
    """The expert matrices fused tensor ``prefix`` holds: maskc weight name -> (expert, part)."""
    n = int(prefix.split(".")[2])
    fused = prefix.rsplit(".", 1)[1]
    names = _NAMES[arch.architecture == "MixtralForCausalLM"]
    base = _moe_module(arch, n) + "experts."
    return {
        f"{base}{e}.{names[part]}.weight": (e, part)
        for e in range(arch.moe.num_experts)
        for part in FUSED[fused]
    }


def layers(tensors: dict, arch: ModelArch, where_of) -> dict[str, str]:
    """maskc weight name -> fused prefix for every expert matrix held by ``*_blocks`` +
    ``*_scales`` among ``tensors`` (name -> :class:`~maskc.safetensors_io.TensorInfo`), their
    headers checked (dtype, shape). ``where_of(name)``: the file holding a tensor, for
    messages. InputError (exit 3) naming the tensor for anything else stored as MXFP4."""
    prefixes = set()
    for name in sorted(tensors):
        if not name.endswith(("_blocks", "_scales", "_bias")):
            continue
        m = _FUSED_NAME.fullmatch(name)
        ok = (
            m is not None
            and arch.moe is not None
            and int(m.group(2)) < arch.num_layers
            and m.group(1).startswith(_moe_module(arch, int(m.group(2))))
        )
        if not ok:
            if not name.endswith(SUFFIXES):
                continue  # another tensor: the loader refuses it as unexpected
            where = (
                f"of a mixture-of-experts model, e.g. '{_moe_module(arch, 0)}experts."
                "gate_up_proj_blocks'"
                if arch.moe is not None
                else "of a mixture-of-experts model"
            )
            raise UnsupportedError(
                f"{where_of(name)}: tensor {name!r}: maskc imports MXFP4 *_blocks/*_scales "
                f"only as fused expert weights (gate_up_proj, down_proj: the gpt-oss layout) "
                f"{where}; {arch.architecture} has no such tensor here"
            )
        if m.group(4) == "_bias":
            raise UnsupportedError(
                f"{where_of(name)}: tensor {name!r}: expert biases are not supported "
                f"({arch.architecture}'s experts have none); maskc cannot import this checkpoint"
            )
        prefixes.add(m.group(1))
    out = {}
    for prefix in sorted(prefixes):
        for s in SUFFIXES:
            if prefix + s not in tensors:
                other = SUFFIXES[1 - SUFFIXES.index(s)]
                raise InputError(
                    f"{where_of(prefix + other)}: tensor {prefix + s!r} is missing: MXFP4 "
                    f"{prefix + other!r} needs both _blocks (E2M1 codes) and _scales (E8M0)"
                )
        check_headers(tensors, prefix, arch, where_of(prefix + "_blocks"))
        out |= {name: prefix for name in expert_names(arch, prefix)}
    return out


def check_headers(tensors: dict, prefix: str, arch: ModelArch, where: str) -> None:
    """The dtype and shape of fused module ``prefix``'s blocks and scales (headers only)."""
    e, r, c = _expected(arch, prefix.rsplit(".", 1)[1])
    if c % BLOCK:
        raise UnsupportedError(
            f"{where}: tensor {prefix + '_blocks'!r}: its input dimension {c} (config.json) is "
            f"not a multiple of the MXFP4 block of {BLOCK}; this layout cannot hold it"
        )
    want = {"_blocks": (e, r, c // BLOCK, BLOCK // 2), "_scales": (e, r, c // BLOCK)}
    for s, shape in want.items():
        info = tensors[prefix + s]
        if info.dtype != "U8":
            raise InputError(
                f"{where}: tensor {prefix + s!r} must be U8 (MXFP4 "
                f"{'packed E2M1 codes' if s == '_blocks' else 'E8M0 scales'}), found {info.dtype}"
            )
        if tuple(info.shape) != shape:
            raise InputError(
                f"{where}: tensor {prefix + s!r} has shape {list(info.shape)}, expected "
                f"{list(shape)} for {arch.moe.num_experts} experts from config.json"
            )


def nbytes(shape: tuple[int, int]) -> int:
    """Bytes one expert matrix of ``shape`` takes in the checkpoint (codes and scales)."""
    r, c = shape
    return r * c // 2 + r * c // BLOCK


def read_expert(st, prefix: str, name: str, arch: ModelArch, where: str) -> MxImported:
    """Expert matrix ``name`` (held by fused module ``prefix`` of ``st``), unpacked and checked:
    no E8M0 NaN (0xFF), every weight below the chip's limit (InputError naming the tensor and
    the checkpoint's index)."""
    expert, part = expert_names(arch, prefix)[name]
    fused = prefix.rsplit(".", 1)[1]
    blocks = st.read_raw(prefix + "_blocks", expert)  # [R', NB, 16]
    scales = st.read_raw(prefix + "_scales", expert)  # [R', NB]
    rows = slice(None) if part == "down" else slice(FUSED[fused].index(part), None, 2)
    rows_idx = np.arange(blocks.shape[0])[rows]
    b, s = blocks[rows], np.ascontiguousarray(scales[rows])
    r, nb = s.shape
    codes = np.empty((r, nb, BLOCK), dtype=np.uint8)
    codes[:, :, 0::2] = b & 0x0F
    codes[:, :, 1::2] = b >> 4
    codes = codes.reshape(r, nb * BLOCK)
    if np.any(s == E8M0_NAN):
        i, g = (int(x) for x in np.argwhere(s == E8M0_NAN)[0])
        raise InputError(_nan_message(where, prefix, expert, int(rows_idx[i]), g))
    amax = _MAGNITUDE[codes].reshape(r, nb, BLOCK).max(axis=2)
    big = np.ldexp(amax, s.astype(np.int64) - 127) >= WEIGHT_LIMIT  # exact in float64
    if np.any(big):
        i, g = (int(x) for x in np.argwhere(big)[0])
        v = float(np.ldexp(amax[i, g], int(s[i, g]) - 127))
        raise InputError(
            f"{where}: tensor {prefix + '_blocks'!r} decodes to {v:.6g} in block "
            f"[{expert}, {int(rows_idx[i])}, {g}] (scale 2^{int(s[i, g]) - 127}); weights must "
            f"have a magnitude below 2^19 = {int(WEIGHT_LIMIT):,} (docs/numerics.md)"
        )
    return MxImported(name, (r, nb * BLOCK), codes, s)


def rom_format(st, prefix: str, name: str, arch: ModelArch, where: str):
    """The ROM format of expert matrix ``name`` from its scales alone (``compile
    --plan-only``): ``mxfp4``, after the scales are checked for E8M0 NaN. The span check
    needs the codes (blocks of zeros are exempt) and is left to the compile."""
    from maskc.romformat import FP4_FORMATS

    expert, part = expert_names(arch, prefix)[name]
    scales = st.read_raw(prefix + "_scales", expert)
    rows = np.arange(scales.shape[0])
    if part != "down":
        rows = rows[FUSED[prefix.rsplit(".", 1)[1]].index(part) :: 2]
    bad = scales[rows] == E8M0_NAN
    if np.any(bad):
        i, g = (int(x) for x in np.argwhere(bad)[0])
        raise InputError(_nan_message(where, prefix, expert, int(rows[i]), g))
    return FP4_FORMATS["mxfp4"]


def _nan_message(where: str, prefix: str, expert: int, row: int, block: int) -> str:
    return (
        f"{where}: tensor {prefix + '_scales'!r} holds 0xFF (E8M0 NaN) at index "
        f"[{expert}, {row}, {block}]; the checkpoint is corrupt"
    )


def dequantize(t: MxImported) -> np.ndarray:
    """float32 ``[R, C]``: ``E2M1(code) * 2**(E - 127)``, as the reference readers compute it
    (exact: 2 significant bits, magnitudes in ``[2^-128, 2^19)``)."""
    step = np.ldexp(1.0, t.scales.astype(np.int64) - 127)
    sign = np.where(t.codes >= 8, -1.0, 1.0)
    w = (sign * _MAGNITUDE[t.codes]).reshape(*t.scales.shape, BLOCK) * step[:, :, None]
    return w.reshape(t.shape).astype(np.float32)


def to_rom(t: MxImported):
    """``t`` in the ``mxfp4`` ROM format with the same value for every weight (method
    ``imported``): the codes are the cells, ``scale_e = Emax - 128`` per row and ``scale_s =
    Emax - E`` per block (``fp4.mx_row_fields``), ``Emax`` the largest scale among the row's
    blocks holding a nonzero code. A block of zeros whose own scale lies outside the 8 shift
    bits is stored with the nearest shift (its weights are 0 at any scale). A row whose
    blocks span more than 19 binades is refused (FitError, exit 4, naming tensor, row and
    block)."""
    from maskc.quantize.fp4 import mx_row_fields
    from maskc.romformat import E2M1_LEVELS, FP4_FORMATS, from_arrays

    r, c = t.shape
    e = t.scales.astype(np.int64)
    nz = (_MAGNITUDE[t.codes] != 0).reshape(*e.shape, BLOCK).any(axis=2)
    # Emax over the blocks that hold a nonzero code (all blocks for a row of zeros)
    ref = np.where(nz.any(axis=1)[:, None], np.where(nz, e, -1), e)
    se, _ = mx_row_fields(ref)
    emax = se + 128
    ss = np.clip(emax[:, None] - e, 0, 255)
    arrays = {
        "codes": t.codes,
        "levels": E2M1_LEVELS.copy(),
        "scale_m": np.ones(e.shape, dtype=np.uint16),
        "scale_s": ss.astype(np.uint8),
        "scale_e": se.astype(np.int8),
    }
    return from_arrays(t.name, (r, c), FP4_FORMATS["mxfp4"], arrays, method="imported")
