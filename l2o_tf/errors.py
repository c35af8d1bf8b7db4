"""The errors a user can cause (bad flags, data, files): entry points print them as one line, never a traceback."""


class L2OError(Exception):
    """Base of every error caused by the user's input rather than by a bug."""


class UsageError(L2OError, ValueError):
    """A bad flag value or combination."""


class Interrupted(Exception):
    """Training stopped by Ctrl-C or SIGTERM after saving; the message says how to resume (exit status 130)."""
