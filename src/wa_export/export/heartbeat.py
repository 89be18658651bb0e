"""Keeping a workspace's lease alive for as long as the work on it takes.

While a run holds a workspace (reading, writing workbooks, waiting on a slow
SMTP reply) a background thread renews the lease every third of its duration.
If a renewal finds the lease gone, or the lease runs out while MongoDB cannot be
reached, the keeper says so: the run then sends nothing more and moves no cursor.
"""

from __future__ import annotations

import threading
from typing import Self

from pymongo.errors import PyMongoError

from wa_export.store.leases import Lease, LeaseLost


class LeaseKeeper:
    def __init__(self, lease: Lease) -> None:
        self.lease = lease
        self.interval = max(lease.duration.total_seconds() / 3, 0.5)
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{lease.workspace_id}", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def lost(self) -> bool:
        return self._lost.is_set()

    def check(self, before: str) -> None:
        """Raise LeaseLost if the lease is gone: nothing may be sent or written for this workspace."""
        if self._lost.is_set():
            raise LeaseLost(
                f"the lease on workspace {self.lease.workspace_id} expired and was taken by another run before {before}"
            )

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.lease.renew()
            except LeaseLost:
                self._lost.set()
                return
            except PyMongoError:
                # MongoDB did not answer: the lease still runs on the expiry we wrote last.
                if self.lease.clock.now() >= self.lease.expires_at:
                    self._lost.set()
                    return


__all__ = ["LeaseKeeper"]
