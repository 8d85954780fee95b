"""A streaming GDSII reader for ``maskc verify``: the file is memory-mapped, a compiled (numba)
pass finds every structure, and each structure's elements are decoded into numpy arrays only
when the check needs it. A SmolLM2 via layer holds 41 million references; gdstk, which reads
OASIS here and GDS in the tests, holds them as objects (15 GB and 9 minutes for that file).

Every record type of GDSII release 6 is understood; elements other than BOUNDARY, BOX, SREF
and AREF are reported (a mask layer of vias and straps has none). References with a
transformation (STRANS reflection, MAG, ANGLE) are flagged. Coordinates are scaled from the
file's UNITS to the reader's database unit.
"""

from __future__ import annotations

import mmap

import numpy as np
from numba import njit

#: element kinds decoded by :func:`_elements`
SHAPE, SREF, AREF, OTHER = 0, 1, 2, 3


@njit(cache=True)
def _fnv(buf, off, n):
    h = np.uint64(14695981039346656037)
    for i in range(n):
        c = buf[off + i]
        if c == 0:  # the padding of odd-length names
            break
        h = (h ^ np.uint64(c)) * np.uint64(1099511628211)
    return h


@njit(cache=True)
def _structures(buf):
    """Walk every record: ``(status, units offset, [start, name off, name len, end] per
    structure)``; status 0 ok, else the byte offset + 1 of a malformed record."""
    n = len(buf)
    out = np.zeros((max(16, n // 64), 4), np.int64)
    k = 0
    pos = 0
    units = -1
    while pos + 4 <= n:
        L = (np.int64(buf[pos]) << 8) | np.int64(buf[pos + 1])
        rt = buf[pos + 2]
        if L < 4 or pos + L > n or L % 2:
            return pos + 1, units, out[:k]
        if rt == 0x03:
            units = pos + 4
        elif rt == 0x05:
            if k == len(out):
                bigger = np.zeros((2 * len(out), 4), np.int64)
                bigger[:k] = out[:k]
                out = bigger
            out[k, 0] = pos
            out[k, 3] = -1
        elif rt == 0x06 and k < len(out):
            out[k, 1] = pos + 4
            out[k, 2] = L - 4
        elif rt == 0x07:
            out[k, 3] = pos + L
            k += 1
        elif rt == 0x04:
            return 0, units, out[:k]
        pos += L
    return n + 1, units, out[:k]


@njit(cache=True)
def _i32(buf, p):
    v = (np.int64(buf[p]) << 24) | (np.int64(buf[p + 1]) << 16) | (np.int64(buf[p + 2]) << 8)
    v |= np.int64(buf[p + 3])
    return v - (np.int64(1) << 32) if v >= (np.int64(1) << 31) else v


@njit(cache=True)
def _i16(buf, p):
    v = (np.int64(buf[p]) << 8) | np.int64(buf[p + 1])
    return v - 65536 if v >= 32768 else v


@njit(cache=True)
def _elements(buf, start, end):
    """The elements of one structure (bytes ``start:end``): int64 ``[n, 14]`` rows of (kind,
    layer, datatype, name hash (refs), x0, y0, x1, y1, cols, rows, transformed, points, x2,
    y2): shapes give their bounding box; SREFs their origin (x0, y0); AREFs their origin, the
    end of the column vector (x1, y1) and of the row vector (x2, y2); ``points`` the XY
    count."""
    cap = (end - start) // 16 + 1
    out = np.zeros((cap, 14), np.int64)
    k = -1
    pos = start
    while pos + 4 <= end:
        L = (np.int64(buf[pos]) << 8) | np.int64(buf[pos + 1])
        rt = buf[pos + 2]
        d = pos + 4
        if rt in (0x08, 0x2D):  # BOUNDARY, BOX
            k += 1
            out[k, 0] = 0
        elif rt == 0x0A or rt == 0x0B:  # SREF, AREF
            k += 1
            out[k, 0] = 1 if rt == 0x0A else 2
            out[k, 8] = 1
            out[k, 9] = 1
        elif rt in (0x09, 0x0C, 0x15):  # PATH, TEXT, NODE
            k += 1
            out[k, 0] = 3
        elif k >= 0:
            if rt == 0x0D:
                out[k, 1] = _i16(buf, d)
            elif rt == 0x0E or rt == 0x2E:  # DATATYPE, BOXTYPE
                out[k, 2] = _i16(buf, d)
            elif rt == 0x12:  # SNAME
                out[k, 3] = np.int64(_fnv(buf, d, L - 4))
            elif rt == 0x13:  # COLROW
                out[k, 8] = _i16(buf, d)
                out[k, 9] = _i16(buf, d + 2)
            elif rt == 0x1A or rt == 0x1B or rt == 0x1C:  # STRANS, MAG, ANGLE
                if rt != 0x1A or _i16(buf, d) != 0:
                    out[k, 10] = 1
            elif rt == 0x10:  # XY
                npt = (L - 4) // 8
                out[k, 11] = npt
                if out[k, 0] == 0 or out[k, 0] == 3:
                    x0 = y0 = np.int64(1) << 40
                    x1 = y1 = -(np.int64(1) << 40)
                    for j in range(npt):
                        x = _i32(buf, d + 8 * j)
                        y = _i32(buf, d + 8 * j + 4)
                        x0, y0, x1, y1 = min(x0, x), min(y0, y), max(x1, x), max(y1, y)
                    out[k, 4], out[k, 5], out[k, 6], out[k, 7] = x0, y0, x1, y1
                else:
                    out[k, 4] = _i32(buf, d)
                    out[k, 5] = _i32(buf, d + 4)
                    if npt == 3:
                        out[k, 6] = _i32(buf, d + 8)
                        out[k, 7] = _i32(buf, d + 12)
                        out[k, 12] = _i32(buf, d + 16)
                        out[k, 13] = _i32(buf, d + 20)
        pos += L
    return out[: k + 1]


@njit(cache=True)
def _elements_many(buf, st, ids):
    """:func:`_elements` of every structure in ``ids``, concatenated, and each row's position
    in ``ids``."""
    parts = []
    total = 0
    for j in range(len(ids)):
        e = _elements(buf, st[ids[j], 0], st[ids[j], 3])
        parts.append(e)
        total += len(e)
    out = np.zeros((total, 14), np.int64)
    owner = np.zeros(total, np.int64)
    k = 0
    for j in range(len(ids)):
        e = parts[j]
        out[k : k + len(e)] = e
        owner[k : k + len(e)] = j
        k += len(e)
    return out, owner


def _real8(b: bytes) -> float:
    sign = -1 if b[0] & 0x80 else 1
    exp = (b[0] & 0x7F) - 64
    mant = int.from_bytes(b[1:8], "big") / (1 << 56)
    return sign * mant * 16.0**exp


class GdsFile:
    """One GDSII file, memory-mapped. ``names``: structure names in file order; ``index``:
    name -> structure number; elements of a structure via :meth:`elements`."""

    def __init__(self, path: str, dbu_m: float) -> None:
        self._f = open(path, "rb")  # noqa: SIM115 (closed by close())
        size = self._f.seek(0, 2)
        if size == 0:
            raise ValueError("empty file")
        self._mm = mmap.mmap(self._f.fileno(), 0, access=mmap.ACCESS_READ)
        self.buf = np.frombuffer(self._mm, np.uint8)
        status, units, st = _structures(self.buf)
        if status:
            raise ValueError(f"malformed GDSII record at byte {status - 1}")
        if units < 0:
            raise ValueError("no UNITS record")
        file_db = _real8(bytes(self.buf[units + 8 : units + 16]))
        self.scale = file_db / dbu_m
        if abs(self.scale - round(self.scale)) > 1e-9 or round(self.scale) < 1:
            raise ValueError(f"database unit {file_db:g} m is not a multiple of {dbu_m:g} m")
        self.scale = round(self.scale)
        self.st = st
        self.names = [
            bytes(self.buf[o : o + n]).rstrip(b"\0").decode("ascii", "replace")
            for _, o, n, _ in st.tolist()
        ]
        self.index = {n: i for i, n in enumerate(self.names)}
        if len(self.index) != len(self.names):
            raise ValueError("two structures have the same name")
        hashes = np.array([_fnv(self.buf, o, n) for _, o, n, _ in st.tolist()], np.uint64)
        if len(np.unique(hashes)) != len(hashes):
            raise ValueError("structure names collide in the reader's hash")
        h = hashes.view(np.int64)  # the elements' hashes are int64 too
        order = np.argsort(h)
        self._h, self._hi = h[order], order

    def elements(self, i: int) -> np.ndarray:
        return self.elements_many(np.array([i]))[0]

    def elements_many(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        e, owner = _elements_many(self.buf, self.st, ids.astype(np.int64))
        if self.scale != 1:
            e[:, 4:8] *= self.scale
            e[:, 12:14] *= self.scale
        return e, owner

    def lookup(self, hashes: np.ndarray) -> np.ndarray:
        """Structure numbers of name hashes (-1: no such structure)."""
        j = np.searchsorted(self._h, hashes)
        j = np.minimum(j, len(self._h) - 1)
        return np.where(self._h[j] == hashes, self._hi[j], -1)

    def close(self) -> None:
        del self.buf
        self._mm.close()
        self._f.close()


def _ragged(starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Concatenated ``arange(start, start + len)`` of every pair."""
    idx = np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens)
    return idx + np.repeat(starts, lens)


class GdsFlattener:
    """Lower-left corners (dbu) of every rectangle on ``layer`` inside a structure, hierarchy
    flattened, vectorized over whole sets of structures. Every structure that is not a tile
    (``T<die>_<x>_<y>``) or a top cell is flattened once up front and kept (the library of
    word and value cells: bounded by its 2^20 words, not by the model). ``size``: the via
    size every rectangle must have (``None``: any). Problems found go to ``problems``."""

    def __init__(self, gf: GdsFile, layer: tuple[int, int], size: int | None) -> None:
        import re

        self.gf, self.layer, self.size = gf, layer, size
        self.problems: list[str] = []
        n = len(gf.names)
        self.start = np.full(n, -1, np.int64)
        self.count = np.full(n, -1, np.int64)
        self.pos = np.zeros((0, 2), np.int64)
        lib = [
            i
            for i, nm in enumerate(gf.names)
            if not re.fullmatch(r"T\d+_\d+_\d+|(VIA|METAL)_.*", nm)
        ]
        if lib:
            self._cache(np.array(lib, np.int64), 0)

    def _problem(self, i: int, text: str) -> None:
        if len(self.problems) < 20:
            self.problems.append(f"cell {self.gf.names[i]}: {text}")

    def _refs(self, e: np.ndarray, owner: np.ndarray, ids: np.ndarray):
        """References of element rows -> (child structure, origin [n, 2], owner), array
        references expanded; problems recorded."""
        r = (e[:, 0] == SREF) | (e[:, 0] == AREF)
        e, owner = e[r], owner[r]
        for j in np.unique(owner[e[:, 10] != 0])[:3].tolist():
            self._problem(int(ids[j]), "a reference is rotated, mirrored or magnified")
        child = self.gf.lookup(e[:, 3])
        for j in np.unique(owner[child < 0])[:3].tolist():
            self._problem(int(ids[j]), "references a cell that is not in the file")
        n = e[:, 8] * e[:, 9]
        for j in np.unique(owner[n < 1])[:3].tolist():
            self._problem(int(ids[j]), "an array reference with no columns or rows")
        n = np.maximum(n, 1)
        j = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
        rr = np.repeat(e, n, axis=0)
        cols, rows = np.maximum(rr[:, 8], 1), np.maximum(rr[:, 9], 1)
        c, ro = j % cols, j // cols
        x = rr[:, 4] + c * ((rr[:, 6] - rr[:, 4]) // cols) + ro * ((rr[:, 12] - rr[:, 4]) // rows)
        y = rr[:, 5] + c * ((rr[:, 7] - rr[:, 5]) // cols) + ro * ((rr[:, 13] - rr[:, 5]) // rows)
        aref = rr[:, 0] == AREF
        x, y = np.where(aref, x, rr[:, 4]), np.where(aref, y, rr[:, 5])
        keep = np.repeat(child >= 0, n)
        return np.repeat(child, n)[keep], np.stack([x, y], 1)[keep], np.repeat(owner, n)[keep]

    def _flatten(self, ids: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        """``(counts per id, positions grouped by id)`` of structures ``ids``."""
        e, owner = self.gf.elements_many(ids)
        for j in np.unique(owner[e[:, 0] == OTHER])[:3].tolist():
            self._problem(int(ids[j]), "holds a path, text or node")
        sel = (e[:, 0] == SHAPE) & (e[:, 1] == self.layer[0]) & (e[:, 2] == self.layer[1])
        s, s_owner = e[sel], owner[sel]
        if self.size is not None:
            bad = (s[:, 6] - s[:, 4] != self.size) | (s[:, 7] - s[:, 5] != self.size)
            for j in np.unique(s_owner[bad | (s[:, 11] != 5)])[:3].tolist():
                self._problem(int(ids[j]), "a shape that is not a via of the fabric's size")
        child, origin, r_owner = self._refs(e, owner, ids)
        unknown = np.unique(child[self.count[child] < 0])
        if len(unknown):
            if depth > 32:
                self._problem(int(ids[0]), "the hierarchy is too deep (a cycle?)")
                keep = self.count[child] >= 0
                child, origin, r_owner = child[keep], origin[keep], r_owner[keep]
            else:
                self._cache(unknown, depth + 1)
        lens = self.count[child]
        pos_r = self.pos[_ragged(self.start[child], lens)] + np.repeat(origin, lens, axis=0)
        own = np.concatenate([s_owner, np.repeat(r_owner, lens)])
        allpos = np.concatenate([s[:, 4:6], pos_r])
        order = np.argsort(own, kind="stable")
        return np.bincount(own, minlength=len(ids)), allpos[order]

    def _cache(self, ids: np.ndarray, depth: int) -> None:
        counts, pos = self._flatten(ids, depth)
        self.start[ids] = len(self.pos) + np.cumsum(counts) - counts
        self.count[ids] = counts
        self.pos = np.concatenate([self.pos, pos])

    def refs(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """``(child structure numbers, origins [n, 2])`` of structure ``i``'s references."""
        e, owner = self.gf.elements_many(np.array([i]))
        child, origin, _ = self._refs(e, owner, np.array([i]))
        return child, origin

    def __call__(self, i: int) -> np.ndarray:
        if self.count[i] >= 0:
            return self.pos[self.start[i] : self.start[i] + self.count[i]]
        return self._flatten(np.array([i], np.int64), 0)[1]
