"""Progress of long work: a bar with rate and ETA on a terminal, plain periodic lines elsewhere (cron, Airflow).

`Progress(what, total, unit)` shows a tqdm bar when its stream is a terminal; otherwise `update` writes a
line such as `score: described 640 items, 31.2 items/s` at most every `every_s` seconds (and `line`
writes one now, which is how the trainer logs its steps), so a log file grows at a bounded rate.
"""

from __future__ import annotations

import sys
import time


def on_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    def __init__(
        self,
        what: str,
        total: int | None = None,
        unit: str = "it",
        stream=None,
        every_s: float = 15.0,
        bar: bool | None = None,
    ):
        self.what, self.total, self.unit = what, total, unit
        self.stream = stream if stream is not None else sys.stderr
        self.every_s = every_s
        self.done = 0
        self.start = self.last = time.monotonic()
        self.bar = None
        if bar if bar is not None else on_terminal(self.stream):
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit=unit, desc=what, file=self.stream, dynamic_ncols=True, leave=False)

    def update(self, n: int = 1, **postfix) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            if postfix:
                self.bar.set_postfix(postfix, refresh=False)
            return
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            self.line(self.status(now))

    def status(self, now: float | None = None) -> str:
        """`what: 1,200/3,000 steps, 5.1 steps/s, ETA 6 min` (no total: no ETA)."""
        elapsed = (now or time.monotonic()) - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        done = f"{self.done:,}/{self.total:,}" if self.total else f"{self.done:,}"
        eta = ""
        if self.total and rate > 0:
            eta = f", ETA {_duration((self.total - self.done) / rate)}"
        return f"{self.what}: {done} {self.unit}, {rate:,.1f} {self.unit}/s{eta}"

    def line(self, text: str) -> None:
        """A line of its own (above the bar on a terminal)."""
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"
