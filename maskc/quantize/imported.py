"""Pre-quantized layers through stage 2: written into ``quant/`` exactly as the checkpoint
defines them (:func:`maskc.ingest.prequant.to_rom`), never requantized.

:func:`imported_formats` gives each imported layer's ROM format (the layout of the unit's
file is fixed before anything is written); :func:`write_imported` writes one layer and its
report row, whose weight error is measured against the checkpoint's own dequantization
(:func:`maskc.ingest.prequant.dequantize`) and is zero; :func:`describe` is what
``maskc inspect`` says of the checkpoint; :func:`conflicts` words the warnings
for settings (``--bits``, ``--group-size``, ``--method``, quant.toml) that name an imported
layer: the import is kept.
"""

from __future__ import annotations

import math

import numpy as np

from maskc.errors import UnsupportedError
from maskc.ingest import prequant
from maskc.quantize.rules import QUANTIZABLE_ROLES
from maskc.quantize.store import index_entry_of
from maskc.romformat import PERM, QuantFormat, fields_of, unpermute_cols

#: the report's ``method`` of an imported layer
METHOD = "imported"
#: names shown in one warning before "and N more"
_SHOW = 3


def perm_layout(model, specs) -> dict[str, tuple]:
    """The unit file's arrays of the input permutations among ``specs`` (int32 ``[C]``)."""
    return {f"{s.name}/{PERM}": (np.int32, (s.shape[1],)) for s in specs if s.name in model.perms}


def imported_formats(model, specs, tile_rows=None) -> dict[str, QuantFormat]:
    """The ROM format of every imported layer among ``specs`` (one layer in memory at a time;
    UnsupportedError naming the layer when it has no exact ROM form). ``tile_rows``: the
    fabric's weights per tile row by code bits (:func:`maskc.ingest.prequant.to_rom`)."""
    return {
        s.name: prequant.to_rom(model.read_imported(s.name), tile_rows).fmt
        for s in specs
        if s.name in model.imported
    }


def write_imported(
    model, spec, out, file: str, keep, kept, rows, index, progress, tile_rows=None
) -> None:
    """Layer ``spec`` into ``out`` (a :class:`~maskc.quantize.stream.StreamWriter` laid out
    with :func:`imported_formats`, given the same ``tile_rows``), its index entry and its
    report row."""
    t = model.read_imported(spec.name)
    q = prequant.to_rom(t, tile_rows)
    for fd in fields_of(q.fmt):
        out.write_rows(f"{spec.name}/{fd.name}", 0, getattr(q, fd.name))
    perm = model.perms.get(spec.name)
    if perm is not None:  # the ROM's column order (docs/numerics.md, input permutation)
        out.write_rows(f"{spec.name}/{PERM}", 0, perm.astype(np.int32))
    deq = q.dequantize()
    ref = prequant.dequantize(t)
    del t
    d = deq.astype(np.float64) - ref
    num = math.sqrt(float(np.sum(d * d)))
    den = math.sqrt(float(np.sum(ref.astype(np.float64) ** 2)))
    rel = num / den if den else (0.0 if num == 0 else None)
    fmt = q.fmt
    index[spec.name] = index_entry_of(fmt, METHOD, spec.shape, file) | (
        {PERM: True} if perm is not None else {}
    )
    rows.append(
        {
            "name": spec.name,
            "role": spec.role,
            "layer": spec.layer,
            "shape": list(spec.shape),
            "quantized": True,
            "bits": fmt.bits,
            "group_size": fmt.group_size,
            "method": METHOD,
            "symmetric": fmt.zero_bits == 0,
            "scale_bits": fmt.group_field_bits if fmt.fp4 else fmt.scale_bits,
            **({"format": fmt.kind} if fmt.fp4 else {}),
            "bpw": fmt.bits_per_weight(*spec.shape),
            "rom_bits": fmt.rom_bits(*spec.shape),
            "rel_error": rel,
            "snr_db": -20 * math.log10(rel) if rel else None,
            "imported": model.scheme.describe(),
            **({PERM: True} if perm is not None else {}),
        }
    )
    if spec.name in keep:
        if perm is not None:  # in the checkpoint's column order, as the float model reads it
            deq = unpermute_cols(deq, perm)
        kept[spec.name] = deq if keep[spec.name] is None else deq[keep[spec.name]]
    if progress:
        progress(spec.parameters, spec.name)


def conflicts(model, settings: dict, explicit: bool, method: str | None = None) -> list[str]:
    """Warning lines for the settings that ask something else of imported layers: another
    format (``--format``, a ``format`` rule), other bits, another group size, a codebook,
    skip (float), or ``--method`` ``method``; only when the user gave
    ``--bits``/``--group-size``/``--method``/``--format`` or a quant config (``explicit``).
    One line per distinct request, naming the layers (the first few and how many more)."""
    if not explicit or not model.imported:
        return []
    sch = model.scheme
    by: dict[str, list[str]] = {}
    for spec in model.specs:
        s = settings.get(spec.name)
        if spec.name not in model.imported or s is None:
            continue
        group = spec.shape[1] if sch.group_size == -1 else sch.group_size
        if s.skip:
            want = "kept in float"
        elif s.format != sch.kind:
            want = f"{s.format} ({s.method})"
        elif s.bits != sch.bits or s.group_size != group or s.codebook or method is not None:
            cb = " codebook" if s.codebook else ""
            want = f"{s.bits}-bit{cb} {s.method}, group {s.group_size}"
        else:
            continue
        by.setdefault(want, []).append(spec.name)
    out = []
    for want, names in sorted(by.items()):
        more = f" and {len(names) - _SHOW} more" if len(names) > _SHOW else ""
        out.append(
            f"{', '.join(names[:_SHOW])}{more}: the settings ask for {want}, but "
            f"{'this layer is' if len(names) == 1 else 'these layers are'} imported exactly "
            f"from the checkpoint ({sch.describe()}); keeping the import (compile the float "
            "model to quantize it yourself)"
        )
    return out


def describe(model, check: bool) -> dict | None:
    """What ``maskc inspect`` says of a pre-quantized checkpoint (None for a float one): the
    format, bits, group size, symmetry, desc_act, the imported layers, and with ``check``
    (the data read) whether each maps onto the ROM exactly or why it does not."""
    sch = model.scheme
    if sch is None:
        return None
    layers = [s.name for s in model.specs if s.name in model.imported]
    floats = [
        s.name
        for s in model.specs
        if s.role in QUANTIZABLE_ROLES and s.role != "embed" and s.name not in model.imported
    ]
    out = {
        "format": sch.method,
        "bits": sch.bits,
        "group_size": sch.group_size,
        "symmetric": sch.sym,
        "desc_act": sch.desc_act,
        "description": sch.describe(),
        "imported_layers": layers,
        "float_matrices": floats,
        "rom": None,
    }
    if check:
        rom = {}
        for name in layers:
            try:
                prequant.to_rom(model.read_imported(name))
                rom[name] = "exact"
            except UnsupportedError as e:
                rom[name] = str(e)
        out["rom"] = rom
    return out
