"""Errors that describe bad user input.

The CLI maps InputError to exit code 2 and the window shows its message in place; anything else is a bug (exit 1).
Messages always name what was expected and what was found, so a user can fix their file without reading code.
"""

from __future__ import annotations


class InputError(Exception):
    """A user-supplied file, model, dump or setting is unusable; the message says what was expected and found."""


class SessionError(InputError):
    """A session file has one or more problems; ``problems`` holds one message per problem."""

    def __init__(self, problems: list[str], path: str | None = None) -> None:
        self.problems = list(problems)
        self.path = path
        where = f"{path}: " if path else ""
        super().__init__(where + ("\n" if len(problems) > 1 else "") + "\n".join(f"  - {p}" if len(problems) > 1 else p for p in problems))
