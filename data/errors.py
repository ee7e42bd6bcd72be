"""The one exception type every stage raises for bad input.

CLIs turn it into a one-line `Error: ...` and exit code 1 (see `cli_errors`).
The message must name the file or option at fault and say what to do.
"""


class GlagError(Exception):
    """Bad input or an unusable file; the message is shown to the user as-is."""
