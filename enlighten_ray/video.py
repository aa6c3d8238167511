"""All video I/O (PyAV) in one place: a reader and a writer, both context managers.

Frames cross the boundary as uint8 (H, W, 3) RGB arrays, each with its own presentation timestamp
in the source stream's time base: the writer never re-times frames by index, so variable frame
rate stays variable. Audio and subtitle packets are copied, not re-encoded, and interleaved by
time with the encoded video. Rotation (display matrix) and colour range/space/primaries/transfer
are carried from source to output. The output is 8-bit (the model works on uint8 RGB), also for
10-bit sources.

For splitting one video across many workers: `keyframe_pts` lists cut points from a packet scan,
`VideoReader.frames(start_pts, end_pts)` decodes one range, and `remux` joins encoded pieces with
the source's audio without re-encoding.
"""

from __future__ import annotations

import logging
import struct
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import av
import numpy as np
from av.sidedata.sidedata import Type as SideDataType

from .errors import BadInputError

__all__ = [
    "VIDEO_EXTENSIONS",
    "OUTPUT_FORMATS",
    "ColorInfo",
    "DecodedFrame",
    "EncoderOptions",
    "VideoInfo",
    "VideoReader",
    "VideoWriter",
    "keyframe_pts",
    "output_format",
    "remux",
]

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm", ".mts", ".m2ts", ".ts", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp"}
)
# Containers we write (the mp4, mkv, mov; m4v is mp4 by another name).
OUTPUT_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
# Stream types copied packet for packet from the source.
COPIED_TYPES = ("audio", "subtitle")

# AVColorSpace (what frames and streams are tagged with) -> swscale's SWS_CS_* matrix numbering
# (what `VideoFrame.reformat(dst_colorspace=...)` takes). Unknown tags use swscale's default,
# BT.601, which is also what decoding an untagged frame to RGB assumed.
_SWS_COLORSPACE = {1: 1, 4: 4, 5: 5, 6: 5, 7: 7, 9: 9, 10: 9}
_SWS_DEFAULT = 5


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


class DecodedFrame(NamedTuple):
    rgb: np.ndarray  # (H, W, 3) uint8
    pts: int  # in VideoInfo.time_base ticks


@dataclass(frozen=True)
class EncoderOptions:
    """Encoder settings; pix_fmt None = yuv420p (yuv444p for odd sizes, which 4:2:0 cannot hold)."""

    codec: str = "libx264"
    crf: int = 18
    preset: str | None = None
    pix_fmt: str | None = None


def output_format(path: str | Path) -> str:
    """The FFmpeg muxer for an output path, from its extension."""
    suffix = Path(path).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise BadInputError(path, f"cannot write video as '{suffix}': use one of {', '.join(sorted(OUTPUT_FORMATS))}")
    return OUTPUT_FORMATS[suffix]


def _open_output(path: str | Path) -> av.container.OutputContainer:
    fmt = output_format(path)
    # Matroska cannot store negative times, so by default FFmpeg shifts every stream when the
    # source has packets before 0 (AAC priming, edit lists); its signed block times cope unshifted.
    options = {"avoid_negative_ts": "disabled"} if fmt == "matroska" else {}
    return av.open(str(path), "w", format=fmt, options=options)


