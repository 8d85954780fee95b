"""Progress on stderr: rich bars on a terminal, plain log lines when stderr is piped (CI logs,
``2> log``, ``| tee``), nothing with ``MASKC_PROGRESS=0``.

Every task of a :class:`StepProgress` has a :class:`Tracker` that measures its rate and decides
what to say. A piped run gets, per step, one line when it starts, a line every
:data:`LINE_PERCENT` percent *and* at least :data:`LINE_SECONDS` apart (whichever is rarer, so
at most ~20 lines for any step, and none for a step shorter than that), and one line when it
ends, with its duration::

    maskc: quantizing: 0 / 134,515,008
    maskc: quantizing: 40,108,032 / 134,515,008 (29%), 12s elapsed, ETA 28s
    maskc: quantizing: done in 41s

The ETA is not extrapolated from the first tick (the first item pays start-up costs: numba's
compiles, files opened, caches warmed): it is measured from the first tick on, over the last
:data:`WINDOW_SECONDS`, and shown only on evidence: :data:`MIN_FRACTION` of the work done and
:data:`MIN_SECONDS` passed, at least :data:`MIN_RATE_TICKS` ticks after the first, and a rate
measured over :data:`MIN_FRACTION` of the work or a whole window. So a first item that is a
fifth of the work (an embedding) followed by a few tiny ones and a pause never shows an ETA of
a hundred hours. Timing text goes to stderr only, never into a build.
"""

from __future__ import annotations

import os
import sys
from collections import deque
from typing import TextIO

from rich.filesize import decimal
from rich.progress import Progress, ProgressColumn, Task, TaskID
from rich.text import Text

#: no ETA before this share of the work is done ...
MIN_FRACTION = 0.02
#: ... and this many seconds have passed since the step started
MIN_SECONDS = 2.0
#: ... and at least this many ticks after the first (the rate's evidence) ...
MIN_RATE_TICKS = 3
#: the rate is measured over (at least) the last this many seconds
WINDOW_SECONDS = 30.0
#: a piped progress line every this many percent of the work ...
LINE_PERCENT = 5.0
#: ... and at least this many seconds after the previous line
LINE_SECONDS = 10.0
#: without a known total, a line at most every this many seconds
LINE_SECONDS_UNKNOWN_TOTAL = 30.0
#: rate samples closer together than this are merged (fast ticks keep the window small)
SAMPLE_SECONDS = 0.1
#: values of MASKC_PROGRESS that turn progress off
OFF_VALUES = frozenset({"0", "false", "no", "off"})


def progress_off(environ=os.environ) -> bool:
    """Whether ``MASKC_PROGRESS`` asks for no progress at all."""
    return environ.get("MASKC_PROGRESS", "").strip().lower() in OFF_VALUES


def duration(seconds: float) -> str:
    """``0.4s``, ``12s``, ``3m05s``, ``1h02m``."""
    s = max(0.0, seconds)
    if s < 9.95:
        return f"{s:.1f}s"
    n = round(s)
    if n < 60:
        return f"{n}s"
    if n < 3600:
        return f"{n // 60}m{n % 60:02d}s"
    return f"{n // 3600}h{n % 3600 // 60:02d}m"


def count(n: float, in_bytes: bool) -> str:
    """``1,234`` or, for bytes, ``1.2 MB``."""
    return decimal(int(n)) if in_bytes else f"{int(n):,}"


def _known(total: float | None) -> bool:
    return total is not None and total > 0


class Rate:
    """The rate of a task's progress, measured from its first tick over a sliding window, and
    the ETA it gives. ``t0`` is when the task started (it counts towards :data:`MIN_SECONDS`
    but never towards the rate: the time before the first tick is start-up)."""

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.samples: deque[tuple[float, float]] = deque()
        #: ticks recorded (since the last reset)
        self.ticks = 0

    def record(self, now: float, completed: float) -> None:
        s = self.samples
        if s and completed < s[-1][1]:  # went backwards (a reset): measure afresh
            s.clear()
            self.ticks = 0
        self.ticks += 1
        if len(s) >= 2 and now - s[-2][0] < SAMPLE_SECONDS:
            s[-1] = (now, completed)
        else:
            s.append((now, completed))
        # keep the newest sample at or before the window's start: the window spans >= WINDOW
        while len(s) > 2 and s[1][0] <= now - WINDOW_SECONDS:
            s.popleft()

    def per_second(self, now: float | None = None) -> float | None:
        """Work per second over the window, up to ``now`` (default: the last tick; the time
        since the last tick is time without progress), or None before two ticks."""
        if len(self.samples) < 2:
            return None
        (ta, ca), (tb, cb) = self.samples[0], self.samples[-1]
        end = tb if now is None else max(now, tb)
        if end <= ta or cb <= ca:
            return None
        return (cb - ca) / (end - ta)

    def eta(self, now: float, completed: float, total: float | None) -> float | None:
        """Seconds left, or None while unknown: no total, under :data:`MIN_FRACTION` done or
        :data:`MIN_SECONDS` elapsed, fewer than :data:`MIN_RATE_TICKS` ticks after the first,
        or a rate measured over less than :data:`MIN_FRACTION` of the work and less than a
        whole :data:`WINDOW_SECONDS`. Between ticks it grows (a stalled step is not about to
        end), never reaching 0 before the work is done."""
        if not _known(total):
            return None
        if completed >= total:
            return 0.0
        if completed / total < MIN_FRACTION or now - self.t0 < MIN_SECONDS:
            return None
        if self.ticks - 1 < MIN_RATE_TICKS or len(self.samples) < 2:
            return None
        (ta, ca), (tb, cb) = self.samples[0], self.samples[-1]
        if (cb - ca) / total < MIN_FRACTION and tb - ta < WINDOW_SECONDS:
            return None
        rate = self.per_second(now)
        if rate is None:
            return None
        return (total - completed) / rate


