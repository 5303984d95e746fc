"""Background threads with bounded queues, so the model never waits on I/O: decode ahead, encode behind.

Both keep order, hold at most ``depth`` items (memory stays bounded whatever the video's length), and
hand any exception of the worker to the main thread, where signals and cleanup happen.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator

_END = object()


class Ahead:
    """Iterate ``items`` in a background thread, at most ``depth`` items ahead of the consumer.

    Use as a context manager: leaving it (a break, an exception) stops the producer and closes
    ``items`` if it is a generator.
    """

    def __init__(self, items: Iterable, depth: int, name: str = "vsrup-ahead"):
        self.items, self.stop = items, threading.Event()
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.thread = threading.Thread(target=self._produce, name=name, daemon=True)
        self.thread.start()

    def _produce(self) -> None:
        try:
            for item in self.items:
                if not self._put((item, None)):
                    return
            self._put((_END, None))
        except BaseException as error:  # handed to the consumer, raised there
            self._put((_END, error))
        finally:
            close = getattr(self.items, "close", None)
            if close is not None:
                close()

    def _put(self, entry) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator:
        while True:
            item, error = self.queue.get()
            if error is not None:
                raise error
            if item is _END:
                return
            yield item

    def __enter__(self) -> Ahead:
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


class Behind:
    """Run ``work(*args)`` calls in order in a background thread, at most ``depth`` calls queued.

    ``submit`` re-raises the worker's exception, if any; ``finish`` waits for every call and re-raises
    it too. Leaving the context manager without ``finish`` (an exception) drops what is queued.
    """

    def __init__(self, work: Callable, depth: int, name: str = "vsrup-behind"):
        self.work, self.error = work, None
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.thread = threading.Thread(target=self._consume, name=name, daemon=True)
        self.thread.start()

    def _consume(self) -> None:
        while True:
            args = self.queue.get()
            if args is _END:
                return
            if self.error is None:
                try:
                    self.work(*args)
                except BaseException as error:  # handed to the main thread at its next call
                    self.error = error

    def submit(self, *args) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put(args)

    def finish(self) -> None:
        self.queue.put(_END)
        self.thread.join()
        if self.error is not None:
            raise self.error

    def __enter__(self) -> Behind:
        return self

    def __exit__(self, kind, error, tb) -> None:
        if self.thread.is_alive():
            self.error = self.error or RuntimeError("cancelled")  # the rest is dropped, not written
            self.queue.put(_END)
            self.thread.join()
