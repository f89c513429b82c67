"""The one mp4 writer: H.264 yuv420p video (MPEG-4 part 2 where this PyAV lacks libx264) + optional AAC, with PyAV.

`write_mp4` writes a whole clip (to a temp name beside the target, then renamed, so a reader never sees a partial
file; or into a binary file object); `Mp4Writer` streams frames and audio for callers that compose frames as they go
(the validation reel). Audio is fed in step with the video so the muxer interleaves cheaply. Sizes must be even
(yuv420p) and the audio rate one AAC accepts: padding and resampling are the caller's choice.
"""

from __future__ import annotations

import os
from fractions import Fraction
from typing import BinaryIO, Iterable

import av
import numpy as np

_MPEG4_BIT_RATE = 4_000_000  # the fallback codec has no CRF
_AAC_BIT_RATE = 192_000
_LAYOUTS = {1: "mono", 2: "stereo"}


class Mp4Writer:
    """Frames (uint8 [H, W, 3]) and audio (float32 [C, n] in [-1, 1], C = 1 or 2) appended in order; `close` flushes
    the encoders, `abort` closes without flushing (the caller removes the partial file)."""

    def __init__(self, target: str | os.PathLike | BinaryIO, width: int, height: int, fps: float,
                 audio_rate: int | None = None, crf: int = 18, audio_channels: int = 2):
        if width % 2 or height % 2:
            raise ValueError(f"video size must be even for yuv420p, got {width}x{height}")
        if not fps or fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        if audio_rate and audio_channels not in _LAYOUTS:
            raise ValueError(f"audio must have 1 or 2 channels, got {audio_channels}")
        self.width, self.height = width, height
        self.out = av.open(target if hasattr(target, "write") else os.fspath(target), "w", format="mp4")
        try:
            codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
            vs = self.out.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
            vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
            if codec == "libx264":
                vs.options = {"preset": "veryfast", "crf": str(crf)}
            else:
                vs.bit_rate = _MPEG4_BIT_RATE
            self.vs, self.frames = vs, 0
            self.audio_rate, self.samples, self.as_, self.layout = audio_rate, 0, None, None
            if audio_rate:
                self.layout = _LAYOUTS[audio_channels]
                self.as_ = self.out.add_stream("aac", rate=int(audio_rate), layout=self.layout)
                self.as_.bit_rate = _AAC_BIT_RATE
        except BaseException:
            self.out.close()
            raise

    def video(self, img: np.ndarray) -> None:
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
        frame.pts = self.frames
        for pkt in self.vs.encode(frame):
            self.out.mux(pkt)
        self.frames += 1

    def audio(self, data: np.ndarray) -> None:
        """float32 [C, n] appended to the track."""
        if self.as_ is None or data.shape[-1] == 0:
            return
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data, dtype=np.float32), format="fltp",
                                           layout=self.layout)
        frame.sample_rate, frame.pts = int(self.audio_rate), self.samples
        frame.time_base = Fraction(1, int(self.audio_rate))
        for pkt in self.as_.encode(frame):  # the encoder re-chunks to its frame size
            self.out.mux(pkt)
        self.samples += data.shape[-1]

    def close(self) -> None:
        try:
            for pkt in self.vs.encode():
                self.out.mux(pkt)
            if self.as_ is not None:
                for pkt in self.as_.encode():
                    self.out.mux(pkt)
        finally:
            self.out.close()

    def abort(self) -> None:
        try:
            self.out.close()
        except Exception:  # noqa: BLE001 - already failing; the partial file is removed by the caller
            pass


def tmp_path(path: str | os.PathLike) -> str:
    """A hidden name beside `path` for writing it before the rename."""
    d, name = os.path.split(os.path.abspath(path))
    root, ext = os.path.splitext(name)
    return os.path.join(d, f".{root}.{os.getpid()}.tmp{ext}")  # keep the extension: tools sniff the type by it


def write_mp4(target: str | os.PathLike | BinaryIO, frames: Iterable[np.ndarray], fps: float,
              audio: np.ndarray | None = None, audio_rate: int | None = None, crf: int = 18) -> dict:
    """Frames (uint8 [F, H, W, 3] array or iterable of [H, W, 3], even sizes) + optional audio (float [C, N] in
    [-1, 1], C = 1 or 2, all of it written from frame 0 on) -> an mp4 at `target`: a path (temp name, then renamed)
    or a binary file object. Returns {"frames", "width", "height", "fps", "audio_rate", "audio_samples"}."""
    it = iter(frames)
    first = next(it, None)
    if first is None:
        raise ValueError("write_mp4: no frames")
    first = np.asarray(first)
    if first.ndim != 3 or first.shape[-1] != 3 or first.dtype != np.uint8:
        raise ValueError(f"write_mp4: frames must be uint8 [H, W, 3], got {first.dtype} {first.shape}")
    h, w = first.shape[:2]
    wave = None
    if audio is not None:
        if not audio_rate:
            raise ValueError("write_mp4: audio given without audio_rate")
        wave = np.asarray(audio, dtype=np.float32)
        if wave.ndim != 2:
            raise ValueError(f"write_mp4: audio must be [channels, samples], got {wave.shape}")

    to_file = not hasattr(target, "write")
    dest = tmp_path(target) if to_file else target
    writer = Mp4Writer(dest, w, h, fps, audio_rate if wave is not None else None, crf=crf,
                       audio_channels=1 if wave is None else wave.shape[0])
    try:
        n = 0
        for img in _chain(first, it):
            img = np.asarray(img)
            if img.shape != first.shape or img.dtype != np.uint8:
                raise ValueError(f"write_mp4: frame of shape {img.shape} {img.dtype}, expected {first.shape} uint8")
            writer.video(img)
            n += 1
            if wave is not None:  # the track up to the end of this frame
                writer.audio(wave[:, writer.samples:min(wave.shape[-1], int(round(n * audio_rate / fps)))])
        if wave is not None:
            writer.audio(wave[:, writer.samples:])
        writer.close()
        if to_file:
            os.replace(dest, target)
    except BaseException:
        writer.abort()
        if to_file:
            remove_if_present(dest)
        raise
    return {"frames": n, "width": w, "height": h, "fps": float(fps), "audio_rate": None if wave is None else
            int(audio_rate), "audio_samples": 0 if wave is None else int(wave.shape[-1])}


def _chain(first, rest):
    yield first
    yield from rest


def remove_if_present(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
