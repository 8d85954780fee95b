"""Open a Hugging Face checkpoint: :func:`load_model` -> a validated, lazily read :class:`Model`.

Accepted inputs:

* a model folder with ``config.json`` and either ``model.safetensors`` or sharded
  ``model-XXXXX-of-YYYYY.safetensors`` listed in ``model.safetensors.index.json``; an optional
  ``tokenizer.json`` is validated and carried along;
* a single ``.safetensors`` file plus an explicit ``config`` path.

``load_model`` reads config.json and every safetensors *header* (never tensor data) and checks,
before anything else runs: supported architecture, every expected tensor present exactly once with
the exact shape and a supported dtype (F32, F16, BF16), no unknown tensors (a few are ignorable),
the shard index telling the truth. Tensor data is read later, one tensor at a time, by
:meth:`Model.read`, which also checks it is finite; memory is bounded by the largest tensor.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from maskc.errors import InputError, UnsupportedError
from maskc.fsutil import check_regular, optional_file
from maskc.ingest import mxfp4, prequant
from maskc.ingest.config import load_config, load_scheme, read_json_file
from maskc.ir import ModelArch, TensorSpec, embedding_tensor, expected_tensors, layer_tensors
from maskc.limits import check_tensor
from maskc.romformat import QuantFormat, unpermute_cols
from maskc.safetensors_io import SUPPORTED_DTYPES, SafetensorsFile, TensorInfo

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
#: Tensors some exporters write that carry no weights maskc needs (recomputed from config).
IGNORABLE_PATTERNS = (re.compile(r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq"),)
#: A decoder layer's tensor name, its index (at most 9 digits: a longer one is no layer of a
#: model maskc builds, and is refused as an unexpected tensor)
_LAYER = re.compile(r"model\.layers\.(\d{1,9})\.")
#: Largest index.json accepted, in bytes.
MAX_INDEX_BYTES = 64 << 20


@dataclass
class Model:
    """A validated checkpoint whose tensors are read on demand.

    ``specs`` lists the tensors in canonical order (see :func:`maskc.ir.expected_tensors`);
    ``locations[name]`` tells which file holds each. ``ignored`` lists tensors present in the
    files but not used (e.g. ``rotary_emb.inv_freq``, or ``lm_head.weight`` of a tied model,
    which :meth:`check_data` verifies equals the embedding).
    """

    path: Path
    config_path: Path
    arch: ModelArch
    specs: list[TensorSpec]
    locations: dict[str, tuple[SafetensorsFile, TensorInfo]]
    files: list[Path]
    tokenizer_path: Path | None
    tokenizer_vocab_size: int | None
    #: tokenizer_config.json's chat_template (checked by a sample render), if any
    chat_template: str | None = None
    ignored: list[str] = field(default_factory=list)
    #: a pre-quantized checkpoint's scheme (docs/import-design.md), else None
    scheme: prequant.Scheme | None = None
    #: the quantized layers of a pre-quantized checkpoint: ``PREFIX.weight`` -> ``PREFIX``
    #: (MXFP4: each expert matrix -> its fused module, :func:`maskc.ingest.mxfp4.layers`)
    imported: dict[str, str] = field(default_factory=dict)
    #: desc_act folds (docs/import-design.md): a down_proj whose ``g_idx`` is an activation-order
    #: permutation has its input columns (``"cols"``) and its gate/up projections their output
    #: rows (``"rows"``) renumbered by the same ``perm``; every read serves the renumbered
    #: matrices, the same model
    folds: dict[str, tuple[str, np.ndarray]] = field(default_factory=dict)
    #: input permutations (docs/import-design.md): any other imported matrix whose ``g_idx``
    #: is an activation-order permutation into whole groups; its ROM holds the columns in the
    #: order ``P`` (consecutive groups) and the chip gathers its input by ``P``
    #: (docs/numerics.md); :meth:`read_imported` serves the permuted layer, :meth:`read` the
    #: matrix in the checkpoint's column order
    perms: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def total_parameters(self) -> int:
        return sum(s.parameters for s in self.specs)

    def dtype_of(self, name: str) -> str:
        if name in self.imported:
            return f"{self.scheme.method} {self.scheme.bits}-bit"
        return self.locations[name][1].dtype

    def module_tensors(self, name: str) -> list[str]:
        """The checkpoint's tensors that hold imported layer ``name``."""
        prefix, sch = self.imported[name], self.scheme
        return [prefix + s for s in prequant.MODULE_SUFFIXES[sch.method] if prefix + s in self]

    def __contains__(self, name: str) -> bool:
        return name in self.locations

    def nbytes(self, name: str) -> int:
        """Bytes tensor ``name`` takes in the checkpoint (an imported layer: all its tensors)."""
        if name in self.imported and self.scheme.method == mxfp4.METHOD:
            return mxfp4.nbytes(next(s.shape for s in self.specs if s.name == name))
        if name in self.imported:
            return sum(self.locations[t][1].nbytes for t in self.module_tensors(name))
        return self.locations[name][1].nbytes

    def read_imported(self, name: str) -> prequant.Imported | mxfp4.MxImported:
        """Imported layer ``name`` unpacked (InputError naming the tensor on a bad one)."""
        prefix = self.imported[name]
        where = str(self.locations[self.module_tensors(name)[0]][0].path)
        if self.scheme.method == mxfp4.METHOD:
            t = mxfp4.read_expert(_Tensors(self.locations), prefix, name, self.arch, where)
        else:
            t = prequant.read_module(_Tensors(self.locations), prefix, self.scheme, where)
        return self._fold(name, t)

    def _fold(self, name: str, t):
        if name in self.folds:
            axis, perm = self.folds[name]
            t = prequant.permute(t, axis, perm)
        if name in self.perms:
            t = prequant.permute(t, "cols", self.perms[name])
        return t

    def rom_format(self, name: str, tile_rows: dict[int, int] | None = None) -> QuantFormat:
        """Imported layer ``name``'s ROM format from its scales (and zero points, ``g_idx``)
        alone, never its codes: what ``compile --plan-only`` needs. UnsupportedError naming
        the layer when it has none (as the compile's). ``tile_rows``: as for
        :func:`maskc.ingest.prequant.to_rom`."""
        prefix = self.imported[name]
        where = str(self.locations[self.module_tensors(name)[0]][0].path)
        if self.scheme.method == mxfp4.METHOD:
            return mxfp4.rom_format(_Tensors(self.locations), prefix, name, self.arch, where)
        t = prequant.read_module(_Tensors(self.locations), prefix, self.scheme, where, False)
        return prequant.rom_format(self._fold(name, t), tile_rows)

    def read(self, name: str) -> np.ndarray:
        """Tensor ``name`` as float32 with its HF shape; raises InputError on NaN/Inf or a
        value the chip cannot represent (:mod:`maskc.limits`). An imported layer: the
        checkpoint's own dequantization (:func:`maskc.ingest.prequant.dequantize`)."""
        if name in self.imported:
            arr = prequant.dequantize(self.read_imported(name))
            if name in self.perms:  # the ROM's column order back to the checkpoint's
                arr = unpermute_cols(arr, self.perms[name])
            check_tensor(arr, name, str(self.locations[self.module_tensors(name)[0]][0].path))
            return arr
        st, _info = self.locations[name]
        arr = st.read(name).astype(np.float32, copy=False)
        if name in self.folds:  # a float gate/up_proj of a folded down_proj: rows renumbered
            arr = np.ascontiguousarray(arr[self.folds[name][1]])
        finite = np.isfinite(arr)
        if not finite.all():
            bad = int(arr.size - np.count_nonzero(finite))
            first = np.unravel_index(int(np.argmin(finite.reshape(-1))), arr.shape)
            raise InputError(
                f"{st.path}: tensor {name!r} has {bad} NaN/Inf value(s), first at index "
                f"{tuple(int(i) for i in first)}; the checkpoint is corrupt"
            )
        check_tensor(arr, name, str(st.path))
        return arr

    def iter_tensors(self) -> Iterator[tuple[TensorSpec, np.ndarray]]:
        """Yield ``(spec, float32 array)`` in canonical order, one tensor in memory at a time."""
        for spec in self.specs:
            yield spec, self.read(spec.name)

    def check_data(self, on_tensor: Callable[[str, int], None] | None = None) -> None:
        """Read every tensor once to check it is finite and in range (and a tied lm_head equals
        the embedding).

        ``on_tensor(name, bytes)`` is called after each tensor, for progress reporting.
        """
        for spec in self.specs:
            self.read(spec.name)
            if on_tensor:
                on_tensor(spec.name, self.nbytes(spec.name))
        if "lm_head.weight" in self.ignored:
            st, _ = self.locations["lm_head.weight"]
            head = st.read("lm_head.weight").astype(np.float32)
            if not np.array_equal(head, self.read("model.embed_tokens.weight")):
                raise InputError(
                    f"{st.path}: tie_word_embeddings is true but lm_head.weight differs from "
                    "model.embed_tokens.weight; set tie_word_embeddings false in config.json"
                )


