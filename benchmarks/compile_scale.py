"""Compile at scale: wall time, peak RSS of the whole process tree and disk, per stage and per
compile step.

Runs ``maskc compile MODEL -o BUILD`` (then ``maskc verify BUILD`` unless ``--no-verify``,
then ``maskc emulate BUILD -n 8`` with ``--emulate``) as subprocesses, sampling the summed RSS
of each command's process tree (the command and every worker it starts) from /proc every
0.2 s. The compile's steps are timed from its progress lines on stderr (README "Progress":
stderr is a pipe and MASKC_PROGRESS is unset, so every long step prints a start line and a
"done in" line); the peak RSS of a step is the highest sample between those two lines. Prints
a table per stage and per step, the disk used by the build folder and each of its subfolders,
and writes benchmarks/results/compile_scale-<MODEL name>[-<label>].json.

    python benchmarks/compile_scale.py MODEL [--jobs N] [--emulate] [--no-verify] [--keep]
        [--label L] [--build DIR] [-- extra compile args ...]

Extra compile arguments come after ``--`` (e.g. ``-- --no-calib --layout-format oas``). The
build goes to a temporary folder next to ``--build`` (default: under $TMPDIR) and is deleted at
the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _proctree import tree_rss_bytes  # benchmarks/_proctree.py (scripts run from benchmarks/)

#: seconds between two RSS samples
SAMPLE = 0.2
#: "maskc: STEP: 0 / N" starts a step; "maskc: STEP: done in 1m05s" ends it
START = re.compile(r"^maskc: (?P<step>.+?): 0 / [\d,]+$")
DONE = re.compile(r"^maskc: (?P<step>.+?): done in (?P<dur>\S+)$")


def tree_rss_mb(pid: int) -> float:
    """Summed VmRSS of ``pid`` and all its descendants, MiB."""
    return tree_rss_bytes(pid) / 2**20


def run_sampled(cmd: list[str], env: dict) -> dict:
    """Run ``cmd``; return wall time, peak tree RSS, the RSS samples and stderr lines (each with
    the time it was read)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines: list[tuple[float, str]] = []
    out: list[str] = []

    def read_err() -> None:
        for line in p.stderr:
            lines.append((time.perf_counter() - t0, line.rstrip("\n")))
            print(f"  {line.rstrip()}", file=sys.stderr, flush=True)

    def read_out() -> None:
        out.append(p.stdout.read())

    threads = [threading.Thread(target=read_err), threading.Thread(target=read_out)]
    for t in threads:
        t.start()
    samples: list[tuple[float, float]] = []
    while p.poll() is None:
        samples.append((time.perf_counter() - t0, tree_rss_mb(p.pid)))
        time.sleep(SAMPLE)
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        tail = "\n".join(s for _, s in lines[-5:])
        sys.exit(f"{' '.join(cmd)}: exit {p.returncode}\n{tail}")
    return {
        "wall_s": wall,
        "peak_rss_mb": max((r for _, r in samples), default=0.0),
        "samples": samples,
        "stderr": lines,
        "stdout": "".join(out),
    }


def steps_of(run: dict) -> list[dict]:
    """The compile's timed steps from its progress lines, with the peak RSS inside each."""
    open_: dict[str, float] = {}
    steps = []
    for t, line in run["stderr"]:
        if m := START.match(line):
            open_[m["step"]] = t
        elif (m := DONE.match(line)) and m["step"] in open_:
            t0 = open_.pop(m["step"])
            near = [r for ts, r in run["samples"] if t0 - SAMPLE <= ts <= t + SAMPLE]
            peak = max(near, default=0.0)
            steps.append({"step": m["step"], "wall_s": t - t0, "peak_rss_mb": peak})
    return steps


def disk_mb(path: Path) -> float:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            total += os.stat(os.path.join(root, f)).st_blocks * 512
    return total / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--jobs", type=int, default=None)
    ap.add_argument("--emulate", action="store_true", help="also run emulate -n 8")
    ap.add_argument("--no-verify", action="store_true", help="skip maskc verify")
    ap.add_argument("--keep", action="store_true", help="keep the build folder")
    ap.add_argument("--label", default="", help="suffix of the JSON file name")
    ap.add_argument("--build", type=Path, default=None, help="build folder (default: temporary)")
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    a = ap.parse_args(argv[:cut])
    a.extra = argv[cut + 1 :]

    env = {k: v for k, v in os.environ.items() if k != "MASKC_PROGRESS"}
    # the maskc of this checkout, installed or not
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    tmp = None
    if a.build is None:
        tmp = Path(tempfile.mkdtemp(prefix="compile_scale-"))
        build = tmp / "build"
    else:
        build = a.build
        if build.exists():
            sys.exit(f"{build}: exists; give another --build")
    mx = [sys.executable, "-m", "maskc"]
    jobs = [] if a.jobs is None else ["--jobs", str(a.jobs)]
    try:
        stages = []
        comp = run_sampled([*mx, "compile", str(a.model), "-o", str(build), *jobs, *a.extra], env)
        stages.append(("compile", comp))
        disk = {"build": disk_mb(build)}
        for sub in sorted(p for p in build.iterdir() if p.is_dir()):
            disk[sub.name + "/"] = disk_mb(sub)
        if not a.no_verify:
            stages.append(("verify", run_sampled([*mx, "verify", str(build)], env)))
        if a.emulate:
            stages.append(
                (
                    "emulate -n 8",
                    run_sampled([*mx, "emulate", str(build), "-n", "8", "--tokens", "1,2,3"], env),
                )
            )
    finally:
        if not a.keep:
            shutil.rmtree(tmp or build, ignore_errors=True)
    steps = steps_of(comp)
    params = None
    cfg = a.model / "config.json"
    print(f"\n{'stage / compile step':<52}{'wall s':>9}{'peak RSS MB':>13}")
    for name, r in stages:
        print(f"{name:<52}{r['wall_s']:>9.1f}{r['peak_rss_mb']:>13.0f}")
        if name == "compile":
            for s in steps:
                print(f"  {s['step'][:48]:<50}{s['wall_s']:>9.1f}{s['peak_rss_mb']:>13.0f}")
    print(f"\n{'build folder':<52}{'disk MB':>9}")
    for k, v in disk.items():
        print(f"{k:<52}{v:>9.1f}")
    res = {
        "benchmark": "compile_scale",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()} {os.cpu_count()} cores "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB",
        "python": platform.python_version(),
        "model": str(a.model),
        "config": json.loads(cfg.read_text()) if cfg.is_file() else params,
        "jobs": a.jobs,
        "compile_args": a.extra,
        "stages": [
            {"stage": n, "wall_s": r["wall_s"], "peak_rss_mb": r["peak_rss_mb"]} for n, r in stages
        ],
        "compile_steps": steps,
        "disk_mb": disk,
    }
    name = a.model.name + (f"-{a.label}" if a.label else "")
    out = Path(__file__).parent / "results" / f"compile_scale-{name}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
