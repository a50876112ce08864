"""Errors the command line turns into a clear message and exit code 2."""


class UsageError(Exception):
    """Bad input from the user (missing file, unknown name, corrupt JSON, ...).

    The message must name the file, value or shape and say what was expected.
    """