class _Tensors:
    """The checkpoint's tensors across its shards, as :func:`prequant.read_module` reads them."""

    def __init__(self, locations: dict[str, tuple[SafetensorsFile, TensorInfo]]) -> None:
        self.locations = locations
        self.tensors = {n: info for n, (_st, info) in locations.items()}

    def read_raw(self, name: str, index: int | None = None) -> np.ndarray:
        return self.locations[name][0].read_raw(name, index)


def _imported(path: Path, cfg_path: Path, arch: ModelArch, locations) -> tuple:
    """A pre-quantized checkpoint's scheme, its layers (``PREFIX.weight`` -> ``PREFIX``) and
    the tensors that hold them; ``(None, {}, set())`` for a float checkpoint."""
    scheme = load_scheme(cfg_path)
    if scheme is None:
        return None, {}, set()
    if scheme.method == mxfp4.METHOD:
        tensors = {n: info for n, (_st, info) in locations.items()}
        imported = mxfp4.layers(tensors, arch, lambda n: locations[n][0].path)
    else:
        imported = {p + ".weight": p for p in prequant.modules(locations, scheme)}
    if not imported:
        suffix = prequant.MODULE_SUFFIXES[scheme.method][0]
        suffix = "_blocks" if scheme.method == mxfp4.METHOD else suffix
        raise InputError(
            f"{path}: config.json's quantization_config says {scheme.describe()} but no tensor "
            f"ends in {suffix!r}; the weights are not that checkpoint's"
        )
    for name, prefix in imported.items():
        if name in locations:
            raise InputError(
                f"{locations[name][0].path}: layer {prefix!r} has both a float {name!r} and "
                "quantized tensors; remove one"
            )
    held = {
        p + s
        for p in imported.values()
        for s in prequant.MODULE_SUFFIXES[scheme.method]
        if p + s in locations
    }
    return scheme, imported, held


