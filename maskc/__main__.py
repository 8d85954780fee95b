"""``python -m maskc`` is the same as the ``maskc`` command."""

from maskc.cli import main

main()
