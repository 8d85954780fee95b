"""``maskc compile`` as a list of named steps (:data:`COMPILE`), and ``--plan-only`` as another
(:data:`PLAN`) made of the same steps where they overlap.

:func:`run_steps` calls each step with the values its parameters name, stores what it returns
under the names the :class:`Step` declares, and validates every output that has a
``validate()`` before the next step runs, so a defect is caught where it appears. Everything is
written into a temporary folder renamed into place only when the last step is done.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from maskc.fsutil import atomic_output_dir
from maskc.parallel import cluster
from maskc.pipeline import steps as S
from maskc.pipeline.options import CompileOptions, CompileResult, Events, Quiet


@dataclass(frozen=True)
class Step:
    """One named step: ``fn``'s parameters are read from the run's values; what it returns is
    stored under ``makes`` (several names: ``fn`` returns a tuple of that length)."""

    name: str
    fn: Callable
    makes: tuple[str, ...] = ()

    def run(self, values: dict) -> None:
        params = inspect.signature(self.fn).parameters
        out = self.fn(**{p: values[p] for p in params})
        outs = out if len(self.makes) > 1 else (out,)
        for name, value in zip(self.makes, outs, strict=True) if self.makes else ():
            check = getattr(value, "validate", None)
            if callable(check):
                check()
            values[name] = value


#: ingest (+ weights checked) -> quantize (+ report) -> place -> netlist -> layout (+ verify)
#: -> reports, manifest
COMPILE = (
    Step("fabric", S.fabric, ("fabric",)),
    Step("ingest", S.ingest, ("model", "arch", "specs")),
    Step("weights", S.weights),
    Step("settings", S.settings, ("quant_settings",)),
    Step("calibration", S.calibration, ("calib",)),
    Step("eval-text", S.eval_tokens, ("eval_ids",)),
    Step("input-hashes", S.inputs, ("input_hashes",)),
    Step("model-files", S.model_files),
    Step("quantize", S.quantize, ("quantized", "rows")),
    Step("quant-report", S.report, ("report",)),
    Step("place", S.placement, ("placement",)),
    Step("netlist", S.netlist, ("netlist", "netlist_summary")),
    Step("drop-quant", S.drop_quant),
    Step("layout", S.layout, ("banks",)),
    Step("boot", S.boot, ("boot",)),
    Step("verify", S.verify, ("layers",)),
    Step("reports", S.reports, ("full_report",)),
    Step("manifest", S.manifest, ("manifest",)),
)

#: settings, ROM size and placement from config.json alone
PLAN = (
    Step("fabric", S.fabric, ("fabric",)),
    Step("config", S.config, ("arch", "specs", "config_path", "imported_formats", "perms")),
    Step("settings", S.settings, ("quant_settings",)),
    Step("plan-rows", S.plan_rows, ("rows",)),
    Step("place", S.placement, ("placement",)),
    Step("plan", S.plan, ("plan",)),
)


def run_steps(
    steps: tuple[Step, ...], out: Path, model_path: Path, opts: CompileOptions, events: Events
) -> dict:
    """Run ``steps`` in order into the build folder ``out`` (written atomically), their parallel
    tasks on the Dask cluster ``opts.dask`` if given; return every value the steps made."""
    model_path = Path(model_path)
    with (
        atomic_output_dir(out, force=opts.force, inputs=(model_path,)) as tmp,
        cluster(opts.dask, tmp, model_path),  # None: local processes
    ):
        values = {"model_path": model_path, "opts": opts, "build": tmp, "events": events}
        for step in steps:
            step.run(values)
    return values


def compile_model(
    model_path: Path, out: Path, opts: CompileOptions, events: Events | None = None
) -> CompileResult:
    """``maskc compile``: every step of :data:`COMPILE` into the build folder ``out``."""
    v = run_steps(COMPILE, out, model_path, opts, events or Quiet())
    return CompileResult(Path(out), v["full_report"], list(v["quant_settings"].warnings))


def plan_model(model_path: Path, out: Path, opts: CompileOptions) -> dict:
    """``maskc compile --plan-only``: no weights are read; the build holds model.json,
    reports/plan.json, reports/placement.json and reports/floorplan.png, and is marked with the
    single stage "plan"."""
    return run_steps(PLAN, out, model_path, opts, Quiet())["plan"]
