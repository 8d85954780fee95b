"""Seeded random PEFT LoRA adapters for a model architecture, saved as PEFT saves them."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from maskc.safetensors_io import write_safetensors
from maskc.testmodels.config import write_json
from maskc.testmodels.spec import DTYPES
from maskc.testmodels.weights import tensor_rng


def lora_shapes(arch) -> dict[tuple[int, str], tuple[int, int]]:
    """``{(layer, module): (out_features, in_features)}`` of every LoRA target of ``arch``
    (a :class:`maskc.ir.ModelArch`)."""
    h, i = arch.hidden_size, arch.intermediate_size
    q, kv = arch.num_heads * arch.head_dim, arch.num_kv_heads * arch.head_dim
    per = {
        "q_proj": (q, h),
        "k_proj": (kv, h),
        "v_proj": (kv, h),
        "o_proj": (h, q),
        "gate_proj": (i, h),
        "up_proj": (i, h),
        "down_proj": (h, i),
    }
    return {(ly, m): s for ly in range(arch.num_layers) for m, s in per.items()}


def write_lora_adapter(
    out_dir: str | Path,
    arch,
    rank: int = 8,
    seed: int = 0,
    targets: tuple[str, ...] | None = None,
    layers: list[int] | None = None,
    alpha: float = 16.0,
    b_std: float = 0.02,
    use_rslora: bool = False,
    dtype: str = "F32",
) -> Path:
    """A seeded random PEFT LoRA adapter for ``arch`` (as PEFT saves one): ``lora_A`` with
    PEFT's default (Kaiming-uniform) scale, ``lora_B`` normal with ``b_std`` (PEFT starts it at
    0; a trained one is not), ``adapter_config.json`` naming ``targets`` (default: all seven
    projections) and ``layers``."""
    from maskc.adapters import TARGETS

    targets = tuple(TARGETS) if targets is None else targets

    path = Path(out_dir)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for (layer, mod), (rows, cols) in sorted(lora_shapes(arch).items()):
        if mod not in targets or (layers is not None and layer not in layers):
            continue
        rng = tensor_rng(seed, f"lora.{layer}.{mod}")
        bound = 1.0 / math.sqrt(cols)
        pre = f"base_model.model.model.layers.{layer}.{TARGETS[mod]}.{mod}"
        a = rng.uniform(-bound, bound, (rank, cols))
        b = rng.normal(0.0, b_std, (rows, rank))
        for name, t in ((f"{pre}.lora_A.weight", a), (f"{pre}.lora_B.weight", b)):
            tensors[name] = np.ascontiguousarray(t.astype(np.float32).astype(DTYPES[dtype][0]))
    write_safetensors(path / "adapter_model.safetensors", tensors, {"format": "pt"})
    cfg = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": rank,
        "lora_alpha": alpha,
        "lora_dropout": 0.0,
        "use_rslora": use_rslora,
        "bias": "none",
        "use_dora": False,
        "target_modules": sorted(targets),
        "layers_to_transform": layers,
        "base_model_name_or_path": None,
        "fan_in_fan_out": False,
        "modules_to_save": None,
        "init_lora_weights": True,
    }
    write_json(path / "adapter_config.json", cfg)
    return path
