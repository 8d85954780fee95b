"""Quantization in row blocks: one unit of work (the model-level tensors, or one decoder layer)
read from the checkpoint a block of rows at a time, quantized, and written straight into its
``quant/`` safetensors file.

Memory of a unit, whatever the tensor size: the float32 rows of one block (at most
:data:`BLOCK_ELEMS` weights for ``rtn``/``lsq``; :data:`~maskc.quantize.matrix.CHUNK_ROWS` rows
for ``gptq``), the quantizer's temporaries of that block, and one float64 buffer of
``CHUNK_ROWS`` rows of a tensor for its error metric (the report sums the squared error over
blocks of ``CHUNK_ROWS`` rows of each tensor: the same sums in the same order as always, so the
report is byte-identical). Codebook settings fit their levels over the whole tensor and are the
exception: they hold the tensor (stack) in float.

:func:`quantize_unit` is the unit as a worker runs it: small picklable arguments (paths, the
layer index, the settings as JSON values), the model opened by the worker itself, the file
written under a temporary name and renamed into place (a retried unit is harmless), a small
JSON-able result. Any :class:`concurrent.futures.Executor` can run it.
"""

from __future__ import annotations

import functools
import json
import math
import os
import struct
from collections import deque
from concurrent.futures import Executor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from maskc import parallel
from maskc.errors import InputError
from maskc.fsutil import open_regular
from maskc.limits import WEIGHT_LIMIT
from maskc.quantize import fp4
from maskc.quantize.calibrate import EXPERT_SITE_PREFIX, site_of
from maskc.quantize.imported import imported_formats, perm_layout, write_imported
from maskc.quantize.matrix import CHUNK_ROWS, quantize_stack
from maskc.quantize.profiles import format_for
from maskc.quantize.rules import QUANTIZABLE_ROLES, QuantSetting
from maskc.quantize.store import file_for, index_entry_of
from maskc.romformat import QuantFormat, fields_of
from maskc.safetensors_io import SUPPORTED_DTYPES, WRITABLE

#: Weights of one block of rows quantized at once by ``rtn`` and ``lsq`` (their temporaries are
#: a few dozen bytes per weight: ~0.2 GB). Results do not depend on it: rows are independent.
BLOCK_ELEMS = 1 << 22


# -- reading rows --------------------------------------------------------------------------------


class RowReader:
    """Rows of a model's 2-d tensors as float32, read with positioned reads (no mmap: the pages
    read do not stay in the process's resident set)."""

    def __init__(self, model) -> None:
        self.model = model
        self._fds: dict[Path, int] = {}
        self._imported: tuple[str, np.ndarray] | None = None  # the last imported layer read

    def rows(self, name: str, a: int, b: int) -> np.ndarray:
        """float32 rows ``a:b`` of ``name``: the same values as ``model.read(name)[a:b]``, with
        the same errors (a non-finite or out-of-range value raises the whole tensor's message)."""
        if name in self.model.imported or name in self.model.folds:  # read whole (rows of a
            # folded matrix are renumbered; an imported layer's codes are read whole)
            if self._imported is None or self._imported[0] != name:
                self._imported = None
                self._imported = (name, self.model.read(name))
            return self._imported[1][a:b]
        st, info = self.model.locations[name]
        if info.dtype not in SUPPORTED_DTYPES or len(info.shape) != 2:
            return self.model.read(name)[a:b]
        dt = np.dtype(WRITABLE[info.dtype])
        cols = info.shape[1]
        out = np.empty((b - a, cols), dtype=dt)
        fd = self._fds.get(st.path)
        if fd is None:
            with open_regular(st.path, "safetensors file") as f:  # never blocks on a FIFO
                fd = self._fds[st.path] = os.dup(f.fileno())
        buf = memoryview(out.reshape(-1).view(np.uint8))
        pos, got = info.begin + a * cols * dt.itemsize, 0
        while got < len(buf):
            n = os.preadv(fd, [buf[got:]], pos + got)
            if n <= 0:
                break
            got += n
        if got != len(buf):
            self.model.read(name)  # raises the checkpoint's error
            raise InputError(f"{st.path}: tensor {name!r}: file ended early")
        arr = out.astype(np.float32, copy=False)
        if not np.isfinite(arr).all() or (arr.size and max(arr.max(), -arr.min()) >= WEIGHT_LIMIT):
            self.model.read(name)  # raises the error naming the count and the first index
        return arr

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        self._imported = None


