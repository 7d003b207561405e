"""The one error type for a user's mistake: a single line naming what and where."""


class DataError(Exception):
    """Bad input the user can fix (file, column, value); the CLI prints it as one line."""