def _check_exists(path: Path, what: str) -> os.stat_result:
    try:
        return path.stat()
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise InputError(f"{path}: symlink loop ({what})") from None
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            raise InputError(f"{path}: no such file or folder ({what})") from None
        raise InputError(f"{path}: cannot access {what}: {e.strerror or e}") from None


def _open_index(folder: Path) -> tuple[list[Path], dict[str, str]]:
    """Validate ``model.safetensors.index.json``; return shard paths and the weight map."""
    index_path = folder / INDEX_NAME
    idx = read_json_file(index_path, "shard index", MAX_INDEX_BYTES)
    if not isinstance(idx, dict) or not isinstance(idx.get("weight_map"), dict):
        raise InputError(f"{index_path}: must be an object with a 'weight_map' object")
    wmap = idx["weight_map"]
    if not wmap:
        raise InputError(f"{index_path}: weight_map is empty")
    shards: dict[str, Path] = {}
    for name, shard in wmap.items():
        if not isinstance(shard, str) or not shard:
            raise InputError(f"{index_path}: weight_map[{name!r}] must be a file name")
        if shard in shards:
            continue
        if (
            "/" in shard
            or "\\" in shard
            or shard in (".", "..")
            or not shard.endswith(".safetensors")
        ):
            raise InputError(
                f"{index_path}: shard name {shard!r} for {name!r} must be a plain "
                "*.safetensors file name in the model folder"
            )
        p = folder / shard
        if not os.path.lexists(p):
            raise InputError(
                f"{index_path}: names shard {shard!r} (for tensor {name!r}) which does not exist"
            )
        check_regular(p, "shard")
        shards[shard] = p
    return [shards[k] for k in sorted(shards)], wmap


