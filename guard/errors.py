"""One exception type for every user-facing failure, with the process exit code it maps to."""

EXIT_SAFE = 0
EXIT_INTERNAL = 1
EXIT_ERROR = 2
EXIT_PARTIAL = 3
EXIT_UNSAFE = 10
EXIT_INDETERMINATE = 11


class GuardError(Exception):
    """A problem with the caller's input (model, file, text, option).

    The CLI prints ``str(err)`` on one line and exits with ``err.exit_code``.
    """

    exit_code = EXIT_ERROR

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class GuardWarning(UserWarning):
    """Something the caller should know but that does not stop the work (the CLI prints it as one line)."""


class SequenceTooLong(GuardError):
    """The conversation (plus the verdict) needs more positions than the model's max_seq_len."""


class BadModelFile(GuardError):
    """A model file or directory that cannot be used: missing, truncated, corrupt, wrong format or version."""
