"""A pre-quantized checkpoint's ``quantization_config`` (config.json): which format, bits,
group size, symmetry, activation order and ignored modules (:class:`Scheme`), checked key by key
(InputError/UnsupportedError naming the key). The layers themselves are read by
:mod:`maskc.ingest.prequant`; docs/import-design.md describes the formats."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from maskc.errors import InputError, UnsupportedError
from maskc.ingest import mxfp4

#: the formats this module reads (``quant_method`` of ``quantization_config``)
METHODS = ("gptq", "awq", "compressed-tensors", "mxfp4")
#: the largest dimension a quantization_config may give
_MAX_DIM = 1 << 24


@dataclass(frozen=True)
class Scheme:
    """What a checkpoint's ``quantization_config`` says about its quantized layers."""

    method: str  #: one of :data:`METHODS`
    bits: int
    group_size: int  #: -1: one group per row (per channel)
    sym: bool
    desc_act: bool = False
    zero_plus_one: bool = False  #: GPTQ v1: ``qzeros`` holds ``zero - 1``
    ignore: tuple[str, ...] = ()  #: compressed-tensors: modules left in float

    @property
    def kind(self) -> str:
        """The ROM format kind the layers import into (romformat.FORMAT_KINDS)."""
        return "mxfp4" if self.method == "mxfp4" else "int"

    def describe(self) -> str:
        if self.method == "mxfp4":
            return "mxfp4 (E2M1 codes, an E8M0 scale per 32), fused experts"
        g = "per channel" if self.group_size == -1 else f"group {self.group_size}"
        kind = "symmetric" if self.sym else "asymmetric"
        extra = ", desc_act" if self.desc_act else ""
        return f"{self.method} {self.bits}-bit, {g}, {kind}{extra}"


def _int(d: dict, key: str, where: str, default: object = None) -> int:
    v = d.get(key, default)
    if not isinstance(v, int) or isinstance(v, bool):
        raise InputError(f"{where}: quantization_config.{key} must be an integer, got {v!r}")
    return v


def _flag(d: dict, key: str, where: str, default: bool) -> bool:
    v = d.get(key, default)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise InputError(f"{where}: quantization_config.{key} must be true or false, got {v!r}")
    return v


def _group(v: int, key: str, where: str) -> int:
    if v != -1 and not 1 <= v <= _MAX_DIM:
        raise InputError(f"{where}: {key} must be -1 or in [1, 2^24], got {v}")
    return v


def parse_config(qc: object, where: str) -> Scheme:
    """The :class:`Scheme` of a ``quantization_config`` object (from config.json ``where``)."""
    if not isinstance(qc, dict):
        raise InputError(f"{where}: quantization_config must be an object")
    method = qc.get("quant_method")
    if method not in METHODS:
        raise UnsupportedError(
            f"{where}: quantization_config.quant_method {method!r} is not supported; maskc "
            f"imports {', '.join(METHODS)} (or give it the F32/F16/BF16 model)"
        )
    if method == "mxfp4":
        keep = qc.get("modules_to_not_convert") or []
        if not (isinstance(keep, list) and all(isinstance(i, str) for i in keep)):
            raise InputError(
                f"{where}: quantization_config.modules_to_not_convert must be a list of names"
            )
        return Scheme("mxfp4", 4, mxfp4.BLOCK, True, ignore=tuple(keep))
    if method == "gptq":
        if qc.get("dynamic"):
            raise UnsupportedError(
                f"{where}: GPTQ per-module 'dynamic' overrides are not supported"
            )
        fmt = qc.get("checkpoint_format", "gptq")
        if fmt not in ("gptq", "gptq_v2"):
            raise UnsupportedError(
                f"{where}: GPTQ checkpoint_format {fmt!r} is not supported ('gptq', 'gptq_v2')"
            )
        return Scheme(
            "gptq",
            _int(qc, "bits", where),
            _group(_int(qc, "group_size", where, -1), "quantization_config.group_size", where),
            _flag(qc, "sym", where, True),
            desc_act=_flag(qc, "desc_act", where, False),
            zero_plus_one=fmt == "gptq",
        )
    if method == "awq":
        version = str(qc.get("version", "gemm")).lower()
        if version != "gemm":
            raise UnsupportedError(
                f"{where}: AWQ version {qc.get('version')!r} is not supported (only 'gemm')"
            )
        bits = _int(qc, "bits" if "bits" in qc else "w_bit", where)
        gkey = "group_size" if "group_size" in qc else "q_group_size"
        group = _group(_int(qc, gkey, where, -1), f"quantization_config.{gkey}", where)
        return Scheme("awq", bits, group, not _flag(qc, "zero_point", where, True))
    return _parse_compressed(qc, where)


def _parse_compressed(qc: dict, where: str) -> Scheme:
    if qc.get("format") != "pack-quantized":
        raise UnsupportedError(
            f"{where}: compressed-tensors format {qc.get('format')!r} is not supported "
            "(only 'pack-quantized')"
        )
    groups = qc.get("config_groups")
    if not isinstance(groups, dict) or not groups:
        raise InputError(f"{where}: quantization_config.config_groups must be a non-empty object")
    args = []
    for name in sorted(groups):
        g = groups[name]
        w = g.get("weights") if isinstance(g, dict) else None
        if not isinstance(w, dict):
            raise InputError(f"{where}: config_groups.{name}.weights must be an object")
        if g.get("input_activations") or g.get("output_activations"):
            raise UnsupportedError(
                f"{where}: config_groups.{name} quantizes activations; maskc imports "
                "weight-only checkpoints"
            )
        args.append({k: w.get(k) for k in sorted(w) if k not in ("observer", "observer_kwargs")})
    if any(a != args[0] for a in args[1:]):
        raise UnsupportedError(
            f"{where}: config_groups with different weight arguments are not supported yet"
        )
    w = args[0]
    if w.get("type", "int") != "int":
        raise UnsupportedError(f"{where}: weights type {w.get('type')!r} is not supported (int)")
    strategy = w.get("strategy")
    if strategy == "group":
        group = _group(_int(w, "group_size", where), "weights.group_size", where)
    elif strategy == "channel":
        group = -1
    else:
        raise UnsupportedError(
            f"{where}: weights strategy {strategy!r} is not supported ('group', 'channel')"
        )
    ignore = qc.get("ignore") or []
    if not (isinstance(ignore, list) and all(isinstance(i, str) for i in ignore)):
        raise InputError(f"{where}: quantization_config.ignore must be a list of names")
    return Scheme(
        "compressed-tensors",
        _int(w, "num_bits", where),
        group,
        _flag(w, "symmetric", where, True),
        desc_act=w.get("actorder") not in (None, "weight"),
        ignore=tuple(ignore),
    )


def _suffix(scheme: Scheme) -> str:
    return ".weight_packed" if scheme.method == "compressed-tensors" else ".qweight"


def modules(names: Iterable[str], scheme: Scheme) -> list[str]:
    """The sorted prefixes of the quantized layers among tensor ``names``."""
    suffix = _suffix(scheme)
    return sorted(n[: -len(suffix)] for n in names if n.endswith(suffix))