# -- writing a safetensors file field by field ---------------------------------------------------


class StreamWriter:
    """A safetensors file whose layout (every tensor's dtype and shape) is known up front,
    written in pieces at their offsets; byte-identical to ``write_safetensors`` of the same
    arrays. Written under a temporary name; :meth:`close` renames it into place."""

    def __init__(self, path: Path, layout: dict[str, tuple[np.dtype, tuple]], metadata) -> None:
        by_np = {v: k for k, v in WRITABLE.items()}
        header: dict[str, object] = {"__metadata__": {k: v for k, v in sorted(metadata.items())}}
        self.where: dict[str, tuple[int, np.dtype, tuple]] = {}
        offset = 0
        for name in sorted(layout):
            dt, shape = np.dtype(layout[name][0]), tuple(layout[name][1])
            nbytes = math.prod(shape) * dt.itemsize
            header[name] = {
                "dtype": by_np[dt],
                "shape": list(shape),
                "data_offsets": [offset, offset + nbytes],
            }
            self.where[name] = (offset, dt, shape)
            offset += nbytes
        blob = json.dumps(
            header, separators=(",", ":"), ensure_ascii=True, allow_nan=False
        ).encode()
        blob += b" " * (-len(blob) % 8)
        self.base = 8 + len(blob)
        self.size = self.base + offset
        self.written = 0
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.name}.tmp{os.getpid()}")
        self.f = open(self.tmp, "wb")  # noqa: SIM115 (closed by close() or abort())
        self.f.write(struct.pack("<Q", len(blob)) + blob)
        self.f.truncate(self.size)

    def write_rows(self, name: str, r0: int, arr: np.ndarray) -> None:
        """``arr`` as rows ``r0 ..`` of tensor ``name`` (the whole tensor when 1-d)."""
        offset, dt, shape = self.where[name]
        arr = np.ascontiguousarray(arr, dtype=dt)
        if arr.shape[1:] != shape[1:] or r0 + arr.shape[0] > shape[0]:
            raise ValueError(f"{name}: rows {r0}+{arr.shape} do not fit {shape}")
        row = math.prod(shape[1:]) * dt.itemsize
        self.f.seek(self.base + offset + r0 * row)
        self.f.write(arr.reshape(-1).view(np.uint8).data)
        self.written += arr.nbytes

    def close(self) -> None:
        self.f.close()
        if self.written != self.size - self.base:
            self.tmp.unlink(missing_ok=True)
            want = self.size - self.base
            raise ValueError(f"{self.path}: {self.written} of {want} bytes written")
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self.f.close()
        self.tmp.unlink(missing_ok=True)


# -- the error metric, in the report's exact summation order -------------------------------------


