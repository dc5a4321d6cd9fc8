"""The one exception type users can act on."""

from __future__ import annotations


class PtolemyInputError(ValueError):
    """Bad input the user can fix (unreadable file, wrong shape, bad option ...).

    The message is always a single line; command-line entry points print it
    and exit with a non-zero status, never a traceback.
    """

    def __init__(self, message: str) -> None:
        # One line, always: multi-line messages break Leginon's log parsing and
        # the "one line on stderr" contract of the CLIs and scripts.
        super().__init__(" ".join(str(message).split()))


class PtolemyUnavailableError(RuntimeError):
    """A feature that is not available in this installation (e.g. missing extra)."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))
