"""The ``maskc`` command line: the only package that talks to typer and rich.

Each command parses its flags, calls into the stage modules and renders the result. Errors are
mapped to exit codes in one place, :func:`main` (see :mod:`maskc.errors` for the table): a
:class:`~maskc.errors.MaskcError` prints ``maskc: error: <one line>`` on stderr, never a
traceback. Set ``MASKC_DEBUG=1`` to get tracebacks for internal errors.

Modules: :mod:`~maskc.cli.app` (the typer app, consoles, progress bars, :func:`main`),
:mod:`~maskc.cli.progress` (bars on a terminal, plain lines when piped, the ETA),
:mod:`~maskc.cli.show` (the renderers), and one per command group, each registering on the app
when imported below, in the order ``maskc --help`` lists them: ``inspect``, ``compile``,
``layers`` (verify, render, diff-layers), ``report``, ``emulate``, ``testmodel``, ``fabric``,
``rtl`` (export-rtl, cosim).
"""

from maskc.cli.app import app, main

# Importing a command module registers its commands; `maskc --help` lists them in this order.
# isort: off
from maskc.cli import inspect, compile, layers, report, emulate, testmodel, fabric, rtl  # noqa: F401
# isort: on

__all__ = ["app", "main"]
