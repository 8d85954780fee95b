"""``maskc emulate``: a build's netlist run bit-exactly on the CPU.

The command validates its options, opens the build and hands over to one function per mode:
:func:`_generate` (the default), :func:`_perplexity` (``--ppl``) and :func:`_compare`
(``--compare`` / ``--compare-dequantized``).
"""

from __future__ import annotations

import math
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from maskc.cli.app import RichEvents, app, emit_json, enum_parser, err, out, progress_bar
from maskc.cli.show import print_modeled
from maskc.errors import InputError, UsageError


class ContextFull(StrEnum):
    """``--context-full``: what generation does when the KV cache fills up."""

    refuse = "refuse"
    stop = "stop"


def _ids_option(value: str) -> list[int]:
    """``--tokens``: ids separated by commas or spaces."""
    try:
        ids = [int(v) for v in value.replace(",", " ").split()]
    except ValueError:
        raise UsageError(f"--tokens must be token ids separated by commas, got {value!r}") from None
    if not ids:
        raise UsageError("--tokens is empty")
    big = next((i for i in ids if not 0 <= i < 1 << 31), None)
    if big is not None:
        raise UsageError(f"--tokens: {str(big)[:40]} is not a token id (0 to 2^31 - 1)")
    return ids


class _Stream:
    """Prints generated text as it comes, holding back incomplete UTF-8 sequences."""

    def __init__(self, session) -> None:
        self.session = session
        self.ids: list[int] = []
        self.shown = ""

    def __call__(self, tok: int) -> None:
        self.ids.append(tok)
        text = self.session.decode(self.ids)
        if text.endswith("\ufffd"):
            return
        sys.stdout.write(text[len(self.shown) :])
        sys.stdout.flush()
        self.shown = text


def _modeled_us(perf: dict | None, ctx: int) -> float | None:
    """Modeled chip latency per token (us) at context ``ctx``: the model is linear in context."""
    if not perf:
        return None
    a, b = perf["at_context_1"], perf["at_context"]
    if b["context"] == a["context"]:
        return a["latency_us"]
    slope = (b["latency_us"] - a["latency_us"]) / (b["context"] - a["context"])
    return a["latency_us"] + slope * (ctx - 1)


