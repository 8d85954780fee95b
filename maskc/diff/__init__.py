"""Stage 8, diff: which mask bits change between two builds (``maskc diff-layers``).

Two builds on one fabric are compared tile site by tile site (a tile cell of the layer files is
a position on the die):

* :mod:`maskc.diff.builds`: two build folders, without decoding a layer file (the manifests'
  per-tile hashes, then popcounts on the netlists' ROM content of the changed tiles);
* :mod:`maskc.diff.files`: two layer files given directly, every tile cell decoded;
* :mod:`maskc.diff.tally`: the per-layer counts both share;
* :mod:`maskc.diff.result`: :class:`DiffResult`, the JSON document and the verdict;
* :mod:`maskc.diff.heatmap`: ``--png``;
* :mod:`maskc.diff.compare`: :func:`diff_layers`, the command's entry point.
"""

from maskc.diff.compare import diff_layers
from maskc.diff.heatmap import heatmap_png
from maskc.diff.result import DiffResult
from maskc.diff.tally import LAYERS

__all__ = ["LAYERS", "DiffResult", "diff_layers", "heatmap_png"]
