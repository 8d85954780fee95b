"""Decode throughput of ``maskc emulate --prompts`` (several sequences sharing each matrix
product) against batch size, on one build: total tokens/s and tokens/s per sequence.

Each batch size runs B copies of four short prompts' first B (cycled), greedy, 64 new tokens
each (no EOS stop), best of 3, 2 threads; it also checks that every sequence's logits hash
equals that of its prompt run alone. Prints a table and writes
benchmarks/results/emulate_batch.json.

    python benchmarks/emulate_batch.py BUILD [--sizes 1,2,4,8,16] [--threads 2]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _results import write

PROMPTS = [
    "The capital of France is",
    "Once upon a time",
    "The GNU General Public License is",
    "In the beginning",
]
N_NEW = 64


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("build", type=Path)
    ap.add_argument("--sizes", default="1,2,4,8,16")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    from maskc.emulate import backend

    backend.set_threads(args.threads)
    from maskc.emulate.run import generate, generate_batch, open_session
    from maskc.emulate.sampling import SamplingParams

    s = open_session(args.build)
    ids = [s.encode(p) for p in PROMPTS]
    alone = {i: generate(s, ids[i], N_NEW, SamplingParams(), stop_at_eos=False).logits_sha256
             for i in range(len(ids))}  # fmt: skip
    rows = []
    for b in (int(x) for x in args.sizes.split(",")):
        which = [i % len(ids) for i in range(b)]
        best = 0.0
        for _ in range(3):
            gens, _, dec = generate_batch(s, [ids[i] for i in which], N_NEW, SamplingParams(),
                                          stop_at_eos=False)  # fmt: skip
            assert all(g.logits_sha256 == alone[i] for g, i in zip(gens, which, strict=True))
            best = max(best, b * (N_NEW - 1) / dec)
        rows.append({"batch": b, "tokens_per_s": best, "per_sequence": best / b})
        print(f"batch {b:>3}: {best:8.1f} tokens/s in all, {best / b:7.1f} per sequence",
              flush=True)  # fmt: skip
    write(
        "emulate_batch",
        {
            "build": str(args.build),
            "threads": args.threads,
            "kernel": backend.describe(),
            "new_tokens": N_NEW,
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
