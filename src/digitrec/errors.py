"""digitrec's errors and the exit codes it promises."""

# The exit codes digitrec promises (README, "Errors and exit codes").
EXIT_FAILED_RUN = 1
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class DigitrecError(Exception):
    """A mistake the user can fix (bad config value, missing data, unreadable file).

    The CLI prints it as one line, without a traceback, and exits with `exit_code`.
    """

    exit_code = EXIT_USER_ERROR


class BadOverride(DigitrecError):
    """A command-line override that Hydra, OmegaConf or a search cannot take: `bad override: <why>`."""

    def __init__(self, why: str) -> None:
        super().__init__(f"bad override: {why}")


class RunFailed(DigitrecError):
    """A run that started well and then went wrong (diverged, stopped learning): exit code 1,
    and the run's metrics.json says `status: failed` with the reason."""

    exit_code = EXIT_FAILED_RUN


def first_line(err: BaseException, limit: int = 200, fallback: str | None = None) -> str:
    """The first line of an exception's message (libraries explain at length), cut to `limit`.

    An empty message gives `fallback`, by default the exception's type name.
    """
    text = str(err).strip()
    if not text:
        return type(err).__name__ if fallback is None else fallback
    return text.splitlines()[0][:limit]
