"""Assertions shared by the test modules."""

from __future__ import annotations


def assert_bad(result, *needles):
    """Exit 3, one line on stderr naming the problem, no traceback, nothing on stdout."""
    assert result.code == 3, (result.code, result.err)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("maskc: error: ")
    assert "Traceback" not in result.err
    for n in needles:
        assert n.lower() in result.err.lower(), (n, result.err)
    assert result.out == ""
