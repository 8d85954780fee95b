"""``maskc export-rtl`` and ``maskc cosim``: the netlist as Verilog, and that Verilog in an RTL
simulator against the emulator (docs/rtl.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from maskc.cli.app import RichEvents, app, emit_json, out, progress_bar
from maskc.errors import EXIT_VERIFY

_JSON = typer.Option("--json", help="Print machine-readable JSON on stdout instead.")


@app.command("export-rtl")
def export_rtl(
    build: Annotated[Path, typer.Argument(metavar="BUILD", help="A build folder (maskc compile).")],
    output: Annotated[
        Path,
        typer.Option("--output", "-o", help="The folder to write (must not exist; see --force)."),
    ],
    force: Annotated[bool, typer.Option("--force", help="Replace an existing folder.")] = False,
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """Write the build's netlist as Verilog-2005 for RTL simulators and synthesis.

    The personalization (one module per matrix and per tile kind, the mask-ROM contents as
    $readmemh files under rom/), behavioural models of the base die's fixed-function units
    (units/: RMSNorm, RoPE, attention with its KV cache SRAM, SwiGLU, Q8, argmax; marked as
    base-die models), their tables (tables/), the top module maskc_top generated from the
    netlist's op list (token and position in, int32 logits and the greedy next token out, a
    start/busy/done handshake), files.f and manifest.json (every file's SHA-256, the netlist's
    and the build's hashes, the module hierarchy). Deterministic: the same build gives the same
    bytes. Reads only the netlist. Ops the RTL does not implement yet (mixtures of experts,
    head norms, input permutations, FP4, several dies) are refused (exit 3); docs/rtl.md.
    """
    from maskc.rtl.export import export_rtl as run

    with progress_bar(in_bytes=False) as prog:
        man = run(build, output, force=force, progress=RichEvents(prog))
    if as_json:
        emit_json({"output": str(output), **man})
        return
    mods = man["modules"]["maskc_top"]
    out.print(
        f"wrote {output}: {len(man['files'])} files, top {man['top']}, "
        f"{len(mods['personalization'])} personalization modules, "
        f"{len(mods['base_die'])} base-die unit models; KV cache {man['context']} positions"
    )
    out.print(f"file list: {output}/files.f (run simulators in {output}: $readmemh paths)")


@app.command()
def cosim(
    build: Annotated[Path, typer.Argument(metavar="BUILD", help="A build folder (maskc compile).")],
    tokens: Annotated[str, typer.Option("--tokens", help="The prompt as token ids, e.g. 1,2,3.")],
    max_new_tokens: Annotated[
        int, typer.Option("--max-new-tokens", "-n", help="Tokens to generate (greedy).")
    ] = 4,
    simulator: Annotated[
        str, typer.Option("--simulator", help="verilator or icarus.")
    ] = "verilator",
    rtl: Annotated[
        Path | None,
        typer.Option(
            "--rtl",
            help="A folder maskc export-rtl wrote for this build (default: "
            "export to a temporary folder).",
        ),
    ] = None,
    workdir: Annotated[
        Path | None,
        typer.Option(
            "--workdir",
            help="Build and run the simulation in this folder and keep "
            "it (simulator logs, the testbench's results); default: a temporary one.",
        ),
    ] = None,
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """Run the build's RTL in an RTL simulator and the emulator on the same tokens; compare.

    The RTL (cocotb testbench on Verilator or Icarus Verilog) runs the prompt position by
    position, then generates greedily with its own argmax; the emulator does the same. The
    generated tokens and the int32 logits of EVERY position are compared bit for bit; on a
    difference the output of every op at every position (which the testbench records) is
    compared too, and the first position and op that differ are named (slot, field, index, RTL
    value, emulator value). Exit 0 when equal, 5 on a mismatch, 3
    when the simulator or cocotb is missing (the message says what to install). Needs
    pip install 'maskc[rtl]' (and Debian's iverilog for --simulator icarus).
    """
    from maskc.rtl.cosim import cosim as run

    with progress_bar(in_bytes=False) as prog:
        res = run(build, tokens, max_new_tokens, simulator, rtl, RichEvents(prog), workdir)
    if as_json:
        emit_json(res.to_json())
    elif res.equal:
        out.print(
            f"equal: {res.simulator} RTL and emulator agree on {res.positions} positions "
            f"({res.positions * res.vocab:,} int32 logits) and {len(res.rtl_tokens)} generated "
            f"tokens {res.rtl_tokens}; {sum(res.cycles):,} cycles"
        )
    else:
        m = res.mismatch
        where = (
            f"op {m['op']} ({m['kind']}) slot {m['slot']} {m['field']}[{m['index']}]"
            if "op" in m
            else f"{m['slot']}[{m['index']}]"
        )
        if m.get("tiles"):
            where += f" = matrix {m['matrix']} row {m['row']}, tiles {', '.join(m['tiles'])}"
        out.print(
            f"MISMATCH at position {m['position']}: {where}: RTL {m['rtl']}, emulator "
            f"{m['emulator']} ({res.simulator})"
        )
    if not res.equal:
        raise typer.Exit(EXIT_VERIFY)
