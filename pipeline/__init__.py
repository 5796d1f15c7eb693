"""Qt-free core of lipsync-compare: audio front end, avatar geometry, lanes, metrics, sessions.

Everything here is plain numpy so the CLI, the tests, the benchmarks and the window run the exact same numerics.
Importing Qt from this package is forbidden (tests/test_architecture.py enforces it).
"""
