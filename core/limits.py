"""What a file may make the app do: the few limits that keep a hostile or broken file from eating the machine.

A 32 KB wav whose header says 1 Hz decodes to 4.4 hours at 16 kHz; a 20000x20000 PNG template costs 1.2 GB per
frame; a .npy header can declare 1e11 rows in a 128-byte file. Loaders read the header first and ask here before
they allocate, so the user hears which limit a file hit instead of watching the process get killed for memory.
Inputs that are not regular files (FIFOs, devices, sockets) are refused up front too: reading a FIFO blocks
forever, and a device can stream without end.

The time limit (``--time-limit`` in the CLI) lives here as well: model runs register their cancel hooks with
:func:`cancellable`, and :func:`expire` stops them all.
"""

from __future__ import annotations

import os
import stat
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from core.errors import InputError

MAX_AUDIO_SECONDS = 3 * 3600  # longer than any clip this app compares; a 1 Hz header lands far beyond it
MIN_SAMPLE_RATE = 1000  # Hz; speech below this is not speech, and a tiny rate multiplies the resampled length
MAX_SAMPLE_RATE = 768_000  # Hz; the highest rate audio interfaces offer
MAX_AUDIO_CHANNELS = 64
MAX_IMAGE_PIXELS = 40_000_000  # one template frame; 8K video is 33 Mpx
MAX_ARRAY_BYTES = 4 * 1024**3  # one dump (or the decoded audio) held in memory
MAX_TEXT_BYTES = 64 * 1024**2  # a session, landmark or rectangle file is a few KB


class LimitError(InputError):
    """A file asks for more than a limit of core/limits.py allows; the message names the limit."""


def gib(num_bytes: float) -> str:
    return f"{num_bytes / 1024**3:.3g} GiB"


def describe_kind(mode: int) -> str:
    """'a folder', 'a FIFO (named pipe)', 'a character device', ... or 'a regular file'."""
    from core.safe_write import describe_kind as describe

    return describe(mode)


def input_file(path: str | os.PathLike[str] | bytes, what: str, expected: str = "a file") -> Path:
    """``path`` if it names an existing regular file (through links); else an InputError naming what it is.

    Called before opening a user's input, so a FIFO or a device is refused instead of blocking or streaming, and
    a link loop or an unreadable folder is a message instead of a crash.
    """
    path = Path(os.fsdecode(path))
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise InputError(f"{what} {path}: expected {expected}, found nothing at that path") from None
    except OSError as exc:  # ELOOP (a symlink loop), ENAMETOOLONG, EACCES on a folder above, ...
        raise InputError(f"{what} {path}: expected {expected}, found a path that cannot be opened "
                         f"({exc.strerror or exc})") from None
    except ValueError as exc:  # an embedded NUL byte
        raise InputError(f"{what} {path!r}: expected {expected}, found an invalid path ({exc})") from None
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"{what} {path}: expected {expected}, found {describe_kind(info.st_mode)}")
    return path


def check_size(size: int, limit: int, what: str, unit: str = "bytes") -> None:
    """LimitError unless ``size`` <= ``limit``."""
    if size > limit:
        found = gib(size) if unit == "bytes" else f"{size:,} {unit}"
        allowed = gib(limit) if unit == "bytes" else f"{limit:,} {unit}"
        raise LimitError(f"{what}: found {found}, more than the limit of {allowed} (core/limits.py)")


def check_array(shape: tuple[int, ...], itemsize: int, what: str, limit: int = MAX_ARRAY_BYTES) -> int:
    """The byte size of an array of ``shape``; a LimitError if it is over ``limit`` (before anything is allocated)."""
    count = 1
    for dim in shape:
        # max(dim, 1): an empty array may not declare 10**54 along another axis either (numpy's own size
        # arithmetic overflows on it; found by tools/fuzz)
        count *= max(int(dim), 1)
    size = count * int(itemsize)
    if size > limit:
        raise LimitError(f"{what}: declares shape {list(shape)} ({gib(size)}), more than the limit of {gib(limit)} "
                         "for one array (core/limits.py)")
    return size


def check_audio_header(frames: int, rate: int, channels: int, what: str) -> None:
    """Refuse audio whose header asks for an absurd rate, channel count, length or decoded size, before decoding."""
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise LimitError(f"{what}: expected a sample rate from {MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE} Hz, found {rate} "
                         "Hz in its header (core/limits.py)")
    if not 1 <= channels <= MAX_AUDIO_CHANNELS:
        raise LimitError(f"{what}: expected 1 to {MAX_AUDIO_CHANNELS} channels, found {channels} (core/limits.py)")
    seconds = frames / rate
    if seconds > MAX_AUDIO_SECONDS:
        raise LimitError(f"{what}: its header says {seconds / 3600:.3g} hours ({frames:,} frames at {rate} Hz), more "
                         f"than the limit of {MAX_AUDIO_SECONDS / 3600:g} hours (core/limits.py)")
    check_array((frames, channels), 4, what)


