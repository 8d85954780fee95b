"""``maskc emulate``: generation, perplexity and comparison runs on a build's netlist.

Everything here works from the build alone (``BUILD/netlist`` and its tokenizer); only
``compare`` with a model folder reads original weights, for the float32 reference.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from maskc.build import Build, open_build
from maskc.emulate.chip import Chip
from maskc.emulate.sampling import Sampler, SamplingParams
from maskc.errors import FitError, InputError, UsageError, VerifyError
from maskc.netlist import Netlist, load_netlist
from maskc.tokenizer import ModelTokenizer, open_tokenizer


@dataclass
class Session:
    build: Build
    netlist: Netlist
    chip: Chip
    tokenizer: ModelTokenizer | None

    @property
    def signal_frac(self) -> int:
        return self.chip.F

    def encode(self, text: str) -> list[int]:
        if self.tokenizer is None:
            raise InputError(f"{self.build.path}: the build has no tokenizer; give token ids")
        return self.tokenizer.encode(text)

    def decode(self, ids: list[int]) -> str:
        if self.tokenizer is None:
            return ""
        return self.tokenizer.decode(ids)

    def modeled(self) -> dict | None:
        """The compile report's modeled chip performance (docs/fabric.md), if present."""
        if "reports/placement.json" not in self.build.manifest["files"]:
            return None
        return self.build.json("reports/placement.json").get("performance")


def open_session(
    path: Path, context: int | None = None, progress=None, adapters: list[Path] = ()
) -> Session:
    """Open a build (hashes checked: exit 5), its netlist and tokenizer; prepare the chip with
    ``adapters`` (PEFT LoRA folders) loaded into its SRAM.

    The files' hashes are checked on a second thread while the chip loads (hashlib releases
    the GIL); the session is returned only when they match, and a mismatch wins over any
    error the loading met. Matrices laid out from the tiles go to the layout cache
    (:mod:`maskc.emulate.layoutcache`) only after that check."""
    from concurrent.futures import ThreadPoolExecutor

    from maskc.adapters import load_adapter
    from maskc.build import verify_hashes

    loaded = [load_adapter(p) for p in adapters]
    b = open_build(path, check_hashes=False)
    if loaded:
        from maskc.adapters import check_folds, folds_of

        for ad in loaded:
            check_folds(ad, folds_of(b))
    with ThreadPoolExecutor(2) as pool:
        check = pool.submit(verify_hashes, b.path, b.manifest["files"])
        pool.submit(_start_numba)
        try:
            nl, tok, chip, key = _load_session(b, context, progress, loaded)
        finally:
            check.result()  # VerifyError (exit 5) replaces whatever the loading raised
    if not chip.from_cache:
        from maskc.emulate import layoutcache

        layoutcache.save(key, {n: chip.mats[n] for n in sorted(chip.mats)})
    return Session(b, nl, chip, tok)


def _check_boot(nl, path: Path) -> None:
    """The chip runs on the values of its SRAM boot image (maskc/boot.py): a netlist whose
    params or norm constants disagree with the image is a corrupt build (exit 5), so an edit
    of params.safetensors alone never changes the logits silently. A few hundred kilobytes;
    builds of netlist version < 4 have no image."""
    if nl.doc["version"] < 4:
        return
    from maskc.boot import verify_boot

    problems = verify_boot(nl, path, limit=1)
    if problems:
        raise VerifyError(f"{path}: {problems[0]}")


def _start_numba() -> None:
    """Loads one cached kernel: numba's first load sets up its compiler target (~0.3 s), which
    then overlaps the hash check and the netlist's loading instead of following them."""
    from maskc.emulate import kernels as K

    K.bitlen(np.int64(1))


