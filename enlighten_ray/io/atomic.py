"""Write outputs under a temporary name and rename when complete, so a crash or Ctrl-C never
leaves a half-written file where a finished one is expected."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` (same extension, so PIL/PyAV pick the same format);
    rename it onto `path` when the block succeeds, delete it on any exception (Ctrl-C included)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".partial{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    # mkstemp makes 0600 files; outputs should get the usual permissions under the user's umask.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# `atomic_output`'s temporary names: "." + the output's stem + "." + mkstemp's 8 random characters
# + ".partial" + the output's suffix. Only a name of exactly this shape can be one of ours.
_PARTIAL = re.compile(r"\.(?P<stem>.+)\.[a-z0-9_]{8}\.partial(?P<suffix>\.[^.]*)?")


def partial_target(path: str) -> str | None:
    """The output a temporary file of `atomic_output` at `path` was to become (same folder, '/'
    separators kept), or None when the name is not of that exact shape."""
    folder, _, name = str(path).rpartition("/")
    match = _PARTIAL.fullmatch(name)
    if match is None:
        return None
    target = match["stem"] + (match["suffix"] or "")
    return f"{folder}/{target}" if folder else target


def is_partial(path: str | os.PathLike) -> bool:
    """True for the temporary names `atomic_output` uses (skipped when scanning for inputs)."""
    return partial_target(Path(path).as_posix()) is not None
