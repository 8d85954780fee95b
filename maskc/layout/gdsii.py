"""A streaming GDSII writer: records are appended to a file as they are made, so memory is one
tile whatever the size of the layer, and a tile's thousands of references are encoded with
numpy at once. (gdstk, which reads every layer file back in ``maskc verify``, builds the whole
library in memory before writing and creates a Python object per reference: at 37 million
references for SmolLM2 that is gigabytes and minutes.)

Only what the layers need: HEADER/BGNLIB/LIBNAME/UNITS, structures, BOUNDARY rectangles, SREF
and AREF without transformation, ENDLIB. Timestamps are fixed so that the same content gives
the same bytes. Record layout: GDSII Stream Format release 6.0 (big-endian, 2-byte length,
1-byte record type, 1-byte data type).
"""

from __future__ import annotations

import struct

import numpy as np

HEADER, BGNLIB, LIBNAME, UNITS, ENDLIB = 0x0002, 0x0102, 0x0206, 0x0305, 0x0400
BGNSTR, STRNAME, ENDSTR = 0x0502, 0x0606, 0x0700
BOUNDARY, SREF, AREF, LAYER, DATATYPE = 0x0800, 0x0A00, 0x0B00, 0x0D02, 0x0E02
XY, ENDEL = 0x1003, 0x1100
SNAME, COLROW = 0x1206, 0x1302
#: 2000-01-01 00:00:00, twice (modification, access)
TIMESTAMP = (2000, 1, 1, 0, 0, 0) * 2


def record(rtype: int, data: bytes = b"") -> bytes:
    if len(data) % 2:
        data += b"\0"
    return struct.pack(">HH", 4 + len(data), rtype) + data


def real8(x: float) -> bytes:
    """GDSII 8-byte real: sign, excess-64 base-16 exponent, 56-bit mantissa."""
    if x == 0:
        return bytes(8)
    sign = 0x80 if x < 0 else 0
    x = abs(x)
    exp = 64
    while x >= 1:
        x /= 16
        exp += 1
    while x < 1 / 16:
        x *= 16
        exp -= 1
    mant = round(x * (1 << 56))
    if mant >= 1 << 56:  # rounding carried into a new digit
        mant >>= 4
        exp += 1
    return bytes([sign | exp]) + mant.to_bytes(7, "big")


def _name(name: str) -> bytes:
    b = name.encode("ascii")
    return b + b"\0" if len(b) % 2 else b


def header(libname: str, dbu_m: float) -> bytes:
    """The file's opening records: user unit = database unit = ``dbu_m`` metres."""
    return (
        record(HEADER, struct.pack(">h", 600))
        + record(BGNLIB, struct.pack(">12h", *TIMESTAMP))
        + record(LIBNAME, _name(libname))
        + record(UNITS, real8(1.0) + real8(dbu_m))
    )


def begin_cell(name: str) -> bytes:
    return record(BGNSTR, struct.pack(">12h", *TIMESTAMP)) + record(STRNAME, _name(name))


def end_cell() -> bytes:
    return record(ENDSTR)


def end_lib() -> bytes:
    return record(ENDLIB)


def rects(xy: np.ndarray, w: int, h: int, layer: tuple[int, int]) -> bytes:
    """BOUNDARY rectangles ``w`` x ``h`` with lower-left corners ``xy`` (int [n, 2])."""
    n = len(xy)
    if n == 0:
        return b""
    head = (
        record(BOUNDARY)
        + record(LAYER, struct.pack(">h", layer[0]))
        + record(DATATYPE, struct.pack(">h", layer[1]))
        + struct.pack(">HH", 44, XY)
    )
    x0, y0 = xy[:, 0].astype(np.int64), xy[:, 1].astype(np.int64)
    pts = np.stack([x0, y0, x0 + w, y0, x0 + w, y0 + h, x0, y0 + h, x0, y0], 1)
    out = np.zeros((n, len(head) + 40 + 4), np.uint8)
    out[:, : len(head)] = np.frombuffer(head, np.uint8)
    out[:, len(head) : len(head) + 40] = pts.astype(">i4").view(np.uint8).reshape(n, 40)
    out[:, -4:] = np.frombuffer(record(ENDEL), np.uint8)
    return out.tobytes()


def srefs(names: np.ndarray, xy: np.ndarray) -> bytes:
    """SREFs of cells named by the rows of ``names`` (uint8 ``[n, L]``, ``L`` even, ASCII)
    at origins ``xy`` (int [n, 2])."""
    n, L = names.shape
    if n == 0:
        return b""
    out = np.zeros((n, 24 + L), np.uint8)
    out[:, :8] = np.frombuffer(record(SREF) + struct.pack(">HH", 4 + L, SNAME), np.uint8)
    out[:, 8 : 8 + L] = names
    out[:, 8 + L : 12 + L] = np.frombuffer(struct.pack(">HH", 12, XY), np.uint8)
    out[:, 12 + L : 20 + L] = xy.astype(">i4").view(np.uint8).reshape(n, 8)
    out[:, 20 + L :] = np.frombuffer(record(ENDEL), np.uint8)
    return out.tobytes()


def sref(name: str, x: int, y: int) -> bytes:
    xy = struct.pack(">2i", x, y)
    return record(SREF) + record(SNAME, _name(name)) + record(XY, xy) + record(ENDEL)


def aref(name: str, x: int, y: int, cols: int, rows: int, dx: int, dy: int) -> bytes:
    """An array reference: ``cols`` x ``rows`` copies, steps ``dx`` (along x), ``dy`` (y)."""
    xy = struct.pack(">6i", x, y, x + cols * dx, y, x, y + rows * dy)
    cr = struct.pack(">2h", cols, rows)
    head = record(AREF) + record(SNAME, _name(name)) + record(COLROW, cr)
    return head + record(XY, xy) + record(ENDEL)