@app.command()
def emulate(
    build: Annotated[
        Path, typer.Argument(metavar="BUILD", help="A build folder written by maskc compile.")
    ],
    prompt: Annotated[
        str | None, typer.Option("--prompt", "-p", help="Text to continue (or to --compare on).")
    ] = None,
    tokens: Annotated[
        str | None,
        typer.Option("--tokens", help="Token ids instead of --prompt, e.g. 1,2,3 (no tokenizer)."),
    ] = None,
    prompts: Annotated[
        Path | None,
        typer.Option(
            "--prompts",
            metavar="FILE",
            help="Several prompts at once: one per line of this UTF-8 file (blank lines "
            "skipped), each in its own KV cache, all sharing each read of the weights; every "
            "result is exactly that of its prompt run alone. --chat wraps each line.",
        ),
    ] = None,
    chat: Annotated[
        bool,
        typer.Option(
            "--chat",
            help="Wrap --prompt as one user turn with the model's chat template (rendered in a "
            "sandbox with limits on work, size and recursion).",
        ),
    ] = False,
    max_new_tokens: Annotated[
        int, typer.Option("--max-new-tokens", "-n", min=1, help="Tokens to generate at most.")
    ] = 64,
    temperature: Annotated[
        float,
        typer.Option(
            "--temperature",
            min=0.0,
            help="0 is greedy (ties: lowest id); else seeded integer sampling (docs/numerics.md).",
        ),
    ] = 0.0,
    top_k: Annotated[
        int, typer.Option("--top-k", min=0, help="Keep the k likeliest (0: off).")
    ] = 0,
    top_p: Annotated[
        float, typer.Option("--top-p", min=0.0, max=1.0, help="Nucleus sampling mass (1: off).")
    ] = 1.0,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed of the SplitMix64 PRNG.")] = 0,
    ignore_eos: Annotated[
        bool, typer.Option("--ignore-eos", help="Do not stop at the end-of-sequence token.")
    ] = False,
    ppl: Annotated[
        Path | None,
        typer.Option("--ppl", help="Perplexity of this UTF-8 text (fixed protocol, see --help)."),
    ] = None,
    ctx: Annotated[int, typer.Option("--ctx", min=2, help="--ppl window length in tokens.")] = 512,
    stride: Annotated[
        int | None,
        typer.Option("--stride", min=1, help="--ppl window step (default --ctx: no overlap)."),
    ] = None,
    max_tokens: Annotated[
        int | None,
        typer.Option("--max-tokens", min=2, help="--ppl: use only the first N tokens of the text."),
    ] = None,
    compare: Annotated[
        Path | None,
        typer.Option(
            "--compare",
            metavar="MODEL_DIR",
            help="Also run the float32 reference of this original model on the same "
            "tokens: top-1 agreement, KL and max logit error per position.",
        ),
    ] = None,
    model_config: Annotated[
        Path | None,
        typer.Option(
            "--model-config",
            help="config.json for --compare given a single .safetensors file.",
        ),
    ] = None,
    compare_dequantized: Annotated[
        bool,
        typer.Option(
            "--compare-dequantized",
            help="Like --compare, with the build's own dequantized weights as the float "
            "reference: isolates the integer datapath.",
        ),
    ] = False,
    context: Annotated[
        int | None,
        typer.Option(
            "--context",
            min=1,
            help="KV-cache tokens to emulate (default: the build's; at most what the "
            "fabric's SRAM holds, else exit 4).",
        ),
    ] = None,
    adapter: Annotated[
        list[Path] | None,
        typer.Option(
            "--adapter",
            metavar="DIR",
            help="A PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors) "
            "to load into the chip's SRAM; repeat to stack adapters. The masks are unchanged.",
        ),
    ] = None,
    context_full: Annotated[
        ContextFull,
        typer.Option(
            "--context-full",
            parser=enum_parser(ContextFull, "--context-full {value!r}: choose refuse or stop"),
            help="When prompt + new tokens exceed the KV cache: 'refuse' (exit 4 before "
            "running) or 'stop' (generate until the cache is full). A prompt longer than the "
            "cache is always refused.",
        ),
    ] = ContextFull.refuse,
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads",
            min=1,
            help="CPU threads (default: the CPUs this process may use: its affinity, "
            "capped by its cgroup's CPU quota). Idle threads sleep after 50 µs, and while "
            "other processes keep the CPUs busy the products run on one thread (faster then).",
        ),
    ] = None,
    logits_out: Annotated[
        Path | None,
        typer.Option(
            "--logits-out",
            help="(generate) Also write the int32 logits of EVERY position run (the prompt's "
            "and each decode step's) to this .safetensors file: tensor 'logits' [positions, "
            "vocab], 'tokens' [positions] the ids fed. For RTL comparisons (docs/rtl.md).",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object on stdout.")
    ] = False,
) -> None:
    """Run a build's netlist, bit-exactly, on the CPU: generate, score a text, or compare.

    Loads only BUILD (netlist + tokenizer; hashes checked, exit 5 on a change) and computes
    exactly the integer arithmetic of docs/numerics.md. Modes:

    generate (default): --prompt TEXT [--chat] or --tokens IDS; greedy unless --temperature.
    Tokens stream as they come; --json gives prompt_tokens, tokens, text, logits_sha256 (the
    int32 logits of every generated position, little-endian) and timings.

    --prompts FILE: one prompt per line, run together (each in its own KV cache, each result
    exactly what it gives alone); --json gives results per prompt and the total decode rate.

    --ppl FILE --ctx 512 [--stride N]: perplexity with a fixed protocol: windows of ctx tokens
    from position 0, no BOS added, every position but a window's first scored.

    --compare MODEL_DIR (or a .safetensors file with --model-config) | --compare-dequantized:
    float32 reference vs the chip on the prompt.

    --adapter DIR (repeatable): LoRA adapters loaded into SRAM in the integer format of
    docs/numerics.md; checked against the build's model (exit 3) and the SRAM left beside the
    KV cache (exit 4 with the numbers). --compare merges them into the float reference.

    Every run also prints the modeled chip time per token for this build (docs/fabric.md).
    """
    from maskc.emulate.run import open_session

    modes = sum([ppl is not None, compare is not None or compare_dequantized])
    if modes > 1:
        raise UsageError("choose one of --ppl and --compare/--compare-dequantized")
    if compare is not None and compare_dequantized:
        raise UsageError("--compare and --compare-dequantized contradict each other")
    if model_config is not None and compare is None:
        raise UsageError("--model-config is for --compare MODEL (a single .safetensors file)")
    if prompt is not None and tokens is not None:
        raise UsageError("give --prompt or --tokens, not both")
    if prompts is not None and (
        prompt is not None or tokens is not None or ppl is not None or modes
    ):
        raise UsageError("--prompts runs its own prompts; drop --prompt/--tokens/--ppl/--compare")
    if chat and prompt is None and prompts is None:
        raise UsageError("--chat needs --prompt or --prompts")
    if ppl is not None and (prompt is not None or tokens is not None):
        raise UsageError("--ppl scores a file; drop --prompt/--tokens")
    if stride is not None and stride > ctx:
        raise UsageError(f"--stride {stride} is longer than --ctx {ctx}: windows would skip tokens")
    for flag, v in (("--temperature", temperature), ("--top-p", top_p)):
        if not math.isfinite(v):
            raise UsageError(f"{flag} must be a finite number, got {v}")
    if logits_out is not None:
        if ppl is not None or prompts is not None or modes:
            raise UsageError("--logits-out works when generating (--prompt or --tokens)")
        from maskc.fsutil import check_output_file

        check_output_file(logits_out, "--logits-out")
    from maskc.emulate import backend
    from maskc.parallel import usable_cpus

    backend.set_threads(threads or usable_cpus())
    with progress_bar(in_bytes=False) as prog:
        session = open_session(build, context, RichEvents(prog), adapter or [])
    perf = session.modeled()
    loaded = _adapters_json(session)
    if loaded and not as_json:
        for a in loaded:
            err.print(
                f"adapter {a['path']}: rank {a['rank']}, {a['modules']} modules, "
                f"{a['sram_bytes']:,} bytes of SRAM",
                markup=False,
            )

    if ppl is not None:
        _perplexity(session, ppl, ctx, stride, max_tokens, perf, loaded, as_json)
        return
    if prompts is not None:
        from maskc.cli.emulate_batch import run_batch
        from maskc.emulate.sampling import SamplingParams

        params = SamplingParams(temperature, top_k, top_p, seed)
        run_batch(session, prompts, chat, max_new_tokens, params, not ignore_eos,
                  context_full.value, as_json)  # fmt: skip
        return
    ids = _prompt_ids(session, prompt, tokens, chat)
    if compare is not None or compare_dequantized:
        _compare(session, ids, compare, loaded, as_json, model_config)
        return
    from maskc.emulate.sampling import SamplingParams

    params = SamplingParams(temperature, top_k, top_p, seed)
    stop_at_eos = not ignore_eos
    full = context_full.value
    _generate(session, ids, max_new_tokens, params, stop_at_eos, full, perf, loaded, as_json,
              logits_out)  # fmt: skip


