"""maskc's OASIS writer (SEMI P39): the few records the layer files use, encoded with numpy.

Why not gdstk's writer (gdstk still reads every file back in ``maskc verify``, and KLayout reads
them in the tests): a via line's record is the gaps between its vias, and those gaps are the
ROM's bits, close to random. DEFLATE's string matching cannot shorten random bytes, and with
gdstk's zlib levels it spends bits on short matches; DEFLATE with Huffman coding alone
(``Z_HUFFMAN_ONLY``) writes the same records 21-24% smaller than gdstk at level 4, near the
codes' entropy, in less time (docs/layout.md). gdstk offers no choice of strategy, and builds a
Python object per line.

Records written, in this order: the magic, ``START`` (offset flag 0, no name tables),
``CELLNAME`` (implicit reference numbers: a cell's number is its position in ``names``), then
per cell ``CELL`` (by number) and its ``RECTANGLE`` / ``PLACEMENT`` records, gathered into
``CBLOCK`` records (raw DEFLATE) of about :data:`CBLOCK_BYTES`, and ``END`` (256 bytes, CRC32
validation). Rectangles use repetitions of type 4 (explicit x spacings) and 6 (explicit y
spacings); a via line's first rectangle in a cell sets the modal layer, datatype, width and
height, and the others inherit them. Coordinates are integers of the file's unit.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

MAGIC = b"%SEMI-OASIS\r\n"
START, END, CELLNAME, CELL_REF, PLACEMENT, RECTANGLE, CBLOCK = 1, 2, 3, 13, 17, 20, 34
#: RECTANGLE info-byte bits (S W H X Y R D L)
_W, _H, _X, _Y, _R, _D, _L = 0x40, 0x20, 0x10, 0x08, 0x04, 0x02, 0x01
#: uncompressed bytes gathered into one CBLOCK before it is compressed (flushed at a cell's end)
CBLOCK_BYTES = 1 << 20
#: DEFLATE of the via files: Huffman coding only (docs/layout.md has the measurement)
HUFFMAN = (9, zlib.Z_HUFFMAN_ONLY)
#: DEFLATE of the small, regular metal files: string matching pays there
MATCHING = (6, zlib.Z_DEFAULT_STRATEGY)


def uvarints(v: np.ndarray) -> bytes:
    """OASIS unsigned integers (7 bits per byte, low first, high bit = more) of ``v`` (0 <=
    v < 2^63). Most values of a layer file are below 128 and take one pass."""
    v = np.asarray(v).astype(np.int64, copy=False)
    big = np.flatnonzero(v >= 0x80)
    if not len(big):
        return v.astype(np.uint8).tobytes()
    n = np.ones(len(v), np.int64)
    k = 1
    while len(big):
        n[big] += 1
        k += 1
        big = big[v[big] >= (1 << (7 * k))]
    end = np.cumsum(n)
    start = end - n
    out = np.empty(int(end[-1]), np.uint8)
    out[start] = (v & 0x7F) | ((n > 1) << 7)
    for j in range(1, k):
        sel = np.flatnonzero(n > j)
        out[start[sel] + j] = ((v[sel] >> (7 * j)) & 0x7F) | ((n[sel] > j + 1) << 7)
    return out.tobytes()


def uint(x: int) -> bytes:
    return uvarints(np.array([x], np.uint64))


def zig(x):
    """OASIS signed integer as the unsigned value it is stored as (sign in the low bit)."""
    return (
        np.where(x < 0, (-x << 1) | 1, x << 1)
        if isinstance(x, np.ndarray)
        else ((-x << 1) | 1 if x < 0 else x << 1)
    )


def _string(s: str) -> bytes:
    b = s.encode("ascii")
    return uint(len(b)) + b


def _real(x: float) -> bytes:
    if x > 0 and float(x).is_integer() and x < 2**63:
        return uint(0) + uint(int(x))  # type 0: a positive whole number
    return uint(7) + struct.pack("<d", x)  # type 7: IEEE 754 double


class OasisWriter:
    """Writes one OASIS file to the binary file ``f``. ``unit`` is the number of file
    coordinate units per micron; ``names`` every cell's name (its index is its reference
    number); ``deflate`` (level, strategy) for the CBLOCKs."""

    def __init__(self, f, unit: float, names: list[str], deflate=HUFFMAN) -> None:
        self.f, self.deflate = f, deflate
        self.crc = 0
        self.buf = bytearray()
        self.modal = False
        self._raw(MAGIC + uint(START) + _string("1.0") + _real(unit) + uint(0) + bytes(12))
        self._raw(b"".join(uint(CELLNAME) + _string(n) for n in names))

    def _raw(self, b: bytes) -> None:
        self.crc = zlib.crc32(b, self.crc)
        self.f.write(b)

    def _flush(self) -> None:
        if not self.buf:
            return
        level, strategy = self.deflate
        c = zlib.compressobj(level, zlib.DEFLATED, -15, 9, strategy)
        z = c.compress(bytes(self.buf)) + c.flush()
        self._raw(uint(CBLOCK) + uint(0) + uint(len(self.buf)) + uint(len(z)) + z)
        self.buf.clear()

    def cell(self, ref: int) -> None:
        """Start cell number ``ref`` (modal variables start undefined)."""
        if len(self.buf) >= CBLOCK_BYTES:
            self._flush()
        self.buf += uint(CELL_REF) + uint(ref)
        self.modal = False

    def placement(self, ref: int, x: int, y: int) -> None:
        """Cell number ``ref`` placed at (x, y), unrotated."""
        self.buf += uint(PLACEMENT) + b"\xf0" + uvarints(np.array([ref, zig(x), zig(y)]))

    def rect_column(self, layer, w: int, h: int, pos: np.ndarray) -> None:
        """A ``w`` x ``h`` rectangle at every lower-left corner of ``pos`` (``[n, 2]``, one x,
        y increasing): one record, a repetition of type 6 (explicit y spacings) when there
        are several."""
        if not len(pos):
            return
        x, ys = int(pos[0, 0]), np.asarray(pos[:, 1], np.int64)
        if (pos[:, 0] != x).any() or (np.diff(ys) <= 0).any():
            raise ValueError("rect_column: the corners are not one column in increasing y")
        info = _W | _H | _X | _Y | _D | _L | (_R if len(ys) > 1 else 0)
        head = [RECTANGLE, info, layer[0], layer[1], w, h, zig(x), zig(int(ys[0]))]
        rep = [6, len(ys) - 2, *np.diff(ys).tolist()] if len(ys) > 1 else []
        self.buf += uvarints(np.array(head + rep, np.uint64))
        self.modal = False

    def rect_rows(self, layer, size: int, x: np.ndarray, y: np.ndarray) -> None:
        """``size`` x ``size`` squares with lower-left corners (x, y), sorted by (y, x): one
        record per line of equal y, a repetition of type 4 (explicit x spacings) when the line
        holds several. Encoded for all lines at once."""
        if not len(x):
            return
        x, y = np.asarray(x, np.int64), np.asarray(y, np.int64)
        if not self.modal:  # the first square sets layer, datatype, width and height
            head = [RECTANGLE, _W | _H | _X | _Y | _D | _L, layer[0], layer[1], size, size]
            self.buf += uvarints(np.array([*head, zig(int(x[0])), zig(int(y[0]))], np.uint64))
            self.modal = True
            x, y = x[1:], y[1:]
            if not len(x):
                return
        n = len(x)
        starts = np.r_[0, np.flatnonzero(np.diff(y)) + 1]
        cnt = np.diff(np.r_[starts, n])
        rep = cnt > 1
        hlen = np.where(rep, 6, 4)
        # the stream holds, in via order, a line's header where a line starts, else the
        # spacing from the previous via: via j's first token is at j + the headers' extra
        extra = np.zeros(n, np.int64)
        extra[starts] = hlen - 1
        at = np.arange(n, dtype=np.int64) + np.cumsum(extra) - extra
        tok = np.empty(n + int(extra.sum()), np.int64)
        tok[at[1:]] = np.diff(x)
        h = at[starts]
        tok[h] = RECTANGLE
        tok[h + 1] = np.where(rep, _X | _Y | _R, _X | _Y)
        tok[h + 2] = zig(x[starts])
        tok[h + 3] = zig(y[starts])
        h = h[rep]
        tok[h + 4] = 4
        tok[h + 5] = cnt[rep] - 2
        self.buf += uvarints(tok)

    def close(self) -> None:
        """Flush the last CBLOCK and write END: 256 bytes, CRC32 of the whole file."""
        self._flush()
        pad = 256 - 1 - 2 - 1 - 4  # END, padding length (2 bytes), scheme, signature
        end = uint(END) + uint(pad) + bytes(pad) + uint(1)
        self._raw(end)
        self.f.write(struct.pack("<I", self.crc))
