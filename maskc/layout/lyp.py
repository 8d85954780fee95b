"""``layers/maskc.lyp``: a KLayout layer-properties file naming and colouring the build's two
layers, so ``klayout layers/via.gds -l layers/maskc.lyp`` (or ``.oas``) shows them readably.

KLayout's format: a ``<layer-properties>`` document with one ``<properties>`` entry per layer
view (colours, dither pattern, name, and ``source`` = ``layer/datatype@layout``). The layer and
datatype numbers are the fabric's (``[layers.via]``, ``[layers.metal]``). The scale ROM is not a
layer of its own: its vias are on the via layer, in the band above each tile's array
(docs/layout.md), so the via entry's name says where it is. Deterministic: a pure function of
the fabric.
"""

from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import escape

#: the file written beside the layer files
LYP_NAME = "maskc.lyp"

#: (key, colour, dither pattern): vias dark blue and solid (tiny squares), metal straps orange
#: and half-transparent (hatched), so vias under a strap stay visible
_STYLE = {"via": ("#1f4eb4", "I0"), "metal": ("#e8890c", "I9")}


def lyp_entries(fabric) -> list[dict]:
    """The layer views: key, layer, datatype, name, colour, dither pattern."""
    v, m = fabric.layers.via, fabric.layers.metal
    return [
        {
            "key": "via",
            "layer": v.gds_layer,
            "datatype": v.gds_datatype,
            "name": f"via {v.gds_layer}/{v.gds_datatype}: ROM bits (cell array; scale-ROM band "
            "above it in each tile)",
        },
        {
            "key": "metal",
            "layer": m.gds_layer,
            "datatype": m.gds_datatype,
            "name": f"metal {m.gds_layer}/{m.gds_datatype}: row straps and configuration word",
        },
    ]


def lyp_text(fabric) -> str:
    """The ``.lyp`` document of ``fabric``'s two customizable layers."""
    out = ['<?xml version="1.0" encoding="utf-8"?>', "<layer-properties>"]
    for e in lyp_entries(fabric):
        colour, dither = _STYLE[e["key"]]
        out += [
            " <properties>",
            f"  <frame-color>{colour}</frame-color>",
            f"  <fill-color>{colour}</fill-color>",
            "  <frame-brightness>0</frame-brightness>",
            "  <fill-brightness>0</fill-brightness>",
            f"  <dither-pattern>{dither}</dither-pattern>",
            "  <line-style/>",
            "  <valid>true</valid>",
            "  <visible>true</visible>",
            "  <transparent>false</transparent>",
            "  <width>1</width>",
            "  <marked>false</marked>",
            "  <xfill>false</xfill>",
            "  <animation>0</animation>",
            f"  <name>{escape(e['name'])}</name>",
            f"  <source>{e['layer']}/{e['datatype']}@1</source>",
            " </properties>",
        ]
    out += [" <name/>", "</layer-properties>", ""]
    return "\n".join(out)


def write_lyp(fabric, out_dir) -> Path:
    """Write ``out_dir/maskc.lyp``; returns its path."""
    path = Path(out_dir) / LYP_NAME
    path.write_text(lyp_text(fabric), encoding="utf-8")
    return path
