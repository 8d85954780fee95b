"""The typer app every command registers on, the shared consoles and progress bars, and
:func:`main`, which maps errors to exit codes in one place (see :mod:`maskc.errors`)."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, TaskID, TaskProgressColumn, TextColumn

from maskc import __version__
from maskc.cli.progress import EtaColumn, StepProgress, progress_off
from maskc.errors import (
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_SIGNAL_BASE,
    EXIT_USAGE,
    MaskcError,
    UsageError,
)
from maskc.fsutil import hold_signal

app = typer.Typer(
    name="maskc",
    help=(
        "maskc compiles a Hugging Face LLM (safetensors) into the two customizable mask layers "
        "(a via layer and a metal layer) of a mask-ROM inference ASIC.\n\n"
        "Exit codes: 0 ok, 1 differs (diff-layers), 2 usage, 3 bad input, 4 does not fit the "
        "fabric, 5 verification failed, 70 internal error, 130 interrupted (Ctrl-C), 143 "
        "terminated (SIGTERM; 129 SIGHUP)."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

# Piped output (CI logs, files) gets a wide fixed width instead of rich's 80-column default.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def _version(value: bool) -> None:
    if value:
        out.print(f"maskc {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Root options."""


E = TypeVar("E", bound=Enum)


def enum_parser(kind: type[E], message: str) -> Callable[[str], E]:
    """A typer ``parser`` for an option whose choices are the Enum ``kind`` (``--help`` shows
    them): the member of the value given, else a :class:`UsageError` (exit 2, one line)
    ``message``, formatted with ``value``."""

    def parse(value: str) -> E:
        try:
            return kind(value)
        except ValueError:
            raise UsageError(message.format(value=value)) from None

    return parse


def progress_bar(transient: bool = True, in_bytes: bool = True) -> StepProgress:
    """Progress on stderr: rich bars on a terminal, plain log lines when stderr is not one
    (:mod:`maskc.cli.progress`), nothing when ``MASKC_PROGRESS=0``; totals in bytes, or shown
    as a percentage."""
    off = progress_off()
    bars = err.is_terminal and not off
    return StepProgress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        DownloadColumn() if in_bytes else TaskProgressColumn(),
        EtaColumn(),
        console=err,
        transient=transient,
        disable=not bars,
        lines=not bars and not off,
        in_bytes=in_bytes,
    )


def emit_json(obj: object) -> None:
    """``obj`` as indented JSON on stdout (key order kept)."""
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False) + "\n")


class RichEvents:
    """Pipeline events -> one progress bar (or start, progress and end lines) per stage,
    warnings on stderr. A stage ends when it reaches its total or the next one starts."""

    def __init__(self, prog: StepProgress) -> None:
        self.prog = prog
        self.task: TaskID | None = None
        self.what = ""

    def start(self, what: str, total: int) -> None:
        if self.task is not None:
            self.prog.finish(self.task)
        self.what = what
        self.task = self.prog.add_task(what, total=total)

    def advance(self, n: int = 1, detail: str = "") -> None:
        if self.task is not None:
            desc = f"{self.what} {detail}" if detail else self.what
            self.prog.update(self.task, advance=n, description=desc)

    def warn(self, message: str) -> None:
        err.print(f"maskc: warning: {message}", markup=False)


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived: unwinds like Ctrl-C's KeyboardInterrupt (a temporary build
    is removed on the way out), then exits 128 + the signal's number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


#: The signals handled like Ctrl-C: what timeout, systemd and CI send, and a closed terminal.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


@contextmanager
def _stop_signals() -> Iterator[None]:
    """While a command runs: SIGTERM and SIGHUP raise :class:`Terminated` in this process. A
    forked worker (``--jobs``) that inherits the handler dies of the signal as it would have."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread (an embedding caller)
        return
    pid = os.getpid()

    def handler(signum, _frame):
        if os.getpid() != pid:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        if hold_signal(signum):  # a finished build is being renamed into place: then
            return
        raise Terminated(signum)

    old = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``maskc`` console script: run the app and map errors to exit codes."""
    command = typer.main.get_command(app)
    try:
        with _stop_signals():
            rc = command.main(args=argv, prog_name="maskc", standalone_mode=False)
    except Terminated as e:
        err.print(f"maskc: terminated ({signal.Signals(e.signum).name})")
        sys.exit(EXIT_SIGNAL_BASE + e.signum)
    except MaskcError as e:
        err.print(f"maskc: error: {e}", markup=False)
        sys.exit(e.exit_code)
    except typer.Abort:
        err.print("maskc: interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.TyperException as e:  # click's usage errors (typer vendors click): one line
        fmt = getattr(e, "format_message", None)
        msg = " ".join((fmt() if fmt else str(e)).split())
        ctx = getattr(e, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        err.print(f"maskc: error: {msg}{hint}", markup=False, soft_wrap=True)
        sys.exit(getattr(e, "exit_code", EXIT_USAGE) or EXIT_USAGE)
    except KeyboardInterrupt:
        err.print("maskc: interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except BrokenPipeError:
        sys.exit(0)
    except Exception as e:  # a bug in maskc, not a user mistake
        if os.environ.get("MASKC_DEBUG"):
            traceback.print_exc()
        err.print(
            f"maskc: internal error: {type(e).__name__}: {e} (this is a bug; rerun with "
            "MASKC_DEBUG=1 for a traceback and report it)",
            markup=False,
        )
        sys.exit(EXIT_INTERNAL)
    sys.exit(rc if isinstance(rc, int) else 0)
