"""How far a twin run has come, on stderr: a redrawn line with an ETA on a terminal, and a plain
line every tenth of the run elsewhere (a CI log, `2> file`), where carriage returns would pile
up into one unreadable line and silence looks like a hang.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

BAR_WIDTH = 30
PLAIN_EVERY = 0.1
"""Share of the run between two plain lines."""


def clock_time(seconds: float) -> str:
    """Seconds as m:ss, or h:mm:ss from an hour."""
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """A `progress(fraction)` callback for `Twin.run` that writes to `stream`.

    On a terminal (`interactive`) one line is redrawn: a bar, the percentage, the time spent
    and the time left, estimated from the pace so far. Off a terminal a plain line is written
    at every `PLAIN_EVERY` of the run, and one when it is done.
    """

    def __init__(
        self,
        label: str,
        stream: TextIO,
        *,
        interactive: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.stream = stream
        self.interactive = stream.isatty() if interactive is None else interactive
        self.clock = clock
        self.started = clock()
        self.last_percent = -1
        self.next_plain = PLAIN_EVERY
        self.done = False

    def __call__(self, fraction: float) -> None:
        fraction = min(max(fraction, 0.0), 1.0)
        elapsed = self.clock() - self.started
        if self.interactive:
            self._redraw(fraction, elapsed)
        elif fraction >= self.next_plain - 1e-9 or (fraction >= 1.0 and not self.done):
            self._plain(fraction, elapsed)

    def _left(self, fraction: float, elapsed: float) -> str:
        if fraction <= 0:
            return "ETA unknown"
        return f"ETA {clock_time(elapsed / fraction * (1 - fraction))}"

    def _redraw(self, fraction: float, elapsed: float) -> None:
        percent = int(fraction * 100 + 1e-9)
        if percent == self.last_percent:
            return
        self.last_percent = percent
        filled = percent * BAR_WIDTH // 100
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        timing = (
            f"done in {clock_time(elapsed)}"
            if percent >= 100
            else f"{clock_time(elapsed)} spent, {self._left(fraction, elapsed)}"
        )
        # Pad, so a shorter line wipes the tail of a longer one.
        line = f"{self.label} [{bar}] {percent:3d} %  {timing}"
        self.stream.write(f"\r{line:<79}")
        if percent >= 100:
            self.stream.write("\n")
        self.stream.flush()

    def _plain(self, fraction: float, elapsed: float) -> None:
        if fraction >= 1.0:
            self.stream.write(f"{self.label}: done in {clock_time(elapsed)}\n")
            self.done = True
            self.next_plain = float("inf")
        else:
            percent = int(fraction * 100 + 1e-9)
            self.stream.write(
                f"{self.label}: {percent} % after {clock_time(elapsed)}, "
                f"{self._left(fraction, elapsed)}\n"
            )
            while self.next_plain <= fraction + 1e-9:
                self.next_plain += PLAIN_EVERY
        self.stream.flush()
