"""``maskc report``: one self-contained HTML page a chip team attaches to a review (docs/report.md).

* :mod:`maskc.report.collect`: what the page shows, read from the build's recorded files;
* :mod:`maskc.report.svg`: inline SVG (tile maps with zoom and inset, the error chart);
* :mod:`maskc.report.page`: the HTML, CSS and the little JavaScript (tooltip, zoom);
* :mod:`maskc.report.write`: output checks, the change map (maskc/diff), the atomic write.
"""

from maskc.report.collect import collect
from maskc.report.write import write_report

__all__ = ["collect", "write_report"]
