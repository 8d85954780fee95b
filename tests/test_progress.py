"""Progress on stderr (maskc/cli/progress.py): plain, bounded log lines when stderr is piped,
an ETA that waits for enough progress and time, and nothing with ``MASKC_PROGRESS=0``.

The ETA and line logic run on a fake clock; the commands run with a real, piped stderr, where
only the lines' shape and number are checked (never the wall time)."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys

import pytest

from maskc.cli.app import RichEvents, progress_bar
from maskc.cli.progress import (
    LINE_SECONDS,
    LINE_SECONDS_UNKNOWN_TOTAL,
    EtaColumn,
    Rate,
    StepProgress,
    Tracker,
    duration,
    progress_off,
)


class Clock:
    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _split(line: str) -> tuple[str, str]:
    """``maskc: LABEL: TEXT`` -> (LABEL, TEXT)."""
    assert line.startswith("maskc: "), line
    label, text = line[len("maskc: ") :].rsplit(": ", 1)
    return label, text


# -- the ETA ------------------------------------------------------------------------------------


def test_no_eta_from_a_fast_first_tick():
    """One quick item must not promise the whole step in a fraction of a second."""
    r = Rate(t0=0.0)
    r.record(0.001, 1)
    assert r.eta(0.001, 1, 100) is None  # 1%, no time, one tick
    assert r.eta(5.0, 1, 100) is None  # still one tick: no rate yet
    r.record(3.0, 2)
    assert r.eta(3.0, 2, 100) is None  # one tick after the first: not yet evidence
    r.record(6.0, 3)
    r.record(9.0, 4)
    eta = r.eta(9.0, 4, 100)
    assert eta is not None and 250 < eta < 350  # 96 items at ~1 per 3 s, not 0.1 s


def test_no_eta_from_a_slow_first_tick():
    """A first item that pays 20 s of start-up (numba's compiles) is not the rate either."""
    r = Rate(t0=0.0)
    r.record(20.0, 1)
    for k in range(2, 7):
        r.record(20.0 + k - 1, k)
    assert r.eta(25.0, 6, 100) == pytest.approx(94.0)  # 1 per second, not 6 per 25 s


def test_no_eta_before_min_fraction_or_min_seconds():
    r = Rate(t0=0.0)
    for k in range(1, 11):
        r.record(10.0 * k, k)
    assert r.eta(100.0, 10, 1000) is None  # 1% done after 100 s
    r = Rate(t0=0.0)
    r.record(0.4, 50)
    r.record(0.6, 55)
    r.record(0.8, 57)
    r.record(1.0, 60)
    assert r.eta(1.0, 60, 100) is None  # 60% done, but after 1 s
    assert r.eta(2.0, 60, 100) is not None


def test_no_eta_from_a_big_first_item_then_tiny_ones_and_a_pause():
    """The "116:42:52" of issue 23: the first tick is a fifth of the work (an embedding), a
    few tiny items follow at once, then a big one takes a minute. The rate of those tiny
    items over the pause is no evidence of anything: no ETA until 2% of the work was
    measured (or a whole window of time)."""
    r = Rate(t0=0.0)
    r.record(2.0, 28_000_000)
    for k in range(1, 4):
        r.record(2.0 + 0.1 * k, 28_000_000 + 100_000 * k)
    for now in (3.0, 10.0, 60.0):
        assert r.eta(now, 28_300_000, 134_515_008) is None
    for k in range(4, 40):  # then steady: 100,000 per 0.1 s
        r.record(2.0 + 0.1 * k, 28_000_000 + 100_000 * k)
    eta = r.eta(6.0, 31_900_000, 134_515_008)
    assert eta == pytest.approx((134_515_008 - 31_900_000) / 1e6, rel=0.05)


def test_a_whole_window_of_slow_ticks_is_evidence():
    """Items that are each under 2% of the work but a minute apart still get an ETA once
    the rate spans a whole window."""
    r = Rate(t0=0.0)
    for k in range(1, 6):
        r.record(60.0 * k, k)
    assert r.eta(300.0, 5, 200) == pytest.approx(195 * 60, rel=0.01)


def test_eta_follows_the_recent_rate_and_counts_down():
    r = Rate(t0=0.0)
    done = 0
    for t in range(1, 101):  # 1 per second for 100 s
        done += 1
        r.record(float(t), done)
    for t in range(101, 141):  # then 10 per second
        done += 10
        r.record(float(t), done)
    eta = r.eta(140.0, done, 10_000)
    assert eta == pytest.approx((10_000 - done) / 10, rel=0.01)
    # no tick for 10 s: that is slower progress, not 10 s less to go
    assert eta < r.eta(150.0, done, 10_000) < 2 * eta
    assert r.eta(1e6, done, 10_000) > 1e5  # a stalled step is not about to end
    assert r.eta(140.0, 10_000, 10_000) == 0.0


def test_rate_window_stays_small_with_fast_ticks():
    r = Rate(t0=0.0)
    for k in range(1, 100_001):
        r.record(k * 0.001, k)  # 1,000 ticks a second for 100 s
    assert len(r.samples) < 400
    assert r.per_second() == pytest.approx(1000, rel=0.01)


@pytest.mark.parametrize("total", [0, None])
def test_zero_and_unknown_totals(total):
    """No ETA, no percent, no division by zero; lines at most every 30 s without a total."""
    r = Rate(t0=0.0)
    r.record(1.0, 0)
    r.record(5.0, 3)
    assert r.eta(5.0, 3, total) is None
    tr = Tracker("scoring windows", 0.0, total, in_bytes=False)
    assert tr.started(total) == "maskc: scoring windows: 0"
    lines = [tr.update(t, t // 10, total) for t in range(1, 200)]
    said = [ln for ln in lines if ln]
    assert len(said) == 199 // LINE_SECONDS_UNKNOWN_TOTAL
    assert all("%" not in ln and "ETA" not in ln and "elapsed" in ln for ln in said)
    assert tr.finish(200.0, 19, total) == "maskc: scoring windows: done, 19 in 3m20s"
    assert tr.finish(201.0, 19, total) is None  # said once


def test_rate_restarts_when_progress_goes_back():
    r = Rate(t0=0.0)
    r.record(1.0, 50)
    r.record(2.0, 60)
    r.record(3.0, 10)  # a reset
    assert r.per_second() is None


# -- the lines ----------------------------------------------------------------------------------


def test_lines_of_a_long_step_are_bounded_spaced_and_complete():
    """Two hours of steady ticks: a start line, at most 20 progress lines at least 10 s
    apart, each with done/total, percent, elapsed and ETA, and one end line."""
    total = 134_515_008
    tr = Tracker("quantizing", 0.0, total, in_bytes=False)
    lines = [(0.0, tr.started(total))]
    steps = 14_400
    for k in range(1, steps + 1):
        t = k * 0.5
        line = tr.update(t, total * k // steps, total)
        if line:
            lines.append((t, line))
    assert lines[0][1] == "maskc: quantizing: 0 / 134,515,008"
    assert lines[-1][1] == "maskc: quantizing: done in 2h00m"
    middle = lines[1:-1]
    assert 15 <= len(middle) <= 20
    for (ta, _), (tb, _) in itertools.pairwise(lines[:-1]):  # the end line comes when it comes
        assert tb - ta >= LINE_SECONDS
    for t, line in middle:
        label, text = _split(line)
        assert label == "quantizing"
        assert " / 134,515,008 (" in text and "%), " in text
        assert f"{duration(t)} elapsed" in text and ", ETA " in text
    # the ETA is sane: close to the time really left
    t, line = middle[len(middle) // 2]
    eta = line.rsplit("ETA ", 1)[1]
    assert abs(_seconds(eta) - (7200 - t)) < 120


def _seconds(text: str) -> float:
    if "h" in text:
        h, m = text.rstrip("m").split("h")
        return int(h) * 3600 + int(m) * 60
    if "m" in text:
        m, s = text.rstrip("s").split("m")
        return int(m) * 60 + int(s)
    return float(text.rstrip("s"))


def test_a_short_step_says_only_start_and_end():
    tr = Tracker("writing netlist", 0.0, 1000, in_bytes=False)
    said = [tr.update(k * 0.005, k, 1000) for k in range(1, 1001)]
    assert [ln for ln in said if ln] == ["maskc: writing netlist: done in 5.0s"]


def test_byte_amounts():
    tr = Tracker("checking tensors", 0.0, 538_100_000, in_bytes=True)
    assert tr.started(538_100_000) == "maskc: checking tensors: 0 bytes / 538.1 MB"


@pytest.mark.parametrize(
    "seconds,text", [(0.04, "0.0s"), (9.2, "9.2s"), (41.4, "41s"), (185, "3m05s"), (3725, "1h02m")]
)
def test_duration(seconds, text):
    assert duration(seconds) == text


def test_step_progress_writes_lines_and_ends_steps(capsys):
    clock = Clock()
    with StepProgress(lines=True, disable=True, get_time=clock) as prog:
        ev = RichEvents(prog)
        ev.start("quantizing", 100)
        for k in range(100):
            clock.t += 1.0
            ev.advance(1, f"model.layers.{k}.mlp")  # the detail never changes the label
        ev.start("writing netlist", 10)
        clock.t += 0.5
        ev.advance(4)
        ev.start("verifying", 3)  # the netlist stopped early
        clock.t += 0.3
        ev.advance(1)
    lines = capsys.readouterr().err.splitlines()
    labels = [_split(ln)[0] for ln in lines]
    assert set(labels) == {"quantizing", "writing netlist", "verifying"}
    assert lines[0] == "maskc: quantizing: 0 / 100"
    assert "maskc: quantizing: done in 1m40s" in lines
    assert "maskc: writing netlist: stopped at 4 / 10 (40%) after 0.5s" in lines
    assert lines[-1] == "maskc: verifying: stopped at 1 / 3 (33%) after 0.3s"
    assert 2 < labels.count("quantizing") <= 22


def test_no_end_line_on_an_error(capsys):
    clock = Clock()
    with (
        pytest.raises(RuntimeError),
        StepProgress(lines=True, disable=True, get_time=clock) as prog,
    ):
        task = prog.add_task("checking tensors", total=10)
        prog.advance(task, 3)
        raise RuntimeError("bad tensor")
    assert capsys.readouterr().err == "maskc: checking tensors: 0 / 10\n"


def test_terminal_eta_column_waits_then_estimates():
    clock = Clock()
    prog = StepProgress(EtaColumn(), disable=True, get_time=clock)
    task = prog.add_task("quantizing", total=100)
    col = EtaColumn()
    clock.t = 0.01
    prog.advance(task, 1)
    clock.t = 0.02
    prog.advance(task, 1)  # two fast ticks: 100 a second, rich's estimate says 1 s left
    assert col.render(prog.tasks[0]).plain == "-:--:--"
    clock.t = 2.01  # 2% and 2 s, but one tick after the first is not evidence
    assert col.render(prog.tasks[0]).plain == "-:--:--"
    for _ in range(2):
        clock.t += 1.0
        prog.advance(task, 1)  # 3 ticks after the first, 3 items (3%) in 3.01 s
    assert col.render(prog.tasks[0]).plain == "0:02:08"
    clock.t = 10.0
    task = prog.add_task("writing netlist", total=100)
    clock.t = 30.0
    prog.advance(task, 1)  # a slow first tick (start-up) is not the rate either
    assert col.render(prog.tasks[1]).plain == "-:--:--"
    for _ in range(5):
        clock.t += 1.0
        prog.advance(task, 1)
    assert col.render(prog.tasks[1]).plain == "0:01:34"


def test_progress_off_values(monkeypatch):
    assert progress_off({"MASKC_PROGRESS": "0"}) and progress_off({"MASKC_PROGRESS": "off"})
    assert not progress_off({}) and not progress_off({"MASKC_PROGRESS": "1"})
    monkeypatch.setenv("MASKC_PROGRESS", "0")
    prog = progress_bar()
    assert prog.disable and not prog.lines


# -- the commands, stderr piped -----------------------------------------------------------------


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    env.pop("MASKC_PROGRESS", None)
    return env | extra


def _maskc(*args, **env: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "maskc", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(**env), timeout=600)


def _check_progress(err: str, steps: set[str]) -> None:
    """Plain lines; every step started and ended, in a bounded number of lines."""
    assert "\x1b" not in err and "\r" not in err, repr(err[:300])
    by_step: dict[str, list[str]] = {}
    for line in err.splitlines():
        if line.startswith("maskc: warning: "):
            continue
        label, text = _split(line)
        by_step.setdefault(label, []).append(text)
    assert steps <= set(by_step), sorted(by_step)
    for label, texts in by_step.items():
        assert texts[0].startswith("0 / "), (label, texts)
        assert texts[-1].startswith("done in "), (label, texts)
        assert sum(t.startswith("done") for t in texts) == 1, (label, texts)
        assert len(texts) <= 22, (label, texts)


def test_piped_compile_and_verify_print_plain_progress_lines(model_cache, tmp_path):
    build = tmp_path / "b"
    r = _maskc("compile", model_cache("tiny").path, "-o", build, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["build"] == str(build)  # stdout is the JSON alone
    _check_progress(
        r.stderr,
        {
            "quantizing",
            "writing netlist",
            "writing the via and metal layers (GDSII)",
            "reading the layers back and comparing them with the netlist",
        },
    )
    r = _maskc("verify", build, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["ok"] is True
    _check_progress(r.stderr, {"reading the layers back and comparing them with the netlist"})
    r = _maskc("verify", build, "--json", MASKC_PROGRESS="0")
    assert r.returncode == 0 and r.stderr == "" and json.loads(r.stdout)["ok"] is True
    # nothing of the progress (timings) reaches the build
    assert not [p for p in build.rglob("*") if p.is_file() and b"elapsed" in p.read_bytes()]


def test_in_process_commands_report_progress(model_cache, tmp_path, cli, monkeypatch):
    """inspect's tensor check (bytes), emulate's loading and --ppl windows (a total that is
    unknown at first), diff-layers."""
    m = model_cache("tiny").path
    build = tmp_path / "b"
    assert cli("compile", m, "-o", build, "--no-verify").code == 0
    monkeypatch.delenv("MASKC_PROGRESS")
    r = cli("inspect", m, "--json")
    assert r.code == 0 and json.loads(r.out)
    lines = r.err.splitlines()
    assert lines[0].startswith("maskc: checking tensors: 0 bytes / ") and lines[0].endswith("kB")
    assert lines[-1].startswith("maskc: checking tensors: done in ")
    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog " * 3)
    r = cli("emulate", build, "--ppl", text, "--ctx", "8", "--json")
    assert r.code == 0 and json.loads(r.out)["ppl"] > 0, r.err
    assert "maskc: scoring windows: 0\n" in r.err
    assert "maskc: loading netlist: 0 / " in r.err and "maskc: loading netlist: done" in r.err
    assert [ln for ln in r.err.splitlines() if ln.startswith("maskc: scoring windows: done")]
    r = cli("diff-layers", build, build, "--json")
    assert r.code == 0 and json.loads(r.out)
    _check_progress(r.err, {"comparing the via layers"})
