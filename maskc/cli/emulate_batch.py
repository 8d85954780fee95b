"""``maskc emulate BUILD --prompts FILE``: several prompts run together.

What the emulator models here: the chip serves one user per pipeline slot, each with its own
KV cache in SRAM; a batch is N such users running the same masks. Each sequence keeps its own
cache and sampler, so every result (tokens, logits hash, stop reason) is bit for bit that of
its prompt run alone; what the batch shares is the emulator's work: every matrix product reads
the weights once for all the sequences' tokens (maskc/emulate/chip.py ``forward_batch``).
"""

from __future__ import annotations

from pathlib import Path

from maskc.cli.app import emit_json, err, out
from maskc.errors import InputError


def generation_json(session, g) -> dict:
    """A generation's fields in ``--json`` output (one prompt's, or each of a batch's)."""
    return {
        "prompt_tokens": g.prompt_tokens,
        "tokens": g.tokens,
        "text": session.decode(g.tokens),
        "logits_sha256": g.logits_sha256,
        "stopped_at_eos": g.stopped_at_eos,
        "stopped_at_context": g.stopped_at_context,
    }


def read_prompts(path: Path) -> list[str]:
    """The non-blank lines of ``path`` (UTF-8); InputError when there are none."""
    from maskc.fsutil import read_text

    lines = [ln.strip() for ln in read_text(path, "--prompts file").splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines:
        raise InputError(f"{path}: no prompts (one per line; blank lines are skipped)")
    return lines


def run_batch(session, path: Path, chat: bool, max_new_tokens: int, params, stop_at_eos: bool,
              context_full: str, as_json: bool) -> None:  # fmt: skip
    from maskc.emulate import backend
    from maskc.emulate.run import chat_prompt, generate_batch

    texts = read_prompts(path)
    ids = []
    for i, t in enumerate(texts, 1):
        enc = session.encode(chat_prompt(session, t) if chat else t)
        if not enc:
            raise InputError(f"{path}: prompt {i} gives no tokens")
        ids.append(enc)
    gens, prefill_s, decode_s = generate_batch(
        session, ids, max_new_tokens, params, stop_at_eos=stop_at_eos, context_full=context_full
    )
    made = sum(len(g.tokens) for g in gens)
    # the first token of each comes from the prefill; the decode steps made the rest
    tps = (made - len(gens)) / decode_s if decode_s > 0 and made > len(gens) else None
    timings = {
        "prompts": len(gens),
        "prefill_s": prefill_s,
        "decode_s": decode_s,
        "decode_tokens_per_s_total": tps,
        "kernel": backend.describe(),
    }
    results = [
        {"prompt": t, **generation_json(session, g)} for t, g in zip(texts, gens, strict=True)
    ]
    if as_json:
        emit_json({"results": results, "timings": timings})
        return
    for i, r in enumerate(results, 1):
        out.print(f"[{i}] {r['prompt']}", markup=False, highlight=False)
        out.print(r["text"], markup=False, highlight=False)
        out.print("")
    err.print(
        f"{len(gens)} prompts, {made} tokens generated; emulator: prefill "
        f"{1e3 * prefill_s:.0f} ms"
        + (f", decode {tps:.1f} tokens/s in all" if tps else "")
        + f" ({backend.describe()})",
        markup=False,
    )
