"""Peak memory of a process *tree* for the benchmarks (a compile's worker processes count):
the summed VmRSS of a process and all its descendants, read from /proc (Linux)."""

from __future__ import annotations

import os


def _children() -> dict[int, list[int]]:
    """parent pid -> child pids, for every process now."""
    kids: dict[int, list[int]] = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        kids.setdefault(ppid, []).append(int(p))
    return kids


def tree_rss_bytes(pid: int) -> int:
    """Summed VmRSS of ``pid`` and all its descendants, in bytes (0 for gone processes)."""
    kids, todo, total = _children(), [pid], 0
    while todo:
        q = todo.pop()
        todo += kids.get(q, [])
        try:
            with open(f"/proc/{q}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total