def _resolve(path: Path, config: Path | None) -> tuple[Path, list[Path], dict[str, str] | None]:
    """Find config.json and the weight files for ``path``; returns (config, files, weight_map)."""
    _check_exists(path, "model")
    if path.is_dir():
        cfg = config or path / "config.json"
        if not os.path.lexists(cfg):
            raise InputError(
                f"{path}: no config.json in the model folder (give --model-config CONFIG.json)"
            )
        if (path / INDEX_NAME).exists():
            files, wmap = _open_index(path)
            return cfg, files, wmap
        if (path / SINGLE_NAME).exists():
            return cfg, [path / SINGLE_NAME], None
        others = sorted(p.name for p in path.glob("*.safetensors"))
        if others:
            raise InputError(
                f"{path}: found {', '.join(others[:3])} but neither {SINGLE_NAME} nor "
                f"{INDEX_NAME}; add the shard index"
            )
        raise InputError(
            f"{path}: no weights in the model folder (expected {SINGLE_NAME} or {INDEX_NAME})"
        )
    if config is None:
        raise InputError(
            f"{path}: a single weights file needs its config: pass --model-config CONFIG.json"
        )
    if path.suffix != ".safetensors":
        raise InputError(f"{path}: expected a .safetensors file or a model folder")
    return config, [path], None


def _load_tokenizer(path: Path, vocab_size: int) -> tuple[int, str | None]:
    """Validate tokenizer.json (:mod:`maskc.tokenizer`) and the chat template of
    tokenizer_config.json beside it (:mod:`maskc.chattemplate`): both are used once, on a
    sample, as ``emulate --chat`` will. Returns the vocabulary size and the template."""
    from maskc.chattemplate import render_chat
    from maskc.tokenizer import SAMPLE_TEXT, open_tokenizer

    template = None
    tc = optional_file(path.parent / "tokenizer_config.json", "tokenizer_config.json")
    if tc is not None:
        doc = read_json_file(tc, "tokenizer_config.json")
        template = doc.get("chat_template") if isinstance(doc, dict) else None
        if template is not None and not isinstance(template, str):
            raise InputError(f"{tc}: chat_template must be a string")
    tok = open_tokenizer(path)
    try:
        vocab = tok.vocab()
        top = max(vocab.values(), default=-1)
        if top >= vocab_size:
            raise InputError(
                f"{path}: tokenizer has token id {top}, outside the model's vocab_size {vocab_size}"
            )
        sample = SAMPLE_TEXT
        if template is not None:
            sample += render_chat(template, f"{tc}: chat_template", bos_token="", eos_token="")
        tok.decode(tok.encode(sample))
    finally:
        tok.close()
    return len(vocab), template


def _open_headers(
    path: Path, config: Path | None
) -> tuple[Path, ModelArch, list[Path], dict[str, tuple[SafetensorsFile, TensorInfo]]]:
    """config.json and every weight file's header (no tensor data): the config's path, the
    architecture, the files, and where each tensor is; the shard index checked."""
    cfg_path, files, wmap = _resolve(path, config)
    arch = load_config(cfg_path)

    locations: dict[str, tuple[SafetensorsFile, TensorInfo]] = {}
    for f in files:
        _check_exists(f, "weights")
        st = SafetensorsFile(f)
        for name, info in st.tensors.items():
            if name in locations:
                raise InputError(
                    f"{f}: tensor {name!r} also appears in {locations[name][0].path.name}"
                )
            if wmap is not None and wmap.get(name) != f.name:
                where = wmap.get(name)
                raise InputError(
                    f"{f}: holds tensor {name!r} but the shard index "
                    + (f"says it is in {where!r}" if where else "does not list it")
                )
            locations[name] = (st, info)
    if wmap is not None:
        for name, shard in wmap.items():
            if name not in locations:
                raise InputError(
                    f"{path / INDEX_NAME}: lists tensor {name!r} in {shard!r} but that shard "
                    "does not contain it"
                )
    return cfg_path, arch, files, locations


def _missing(path: Path, arch: ModelArch, name: str, more: str = "", why: str = "") -> InputError:
    return InputError(
        f"{path}: tensor {name!r}{more} is missing for {arch.architecture} with "
        f"{arch.num_layers} layers ({why or 'config.json and weights disagree?'})"
    )


