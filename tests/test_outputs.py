"""Output folders (issue 19, class 6): ``-o`` checked before any work, the parents a failed
write made removed again, the output locked against a second maskc, and SIGTERM/SIGHUP
cleaning up like Ctrl-C. The lock and signal tests run real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from maskc.errors import InputError, MaskcError, UsageError
from maskc.fsutil import OUTPUT_NAME_ROOM, atomic_output_dir, check_output_path, lock_path

MASKC = [sys.executable, "-m", "maskc"]


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# -- the path check ---------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", ".", "..", "/", "a/..", "x/../.."])
def test_not_a_folder_name(text):
    with pytest.raises(UsageError):
        check_output_path(Path(text))


def test_the_current_folder_and_its_parents(tmp_path, monkeypatch):
    work = tmp_path / "w" / "here"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    for p in (work, work.parent, tmp_path, Path("../../w"), Path("../here")):
        with pytest.raises(UsageError, match="current folder"):
            check_output_path(p)
    check_output_path(Path("build"))  # below it is fine
    check_output_path(Path("../sibling"))


def test_overlap_name_length_and_a_file_on_the_way(tmp_path):
    model = tmp_path / "m"
    model.mkdir()
    (tmp_path / "file").write_text("x")
    for out in (model, model / "b", tmp_path):
        with pytest.raises(UsageError, match="overlaps"):
            check_output_path(out, inputs=(model,))
    with pytest.raises(UsageError, match="is a file"):
        check_output_path(tmp_path / "file" / "a" / "b")
    name_max = os.pathconf(tmp_path, "PC_NAME_MAX")
    check_output_path(tmp_path / ("n" * (name_max - OUTPUT_NAME_ROOM)))
    with pytest.raises(UsageError, match="bytes"):
        check_output_path(tmp_path / ("n" * (name_max - OUTPUT_NAME_ROOM + 1)))
    with pytest.raises(UsageError, match="longer than"):
        check_output_path(tmp_path / ("p" * (name_max + 1)) / "b")
    with pytest.raises(UsageError, match="bytes"):  # counted in bytes, not characters
        check_output_path(tmp_path / ("é" * ((name_max - OUTPUT_NAME_ROOM) // 2 + 1)))


_PART = st.sampled_from(["", ".", "..", "a", "b", "file", "m", "m2", "é" * 130, "n" * 300])


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(parts=st.lists(_PART, min_size=0, max_size=5), absolute=st.booleans())
def test_any_output_path_is_refused_in_one_line_or_leaves_nothing(
    tmp_path, monkeypatch, parts, absolute
):
    """For any -o, atomic_output_dir either refuses it (a MaskcError, one line) before making
    anything, or makes the folder; a write that fails then leaves the tree exactly as it was:
    no temporary folder, no lock file, no parent made for it."""
    root = tmp_path / "root"
    if not root.exists():
        (root / "m").mkdir(parents=True)
        (root / "m" / "config.json").write_text("{}")
        (root / "w").mkdir()
        (root / "file").write_text("x")
    monkeypatch.chdir(root / "w")
    before = _tree(root)
    text = "/".join(parts)
    out = Path(str(root) + "/" + text) if absolute else Path(text)
    try:
        with atomic_output_dir(out, inputs=(root / "m",)) as tmp:
            assert tmp.is_dir()
            (tmp / "half.txt").write_text("x")
            raise RuntimeError("the write fails")
    except MaskcError as e:
        assert "\n" not in str(e)
    except RuntimeError:
        pass
    assert _tree(root) == before


def test_parents_made_for_a_failed_write_are_removed(tmp_path):
    out = tmp_path / "new1" / "new2" / "build"
    with pytest.raises(RuntimeError), atomic_output_dir(out) as tmp:
        assert (tmp_path / "new1" / "new2").is_dir() and lock_path(out).exists()
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with atomic_output_dir(out) as tmp:  # a successful write keeps them, and no lock file
        (tmp / "x").write_text("1")
    assert _tree(tmp_path) == ["new1", "new1/new2", "new1/new2/build", "new1/new2/build/x"]


def test_bad_model_into_new_parents_leaves_nothing(model_cache, tmp_path, cli):
    """The CLI: -o new1/new2/build of a model that fails to load."""
    r = cli("compile", tmp_path / "missing", "-o", tmp_path / "new1" / "new2" / "build")
    assert r.code == 3, r.err
    assert list(tmp_path.iterdir()) == []


# -- the lock ---------------------------------------------------------------------------------

#: another process holding the output's lock (maskc's own lock code), until a line on stdin;
#: then, like a finishing compile, it puts its output in place before unlocking
HOLDER = """
import sys
from pathlib import Path
from maskc.fsutil import output_lock
out = Path(sys.argv[1])
with output_lock(out):
    print("locked", flush=True)
    sys.stdin.readline()
    out.mkdir()
    (out / "first.txt").write_text("first")
