"""The driver: :func:`generate` writes a test model as a Hugging Face folder."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from maskc.errors import UsageError
from maskc.ir import ModelArch, parameter_count
from maskc.safetensors_io import write_safetensors
from maskc.testmodels.config import config_json, generation_config_json, write_json
from maskc.testmodels.presets import resolve_preset
from maskc.testmodels.spec import TinySpec
from maskc.testmodels.tokenizer import tokenizer_config_json, tokenizer_json
from maskc.testmodels.weights import make_weights

#: Every file name generate() may write (used to clear a folder when overwriting).
_WEIGHT_GLOBS = ("model.safetensors", "model-[0-9]*-of-[0-9]*.safetensors")
_JSON_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
)


@dataclass(frozen=True)
class GeneratedModel:
    """What :func:`generate` wrote.

    ``tensors`` lists ``(name, shape, dtype)`` in :func:`maskc.ir.expected_tensors` order, dtype
    being the safetensors string (``"F32"``, ``"F16"``, ``"BF16"``); ``files`` the file names
    written into ``path`` (sorted); ``total_parameters`` the element count of all tensors (tied
    embeddings counted once), equal to :func:`maskc.ir.parameter_count` of ``arch``.
    """

    path: Path
    spec: TinySpec
    seed: int
    arch: ModelArch
    tensors: tuple[tuple[str, tuple[int, ...], str], ...]
    total_parameters: int
    files: tuple[str, ...] = ()


def _shard_groups(names: list[str], shards: int) -> list[list[str]]:
    """``names`` split into ``shards`` contiguous, non-empty groups of near-equal length."""
    q, r = divmod(len(names), shards)
    groups, start = [], 0
    for k in range(shards):
        n = q + (1 if k < r else 0)
        groups.append(names[start : start + n])
        start += n
    return groups


def generate(
    out_dir: str | Path,
    preset: str | TinySpec = "tiny",
    seed: int = 0,
    *,
    overwrite: bool = False,
) -> GeneratedModel:
    """Write the tiny model ``preset`` with weights from ``seed`` as an HF folder at ``out_dir``.

    ``out_dir`` is created if needed. If it exists and is not empty, :class:`UsageError` is
    raised unless ``overwrite`` is true, in which case only the files this function writes
    (``config.json``, ``model*.safetensors``, the index and the tokenizer/generation JSON files)
    are replaced; nothing else in the folder is touched. ``seed`` must be a non-negative int.
    """
    spec = resolve_preset(preset)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UsageError(f"seed must be a non-negative integer, got {seed!r}")
    path = Path(out_dir)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{path}: exists and is not a directory")
    if path.is_dir() and any(path.iterdir()):
        if not overwrite:
            raise UsageError(f"{path}: directory is not empty (pass overwrite to replace)")
        for pattern in _WEIGHT_GLOBS:
            for old in sorted(path.glob(pattern)):
                old.unlink()
        for name in _JSON_FILES:
            (path / name).unlink(missing_ok=True)
    path.mkdir(parents=True, exist_ok=True)

    arch = spec.to_arch()
    weights = make_weights(spec, seed)
    names = list(weights)
    metadata = {"format": "pt"}
    files: list[str] = []
    if spec.shards == 1:
        write_safetensors(path / "model.safetensors", weights, metadata)
        files.append("model.safetensors")
    else:
        weight_map: dict[str, str] = {}
        n = spec.shards
        for k, group in enumerate(_shard_groups(names, n), start=1):
            fname = f"model-{k:05d}-of-{n:05d}.safetensors"
            write_safetensors(path / fname, {nm: weights[nm] for nm in group}, metadata)
            weight_map.update(dict.fromkeys(group, fname))
            files.append(fname)
        total_size = sum(int(w.nbytes) for w in weights.values())
        write_json(
            path / "model.safetensors.index.json",
            {"metadata": {"total_size": total_size}, "weight_map": weight_map},
        )
        files.append("model.safetensors.index.json")

    write_json(path / "config.json", config_json(spec))
    # tokenizer.json keeps the tokenizers layout: vocab in id order, merges in rank order.
    tok_doc = tokenizer_json(spec.resolved_tokenizer_vocab_size)
    write_json(path / "tokenizer.json", tok_doc, sort_keys=False)
    write_json(path / "tokenizer_config.json", tokenizer_config_json(spec))
    write_json(path / "generation_config.json", generation_config_json(spec))
    files += ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"]

    tensors = tuple((nm, tuple(weights[nm].shape), spec.dtype) for nm in names)
    return generated(path, spec, seed, arch, tensors, files)


def generated(
    path: Path,
    spec: TinySpec,
    seed: int,
    arch: ModelArch,
    tensors: tuple[tuple[str, tuple[int, ...], str], ...],
    files: list[str],
) -> GeneratedModel:
    """The :class:`GeneratedModel` of a written folder, its parameter total checked against
    the architecture's."""
    total = sum(math.prod(shape) for _, shape, _ in tensors)
    if total != parameter_count(arch):  # pragma: no cover - guards ir/testmodels drift
        raise AssertionError(f"parameter total {total} != parameter_count {parameter_count(arch)}")
    return GeneratedModel(
        path=path,
        spec=spec,
        seed=seed,
        arch=arch,
        tensors=tensors,
        total_parameters=total,
        files=tuple(sorted(files)),
    )