def _adapters_json(session) -> list[dict]:
    return [
        {
            "path": str(a.path),
            "rank": a.rank,
            "alpha": a.alpha,
            "use_rslora": a.use_rslora,
            "modules": len(a.modules),
            "sram_bytes": a.sram_bytes(),
        }
        for a in session.chip.adapters
    ]


def _prompt_ids(session, prompt: str | None, tokens: str | None, chat: bool) -> list[int]:
    """The token ids to run: ``--tokens``, or ``--prompt`` (with ``--chat``) encoded."""
    from maskc.emulate.run import chat_prompt

    if tokens is not None:
        return _ids_option(tokens)
    text = prompt if prompt is not None else ""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # bytes that are not UTF-8 arrive as lone surrogates
        raise UsageError("--prompt is not valid UTF-8 text") from None
    if chat:
        text = chat_prompt(session, text)
    if not text:
        raise UsageError("give --prompt TEXT or --tokens IDS")
    ids = session.encode(text)
    if not ids:
        raise UsageError("the prompt gives no tokens")
    return ids


def _perplexity(
    session,
    ppl: Path,
    ctx: int,
    stride: int | None,
    max_tokens: int | None,
    perf: dict | None,
    loaded: list[dict],
    as_json: bool,
) -> None:
    """``--ppl FILE``: perplexity of the text with the fixed protocol (windows of ``ctx``)."""
    import time

    from maskc.emulate.run import perplexity
    from maskc.fsutil import read_text

    ids = session.encode(read_text(ppl, "--ppl text"))
    if max_tokens is not None:
        ids = ids[:max_tokens]
    if len(ids) < 2:
        raise InputError(f"{ppl}: fewer than 2 tokens to score")
    t0 = time.perf_counter()
    with progress_bar(in_bytes=False) as prog:
        task = prog.add_task("scoring windows", total=None)
        res = perplexity(
            session,
            ids,
            ctx,
            stride,
            lambda done, total: prog.update(task, completed=done, total=total),
        )
    wall = time.perf_counter() - t0
    modeled = _modeled_us(perf, ctx)
    if as_json:
        emit_json(
            {
                "ppl": res.ppl,
                "tokens_scored": res.tokens_scored,
                "tokens": len(ids),
                "ctx": ctx,
                "stride": stride or ctx,
                "wall_s": wall,
                "modeled_chip_us_per_token": modeled,
                "adapters": loaded,
            }
        )
        return
    out.print(
        f"perplexity {res.ppl:.4f} over {res.tokens_scored:,} scored tokens "
        f"({len(ids):,} tokens, windows of {ctx}); emulator {wall:.1f} s "
        f"({len(ids) / wall:,.0f} tokens/s)"
    )
    print_modeled(modeled)