"""


def test_a_second_writer_is_refused_at_once_and_force_waits(model_cache, tmp_path, cli):
    out = tmp_path / "build"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(out)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        r = cli("compile", model_cache("tiny").path, "-o", out, "--no-verify")
        assert r.code == 3, r.err
        assert f"another maskc (pid {holder.pid})" in r.err and str(out) in r.err
        assert len(r.err.strip().splitlines()) == 1
        assert not out.exists() and _tree(tmp_path) == [".build.lock"]

        forced = subprocess.Popen(
            [*MASKC, "testmodel", str(out), "--force"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        with pytest.raises(subprocess.TimeoutExpired):  # it waits for the lock
            forced.wait(timeout=3)
        assert not out.exists()
        holder.stdin.write("done\n")
        holder.stdin.flush()
        assert holder.wait(timeout=60) == 0
        assert forced.wait(timeout=120) == 0, forced.stderr.read()
    finally:
        holder.kill()
        holder.wait()
    assert (out / "config.json").is_file() and not (out / "first.txt").exists()
    assert _tree(tmp_path) == sorted(["build", *(f"build/{p}" for p in _tree(out))])


def test_two_concurrent_writers_one_wins(tmp_path):
    """Two real maskc processes write the same folder at once: exactly one succeeds; the other
    is refused (the lock, or, if it came second, the non-empty folder); no debris."""
    out = tmp_path / "m"
    procs = [
        subprocess.Popen(
            [*MASKC, "testmodel", str(out), "--seed", str(s)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for s in (1, 2)
    ]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    assert sorted(c for c, _ in results) == [0, 3], results
    loser = next(e for c, e in results if c == 3)
    assert "is writing this output" in loser or "not empty" in loser
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


# -- signals ----------------------------------------------------------------------------------


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_a_stop_signal_cleans_up(model_cache, tmp_path, sig, code):
    """SIGTERM/SIGHUP to a real compile once its temporary folder exists: exit 128 + signal,
    one line, and nothing left: no temporary folder, no lock, no parent made for the build."""
    m = model_cache("tiny").path
    out = tmp_path / "new" / "build"
    proc = subprocess.Popen(
        [*MASKC, "compile", str(m), "-o", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "MASKC_PROGRESS": "0"},
    )
    deadline = time.monotonic() + 120
    sent = False
    while time.monotonic() < deadline and proc.poll() is None:
        if out.parent.is_dir() and list(out.parent.glob(".build.tmp-*")):
            proc.send_signal(sig)
            sent = True
            break
        time.sleep(0.01)
    rc, err = proc.wait(timeout=120), proc.stderr.read()
    assert sent, "the compile finished before it could be signalled"
    assert rc == code, err
    assert err.strip().splitlines()[-1] == f"maskc: terminated ({sig.name})", err
    assert list(tmp_path.iterdir()) == []


def test_a_lock_left_by_a_killed_process_is_reused(tmp_path):
    out = tmp_path / "b"
    lock_path(out).write_text("12345\n")  # stale: nobody holds it
    with atomic_output_dir(out) as tmp:
        (tmp / "x").write_text("1")
    assert _tree(tmp_path) == ["b", "b/x"]


#: a writer that forks a worker (as --jobs does) and is then SIGKILLed: the orphaned worker
#: lives on for seconds
KILLED_WITH_A_WORKER = """
import os, signal, sys, time
from pathlib import Path
from maskc.fsutil import output_lock
with output_lock(Path(sys.argv[1])):
    if os.fork() == 0:
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):  # not the caller's pipes: it must not wait for the worker
            os.dup2(null, fd)
        time.sleep(20)
        os._exit(0)
    print("forked", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_writers_orphaned_worker_does_not_hold_the_lock(tmp_path):
    """The lock dies with the process that took it: its forked workers close their copies."""
    from maskc.fsutil import output_lock

    out = tmp_path / "b"
    r = subprocess.run(
        [sys.executable, "-c", KILLED_WITH_A_WORKER, str(out)], capture_output=True, text=True
    )
    assert r.returncode == -signal.SIGKILL and r.stdout == "forked\n", r
    with output_lock(out):  # no --force: refused at once if the worker still held it
        pass


def test_input_error_is_not_a_usage_error_for_an_existing_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match="not a folder"), atomic_output_dir(tmp_path / "f"):
        pass
