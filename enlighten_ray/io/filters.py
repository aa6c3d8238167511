"""Pre-filters for dark video: FFmpeg's deblocking and denoising (LGPL filters of the PyAV wheel)
on the decoded YUV frames, before the generator lifts their noise and compression blocks 10x.

Spatial filters only: a frame's output depends on that frame alone, so frame counts, timestamps
and the joins between Ray Data's segments are exact by construction (a temporal denoiser would
need overlapping segments). No torch import: the CLI's `--help` reads DENOISE."""

from __future__ import annotations

import av

__all__ = ["DENOISE", "FrameFilter"]

DEBLOCK = "filter=strong:block=8:alpha=0.2:beta=0.1:gamma=0.1:delta=0.1"
# preset -> FFmpeg filters in order, as (name, options)
DENOISE: dict[str, tuple[tuple[str, str], ...]] = {
    "off": (),
    # H.264's 8x8 transform blocks smoothed where the step is a codec edge, then chroma noise
    # averaged (chromanr). Thresholds twice FFmpeg's (alpha 0.098, beta/gamma/delta 0.05): on the
    # night dashcam's first 60 frames its defaults left the 16-px grid at 1.11 (input 1.34), these
    # at 0.95; on the day dashcam they change frames by 43 dB PSNR. ~17 fps at 640x360, one core.
    "light": (("deblock", DEBLOCK), ("chromanr", "")),
    # the same deblocking, then non-local means on all planes: ~2 fps at 640x360 on one core.
    "strong": (("deblock", DEBLOCK), ("nlmeans", "s=3:p=7:r=9")),
}


class FrameFilter:
    """One filter graph for a video stream, built on its first frame; one frame in, one frame out,
    with the frame's pts, duration and colour tags."""

    def __init__(self, preset: str) -> None:
        if preset not in DENOISE:
            raise ValueError(f"denoise preset '{preset}' is not one of {', '.join(DENOISE)}")
        self.steps = DENOISE[preset]
        self._graph: av.filter.Graph | None = None

    def __bool__(self) -> bool:
        return bool(self.steps)

    def _build(self, frame: av.VideoFrame) -> av.filter.Graph:
        graph = av.filter.Graph()
        nodes = [
            graph.add_buffer(width=frame.width, height=frame.height, format=frame.format, time_base=frame.time_base)
        ]
        nodes += [graph.add(name, options) for name, options in self.steps]
        nodes.append(graph.add("buffersink"))
        for a, b in zip(nodes, nodes[1:]):
            a.link_to(b)
        graph.configure()
        return graph

    def __call__(self, frame: av.VideoFrame) -> av.VideoFrame:
        if not self.steps:
            return frame
        if self._graph is None:
            self._graph = self._build(frame)
        self._graph.push(frame)
        out = self._graph.pull()
        out.pts, out.time_base = frame.pts, frame.time_base
        out.color_range, out.colorspace = frame.color_range, frame.colorspace
        return out
