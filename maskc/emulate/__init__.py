"""Stage 7, emulate: a build's netlist run bit-exactly on the CPU (docs/numerics.md).

* :mod:`~maskc.emulate.kernels`: the numerics contract as compiled integer loops (primitives,
  Q8, the matrix product); :mod:`~maskc.emulate.units`: the fixed-function units;
* :mod:`~maskc.emulate.backend`: which kernel runs the matrix products (the C one of
  ``_kern.c`` or numba's) and on how many threads;
* :mod:`~maskc.emulate.prepared`: ROM matrices laid out for the kernels;
* :mod:`~maskc.emulate.chip`: :class:`Chip`, the netlist's ops executed over a KV cache;
* :mod:`~maskc.emulate.run`: the modes of ``maskc emulate`` (generate, perplexity, compare);
* :mod:`~maskc.emulate.sampling`: the integer sampler.

The emulator depends on the netlist and the ROM format, never on the compiler's quantizers.
"""

from maskc.emulate.chip import Act8, Chip

__all__ = ["Act8", "Chip"]
