"""The built-in fabric descriptions (``*.toml``), read with :mod:`importlib.resources`."""
