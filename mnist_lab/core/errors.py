"""The exception types that mean "the user asked for something we cannot do", and exit statuses."""

# Exit statuses of every mnist-lab command (DEVELOPERS.md): 2 for a user error (bad override,
# value or data file; divergence), as argparse does; 1 for a sweep with a failed or missing job;
# 128 + the signal for an interrupted run (130 Ctrl-C, 143 SIGTERM), as a shell reports it.
EXIT_USER_ERROR = 2
EXIT_JOB_FAILED = 1
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


class UserError(Exception):
    """A bad value, override or data file: reported as one line, never as a traceback."""


class DivergedError(UserError):
    """Training produced a NaN or Inf loss."""


class FolderRefused(UserError):
    """A run or sweep folder this command may not write: it holds another config's run, or
    another process holds it. A sweep stops on it at once, as a single run does."""


class FolderBusyError(FolderRefused):
    """Another process holds the run or sweep folder."""


class Refused(BaseException):  # noqa: N818 - what happened to the command, like Interrupted
    """A UserError on its way out through Hydra, which turns a callback's Exception into a
    warning and a job's into its own report. The CLI prints ``error`` as one line and exits 2;
    the Python API raises ``error`` itself."""

    def __init__(self, error: UserError) -> None:
        super().__init__(str(error))
        self.error = error
