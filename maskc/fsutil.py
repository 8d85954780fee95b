"""Files in and out: regular, size-capped input files and texts, and atomic, locked output
folders (a build is complete or absent, never half-written, and never written by two
processes at once)."""

from __future__ import annotations

import errno
import fcntl
import os
import secrets
import shutil
import signal
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

from maskc.errors import InputError, UsageError

#: Largest text (calibration, evaluation, --ppl) accepted, in bytes.
MAX_TEXT_BYTES = 64 << 20
#: Bytes an output folder's name leaves to NAME_MAX for its siblings while it is written:
#: ``.NAME.tmp-XXXXXXXX`` and ``.NAME.old-XXXXXXXX`` (14 more than NAME), ``.NAME.lock``.
OUTPUT_NAME_ROOM = 14

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


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def check_output_path(out: Path, inputs: tuple[Path, ...] = (), flag: str = "-o") -> None:
    """Before any work: ``out`` can become an output folder (UsageError, exit 2, otherwise).

    Refused: an empty path, ``.``, ``..``, ``/``, the current folder or one of its parents (a
    folder cannot be renamed over the one a process works in), the inputs or anything inside
    or around them, a name longer than the filesystem's NAME_MAX less
    :data:`OUTPUT_NAME_ROOM`, and a path through a file (its parent cannot be created)."""
    text = str(out)
    if text in ("", ".", "..", "/") or out.name in ("", ".", ".."):
        raise UsageError(f"{flag} {text!r}: not a folder name; give a new folder for the output")
    real = _resolve(out)
    try:
        cwd = Path.cwd().resolve()
    except OSError:  # the current folder was removed: nothing can be it
        cwd = None
    if cwd is not None and (real == cwd or real in cwd.parents):
        raise UsageError(
            f"{flag} {text}: is the current folder or one of its parents; give a new folder"
        )
    for inp in inputs:
        r = _resolve(inp)
        if real == r or r in real.parents or real in r.parents:
            raise UsageError(
                f"{flag} {text}: the output overlaps the input {inp}; choose a folder outside it"
            )
    chain = [real, *real.parents]
    existing = next(p for p in chain if os.path.lexists(p))
    if existing != real and not existing.is_dir():
        raise UsageError(f"{flag} {text}: {existing} is a file, so no folder can be made in it")
    name_max = _name_max(existing if existing.is_dir() else existing.parent)
    for p in chain[1 : chain.index(existing)]:  # parents to be made
        if len(os.fsencode(p.name)) > name_max:
            raise UsageError(
                f"{flag} {text}: the folder name {p.name!r} is longer than this filesystem "
                f"allows ({name_max} bytes)"
            )
    n = len(os.fsencode(real.name))
    if n > name_max - OUTPUT_NAME_ROOM:
        raise UsageError(
            f"{flag} {text}: the name is {n} bytes; this filesystem allows "
            f"{name_max - OUTPUT_NAME_ROOM} for an output folder (NAME_MAX {name_max} less room "
            "for its temporary folder)"
        )


def check_output_dir(out: Path, force: bool, shown: Path | None = None) -> None:
    """Refuse an output that exists and is not an empty folder (unless ``force``), or that is
    a file (InputError, exit 3). ``shown``: ``out`` as the user wrote it, for messages."""
    name = shown or out
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise InputError(f"{name}: exists and is not a folder; choose another output path")
        if any(out.iterdir()) and not force:
            raise InputError(f"{name}: exists and is not empty; pass --force to replace it")


def _make_parents(folder: Path, made: list[Path]) -> None:
    """``folder`` and its missing parents created, each listed in ``made`` (outermost first)
    before it is made, so that an interruption at any point leaves ``made`` complete."""
    missing = []
    p = folder
    while not os.path.lexists(p):
        missing.append(p)
        p = p.parent
    try:
        for p in reversed(missing):
            made.append(p)
            p.mkdir()
    except OSError as e:
        raise InputError(f"{folder}: cannot create the output folder: {e.strerror or e}") from None


def _remove_empty(folders: list[Path]) -> None:
    """Remove the folders ``_make_parents`` created, innermost first, while they are empty."""
    for p in reversed(folders):
        try:
            p.rmdir()
        except FileNotFoundError:
            continue
        except OSError:
            return


#: While a finished output is renamed into place: stop signals held (see :func:`hold_signal`)
_finishing_depth = 0
_held: list[int] = []


def hold_signal(signum: int) -> bool:
    """For the CLI's SIGTERM/SIGHUP handler: True when a finished output is being renamed into
    place, in which case ``signum`` is raised again as soon as that is done (the output is then
    complete, never half-replaced); False when the handler should act now."""
    if _finishing_depth:
        _held.append(signum)
        return True
    return False


