"""Stage 1, ingest: a Hugging Face checkpoint -> a validated, lazily read :class:`Model`.

:mod:`maskc.ingest.loader` opens the folder or ``.safetensors`` file and checks every header
(:func:`load_model`); :mod:`maskc.ingest.config` parses ``config.json`` into a
:class:`maskc.ir.ModelArch`.
"""

from maskc.ingest.loader import IGNORABLE_PATTERNS, Model, load_model

__all__ = ["IGNORABLE_PATTERNS", "Model", "load_model"]
