"""Progress on stderr: live bars in a terminal, plain lines in a log file (CI), never mixed.

In a terminal a tqdm bar redraws itself in place and messages are printed above it. Written to
a file or a pipe, the same redraws would pile up on one line between carriage returns, with a
task's summary glued to its last update; there every update is a whole line instead, at most one
per PLAIN_INTERVAL seconds per bar, and messages are lines of their own.

HARNESS_PROGRESS=bar|plain|off overrides the choice.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from tqdm import tqdm

PLAIN_INTERVAL = 30.0  # seconds between two plain progress lines of one bar


def mode() -> str:
    """'bar' on a terminal, 'plain' otherwise, or what $HARNESS_PROGRESS says."""
    wanted = os.environ.get("HARNESS_PROGRESS", "").strip().lower()
    if wanted in ("bar", "plain", "off"):
        return wanted
    return "bar" if sys.stderr.isatty() else "plain"


def write(message: str) -> None:
    """A message line on stderr that never lands inside a progress bar."""
    if mode() == "bar":
        tqdm.write(message, file=sys.stderr)
    else:
        print(message, file=sys.stderr, flush=True)


def announce(message: str) -> None:
    """A line saying a slow step starts (`loading MODEL ...`), for a terminal only: in a log the
    line that follows it says how long it took, and a mistake found at once (an unknown model)
    stays a one-line error for scripts and CI."""
    if mode() == "bar":
        write(message)


def duration(seconds: float) -> str:
    """12.3 s, 4m05s, 1h02m."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class PlainProgress:
    """tqdm's update/close interface, printing whole lines: `desc: 64/200 req (32%), 2.1 req/s, about 1m05s left`."""

    def __init__(self, total: int, desc: str, unit: str, *, disable: bool = False, interval: float = PLAIN_INTERVAL):
        self.total, self.desc, self.unit, self.disable, self.interval = total, desc, unit, disable, interval
        self.n = 0
        self.started = self.last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if not self.disable and now - self.last >= self.interval and self.n < self.total:
            self.last = now
            write(self.line(now))

    def line(self, now: float | None = None) -> str:
        elapsed = (now or time.monotonic()) - self.started
        text = f"{self.desc}: {self.n}/{self.total} {self.unit}"
        if self.total:
            text += f" ({self.n / self.total:.0%})"
        if self.n and elapsed > 0:
            rate = self.n / elapsed
            text += f", {rate:.3g} {self.unit}/s"
            if self.n < self.total:
                text += f", about {duration((self.total - self.n) / rate)} left"
        return text

    def set_postfix_str(self, text: str) -> None:  # tqdm's interface; nothing to redraw here
        pass

    def close(self) -> None:
        pass


def bar(total: int, desc: str, unit: str, *, disable: bool = False, leave: bool = False, **kwargs: Any):  # noqa: ANN201
    """A progress bar for `total` units: tqdm in a terminal, PlainProgress lines otherwise."""
    chosen = mode()
    if chosen == "bar":
        return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, disable=disable,
                    leave=leave, mininterval=1.0, **kwargs)
    return PlainProgress(total, desc, unit, disable=disable or chosen == "off")


class SuiteProgress:
    """Tasks done across the whole run (models x tasks), with the time left extrapolated from them."""

    def __init__(self, total: int, *, disable: bool = False):
        self.total, self.done, self.disable = total, 0, disable or total < 2
        self.started = time.monotonic()
        self.bar = bar(total, "suite", "tasks", disable=self.disable, leave=True) if mode() == "bar" else None

    def task_done(self, name: str) -> None:
        self.done += 1
        if self.disable:
            return
        if self.bar is not None:
            self.bar.update(1)
            return
        elapsed = time.monotonic() - self.started
        left = elapsed / self.done * (self.total - self.done)
        tail = f", about {duration(left)} left" if self.done < self.total else ""
        write(f"suite: {self.done}/{self.total} tasks done ({name}), {duration(elapsed)} so far{tail}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
