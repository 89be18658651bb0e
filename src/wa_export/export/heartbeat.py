"""Keeping a workspace's lease alive for as long as the work on it takes.

While a run holds a workspace (reading, writing workbooks, waiting on a slow
SMTP reply) the lease is renewed every third of its duration, on the process's
renewal thread (wa_export/timers.py).
If a renewal finds the lease gone, or the lease runs out while MongoDB cannot be
reached, the keeper says so: the run then sends nothing more and moves no cursor.
"""

from __future__ import annotations

import threading
import time
from typing import Self

from pymongo.errors import PyMongoError

from wa_export.store.state import Lease, LeaseLost
from wa_export.timers import Timer, TimerThread

# One thread renews the leases of the whole process (a run holds one at a time per worker);
# a renewal can wait on MongoDB, so it never shares a thread with the SMTP deadlines.
_RENEWALS = TimerThread("lease-renewals")


class LeaseKeeper:
    def __init__(self, lease: Lease) -> None:
        self.lease = lease
        self.interval = max(lease.duration.total_seconds() / 3, 0.5)
        self._lost = threading.Event()
        self._timer: Timer | None = None

    def __enter__(self) -> Self:
        first = time.monotonic() + self.interval
        self._timer = _RENEWALS.add(Timer(lambda: first, self._renew))
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._timer is not None:
            _RENEWALS.remove(self._timer)  # waits for a renewal in progress
            self._timer = None

    @property
    def lost(self) -> bool:
        return self._lost.is_set()

    def check(self, before: str) -> None:
        """Raise LeaseLost if the lease is gone: nothing may be sent or written for this workspace."""
        if self._lost.is_set():
            raise LeaseLost(
                f"the lease on workspace {self.lease.workspace_id} expired and was taken by another run before {before}"
            )

    def _renew(self) -> float | None:
        """One renewal, on the renewal thread; the next one's time, or None once the lease is lost."""
        try:
            self.lease.renew()
        except LeaseLost:
            self._lost.set()
            return None
        except PyMongoError:
            # MongoDB did not answer: the lease still runs on the expiry we wrote last.
            if self.lease.clock.now() >= self.lease.expires_at:
                self._lost.set()
                return None
        return time.monotonic() + self.interval


__all__ = ["LeaseKeeper"]
