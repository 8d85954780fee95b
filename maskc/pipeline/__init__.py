"""``maskc compile``: the stages in order, each verified, into an atomically written build.

:mod:`~maskc.pipeline.options` holds the options and events, :mod:`~maskc.pipeline.steps` the
named steps (one function each), :mod:`~maskc.pipeline.runner` the step lists of a compile and
of ``--plan-only`` and the runner. The build layout is in docs/architecture.md; the same inputs
and options give a byte-identical build.
"""

from maskc.pipeline.options import CompileOptions, CompileResult, Events, Quiet
from maskc.pipeline.runner import COMPILE, PLAN, Step, compile_model, plan_model, run_steps

__all__ = [
    "COMPILE",
    "PLAN",
    "CompileOptions",
    "CompileResult",
    "Events",
    "Quiet",
    "Step",
    "compile_model",
    "plan_model",
    "run_steps",
]
