class DigitrecError(Exception):
    """A mistake the user can fix (bad config value, missing data, unreadable file).

    The CLI prints it as one line, without a traceback, and exits non-zero.
    """


def first_line(err: BaseException, limit: int = 200, fallback: str | None = None) -> str:
    """The first line of an exception's message (libraries explain at length), cut to `limit`.

    An empty message gives `fallback`, by default the exception's type name.
    """
    text = str(err).strip()
    if not text:
        return type(err).__name__ if fallback is None else fallback
    return text.splitlines()[0][:limit]
