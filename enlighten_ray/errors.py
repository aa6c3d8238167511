"""The one exception type users see as a one-line message instead of a traceback."""


class BadInputError(ValueError):
    """A file or setting we cannot use. The message names the file (or key) and the reason."""

    def __init__(self, path: object, reason: str) -> None:
        super().__init__(f"{shown(path)}: {reason}")
        self.path = str(path)
        self.reason = reason


def shown(path: object) -> str:
    """A file name as a log line writes it: as it is, or quoted (repr) when it holds a newline or
    another unprintable character, so one error stays one line."""
    text = str(path)
    return text if text.isprintable() else repr(text)


def first_line(exc: BaseException) -> str:
    """An exception's message cut to one line of at most 200 characters (its type if it has none)."""
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]


def reason(exc: BaseException) -> str:
    """Why something failed, in one line: a `BadInputError`'s reason, else the type and message."""
    if isinstance(exc, BadInputError):
        return exc.reason
    return f"{type(exc).__name__}: {first_line(exc)}"
