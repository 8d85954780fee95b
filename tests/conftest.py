"""Shared fixtures: generated tiny models and an in-process CLI runner."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

from maskc.cli import main

# Property tests draw the same examples on every run: a CI verdict must not depend on a random
# seed (what a random run finds is pinned as an @example). HYPOTHESIS_PROFILE=explore draws
# fresh random examples, for looking for new failures.
hypothesis_settings.register_profile("repeatable", derandomize=True, database=None)
hypothesis_settings.register_profile("explore", derandomize=False)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run ``maskc ARGS`` in-process; return exit code, stdout and stderr. Progress is off
    (``MASKC_PROGRESS=0``) so stderr holds only what a command says; tests/test_progress.py
    checks the progress lines of a piped stderr."""
    monkeypatch.setenv("MASKC_PROGRESS", "0")

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture(scope="session", autouse=True)
def _layout_cache_in_tmp(tmp_path_factory):
    """The emulator's layout cache (maskc/emulate/layoutcache.py) goes to a session folder,
    not the user's ~/.cache."""
    import os

    old = os.environ.get("MASKC_CACHE_DIR")
    os.environ["MASKC_CACHE_DIR"] = str(tmp_path_factory.mktemp("layout-cache"))
    yield
    if old is None:
        os.environ.pop("MASKC_CACHE_DIR", None)
    else:
        os.environ["MASKC_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory):
    """Generate each preset once per session; tests copy before mutating."""
    from maskc.testmodels import generate

    root = tmp_path_factory.mktemp("models")
    made = {}

    def get(preset: str = "tiny", seed: int = 0):
        key = (preset, seed)
        if key not in made:
            made[key] = generate(root / f"{preset}-{seed}", preset, seed)
        return made[key]

    return get


@pytest.fixture
def tiny_copy(model_cache, tmp_path):
    """A private, mutable copy of a generated preset: ``tiny_copy("tiny") -> Path``."""

    count = iter(range(1_000_000))

    def copy(preset: str = "tiny", seed: int = 0) -> Path:
        src = model_cache(preset, seed).path
        dst = tmp_path / f"{preset}-{seed}-{next(count)}"
        shutil.copytree(src, dst)
        return dst

    return copy


#: The longest modules, run first: README's test command spreads the suite over processes by
#: module (``-n auto --dist loadfile``), and a long module collected last (they run in
#: alphabetical order) would leave one worker alone with it at the end.
LONGEST_FIRST = (
    "test_smollm2_example.py",
    "test_compile.py",
    "test_emulate.py",
    "test_layout.py",
)


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONGEST_FIRST)))  # stable
