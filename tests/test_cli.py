"""The command line: exit codes, usage errors, JSON output, atomic output folders."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from maskc.fsutil import atomic_output_dir


def test_console_script_runs_and_maps_errors(tmp_path):
    """The installed ``maskc`` entry point (a real process): help, version, exit 3, no traceback."""
    exe = [sys.executable, "-m", "maskc"]
    r = subprocess.run([*exe, "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "inspect" in r.stdout and "Exit codes" in r.stdout
    r = subprocess.run([*exe, "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("maskc ")
    r = subprocess.run([*exe, "inspect", str(tmp_path / "missing")], capture_output=True, text=True)
    assert r.returncode == 3
    assert r.stderr.strip().startswith("maskc: error:") and "Traceback" not in r.stderr


@pytest.mark.parametrize(
    "args", [["--bogus"], ["inspect"], ["inspect", "x", "--nope"], ["nosuchcommand"], []]
)
def test_usage_errors_exit_2(cli, args):
    r = cli(*args)
    assert r.code == 2, r
    assert "Traceback" not in r.err


def test_testmodel_command(tmp_path, cli):
    out = tmp_path / "m"
    r = cli("testmodel", out, "--preset", "tiny-odd", "--seed", "3", "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert doc["preset"] == "tiny-odd" and doc["seed"] == 3
    r2 = cli("inspect", out, "--json")
    assert json.loads(r2.out)["total_parameters"] == doc["total_parameters"]
    # no temporary folders left beside the output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_testmodel_refuses_non_empty_unless_force(tmp_path, cli):
    out = tmp_path / "m"
    assert cli("testmodel", out).code == 0
    before = (out / "model.safetensors").read_bytes()
    r = cli("testmodel", out, "--seed", "1")
    assert r.code == 3 and "--force" in r.err
    assert (out / "model.safetensors").read_bytes() == before
    assert cli("testmodel", out, "--seed", "1", "--force").code == 0
    assert (out / "model.safetensors").read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_testmodel_bad_preset_and_list(tmp_path, cli):
    r = cli("testmodel", tmp_path / "m", "--preset", "huge")
    assert r.code == 2 and "unknown preset" in r.err
    assert not (tmp_path / "m").exists()
    r = cli("testmodel", "--list", "--json")
    assert r.code == 0 and "tiny" in json.loads(r.out)
    r = cli("testmodel")
    assert r.code == 2


def test_atomic_output_dir_cleans_up_on_error(tmp_path):
    out = tmp_path / "build"
    with pytest.raises(RuntimeError), atomic_output_dir(out) as tmp:
        (tmp / "half.txt").write_text("x")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_dir_refuses_file_and_overlap(tmp_path, cli):
    f = tmp_path / "file"
    f.write_text("x")
    r = cli("testmodel", f)
    assert r.code == 3 and "not a folder" in r.err
    from maskc.errors import UsageError

    with (
        pytest.raises(UsageError, match="overlaps"),
        atomic_output_dir(tmp_path / "in" / "out", inputs=(tmp_path / "in",)),
    ):
        pass


def test_unwritable_parent(tmp_path, cli):
    """The output's parent cannot be created (it is a file): exit 2 before any work, nothing
    written."""
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    r = cli("testmodel", blocker / "sub" / "m")
    assert r.code == 2 and "is a file" in r.err, r
    assert blocker.read_text() == "x"
