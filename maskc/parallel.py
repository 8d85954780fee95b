"""Where a compile's independent tasks run: a local process pool (``--jobs N``) or the workers of
a Dask cluster (``--dask tcp://HOST:PORT``, docs/distributed.md).

The parallel sites (the layer writers, verify) open their executor with :func:`pool` and use
only the :class:`concurrent.futures.Executor` interface (``map``/``submit``), with small picklable
arguments (paths, banks); results are consumed in submission order, so the build is the same
byte for byte wherever the tasks ran. :func:`cluster` connects to the scheduler for the length of
one compile (with a timeout and a one-line error), checks that every worker sees the build's
temporary folder and the model at the same paths (a shared filesystem), and turns a lost
scheduler into a one-line error; the build folder is then removed by the compile's
``atomic_output_dir``. Tasks are submitted with ``retries``: a task whose worker dies is run
again elsewhere, and tasks write their files under a temporary name renamed into place
(:func:`atomic_path`), so a retried task leaves the same bytes.

Dask itself is optional (``pip install 'maskc[dask]'``); without ``--dask`` nothing here
imports it.
"""

from __future__ import annotations

import logging
import math
import os
import re
import secrets
from collections.abc import Iterator
from concurrent.futures import Executor
from contextlib import contextmanager, suppress
from pathlib import Path

from maskc import __version__
from maskc.errors import InputError, UsageError

#: times Dask runs a failed task again (a task whose worker dies is rescheduled by the scheduler
#: itself, up to its ``allowed-failures``)
RETRIES = 2
#: seconds to reach the scheduler and to see a first worker (env MASKC_DASK_TIMEOUT)
CONNECT_TIMEOUT = 10.0
#: the probe file written into the build's temporary folder
PROBE = ".maskc-dask-probe"
INSTALL_HINT = "--dask needs Dask, which is not installed: pip install 'maskc[dask]'"

#: the Dask client of the compile in progress (None: local processes)
_client = None


class ClusterError(InputError):
    """The Dask cluster cannot be reached, cannot see the build's files, or was lost (exit 3)."""


def usable_cpus(cgroup_root: str = "/sys/fs/cgroup", proc_self: str = "/proc/self") -> int:
    """CPUs this process may actually use: its affinity mask, capped by the CPU quota of its
    cgroup (v2 ``cpu.max`` of its cgroup and every parent; v1 ``cpu.cfs_quota_us`` /
    ``cpu.cfs_period_us``), rounded up. A container limited to 1.5 CPUs of a 64-core host
    gets 2, not 64: more threads than that only wait for each other."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quotas = []
    root = Path(cgroup_root)
    with suppress(OSError, ValueError):
        for line in Path(proc_self, "cgroup").read_text().splitlines():
            hier, _, path = line.split(":", 2)
            if hier == "0":  # cgroup v2: the process's cgroup and its parents
                d = root / path.lstrip("/")
                while True:
                    with suppress(OSError, ValueError):
                        q, per = (d / "cpu.max").read_text().split()[:2]
                        if q != "max":
                            quotas.append(int(q) / int(per))
                    if d == root:
                        break
                    d = d.parent
    with suppress(OSError, ValueError):  # cgroup v1
        q = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        per = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        if q > 0 and per > 0:
            quotas.append(q / per)
    for q in quotas:
        n = min(n, max(1, math.ceil(q - 1e-9)))
    return max(1, n)


def distributed() -> bool:
    """True while a compile runs on a Dask cluster."""
    return _client is not None


def worker_count(default: int) -> int:
    """Tasks that can run at once: the cluster's threads, or ``default`` locally."""
    if _client is None:
        return default
    workers = _client.scheduler_info(n_workers=-1)["workers"].values()
    return max(1, sum(w.get("nthreads", 1) for w in workers))