class Tracker:
    """One task's progress: its :class:`Rate` and the log lines a piped run prints for it."""

    def __init__(self, label: str, t0: float, total: float | None, in_bytes: bool) -> None:
        self.label = label
        self.t0 = t0
        self.in_bytes = in_bytes
        self.rate = Rate(t0)
        self.ended = False
        self._line_t = t0
        self._line_done = 0.0
        self._line_total = total

    def _line(self, text: str) -> str:
        return f"maskc: {self.label}: {text}"

    def _amount(self, completed: float, total: float | None) -> str:
        done = count(completed, self.in_bytes)
        if not _known(total):
            return done
        return f"{done} / {count(total, self.in_bytes)}"

    def started(self, total: float | None) -> str:
        return self._line(self._amount(0, total))

    def update(self, now: float, completed: float, total: float | None) -> str | None:
        """Record a tick; the line to print now (progress, or the end), if any."""
        if self.ended:
            return None
        self.rate.record(now, completed)
        if _known(total) and completed >= total:
            return self.finish(now, completed, total)
        since = now - self._line_t
        if _known(total):
            step = (completed - self._line_done) / total * 100
            due = step >= LINE_PERCENT and since >= LINE_SECONDS
        else:
            due = completed > self._line_done and since >= LINE_SECONDS_UNKNOWN_TOTAL
        if not due:
            return None
        self._line_t, self._line_done = now, completed
        text = self._amount(completed, total)
        if _known(total):
            text += f" ({int(completed / total * 100)}%)"
        text += f", {duration(now - self.t0)} elapsed"
        eta = self.rate.eta(now, completed, total)
        if eta is not None:
            text += f", ETA {duration(eta)}"
        return self._line(text)

    def finish(self, now: float, completed: float, total: float | None) -> str | None:
        """The step is over: its end line (None if already said)."""
        if self.ended:
            return None
        self.ended = True
        took = duration(now - self.t0)
        if _known(total) and completed < total:
            pct = int(completed / total * 100)
            return self._line(f"stopped at {self._amount(completed, total)} ({pct}%) after {took}")
        if _known(total):
            return self._line(f"done in {took}")
        return self._line(f"done, {count(completed, self.in_bytes)} in {took}")


class EtaColumn(ProgressColumn):
    """The terminal bar's time left, from the task's :class:`Tracker` (rich's own estimate
    extrapolates from the first two ticks); ``-:--:--`` while unknown."""

    max_refresh = 0.5

    def render(self, task: Task) -> Text:
        tracker = task.fields.get("tracker")
        eta = None
        if isinstance(tracker, Tracker):
            eta = tracker.rate.eta(task.get_time(), task.completed, task.total)
        if eta is None:
            return Text("-:--:--", style="progress.remaining")
        m, s = divmod(int(eta + 0.5), 60)
        h, m = divmod(m, 60)
        return Text(f"{h}:{m:02d}:{s:02d}", style="progress.remaining")


class StepProgress(Progress):
    """A rich :class:`Progress` whose tasks are tracked: with ``lines`` (a piped run) each
    task's start, progress and end are written there as plain lines (rich's display is then
    disabled); otherwise the bars (or nothing) as rich draws them. ``in_bytes``: amounts are
    bytes. A task ends when it reaches its total, when :meth:`finish` is called, or when the
    ``with`` block is left normally (not on an error: the error line is the last word)."""

    def __init__(self, *columns, lines: bool = False, in_bytes: bool = False, **kwargs) -> None:
        super().__init__(*columns, **kwargs)
        self.lines = lines
        self.in_bytes = in_bytes
        self._trackers: dict[TaskID, Tracker] = {}

    def _write(self, line: str | None) -> None:
        if line is not None and self.lines:
            stream: TextIO = sys.stderr
            stream.write(line + "\n")
            stream.flush()

    def add_task(
        self,
        description: str,
        start: bool = True,
        total: float | None = 100.0,
        completed: int = 0,
        visible: bool = True,
        **fields,
    ) -> TaskID:
        tracker = Tracker(description, self.get_time(), total, self.in_bytes)
        fields["tracker"] = tracker
        tid = super().add_task(description, start, total, completed, visible, **fields)
        self._trackers[tid] = tracker
        self._write(tracker.started(total))
        return tid

    def _ticked(self, task_id: TaskID) -> None:
        task = self._tasks[task_id]
        self._write(self._trackers[task_id].update(self.get_time(), task.completed, task.total))

    def update(self, task_id: TaskID, **kwargs) -> None:
        super().update(task_id, **kwargs)
        self._ticked(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._ticked(task_id)

    def finish(self, task_id: TaskID) -> None:
        """End the task now (its end line), and fill its bar."""
        task = self._tasks[task_id]
        self._write(self._trackers[task_id].finish(self.get_time(), task.completed, task.total))
        if task.total is not None:
            super().update(task_id, completed=task.total)

    def __exit__(self, exc_type, exc_val, exc_tb) -> None:
        if exc_type is None:
            for tid in list(self._trackers):
                self.finish(tid)
        super().__exit__(exc_type, exc_val, exc_tb)
