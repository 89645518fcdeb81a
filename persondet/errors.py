"""The one exception type that entry points turn into a one-line message and a non-zero exit."""


class PersondetError(Exception):
    """A user-facing error: the message names the file or value and what is wrong, on one line."""