def _open_input(path: str | Path) -> av.container.InputContainer:
    path = Path(path)
    if not path.is_file():
        raise BadInputError(path, "no such file")
    if path.stat().st_size == 0:
        raise BadInputError(path, "empty file (0 bytes)")
    try:
        return av.open(str(path), "r")
    except av.FFmpegError as exc:
        raise BadInputError(path, f"not a readable video ({_reason(exc)})") from exc


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc).splitlines()[0][:200]


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

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._container = _open_input(self.path)
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
            raise BadInputError(self.path, f"cannot decode video ({_reason(exc)})") from exc

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
            color=ColorInfo(first.color_range, first.colorspace, first.color_primaries, first.color_trc),
            display_matrix=_display_matrix(first),
            rotation=first.rotation,
            copy_streams=tuple(x.index for x in c.streams if x.type in COPIED_TYPES),
        )

    @property
    def end_pts(self) -> int | None:
        """Presentation end of what `frames` yielded: the next frame's pts when a range stopped
        early; else the header's start + duration, or what decoding saw when longer or missing."""
        if self._stopped_at is not None:
            return self._stopped_at
        ends = []
        if self.info.duration is not None:
            ends.append((self.info.start_pts or 0) + self.info.duration)
        if self._last_pts is not None:
            ends.append(self._last_pts + max(self._last_duration, 1))
        return max(ends) if ends else None

    def frames(self, start_pts: int | None = None, end_pts: int | None = None) -> Iterator[DecodedFrame]:
        """Frames with start_pts <= pts < end_pts (all by default), in presentation order."""
        for frame, pts in self._frames_in_range(start_pts, end_pts):
            try:
                rgb = frame.to_ndarray(format="rgb24")  # uses the frame's own range and matrix tags
            except (av.FFmpegError, ValueError) as exc:
                raise BadInputError(self.path, f"cannot convert frame at pts {pts} ({_reason(exc)})") from exc
            yield DecodedFrame(rgb, pts)

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
        step = _nominal_step(self.info)
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


def _nominal_step(info: VideoInfo) -> int:
    """One frame interval in ticks, only to time frames that come without a pts."""
    rate = info.rate or Fraction(25)
    return max(1, round(1 / (rate * info.time_base)))


def keyframe_pts(path: str | Path) -> list[int]:
    """Presentation timestamps of the video stream's keyframes, from a packet scan (no decoding):
    the places a long video can be cut into independently decodable pieces."""
    container = _open_input(path)
    try:
        if not container.streams.video:
            raise BadInputError(path, "no video stream")
        stream = container.streams.video[0]
        return sorted(p.pts for p in container.demux(stream) if p.is_keyframe and p.pts is not None)
    except av.FFmpegError as exc:
        raise BadInputError(path, f"cannot read packets ({_reason(exc)})") from exc
    finally:
        container.close()


class _StreamCopier:
    """Copies the source's audio/subtitle packets into `out` untouched, fed in time order
    alongside the video so the muxer can interleave without buffering whole streams."""

    def __init__(self, source: str | Path, out: av.container.OutputContainer, indexes: Sequence[int]) -> None:
        self._src = _open_input(source)
        streams = [self._src.streams[i] for i in indexes]
        unsupported = [s for s in streams if s.codec_context.name not in out.supported_codecs]
        if unsupported:
            self._src.close()
            names = ", ".join(f"#{s.index} {s.type} {s.codec_context.name}" for s in unsupported)
            raise BadInputError(
                source, f"stream {names} cannot be copied into {out.format.name}: choose a .mkv output to keep it"
            )
        self._map = {}
        for s in streams:
            copy = out.add_stream_from_template(s)
            for key, value in s.metadata.items():
                copy.metadata[key] = value
            copy.disposition = s.disposition
            self._map[s.index] = copy
        self._packets = self._src.demux(streams) if streams else iter(())
        self._pending: av.Packet | None = None
        self._out = out

    def until(self, seconds: float | None) -> None:
        """Mux source packets up to `seconds` (decode time); all remaining ones when None."""
        while True:
            packet = self._pending or next(self._packets, None)
            self._pending = None
            if packet is None:
                return
            if packet.size == 0:  # the demuxer's end-of-stream marker
                continue
            ts = packet.dts if packet.dts is not None else packet.pts
            if seconds is not None and ts is not None and float(ts * packet.time_base) > seconds:
                self._pending = packet
                return
            packet.stream = self._map[packet.stream.index]
            self._out.mux(packet)

    def close(self) -> None:
        self._src.close()


