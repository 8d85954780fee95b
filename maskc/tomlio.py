"""TOML inputs (quant configs, fabric files): size-capped reading and value descriptions for
one-line error messages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from maskc.errors import InputError
from maskc.fsutil import decode_utf8, read_small_file
from maskc.textparse import ParseError, toml_loads


def read_toml(path: Path, what: str, max_bytes: int, hint: str = "") -> tuple[dict, bytes]:
    """Parse the TOML file ``path`` (``what`` names it in messages, ``hint`` says what the
    option expects); returns the document and the raw bytes. Every failure is exit 3."""
    raw = read_small_file(path, f"{what} ({hint})" if hint else what, max_bytes)
    text = decode_utf8(path, what, raw)
    try:
        return toml_loads(text), raw
    except ParseError as e:
        raise InputError(f"{path}: not valid TOML: {e.detail}") from None


def show_value(value: Any) -> str:
    """A value as an error message shows it, with its TOML type: ``"4" (a string)``."""
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, int):
        return f"{value} (an integer)"
    if isinstance(value, float):
        return f"{value!r} (a float)"
    if isinstance(value, str):
        return f"{json.dumps(value[:60])} (a string)"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return f"a {type(value).__name__}"
