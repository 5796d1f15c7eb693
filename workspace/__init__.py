"""The Qt-free application model: the workspace (lanes, scales, reference, failures, the session on disk) and the
transport (clock, playhead, loop, speed, render scheduling), with plain callback events.

The window (ui/) subscribes to these events and forwards user input; the CLI, the benchmarks and the tests drive
the same model without Qt. Nothing here imports Qt (the import-linter contracts in pyproject.toml enforce it).
"""
