"""Plain events: a list of callbacks, called in order on the thread that emits.

Qt signals would tie the model to Qt; a callback list is all the window needs (it subscribes once and every model
change happens on its own thread), and a headless caller can subscribe just the same.
"""

from __future__ import annotations

from typing import Any, Callable


class Event:
    """``connect(callback)``; ``emit(*args)`` calls every callback with the same arguments."""

    def __init__(self, name: str = "") -> None:
        self.name = name
        self._callbacks: list[Callable[..., Any]] = []

    def connect(self, callback: Callable[..., Any]) -> Callable[..., Any]:
        self._callbacks.append(callback)
        return callback

    def disconnect(self, callback: Callable[..., Any]) -> None:
        self._callbacks.remove(callback)

    def emit(self, *args: Any) -> None:
        for callback in list(self._callbacks):  # a callback may disconnect itself
            callback(*args)

    def __len__(self) -> int:
        return len(self._callbacks)
