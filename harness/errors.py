"""The one exception type for errors a user can cause (bad task file, unknown model, bad option).

The CLI prints these as one line and exits with code 2; anything else is a bug and keeps its
traceback.
"""


class HarnessError(Exception):
    """A user-facing error: the message names the file or field at fault and how to fix it."""