def _compare(
    session,
    ids: list[int],
    model_dir: Path | None,
    loaded: list[dict],
    as_json: bool,
    config: Path | None = None,
) -> None:
    """``--compare MODEL_DIR`` / ``--compare-dequantized`` (``model_dir`` None): the float32
    reference against the chip on ``ids``, per position."""
    from maskc.emulate.run import compare

    res = compare(session, ids, model_dir, config)
    if as_json:
        emit_json({"prompt_tokens": ids, **res, "adapters": loaded})
        return
    out.print(
        f"chip vs float32 reference ({res['reference']}) on {len(ids)} tokens: top-1 "
        f"agreement {100 * res['top1_agreement']:.1f}%, mean KL {res['kl_mean']:.5f} "
        f"nats (max {res['kl_max']:.5f}), max |logit error| "
        f"{res['max_logit_error']:.4f}"
    )
    t = Table("position", "token", "top-1 agrees", "KL", "max |logit error|")
    for row in res["per_position"]:
        t.add_row(
            str(row["pos"]),
            str(ids[row["pos"]]),
            "yes" if row["top1_agree"] else "no",
            f"{row['kl']:.5f}",
            f"{row['max_logit_error']:.4f}",
        )
    out.print(t)


def _generate(
    session,
    ids: list[int],
    max_new_tokens: int,
    params,
    stop_at_eos: bool,
    context_full: str,
    perf: dict | None,
    loaded: list[dict],
    as_json: bool,
    logits_out: Path | None = None,
) -> None:
    """The default mode: up to ``max_new_tokens`` after ``ids``, streamed on stdout (or one
    JSON object), the timings and the modeled chip time on stderr."""
    from maskc.emulate.run import generate

    keep = logits_out is not None
    kept: list | None = [] if keep else None
    pre: list | None = [] if keep else None
    stream = None if as_json else _Stream(session)
    g = generate(
        session,
        ids,
        max_new_tokens,
        params,
        stream,
        stop_at_eos=stop_at_eos,
        context_full=context_full,
        keep_logits=kept,
        prompt_logits=pre,
    )
    if keep:
        _write_logits(logits_out, ids, g.tokens, pre + kept[1:])
    n = len(g.tokens)
    decode_tps = (n - 1) / g.decode_s if n > 1 and g.decode_s > 0 else None
    modeled = _modeled_us(perf, len(ids) + n)
    from maskc.emulate import backend

    timings = {
        "prefill_s": g.prefill_s,
        "decode_s": g.decode_s,
        "decode_tokens_per_s": decode_tps,
        "modeled_chip_us_per_token": modeled,
        "kernel": backend.describe(),
    }
    if as_json:
        from maskc.cli.emulate_batch import generation_json

        emit_json({**generation_json(session, g), "adapters": loaded, "timings": timings})
        return
    sys.stdout.write("\n")
    err.print(
        f"{len(ids)} prompt tokens, {n} generated{' (stopped at EOS)' if g.stopped_at_eos else ''}"
        + (
            f" (stopped: the KV cache of {session.chip.context} tokens is full)"
            if g.stopped_at_context
            else ""
        )
        + f"; emulator: prefill {1e3 * g.prefill_s:.0f} ms"
        + (f", decode {decode_tps:.1f} tokens/s" if decode_tps else "")
        + f"; logits_sha256 {g.logits_sha256[:16]}",
        markup=False,
    )
    print_modeled(modeled, to=err)


def _write_logits(path: Path, prompt: list[int], tokens: list[int], rows: list) -> None:
    """``--logits-out``: the logits of every position run and the ids fed there (written to a
    temporary file beside ``path``, then renamed: complete or absent)."""
    import os

    import numpy as np

    from maskc.safetensors_io import write_safetensors

    fed = list(prompt) + list(tokens[: len(rows) - len(prompt)])
    arrays = {"logits": np.stack(rows).astype(np.int32), "tokens": np.asarray(fed, np.int64)}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write_safetensors(tmp, arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
