"""One thread for many timed callbacks (lease renewals): a thread each cost ~0.3 ms of CPU (bench/RESULTS.md)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial


@dataclass(eq=False)  # by identity: remove() must find this timer, not an equal one
class Timer:
    """`fire()` runs once `due()` (time.monotonic(), asked at every wake-up) has passed and returns the next due
    time, or None; `poll` bounds the sleep for a due time that moves. Callbacks run one at a time."""

    due: Callable[[], float]
    fire: Callable[[], float | None]
    poll: float | None = None


class TimerThread:
    def __init__(self, name: str) -> None:
        self.name = name
        self._condition = threading.Condition()
        self._timers: list[Timer] = []
        self._thread: threading.Thread | None = None

    def add(self, timer: Timer) -> Timer:
        with self._condition:
            self._timers.append(timer)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            self._condition.notify()
        return timer

    def remove(self, timer: Timer) -> None:
        """Disarm `timer`; once this returns, its callback is not running and never runs again."""
        with self._condition:
            if timer in self._timers:
                self._timers.remove(timer)
            self._condition.notify()

    def _run(self) -> None:
        with self._condition:  # held while a callback runs: remove() waits for it, so none outlives its owner
            while True:
                for timer in [timer for timer in self._timers if timer.due() <= time.monotonic()]:
                    try:
                        again = timer.fire()
                    except Exception:  # a callback's failure must not stop every other timer
                        again = None
                    if again is None:
                        self._timers.remove(timer)
                    else:
                        timer.due = partial(float, again)  # armed again: due at the time fire() returned
                now = time.monotonic()
                waits = [timer.due() - now for timer in self._timers] + [t.poll for t in self._timers if t.poll]
                self._condition.wait(min(waits, default=None))
