"""The streaming driver: :func:`generate_shape` writes a model of any size (a published shape
or explicit dimensions) as a Hugging Face folder in bounded memory.

Tensor by tensor and, inside a tensor, row chunk by row chunk: each shard's header is written
first (every shape is known up front), then the data appended in the header's (sorted) order
with :class:`maskc.safetensors_io.SafetensorsWriter`. Memory: one chunk (16 MiB of float32 by
default) plus per-tensor row/column scales and the tokenizer, whatever the model's size.

Shards follow Hugging Face's ``save_pretrained``: tensors in the model's order fill a shard
until the next one would take it past ``shard_size`` bytes (default 5 GB, as HF's ``"5GB"``;
a tensor larger than that gets a shard of its own), files ``model-0000k-of-0000n.safetensors``
with ``model.safetensors.index.json`` (``metadata.total_size``, the sum of all tensor bytes,
and the ``weight_map``); a single shard is ``model.safetensors`` without an index. Or
``shards=N``: N contiguous shards of about equal bytes.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path

from maskc.errors import InputError, UsageError
from maskc.ir import expected_tensors
from maskc.safetensors_io import SafetensorsWriter
from maskc.testmodels.config import config_json, generation_config_json, write_json
from maskc.testmodels.folder import GeneratedModel, generated
from maskc.testmodels.spec import DTYPES, TinySpec
from maskc.testmodels.synthetic import DEFAULT_CHUNK_BLOCKS, TensorGenerator, outlier_channels
from maskc.testmodels.tokenizer import tokenizer_config_json, tokenizer_json

#: Hugging Face's default ``max_shard_size`` ("5GB" = 5 * 10^9 bytes).
DEFAULT_SHARD_SIZE = 5_000_000_000
#: Free disk space kept beyond the weights when checking up front.
DISK_MARGIN = 64 << 20

#: ``progress(bytes_done, bytes_total, tensor_name)``, called after every chunk written.
Progress = Callable[[int, int, str], None]


def plan_shards(
    sizes: list[tuple[str, int]], shard_size: int | None = None, shards: int | None = None
) -> list[list[str]]:
    """``sizes`` (tensor name, bytes) in model order, split into contiguous shards: by
    ``shard_size`` (HF's greedy rule) or into exactly ``shards`` groups of about equal bytes
    (each non-empty; UsageError if there are fewer tensors than shards)."""
    if shards is not None:
        if shards > len(sizes):
            raise UsageError(f"--shards {shards}: the model has only {len(sizes)} tensors")
        total = sum(b for _, b in sizes)
        groups: list[list[str]] = [[] for _ in range(shards)]
        k, done = 0, 0
        for i, (name, b) in enumerate(sizes):
            left = len(sizes) - i  # tensors still to place, this one included
            # move on when this shard has its share, or the later shards need the rest
            full = done >= total * (k + 1) / shards or left <= shards - 1 - k
            if groups[k] and k < shards - 1 and full:
                k += 1
            groups[k].append(name)
            done += b
        return groups
    limit = DEFAULT_SHARD_SIZE if shard_size is None else shard_size
    out: list[list[str]] = [[]]
    used = 0
    for name, b in sizes:
        if out[-1] and used + b > limit:
            out.append([])
            used = 0
        out[-1].append(name)
        used += b
    return out


def generate_shape(
    out_dir: str | Path,
    spec: TinySpec,
    seed: int = 0,
    *,
    shard_size: int | None = None,
    shards: int | None = None,
    config_only: bool = False,
    chunk_blocks: int = DEFAULT_CHUNK_BLOCKS,
    progress: Progress | None = None,
) -> GeneratedModel:
    """Write ``spec`` (:func:`maskc.testmodels.resolve_shape`, or any :class:`TinySpec`) with
    synthetic weights from ``seed`` (:mod:`maskc.testmodels.synthetic`) into the empty or new
    folder ``out_dir``: config.json, generation_config.json, tokenizer.json (the vocabulary
    size of the spec's tokenizer), tokenizer_config.json and, unless ``config_only``, the
    weight shards. The files are a pure function of ``(spec, seed, shard_size or shards)``:
    ``chunk_blocks`` (seed blocks generated per write) changes memory use, not one byte.

    UsageError for a bad seed, shard option or a non-empty ``out_dir``; InputError when the
    weights would not fit the free disk space (checked before anything is written).
    """
    spec.validate()
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UsageError(f"seed must be a non-negative integer, got {seed!r}")
    if shards is not None and shard_size is not None:
        raise UsageError("--shards and --shard-size exclude each other; give one")
    if shards is not None and (isinstance(shards, bool) or shards < 1):
        raise UsageError(f"--shards must be a positive integer, got {shards!r}")
    if shard_size is not None and (isinstance(shard_size, bool) or shard_size < 1):
        raise UsageError(f"--shard-size must be a positive number of bytes, got {shard_size!r}")
    path = Path(out_dir)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise UsageError(f"{path}: exists and is not an empty directory")

    arch = spec.to_arch()
    np_dtype = DTYPES[spec.dtype][0]
    specs = expected_tensors(arch)
    sizes = [(t.name, t.parameters * np_dtype.itemsize) for t in specs]
    total_bytes = sum(b for _, b in sizes)
    groups = [] if config_only else plan_shards(sizes, shard_size, shards)
    if not config_only:
        _check_disk(path, total_bytes)
    path.mkdir(parents=True, exist_ok=True)

    files: list[str] = []
    write_json(path / "config.json", config_json(spec))
    tok_doc = tokenizer_json(spec.resolved_tokenizer_vocab_size)
    write_json(path / "tokenizer.json", tok_doc, sort_keys=False)
    del tok_doc
    write_json(path / "tokenizer_config.json", tokenizer_config_json(spec))
    write_json(path / "generation_config.json", generation_config_json(spec))
    files += ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"]

    if groups:
        files += _write_weights(path, spec, seed, groups, total_bytes, chunk_blocks, progress)
        spec = dataclasses.replace(spec, shards=len(groups))
    tensors = tuple((t.name, tuple(t.shape), spec.dtype) for t in specs)
    return generated(path, spec, seed, arch, tensors, files)


def _check_disk(path: Path, need: int) -> None:
    """InputError when the folder's file system has less than ``need`` bytes free."""
    probe = path
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < need + DISK_MARGIN:
        raise InputError(
            f"{path}: the weights need {need / 1e9:.2f} GB and {probe} has {free / 1e9:.2f} GB "
            "free; free some space, choose another folder or use --config-only"
        )


def _write_weights(
    path: Path,
    spec: TinySpec,
    seed: int,
    groups: list[list[str]],
    total_bytes: int,
    chunk_blocks: int,
    progress: Progress | None,
) -> list[str]:
    """Every shard, tensor by tensor and chunk by chunk; the index when there are several."""
    arch = spec.to_arch()
    np_dtype = DTYPES[spec.dtype][0]
    by_name = {t.name: t for t in expected_tensors(arch)}
    outliers = outlier_channels(seed, arch.hidden_size)
    n_tok = spec.resolved_tokenizer_vocab_size
    metadata = {"format": "pt"}
    n = len(groups)
    names = (
        ["model.safetensors"]
        if n == 1
        else [f"model-{k:05d}-of-{n:05d}.safetensors" for k in range(1, n + 1)]
    )
    done = 0
    weight_map: dict[str, str] = {}
    for fname, group in zip(names, groups, strict=True):
        entries = [(nm, spec.dtype, by_name[nm].shape) for nm in group]
        with SafetensorsWriter(path / fname, entries, metadata) as w:
            for nm in sorted(group):
                gen = TensorGenerator(by_name[nm], arch, seed, n_tok, outliers, np_dtype)
                for chunk in gen.chunks(chunk_blocks):
                    w.write(nm, chunk)
                    done += chunk.nbytes
                    if progress is not None:
                        progress(done, total_bytes, nm)
        weight_map.update(dict.fromkeys(group, fname))
    if n == 1:
        return names
    write_json(
        path / "model.safetensors.index.json",
        {"metadata": {"total_size": total_bytes}, "weight_map": weight_map},
    )
    return [*names, "model.safetensors.index.json"]
