"""Waiting for worker threads in tests: polls with a generous deadline (a shared CI machine is slow), never a timing
assertion, and collects the worker's events safely across threads."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

DEFAULT_WAIT_S = 120.0  # two shared cores: a bound on waiting, not on speed


def wait_for(condition: Callable[[], bool], timeout: float = DEFAULT_WAIT_S,
             poll: Callable[[], object] | None = None) -> None:
    """Return once ``condition()`` holds; ``poll`` runs each round (e.g. a Qt-free transport's process_results)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if poll is not None:
            poll()
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)


class Collector:
    """A callback that records what a worker thread delivers, readable from the test's thread."""

    def __init__(self) -> None:
        self.items: list[object] = []
        self.lock = threading.Lock()

    def __call__(self, item: object) -> None:
        with self.lock:
            self.items.append(item)

    def of(self, kind: type) -> list:
        with self.lock:
            return [i for i in self.items if isinstance(i, kind)]