def check_image(width: int, height: int, what: str) -> None:
    if width * height > MAX_IMAGE_PIXELS:
        raise LimitError(f"{what}: {width}x{height} is {width * height / 1e6:.3g} megapixels, more than the limit of "
                         f"{MAX_IMAGE_PIXELS / 1e6:g} megapixels per frame (core/limits.py)")


# --- the time limit -------------------------------------------------------------------------------------------

class TimeLimitExceeded(InputError):
    """A run took longer than ``--time-limit``: it was stopped."""


_expired = threading.Event()
_expired_message = ""
_cancel_hooks: dict[int, Callable[[], None]] = {}
_hook_threads: dict[int, int] = {}  # hook key -> the thread that registered it (cancel_runs_on)
# Threads told to stop: a run they start is ended at once (clear_cancel). Held as thread objects, not idents: the
# OS reuses an ident once its thread has ended, and a new thread (a diagnostics worker) must not inherit a Stop.
_cancelled_threads: weakref.WeakSet[threading.Thread] = weakref.WeakSet()


def _live_thread(ident: int | None) -> threading.Thread | None:
    for thread in threading.enumerate():
        if thread.ident == ident:
            return thread
    return None
_hooks_lock = threading.Lock()


def expire(message: str) -> None:
    """Stop every registered run now and make every later :func:`check_time` raise ``message``."""
    global _expired_message
    _expired_message = message
    _expired.set()
    with _hooks_lock:
        hooks = list(_cancel_hooks.values())
    for hook in hooks:
        try:
            hook()
        except Exception:  # noqa: BLE001 - a hook that fails must not keep the others from running
            pass


def reset_time_limit() -> None:
    """Forget an earlier expiry (tests; a window that starts a new run)."""
    _expired.clear()


def check_time() -> None:
    if _expired.is_set():
        raise TimeLimitExceeded(_expired_message)


@contextmanager
def cancellable(cancel: Callable[[], None]) -> Iterator[None]:
    """Register ``cancel`` (for example ``lambda: run_options.__setattr__('terminate', True)``) while a run lasts.

    Raises TimeLimitExceeded before the run if the limit has passed, and after it (in place of whatever the
    cancelled run raised) if the limit passed during it.
    """
    check_time()
    key = id(cancel)
    ident = threading.get_ident()
    with _hooks_lock:
        _cancel_hooks[key] = cancel
        _hook_threads[key] = ident
        pending = threading.current_thread() in _cancelled_threads
    if pending:  # cancel_runs_on came before this run began (the thread was still preparing it): end it at once
        cancel()
    try:
        yield
    finally:
        with _hooks_lock:
            _cancel_hooks.pop(key, None)
            _hook_threads.pop(key, None)
        check_time()


def cancel_runs_on(thread_ident: int | None) -> int:
    """Stop the runs in progress on one thread now (the window's Stop on a lane whose model never returns): their
    cancel hooks are called, and nothing is made to expire. Returns how many runs were asked to stop."""
    if thread_ident is None:
        return 0
    with _hooks_lock:
        thread = _live_thread(thread_ident)
        if thread is not None:
            _cancelled_threads.add(thread)  # also the runs it starts later, until clear_cancel
        hooks = [_cancel_hooks[key] for key, ident in _hook_threads.items()
                 if ident == thread_ident and key in _cancel_hooks]
    for hook in hooks:
        try:
            hook()
        except Exception:  # noqa: BLE001 - as in expire(): one failing hook must not keep the others from running
            pass
    return len(hooks)


def clear_cancel(thread_ident: int | None = None) -> None:
    """The thread (this one by default) starts new work: an earlier cancel_runs_on no longer applies to it."""
    with _hooks_lock:
        thread = threading.current_thread() if thread_ident is None else _live_thread(thread_ident)
        if thread is not None:
            _cancelled_threads.discard(thread)


def terminate_hook(run_options: Any) -> Callable[[], None]:
    """The cancel hook for an onnxruntime RunOptions (kept duck-typed: core imports no runtime)."""
    def _terminate() -> None:
        run_options.terminate = True

    return _terminate
