"""A thread-safe LRU cache of rendered frames, bounded by bytes rather than by count.

Bytes, because a lane's frames can be 160 px crops or 1280x720 composites: a count limit would either waste
memory or hold too little. Keys are (lane id, scale, frame index): a scale change makes new keys, and the old
frames age out instead of being thrown away at once (dragging the slider back finds them again).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Hashable

DEFAULT_BUDGET_BYTES = 768 * 1024 * 1024


def _size_of(value: Any) -> int:
    """Bytes held by a cached value: the sum of its numpy arrays (image and crop), or its own nbytes."""
    if hasattr(value, "nbytes"):
        return int(value.nbytes)
    total = 0
    for name in ("image", "crop"):
        array = getattr(value, name, None)
        if array is not None and hasattr(array, "nbytes"):
            total += int(array.nbytes)
    return max(total, 1)


class FrameCache:
    """Least-recently-used mapping that evicts the oldest entries once ``budget_bytes`` is exceeded."""

    def __init__(self, budget_bytes: int = DEFAULT_BUDGET_BYTES) -> None:
        if budget_bytes <= 0:
            raise ValueError(f"frame cache budget: expected a positive number of bytes, found {budget_bytes}")
        self.budget_bytes = int(budget_bytes)
        self._entries: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def bytes_used(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._entries

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return entry[0]

    def put(self, key: Hashable, value: Any) -> None:
        size = _size_of(value)
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._entries[key] = (value, size)
            self._bytes += size
            # Keep at least the newest entry even if it alone exceeds the budget: the frame on screen must stay.
            while self._bytes > self.budget_bytes and len(self._entries) > 1:
                _, (_, evicted) = self._entries.popitem(last=False)
                self._bytes -= evicted

    def keys_matching(self, lane_id: int, scale: float) -> set[int]:
        """Frame indices cached for one lane at one scale (the timeline's "rendered" marks)."""
        with self._lock:
            return {key[2] for key in self._entries if key[0] == lane_id and key[1] == scale}

    def drop_lane(self, lane_id: int) -> None:
        with self._lock:
            for key in [k for k in self._entries if k[0] == lane_id]:
                self._bytes -= self._entries.pop(key)[1]
