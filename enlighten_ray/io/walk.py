"""Listing a local folder tree with its links made safe: each real folder is walked once, so a link
back up the tree (`sub/up -> ..`) or a second link to the same folder adds nothing and is
reported, never followed round a loop. A link to a folder outside the tree is followed (once):
footage libraries are often assembled from links. Broken and self-looping links are reported."""

from __future__ import annotations

import errno
import os
import stat
import sys
from collections import deque
from typing import NamedTuple

__all__ = ["LocalFile", "Walk", "report_skipped", "walk_local"]


class LocalFile(NamedTuple):
    path: str
    size: int
    mtime_ns: int


class Walk(NamedTuple):
    files: list[LocalFile]
    folders: list[str]
    skipped: list[tuple[str, str]]  # (link, why it was not followed)


def walk_local(root: str) -> Walk:
    """Files and folders under `root` (paths spelled under `root`, links not resolved), each real
    folder once; the links not followed, with the reason."""
    files: list[LocalFile] = []
    folders: list[str] = []
    skipped: list[tuple[str, str]] = []
    seen: set[tuple[int, int]] = set()
    pending = deque([root])  # breadth first: of two ways to one folder, the shallower is kept
    while pending:
        folder = pending.popleft()
        try:
            st = os.stat(folder)
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            skipped.append((folder, f"cannot list ({exc.strerror or exc})"))
            continue
        if (st.st_dev, st.st_ino) in seen:
            skipped.append((folder, "a link to a folder already listed (a loop or a duplicate)"))
            continue
        seen.add((st.st_dev, st.st_ino))
        if folder != root:
            folders.append(folder)
        for entry in entries:
            _visit(entry, files, pending, skipped)
    return Walk(files, folders, skipped)


def _visit(entry: os.DirEntry, files: list[LocalFile], pending: deque[str], skipped: list[tuple[str, str]]) -> None:
    try:
        st = entry.stat()  # follows links
    except OSError as exc:
        if entry.is_symlink():
            why = "a link that loops" if exc.errno == errno.ELOOP else "a broken link"
            skipped.append((entry.path, why))
        return
    if stat.S_ISDIR(st.st_mode):
        pending.append(entry.path)
    elif stat.S_ISREG(st.st_mode):
        files.append(LocalFile(entry.path, st.st_size, st.st_mtime_ns))


def report_skipped(skipped: list[tuple[str, str]]) -> None:
    """One line per link not followed, names quoted (a name may hold a newline)."""
    for path, why in skipped:
        print(f"enlighten-ray: skipped {path!r}: {why}", file=sys.stderr)
