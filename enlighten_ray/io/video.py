"""Reading video (PyAV): probing, decoding by pts range (with an optional deblock/denoise
pre-filter, `filters.py`), and packet scans. `encode.py` writes, `remux` included.

Frames cross the boundary as uint8 (H, W, 3) RGB arrays, each with its own presentation timestamp
in the source stream's time base: the writer never re-times frames by index, so variable frame
rate stays variable. Rotation (display matrix) and colour range/space/primaries/transfer are read
here for the writer to carry. The output is 8-bit (the model works on uint8 RGB), also for 10-bit
sources.

For splitting one video across many workers: `scan_packets` lists every frame and keyframe pts,
without decoding, and `VideoReader.frames(start_pts, end_pts)` decodes one range (also from a
remote random-access file).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, NamedTuple

import av
import numpy as np
from av.sidedata.sidedata import Type as SideDataType

from enlighten_ray.errors import BadInputError, first_line
from enlighten_ray.io.filters import FrameFilter
from enlighten_ray.io.limits import check_pixels

__all__ = [
    "VIDEO_EXTENSIONS",
    "OUTPUT_FORMATS",
    "ColorInfo",
    "DecodedFrame",
    "VideoInfo",
    "VideoReader",
    "Packets",
    "plausible_count",
    "cut_short",
    "nominal_step",
    "scan_packets",
]

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm", ".mts", ".m2ts", ".ts", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp"}
)
# Containers we write (the mp4, mkv, mov; m4v is mp4 by another name).
OUTPUT_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
# Stream types copied packet for packet from the source.
COPIED_TYPES = ("audio", "subtitle")
# No container stores a frame in fewer bytes: MP4's sample tables alone take 4 per frame.
MIN_FRAME_BYTES = 4


@dataclass(frozen=True)
class ColorInfo:
    """FFmpeg colour tags (AVColorRange, AVColorSpace, AVColorPrimaries, AVColorTransferCharacteristic).
    range 1 = limited (TV), 2 = full (JPEG, e.g. dashcam MJPEG/yuvj420p); 2 = unspecified for the others."""

    range: int = 0
    space: int = 2
    primaries: int = 2
    trc: int = 2


@dataclass(frozen=True)
class VideoInfo:
    """What the writer needs to reproduce a source's timing, geometry and colour."""

    path: str
    codec: str
    width: int  # coded size; a display matrix may rotate it on playback
    height: int
    pix_fmt: str
    time_base: Fraction
    rate: Fraction | None  # average rate: only for encoder rate control, never for timestamps
    start_pts: int | None
    duration: int | None  # stream duration in time_base ticks, when the container states it
    frame_count: int | None  # the header's count: may be missing, or count frames an edit list drops
    color: ColorInfo = field(default_factory=ColorInfo)
    display_matrix: tuple[int, ...] | None = None  # 9 int32 (16.16 / 2.30 fixed point), as FFmpeg stores it
    rotation: int = 0  # degrees, from the display matrix
    copy_streams: tuple[int, ...] = ()  # indexes of audio/subtitle streams to copy
    file_bytes: int | None = None  # the file's size where the container knows it


class DecodedFrame(NamedTuple):
    rgb: np.ndarray  # (H, W, 3) uint8
    pts: int  # in VideoInfo.time_base ticks


Source = str | Path | BinaryIO  # a local file, or a seekable file object (a remote object read by ranges)


def open_input(source: Source, name: str | None = None) -> av.container.InputContainer:
    """Open a video for reading; `name` names a file object in errors."""
    if not isinstance(source, (str, Path)):
        try:
            return av.open(source, "r")
        except av.FFmpegError as exc:
            raise BadInputError(name or "<stream>", f"not a readable video ({av_reason(exc)})") from exc
    path = Path(source)
    if not path.is_file():
        raise BadInputError(path, "no such file")
    if path.stat().st_size == 0:
        raise BadInputError(path, "empty file (0 bytes)")
    try:
        return av.open(str(path), "r")
    except av.FFmpegError as exc:
        raise BadInputError(path, f"not a readable video ({av_reason(exc)})") from exc


def av_reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or first_line(exc)


def _display_matrix(frame: av.VideoFrame) -> tuple[int, ...] | None:
    # Decoders attach the stream's display matrix (mp4 tkhd / mkv projection) to every frame.
    data = frame.side_data.get(SideDataType.DISPLAYMATRIX)
    return struct.unpack("9i", bytes(data)) if data is not None else None


