"""The built-in quantization profiles and the policy that turns them, the quant config and the
command line into one :class:`~maskc.quantize.rules.QuantSetting` per tensor.

The defaults were chosen by measurement (docs/benchmarks.md): at 4 bits, groups of 32 with
calibration-weighted least squares (the calibration itself is chosen by
:func:`maskc.quantize.driver.choose_calibration`: off SmolLM2's source grid it takes the
emulated chip from 1.21x/1.41x to 1.05x/1.06x float32 perplexity); at 3 bits, groups of 64, the
same method and the four most sensitive matrix kinds kept at 4 bits (:data:`MIXED_4BIT_ROLES`)
give the best ppl per ROM bit.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from maskc.errors import InputError, UsageError
from maskc.ir import TensorSpec
from maskc.quantize import fp4
from maskc.quantize.methods import INT_METHODS, METHODS
from maskc.quantize.rules import EMBED_ROLES, QuantSetting, Resolution, resolve
from maskc.romformat import FP4_FORMATS, QuantFormat

#: Built-in profiles of the transformer-block matrices, by ``--bits`` (overridden field by field
#: by ``--group-size``/``--method``, ``[defaults]`` and rules).
PROFILES = {
    4: QuantSetting(
        bits=4, group_size=32, method="lsq", codebook=False, symmetric=False, scale_bits=8
    ),
    3: QuantSetting(
        bits=3, group_size=64, method="lsq", codebook=False, symmetric=False, scale_bits=8
    ),
}
BUILTIN = PROFILES[4]
#: Matrix kinds a 3-bit build keeps at 4 bits unless ``--no-mixed`` (or a rule sets ``bits``).
#: A mixture's expert and shared-expert down matrices count as down_proj (not measured on an
#: MoE model yet: docs/moe-design.md).
MIXED_4BIT_ROLES = (
    "k_proj",
    "v_proj",
    "o_proj",
    "down_proj",
    "expert_down_proj",
    "shared_down_proj",
)
#: Built-in setting of the embedding, lm_head and a mixture's routers (router and shared-expert
#: gate): 8-bit codes (two 4-bit cells per weight), the widest the fabric stores.
BUILTIN_EMBED = QuantSetting(
    bits=8, group_size=32, method="rtn", codebook=False, symmetric=False, scale_bits=8
)
#: Per-group shift bits of the step and offset (small-float scales), by code width.
SHIFT_BITS = {2: 3, 3: 3, 4: 3, 8: 0}


def builtin_for_bits(bits: int) -> QuantSetting:
    """The built-in block profile for a ``--bits`` choice (3 or 4; other widths: the 4-bit
    profile with that width)."""
    if bits in PROFILES:
        return PROFILES[bits]
    return QuantSetting(**{**BUILTIN.to_json(), "bits": bits})


#: Each FP4 format's default scale-fitting method, calibrated on the built-in text: gptq for
#: both (docs/benchmarks.md, "FP4 formats" and "4-bit off the source grid", sixth look: on the
#: shrunk Hessian, nvfp4's gptq beats its search on both texts on SmolLM2 and on three seeds of
#: off-grid copies, 1.070 / 1.129 of float32 against 1.171 / 1.195)
FP4_DEFAULT_METHOD = {"mxfp4": "gptq", "nvfp4": "gptq"}
#: ... and without calibration (``--no-calib``): the best calibration-free method
FP4_UNCALIBRATED_METHOD = "search"


def fp4_fixed(kind: str) -> dict:
    """The setting fields an FP4 format fixes: 4-bit codes, its block as the group, symmetric,
    no codebook."""
    f = FP4_FORMATS[kind]
    return {"bits": 4, "group_size": f.group_size, "symmetric": True, "codebook": False}


def format_for(setting: QuantSetting) -> QuantFormat:
    """The ROM format a setting asks for: an FP4 format is its one fixed format; asymmetric
    integer formats store a signed offset with as many mantissa bits as the step; symmetric
    ones store none."""
    if setting.format != "int":
        return FP4_FORMATS[setting.format]
    sh = SHIFT_BITS[setting.bits]
    return QuantFormat(
        bits=setting.bits,
        group_size=setting.group_size,
        scale_bits=setting.scale_bits,
        zero_bits=0 if setting.symmetric else setting.scale_bits,
        level_bits=max(8, setting.bits + 1),
        scale_shift_bits=sh,
        zero_shift_bits=0 if setting.symmetric else sh,
    )


def resolve_settings(
    specs: list[TensorSpec],
    bits: int | None = None,
    group_size: int | None = None,
    method: str | None = None,
    config: Path | None = None,
    strict: bool = False,
    mixed: bool | None = None,
    fmt: str | None = None,
    calibrate: bool | None = None,
) -> Resolution:
    """Every quantizable tensor's setting, each valid for the quantizers (InputError naming
    the tensor otherwise): the built-in profile of ``bits`` (default 4) <
    the config's ``[defaults]`` < the command line < its ordered ``[[rule]]``s (the embedding and
    lm_head start from :data:`BUILTIN_EMBED`; ``fmt`` is ``--format``); FP4 formats fixing
    their fields and taking their default method where none was chosen for them
    (:func:`_formats`; ``calibrate`` False: the calibration-free one); then, unless ``mixed``
    is False, the 3-bit profile's mixed precision: :data:`MIXED_4BIT_ROLES` stay at 4 bits
    where no rule chose their bits."""
    cli = {"bits": bits, "group_size": group_size, "method": method}
    builtin = builtin_for_bits(bits if bits is not None else 4)
    cli["format"] = fmt
    res = resolve(specs, cli, config, builtin, BUILTIN_EMBED, METHODS, strict)
    res = _formats(res, specs, config, calibrate)
    for name, s in res.settings.items():  # combinations the quantizers cannot make
        s.check_quantizable(f"{config or 'the command line'}: tensor {name}")
    if mixed is False:
        return res
    bits_rules = {r.index for r in res.rules if any(k == "bits" for k, _ in r.overrides)}
    roles = {s.name: s.role for s in specs}
    settings = dict(res.settings)
    for name, s in settings.items():
        if (
            s.bits == 3
            and roles[name] in MIXED_4BIT_ROLES
            and not bits_rules.intersection(res.applied.get(name, ()))
        ):
            # the exception uses the 4-bit profile's group size (groups of 64 lose the 4-bit
            # grid: docs/benchmarks.md) unless the user chose a group size
            g = s.group_size if group_size is not None else PROFILES[4].group_size
            settings[name] = dataclasses.replace(s, bits=4, group_size=g)
    return dataclasses.replace(res, settings=settings)


def _show(v) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


def _source(level: int, config: Path | None, key: str, value) -> str:
    """Where a field's value came from, as the user wrote it."""
    if level == 2:
        return f"--{key.replace('_', '-')} {_show(value)}"
    where = "[defaults]" if level == 1 else f"rule {level - 2}" if level else "the built-in"
    return f"{config}: {where} {key} = {_show(value)}"