def _load_session(b, context, progress, loaded):
    nl = load_netlist(b.path)
    _check_boot(nl, b.path)
    tok = None
    t = nl.doc.get("tokenizer")
    if t:
        tok = open_tokenizer(nl.path / t["file"])
    from maskc.emulate import backend, layoutcache

    key = layoutcache.key(b.manifest, "c" if backend.use_c() else "numba")
    chip = Chip(nl, context=context, progress=progress, adapters=loaded, cache_key=key)
    return nl, tok, chip, key


def chat_prompt(session: Session, user_text: str) -> str:
    """``user_text`` rendered with the model's chat template (one user turn, generation prompt
    added), in the bounded sandbox of :mod:`maskc.chattemplate` (exit 3 naming the template)."""
    from maskc.chattemplate import render_chat

    t = session.netlist.doc.get("tokenizer") or {}
    template = t.get("chat_template")
    if not template:
        raise InputError(f"{session.build.path}: the model has no chat template; drop --chat")
    where = f"{session.netlist.path / 'netlist.json'}: chat_template (from tokenizer_config.json)"
    messages = [{"role": "user", "content": user_text}]
    return render_chat(template, where, messages, bos_token="", eos_token="")


@dataclass
class Generation:
    prompt_tokens: list[int]
    tokens: list[int] = field(default_factory=list)
    logits_sha256: str = ""
    prefill_s: float = 0.0
    decode_s: float = 0.0
    stopped_at_eos: bool = False
    stopped_at_context: bool = False


def generate(
    session: Session,
    prompt: list[int],
    max_new_tokens: int,
    params: SamplingParams,
    on_token: Callable[[int], None] | None = None,
    stop_at_eos: bool = True,
    keep_logits: list | None = None,
    context_full: str = "refuse",
    prompt_logits: list | None = None,
) -> Generation:
    """Prefill ``prompt`` then decode up to ``max_new_tokens`` tokens. ``logits_sha256`` hashes
    the int32 logits of every generated position, little-endian, in order (docs/numerics.md).

    The KV cache holds ``chip.context`` tokens (the last generated token is never stored). A
    prompt longer than that is refused (FitError, exit 4); so is a run whose prompt plus
    ``max_new_tokens - 1`` exceeds it, unless ``context_full == "stop"``: generation then
    stops when the cache is full (``stopped_at_context``). Nothing is ever truncated.

    ``keep_logits``: gets the logits of every generated position (the prompt's last, then each
    decode step); ``prompt_logits``: the logits of every prompt position (int32 [vocab] each),
    so ``prompt_logits + keep_logits[1:]`` are those of every position run."""
    chip = session.chip
    _check_room(chip, prompt, max_new_tokens, context_full)
    chip.reset()
    num = session.netlist.doc["numerics"]
    sampler = Sampler(params, num["signal_frac"], num["log2e_q16"], chip.params["lut.exp2"])
    eos = (session.netlist.doc.get("tokenizer") or {}).get("eos_token_id")
    g = Generation(list(prompt))
    h = hashlib.sha256()
    t0 = time.perf_counter()
    rows = chip.forward(list(prompt))
    if prompt_logits is not None:
        prompt_logits.extend(r.copy() for r in rows)
    logits = rows[-1]
    g.prefill_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    while True:
        h.update(np.ascontiguousarray(logits, dtype="<i4").tobytes())
        if keep_logits is not None:
            keep_logits.append(logits.copy())
        tok = sampler(logits)
        g.tokens.append(tok)
        if on_token:
            on_token(tok)
        if _done(g, tok, eos, stop_at_eos, max_new_tokens, chip.pos, chip.context):
            break
        logits = chip.forward([tok])[0]
    g.decode_s = time.perf_counter() - t1
    g.logits_sha256 = h.hexdigest()
    return g


def _done(g: Generation, tok: int, eos, stop_at_eos: bool, n: int, pos: int, ctx: int) -> bool:
    """Whether generation ``g`` (``tok`` just sampled, its cache at ``pos``) stops here."""
    if stop_at_eos and eos is not None and tok == eos:
        g.stopped_at_eos = True
        return True
    if len(g.tokens) >= n:
        return True
    if pos >= ctx:
        g.stopped_at_context = True
        return True
    return False


