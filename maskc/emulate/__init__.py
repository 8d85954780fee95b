"""Stage 7, emulate: a build's netlist run bit-exactly on the CPU (docs/numerics.md).

* :mod:`~maskc.emulate.kernels`: the numerics contract as compiled integer loops;
* :mod:`~maskc.emulate.backend`: which kernel runs the matrix products (the C one of
  ``_kern.c`` or numba's) and on how many threads;
* :mod:`~maskc.emulate.prepared`: ROM matrices laid out for the kernels;
* :mod:`~maskc.emulate.chip`: :class:`Chip`, the netlist's ops executed over a KV cache;
* :mod:`~maskc.emulate.run`: the modes of ``maskc emulate`` (generate, perplexity, compare);
* :mod:`~maskc.emulate.sampling`: the integer sampler.

The emulator depends on the netlist and the ROM format, never on the compiler's quantizers.
"""

import os

# numba's OpenMP threads (the prefill's row-wise units) sleep when idle instead of spinning:
# spinning threads take the CPU from the matrix product's threads and from other processes.
# Read by libgomp when numba first runs a parallel loop, i.e. after this import.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from maskc.emulate.chip import Act8, Chip

__all__ = ["Act8", "Chip"]
