"""The one exception type that means "the user asked for something we cannot do"."""

# The exit status of every user error (bad override, bad value, bad data file), as argparse does.
EXIT_USER_ERROR = 2


class UserError(Exception):
    """A bad value, override or data file: reported as one line, never as a traceback."""


class DivergedError(UserError):
    """Training produced a NaN or Inf loss."""
