"""Data files shipped with maskc (the built-in report text)."""