class VideoWriter:
    """Encode uint8 RGB frames at the source's timestamps, with the source's colour tags and
    display matrix, copying its audio/subtitle streams (`copy_from`). `close` flushes the encoder.

    Timing: packets get their frames' presentation durations (next pts - pts; the last frame lasts
    until `end_pts`), so the output reports the source's duration. mp4/mov compute a track's
    length from decode timestamps, so there the last packet in decode order absorbs the difference.
    """

    def __init__(
        self,
        path: str | Path,
        info: VideoInfo,
        encoder: EncoderOptions = EncoderOptions(),
        *,
        size: tuple[int, int] | None = None,
        copy_from: str | Path | None = None,
    ) -> None:
        self.path = Path(path)
        self.info = info
        self.end_pts: int | None = None  # set before close to the source's presentation end
        width, height = size or (info.width, info.height)
        pix_fmt = _choose_pix_fmt(self.path, encoder, width, height)
        self._out = _open_output(self.path)
        self._closed = False
        self._copier: _StreamCopier | None = None
        try:
            self._stream = self._add_video_stream(encoder, width, height, pix_fmt)
            if copy_from is not None and info.copy_streams:
                self._copier = _StreamCopier(copy_from, self._out, info.copy_streams)
            self._out.metadata.update(_container_metadata(copy_from))
        except BaseException:
            self._out.close()
            raise
        self._sws_colorspace = _SWS_COLORSPACE.get(info.color.space, _SWS_DEFAULT)
        self._pix_fmt = pix_fmt
        self._durations: dict[int, int] = {}
        self._last_pts: int | None = None
        self._pending: deque[av.Packet] = deque()
        self._first_dts: int | None = None
        self._first_pts: int | None = None

    def _add_video_stream(self, encoder: EncoderOptions, width: int, height: int, pix_fmt: str) -> av.VideoStream:
        info = self.info
        options = {"crf": str(encoder.crf)}
        if encoder.preset:
            options["preset"] = encoder.preset
        try:
            stream = self._out.add_stream(encoder.codec, rate=info.rate or Fraction(25), options=options)
        except (av.FFmpegError, ValueError) as exc:
            raise BadInputError(encoder.codec, f"unknown or unusable video encoder ({_reason(exc)})") from exc
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        # Frames keep the source's clock; the rate above only steers the encoder's rate control.
        stream.time_base = info.time_base
        stream.codec_context.time_base = info.time_base
        cc = stream.codec_context
        cc.color_range, cc.colorspace = info.color.range, info.color.space
        cc.color_primaries, cc.color_trc = info.color.primaries, info.color.trc
        if info.display_matrix is not None:
            stream.set_display_matrix(info.display_matrix)
        return stream

    def write(self, rgb: np.ndarray, pts: int) -> None:
        """Encode one (H, W, 3) uint8 RGB frame at `pts` (source time base); pts must increase."""
        if self._last_pts is not None:
            self._durations[self._last_pts] = pts - self._last_pts
        self._last_pts = pts
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame = frame.reformat(
            format=self._pix_fmt, dst_colorspace=self._sws_colorspace, dst_color_range=self.info.color.range or 1
        )
        c = self.info.color
        frame.color_range, frame.colorspace = c.range, c.space
        frame.color_primaries, frame.color_trc = c.primaries, c.trc
        frame.pts, frame.time_base = pts, self.info.time_base
        if self._first_pts is None:
            self._first_pts = pts
        self._queue(self._stream.encode(frame))

    def _queue(self, packets: Sequence[av.Packet]) -> None:
        for packet in packets:
            if self._first_dts is None:
                self._first_dts = packet.dts
            self._pending.append(packet)
        # Hold packets until their frame's duration is known; keep the newest for `close`.
        while len(self._pending) > 1 and self._pending[0].pts in self._durations:
            self._mux(self._pending.popleft())

    def _mux(self, packet: av.Packet) -> None:
        packet.duration = self._durations.get(packet.pts, packet.duration)
        if self._copier is not None and packet.dts is not None:
            self._copier.until(float(packet.dts * packet.time_base))
        self._out.mux(packet)

    def close(self) -> None:
        """Flush the encoder, give the last frame its duration, copy the remaining audio, finalise."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._last_pts is not None:
                end = self.end_pts if self.end_pts is not None and self.end_pts > self._last_pts else None
                self._durations[self._last_pts] = (end or self._last_pts + _nominal_step(self.info)) - self._last_pts
                self._queue(self._stream.encode(None))
                self._finish_pending()
            if self._copier is not None:
                self._copier.until(None)
        finally:
            self._release()

    def _finish_pending(self) -> None:
        while len(self._pending) > 1:
            self._mux(self._pending.popleft())
        if not self._pending:
            return
        last = self._pending.popleft()
        self._mux_last(last)

    def _mux_last(self, last: av.Packet) -> None:
        mov = self._out.format.name.split(",")[0] in ("mp4", "mov")
        if mov and last.dts is not None and self._first_dts is not None:
            # mov's track length = last dts + last duration - first dts, counted from the first
            # frame's presentation; make it end exactly where the source's last frame ends.
            end = self._last_pts + self._durations[self._last_pts]
            last_duration = end - last.dts - (self._first_pts - self._first_dts)
            self._durations[last.pts] = max(1, last_duration)
        self._mux(last)

    def abort(self) -> None:
        """Stop without flushing (the output is discarded by the caller)."""
        if not self._closed:
            self._closed = True
            self._release()

    def _release(self) -> None:
        try:
            self._out.close()
        finally:
            if self._copier is not None:
                self._copier.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: type | None, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _choose_pix_fmt(path: Path, encoder: EncoderOptions, width: int, height: int) -> str:
    pix_fmt = encoder.pix_fmt
    if pix_fmt is None:
        pix_fmt = "yuv444p" if width % 2 or height % 2 else "yuv420p"
    try:
        fmt = av.VideoFormat(pix_fmt)
        codec = av.Codec(encoder.codec, "w")
    except (av.FFmpegError, ValueError) as exc:
        raise BadInputError(path, f"cannot encode with {encoder.codec}/{pix_fmt} ({_reason(exc)})") from exc
    supported = [f.name for f in codec.video_formats or []]
    if supported and pix_fmt not in supported:
        raise BadInputError(path, f"{encoder.codec} cannot encode {pix_fmt}; it takes {', '.join(supported)}")
    if fmt.chroma_width(width) * 2 == width + 1 or fmt.chroma_height(height) * 2 == height + 1:
        raise BadInputError(path, f"{pix_fmt} needs even width and height, the video is {width}x{height}")
    return pix_fmt


_MUXER_TAGS = ("encoder", "major_brand", "minor_version", "compatible_brands")


def _container_metadata(source: str | Path | None) -> dict[str, str]:
    """The source's container tags (title, creation_time, location, ...), minus what the muxer writes."""
    if source is None:
        return {}
    with av.open(str(source)) as src:
        return {k: v for k, v in src.metadata.items() if k not in _MUXER_TAGS}


