"""maskc: compile a Hugging Face LLM into the two customizable mask layers of a mask-ROM ASIC."""

__version__ = "0.1.0"