class VideoReader:
    """Decode a video's frames to uint8 RGB with their own pts.

    >>> with VideoReader("night.mp4") as reader:
    ...     for frame in reader.frames():
    ...         frame.rgb, frame.pts
    """

    def __init__(self, source: Source, name: str | None = None, denoise: str = "off") -> None:
        """`denoise`: a `filters.DENOISE` preset applied to each decoded frame before conversion."""
        self.path = Path(source) if isinstance(source, (str, Path)) else Path(name or "<stream>")
        self._filter = FrameFilter(denoise)
        self._container = open_input(source, name)
        try:
            self._first, self._decoded = self._open_video()
            self.info = self._probe(self._first)
        except BaseException:
            self._container.close()
            raise
        self._last_pts: int | None = None
        self._last_duration = 0
        self._stopped_at: int | None = None

    def _open_video(self) -> tuple[av.VideoFrame, Iterator[av.VideoFrame]]:
        """Decode the first frame up front: it validates the file before any output is created and
        carries the colour tags and display matrix the stream header may lack."""
        if not self._container.streams.video:
            kinds = sorted({s.type for s in self._container.streams}) or ["nothing"]
            raise BadInputError(self.path, f"no video stream (contains {', '.join(kinds)})")
        stream = self._container.streams.video[0]
        check_pixels(self.path, stream.codec_context.width, stream.codec_context.height)  # the header's size
        stream.thread_type = "AUTO"
        decoded = self._decode_frames(stream)
        first = next(decoded, None)
        if first is None:
            raise BadInputError(self.path, "no decodable video frames (truncated or corrupt?)")
        return first, decoded

    def _decode_frames(self, stream: av.VideoStream) -> Iterator[av.VideoFrame]:
        try:
            yield from self._container.decode(stream)
        except av.FFmpegError as exc:
            raise BadInputError(self.path, f"cannot decode video ({av_reason(exc)})") from exc

    def _probe(self, first: av.VideoFrame) -> VideoInfo:
        c, s = self._container, self._container.streams.video[0]
        duration = s.duration
        if duration is None and c.duration and len(c.streams) == 1:
            duration = int(Fraction(c.duration, av.time_base) / s.time_base)
        return VideoInfo(
            path=str(self.path),
            codec=s.codec_context.name,
            width=first.width,
            height=first.height,
            pix_fmt=first.format.name,
            time_base=s.time_base,
            rate=s.average_rate or s.guessed_rate or None,
            start_pts=s.start_time,
            duration=duration,
            frame_count=s.frames or None,
            file_bytes=c.size if c.size > 0 else None,
            color=ColorInfo(first.color_range, first.colorspace, first.color_primaries, first.color_trc),
            display_matrix=_display_matrix(first),
            rotation=first.rotation,
            copy_streams=tuple(x.index for x in c.streams if x.type in COPIED_TYPES),
        )

    @property
    def end_pts(self) -> int | None:
        """Presentation end of what `frames` yielded: the next frame's pts when a range stopped
        early; else the header's start + duration, or what decoding saw when longer, missing, or
        when the file is cut short (`truncated`: the header's end is then a promise not kept)."""
        if self._stopped_at is not None:
            return self._stopped_at
        ends = []
        if self.info.duration is not None and not self.truncated:
            ends.append((self.info.start_pts or 0) + self.info.duration)
        if self._last_pts is not None:
            ends.append(self._last_pts + max(self._last_duration, 1))
        return max(ends) if ends else None

    @property
    def truncated(self) -> bool:
        """After reading to the end: the header's duration reaches more than two frames past the
        last frame that decoded (a dashcam that lost power mid-file). Header counts are hints."""
        if self._last_pts is None or self._stopped_at is not None:
            return False
        return cut_short(self.info, self._last_pts + max(self._last_duration, 1))

    def frames(self, start_pts: int | None = None, end_pts: int | None = None) -> Iterator[DecodedFrame]:
        """Frames with start_pts <= pts < end_pts (all by default), in presentation order."""
        for frame, pts in self._frames_in_range(start_pts, end_pts):
            try:
                rgb = self._filter(frame).to_ndarray(format="rgb24")  # the frame's own range and matrix tags
            except (av.FFmpegError, ValueError) as exc:
                raise BadInputError(self.path, f"cannot convert frame at pts {pts} ({av_reason(exc)})") from exc
            yield DecodedFrame(rgb, pts)

    def batches(
        self, size: int, start_pts: int | None = None, end_pts: int | None = None
    ) -> Iterator[tuple[np.ndarray, list[int]]]:
        """`frames` stacked `size` at a time: (frames (N, H, W, 3), their pts)."""
        shape = (self.info.height, self.info.width, 3)
        frames: list[np.ndarray] = []
        pts: list[int] = []
        for frame in self.frames(start_pts, end_pts):
            if frame.rgb.shape != shape:
                raise BadInputError(self.path, f"frame size changes mid-stream at pts {frame.pts}: not supported")
            frames.append(frame.rgb)
            pts.append(frame.pts)
            if len(frames) == size:
                yield np.stack(frames), pts
                frames, pts = [], []
        if frames:
            yield np.stack(frames), pts

    def _frames_in_range(self, start_pts: int | None, end_pts: int | None) -> Iterator[tuple[av.VideoFrame, int]]:
        stream = self._container.streams.video[0]
        if self._first is not None and start_pts is None:
            source = _chain_first(self._first, self._decoded)
        else:
            self._container.seek(start_pts if start_pts is not None else (stream.start_time or 0), stream=stream)
            source = self._decode_frames(stream)
        self._first = None
        self._stopped_at = None
        previous: int | None = None
        step = nominal_step(self.info)
        for frame in source:
            pts = frame.pts if frame.pts is not None else (previous + step if previous is not None else 0)
            if previous is not None and pts <= previous:
                # An encoder rejects non-increasing pts; nudge by one tick rather than drop a frame.
                log.warning("%s: pts %d not after %d, written as %d", self.path, pts, previous, previous + 1)
                pts = previous + 1
            if start_pts is not None and pts < start_pts:
                continue
            if end_pts is not None and pts >= end_pts:
                self._stopped_at = pts  # the first frame after the range: where the last one ends
                break
            previous = pts
            self._last_pts, self._last_duration = pts, frame.duration or step
            yield frame, pts

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _chain_first(first: av.VideoFrame, rest: Iterator[av.VideoFrame]) -> Iterator[av.VideoFrame]:
    yield first
    yield from rest


