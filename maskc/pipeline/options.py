"""What ``maskc compile`` is asked to do (:class:`CompileOptions`), what it reports back while
it works (:class:`Events`) and what it returns (:class:`CompileResult`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from maskc.fabric import DEFAULT_FABRIC


class Events(Protocol):
    """What the pipeline tells its caller (the CLI draws progress bars from it)."""

    def start(self, what: str, total: int) -> None: ...
    def advance(self, n: int = 1, detail: str = "") -> None: ...
    def warn(self, message: str) -> None: ...


class Quiet:
    """Events that go nowhere (library use, ``--plan-only``)."""

    def start(self, what: str, total: int) -> None:
        pass

    def advance(self, n: int = 1, detail: str = "") -> None:
        pass

    def warn(self, message: str) -> None:
        pass


@dataclass(frozen=True)
class CompileOptions:
    """Options of ``maskc compile`` (``None`` = not given: built-ins and the config decide).

    Every field but ``force``, ``jobs`` and ``dask`` is recorded in the build's manifest."""

    bits: int | None = None
    group_size: int | None = None
    method: str | None = None
    #: ``--format``: int, mxfp4 or nvfp4 (None: not given; recorded in the manifest only when
    #: given, so integer builds' manifests are as before)
    weight_format: str | None = None
    quant_config: Path | None = None
    model_config: Path | None = None
    calib: Path | None = None
    #: None: calibrate when a setting needs it (gptq, or 3-bit codes); False: never
    calibrate: bool | None = None
    #: None: the 3-bit profile keeps MIXED_4BIT_ROLES at 4 bits; False: uniform bits
    mixed: bool | None = None
    calib_tokens: int = 4096
    #: ``--calib-source``: text, random or mixed (None: text, or random without a tokenizer)
    calib_source: str | None = None
    #: tokens per calibration window
    calib_ctx: int = 512
    eval_text: Path | None = None
    eval_tokens: int = 256
    sensitivity: bool = False
    strict: bool = False
    force: bool = False
    #: a built-in fabric name or a fabric TOML path
    fabric: str = DEFAULT_FABRIC
    #: dies to spread the model over: a number, "auto" (fewest that fit) or "fabric"
    dies: int | str = "fabric"
    #: tokens of KV cache every die must hold for its layers
    context: int | None = None
    #: SRAM per die kept for LoRA adapters: bytes ("8MiB", "8000000") or a share ("25%");
    #: None: the KV cache gets ``context`` tokens and adapters the rest
    reserve_sram: str | None = None
    #: "gds" or "oas": the format of the two customizable layers
    layout_format: str = "gds"
    #: processes that write the layers (None: one per core); the output does not depend on it
    jobs: int | None = None
    #: a Dask scheduler's address (tcp://HOST:PORT): the parallel tasks run on its workers
    #: (maskc/parallel.py, docs/distributed.md); the output does not depend on it
    dask: str | None = None
    #: read the layers back and compare them with the netlist (None: on builds of at most
    #: VERIFY_AUTO_WEIGHTS weights)
    verify: bool | None = None


@dataclass
class CompileResult:
    build: Path
    report: dict
    warnings: list[str] = field(default_factory=list)
