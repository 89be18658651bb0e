"""wa_export.clock's TimerThread: many timed callbacks on one long-lived thread."""

from __future__ import annotations

import threading
import time

from wa_export.clock import Timer, TimerThread


def test_a_timer_fires_once_when_due_and_a_removed_one_never() -> None:
    thread = TimerThread("test-timers")
    fired: list[str] = []
    start = time.monotonic()
    thread.add(Timer(lambda: start + 0.05, lambda: fired.append("soon")))
    removed = thread.add(Timer(lambda: start + 0.1, lambda: fired.append("removed")))
    thread.remove(removed)
    time.sleep(0.4)
    assert fired == ["soon"]


def test_a_timer_that_returns_a_time_is_armed_again_until_it_returns_none() -> None:
    thread = TimerThread("test-timers")
    calls: list[float] = []
    done = threading.Event()

    def fire() -> float | None:
        calls.append(time.monotonic())
        if len(calls) == 3:
            done.set()
            return None
        return time.monotonic() + 0.02

    start = time.monotonic()
    thread.add(Timer(lambda: start, fire))
    assert done.wait(5)
    time.sleep(0.1)
    assert len(calls) == 3


def test_a_due_time_that_moves_is_noticed_by_polling() -> None:
    """A stop request shortens a deadline without telling the thread: `poll` bounds the sleep."""
    thread = TimerThread("test-timers")
    due = [time.monotonic() + 60]
    fired = threading.Event()
    thread.add(Timer(lambda: due[0], lambda: fired.set(), poll=0.02))
    time.sleep(0.05)
    due[0] = time.monotonic()
    assert fired.wait(2)


def test_one_thread_serves_every_timer_and_a_failing_callback_stops_none_of_the_others() -> None:
    thread = TimerThread("test-timers")
    before = threading.active_count()
    fired: list[int] = []

    def boom() -> None:
        raise RuntimeError("callback failed")

    start = time.monotonic()
    thread.add(Timer(lambda: start, boom))
    for number in range(20):
        thread.add(Timer(lambda number=number: start + 0.01 * number, lambda number=number: fired.append(number)))
    assert threading.active_count() == before + 1
    time.sleep(0.6)
    assert sorted(fired) == list(range(20))


def test_remove_waits_for_a_callback_in_progress() -> None:
    thread = TimerThread("test-timers")
    running, finished = threading.Event(), threading.Event()

    def slow() -> None:
        running.set()
        time.sleep(0.2)
        finished.set()

    start = time.monotonic()
    timer = thread.add(Timer(lambda: start, slow))
    assert running.wait(2)
    thread.remove(timer)
    assert finished.is_set()
