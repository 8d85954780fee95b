"""Stage 4, netlist: the bit-exact functional netlist of a build (docs/netlist.md; the
arithmetic it implies is docs/numerics.md, contract version 1).

* :mod:`~maskc.netlist.ops`: one class per op kind (fields, checks, dataflow, text);
* :mod:`~maskc.netlist.dataflow`: a model lowered to ops;
* :mod:`~maskc.netlist.constants`: the fixed-point constants and lookup tables;
* :mod:`~maskc.netlist.writer`: :func:`write_netlist` (quant store + placement -> files);
* :mod:`~maskc.netlist.loader`: :func:`load_netlist` validates, :class:`Netlist` reads;
* :mod:`~maskc.netlist.text`: :func:`dump_text`, the canonical text form tests compare.
"""

from maskc.netlist.loader import Netlist, load_netlist
from maskc.netlist.ops import OPS, Op, check_dataflow, parse_ops
from maskc.netlist.text import dump_text
from maskc.netlist.writer import write_netlist

__all__ = [
    "OPS",
    "Netlist",
    "Op",
    "check_dataflow",
    "dump_text",
    "load_netlist",
    "parse_ops",
    "write_netlist",
]