class ErrorSums:
    """``rel_error`` and ``snr_db`` of one tensor (:func:`~maskc.quantize.matrix.weight_metrics`)
    fed in row order: the float64 sums over each block of ``CHUNK_ROWS`` rows are computed on
    that whole block, as ``weight_metrics`` does, so the result is identical."""

    def __init__(self, name: str, shape: tuple[int, int], reader: RowReader) -> None:
        self.name, (self.rows, self.cols), self.reader = name, shape, reader
        self.num = self.den = 0.0
        self.block0 = 0
        self.buf: np.ndarray | None = None

    def add(self, r0: int, w: np.ndarray, deq: np.ndarray) -> None:
        """Rows ``r0 ..`` of the tensor (float32) and their dequantized values, the next rows
        after the previous call's; they may cross one or more ``CHUNK_ROWS`` blocks (a stack's
        row blocks need not align with a member's, e.g. an intermediate size of 5,632)."""
        while len(w):
            take = min(len(w), self.block0 + min(CHUNK_ROWS, self.rows - self.block0) - r0)
            self._add(r0, w[:take], deq[:take])
            r0, w, deq = r0 + take, w[take:], deq[take:]

    def _add(self, r0: int, w: np.ndarray, deq: np.ndarray) -> None:
        """Rows ``r0 ..`` within the current block of ``CHUNK_ROWS`` rows."""
        n = min(CHUNK_ROWS, self.rows - self.block0)
        if self.buf is None:
            self.buf = np.empty((n, self.cols), dtype=np.float64)
        a = r0 - self.block0
        d = self.buf[a : a + w.shape[0]]
        np.subtract(w.astype(np.float64), deq, out=d)
        np.multiply(d, d, out=d)
        if a + w.shape[0] == n:  # the block is complete
            self.num += float(self.buf[:n].sum())
            for s in range(0, n, max(1, BLOCK_ELEMS // max(self.cols, 1))):
                e = min(s + max(1, BLOCK_ELEMS // max(self.cols, 1)), n)
                x = self.buf[s:e]
                x[...] = self.reader.rows(self.name, self.block0 + s, self.block0 + e)
                np.multiply(x, x, out=x)
            self.den += float(self.buf[:n].sum())
            self.block0 += n
            self.buf = None

    def result(self) -> dict[str, float]:
        num, den = math.sqrt(self.num), math.sqrt(self.den)
        rel = num / den if den else (0.0 if num == 0 else None)  # None: an all-zero tensor
        snr = -20 * math.log10(rel) if rel else None  # None: exact (or all zero)
        return {"rel_error": rel, "snr_db": snr}


# -- one unit ------------------------------------------------------------------------------------


@dataclass
class BlockPool:
    """Where a stack's row blocks are quantized when a unit runs in the compile's own process
    (with calibration, layer after layer): rows are independent given the statistics, so the
    blocks of one stack run side by side and are written in row order (the build does not
    depend on the pool). ``executor`` runs :func:`quantize_stack` calls: local threads (numpy
    releases the GIL in the quantizer's array work) or a Dask cluster's executor; ``ahead``
    blocks are in flight at once (their float rows are held until written). ``local``: threads
    for blocks whose statistics are too big to ship to a cluster (gptq's ``[in, in]``
    Hessian); None when ``executor`` is itself local."""

    executor: Executor
    ahead: int
    local: Executor | None = None


def report_row(spec, setting, fmt: QuantFormat | None, metrics: dict, bpw: float) -> dict:
    """The quantization report's row of one tensor (fmt None: kept in float)."""
    q = fmt is not None
    return {
        "name": spec.name,
        "role": spec.role,
        "layer": spec.layer,
        "shape": list(spec.shape),
        "quantized": q,
        "bits": setting.bits if q else None,
        "group_size": setting.group_size if q else None,
        "method": setting.method if q else None,
        "symmetric": setting.symmetric if q else None,
        "scale_bits": (fmt.group_field_bits if fmt.fp4 else setting.scale_bits) if q else None,
        **({"format": fmt.kind} if q and fmt.fp4 else {}),
        "bpw": bpw,
        "rom_bits": fmt.rom_bits(*spec.shape) if q else None,
        **metrics,
    }


def _groups(specs, settings: dict[str, QuantSetting]):
    """The unit's float tensors and its stacks: matrices that share an input site and a setting
    (in spec order), as ``[(setting, [spec, ...]), ...]``."""
    floats, stacks = [], {}
    for spec in specs:
        s = settings.get(spec.name)
        if spec.role not in QUANTIZABLE_ROLES or s is None or s.skip:
            floats.append(spec)
        else:  # FP4 matrices alone (nvfp4's tensor scale is each matrix's own), with their
            # input site's calibration statistics all the same
            site = site_of(spec) or spec.name
            alone = spec.name if s.format != "int" else None
            stacks.setdefault((site, s, alone), []).append(spec)
    return floats, [(site, s, g) for (site, s, _alone), g in stacks.items()]


def uncalibrated(setting: QuantSetting) -> QuantSetting:
    """The setting of a matrix that has no calibration statistics (a routed expert no
    calibration token selected): gptq, which needs them, becomes lsq (an FP4 format's:
    search); others are unchanged."""
    if setting.method != "gptq":
        return setting
    return replace(setting, method="lsq" if setting.format == "int" else "search")


def run_unit(
    model,
    build: Path,
    layer: int | None,
    settings: dict[str, QuantSetting],
    stats=None,
    keep: dict[str, np.ndarray | None] | None = None,
    progress=None,
    pool: BlockPool | None = None,
    tile_rows: dict[int, int] | None = None,
) -> tuple[list[dict], dict[str, dict], dict[str, np.ndarray]]:
    """Quantize the tensors of ``layer`` (None: the model-level ones) into ``file_for(layer)``.

    ``stats``: calibration statistics by input site (or None: not calibrating; a routed
    expert's site missing from them: quantized as :func:`uncalibrated`). ``keep``: tensor
    name -> row indices (None: every row) whose dequantized float32 values to return.
    ``progress(n, name)`` is called after each tensor. ``pool``: where the row blocks are
    quantized (None: here, one after the other). ``tile_rows``: the fabric's weights per tile
    row by code bits, which an imported layer's ROM groups divide. Returns ``(report rows,
    index entries, kept)``."""
    specs = [s for s in model.specs if s.layer == layer]
    file = file_for(layer)
    imported = [s for s in specs if s.name in model.imported]  # exact, never requantized
    floats, stacks = _groups([s for s in specs if s.name not in model.imported], settings)
    fmts = imported_formats(model, imported, tile_rows)
    for _site, setting, group in stacks:
        gname = "+".join(s.name for s in group)
        setting.check_quantizable(gname)
        fmt = format_for(setting)
        fmt.validate(gname)
        fmts.update({s.name: fmt for s in group})
    layout = {}
    for spec in floats:
        layout[spec.name] = (np.float32, spec.shape)
    for spec in specs:
        if spec.name in fmts:
            f = fmts[spec.name]
            for fd in fields_of(f):
                layout[f"{spec.name}/{fd.name}"] = (fd.dtype, fd.shape(f, *spec.shape))
    layout.update(perm_layout(model, imported))
    meta = "quantized model-level tensors" if layer is None else "quantized layer"
    keep = keep or {}
    rows: list[dict] = []
    index: dict[str, dict] = {}
    kept: dict[str, np.ndarray] = {}
    reader = RowReader(model)
    out = StreamWriter(build / file, layout, {"maskc": meta})
    try:
        for spec in floats:
            w = model.read(spec.name)
            out.write_rows(spec.name, 0, w)
            index[spec.name] = {"file": file, "kind": "float", "shape": list(spec.shape)}
            rows.append(report_row(spec, settings.get(spec.name), None, {}, 32.0))
            if spec.name in keep:
                kept[spec.name] = w if keep[spec.name] is None else w[keep[spec.name]]
            if progress:
                progress(spec.parameters, spec.name)
        for site, setting, group in stacks:
            st = stats.get(site) if stats is not None else None
            if st is None and stats is not None and site.startswith(EXPERT_SITE_PREFIX):
                # an expert no calibration token selected: quantized without calibration
                setting = uncalibrated(setting)
            args = (group, setting, st, keep, kept, rows, index, file, progress, pool)
            _stack(model, reader, out, *args)
        for spec in imported:
            write_imported(model, spec, out, file, keep, kept, rows, index, progress, tile_rows)
        out.close()
    except BaseException:
        out.abort()
        raise
    finally:
        reader.close()
    return rows, index, kept


def _stack(model, reader, out, group, setting, st, keep, kept, rows, index, file, progress, pool):
    """Quantize one stack of matrices block by block into ``out``."""
    imp = None if st is None else st.importance
    hes = None if st is None else st.hessian
    gname = "+".join(s.name for s in group)
    starts = np.cumsum([0] + [s.shape[0] for s in group])
    total = int(starts[-1])
    cols = group[0].shape[1]
    fmt = format_for(setting)
    if setting.codebook:  # levels fitted over the whole stack: one block
        blocks = [(0, total)]
    elif setting.method == "gptq":  # the chunks quantize_matrix has always used
        blocks = [(a, min(a + CHUNK_ROWS, total)) for a in range(0, total, CHUNK_ROWS)]
    else:
        step = max(1, min(CHUNK_ROWS, BLOCK_ELEMS // fmt.padded_cols(cols)))
        blocks = [(a, min(a + step, total)) for a in range(0, total, step)]
    ts = None
    if fmt.kind == "nvfp4":  # the tensor scale needs the whole matrix's amax: a pre-pass
        amax = 0.0
        for a, b in blocks:
            amax = max(amax, float(np.abs(reader.rows(gname, a, b)).max(initial=0.0)))
        ts = fp4.nv_tensor_scale_of(amax)
    sums = {s.name: ErrorSums(s.name, s.shape, reader) for s in group}
    kept_rows = {s.name: [] for s in group if s.name in keep}
    levels = None
    method = setting.method

    def read(a: int, b: int):
        parts = []  # (spec, tensor row a0, stack row a1, rows)
        for k, spec in enumerate(group):
            lo, hi = max(a, int(starts[k])), min(b, int(starts[k + 1]))
            if lo < hi:
                parts.append((spec, lo - int(starts[k]), lo - a, hi - lo))
        w = [reader.rows(s.name, t0, t0 + n) for s, t0, _b0, n in parts]
        x = w[0] if len(w) == 1 else np.concatenate(w, axis=0)
        return parts, w, x

    tensor_m = None
    for parts, w, q in _quantized_blocks(blocks, read, gname, setting, imp, hes, pool, ts):
        tensor_m = q.tensor_m
        method = q.method
        if levels is None:
            levels = q.levels
        elif not np.array_equal(levels, q.levels):
            raise ValueError(f"{gname}: row blocks got different level tables")
        deq = q.dequantize()
        for (spec, t0, b0, n), wp in zip(parts, w, strict=True):
            for fd in fields_of(fmt):
                if fd.axis not in ("level", "tensor"):
                    out.write_rows(f"{spec.name}/{fd.name}", t0, getattr(q, fd.name)[b0 : b0 + n])
            sums[spec.name].add(t0, wp, deq[b0 : b0 + n])
            if spec.name in kept_rows:
                kept_rows[spec.name].append((t0, deq[b0 : b0 + n]))
        del w, q, deq
    for spec in group:
        out.write_rows(f"{spec.name}/levels", 0, levels)
        if tensor_m is not None:
            out.write_rows(f"{spec.name}/tensor_m", 0, tensor_m)
        index[spec.name] = index_entry_of(fmt, method, spec.shape, file)
        bpw = fmt.bits_per_weight(*spec.shape)
        rows.append(report_row(spec, setting, fmt, sums[spec.name].result(), bpw))
        if spec.name in kept_rows:
            want = keep[spec.name]
            full = (
                np.concatenate([d for _, d in kept_rows.pop(spec.name)])
                if want is None
                else _pick(kept_rows.pop(spec.name), want, spec.shape[1])
            )
            kept[spec.name] = full
        if progress:
            progress(spec.parameters, spec.name)


def _quantized_blocks(blocks, read, gname, setting, imp, hes, pool, ts=None):
    """``(parts, float rows, QuantTensor)`` of each row block, in row order; with ``pool``,
    ``pool.ahead`` blocks are being quantized while the caller writes the one before them.
    ``ts``: nvfp4's tensor scale (of the whole matrix)."""
    if pool is None or pool.ahead <= 1 or len(blocks) == 1:
        for a, b in blocks:
            parts, w, x = read(a, b)
            (q,) = quantize_stack([gname], [x], setting, imp, hes, ts, a)
            yield parts, w, q
        return
    ex = pool.executor if hes is None or pool.local is None else pool.local
    pending: deque = deque()
    try:
        for a, b in blocks:
            parts, w, x = read(a, b)
            fut = ex.submit(quantize_stack, [gname], [x], setting, imp, hes, ts, a)
            pending.append((parts, w, fut))
            del x
            if len(pending) > pool.ahead:
                parts, w, f = pending.popleft()
                yield parts, w, f.result()[0]
        while pending:
            parts, w, f = pending.popleft()
            yield parts, w, f.result()[0]
    finally:
        for _p, _w, f in pending:  # an error or an interrupt: drop what was not written
            f.cancel()


def _pick(blocks: list[tuple[int, np.ndarray]], want: np.ndarray, cols: int) -> np.ndarray:
    out = np.empty((len(want), cols), dtype=np.float32)
    for t0, d in blocks:
        sel = (want >= t0) & (want < t0 + d.shape[0])
        out[sel] = d[want[sel] - t0]
    return out


def settings_json(settings: dict[str, QuantSetting], names) -> dict[str, dict]:
    """The settings of tensors ``names`` as JSON values (for :func:`quantize_unit`)."""
    return {n: asdict(settings[n]) for n in names if n in settings}


@functools.lru_cache(maxsize=2)
def _open_model(model_path: str, config_path: str | None):
    """The model a worker reads (opened once per worker process: headers and tokenizer)."""
    from maskc.ingest import load_model

    return load_model(model_path, config_path)


def quantize_unit(
    model_path: str,
    config_path: str | None,
    build: str,
    layer: int | None,
    settings: dict,
    tile_rows: dict[int, int] | None = None,
) -> dict:
    """One unit as a worker runs it (no calibration): opens the model at ``model_path``
    itself, writes ``build``/quant/'s file of ``layer`` (None: the model-level tensors)
    atomically and returns ``{"layer", "rows", "index"}`` (JSON values)."""
    model = _open_model(model_path, config_path)
    sets = {n: QuantSetting(**d) for n, d in settings.items()}
    rows, index, _ = run_unit(model, Path(build), layer, sets, tile_rows=tile_rows)
    return {"layer": layer, "rows": rows, "index": index}


#: What the quantization workers of a compile may hold together (the compile's own process
#: holds little meanwhile: the model's headers and the report rows).
WORKERS_BYTES = 9 << 28  # 2.25 GiB
#: A worker's interpreter, numpy and maskc, resident.
WORKER_BASE_BYTES = 200 << 20


def unit_bytes(model) -> int:
    """Upper estimate of one unit's memory: a block's quantizer temporaries (float64 grouped
    copy, float32 buffers: ~60 bytes a weight), the error metric's float64 block of the widest
    matrix, and the interpreter."""
    cols = max((s.shape[1] for s in model.specs if len(s.shape) == 2), default=1)
    return WORKER_BASE_BYTES + 60 * BLOCK_ELEMS + 8 * CHUNK_ROWS * cols


def quant_workers(model, jobs: int | None) -> int:
    """Worker processes for the units of ``model``: ``jobs`` (None: one per core), at most one
    per unit and at most as many as :data:`WORKERS_BYTES` holds, at least one."""
    n = jobs if jobs is not None else parallel.usable_cpus()
    return max(1, min(n, model.arch.num_layers + 1, WORKERS_BYTES // unit_bytes(model)))
