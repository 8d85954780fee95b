"""Files in and out: size-capped input files and texts, and atomic output directories (a build
is complete or absent, never half-written)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from maskc.errors import InputError, UsageError

#: Largest text (calibration, evaluation, --ppl) accepted, in bytes.
MAX_TEXT_BYTES = 64 << 20


def read_small_file(path: Path, what: str, max_bytes: int) -> bytes:
    """The bytes of a size-capped input file (``what`` names it in messages: "config.json",
    "calibration text", ...); every failure is an InputError naming the file."""
    try:
        if not path.exists():
            raise InputError(f"{path}: no such file ({what})")
        if not path.is_file():
            raise InputError(f"{path}: not a file ({what} must be a file)")
        size = path.stat().st_size
        if size > max_bytes:
            raise InputError(f"{path}: {what} is {size} bytes, too large (max {max_bytes})")
        return path.read_bytes()
    except OSError as e:
        raise InputError(f"{path}: cannot read {what}: {e.strerror or e}") from None


def decode_utf8(path: Path, what: str, raw: bytes) -> str:
    """``raw`` decoded as UTF-8, or an InputError naming the file and the first bad byte."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(
            f"{path}: {what} is not UTF-8 (byte {e.start}); save it as UTF-8"
        ) from None


def read_text(path: Path, what: str) -> str:
    """A UTF-8 text file, size-capped; InputError naming the file otherwise."""
    text = decode_utf8(path, what, read_small_file(path, what, MAX_TEXT_BYTES))
    if not text.strip():
        raise InputError(f"{path}: {what} is empty")
    return text


def check_output_file(path: Path, flag: str) -> None:
    """Before any work: ``path`` (an output file given by ``flag``) can be created, i.e. its
    folder exists and it is not itself a folder (UsageError, exit 2)."""
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"{flag} {path}: the folder {parent} does not exist")
    if path.is_dir():
        raise UsageError(f"{flag} {path} is a folder; give a file name")


def _resolve(p: Path) -> Path:
    """``p.resolve()``, or an InputError naming a symlink loop."""
    try:
        return p.resolve()
    except (RuntimeError, OSError) as e:  # Python 3.11 raises RuntimeError on a loop
        raise InputError(f"{p}: cannot resolve the path (symlink loop?): {e}") from None


def check_output_dir(out: Path, force: bool, inputs: tuple[Path, ...] = ()) -> None:
    """Refuse an output that exists and is not an empty folder (unless ``force``), that is a
    file, or that lies inside one of ``inputs`` (or contains one)."""
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise InputError(f"{out}: exists and is not a folder; choose another output path")
        if any(out.iterdir()) and not force:
            raise InputError(f"{out}: exists and is not empty; pass --force to replace it")
    real = _resolve(out)
    for inp in inputs:
        r = _resolve(inp)
        if real == r or r in real.parents or real in r.parents:
            raise InputError(f"{out}: output overlaps the input {inp}; choose another path")


@contextmanager
def atomic_output_dir(
    out: str | os.PathLike, force: bool = False, inputs: tuple[Path, ...] = ()
) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``out``; rename it to ``out`` on success.

    On any exception (or Ctrl-C) the temporary folder is removed and ``out`` is untouched.
    With ``force`` an existing ``out`` is replaced only after the new one is complete.
    """
    out = Path(out)
    check_output_dir(out, force, inputs)
    parent = out.parent if str(out.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=parent))
        umask = os.umask(0)  # mkdtemp makes a private 0700 folder: give the usual permissions
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)
    except OSError as e:
        raise InputError(f"{out}: cannot create the output folder: {e.strerror or e}") from None
    try:
        yield tmp
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=parent))
            os.rename(out, old / "x")
        os.rename(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
