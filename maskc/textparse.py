"""The one guarded way maskc parses JSON and TOML it did not write: every failure, including
those of the parsers' own limits, becomes :class:`ParseError` with a one-line detail.

Python's parsers fail in ways their error classes do not cover: an integer literal of more than
4,300 digits is a ``ValueError`` from ``int()`` (CPython's limit on decimal conversion), and a
deeply nested array or table a ``RecursionError``. Both used to escape as exit 70. Callers turn
:class:`ParseError` into their own one-line :class:`maskc.errors.InputError` (exit 3).
"""

from __future__ import annotations

import json
import tomllib


class ParseError(Exception):
    """``detail``: what is wrong, for the caller's message; ``key``: a repeated JSON key."""

    def __init__(self, detail: str, key: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.key = key


class _Duplicate(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique(pairs: list[tuple[str, object]]) -> dict:
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise _Duplicate(k)
        out[k] = v
    return out


def _limit(e: BaseException) -> ParseError | None:
    """The parser-limit failures: a too-long integer literal, too deep a nesting."""
    if isinstance(e, RecursionError):
        return ParseError("nested too deeply")
    if isinstance(e, ValueError) and "digits" in str(e):
        return ParseError("an integer literal of more than 4,300 digits")
    return None


def json_loads(data: bytes | str, unique: bool = True) -> object:
    """JSON ``data`` (UTF-8 bytes or text); repeated object keys refused when ``unique``."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes | bytearray) else data
        return json.loads(text, object_pairs_hook=_unique if unique else None)
    except UnicodeDecodeError:
        raise ParseError("not UTF-8") from None
    except _Duplicate as e:
        raise ParseError(f"the key {e.key!r} appears twice", key=e.key) from None
    except json.JSONDecodeError as e:
        raise ParseError(f"line {e.lineno}: {e.msg}") from None
    except (ValueError, RecursionError) as e:
        err = _limit(e)
        if err is None:
            raise ParseError(str(e).splitlines()[0][:200]) from None
        raise err from None


def toml_loads(text: str) -> dict:
    """A TOML document."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ParseError(str(e)) from None
    except (ValueError, RecursionError) as e:
        err = _limit(e)
        if err is None:
            raise ParseError(str(e).splitlines()[0][:200]) from None
        raise err from None
