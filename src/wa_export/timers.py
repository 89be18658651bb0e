"""One long-lived thread that runs many timed callbacks: SMTP deadlines, lease renewals.

A thread per SMTP step and per leased workspace cost ~0.3 ms of CPU each (bench/RESULTS.md).
Callbacks run on the one thread, one at a time: a callback that can block (a lease renewal
waiting on MongoDB) gets its own `TimerThread`, so it never holds up one that must fire on
time (an SMTP deadline cutting a socket).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(eq=False)  # by identity: remove() must find this timer, not an equal one
class Timer:
    """An armed callback: `fire()` runs once `due()` (a time.monotonic() value) has passed.

    `due` is asked at every wake-up, so it may move (a stop request shortens a deadline). `fire`
    returns the next due time to stay armed, or None to end. `poll` bounds the sleep, for a due
    time that can move without anyone calling `TimerThread.wake()`.
    """

    due: Callable[[], float]
    fire: Callable[[], float | None]
    poll: float | None = None
    next_due: float | None = field(default=None, init=False)  # set by fire()'s return value, when it re-arms


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

    def wake(self) -> None:
        """Look at the due times again now (after one of them moved)."""
        with self._condition:
            self._condition.notify()

    def _due(self, timer: Timer) -> float:
        return timer.next_due if timer.next_due is not None else timer.due()

    def _run(self) -> None:
        with self._condition:
            while True:
                if not self._timers:
                    self._condition.wait()
                    continue
                now = time.monotonic()
                due = [timer for timer in self._timers if self._due(timer) <= now]
                if not due:
                    wait = min(self._due(timer) for timer in self._timers) - now
                    polls = [timer.poll for timer in self._timers if timer.poll is not None]
                    self._condition.wait(min([wait, *polls]))
                    continue
                for timer in due:
                    # Under the lock: remove() waits for a running callback, so none outlives its owner.
                    # Callbacks are short or bounded (a socket shutdown; one MongoDB write).
                    if timer not in self._timers:
                        continue
                    try:
                        again = timer.fire()
                    except Exception:  # a callback's failure must not stop every other timer
                        again = None
                    if again is None:
                        self._timers.remove(timer)
                    else:
                        timer.next_due = again


__all__ = ["Timer", "TimerThread"]