def _expected(path: Path, cfg_path: Path, arch: ModelArch, names) -> list[TensorSpec]:
    """The tensors ``arch`` needs, each checked present among ``names`` (InputError naming the
    first missing one). Time O(len(names)), whatever num_hidden_layers says: when a declared
    layer has no tensor at all, the first missing tensor is found among the layers before it,
    before the declared count drives any loop."""
    present = set()
    for name in names:
        m = _LAYER.match(name)
        if m:
            present.add(int(m.group(1)))
    first_absent = 0
    while first_absent in present:
        first_absent += 1
    if first_absent < arch.num_layers:
        head = [embedding_tensor(arch)]
        for n in range(first_absent + 1):
            head += layer_tensors(arch, n)
        name = next(s.name for s in head if s.name not in names)
        why = (
            f"num_hidden_layers in config.json; the weights have {len(present)} layers: "
            "config.json and weights disagree?"
        )
        raise _missing(path, arch, name, why=why)
    specs = expected_tensors(arch, str(cfg_path))
    missing = [s.name for s in specs if s.name not in names]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise _missing(path, arch, missing[0], more)
    return specs


def declared_tensors(
    path: str | os.PathLike,
    config: str | os.PathLike | None = None,
    perms: bool = False,
    tile_rows: dict[int, int] | None = None,
) -> tuple:
    """``compile --plan-only``: the architecture, its tensors, the config's path and the ROM
    format of every imported layer, from config.json alone (``path`` a model folder or a
    config.json). When weights are at hand (a folder with weights, or a ``.safetensors`` file
    and ``config``), their headers (never their data) are first checked to hold every tensor
    the config declares. A pre-quantized checkpoint is opened as the compile opens it, and
    each imported layer's format is read from its scales alone (:meth:`Model.rom_format`).
    ``perms``: a fifth value, the names of the imported layers with an input permutation.
    ``tile_rows``: the fabric's weights per tile row by code bits (ROM groups divide them)."""
    path = Path(path)
    cfg = Path(config) if config is not None else None
    if path.is_dir():
        weights = os.path.lexists(path / INDEX_NAME) or os.path.lexists(path / SINGLE_NAME)
    else:
        weights = cfg is not None and path.suffix == ".safetensors"
    if weights:
        cfg_path, arch, _files, locations = _open_headers(path, cfg)
        if load_scheme(cfg_path) is not None:
            m = load_model(path, cfg)
            formats = {
                s.name: m.rom_format(s.name, tile_rows) for s in m.specs if s.name in m.imported
            }
            return (m.arch, m.specs, m.config_path, formats) + ((set(m.perms),) if perms else ())
        return (arch, _expected(path, cfg_path, arch, locations), cfg_path, {}) + (
            (set(),) if perms else ()
        )
    if cfg is None and not path.is_dir() and path.suffix == ".safetensors":
        raise InputError(
            f"{path}: a single weights file needs its config: pass --model-config CONFIG.json"
        )
    cfg_path = cfg or (path / "config.json" if path.is_dir() else path)
    arch = load_config(cfg_path)
    scheme = load_scheme(cfg_path)
    if scheme is not None:
        raise InputError(
            f"{cfg_path}: --plan-only of a pre-quantized checkpoint ({scheme.describe()}) needs "
            "its weights beside config.json: each layer's ROM format depends on its scales"
        )
    return (arch, expected_tensors(arch, str(cfg_path)), cfg_path, {}) + ((set(),) if perms else ())


