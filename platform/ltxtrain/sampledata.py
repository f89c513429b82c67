"""Deterministic synthetic media for tests, benchmarks and the README demo.

Clips show a coloured shape moving over a flat background. At each cut time every colour changes (background
chosen far from the previous one in HSV), so PySceneDetect's ContentDetector sees a hard cut. Captions are plain
English built from the same colour/shape names, so a caption matches what the first scene shows.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from typing import Iterable, Sequence

import numpy as np

COLORS = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 70, 220), "yellow": (240, 220, 40),
    "purple": (140, 50, 170), "orange": (245, 140, 30), "white": (240, 240, 240), "black": (15, 15, 15),
    "gray": (128, 128, 128), "cyan": (40, 200, 210), "pink": (240, 130, 180), "brown": (120, 70, 30),
}
SHAPES = ("square", "circle")
AUDIO_KINDS = {"stereo48k": (48000, 2), "mono44k": (44100, 1), "silent": (48000, 2)}
_FIXED_ZIP_DATE = (2020, 1, 1, 0, 0, 0)  # byte-identical zips for equal arguments


def _hsv_distance(a, b) -> float:
    """Mean |ΔH|,|ΔS|,|ΔV| on OpenCV's scales: the colour part of ContentDetector's score."""
    import colorsys

    ha, sa, va = colorsys.rgb_to_hsv(*(c / 255 for c in a))
    hb, sb, vb = colorsys.rgb_to_hsv(*(c / 255 for c in b))
    dh = abs(ha - hb)
    dh = min(dh, 1 - dh) * 180  # hue is circular; OpenCV uses 0..180
    return (dh + abs(sa - sb) * 255 + abs(va - vb) * 255) / 3


def scene_style(seed: int, scene: int) -> tuple[str, str, str]:
    """(shape, shape colour, background colour) of scene number `scene` of the clip with `seed`.

    Each scene's background is far (HSV) from the previous scene's so the cut is unmistakable.
    """
    names = sorted(COLORS)
    prev_bg = None
    for k in range(scene + 1):
        rng = np.random.default_rng([seed, k])
        pool = [n for n in names if prev_bg is None or _hsv_distance(COLORS[n], COLORS[prev_bg]) > 60]
        bg = pool[rng.integers(len(pool))]
        fg_pool = [n for n in names if _hsv_distance(COLORS[n], COLORS[bg]) > 60]
        fg = fg_pool[rng.integers(len(fg_pool))]
        shape = SHAPES[rng.integers(len(SHAPES))]
        prev_bg = bg
    return shape, fg, bg


def caption_for(seed: int) -> str:
    shape, fg, bg = scene_style(seed, 0)
    article = "an" if fg[0] in "aeiou" else "a"
    return f"{article} {fg} {shape} moving on a {bg} background"


def _render(t: float, scene: int, seed: int, width: int, height: int, grid) -> np.ndarray:
    shape, fg, bg = scene_style(seed, scene)
    img = np.empty((height, width, 3), np.uint8)
    img[:] = COLORS[bg]
    size = max(4, min(width, height) // 4)
    phase = np.random.default_rng([seed, scene, 7]).random()
    # Smooth motion: horizontal sweep (period 4 s) plus a vertical bob, so in-scene changes stay small.
    cx = (0.5 + 0.4 * np.sin(2 * np.pi * (t / 4.0 + phase))) * width
    cy = (0.5 + 0.25 * np.cos(2 * np.pi * (t / 3.0 + phase))) * height
    if shape == "square":
        x0, y0 = int(cx - size / 2), int(cy - size / 2)
        img[max(0, y0):max(0, y0 + size), max(0, x0):max(0, x0 + size)] = COLORS[fg]
    else:
        yy, xx = grid
        img[(xx - cx) ** 2 + (yy - cy) ** 2 <= (size / 2) ** 2] = COLORS[fg]
    return img


def write_frames(path, frames: Iterable[np.ndarray], fps: float, audio: str | None = None,
                 seconds: float | None = None) -> None:
    """Encode RGB uint8 [H, W, 3] frames to an mp4 (H.264 if available). `audio` as in write_video: a track of
    `seconds` (default: as long as the video)."""
    from .media.mp4 import write_mp4

    wave, rate = None, None
    if audio:
        if seconds is None:
            frames = list(frames)  # the track's length needs the frame count
            seconds = len(frames) / fps
        wave, rate = _tone(audio, seconds)
    write_mp4(path, frames, fps, wave, rate)


def _tone(kind: str, seconds: float) -> tuple[np.ndarray, int]:
    """`kind`'s track: a 440 Hz tone (or silence), float32 [channels, samples], and its rate."""
    if kind not in AUDIO_KINDS:
        raise ValueError(f"audio must be one of {sorted(AUDIO_KINDS)} or None, got {kind!r}")
    sr, ch = AUDIO_KINDS[kind]
    idx = np.arange(int(round(seconds * sr)))
    tone = np.zeros(len(idx)) if kind == "silent" else 0.2 * np.sin(2 * np.pi * 440.0 * idx / sr)
    return np.tile(tone.astype(np.float32), (ch, 1)), sr


def write_video(path, seconds: float, fps: float, width: int, height: int, seed: int = 0,
                cuts: Sequence[float] = (), audio: str | None = None) -> None:
    n = int(round(seconds * fps))
    cuts = sorted(cuts)
    grid = np.mgrid[0:height, 0:width]

    def frames():
        for i in range(n):
            t = i / fps
            scene = sum(1 for c in cuts if t >= c)
            yield _render(t, scene, seed, width, height, grid)

    write_frames(path, frames(), fps, audio=audio, seconds=min(n / fps, seconds))  # the track ends with the video


def write_image(path, width: int, height: int, seed: int = 0) -> None:
    from PIL import Image

    img = _render(0.7, 0, seed, width, height, np.mgrid[0:height, 0:width])
    Image.fromarray(img).save(str(path))


def make_dataset_zip(zip_path, kind: str = "video", n: int = 4, seconds: float = 4.0, fps: float = 25,
                     width: int = 320, height: int = 240, captions: bool = True, seed: int = 0,
                     audio: str | None = None) -> str:
    if kind not in ("video", "image"):
        raise ValueError(f"kind must be 'video' or 'image', got {kind!r}")
    zip_path = str(zip_path)
    os.makedirs(os.path.dirname(os.path.abspath(zip_path)), exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(n):
            stem = f"clip_{i:03d}" if kind == "video" else f"img_{i:03d}"
            media = os.path.join(tmp, stem + (".mp4" if kind == "video" else ".png"))
            if kind == "video":
                write_video(media, seconds, fps, width, height, seed=seed + i, audio=audio)
            else:
                write_image(media, width, height, seed=seed + i)
            entries = [(os.path.basename(media), open(media, "rb").read())]
            if captions:
                entries.append((stem + ".txt", caption_for(seed + i).encode()))
            for name, data in entries:
                # Media is already compressed; deflating it again only costs time.
                ctype = zipfile.ZIP_DEFLATED if name.endswith(".txt") else zipfile.ZIP_STORED
                zf.writestr(zipfile.ZipInfo(name, _FIXED_ZIP_DATE), data, compress_type=ctype)
    return zip_path
