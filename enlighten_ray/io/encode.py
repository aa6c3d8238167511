"""Writing video (PyAV): the encoder with its source's timing, colour tags, rotation and copied
audio/subtitle packets, and `remux`, which joins encoded pieces without a second encode."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from enlighten_ray.errors import BadInputError
from enlighten_ray.io.video import (
    COPIED_TYPES,
    OUTPUT_FORMATS,
    VideoInfo,
    VideoReader,
    av_reason,
    nominal_step,
    open_input,
)

__all__ = ["EncoderOptions", "VideoWriter", "output_format", "remux"]

log = logging.getLogger(__name__)

# AVColorSpace (what frames and streams are tagged with) -> swscale's SWS_CS_* matrix numbering
# (what `VideoFrame.reformat(dst_colorspace=...)` takes). Unknown tags use swscale's default,
# BT.601, which is also what decoding an untagged frame to RGB assumed.
SWS_COLORSPACE = {1: 1, 4: 4, 5: 5, 6: 5, 7: 7, 9: 9, 10: 9}
SWS_DEFAULT = 5


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


class _StreamCopier:
    """Copies the source's audio/subtitle packets into `out` untouched, fed in time order
    alongside the video so the muxer can interleave without buffering whole streams."""

    def __init__(self, source: str | Path, out: av.container.OutputContainer, indexes: Sequence[int]) -> None:
        self._src = open_input(source)
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
        self._sws_colorspace = SWS_COLORSPACE.get(info.color.space, SWS_DEFAULT)
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
            raise BadInputError(encoder.codec, f"unknown or unusable video encoder ({av_reason(exc)})") from exc
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
                self._durations[self._last_pts] = (end or self._last_pts + nominal_step(self.info)) - self._last_pts
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
        raise BadInputError(path, f"cannot encode with {encoder.codec}/{pix_fmt} ({av_reason(exc)})") from exc
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
    first = open_input(video_sources[0])
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