def generate_batch(
    session: Session,
    prompts: list[list[int]],
    max_new_tokens: int,
    params: SamplingParams,
    stop_at_eos: bool = True,
    context_full: str = "refuse",
) -> tuple[list[Generation], float, float]:
    """:func:`generate` for several prompts at once, each in its own KV cache, sharing every
    matrix product (:meth:`Chip.forward_batch`): each result (tokens, logits hash, stops) is
    exactly that of generating its prompt alone with the same ``params`` (each sequence has
    its own sampler, seeded alike). Returns the generations and the batch's prefill and
    decode seconds."""
    chip = session.chip
    if not prompts:
        raise UsageError("no prompts to run")
    for p in prompts:
        _check_room(chip, p, max_new_tokens, context_full)
    num = session.netlist.doc["numerics"]
    eos = (session.netlist.doc.get("tokenizer") or {}).get("eos_token_id")
    states = [chip.new_state() for _ in prompts]
    samplers = [
        Sampler(params, num["signal_frac"], num["log2e_q16"], chip.params["lut.exp2"])
        for _ in prompts
    ]
    gens = [Generation(list(p)) for p in prompts]
    hashes = [hashlib.sha256() for _ in prompts]
    t0 = time.perf_counter()
    logits = [lg[-1] for lg in chip.forward_batch(states, [list(p) for p in prompts])]
    prefill_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    active = list(range(len(prompts)))
    while active:
        nxt = []
        for i, lg in zip(active, logits, strict=True):
            hashes[i].update(np.ascontiguousarray(lg, dtype="<i4").tobytes())
            tok = samplers[i](lg)
            gens[i].tokens.append(tok)
            if not _done(gens[i], tok, eos, stop_at_eos, max_new_tokens, states[i].pos,
                         chip.context):  # fmt: skip
                nxt.append(i)
        active = nxt
        if active:
            logits = [
                lg[0]
                for lg in chip.forward_batch(
                    [states[i] for i in active], [[gens[i].tokens[-1]] for i in active]
                )
            ]
    decode_s = time.perf_counter() - t1
    for g, h in zip(gens, hashes, strict=True):
        g.logits_sha256 = h.hexdigest()
        g.prefill_s, g.decode_s = prefill_s, decode_s
    return gens, prefill_s, decode_s


def _check_room(chip: Chip, prompt: list[int], max_new_tokens: int, context_full: str) -> None:
    """The refusals of :func:`generate` (exit 2 for usage, 4 for a KV cache too small)."""
    if not prompt:
        raise UsageError("the prompt is empty (give some text or --tokens)")
    if max_new_tokens < 1:
        raise UsageError("--max-new-tokens must be at least 1")
    if context_full not in ("refuse", "stop"):
        raise UsageError(f"--context-full {context_full!r}: choose refuse or stop")
    room = chip.context - len(prompt)
    if room < 0:
        raise FitError(
            f"the prompt has {len(prompt):,} tokens; the KV cache holds {chip.context:,} "
            f"(at most {chip.max_context:,} on this build{chip.adapter_note}); shorten the "
            "prompt or raise --context"
        )
    if context_full == "refuse" and max_new_tokens - 1 > room:
        raise FitError(
            f"{len(prompt):,} prompt tokens + {max_new_tokens:,} new tokens need a KV cache of "
            f"{len(prompt) + max_new_tokens - 1:,} tokens; it holds {chip.context:,} (at most "
            f"{chip.max_context:,} on this build{chip.adapter_note}); use --max-new-tokens "
            f"{room + 1:,} or less, a larger --context, or --context-full stop"
        )


def float_logits(session: Session, arr: np.ndarray) -> np.ndarray:
    """int32 logits -> their real values (float64), ``logit * 2^-F``."""
    return np.asarray(arr, np.float64) * 2.0**-session.signal_frac


