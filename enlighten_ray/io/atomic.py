"""Write outputs under a temporary name and rename when complete, so a crash or Ctrl-C never
leaves a half-written file where a finished one is expected."""

from __future__ import annotations

import contextlib
import os
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


def is_partial(path: str | os.PathLike) -> bool:
    """True for the temporary names `atomic_output` uses (skipped when scanning for inputs)."""
    name = Path(path).name
    return name.startswith(".") and ".partial" in name
