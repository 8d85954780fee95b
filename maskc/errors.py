"""Error hierarchy of maskc and the exit codes the CLI maps them to.

Every error a user can cause is a :class:`MaskcError` subclass carrying a one-line message that
names the offending file, tensor or field and says what to do. ``maskc/cli/`` prints the message
(never a traceback) and exits with the class's ``exit_code``.

| code | meaning                                            | class                  |
|------|----------------------------------------------------|------------------------|
| 0    | success                                            | -                      |
| 1    | the compared builds differ (``diff-layers`` only)  | -                      |
| 2    | usage error (bad flag or argument)                 | :class:`UsageError`    |
| 3    | bad input (file missing, malformed, unsupported)   | :class:`InputError`    |
| 4    | the model does not fit the fabric                  | :class:`FitError`      |
| 5    | verification failed (hash, netlist, layers)        | :class:`VerifyError`   |
| 70   | internal error (a bug in maskc: please report it)  | -                      |
| 129  | terminated by SIGHUP (128 + 1)                     | -                      |
| 130  | interrupted (Ctrl-C)                               | -                      |
| 143  | terminated by SIGTERM (128 + 15)                   | -                      |

A signal, like an error, removes the temporary build of a command writing one.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_DIFFERS = 1
EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_FIT = 4
EXIT_VERIFY = 5
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130
#: SIGTERM and SIGHUP exit with 128 + the signal's number (143, 129), as a shell reports them
EXIT_SIGNAL_BASE = 128


class MaskcError(Exception):
    """Base class of every error a user can cause. ``str(err)`` is the one-line message."""

    exit_code: int = EXIT_INPUT

    def __init__(self, message: str) -> None:
        # One line, always: multi-line messages break log scrapers and the "one line" contract.
        super().__init__(" ".join(str(message).split()))


class UsageError(MaskcError):
    """A command-line flag or argument is wrong or contradicts another (exit 2)."""

    exit_code = EXIT_USAGE


class InputError(MaskcError):
    """An input file, folder or field is missing, malformed, hostile or unsupported (exit 3)."""

    exit_code = EXIT_INPUT


class UnsupportedError(InputError):
    """The input is well-formed but uses something maskc does not implement (exit 3)."""


class FitError(MaskcError):
    """The model does not fit the fabric: not enough tiles or SRAM (exit 4)."""

    exit_code = EXIT_FIT


class VerifyError(MaskcError):
    """A build failed verification: hashes, netlist or layers disagree (exit 5)."""

    exit_code = EXIT_VERIFY
