"""``maskc diff-layers A B``: two build folders or two layer files -> a :class:`DiffResult`."""

from __future__ import annotations

from pathlib import Path

from maskc.diff.builds import diff_builds
from maskc.diff.files import diff_files
from maskc.diff.result import DiffResult, finish
from maskc.errors import UsageError


def diff_layers(a, b, progress=None, top: int = 5) -> DiffResult:
    """``maskc diff-layers A B``: A and B are two build folders or two layer files. Returns the
    result; its ``to_json()`` is the JSON document of docs/diff.md (``identical``,
    ``verdict``, ``layers`` ...)."""
    pa, pb = Path(a), Path(b)
    if pa.is_dir() != pb.is_dir():
        raise UsageError(f"{a} and {b}: give two build folders or two layer files")
    if pa.is_dir():
        res = diff_builds(pa, pb, progress)
    else:
        res = diff_files(pa, pb, progress)
    return finish(res, str(a), str(b), top)