@contextmanager
def _finishing() -> Iterator[None]:
    global _finishing_depth
    _finishing_depth += 1
    try:
        yield
    finally:
        _finishing_depth -= 1
        if not _finishing_depth and _held:
            signum = _held[0]
            _held.clear()
            signal.raise_signal(signum)


#: the output locks this process holds (file descriptors): a forked child (a --jobs worker)
#: closes its inherited copies at once, so that the lock dies with the process that took it,
#: not with the last of its workers (a SIGKILLed compile's orphaned workers must not keep the
#: next compile out)
_HELD_LOCKS: set[int] = set()


def _drop_locks_in_child() -> None:
    for fd in list(_HELD_LOCKS):
        with suppress(OSError):
            os.close(fd)
    _HELD_LOCKS.clear()


os.register_at_fork(after_in_child=_drop_locks_in_child)


def lock_path(out: Path) -> Path:
    """The lock file of the output folder ``out``: ``.NAME.lock`` beside it."""
    return out.parent / f".{out.name}.lock"


def _holder(fd: int) -> str:
    """The pid the lock's holder wrote into the lock file, for messages."""
    try:
        pid = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        pid = ""
    return f"pid {pid}" if pid.isdigit() else "pid unknown"


@contextmanager
def output_lock(out: Path, force: bool = False, shown: Path | None = None) -> Iterator[None]:
    """Hold an exclusive lock on the output folder ``out`` (``flock`` on :func:`lock_path`,
    which holds the holder's pid) while the body runs; the lock file is removed afterwards.

    Another process writing ``out`` is an InputError at once (exit 3, naming the output and
    its pid); with ``force`` this waits until it is done (then replaces what it wrote: two
    writers never interleave). The holder removes the file before unlocking, so a waiter that
    then gets the lock of the removed file retries on the path's new one. ``shown``: ``out``
    as the user wrote it, for messages."""
    lock = lock_path(out)
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise InputError(f"{lock}: cannot create the output lock: {e.strerror or e}") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not force:
                    raise InputError(
                        f"{shown or out}: another maskc ({_holder(fd)}) is writing this output; "
                        "wait for it, or pass --force to replace its output once it is done"
                    ) from None
                fcntl.flock(fd, fcntl.LOCK_EX)  # Ctrl-C and SIGTERM interrupt the wait
            try:
                current = os.path.samestat(os.fstat(fd), os.stat(lock))
            except FileNotFoundError:
                current = False
        except BaseException:
            os.close(fd)
            raise
        if current:
            break
        os.close(fd)
    _HELD_LOCKS.add(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        with suppress(OSError):
            os.unlink(lock)
        _HELD_LOCKS.discard(fd)
        os.close(fd)


@contextmanager
def atomic_output_dir(
    out: str | os.PathLike, force: bool = False, inputs: tuple[Path, ...] = ()
) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``out``; rename it to ``out`` on success.

    Before anything: ``out`` is checked (:func:`check_output_path`, exit 2), its missing
    parents are made and the output is locked (:func:`output_lock`: a second writer is refused,
    or with ``force`` waits). On any exception (Ctrl-C, SIGTERM) the temporary folder and the
    parents made are removed and ``out`` is untouched. With ``force`` an existing ``out`` is
    replaced only after the new one is complete. A SIGTERM or SIGHUP that arrives during the
    final renames is held until they are done (:func:`hold_signal`).
    """
    shown = Path(out)
    check_output_path(shown, inputs)
    parent = _resolve(shown.parent)  # no ".." left in the folders to make
    out = parent / shown.name
    made: list[Path] = []
    try:
        _make_parents(parent, made)
        with output_lock(out, force, shown):
            check_output_dir(out, force, shown)
            # named before it is made, so that the cleanup knows it whenever it is interrupted;
            # under the lock, an existing folder of that name is a killed writer's debris
            tmp = parent / f".{out.name}.tmp-{secrets.token_hex(4)}"
            try:
                try:
                    os.mkdir(tmp)  # the usual permissions (the umask applies)
                except OSError as e:
                    raise InputError(
                        f"{shown}: cannot create the output folder: {e.strerror or e}"
                    ) from None
                yield tmp
                with _finishing():
                    old = None
                    if out.exists():
                        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=parent))
                        os.rename(out, old / "x")
                    os.rename(tmp, out)
                    if old is not None:
                        shutil.rmtree(old, ignore_errors=True)
            except BaseException:
                if os.path.lexists(tmp):
                    shutil.rmtree(tmp, ignore_errors=True)
                raise
    except BaseException:
        _remove_empty(made)
        raise
