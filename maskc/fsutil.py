"""Files in and out: regular, size-capped input files and texts, and atomic output directories
(a build is complete or absent, never half-written)."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from maskc.errors import InputError, UsageError

#: Largest text (calibration, evaluation, --ppl) accepted, in bytes.
MAX_TEXT_BYTES = 64 << 20

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "a special file")


def check_regular(path: Path, what: str) -> os.stat_result:
    """Before ``path`` is opened: it exists and is a regular file (a symlink is followed, to a
    regular file only). A FIFO, device, socket or folder would block a read or mislead it, so
    it is an InputError (exit 3) naming the file, as a missing one is."""
    try:
        st = os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise InputError(f"{path}: symlink loop ({what})") from None
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            dangling = os.path.islink(path)
            raise InputError(
                f"{path}: {'a broken symlink' if dangling else 'no such file'} ({what})"
            ) from None
        raise InputError(f"{path}: cannot access {what}: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{path}: {what} is {_kind(st.st_mode)}, not a file; give a regular file")
    return st


def optional_file(path: Path, what: str) -> Path | None:
    """An optional input (tokenizer.json beside a model ...): None when nothing is at
    ``path``; ``path`` when it is a regular file; an InputError naming it when something else
    is there (a folder, a FIFO, a broken symlink), never silently dropped."""
    if not os.path.lexists(path):
        return None
    check_regular(path, what)
    return path


def open_regular(path: Path, what: str) -> BinaryIO:
    """``path`` opened for reading, checked to be a regular file first (:func:`check_regular`)
    and again on the open file: the open does not block (``O_NONBLOCK``), so a file swapped for
    a FIFO in between is refused, not waited on."""
    check_regular(path, what)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise InputError(f"{path}: cannot read {what}: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InputError(
                f"{path}: {what} is {_kind(st.st_mode)}, not a file; give a regular file"
            )
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def copy_regular(src: Path, dst: Path, what: str) -> None:
    """Copy the input file ``src`` (checked regular, :func:`open_regular`) to ``dst``."""
    with open_regular(src, what) as f, open(dst, "wb") as g:
        shutil.copyfileobj(f, g, 1 << 20)


def read_small_file(path: Path, what: str, max_bytes: int) -> bytes:
    """The bytes of a size-capped input file (``what`` names it in messages: "config.json",
    "calibration text", ...); every failure is an InputError naming the file."""
    with open_regular(path, what) as f:
        try:
            size = os.fstat(f.fileno()).st_size
            if size > max_bytes:
                raise InputError(f"{path}: {what} is {size} bytes, too large (max {max_bytes})")
            data = f.read(max_bytes + 1)
        except OSError as e:
            raise InputError(f"{path}: cannot read {what}: {e.strerror or e}") from None
    if len(data) > max_bytes:  # grew since fstat
        raise InputError(f"{path}: {what} is over {max_bytes} bytes, too large")
    return data


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