def remux(video_sources: Sequence[str | Path], streams_from: str | Path, out_path: str | Path) -> None:
    """Join the video packets of `video_sources` (pieces encoded from one source, in order, on the
    source's clock) with the audio/subtitle packets of `streams_from`, without re-encoding.

    Writes `out_path` in place; wrap it in `atomic_output` as with any output.
    """
    if not video_sources:
        raise ValueError("remux needs at least one video source")
    first = _open_input(video_sources[0])
    out = _open_output(out_path)
    copier: _StreamCopier | None = None
    try:
        template = first.streams.video[0]
        video = out.add_stream_from_template(template)
        with VideoReader(video_sources[0]) as reader:
            matrix = reader.info.display_matrix
        if matrix is not None:
            video.set_display_matrix(matrix)
        with av.open(str(streams_from)) as src:
            indexes = [s.index for s in src.streams if s.type in COPIED_TYPES]
        copier = _StreamCopier(streams_from, out, indexes)
        out.metadata.update(_container_metadata(streams_from))
        for source in video_sources:
            with av.open(str(source)) as piece:
                for packet in piece.demux(piece.streams.video[0]):
                    if packet.size == 0:
                        continue
                    if packet.dts is not None:
                        copier.until(float(packet.dts * packet.time_base))
                    packet.stream = video
                    out.mux(packet)
        copier.until(None)
    finally:
        first.close()
        out.close()
        if copier is not None:
            copier.close()