@contextmanager
def pool(workers: int) -> Iterator[Executor]:
    """An executor for one parallel site: ``workers`` forked local processes, or the Dask
    cluster when :func:`cluster` is active (``workers`` is then ignored)."""
    if _client is None:
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing import get_context

        with ProcessPoolExecutor(max(1, workers), mp_context=get_context("fork")) as ex:
            yield ex
        return
    ex = _client.get_executor(retries=RETRIES, pure=False)
    try:
        yield ex
    except BaseException:
        ex.shutdown(wait=False)
        raise
    ex.shutdown(wait=True)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary name beside ``path`` (unique to this process) to write; rename it to
    ``path`` when the block ends without error, remove it otherwise. A task run twice (a retry
    after its worker died) never leaves a half-written file under ``path``."""
    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def remove_debris(folder: str | os.PathLike) -> None:
    """Remove what :func:`atomic_path` writers killed before their rename left in ``folder``
    (their tasks were run again and wrote the real file)."""
    for p in Path(folder).iterdir():
        if _DEBRIS.fullmatch(p.name) and p.is_file():
            p.unlink()


_DEBRIS = re.compile(r".+\.tmp-\d+-[0-9a-f]{8}")


def _timeout() -> float:
    try:
        return float(os.environ.get("MASKC_DASK_TIMEOUT", CONNECT_TIMEOUT))
    except ValueError:
        raise UsageError("MASKC_DASK_TIMEOUT must be a number of seconds") from None


def connect(address: str, timeout: float | None = None):
    """A ``distributed.Client`` on ``address``, with at least one worker; a one-line
    :class:`ClusterError` when the scheduler or its workers cannot be reached in ``timeout``
    seconds, a :class:`UsageError` (exit 2) when Dask is not installed."""
    timeout = _timeout() if timeout is None else timeout
    if not re.fullmatch(r"(?:[a-z]+://)?(?:\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]]+):\d{1,5}", address):
        raise UsageError(
            f"--dask must be a scheduler address like tcp://HOST:PORT, got {address!r}"
        )
    try:
        from distributed import Client
    except ImportError:
        raise UsageError(INSTALL_HINT) from None
    try:
        client = Client(address, timeout=timeout, set_as_default=False)
    except Exception as e:  # OSError, TimeoutError, ValueError (a malformed address)
        why = " ".join(str(e).split()) or type(e).__name__
        raise ClusterError(
            f"{address}: cannot reach the Dask scheduler within {timeout:g} s ({why}); start it "
            "with `dask scheduler` and give its address (tcp://HOST:PORT)"
        ) from None
    try:
        client.wait_for_workers(1, timeout=timeout)
    except Exception:
        client.close()
        raise ClusterError(
            f"{address}: the Dask scheduler has no workers after {timeout:g} s; start some with "
            f"`dask worker {address}`"
        ) from None
    return client


def _probe_worker(probe: str, token: str, model: str, version: str) -> str | None:
    """Run on every worker: None when it sees the probe file with ``token``, the model, can
    write beside the probe and runs the same maskc version; else what is wrong (one line)."""
    import maskc

    try:
        with open(probe, encoding="utf-8") as f:
            if f.read() != token:
                return (
                    f"{probe}: another file is at this path on the worker (not the same filesystem)"
                )
    except OSError as e:
        return f"{probe}: the worker cannot read the build's temporary folder ({e.strerror or e})"
    try:
        os.stat(model)
    except OSError as e:
        return f"{model}: the worker cannot see the model ({e.strerror or e})"
    try:
        reply = f"{probe}.{os.getpid()}-{secrets.token_hex(4)}"
        with open(reply, "w", encoding="utf-8") as f:
            f.write(token)
        os.unlink(reply)
    except OSError as e:
        return f"{Path(probe).parent}: the worker cannot write the build folder ({e.strerror or e})"
    if maskc.__version__ != version:
        return f"the worker runs maskc {maskc.__version__}, the compile {version}"
    return None


def _probe_reader(path: str, digest: str, version: str) -> str | None:
    """Run on every worker of a read-only job (verify): None when it reads the same file at
    ``path`` (sha256 ``digest``) and runs the same maskc version; else what is wrong."""
    import hashlib

    import maskc

    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError as e:
        return f"{path}: the worker cannot read the build ({e.strerror or e})"
    if h.hexdigest() != digest:
        return f"{path}: another file is at this path on the worker (not the same filesystem)"
    if maskc.__version__ != version:
        return f"the worker runs maskc {maskc.__version__}, this command {version}"
    return None


def check_readable(client, probe: Path) -> None:
    """Every worker must read the file ``probe`` (a build's manifest.json) at the same absolute
    path with the same bytes, without anything being written: a one-line
    :class:`ClusterError` naming the path and the worker otherwise."""
    import hashlib

    probe = Path(probe).resolve()
    digest = hashlib.sha256(probe.read_bytes()).hexdigest()
    answers = client.run(_probe_reader, str(probe), digest, __version__)
    _raise_first(answers, "read the build")


def _raise_first(answers: dict, need: str) -> None:
    """The first worker's problem (by worker address) as a :class:`ClusterError`."""
    for worker, problem in sorted(answers.items()):
        if problem is not None:
            raise ClusterError(
                f"{problem} [Dask worker {worker}]; workers must {need} on a filesystem every "
                "machine mounts at the same path (docs/distributed.md)"
            )


def check_shared(client, build: Path, model: Path) -> None:
    """Every worker must see ``build`` (the compile's temporary folder) and ``model`` at the same
    absolute paths as this machine: a one-line :class:`ClusterError` naming the path and the
    worker otherwise."""
    build, model = Path(build).resolve(), Path(model).resolve()
    probe = build / PROBE
    token = secrets.token_hex(16)
    probe.write_text(token, encoding="utf-8")
    try:
        answers = client.run(_probe_worker, str(probe), token, str(model), __version__)
    finally:
        probe.unlink()
    _raise_first(answers, "read the model and write the build")


def _lost(client) -> bool:
    return client.status != "running"


@contextmanager
def cluster(
    address: str | None, build: Path, model: Path, read_only: Path | None = None
) -> Iterator[None]:
    """Run the enclosed compile's parallel sites on the Dask cluster at ``address`` (None: local
    processes). Connects, checks the shared filesystem, and maps a lost scheduler to a
    :class:`ClusterError`; the client is closed at the end. With ``read_only`` (a file of an
    existing build, for ``maskc verify``) the workers are only checked to read that file, and
    nothing is written."""
    global _client
    if address is None:
        yield
        return
    try:
        import distributed  # noqa: F401  (its loggers exist once it is imported)
    except ImportError:
        raise UsageError(INSTALL_HINT) from None
    # The client's log (reconnect attempts, tracebacks of a lost connection) is chatter: the
    # error below says it in one line.
    names = [n for n in logging.root.manager.loggerDict if n.split(".")[0] == "distributed"]
    levels = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.CRITICAL)
    try:
        client = connect(address)
    except BaseException:
        _restore(levels)
        raise
    prev, _client = _client, client
    try:
        if read_only is None:
            check_shared(client, build, model)
        else:
            check_readable(client, read_only)
        yield
    except Exception as e:
        if not isinstance(e, ClusterError) and _lost(client):
            what = (
                "the verify: restart the scheduler and verify again"
                if read_only is not None
                else "the compile: no build was written: restart the scheduler and compile again"
            )
            raise ClusterError(
                f"{address}: lost the Dask scheduler during {what} ({type(e).__name__})"
            ) from None
        raise
    finally:
        _client = prev
        with suppress(Exception):  # a lost scheduler: nothing left to close
            client.close(timeout=5)
        _restore(levels)


def _restore(levels: dict[str, int]) -> None:
    for n, level in levels.items():
        logging.getLogger(n).setLevel(level)