def plausible_count(info: VideoInfo) -> int | None:
    """The header's frame count where its duration and rate agree with it and the file is large
    enough to hold that many frames (None: unknown). A count is only a hint: a crafted or damaged
    header can claim 2^31 frames, with a duration to match, for a 6-frame file of 6 KB."""
    count = info.frame_count
    if count is None or info.duration is None or not info.rate:
        return None
    if info.file_bytes is not None and count > info.file_bytes // MIN_FRAME_BYTES:
        return None
    expected = float(info.duration * info.time_base * info.rate)
    return count if count <= 1.5 * expected + 2 else None


def cut_short(info: VideoInfo, end_pts: int) -> bool:
    """Whether the header's duration reaches more than two frames past `end_pts`, where the frames
    that exist end: the file was cut short (a dashcam that lost power mid-file)."""
    if info.duration is None:
        return False
    return (info.start_pts or 0) + info.duration > end_pts + 2 * nominal_step(info)


def nominal_step(info: VideoInfo) -> int:
    """One frame interval in ticks, only to time frames that come without a pts."""
    rate = info.rate or Fraction(25)
    return max(1, round(1 / (rate * info.time_base)))


class Packets(NamedTuple):
    """A video stream's packet timestamps, sorted: `pts` of every frame (its index in the video,
    without decoding) and `keys` of the keyframes (where it can be cut into independently
    decodable pieces)."""

    pts: list[int]
    keys: list[int]
    time_base: Fraction
    rate: Fraction | None  # the stream's average frame rate, when known


def scan_packets(source: Source, name: str | None = None) -> Packets:
    """One demux pass over the video stream, no decoding (remote files: reads every byte once)."""
    container = open_input(source, name)
    label = name or source
    try:
        if not container.streams.video:
            raise BadInputError(label, "no video stream")
        stream = container.streams.video[0]
        check_pixels(label, stream.codec_context.width, stream.codec_context.height)
        pts, keys = [], []
        for p in container.demux(stream):
            if p.pts is not None and p.size:
                pts.append(p.pts)
                if p.is_keyframe:
                    keys.append(p.pts)
        return Packets(sorted(pts), sorted(keys), stream.time_base, stream.average_rate or stream.guessed_rate)
    except av.FFmpegError as exc:
        raise BadInputError(label, f"cannot read packets ({av_reason(exc)})") from exc
    finally:
        container.close()
