"""Seeded generator of test models, written as real Hugging Face model folders: tiny presets,
and published shapes with synthetic weights for shape tests.

Every test of maskc runs on these models: they are small (< 1 MB each), load with the usual
Hugging Face tooling, and exercise the corners a compiler must get right (tied and untied heads,
GQA, an explicit ``head_dim`` with ``num_heads * head_dim != hidden_size``, sizes that divide no
tile or group size, an odd vocabulary, sharded checkpoints, Llama-3 RoPE scaling, Qwen2 q/k/v
biases, Mistral sliding-window attention, F32/F16/BF16 storage, mixtures of experts).

``generate(out_dir, preset, seed)`` writes::

    config.json             genuine HF config of the architecture (sort_keys, indent 2)
    model.safetensors       or model-0000k-of-0000n.safetensors + model.safetensors.index.json
    tokenizer.json          byte-level BPE (GPT-2 style), built deterministically
    tokenizer_config.json   bos/eos strings, add_bos_token false, a ChatML chat_template
    generation_config.json  bos/eos ids

Determinism: the folder is a pure function of ``(preset, seed)``. Each tensor is drawn in float32
from ``np.random.default_rng(np.random.SeedSequence([seed, stable_int(name)]))`` where
``stable_int`` is derived with SHA-256 of the tensor name (never Python's salted ``hash()``),
then cast to the preset's dtype (round to nearest even). The same seed gives a byte-identical
folder; a different seed gives different weights and the same tokenizer.

Modules: :mod:`~maskc.testmodels.spec` (:class:`TinySpec`), :mod:`~maskc.testmodels.presets`,
:mod:`~maskc.testmodels.weights`, :mod:`~maskc.testmodels.tokenizer`,
:mod:`~maskc.testmodels.config` (config.json, generation_config.json),
:mod:`~maskc.testmodels.folder` (:func:`generate`) and :mod:`~maskc.testmodels.lora`
(:func:`write_lora_adapter`).

Shapes (``maskc testmodel --shape``): :mod:`~maskc.testmodels.shapes` (the published
architectures, :func:`resolve_shape` with explicit overrides), :mod:`~maskc.testmodels.synthetic`
(SYNTHETIC trained-looking weights, generated in row blocks) and
:mod:`~maskc.testmodels.streaming` (:func:`generate_shape`: any size in bounded memory).
"""

from maskc.testmodels.folder import GeneratedModel, generate
from maskc.testmodels.lora import lora_shapes, write_lora_adapter
from maskc.testmodels.presets import PRESETS, preset_names, resolve_preset
from maskc.testmodels.shapes import SHAPES, resolve_shape, shape_names
from maskc.testmodels.spec import TinySpec
from maskc.testmodels.streaming import generate_shape
from maskc.testmodels.weights import make_weights as make_weights

__all__ = [
    "PRESETS",
    "SHAPES",
    "GeneratedModel",
    "TinySpec",
    "generate",
    "generate_shape",
    "lora_shapes",
    "preset_names",
    "resolve_preset",
    "resolve_shape",
    "shape_names",
    "write_lora_adapter",
]
