"""Synthetic media for the tests, written with PyAV and Pillow directly (not with the code under
test), readers that describe a file the way the faithfulness checks compare them, and the
repository's paths the tests use."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

REPO = Path(__file__).resolve().parents[1]
SMOKE = str(REPO / "configs" / "smoke.yaml")


def frame_rgb(i: int, size: tuple[int, int]) -> np.ndarray:
    """A moving gradient, different in every frame."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    r = (xx * 4 + i * 9) % 256
    g = (yy * 5 + i * 3) % 256
    b = np.full_like(xx, (60 + i * 17) % 256)
    return np.stack([r, g, b], -1).astype(np.uint8)


def make_video(
    path: Path,
    pts: list[int],
    time_base: Fraction = Fraction(1, 1000),
    size: tuple[int, int] = (64, 48),
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    rate: Fraction = Fraction(25),
    rotation: float | None = None,
    audio_seconds: float = 0.0,
    color_range: int | None = None,
    last_duration: int = 40,
) -> Path:
    """A video with frames at exactly `pts` (time_base ticks); optional AAC audio and rotation.
    No B-frames, so packets come in pts order and each gets its frame's display duration (the last
    one `last_duration`): a well-formed source whose duration means the same in every container."""
    options = {"bf": "0"} if codec == "libx264" else {}
    ends = [*pts[1:], pts[-1] + last_duration]
    durations = {p: e - p for p, e in zip(pts, ends)}
    with av.open(str(path), "w") as out:
        v = out.add_stream(codec, rate=rate, options=options)
        v.width, v.height, v.pix_fmt = size[0], size[1], pix_fmt
        v.time_base = time_base
        v.codec_context.time_base = time_base
        if color_range is not None:
            v.codec_context.color_range = color_range
        if rotation is not None:
            v.set_display_rotation(rotation)
        a = out.add_stream("aac", rate=44100) if audio_seconds else None
        for i, p in enumerate(pts):
            frame = av.VideoFrame.from_ndarray(frame_rgb(i, size), format="rgb24")
            frame = frame.reformat(format=pix_fmt, dst_color_range=color_range or 1)
            if color_range is not None:
                frame.color_range = color_range
            frame.pts, frame.time_base = p, time_base
            mux_timed(out, v.encode(frame), durations)
        mux_timed(out, v.encode(None), durations)
        if a is not None:
            mux_tone(out, a, audio_seconds)
    return path


def make_clip(path: Path, frames: int, gop: int = 12, audio: bool = True) -> Path:
    """64x48 H.264 at 25 fps with a keyframe every `gop` frames, and AAC audio over the same span."""
    tb = Fraction(1, 1000)
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=25, options={"g": str(gop), "keyint_min": str(gop), "sc_threshold": "0"})
        v.width, v.height, v.pix_fmt, v.time_base = 64, 48, "yuv420p", tb
        v.codec_context.time_base = tb
        a = out.add_stream("aac", rate=44100) if audio else None
        for i in range(frames):
            f = av.VideoFrame.from_ndarray(frame_rgb(i, (64, 48)), format="rgb24")
            f.pts, f.time_base = i * 40, tb
            out.mux(v.encode(f))
        out.mux(v.encode(None))
        if a is not None:
            mux_tone(out, a, frames / 25)
    return path


def write_video(path: Path, means: list[int], size: tuple[int, int] = (64, 48), fps: int = 10) -> Path:
    """A small mpeg4 clip whose frame i is a flat grey of `means[i]` plus a gradient."""
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        ramp = np.linspace(-8, 8, w)[None, :, None]
        for mean in means:
            rgb = np.clip(np.full((h, w, 3), float(mean)) + ramp, 0, 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def mux_tone(out: av.container.OutputContainer, stream: av.AudioStream, seconds: float) -> None:
    """Encode and mux `seconds` of a 440 Hz mono tone (44.1 kHz AAC) into `stream`."""
    t = np.arange(int(seconds * 44100)) / 44100
    samples = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
    for start in range(0, samples.shape[1], 1024):
        af = av.AudioFrame.from_ndarray(samples[:, start : start + 1024], format="fltp", layout="mono")
        af.sample_rate, af.pts = 44100, start
        out.mux(stream.encode(af))
    out.mux(stream.encode(None))


def mux_timed(out: av.container.OutputContainer, packets: list[av.Packet], durations: dict[int, int]) -> None:
    for packet in packets:
        packet.duration = durations[packet.pts]
        out.mux(packet)


def describe(path: Path) -> dict:
    """Frame times (exact fractions of a second), count, duration, rotation, colour, audio packets."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = list(c.decode(v))
        info = {
            "times": [f.pts * f.time_base for f in frames],
            "count": len(frames),
            "duration_s": c.duration / 1e6 if c.duration else None,
            "rotation": frames[0].rotation,
            "color_range": frames[0].color_range,
            "size": (frames[0].width, frames[0].height),
            "pix_fmt": frames[0].format.name,
            "first_rgb": frames[0].to_ndarray(format="rgb24"),
        }
    with av.open(str(path)) as c:
        audio = c.streams.audio
        packets = [p for p in c.demux(audio[0]) if p.size] if audio else []
        info["audio"] = [(bytes(p), p.pts * p.time_base) for p in packets]
        info["audio_codec"] = audio[0].codec_context.name if audio else None
    return info


def assert_faithful(src: Path, out: Path) -> dict:
    """Same frame count and per-frame times, duration, audio packets and rotation."""
    a, b = describe(src), describe(out)
    assert b["count"] == a["count"]
    assert b["times"] == a["times"]
    assert abs(b["duration_s"] - a["duration_s"]) < 1e-3, (a["duration_s"], b["duration_s"])
    assert [data for data, _ in b["audio"]] == [data for data, _ in a["audio"]]
    # Same instants (to the millisecond Matroska stores; exact within mp4).
    assert all(abs(tb - ta) <= Fraction(1, 1000) for (_, ta), (_, tb) in zip(a["audio"], b["audio"]))
    assert b["rotation"] == a["rotation"]
    assert b["color_range"] == a["color_range"]
    return b


def trim_copy(src: Path, dst: Path, seconds: float) -> Path:
    """The first `seconds` of `src`, every stream copied packet for packet (no re-encoding)."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        streams = {s.index: out.add_stream_from_template(s) for s in inp.streams if s.type in ("video", "audio")}
        for packet in inp.demux(*[inp.streams[i] for i in streams]):
            if packet.size and packet.dts is not None and packet.dts * packet.time_base < seconds:
                packet.stream = streams[packet.stream.index]
                out.mux(packet)
    return dst


def write_images(
    folder: Path, count: int, size: tuple[int, int] = (48, 64), seed: int = 0, dark: bool = False
) -> list[Path]:
    """Small synthetic RGB JPEGs (smooth gradients plus noise, so they compress like photos)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    h, w = size
    paths = []
    for i in range(count):
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([xx / w, yy / h, (xx + yy) / (h + w)], -1) * 200 + rng.normal(0, 10, (h, w, 3))
        img = np.clip(base * (0.25 if dark else 1.0), 0, 255).astype(np.uint8)
        path = folder / f"img_{i:03d}.jpg"
        Image.fromarray(img).save(path, quality=90)
        paths.append(path)
    return paths
