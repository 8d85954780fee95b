"""``write_layers``: the netlist's tiles -> the via and metal layer files of every bank
(GDSII or OASIS), ``layers/index.json`` listing them and ``layers/maskc.lyp`` (KLayout's layer
properties: :mod:`maskc.layout.lyp`)."""

from __future__ import annotations

import json
from pathlib import Path

from maskc.layout.banks import plan_banks
from maskc.layout.gds import write_gds
from maskc.layout.lyp import write_lyp
from maskc.layout.oasis import write_oas
from maskc.parallel import remove_debris, usable_cpus


def write_layers(
    nl, fabric, out_dir, fmt: str = "gds", workers: int | None = None, progress=None
) -> list[dict]:
    """Write the via and metal layer files of every bank into ``out_dir``, ``index.json``
    listing them and ``maskc.lyp``; returns the banks (with their ``files``)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    banks = plan_banks(nl, fabric, fmt)
    for bank in banks:
        bank["files"] = {layer: f"{layer}{bank['stem']}.{fmt}" for layer in ("via", "metal")}
    workers = workers or usable_cpus()
    if fmt == "gds":
        write_gds(nl, fabric, banks, out_dir, workers, progress)
    else:
        write_oas(nl, banks, out_dir, workers, progress)
    remove_debris(out_dir)  # temporary files of tasks killed and run again
    write_lyp(fabric, out_dir)
    index = [{k: b[k] for k in ("die", "top", "tiles", "files")} for b in banks]
    doc = {"format": fmt, "banks": index}
    (out_dir / "index.json").write_text(
        json.dumps(doc, indent=1, sort_keys=True, allow_nan=False) + "\n"
    )
    return banks
