"""The one exception type users see as a one-line message instead of a traceback."""


class BadInputError(ValueError):
    """A file or setting we cannot use. The message names the file (or key) and the reason."""

    def __init__(self, path: object, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason
