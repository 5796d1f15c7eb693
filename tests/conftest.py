"""Shared test set-up: Qt tests run offscreen unless the environment chose a platform (e.g. xvfb in CI)."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
