"""workers.check_slot_request: the hidden --worker-slot belongs to scheduled runs only."""

from __future__ import annotations

import pytest

from wa_export.errors import ExitCode
from wa_export.export.workers import (
    WorkerUsageError,
    check_request,
    check_slot_request,
)


def test_a_manual_run_cannot_have_a_worker_slot() -> None:
    with pytest.raises(WorkerUsageError, match="scheduled runs only"):
        check_slot_request(is_manual=True)
    check_slot_request(is_manual=False)  # a scheduled run's child: fine
    check_slot_request(False)


def test_slot_check_says_what_the_workers_check_says() -> None:
    with pytest.raises(WorkerUsageError) as slot:
        check_slot_request(True)
    with pytest.raises(WorkerUsageError) as workers:
        check_request(2, is_manual=True)
    assert str(slot.value) == str(workers.value)


@pytest.mark.parametrize(
    ("codes", "worst"),
    [([], 0), ([0, 0], 0), ([0, 1], 1), ([1, 2, 0], 2), ([2, 3, 1], 3), ([0, -9], 1), ([0, 5], 1), ([3, 7], 3)],
)
def test_worst_exit_code_orders_by_severity(codes: list[int], worst: int) -> None:
    assert ExitCode.worst(codes) == worst
