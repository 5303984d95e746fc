"""Decode-ahead and encode-behind threads: order kept, memory bounded, errors reach the main thread."""

import threading
import time

import pytest

from vsrup.threads import Ahead, Behind


def test_ahead_keeps_order_and_stays_within_depth():
    produced = []

    def items():
        for i in range(50):
            produced.append(i)
            yield i

    seen = []
    with Ahead(items(), depth=3) as ahead:
        for item in ahead:
            time.sleep(0.002)
            assert len(produced) - len(seen) <= 3 + 2  # the queue, plus one in hand on each side
            seen.append(item)
    assert seen == list(range(50))


def test_ahead_hands_the_producers_error_to_the_consumer():
    def items():
        yield 1
        raise ValueError("bad packet")

    with Ahead(items(), depth=2) as ahead:
        got = []
        with pytest.raises(ValueError, match="bad packet"):
            for item in ahead:
                got.append(item)
    assert got == [1]


def test_leaving_early_stops_the_producer_and_closes_the_generator():
    closed = threading.Event()

    def items():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()

    with Ahead(items(), depth=2) as ahead:
        for item in ahead:
            if item == 5:
                break
    assert closed.wait(2) and not ahead.thread.is_alive()


def test_behind_runs_calls_in_order_and_finish_waits_for_all():
    done = []
    with Behind(lambda x: (time.sleep(0.001), done.append(x)), depth=2) as behind:
        for i in range(20):
            behind.submit(i)
        behind.finish()
    assert done == list(range(20))


def test_behind_raises_the_workers_error_in_the_main_thread_and_stops_working():
    done = []

    def work(x):
        if x == 3:
            raise OSError(28, "No space left on device")
        done.append(x)

    with pytest.raises(OSError, match="No space"):
        with Behind(work, depth=2) as behind:
            for i in range(10):
                behind.submit(i)
            behind.finish()
    assert done == [0, 1, 2]


def test_behind_drops_queued_work_when_the_main_thread_fails():
    done = []
    with pytest.raises(KeyError):
        with Behind(lambda x: (time.sleep(0.01), done.append(x)), depth=8) as behind:
            for i in range(8):
                behind.submit(i)
            raise KeyError("interrupted")
    assert len(done) < 8 and not behind.thread.is_alive()
