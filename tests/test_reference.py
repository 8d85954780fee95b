"""maskc.reference.FloatLlama: internal consistency, and agreement with transformers.

The transformers comparison (every tiny preset: GQA/MQA, untied heads, explicit head_dim,
Llama-3.1 RoPE scaling, Qwen2 q/k/v biases, Mistral sliding window, F16/BF16 storage, and the
mixtures of experts: Mixtral, Qwen2-MoE's shared expert, Qwen3-MoE's q/k norms) is skipped
where torch or transformers is not installed.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from maskc.ingest import load_model
from maskc.ir import expert_of
from maskc.reference import FloatLlama, greedy_generate
from maskc.testmodels import preset_names
from maskc.testmodels.presets import MOE_PRESETS

N_TOKENS = 80  # > 2 * the Mistral preset's window (32) and > the llama3 preset's 64 positions


def _tokens(arch, n: int = N_TOKENS, seed: int = 0) -> list[int]:
    rng = np.random.default_rng(seed)
    return [int(t) for t in rng.integers(3, min(arch.vocab_size, 300), size=n)]


@pytest.fixture(params=preset_names())
def loaded(request, model_cache):
    gen = model_cache(request.param)
    return gen, load_model(gen.path)


def test_kv_cache_matches_full_forward(loaded):
    _, model = loaded
    ref = FloatLlama(model.arch, model.read)
    ids = _tokens(model.arch, 40)
    full = ref.forward(ids)
    assert full.dtype == np.float32 and full.shape == (40, model.arch.vocab_size)
    ref.reset()
    parts = [ref.forward(ids[:17], 0), ref.forward(ids[17:30], 17)]
    parts += [ref.forward([t], 30 + k) for k, t in enumerate(ids[30:])]
    np.testing.assert_allclose(np.concatenate(parts), full, rtol=0, atol=1e-4)
    # Restarting at an earlier position discards the cache past it.
    np.testing.assert_allclose(ref.forward(ids[10:], 10), full[10:], rtol=0, atol=1e-4)
    with pytest.raises(ValueError):
        ref.forward([ids[0]], ref.pos + 1)


def test_uncached_weights_give_the_same_logits_one_layer_at_a_time(loaded):
    _, model = loaded
    calls: list[str] = []

    def get(name: str) -> np.ndarray:
        calls.append(name)
        return model.read(name)

    ids = _tokens(model.arch, 12)
    cached = FloatLlama(model.arch, model.read).forward(ids)
    lazy = FloatLlama(model.arch, get, cache_weights=False)
    np.testing.assert_array_equal(lazy.forward(ids), cached)
    first = list(calls)
    lazy.forward(ids)  # (fewer tokens may select other experts of a mixture)
    assert calls[len(first) :] == first  # fetched again: nothing was kept
    layers = [int(n.split(".")[2]) for n in first if n.startswith("model.layers.")]
    assert layers == sorted(layers)  # layer by layer, in order


def test_rows_path_reads_the_embedding_and_head_by_blocks_only(loaded, monkeypatch):
    """With ``get_rows`` the embedding and lm_head are never read whole (the compile's report
    holds one block of rows, not the 2 GB float32 head of an 8B model), and the logits are
    the same as the whole-matrix path's."""
    import maskc.reference as R
    from maskc.quantize.stream import RowReader

    _, model = loaded
    monkeypatch.setattr(R, "VOCAB_BLOCK", 7)  # many blocks, the last one partial
    big = {"model.embed_tokens.weight", "lm_head.weight"}
    spans: list[tuple[str, int, int]] = []
    reader = RowReader(model)

    def get(name: str) -> np.ndarray:
        assert name not in big, f"{name} read whole"
        return model.read(name)

    def rows(name: str, a: int, b: int) -> np.ndarray:
        spans.append((name, a, b))
        assert b - a <= 7
        return reader.rows(name, a, b)

    ids = _tokens(model.arch, 12)
    whole = FloatLlama(model.arch, model.read, cache_weights=False).forward(ids)
    by_rows = FloatLlama(model.arch, get, cache_weights=False, get_rows=rows).forward(ids)
    reader.close()
    np.testing.assert_allclose(by_rows, whole, rtol=0, atol=1e-5)
    head = "model.embed_tokens.weight" if model.arch.tie_word_embeddings else "lm_head.weight"
    v = model.arch.vocab_size
    assert [(a, b) for n, a, b in spans if n == head][-((v + 6) // 7) :] == [
        (a, min(a + 7, v)) for a in range(0, v, 7)
    ]
    embed_blocks = {a for n, a, _ in spans if n == "model.embed_tokens.weight"}
    assert {a // 7 * 7 for a in embed_blocks} >= {t // 7 * 7 for t in ids}


def test_causal(loaded):
    _, model = loaded
    ref = FloatLlama(model.arch, model.read)
    ids = _tokens(model.arch, 24)
    a = ref.forward(ids)
    b = ref.forward(ids[:12] + _tokens(model.arch, 12, seed=1))
    if model.arch.moe is None:
        np.testing.assert_array_equal(a[:12], b[:12])
    else:  # an expert's matrix product runs on the rows that chose it: other batch shapes
        np.testing.assert_allclose(a[:12], b[:12], rtol=0, atol=1e-5)
    assert not np.allclose(a[12:], b[12:])


MOE = [n for n in preset_names() if n in MOE_PRESETS]


@pytest.mark.parametrize("preset", MOE)
def test_moe_reads_only_the_selected_experts_and_routes_to_several(preset, model_cache):
    """Uncached, a token's forward reads the router and its top_k experts of each layer only;
    over many tokens the router uses several experts (the presets route non-trivially)."""
    model = load_model(model_cache(preset).path)
    moe = model.arch.moe
    calls: list[str] = []

    def get(name: str) -> np.ndarray:
        calls.append(name)
        return model.read(name)

    ref = FloatLlama(model.arch, get, cache_weights=False)
    ref.forward(_tokens(model.arch, 1))
    for layer in range(model.arch.num_layers):
        used = {expert_of(n) for n in calls if n.startswith(f"model.layers.{layer}.")}
        assert len(used - {None}) == moe.top_k
    calls.clear()
    ref.forward(_tokens(model.arch, 40))
    used = {expert_of(n) for n in calls if n.startswith("model.layers.0.")} - {None}
    assert len(used) == moe.num_experts  # 40 tokens reach every expert of these presets


def test_moe_top_k_ties_go_to_the_lowest_expert(model_cache):
    """A router whose rows are equal gives every expert the same probability: the first top_k
    experts are chosen, each weighted 1/top_k (renormalized) -- as a single dense MLP would."""
    model = load_model(model_cache("qwen3-moe").path)
    arch = model.arch
    router = "model.layers.0.mlp.gate.weight"
    calls: list[str] = []

    def get(name: str) -> np.ndarray:
        calls.append(name)
        w = model.read(name)
        return np.zeros_like(w) if name == router else w

    FloatLlama(arch, get, cache_weights=False).forward(_tokens(arch, 5))
    used = {expert_of(n) for n in calls if n.startswith("model.layers.0.")} - {None}
    assert used == set(range(arch.moe.top_k))


def test_sliding_window_limits_the_receptive_field(model_cache):
    model = load_model(model_cache("tiny-mistral").path)
    arch = model.arch
    w, n_layers = arch.sliding_window, arch.num_layers
    ref = FloatLlama(arch, model.read)
    ids = _tokens(arch)
    changed = [(ids[0] + 1) % 300 + 3, *ids[1:]]
    a, b = ref.forward(ids), ref.forward(changed)
    reach = n_layers * (w - 1)  # each layer looks back w - 1 positions
    diff = np.abs(a - b).max(axis=-1)
    assert (diff[reach + 1 :] == 0).all()
    assert (diff[: w - 1] > 0).all()
    # Without the window the change is seen everywhere.
    full = FloatLlama(dataclasses.replace(arch, sliding_window=None), model.read)
    assert (np.abs(full.forward(ids) - full.forward(changed)).max(axis=-1) > 0).all()


def test_greedy_ties_go_to_the_lowest_id(model_cache):
    model = load_model(model_cache("tiny").path)
    ref = FloatLlama(model.arch, model.read)
    v = model.arch.vocab_size

    def flat(tokens, start_pos=0):
        out = np.zeros((len(tokens), v), dtype=np.float32)
        out[:, [7, 5, 9]] = 1.0
        return out

    ref.forward = flat
    assert greedy_generate(ref, [1, 2], 3) == [5, 5, 5]
    assert greedy_generate(ref, [1, 2], 0) == []


def test_greedy_generate_equals_argmax_of_full_forward(model_cache):
    model = load_model(model_cache("tiny-odd").path)
    ref = FloatLlama(model.arch, model.read)
    prompt = _tokens(model.arch, 5)
    out = greedy_generate(ref, prompt, 6)
    assert len(out) == 6
    logits = FloatLlama(model.arch, model.read).forward(prompt + out[:-1])
    assert [int(i) for i in logits[len(prompt) - 1 :].argmax(-1)] == out


# --- transformers -------------------------------------------------------------------------------


def test_matches_transformers(loaded):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    gen, model = loaded
    hf, info = transformers.AutoModelForCausalLM.from_pretrained(
        gen.path, dtype=torch.float32, attn_implementation="eager", output_loading_info=True
    )
    # every checkpoint tensor is where transformers looks (its MoE classes fuse the experts
    # while loading): nothing left at its random initialization
    assert not any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    hf.eval()
    ids = _tokens(model.arch)
    with torch.no_grad():
        theirs = hf(torch.tensor([ids])).logits[0].numpy()
        hf_gen = hf.generate(
            torch.tensor([ids[:6]]), max_new_tokens=8, do_sample=False, pad_token_id=0
        )[0, 6:].tolist()
    ref = FloatLlama(model.arch, model.read)
    ours = ref.forward(ids)
    scale = float(np.abs(theirs).max())
    assert float(np.abs(ours - theirs).max()) <= 1e-4 * max(scale, 1.0), gen.spec.name
    assert hf_gen  # (it may stop early at EOS)
    assert greedy_generate(ref, ids[:6], len(hf_gen)) == hf_gen
