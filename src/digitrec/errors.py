class DigitrecError(Exception):
    """A mistake the user can fix (bad config value, missing data, unreadable file).

    The CLI prints it as one line, without a traceback, and exits non-zero.
    """
