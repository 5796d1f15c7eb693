"""Shared test set-up: Qt tests run offscreen unless the environment chose a platform (e.g. xvfb in CI)."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _crash_logs_in_tmp(tmp_path_factory, monkeypatch):
    """Crash logs written while testing go to a temporary folder, never into the user's log folder."""
    monkeypatch.setenv("LIPSYNC_COMPARE_LOG_DIR", str(tmp_path_factory.getbasetemp() / "crash-logs"))
