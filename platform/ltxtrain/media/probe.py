"""Cheap media inspection: what a file is, its size, rate, length and audio, from container metadata.

Decoding is avoided; only when a stream carries no frame count (mkv/webm) or no duration are packets counted
(demux only, no decode), which is still far cheaper than decoding.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import av

VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
AUDIO_EXTENSIONS = (".wav", ".mp3", ".flac", ".ogg", ".m4a", ".aac")
DATA_EXTENSIONS = (".json",)  # per-sample data files (audio-inpaint's `_mask.json`): not media, never probed


class MediaError(Exception):
    """A file that cannot be used as media (unreadable, corrupt, no video stream). The message names the file."""

    def __init__(self, path: str, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{os.path.basename(self.path)}: {reason}")


@dataclass(frozen=True)
class MediaInfo:
    path: str
    kind: str  # "video" | "image" | "audio" | "json"
    width: int
    height: int
    fps: float | None  # None for images
    num_frames: int  # 1 for images
    duration: float  # seconds; 0.0 for images
    has_audio: bool
    audio_sample_rate: int | None
    audio_channels: int | None


def is_image_path(path: str) -> bool:
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def probe(path: str) -> MediaInfo:
    path = str(path)
    if not os.path.isfile(path):
        raise MediaError(path, "file not found")
    if is_image_path(path):
        return _probe_image(path)
    lower = path.lower()
    if lower.endswith(DATA_EXTENSIONS):
        return MediaInfo(path, "json", 0, 0, None, 0, 0.0, False, None, None)
    if lower.endswith(AUDIO_EXTENSIONS):
        return _probe_audio(path)
    return _probe_video(path)


def _probe_audio(path: str) -> MediaInfo:
    """An audio-only file: its length from the stream (or container) metadata, decoded when neither has one."""
    with open_container(path, what="audio") as container:
        if not container.streams.audio:
            raise MediaError(path, "no audio stream")
        stream = container.streams.audio[0]
        sr, ch = stream.codec_context.sample_rate, stream.codec_context.channels
        duration = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else 0.0
        if duration <= 0 and container.duration:
            duration = container.duration / 1e6
        if duration <= 0:  # raw ADTS .aac and friends: count the decoded samples
            try:
                duration = sum(f.samples for f in container.decode(stream)) / float(sr or 1)
            except av.FFmpegError as e:
                raise MediaError(path, f"unreadable or corrupt audio ({e})") from e
        if duration <= 0 or not sr:
            raise MediaError(path, "audio stream has no samples (corrupt?)")
    return MediaInfo(path, "audio", 0, 0, None, 0, float(duration), True, sr, ch)


def _probe_image(path: str) -> MediaInfo:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()  # force a full decode: a truncated file only fails here
            w, h = im.size
            if im.getexif().get(0x0112) in (5, 6, 7, 8):  # EXIF orientation with a 90° turn
                w, h = h, w
    except Exception as e:  # PIL raises many kinds (UnidentifiedImageError, OSError, SyntaxError...)
        raise MediaError(path, f"unreadable image ({e})") from e
    return MediaInfo(path, "image", w, h, None, 1, 0.0, False, None, None)


def open_container(path: str, error: type = None, what: str = "media"):
    """av.open, with any failure turned into a MediaError (or `error`, a subclass) naming the file."""
    try:
        return av.open(path)
    except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise (error or MediaError)(path, f"unreadable or corrupt {what} ({e})") from e


def _probe_video(path: str) -> MediaInfo:
    with open_container(path) as container:
        if not container.streams.video:
            raise MediaError(path, "no video stream")
        vs = container.streams.video[0]
        width, height = vs.codec_context.width, vs.codec_context.height
        if not width or not height:
            raise MediaError(path, "video stream has no frame size (corrupt?)")
        rate = vs.average_rate or vs.guessed_rate or vs.base_rate
        fps = float(rate) if rate else None
        duration = _stream_duration(container, vs)
        num_frames = vs.frames or 0

        audio = container.streams.audio[0] if container.streams.audio else None
        sr = audio.codec_context.sample_rate if audio is not None else None
        ch = audio.codec_context.channels if audio is not None else None

        if num_frames <= 0 or duration <= 0:
            # Container lacks counts (mkv/webm) or duration: count packets instead of decoding.
            counted, span = _count_packets(container, vs)
            if counted == 0:
                raise MediaError(path, "video stream has no frames")
            num_frames = num_frames if num_frames > 0 else counted
            if duration <= 0:
                duration = span if span > 0 else (num_frames / fps if fps else 0.0)
        if fps is None and duration > 0:
            fps = num_frames / duration
        if fps is None or duration <= 0:
            raise MediaError(path, "cannot determine frame rate or duration")

    return MediaInfo(path, "video", width, height, fps, int(num_frames), float(duration),
                     audio is not None, sr or None, ch or None)


def _stream_duration(container, vs) -> float:
    if vs.duration and vs.time_base:
        return float(vs.duration * vs.time_base)
    if container.duration:  # microseconds; includes audio, a fair fallback
        return container.duration / 1e6
    return 0.0


def _count_packets(container, vs) -> tuple[int, float]:
    """(frames, seconds from first to last frame end) by demuxing the video stream only."""
    n, first, last_end = 0, None, 0.0
    tb = vs.time_base
    for pkt in container.demux(vs):
        if pkt.size == 0:  # flush packet
            continue
        n += 1
        if pkt.pts is not None and tb:
            t = float(pkt.pts * tb)
            first = t if first is None else min(first, t)
            last_end = max(last_end, t + float((pkt.duration or 0) * tb))
    span = last_end - first if first is not None else 0.0
    return n, span
