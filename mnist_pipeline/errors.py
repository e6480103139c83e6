"""The errors the CLI turns into one line and an exit code. Raised anywhere, caught only in `cli`."""


class PipelineError(Exception):
    """A failure the user can act on; the message names the input and the fix."""

    exit_code = 1


class ConfigError(PipelineError):
    """Bad config file, override or flag: a usage error."""

    exit_code = 2


class DataError(PipelineError):
    """Data that is missing, unreadable or malformed."""


class DeviceError(PipelineError):
    """The requested device is not available on this machine."""


class OutputError(PipelineError):
    """The output folder cannot be created or written."""


class TrainingDiverged(PipelineError):
    """The loss became NaN or infinite."""


class Interrupted(PipelineError):
    """Training stopped on SIGINT / SIGTERM; the exit code follows the shell convention 128 + signal."""

    exit_code = 130
