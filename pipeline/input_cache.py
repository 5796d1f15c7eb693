"""Prepared generator inputs shared by every lane that draws on one Avatar.

Lanes of a session share the Avatar, and a template frame's generator input (crop, resize, mask, 6-channel tensor)
depends only on the template index and the generator size, so one prepared input serves every lane. Each lane used
to keep its own copy: 100 templates x 4 lanes x 0.7 MB (160 px) was 276 MB of identical arrays. The cache here is
owned by the Avatar object (one per Avatar, dropped with it), bounded in bytes, safe to use from the lanes' worker
threads, and hands out read-only arrays so no lane can alter what another lane feeds its generator.

The module imports no other pipeline module: the caller passes the function that prepares an input on a miss.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from typing import Any, Callable

# Ping-pong playback visits all K templates in turn, so the budget should hold a whole template set: 256 MB is about
# 360 inputs at 160 px (0.7 MB each) or 90 at 320 px (2.8 MB each).
INPUT_CACHE_BYTES = 256 * 1024 * 1024


def _nbytes(prepared: Any) -> int:
    return int(prepared.tensor.nbytes) + int(prepared.resized_crop.nbytes)


def _freeze(prepared: Any) -> Any:
    """Make a freshly prepared input's arrays read-only (nobody else holds them yet)."""
    prepared.tensor.setflags(write=False)
    prepared.resized_crop.setflags(write=False)
    return prepared


class PreparedInputs:
    """An LRU of prepared generator inputs keyed by (template index, size), bounded by ``max_bytes``.

    ``get`` prepares a missing input outside the lock (lanes on several threads prepare different templates at
    once); when two threads prepare the same key, the first one stored wins and both return that object, so every
    lane gets the very same arrays for a template. An entry larger than the budget is still returned, just not kept.
    """

    def __init__(self, max_bytes: int = INPUT_CACHE_BYTES) -> None:
        self.max_bytes = int(max_bytes)
        self._entries: OrderedDict[tuple[int, int], Any] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, k: int, size: int, prepare: Callable[[], Any]) -> Any:
        key = (int(k), int(size))
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
                return found
        prepared = _freeze(prepare())
        with self._lock:
            found = self._entries.get(key)
            if found is not None:  # another lane prepared it meanwhile: share theirs
                self._entries.move_to_end(key)
                return found
            self._entries[key] = prepared
            self._bytes += _nbytes(prepared)
            while self._bytes > self.max_bytes and self._entries:
                _, dropped = self._entries.popitem(last=False)
                self._bytes -= _nbytes(dropped)
            return prepared

    @property
    def nbytes(self) -> int:
        """Bytes held now (tensors and resized crops)."""
        with self._lock:
            return self._bytes

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0


_BY_AVATAR: weakref.WeakKeyDictionary[Any, PreparedInputs] = weakref.WeakKeyDictionary()
_BY_AVATAR_LOCK = threading.Lock()


def inputs_for(avatar: Any) -> PreparedInputs:
    """The one PreparedInputs of this Avatar object: every lane drawing on it shares it; it goes with the Avatar."""
    with _BY_AVATAR_LOCK:
        cache = _BY_AVATAR.get(avatar)
        if cache is None:
            cache = _BY_AVATAR[avatar] = PreparedInputs()
        return cache
