"""The one error type for bad input: the CLI prints its message on one line
and exits with code 2."""


class UserError(Exception):
    """Bad input from the user (a missing file, a wrong config value, ...).
    The message says what is wrong and how to fix it."""
