"""``maskc compile --dask``: the parallel tasks on a Dask cluster (maskc/parallel.py,
docs/distributed.md). A ``LocalCluster`` of two worker processes compiles tiny models byte for
byte like a local compile (GDSII in parts, OASIS in banks, verify on the workers), also when a
worker dies in the middle of a task; an unreachable scheduler, a worker that cannot see the
build, and Dask missing are one-line errors with their exit codes and leave nothing behind."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

import maskc.layout.banks
import maskc.layout.gds
from maskc import parallel
from maskc.fabric import DEFAULT_FABRIC, load_fabric


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _assert_same_build(a: Path, b: Path) -> None:
    fa, fb = _files(a), _files(b)
    assert sorted(fa) == sorted(fb)
    differ = [k for k in fa if fa[k] != fb[k]]
    assert not differ, differ


def _leftovers(folder: Path, name: str) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith((name, f".{name}"))]


@pytest.fixture(scope="module")
def scheduler():
    """The address of a LocalCluster: two worker processes of one thread each."""
    pytest.importorskip("distributed")
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
    ) as cluster:
        yield cluster.scheduler_address


@pytest.fixture
def small_parts(monkeypatch):
    """GDSII parts of 2 tiles and OASIS banks of 3 tiles: several tasks per layer write (the
    split happens in the client, so the patch reaches the workers as arguments)."""
    monkeypatch.setattr(maskc.layout.gds, "PART_TILES", 2)
    cells = load_fabric(DEFAULT_FABRIC).cells_per_tile
    monkeypatch.setattr(maskc.layout.banks, "BANK_CELLS", 3 * cells)


@pytest.mark.slow
def test_gds_build_on_dask_is_byte_identical(scheduler, small_parts, model_cache, tmp_path, cli):
    model = model_cache("tiny").path
    args = ("--no-calib", "--verify")
    assert cli("compile", model, "-o", tmp_path / "local", *args, "--jobs", "2").code == 0
    r = cli("compile", model, "-o", tmp_path / "dask", *args, "--dask", scheduler)
    assert r.code == 0, r.err
    _assert_same_build(tmp_path / "local", tmp_path / "dask")
    assert _leftovers(tmp_path, "dask") == ["dask"]  # no temporary folder, no probe file
    assert not list((tmp_path / "dask").rglob("*maskc-dask-probe*"))
    from distributed import Client

    with Client(scheduler) as client:  # the work really ran on the cluster
        ran = client.run_on_scheduler(lambda dask_scheduler: sorted(dask_scheduler.task_prefixes))
    assert {"quantize_unit", "gds_part"} <= set(ran), ran


@pytest.mark.slow
def test_a_worker_killed_mid_task_is_retried(scheduler, small_parts, model_cache, tmp_path, cli):
    """The first OASIS file written dies half way (truncated, then os._exit, as a crash or an
    OOM kill would): Dask runs the task again on a live worker, the torn temporary file is
    removed, and the build is unchanged."""
    from distributed import Client

    model = model_cache("tiny").path
    marker = tmp_path / "killed"

    def patch(marker: str) -> None:  # runs on each worker: pickled by value (a closure)
        from contextlib import contextmanager

        import maskc.layout.oasis as oasis

        original = oasis.atomic_path

        @contextmanager
        def dies_once(path):
            with original(path) as tmp:
                yield tmp
                try:
                    os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                except FileExistsError:
                    return
                os.truncate(tmp, os.path.getsize(tmp) // 2)  # a torn file, then the crash
                os._exit(1)

        oasis._atomic_path_before_test = original
        oasis.atomic_path = dies_once

    def unpatch() -> None:  # the cluster outlives this test (and its tmp_path, the marker's)
        import maskc.layout.oasis as oasis

        oasis.atomic_path = getattr(oasis, "_atomic_path_before_test", oasis.atomic_path)

    args = ("--layout-format", "oas", "--no-calib", "--verify")
    with Client(scheduler, set_as_default=False) as client:
        client.run(patch, str(marker))
        try:
            r = cli("compile", model, "-o", tmp_path / "dask", *args, "--dask", scheduler)
        finally:
            client.run(unpatch)
    assert r.code == 0, r.err
    assert marker.exists()  # a worker did die
    index = json.loads((tmp_path / "dask" / "layers" / "index.json").read_text())
    assert len(index["banks"]) > 2  # several tasks
    assert cli("compile", model, "-o", tmp_path / "local", *args).code == 0
    _assert_same_build(tmp_path / "local", tmp_path / "dask")


@pytest.mark.slow
def test_calibrated_build_on_dask_is_byte_identical(
    scheduler, small_parts, model_cache, tmp_path, cli, monkeypatch
):
    """A 3-bit build calibrates layer by layer on the client; the row blocks of each layer's
    matrices are quantized on the cluster's workers (a block of 3 rows each here), and the
    build is the local one byte for byte."""
    from distributed import Client

    import maskc.quantize.stream as stream

    monkeypatch.setattr(stream, "BLOCK_ELEMS", 3 * 64)  # several blocks per stack
    model = model_cache("tiny").path
    args = ("--bits", "3", "--layout-format", "oas", "--calib-tokens", "128")
    assert cli("compile", model, "-o", tmp_path / "local", *args, "--jobs", "1").code == 0
    r = cli("compile", model, "-o", tmp_path / "dask", *args, "--dask", scheduler)
    assert r.code == 0, r.err
    _assert_same_build(tmp_path / "local", tmp_path / "dask")
    calib = json.loads((tmp_path / "dask" / "reports" / "quant.json").read_text())["calibration"]
    assert calib["tokens"] > 0
    with Client(scheduler, set_as_default=False) as client:
        ran = client.run_on_scheduler(lambda dask_scheduler: sorted(dask_scheduler.task_prefixes))
    assert "quantize_stack" in ran, ran  # no other test sends these to the cluster


def test_unreachable_scheduler_is_one_line_exit_3(model_cache, tmp_path, cli, monkeypatch):
    pytest.importorskip("distributed")
    monkeypatch.setenv("MASKC_DASK_TIMEOUT", "1")
    out = tmp_path / "b"
    r = cli("compile", model_cache("tiny").path, "-o", out, "--dask", "tcp://127.0.0.1:9")
    assert r.code == 3, r.err
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("maskc: error: tcp://127.0.0.1:9: ")
    assert "cannot reach the Dask scheduler" in r.err and "Traceback" not in r.err
    assert _leftovers(tmp_path, "b") == []


def test_bad_address_is_a_usage_error(model_cache, tmp_path, cli):
    r = cli("compile", model_cache("tiny").path, "-o", tmp_path / "b", "--dask", "no-port")
    assert r.code == 2 and "tcp://HOST:PORT" in r.err
    assert _leftovers(tmp_path, "b") == []
    r = cli("compile", model_cache("tiny").path, "-o", tmp_path / "b", "--plan-only", "--dask=h:1")
    assert r.code == 2 and "--plan-only" in r.err


def test_without_dask_installed_the_hint_is_exit_2(model_cache, tmp_path, cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    out = tmp_path / "b"
    r = cli("compile", model_cache("tiny").path, "-o", out, "--dask", "tcp://127.0.0.1:8786")
    assert r.code == 2, r.err
    assert r.err.strip().splitlines() == [f"maskc: error: {parallel.INSTALL_HINT}"]
    assert "pip install 'maskc[dask]'" in r.err
    assert _leftovers(tmp_path, "b") == []
    # without --dask, nothing imports Dask: the compile works
    assert cli("compile", model_cache("tiny").path, "-o", out, "--no-verify").code == 0


@pytest.mark.slow
def test_a_worker_that_cannot_see_the_build_is_named(scheduler, model_cache, tmp_path, cli):
    """A worker on another filesystem: it looks for the probe file under another root (as if
    the build's folder were not mounted there)."""
    from distributed import Client

    def elsewhere() -> None:
        from maskc import parallel as p

        original = p._probe_worker

        def probe(path, token, model, version):
            return original("/nonexistent" + path, token, model, version)

        p._probe_worker = probe
        p._original_probe = original

    def restore() -> None:
        from maskc import parallel as p

        p._probe_worker = p._original_probe

    out = tmp_path / "b"
    with Client(scheduler, set_as_default=False) as client:
        client.run(elsewhere)
        try:
            r = cli("compile", model_cache("tiny").path, "-o", out, "--dask", scheduler)
        finally:
            client.run(restore)
    assert r.code == 3, r.err
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and "/nonexistent" in lines[0] and "Dask worker tcp://" in lines[0]
    assert "cannot read the build's temporary folder" in lines[0]
    assert _leftovers(tmp_path, "b") == []


@pytest.mark.slow
def test_verify_on_dask_reads_the_banks_on_the_workers(
    scheduler, small_parts, model_cache, tmp_path, cli
):
    """``maskc verify --dask``: the banks are read back on the cluster's workers, the same
    answer as a local verify, and nothing but the verify record is written into the build (it
    may be read-only);
    a worker that cannot read the build is named in one line (exit 3)."""
    import stat

    from distributed import Client

    b = tmp_path / "b"
    args = ("--layout-format", "oas", "--no-calib", "--no-verify")
    assert cli("compile", model_cache("tiny").path, "-o", b, *args).code == 0
    before = _files(b)
    modes = {p: p.stat().st_mode for p in [b, *b.rglob("*")]}
    for p in modes:  # read-only, as an archived build
        p.chmod(stat.S_IMODE(modes[p]) & ~0o222)
    log = tmp_path / "tasks.log"

    def count_tasks(log: str) -> None:  # runs on each worker: pickled by value (a closure)
        import maskc.layout.verify as v

        original = getattr(v, "_counted", v._verify_bank_worker)

        def counted(*a):
            with open(log, "a") as f:
                f.write(f"{os.getpid()}\n")
            return original(*a)

        v._counted, v._verify_bank_worker = original, counted

    def uncount() -> None:
        import maskc.layout.verify as v

        v._verify_bank_worker = v._counted

    with Client(scheduler, set_as_default=False) as client:
        client.run(count_tasks, str(log))
        try:
            r = cli("verify", b, "--dask", scheduler, "--json")
        finally:
            client.run(uncount)
            for p, m in modes.items():
                p.chmod(stat.S_IMODE(m))
        local = cli("verify", b, "--json")
        assert r.code == 0, r.err
        got, want = json.loads(r.out), json.loads(local.out)
        assert got["ok"] and got == want
        after = _files(b)  # at most the verify record (verify.json; root writes read-only files)
        assert after.keys() - before.keys() <= {"verify.json"}
        assert {k: after[k] for k in before} == before
        banks = json.loads((b / "layers" / "index.json").read_text())["banks"]
        pids = log.read_text().split()
        assert len(pids) == len(banks) > 2 and os.getpid() not in map(int, pids)

        def elsewhere() -> None:
            from maskc import parallel as p

            p._original_reader = p._probe_reader
            p._probe_reader = lambda path, *a: p._original_reader("/nonexistent" + path, *a)

        def restore() -> None:
            from maskc import parallel as p

            p._probe_reader = p._original_reader

        client.run(elsewhere)
        try:
            r = cli("verify", b, "--dask", scheduler)
        finally:
            client.run(restore)
    lines = r.err.strip().splitlines()
    assert r.code == 3 and len(lines) == 1, r.err
    assert "/nonexistent" in lines[0] and "cannot read the build" in lines[0]
    assert "Dask worker tcp://" in lines[0]


def test_read_only_probe_names_what_a_worker_misses(tmp_path):
    import hashlib

    f = tmp_path / "manifest.json"
    f.write_text("{}")
    digest = hashlib.sha256(b"{}").hexdigest()
    assert parallel._probe_reader(str(f), digest, maskc_version()) is None
    other = parallel._probe_reader(str(f), hashlib.sha256(b"x").hexdigest(), maskc_version())
    assert "not the same filesystem" in other
    gone = parallel._probe_reader(str(tmp_path / "nope"), digest, maskc_version())
    assert "cannot read the build" in gone and str(tmp_path / "nope") in gone
    assert "0.0.0" in parallel._probe_reader(str(f), digest, "0.0.0")


def test_probe_names_what_a_worker_misses(tmp_path):
    probe = tmp_path / "probe"
    probe.write_text("token")
    ok = parallel._probe_worker(str(probe), "token", str(tmp_path), maskc_version())
    assert ok is None
    other = parallel._probe_worker(str(probe), "other", str(tmp_path), maskc_version())
    assert "not the same filesystem" in other
    gone = parallel._probe_worker(str(probe), "token", str(tmp_path / "model"), maskc_version())
    assert "cannot see the model" in gone and str(tmp_path / "model") in gone
    old = parallel._probe_worker(str(probe), "token", str(tmp_path), "0.0.0")
    assert "0.0.0" in old


def test_atomic_path_leaves_the_old_file_or_the_new_one(tmp_path):
    f = tmp_path / "f"
    f.write_bytes(b"old")
    with pytest.raises(RuntimeError), parallel.atomic_path(f) as tmp:
        Path(tmp).write_bytes(b"ha")
        raise RuntimeError("worker died")
    assert f.read_bytes() == b"old" and sorted(tmp_path.iterdir()) == [f]
    with parallel.atomic_path(f) as tmp:
        Path(tmp).write_bytes(b"new")
    assert f.read_bytes() == b"new" and sorted(tmp_path.iterdir()) == [f]


def maskc_version() -> str:
    from maskc import __version__

    return __version__
