"""One long-lived thread running many timed callbacks (SMTP deadlines, lease renewals): a thread each cost
~0.3 ms of CPU (bench/RESULTS.md). Callbacks run one at a time, so one that can block (a lease renewal)
gets its own `TimerThread` and never holds up one that must fire on time (an SMTP deadline)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(eq=False)  # by identity: remove() must find this timer, not an equal one
class Timer:
    """`fire()` runs once `due()` (a time.monotonic() value, asked at every wake-up, so it may move) has passed;
    it returns the next due time to stay armed, or None. `poll` bounds the sleep for a due time that moves."""

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

    def _run(self) -> None:
        def due_at(timer: Timer) -> float:
            return timer.next_due if timer.next_due is not None else timer.due()

        with self._condition:
            while True:
                if not self._timers:
                    self._condition.wait()
                    continue
                now = time.monotonic()
                due = [timer for timer in self._timers if due_at(timer) <= now]
                if not due:
                    polls = [timer.poll for timer in self._timers if timer.poll is not None]
                    self._condition.wait(min([min(due_at(timer) for timer in self._timers) - now, *polls]))
                    continue
                for timer in due:
                    # Under the lock: remove() waits for a running callback, so none outlives its owner.
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
