"""Which kernel runs the emulator's matrix products, and on how many threads.

* ``c``: :mod:`maskc.emulate._kern`, compiled by pip from ``_kern.c`` when a C compiler is
  present: AVX-512 VNNI where the CPU has it (one instruction multiplies 64 4-bit or 8-bit
  weights by activation bytes), portable C otherwise, and its own thread pool whose idle
  threads sleep after 50 µs, and which runs products on the calling thread alone while
  other processes keep the CPUs busy (``/proc/stat``'s runnable count, checked every 256
  products);
* ``numba``: the loops of :mod:`maskc.emulate.kernels`, always available.

Both compute the integers of docs/numerics.md exactly (tests compare them with each other and
with an independent reference). The environment variable ``MASKC_KERNEL`` (``c`` or ``numba``)
picks one (default: C where the CPU has AVX-512 VNNI, numba elsewhere: the portable C loop is
slower than numba's); ``MASKC_KERNEL_ISA=portable`` keeps the C kernel off AVX-512 VNNI. The C
kernel takes matrices whose level table spans at most 256 consecutive integers from its lowest level
(every built-in format); others run on numba in either case. FP4 matrices (``mxfp4``,
``nvfp4``) run on both; in the C kernel on its plain C loop whatever the ISA (the AVX-512 VNNI
loop of FP4 is not written yet).
"""

from __future__ import annotations

import os

from maskc.errors import UsageError

try:  # optional: built by pip when a C compiler was present
    from maskc.emulate import _kern
except ImportError:  # pragma: no cover - depends on the install
    _kern = None

ENV = "MASKC_KERNEL"
ENV_ISA = "MASKC_KERNEL_ISA"

# numba's OpenMP threads (the prefill's row-wise units) sleep when idle instead of spinning:
# spinning threads take the CPU from the matrix product's threads and from other processes.
# libgomp reads it when numba first runs a parallel loop, which is after this import (chip.py
# imports this module through prepared.py). A user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def use_c() -> bool:
    """Whether matrices are prepared for the C kernel (``MASKC_KERNEL``; default: when built
    and the CPU has AVX-512 VNNI; ``MASKC_KERNEL=c`` takes the portable loop elsewhere)."""
    want = os.environ.get(ENV, "").strip().lower()
    if want not in ("", "c", "numba"):
        raise UsageError(f"{ENV}={want!r}: use 'c' or 'numba'")
    if want == "c" and _kern is None:
        raise UsageError(
            f"{ENV}=c but maskc.emulate._kern is not built (reinstall maskc with a C compiler)"
        )
    if _kern is not None:
        isa = os.environ.get(ENV_ISA, "best").strip().lower() or "best"
        try:
            _kern.set_isa(isa)
        except ValueError as e:
            raise UsageError(f"{ENV_ISA}={isa!r}: {e}") from None
    if _kern is None or want == "numba":
        return False
    # by default only where the vector loop runs: the portable C loop is slower than numba's
    return want == "c" or _kern.isa() == "avx512-vnni"


_configured = False


def set_threads(n: int) -> int:
    """Use ``n`` threads in the products (numba's are capped at its pool size); returns n."""
    import numba

    global _configured
    numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))
    if _kern is not None:
        _kern.set_threads(max(1, n))
    _configured = True
    return n


def default_threads() -> None:
    """Unless :func:`set_threads` was called: as many threads as this process may use
    (:func:`maskc.parallel.usable_cpus`: affinity capped by the cgroup's CPU quota)."""
    if not _configured:
        from maskc.parallel import usable_cpus

        set_threads(usable_cpus())


def describe() -> str:
    """``c (avx512-vnni)``, ``c (portable)`` or ``numba``: what the products run on."""
    return f"c ({_kern.isa()})" if use_c() else "numba"
