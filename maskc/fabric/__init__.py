"""The fabric: the fixed base die maskc compiles onto (docs/fabric.md).

:mod:`maskc.fabric.schema` is the description (every table and field, validation, derived
numbers); :mod:`maskc.fabric.library` loads the built-ins and fabric TOML files.
"""

from maskc.fabric.library import DEFAULT_FABRIC, builtin_fabrics, load_fabric
from maskc.fabric.schema import MAX_FABRIC_BYTES, SCHEMA_VERSION, Fabric, parse_fabric

__all__ = [
    "DEFAULT_FABRIC",
    "MAX_FABRIC_BYTES",
    "SCHEMA_VERSION",
    "Fabric",
    "builtin_fabrics",
    "load_fabric",
    "parse_fabric",
]
