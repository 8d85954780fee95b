"""The result of ``maskc diff-layers``: the JSON document of docs/diff.md and the verdict."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from maskc.diff.tally import Comparison
    from maskc.fabric import Fabric


@dataclass(frozen=True)
class DiffResult:
    """Two builds (or layer files) compared.

    ``doc`` is the JSON document of docs/diff.md (``a``, ``b``, ``fabric_a``, ``fabric_b``,
    ``identical``, ``same_base_die``, ``verdict``, ``masks_to_remake``, ``dies_to_remake``,
    ``layers`` with each layer's ``dies``), exactly
    as ``--json`` prints it; :meth:`to_json` returns a copy. The rest is what the heatmap
    draws: ``tiles`` maps each compared layer to its changed tiles (tile name -> vias or
    straps added + removed), ``fabric`` is the fabric both sides are built for and ``sites``
    every tile site they use; empty and ``None`` for different base dies.
    """

    doc: dict[str, Any]
    tiles: dict[str, dict[str, int]]
    fabric: Fabric | None
    sites: tuple[str, ...]
    #: tile site -> (tensor, layer, role), in placement order (the heatmap's labels)
    site_info: dict = field(default_factory=dict)

    @property
    def identical(self) -> bool:
        """Same base die and no mask changes (exit 0)."""
        return self.doc["identical"]

    @property
    def verdict(self) -> str:
        """One sentence: identical, which masks to re-make, or different base die."""
        return self.doc["verdict"]

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` document (a copy of ``doc``)."""
        return copy.deepcopy(self.doc)


def _die(tile: str) -> int:
    """The die of a tile site ``T<die>_<x>_<y>``."""
    from maskc.diff.tally import TILE

    m = TILE.fullmatch(tile)
    return int(m.group(1)) if m else 0


def _per_die(sites: tuple[str, ...], changed: dict[str, int]) -> dict[str, dict]:
    """Per die (``"0"``, ``"1"``, ...): whether its mask changes, its changed tiles and the tile
    sites either side uses on it."""
    total: dict[int, int] = {}
    for t in sites:
        total[_die(t)] = total.get(_die(t), 0) + 1
    moved: dict[int, int] = {}
    for t in changed:
        moved[_die(t)] = moved.get(_die(t), 0) + 1
        total.setdefault(_die(t), 0)
    return {
        str(d): {
            "identical": not moved.get(d),
            "changed_tiles": moved.get(d, 0),
            "total_tiles": total[d],
        }
        for d in sorted(total)
    }


def _die_list(dies: list[int]) -> str:
    return f"die {dies[0]}" if len(dies) == 1 else "dies " + ", ".join(map(str, dies))


def finish(res: Comparison, a: str, b: str, top: int) -> DiffResult:
    """The verdict and the document of a comparison of ``a`` and ``b``, with the ``top``
    tensors of each layer by changed shapes."""
    doc = {"a": a, "b": b, "fabric_a": res.fabric_a, "fabric_b": res.fabric_b}
    if not res.same_base:
        doc |= {
            "identical": False,
            "same_base_die": False,
            "verdict": f"different base die: A is built for fabric {res.fabric_a!r} and B "
            f"for {res.fabric_b!r} (or the same name with other geometry); the "
            "builds are for different chips, so their masks are not compared",
            "layers": {},
            "masks_to_remake": None,
            "dies_to_remake": None,
        }
        return DiffResult(doc, {}, None, ())
    layers = {}
    tiles = {}
    for name, rep in res.layers.items():
        changed = rep["added"] + rep["removed"]
        tensors = sorted(rep["tensors"].values(), key=lambda t: (-t["vias_or_straps"], t["tensor"]))
        if rep["shapes_a"]:
            fraction = round(changed / rep["shapes_a"], 6)
        else:
            fraction = 0.0 if not changed else 1.0
        layers[name] = {
            "identical": changed == 0,
            "added": rep["added"],
            "removed": rep["removed"],
            "changed_tiles": rep["changed_tiles"],
            "total_tiles": rep["total_tiles"],
            "shapes_in_a": rep["shapes_a"],
            "changed_fraction": fraction,
            "top_tensors": tensors[:top],
            "dies": _per_die(res.sites, rep["tiles"]),
        }
        tiles[name] = rep["tiles"]
    remake = [n for n, rep in layers.items() if not rep["identical"]]
    # each die has its own masks: which dies' masks must be re-made, per layer
    dies_remake = {
        n: [int(d) for d, x in rep["dies"].items() if not x["identical"]]
        for n, rep in layers.items()
    }
    several = len({d for rep in layers.values() for d in rep["dies"]}) > 1
    boot = res.boot_changed or ()
    if not remake and boot:
        verdict = "masks identical: same base die, no mask changes"
    elif not remake:
        verdict = "identical: same base die, no mask changes"
    else:
        parts = []
        for n in remake:
            rep = layers[n]
            ch = rep["added"] + rep["removed"]
            pct = 100 * rep["changed_fraction"]
            parts.append(
                f"the {n} mask changes in {ch:,} shapes ({pct:.3g}% of them), "
                f"{rep['changed_tiles']:,} of {rep['total_tiles']:,} tiles"
            )
        kept = [n for n in layers if n not in remake]
        names = {("via",): "via mask only", ("metal",): "metal mask only"}
        what = names.get(tuple(remake), " and ".join(remake) + " masks")
        if several:  # "via mask only (via mask of dies 0, 2)"
            what += (
                " (" + "; ".join(f"{n} mask of {_die_list(dies_remake[n])}" for n in remake) + ")"
            )
        verdict = f"{what} to re-make: {'; '.join(parts)}" + (
            f"; the {' and '.join(kept)} mask is reused" if kept else ""
        )
    if boot:  # SRAM, not a mask: new boot firmware, no respin
        verdict += (
            f"; the SRAM boot image differs in {len(boot):,} value(s) "
            f"({', '.join(boot[:3])}{', ...' if len(boot) > 3 else ''}): new boot firmware"
        )
    doc |= {
        "identical": not remake and not boot,
        "same_base_die": True,
        "verdict": verdict,
        "masks_to_remake": remake,
        "dies_to_remake": dies_remake,
        "layers": layers,
    }
    if res.boot_changed is not None:
        doc["boot"] = {"identical": not boot, "changed": list(boot)}
    return DiffResult(doc, tiles, res.fabric, res.sites, dict(res.site_info))
