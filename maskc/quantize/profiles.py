"""The built-in quantization profiles and the policy that turns them, the quant config and the
command line into one :class:`~maskc.quantize.rules.QuantSetting` per tensor.

The defaults were chosen by measurement (docs/benchmarks.md): at 4 bits, groups of 32 reproduce
SmolLM2's own grid; at 3 bits, groups of 64 with calibration-weighted least squares and the four
most sensitive matrix kinds kept at 4 bits (:data:`MIXED_4BIT_ROLES`) give the best ppl per ROM
bit.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from maskc.ir import TensorSpec
from maskc.quantize.methods import METHODS
from maskc.quantize.rules import QuantSetting, Resolution, resolve
from maskc.romformat import QuantFormat

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


def format_for(setting: QuantSetting) -> QuantFormat:
    """The ROM format a setting asks for: asymmetric formats store a signed offset with as many
    mantissa bits as the step; symmetric ones store none."""
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
) -> Resolution:
    """Every quantizable tensor's setting, each valid for the quantizers (InputError naming
    the tensor otherwise): the built-in profile of ``bits`` (default 4) <
    the config's ``[defaults]`` < the command line < its ordered ``[[rule]]``s (the embedding and
    lm_head start from :data:`BUILTIN_EMBED`); then, unless ``mixed`` is False, the 3-bit
    profile's mixed precision: :data:`MIXED_4BIT_ROLES` stay at 4 bits where no rule chose
    their bits."""
    cli = {"bits": bits, "group_size": group_size, "method": method}
    builtin = builtin_for_bits(bits if bits is not None else 4)
    res = resolve(specs, cli, config, builtin, BUILTIN_EMBED, METHODS, strict)
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
