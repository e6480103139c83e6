"""The errors the CLI turns into one line and an exit code. Raised anywhere, caught only in `cli`.

Messages quote user input through `quote` and foreign exceptions through `brief`, so a hostile value (a
megabyte-long string, a multi-line library message) can never make an error longer than a line.
"""

QUOTE_LIMIT = 80  # characters of a user's value shown in a message
BRIEF_LIMIT = 200  # characters of a library's exception message shown in ours


class PipelineError(Exception):
    """A failure the user can act on; the message names the input and the fix."""

    exit_code = 1


class ConfigError(PipelineError):
    """Bad config file, override or flag, or a refused request: a usage error."""

    exit_code = 2


class DataError(PipelineError):
    """Data that is missing, unreadable or malformed."""


class TooLarge(DataError):
    """Input past a size limit (pixels, bytes), refused before it is decoded: a server answers 413 to it."""


class NotAnImage(DataError):
    """Bytes no image reader recognizes (a PDF, a text): a server answers 415 to it."""


class DeviceError(PipelineError):
    """The requested device is not available on this machine."""


class OutputError(PipelineError):
    """The output folder cannot be created or written."""


class RunNotCompleted(PipelineError):
    """A run folder that is not completed (interrupted, failed, running...): it has no final model to use."""

    def __init__(self, message: str, status: str):
        super().__init__(message)
        self.status = status


class RunFolderError(PipelineError):
    """A file of a run folder is missing, unreadable or not what `mnist train` wrote."""

    def __init__(self, message: str, path=None):
        super().__init__(message)
        self.path = path  # the damaged file, when one is to blame


class WorkerLost(PipelineError):
    """Another worker of a multi-worker run died, or hung past the communication timeout."""


class TrainingDiverged(PipelineError):
    """The loss became NaN or infinite."""


class Interrupted(PipelineError):
    """Training stopped on SIGINT / SIGTERM; the exit code follows the shell convention 128 + signal."""

    exit_code = 130


class Pruned(PipelineError):
    """A sweep's pruner stopped this trial's run after an epoch: not a failure, a hopeless trial."""


class StopNow(KeyboardInterrupt):
    """A second SIGINT / SIGTERM: unwind at once. A KeyboardInterrupt, so no `except Exception` swallows it;
    its exit code is the signal's (130 / 143), like the first signal's."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def quote(value, limit: int = QUOTE_LIMIT) -> str:
    """`repr(value)`, cut to `limit` characters with the total length said, for echoing user input."""
    return clip(repr(value), limit)


def clip(text: str, limit: int = QUOTE_LIMIT) -> str:
    """`text` cut to `limit` characters with the total length said. Both ends stay: a long path keeps the
    start of its folder and its file's name, which is what the reader looks for."""
    if len(text) <= limit:
        return text
    head = limit * 2 // 5
    return f"{text[:head]}...{text[len(text) - (limit - head):]} ({len(text):,} characters)"


def plural(count: int, word: str, many: str | None = None) -> str:
    """A count with its noun in the right form: `1 epoch`, `2 epochs`, `1,000 images`, `2 GPUs`."""
    return f"{count:,} {word if count == 1 else many or word + 's'}"


def brief(exc: BaseException, limit: int = BRIEF_LIMIT) -> str:
    """A foreign exception as a short single line: its first line, cut to `limit` characters."""
    lines = str(exc).strip().splitlines()
    text = " ".join(lines[0].split()) if lines else type(exc).__name__
    return text if len(text) <= limit else text[:limit] + "..."