def perplexity(session: Session, tokens: list[int], ctx: int, stride: int | None, on_window=None):
    """The fixed perplexity protocol of :mod:`maskc.evaluate` on the integer logits."""
    from maskc.evaluate import perplexity as ppl

    if ctx > session.chip.context:
        raise UsageError(
            f"--ctx {ctx} is larger than the KV cache ({session.chip.context} tokens); give a "
            "smaller --ctx or a larger --context"
        )

    def forward(seg):
        session.chip.reset()
        return float_logits(session, session.chip.forward(list(seg)))

    return ppl(forward, tokens, ctx, stride, on_window)


def reference_getter(session: Session, model_dir: Path | None, config: Path | None = None):
    """``(arch, get_tensor)`` of the float32 reference: the original model in ``model_dir`` (a
    folder, or a ``.safetensors`` file with its ``config`` given), or (None) the build's own
    dequantized weights (quant/), which isolates the integer datapath; the session's adapters
    merged in float (``W + s * B @ A``)."""
    arch, get = _base_getter(session, model_dir, config)
    deltas = {}
    for ad in session.chip.adapters:
        for m in ad.modules:
            deltas.setdefault(m.matrix, []).append((ad, m))
    if not deltas:
        return arch, get

    def merged(name: str) -> np.ndarray:
        w = get(name)
        if name not in deltas:
            return w
        acc = w.astype(np.float64)
        for ad, m in deltas[name]:
            acc += ad.merged_delta(m)
        return acc.astype(np.float32)

    return arch, merged


def _base_getter(session: Session, model_dir: Path | None, config: Path | None = None):
    if model_dir is not None:
        from maskc.ingest import load_model

        if Path(model_dir).is_file() and config is None:
            raise InputError(
                f"{model_dir}: --compare takes a model folder (config.json beside the weights), "
                "or a .safetensors file with --model-config config.json"
            )
        m = load_model(model_dir, config)
        mine = session.netlist.arch
        for k in ("hidden_size", "num_layers", "vocab_size", "num_heads", "num_kv_heads"):
            if getattr(m.arch, k) != getattr(mine, k):
                raise InputError(
                    f"{model_dir}: {k} is {getattr(m.arch, k)}, the build's model has "
                    f"{getattr(mine, k)}: not the model this build was compiled from"
                )
        return m.arch, m.read
    from maskc.quantize.store import INDEX, QuantStore

    b = session.build
    if INDEX not in b.manifest["files"]:
        raise InputError(f"{b.path}: no quant/ folder to dequantize")
    store = QuantStore(b.path, b.json(INDEX)["tensors"], session.netlist)
    return session.netlist.arch, store.dequantized


def compare(
    session: Session, tokens: list[int], model_dir: Path | None, config: Path | None = None
) -> dict:
    """Emulator vs the float32 reference on ``tokens`` (one window from position 0):
    per-position top-1 agreement, KL(ref || chip) and max |logit error|."""
    from maskc.evaluate import kl_top1
    from maskc.reference import FloatLlama

    arch, get = reference_getter(session, model_dir, config)
    ref = FloatLlama(arch, get, cache_weights=False).forward(tokens).astype(np.float64)
    session.chip.reset()
    mine = float_logits(session, session.chip.forward(tokens))
    kl, agree = kl_top1(ref, mine)
    err = np.abs(ref - mine).max(axis=1)
    return {
        "reference": (str(model_dir) if model_dir else "dequantized build weights")
        + "".join(f" + {a.path.name} (merged in float)" for a in session.chip.adapters),
        "tokens": len(tokens),
        "top1_agreement": float(agree.mean()),
        "kl_mean": float(kl.mean()),
        "kl_max": float(kl.max()),
        "max_logit_error": float(err.max()),
        "per_position": [
            {
                "pos": i,
                "top1_agree": bool(agree[i]),
                "kl": float(kl[i]),
                "max_logit_error": float(err[i]),
            }
            for i in range(len(tokens))
        ],
    }
