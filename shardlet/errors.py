"""The one error type the CLI turns into a single line and a non-zero exit, never a traceback."""


class UserError(Exception):
    """A problem the user can fix; its message is one line that names the object and the field."""