def load_model(path: str | os.PathLike, config: str | os.PathLike | None = None) -> Model:
    """Open and validate a checkpoint (headers only; no tensor data is read).

    ``path`` is a model folder or a ``.safetensors`` file; ``config`` overrides/provides the
    config.json path. Raises :class:`InputError` (exit 3) naming the file and problem.
    """
    path = Path(path)
    cfg_path, arch, files, locations = _open_headers(
        path, Path(config) if config is not None else None
    )
    scheme, imported, held = _imported(path, cfg_path, arch, locations)
    specs = _expected(path, cfg_path, arch, set(locations) | set(imported))
    expected = {s.name for s in specs}
    for name, prefix in imported.items():
        st = locations[prefix + prequant.MODULE_SUFFIXES[scheme.method][0]][0]
        if name not in expected:
            raise InputError(
                f"{st.path}: unexpected quantized layer {prefix!r} for {arch.architecture} "
                "(unknown module, or config.json does not match the weights)"
            )
    ignored = []
    for name in sorted(locations):
        if name in expected or name in held:
            continue
        if any(p.fullmatch(name) for p in IGNORABLE_PATTERNS):
            ignored.append(name)
        elif name == "lm_head.weight" and arch.tie_word_embeddings:
            ignored.append(name)  # verified equal to the embedding by Model.check_data
        else:
            raise InputError(
                f"{locations[name][0].path}: unexpected tensor {name!r} for "
                f"{arch.architecture} (unknown module, or config.json does not match the weights)"
            )
    for spec in specs:
        if spec.name in imported and scheme.method == mxfp4.METHOD:
            continue  # shapes checked from the headers by mxfp4.layers
        if spec.name in imported:
            prefix = imported[spec.name]
            st = locations[prefix + prequant.MODULE_SUFFIXES[scheme.method][0]][0]
            shape = prequant.module_shape(_Tensors(locations), prefix, scheme, str(st.path))
            if shape != spec.shape:
                raise InputError(
                    f"{st.path}: quantized layer {prefix!r} has shape {list(shape)}, expected "
                    f"{list(spec.shape)} from config.json"
                )
            continue
        st, info = locations[spec.name]
        if info.shape != spec.shape:
            raise InputError(
                f"{st.path}: tensor {spec.name!r} has shape {list(info.shape)}, expected "
                f"{list(spec.shape)} from config.json"
            )
        if info.dtype not in SUPPORTED_DTYPES:
            raise UnsupportedError(
                f"{st.path}: tensor {spec.name!r} has dtype {info.dtype}; maskc reads F32, F16 "
                "and BF16 weights (convert the checkpoint to one of these)"
            )
    if "lm_head.weight" in ignored:
        info = locations["lm_head.weight"][1]
        if info.shape != (arch.vocab_size, arch.hidden_size) or info.dtype not in SUPPORTED_DTYPES:
            raise InputError(
                f"{locations['lm_head.weight'][0].path}: tied lm_head.weight has shape "
                f"{list(info.shape)} {info.dtype}, expected the embedding's shape"
            )

    folds, perms = _folds(specs, imported, scheme, locations)
    tok_path = optional_file(cfg_path.parent / "tokenizer.json", "tokenizer.json")
    tok_vocab, template = (
        _load_tokenizer(tok_path, arch.vocab_size) if tok_path is not None else (None, None)
    )
    return Model(
        path=path,
        config_path=cfg_path,
        arch=arch,
        specs=specs,
        locations=locations,
        files=files,
        tokenizer_path=tok_path if tok_vocab is not None else None,
        tokenizer_vocab_size=tok_vocab,
        chat_template=template,
        ignored=ignored,
        scheme=scheme,
        imported=imported,
        folds=folds,
        perms=perms,
    )


def _folds(specs, imported, scheme, locations) -> tuple[dict, dict]:
    """The desc_act folds and input permutations of a checkpoint (:attr:`Model.folds`,
    :attr:`Model.perms`): for each imported matrix whose ``g_idx`` (read here: C integers) is
    an activation-order permutation into whole groups, a down_proj's columns and its gate/up
    projections' rows (same layer, same expert) are renumbered (a fold: free at run time);
    any other transformer-block matrix gets the permutation as its input permutation."""
    if scheme is None or scheme.method not in ("gptq", "compressed-tensors"):
        return {}, {}
    suffix = ".g_idx" if scheme.method == "gptq" else ".weight_g_idx"
    by_role = {(s.layer, s.expert, s.role): s.name for s in specs}
    out, perms = {}, {}
    for s in specs:
        if s.name not in imported or s.layer is None:
            continue  # the embedding and lm_head: to_rom refuses a permuting g_idx
        g_name = imported[s.name] + suffix
        if g_name not in locations or scheme.group_size == -1:
            continue
        info = locations[g_name][1]
        if info.dtype not in ("I32", "I64") or info.shape != (s.shape[1],):
            continue  # read_module refuses it, naming the tensor
        g_idx = locations[g_name][0].read_raw(g_name).astype(np.int64)
        if np.array_equal(g_idx, np.arange(s.shape[1]) // scheme.group_size):
            continue
        perm = prequant.fold_perm(g_idx, scheme.group_size)
        if perm is None:
            continue  # to_rom refuses it, naming the tensor
        if s.role not in prequant.FOLD_ROLES:
            perms[s.name] = perm
            continue
        out[s.name] = ("cols", perm)
        for role in prequant.FOLD_ROLES[s.role]:
            out[by_role[(s.layer, s.expert, role)]] = ("rows", perm)
    return out, perms
