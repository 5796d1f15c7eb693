"""A Stop aimed at one thread's model runs must not outlive that thread (core.limits.cancel_runs_on)."""

from __future__ import annotations

import threading

from core import limits


def _run_in_thread(body) -> None:
    thread = threading.Thread(target=body)
    thread.start()
    thread.join()


def test_a_stop_for_an_ended_thread_does_not_cancel_a_new_threads_runs() -> None:
    # The OS hands an ended thread's ident to the next thread, so a pending Stop kept by ident ended the first run of
    # an unrelated worker (the diagnostics dock's report failed with "terminate flag being set").
    stopped = threading.Event()
    idents: list[int] = []

    def stopped_thread() -> None:
        idents.append(threading.get_ident())
        limits.cancel_runs_on(threading.get_ident())  # a Stop that came while it prepared a run it never started
        stopped.set()

    _run_in_thread(stopped_thread)
    assert stopped.is_set()
    calls: list[int] = []

    def new_worker() -> None:
        idents.append(threading.get_ident())
        with limits.cancellable(lambda: calls.append(1)):
            pass

    for _ in range(5):  # a few threads, so at least one is likely to reuse the ended ident
        _run_in_thread(new_worker)
    assert calls == [], f"a new thread's run was cancelled (idents {idents})"


def test_a_stop_before_a_run_starts_still_ends_that_run_on_the_same_thread() -> None:
    calls: list[int] = []

    def worker() -> None:
        limits.cancel_runs_on(threading.get_ident())
        try:
            with limits.cancellable(lambda: calls.append(1)):
                pass
        finally:
            limits.clear_cancel()

    _run_in_thread(worker)
    assert calls == [1]
