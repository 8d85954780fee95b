"""The built-in fabrics and the one entry point that loads any fabric, built in or from TOML.

``load_fabric("hc1")`` or ``load_fabric("my.toml")`` returns a validated, frozen
:class:`~maskc.fabric.schema.Fabric`; :func:`builtin_fabrics` lists the built-in names.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path

from maskc.errors import InputError
from maskc.fabric.schema import Fabric, parse_fabric, read_fabric_file

#: The fabric a build is placed on unless ``--fabric`` says otherwise: the published chip.
DEFAULT_FABRIC = "hc1"
_BUILTIN_PACKAGE = "maskc.fabric.builtin"


def builtin_fabrics() -> list[str]:
    """The names of the built-in fabrics, sorted."""
    root = resources.files(_BUILTIN_PACKAGE)
    return sorted(p.name[: -len(".toml")] for p in root.iterdir() if p.name.endswith(".toml"))


def _load_builtin(name: str) -> Fabric:
    text = resources.files(_BUILTIN_PACKAGE).joinpath(f"{name}.toml").read_text(encoding="utf-8")
    where = f"built-in fabric {name}"
    fab = parse_fabric(tomllib.loads(text), where)
    if fab.name != name:  # a packaging bug, not a user error
        raise ValueError(f"{where}: [fabric] name is {fab.name!r}")
    return fab


def load_fabric(name_or_path: str | Path) -> Fabric:
    """A built-in fabric by name, or a fabric TOML file by path; validated.

    A string without a path separator and not ending in ``.toml`` is a built-in name; an unknown
    name is an :class:`InputError` listing the built-ins. Anything else is read as a file
    (size-capped, UTF-8, TOML; every field checked; exit 3 naming the file, table and key).
    """
    text = str(name_or_path)
    is_name = (
        isinstance(name_or_path, str)
        and not text.endswith(".toml")
        and "/" not in text
        and "\\" not in text
    )
    if is_name:
        names = builtin_fabrics()
        if text not in names:
            raise InputError(
                f"{text}: no built-in fabric of that name; choose one of {', '.join(names)} "
                "or give a .toml file"
            )
        return _load_builtin(text)
    return read_fabric_file(Path(name_or_path))
