"""The driver's background work (the MLflow set-up while Ray starts): its value or its exception
where it is waited for, and a lower priority than the driver's own thread."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from orchestrator.background import NICE, Background


def test_result_is_the_value_or_the_exception_every_time():
    done = Background(lambda a, b: a + b, 2, 3)
    assert done.result() == 5 and done.result() == 5

    def fails():
        raise ValueError("store down")

    failed = Background(fails)
    for _ in range(2):
        with pytest.raises(ValueError, match="store down"):
            failed.result()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a nice value per thread is Linux's")
def test_runs_below_the_drivers_priority():
    def nice() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    driver = nice()
    assert Background(nice).result() == min(19, driver + NICE) and nice() == driver