def _formats(
    res: Resolution, specs: list[TensorSpec], config: Path | None, calibrate: bool | None = None
) -> Resolution:
    """Each FP4 setting with the fields its format fixes (:func:`fp4_fixed`) and an FP4 method.

    A field set less specifically than the format (the built-in profile, ``[defaults]`` under
    ``--format``, the command line under a rule's ``format``) gives way to it; one set at the
    same level or a more specific one and contradicting it is an error: a UsageError when both
    come from the command line (``--bits 3 --format mxfp4``), else an InputError naming the
    config, the tensor and the rule. An FP4 format on the embedding, lm_head or a router is
    refused (the embedding lookup has no FP4 path), as is an FP4 method on an integer format."""
    roles = {s.name: s.role for s in specs}
    settings = dict(res.settings)
    for name, s in res.settings.items():
        lv = res.levels.get(name, {})
        if s.skip:
            continue
        if s.format == "int":
            if s.method not in INT_METHODS:
                src = _source(lv.get("method", 0), config, "method", s.method)
                err = UsageError if lv.get("method") == 2 else InputError
                raise err(
                    f"{src}: {s.method} is an FP4 method but tensor {name} has the integer "
                    f"format; integer formats take {', '.join(INT_METHODS)} (or choose "
                    "--format mxfp4/nvfp4)"
                )
            continue
        if roles.get(name) in EMBED_ROLES:
            src = _source(lv.get("format", 0), config, "format", s.format)
            raise InputError(
                f"{src}: tensor {name} ({roles[name]}) cannot be {s.format}: FP4 formats are for "
                "the transformer-block matrices (the embedding lookup, lm_head and routers keep "
                "integer formats); narrow the rule's match"
            )
        at = lv.get("format", 0)
        fixed = fp4_fixed(s.format)
        for key, want in fixed.items():
            got = getattr(s, key)
            if got != want and lv.get(key, 0) >= at:
                _contradiction(name, s.format, key, got, want, lv, config)
        changes = dict(fixed)
        if s.method not in fp4.METHODS[s.format]:
            if lv.get("method", 0) >= at:
                *first, last = fp4.METHODS[s.format]
                methods = f"{', '.join(first)} or {last}"
                _contradiction(name, s.format, "method", s.method, methods, lv, config)
            changes["method"] = (
                FP4_UNCALIBRATED_METHOD if calibrate is False else FP4_DEFAULT_METHOD[s.format]
            )
        settings[name] = dataclasses.replace(s, **changes)
    return dataclasses.replace(res, settings=settings)


def _contradiction(name, kind, key, got, want, lv, config) -> None:
    src = _source(lv.get(key, 0), config, key, got)
    fsrc = _source(lv.get("format", 0), config, "format", kind)
    if src.startswith(f"{config}: ") and fsrc.startswith(f"{config}: "):
        fsrc = fsrc.removeprefix(f"{config}: ")  # the file named once
    err = UsageError if lv.get(key) == 2 and lv.get("format") == 2 else InputError
    raise err(
        f"{src} contradicts {fsrc} (tensor {name}): {kind} fixes {key} to {_show(want)}; "
        "drop one of them"
    )
