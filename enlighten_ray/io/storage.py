"""Where inputs and outputs live: a local path or any URI pyarrow opens (s3://, gs://, hdfs://,
file://), with one way to list media, fetch a file for PyAV, and publish an output atomically.

Credentials and endpoints come from the environment, as pyarrow and the cloud SDKs read them
(for S3: AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs

from enlighten_ray.errors import BadInputError
from enlighten_ray.io.atomic import atomic_output, is_partial
from enlighten_ray.io.images import HEIF_EXTENSIONS, IMAGE_EXTENSIONS, ImageMeta, media_kind, write_image
from enlighten_ray.io.video import VIDEO_EXTENSIONS
from enlighten_ray.io.walk import report_skipped, walk_local

SUPPORTED = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS

__all__ = ["Location", "MediaFile", "fetched", "opened", "put_image", "relative_path", "stored"]


def relative_path(path: str | os.PathLike, root: str | os.PathLike) -> Path:
    """`path` below the local folder `root`, whichever of the two is relative, absolute or `.`.
    Listings name files under the resolved root (`Location` resolves it); a file that is itself a
    link keeps its own name, so only the root is resolved when the plain paths do not relate."""
    absolute = Path(os.path.abspath(path))
    for base in (Path(os.path.abspath(root)), Path(root).resolve()):
        if absolute.is_relative_to(base):
            return absolute.relative_to(base)
    return Path(path).resolve().relative_to(Path(root).resolve())


class MediaFile(NamedTuple):
    path: str
    kind: str  # "image" or "video"
    version: str  # size and modification time: a file replaced under the same name differs


class Location:
    """A folder (or file) as a local path or any URI pyarrow handles (s3://, gs://, hdfs://, file://).

    Pickles as its URI, so every worker builds its own filesystem from its own credentials."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        if "://" in uri:
            try:
                self.fs, root = pafs.FileSystem.from_uri(uri)
            except (OSError, ValueError) as exc:
                raise BadInputError(uri, f"cannot open this location ({exc})") from exc
            self.scheme = uri.split("://", 1)[0]
        else:
            try:
                root = str(Path(uri).expanduser().resolve())
            except RuntimeError as exc:  # Python 3.11: "Symlink loop from ..."
                raise BadInputError(uri, "a symbolic link that loops") from exc
            self.fs = pafs.LocalFileSystem()
            self.scheme = ""
        self.root = root.rstrip("/") or "/"
        self.is_local = isinstance(self.fs, pafs.LocalFileSystem)

    def __reduce__(self) -> tuple[type, tuple[str]]:
        return Location, (self.uri,)

    def path(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def show(self, path: str) -> str:
        """How a path on this filesystem is written in logs and the manifest."""
        return path if self.is_local or not self.scheme or self.scheme == "file" else f"{self.scheme}://{path}"

    def exists(self, path: str) -> bool:
        return self.fs.get_file_info(path).type != pafs.FileType.NotFound

    def is_file(self, path: str) -> bool:
        return self.fs.get_file_info(path).type == pafs.FileType.File

    def contains(self, path: str) -> bool:
        return path == self.root or path.startswith(self.root.rstrip("/") + "/")

    def remove_tree(self, path: str) -> None:
        if self.exists(path):
            self.fs.delete_dir(path)

    def listing(self) -> set[str]:
        """Every file and folder under the root, from one listing (not a request per output)."""
        if not self.exists(self.root):
            return set()
        if self.is_local:  # each real folder once: a link loop under OUTPUT is not walked round
            walk = walk_local(self.root)
            return {f.path for f in walk.files} | set(walk.folders)
        return {f.path for f in self.fs.get_file_info(pafs.FileSelector(self.root, recursive=True))}

    def nothing_to_do(self) -> BadInputError:
        """The error for a folder without supported media: how many files it ignored, and why (or,
        for a single file, that it is not one)."""
        if self.is_file(self.root):
            return BadInputError(self.uri, f"not an image or video file (supported: {', '.join(sorted(SUPPORTED))})")
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(self.root, recursive=True))
        except OSError:
            infos = []
        ignored = sorted(PurePosixPath(i.path).name for i in infos if i.type == pafs.FileType.File)
        if not ignored:
            return BadInputError(self.uri, "is empty: no images or videos to enhance")
        shown = ", ".join(ignored[:3]) + (", ..." if len(ignored) > 3 else "")
        heif = any(PurePosixPath(n).suffix.lower() in HEIF_EXTENSIONS for n in ignored)
        hint = "; HEIC/HEIF needs the pillow-heif plugin: pip install 'enlighten-ray[heif]'" if heif else ""
        return BadInputError(
            self.uri,
            f"no supported images or videos: ignored {len(ignored)} files ({shown}); supported: "
            f"{', '.join(sorted(SUPPORTED))}{hint}",
        )

    def media(self, exclude: tuple[str, ...] = ()) -> list[MediaFile]:
        """Sorted media files under the root, or the one file it names. Hidden files
        and folders, our own partial outputs and anything under an `exclude` root are skipped."""
        try:
            info = self.fs.get_file_info(self.root)
            if info.type == pafs.FileType.File:
                infos = [(info.path, info.size, info.mtime_ns)]
            elif info.type == pafs.FileType.Directory:
                infos = self._files()
            elif self.is_local and os.path.islink(self.uri):
                raise BadInputError(self.uri, "a symbolic link that loops or leads nowhere")
            else:
                raise BadInputError(self.uri, "no such file or folder")
        except OSError as exc:
            raise BadInputError(self.uri, f"cannot list ({exc})") from exc
        prefixes = tuple(x.rstrip("/") + "/" for x in exclude)
        start = len(self.root.rstrip("/"))
        return sorted(
            MediaFile(path, kind, f"{size}:{mtime_ns}")
            for path, size, mtime_ns in infos
            if (kind := media_kind(path))
            and not is_partial(path)
            and not path.startswith(prefixes)
            and not any(part.startswith(".") for part in path[start:].split("/"))  # hidden files/folders
        )

    def _files(self) -> list[tuple[str, int, int]]:
        """(path, size, mtime_ns) of every file under the root folder; locally each real folder
        once, with the links that were not followed reported."""
        if not self.is_local:
            infos = self.fs.get_file_info(pafs.FileSelector(self.root, recursive=True))
            return [(i.path, i.size, i.mtime_ns) for i in infos if i.type == pafs.FileType.File]
        walk = walk_local(self.root)
        report_skipped(walk.skipped)
        return list(walk.files)


@contextlib.contextmanager
def fetched(loc: Location, path: str) -> Iterator[Path]:
    """A local path for a file on `loc` (remote files are downloaded to a temporary folder)."""
    if loc.is_local:
        yield Path(path)
        return
    with tempfile.TemporaryDirectory(prefix="enlighten-in-") as tmp:
        local = Path(tmp) / PurePosixPath(path).name
        with loc.fs.open_input_stream(path) as src, open(local, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        yield local


@contextlib.contextmanager
def opened(loc: Location, path: str) -> Iterator[Path | pa.NativeFile]:
    """A file on `loc` for PyAV to read: the local path, or a random-access remote file that
    fetches only the byte ranges read (a segment of a long video reads its own part, not all of it)."""
    if loc.is_local:
        yield Path(path)
        return
    with loc.fs.open_input_file(path) as f:
        yield f


@contextlib.contextmanager
def stored(loc: Location, path: str) -> Iterator[Path]:
    """A local file to write; when the block succeeds it becomes `path` on `loc` atomically: local
    outputs by rename, object-store outputs by one upload of the finished file (S3 and GCS publish
    an object only when its upload completes). On an exception nothing appears at `path`."""
    if loc.is_local:
        with atomic_output(path) as tmp:
            yield tmp
        return
    with tempfile.TemporaryDirectory(prefix="enlighten-out-") as tmp:
        local = Path(tmp) / PurePosixPath(path).name
        yield local
        loc.fs.create_dir(str(PurePosixPath(path).parent), recursive=True)
        data = local.read_bytes()  # one write call: no half-written object if reading fails midway
        with loc.fs.open_output_stream(path) as dst:
            dst.write(data)


def put_image(loc: Location, path: str, rgb: np.ndarray, meta: ImageMeta) -> None:
    if loc.is_local:
        write_image(path, rgb, meta)  # atomic by itself
        return
    with stored(loc, path) as tmp:
        write_image(tmp, rgb, meta)
