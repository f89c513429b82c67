"""The validation reel: every preview taken during training in one labelled mp4, written with PyAV.

Layout of a reel frame (canvas = the largest preview, both sides rounded up to even for yuv420p):

    +--------------------------------------+
    | step 200 — a red car on a road ...   |  label band (label_height px, black, white text)
    +--------------------------------------+
    |        [reference | gap | preview]   |  picture area: the preview (with its IC-LoRA reference on the
    |                                      |  left, resized to the preview height) centred on black
    +--------------------------------------+

Previews are ordered by step, then by prompt index (the order in which each prompt first appears in the list), so
the same prompt sits at the same place in every step's group. All frames play at the first preview's fps; a preview
keeps its frame count. Audio: one AAC stereo track at one rate, each preview's sound starting at its segment's first
frame and cut at its end, silence where a preview has none.

`write_clip` (a plain mp4 of frames + optional audio) is shared with the debug archive.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

import av
import numpy as np

from ..media.mp4 import Mp4Writer as _Mp4Writer, remove_if_present as _remove, tmp_path as _tmp_path
from ..media.mp4 import write_mp4

# AAC (ffmpeg's native encoder) accepts only the MPEG-4 audio sample rates; anything else is resampled to 48 kHz.
AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
_FALLBACK_AUDIO_RATE = 48000
_REF_GAP = 4  # px of background between an IC-LoRA reference and its preview
_LABEL_BG = (0, 0, 0)
_LABEL_FG = (255, 255, 255)
_PICTURE_BG = (0, 0, 0)


@dataclass
class Preview:
    step: int
    prompt: str
    frames: np.ndarray  # uint8 [F, H, W, 3]
    fps: float
    audio: np.ndarray | None = None  # float32 [2, N] in [-1, 1]
    audio_rate: int | None = None
    reference: np.ndarray | None = None  # uint8 [Fr, Hr, Wr, 3], shown beside (left of) the preview


# ---------------------------------------------------------------------------------------------------------------------
# mp4 writing
# ---------------------------------------------------------------------------------------------------------------------
def _even(n: int) -> int:
    return n + (n & 1)


def _check_frames(frames, what: str) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise ValueError(f"{what}: expected uint8 [F, H, W, 3] with F >= 1, got shape {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"{what}: expected uint8 frames, got {frames.dtype}")
    return frames


def _stereo(audio, what: str) -> np.ndarray:
    """[N], [1, N], [2, N] or [C, N] -> float32 [2, N] clipped to [-1, 1] (mono duplicated, extra channels dropped)."""
    a = np.asarray(audio, dtype=np.float32)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2 or a.shape[0] < 1:
        raise ValueError(f"{what}: expected audio [channels, samples], got shape {a.shape}")
    if a.shape[0] == 1:
        a = np.repeat(a, 2, axis=0)
    a = a[:2]
    a = np.nan_to_num(a, nan=0.0, posinf=1.0, neginf=-1.0)
    return np.clip(a, -1.0, 1.0)


def resample_audio(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    """float [C, N] at `rate` -> [C, round(N * target / rate)] (polyphase, anti-aliased)."""
    if rate == target or audio.shape[-1] == 0:
        return audio
    from scipy.signal import resample_poly

    g = math.gcd(int(rate), int(target))
    out = resample_poly(audio, int(target) // g, int(rate) // g, axis=-1).astype(np.float32)
    n = int(round(audio.shape[-1] * target / rate))
    if out.shape[-1] < n:
        out = np.pad(out, ((0, 0), (0, n - out.shape[-1])))
    return np.clip(out[:, :n], -1.0, 1.0)


def aac_rate(rate: int) -> int:
    return int(rate) if int(rate) in AAC_RATES else _FALLBACK_AUDIO_RATE


def write_clip(path: str, frames, fps: float, audio: np.ndarray | None = None, audio_rate: int | None = None,
               crf: int = 18) -> dict:
    """Frames (uint8 [F, H, W, 3] array or iterable of [H, W, 3]) + optional audio [C, N] -> mp4, written atomically.

    Odd sizes are padded (edge pixels repeated) to even. The whole audio is written, starting with frame 0; a rate AAC
    does not take is resampled to 48 kHz. Returns {"frames", "width", "height", "fps", "audio_rate", "audio_samples"}.
    """
    it = iter(frames)
    first = next(it, None)
    if first is None:
        raise ValueError("write_clip: no frames")
    first = np.asarray(first)
    if first.ndim != 3 or first.shape[-1] != 3 or first.dtype != np.uint8:
        raise ValueError(f"write_clip: frames must be uint8 [H, W, 3], got {first.dtype} {first.shape}")
    h, w = first.shape[:2]
    eh, ew = _even(h), _even(w)

    wave, rate = None, None
    if audio is not None:
        if not audio_rate:
            raise ValueError("write_clip: audio given without audio_rate")
        wave = _stereo(audio, "write_clip")
        rate = aac_rate(audio_rate)
        wave = resample_audio(wave, int(audio_rate), rate)

    def pad(img):
        img = np.asarray(img)
        if img.shape != first.shape or img.dtype != np.uint8:
            raise ValueError(f"write_clip: frame of shape {img.shape} {img.dtype}, expected {first.shape} uint8")
        if (eh, ew) != (h, w):
            img = np.pad(img, ((0, eh - h), (0, ew - w), (0, 0)), mode="edge")
        return img

    return write_mp4(path, (pad(img) for img in itertools.chain([first], it)), fps, wave, rate, crf=crf)


# ---------------------------------------------------------------------------------------------------------------------
# labels
# ---------------------------------------------------------------------------------------------------------------------
_REPLACEMENTS = {"—": "-", "–": "-", "‒": "-", "―": "-", "−": "-", "…": "...", "‘": "'", "’": "'", "‚": ",",
                 "“": '"', "”": '"', "„": '"', "«": '"', "»": '"', "\u00a0": " "}


@lru_cache(maxsize=8)
def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # FreeType build: a scalable font
    except TypeError:  # pragma: no cover - old Pillow / no FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _glyph_key(font, ch: str):
    m = font.getmask(ch)
    return m.size, bytes(m[i] for i in range(m.size[0] * m.size[1]))


@lru_cache(maxsize=4096)
def _has_glyph(size: int, ch: str) -> bool:
    """False where the default font would draw a 'missing glyph' box (or cannot encode the character at all)."""
    font = _font(size)
    try:
        key = _glyph_key(font, ch)
    except Exception:  # noqa: BLE001 - the bitmap font raises for characters outside latin-1
        return False
    try:
        return key != _glyph_key(font, "\ue000")  # a private-use code point: certainly not in the font
    except Exception:  # noqa: BLE001
        return True


def _printable(text: str, size: int) -> str:
    """The text with every character the font lacks replaced by a look-alike (é -> e, — -> -) or '?'."""
    text = re.sub(r"\s+", " ", str(text)).strip()
    out = []
    for ch in text:
        if ch == " " or _has_glyph(size, ch):
            out.append(ch)
            continue
        rep = _REPLACEMENTS.get(ch)
        if rep is None:
            base = "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))
            rep = base if base and base != ch else "?"
        out.append("".join(c if c == " " or _has_glyph(size, c) else "?" for c in rep))
    return "".join(out)


def label_text(step: int, prompt: str) -> str:
    return f"step {step} — {prompt}"


def _render_label(text: str, width: int, height: int) -> np.ndarray:
    """uint8 [height, width, 3]: the text, truncated with '...' to fit, on the label background."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height), _LABEL_BG)
    if height <= 0 or width <= 0:
        return np.asarray(img)
    draw = ImageDraw.Draw(img)
    pad = max(2, height // 5)
    room = width - 2 * pad
    # Shrink the font (down to ~0.35 of the band, 9 px at least) before truncating a long label.
    size = max(8, min(24, int(height * 0.5)))
    smallest = min(size, max(9, int(height * 0.35)))
    while True:
        font = _font(size)
        printable = _printable(text, size)
        if size <= smallest or draw.textlength(printable, font=font) <= room:
            break
        size -= 1
    text = printable
    if draw.textlength(text, font=font) > room:
        ell = "..."
        lo, hi = 0, len(text)
        while lo < hi:  # longest prefix that fits with the ellipsis
            mid = (lo + hi + 1) // 2
            if draw.textlength(text[:mid].rstrip() + ell, font=font) <= room:
                lo = mid
            else:
                hi = mid - 1
        text = text[:lo].rstrip() + ell
    # Centre on the font's ascent+descent box so every label sits on the same baseline.
    top, bottom = font.getbbox("Ag")[1], font.getbbox("Ag")[3]
    y = (height - (bottom - top)) // 2 - top
    draw.text((pad, y), text, font=font, fill=_LABEL_FG)
    return np.asarray(img)


# ---------------------------------------------------------------------------------------------------------------------
# the reel
# ---------------------------------------------------------------------------------------------------------------------
def _ordered(previews: list[Preview]) -> list[Preview]:
    prompt_index: dict[str, int] = {}
    for p in previews:
        prompt_index.setdefault(p.prompt, len(prompt_index))
    order = sorted(range(len(previews)), key=lambda i: (int(previews[i].step), prompt_index[previews[i].prompt], i))
    return [previews[i] for i in order]


def _resize(img: np.ndarray, w: int, h: int) -> np.ndarray:
    import cv2

    if img.shape[1] == w and img.shape[0] == h:
        return img
    shrink = w < img.shape[1] or h < img.shape[0]
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


class _Segment:
    """One preview laid out on the canvas: its size, label, and a frame composer."""

    def __init__(self, p: Preview, idx: int):
        self.p = p
        self.frames = _check_frames(p.frames, f"preview {idx} (step {p.step})")
        self.n, self.h, self.w = self.frames.shape[:3]
        self.ref = None
        self.content_w = self.w
        if p.reference is not None:
            ref = _check_frames(p.reference, f"preview {idx} (step {p.step}) reference")
            rh, rw = ref.shape[1:3]
            ref_w = max(1, int(round(rw * self.h / rh)))
            self.ref = np.stack([_resize(f, ref_w, self.h) for f in ref])
            self.content_w = ref_w + _REF_GAP + self.w

    def ref_index(self, i: int) -> int:
        # Stretch (or sample) the reference's Fr frames over the preview's F frames; the last one is held.
        fr = self.ref.shape[0]
        return min(fr - 1, (i * fr) // self.n)

    def compose(self, canvas: np.ndarray, label_h: int, i: int) -> None:
        ch, cw = canvas.shape[0] - label_h, canvas.shape[1]
        y0 = label_h + (ch - self.h) // 2
        x0 = (cw - self.content_w) // 2
        if self.ref is not None:
            r = self.ref[self.ref_index(i)]
            canvas[y0:y0 + self.h, x0:x0 + r.shape[1]] = r
            x0 += r.shape[1] + _REF_GAP
        canvas[y0:y0 + self.h, x0:x0 + self.w] = self.frames[i]


def write_reel(path: str, previews: list[Preview], label_height: int = 32) -> dict:
    """All previews in one labelled H.264 mp4 (+ AAC when any preview has audio); see the module docstring.

    Written to a temporary file and renamed. Returns {"frames", "width", "height", "fps", "segments": [{"step",
    "prompt", "start_frame", "num_frames"}], "has_audio", "audio_rate"}.
    """
    if not previews:
        raise ValueError("write_reel: no previews")
    if label_height < 0:
        raise ValueError(f"label_height must be >= 0, got {label_height}")
    previews = _ordered(list(previews))
    segs = [_Segment(p, i) for i, p in enumerate(previews)]
    fps = float(previews[0].fps)
    if not fps or fps <= 0:
        raise ValueError(f"write_reel: the first preview's fps must be positive, got {previews[0].fps}")
    width = _even(max(s.content_w for s in segs))
    height = _even(label_height + max(s.h for s in segs))

    with_audio = [p for p in previews if p.audio is not None]
    for p in with_audio:
        if not p.audio_rate or p.audio_rate <= 0:
            raise ValueError(f"preview at step {p.step} has audio but no audio_rate")
    rate = aac_rate(int(with_audio[0].audio_rate)) if with_audio else None

    summary_segments, start = [], 0
    for s in segs:
        summary_segments.append({"step": int(s.p.step), "prompt": s.p.prompt, "start_frame": start,
                                 "num_frames": s.n})
        start += s.n
    total = start

    tmp = _tmp_path(path)
    writer = _Mp4Writer(tmp, width, height, fps, rate, crf=18)
    try:
        done = 0
        for s in segs:
            canvas = np.empty((height, width, 3), np.uint8)
            canvas[:label_height] = _render_label(label_text(s.p.step, s.p.prompt), width, label_height)
            canvas[label_height:] = _PICTURE_BG
            wave = None
            if rate is not None:
                # This segment's share of the track: samples [a0, a1) of the reel's timeline.
                a0 = int(round(done * rate / fps))
                a1 = int(round((done + s.n) * rate / fps))
                wave = np.zeros((2, a1 - a0), np.float32)
                if s.p.audio is not None:
                    src = resample_audio(_stereo(s.p.audio, f"preview at step {s.p.step}"), int(s.p.audio_rate),
                                         rate)
                    k = min(src.shape[-1], a1 - a0)
                    wave[:, :k] = src[:, :k]
            for i in range(s.n):
                s.compose(canvas, label_height, i)
                writer.video(canvas)
                done += 1
                if wave is not None:  # the track up to the end of this frame (reel timeline)
                    upto = int(round(done * rate / fps))
                    writer.audio(wave[:, writer.samples - a0:upto - a0])
        writer.close()
        os.replace(tmp, path)
    except BaseException:
        writer.abort()
        _remove(tmp)
        raise
    return {"frames": total, "width": width, "height": height, "fps": fps, "segments": summary_segments,
            "has_audio": rate is not None, "audio_rate": rate}


# ---------------------------------------------------------------------------------------------------------------------
# reading (tests, checks)
# ---------------------------------------------------------------------------------------------------------------------
def read_reel(path) -> dict:
    """Decode an mp4 -> {"frames": uint8 [N, H, W, 3], "fps", "audio": float32 [C, M] | None, "audio_rate"}.

    Audio samples are placed by their timestamps (0 = the video's first frame), so encoder priming trimmed by the
    container's edit list does not shift the track.
    """
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        fps = float(vs.average_rate or vs.guessed_rate or 0)
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(vs)]
    audio, rate = None, None
    with av.open(str(path)) as c:
        if c.streams.audio:
            ast = c.streams.audio[0]
            rate = int(ast.rate or ast.sample_rate)
            chunks, pos = [], 0
            for f in c.decode(ast):
                a = f.to_ndarray()
                if f.format.is_packed:
                    a = a.reshape(-1, f.layout.nb_channels).T
                if a.dtype.kind in "iu":
                    a = a.astype(np.float32) / float(np.iinfo(a.dtype).max)
                a = a.astype(np.float32)
                if f.pts is not None and f.time_base is not None:
                    at = int(round(float(f.pts * f.time_base) * rate))
                    if at < pos:  # overlaps what we have (negative start): drop the overlap
                        a = a[:, pos - at:]
                    elif at > pos:  # a gap: silence
                        chunks.append(np.zeros((a.shape[0], at - pos), np.float32))
                        pos = at
                chunks.append(a)
                pos += a.shape[-1]
            audio = np.concatenate(chunks, axis=1) if chunks else np.zeros((2, 0), np.float32)
            if ast.duration and ast.time_base:  # drop the encoder's padding after the last real sample
                audio = audio[:, :int(round(float(ast.duration * ast.time_base) * rate))]
    return {"frames": np.stack(frames) if frames else np.zeros((0, 0, 0, 3), np.uint8), "fps": fps,
            "audio": audio, "audio_rate": rate}


# ---------------------------------------------------------------------------------------------------------------------
# audio-output products: an audio reel, its labels and a spectrogram per preview
# ---------------------------------------------------------------------------------------------------------------------
AUDIO_REEL_GAP = 0.5  # seconds of silence between two previews


def write_audio_reel(path: str, previews: list[Preview], gap: float = AUDIO_REEL_GAP) -> dict:
    """The previews' sound joined with `gap` s of silence into one 16-bit stereo .wav at the first preview's rate
    (others resampled), plus `<path minus .wav>.json`: {"audio_rate", "segments": [{"step", "prompt", "start",
    "end", "spectrogram"}]} (seconds), and one spectrogram PNG per preview beside it. Written via temporary files.
    Returns the sidecar's content."""
    import json
    import wave

    previews = [p for p in _ordered(list(previews)) if p.audio is not None]
    if not previews:
        raise ValueError("write_audio_reel: no preview has audio")
    rate = int(previews[0].audio_rate or _FALLBACK_AUDIO_RATE)
    base = os.path.splitext(path)[0]
    silence = np.zeros((2, int(round(gap * rate))), np.float32)
    parts, segments, t = [], [], 0.0
    for i, p in enumerate(previews):
        a = resample_audio(_stereo(p.audio, f"preview {i}"), int(p.audio_rate or rate), rate)
        if i:
            parts.append(silence)
            t += silence.shape[1] / rate
        png = f"{base}_{i:02d}_spectrogram.png"
        write_spectrogram(png, a, rate, title=label_text(p.step, p.prompt))
        segments.append({"step": p.step, "prompt": p.prompt, "start": round(t, 4),
                         "end": round(t + a.shape[1] / rate, 4), "spectrogram": os.path.basename(png)})
        parts.append(a)
        t += a.shape[1] / rate
    pcm = (np.concatenate(parts, 1).T * 32767.0).round().astype("<i2")
    tmp = _tmp_path(path)
    try:
        with wave.open(tmp, "wb") as w:
            w.setnchannels(2), w.setsampwidth(2), w.setframerate(rate)
            w.writeframes(pcm.tobytes())
        os.replace(tmp, path)
    finally:
        _remove(tmp)
    sidecar = {"audio_rate": rate, "gap_seconds": gap, "segments": segments}
    with open(base + ".json", "w", encoding="utf-8") as fh:
        json.dump(sidecar, fh, indent=1)
    return sidecar


def spectrogram(wave, rate: int, n_fft: int = 1024, hop: int = 256) -> np.ndarray:
    """float32 [freq bins, frames] in dB (mono mix, Hann window), relative to the loudest bin."""
    from scipy.signal import stft

    mono = np.asarray(wave, np.float32).reshape(-1, np.asarray(wave).shape[-1]).mean(0)
    n_fft = max(16, min(n_fft, mono.shape[0]))
    _, _, z = stft(mono, fs=rate, nperseg=n_fft, noverlap=n_fft - min(hop, n_fft // 2), window="hann")
    mag = np.abs(z)
    return (20 * np.log10(np.maximum(mag, 1e-8) / max(float(mag.max()), 1e-8))).astype(np.float32)


def write_spectrogram(path: str, wave, rate: int, title: str = "", floor_db: float = -80.0) -> None:
    """A PNG of the sound: time left to right, frequency (0 .. rate/2) bottom to top, -80 .. 0 dB as dark to
    bright, with `title` as a label strip on top."""
    from PIL import Image

    Image.fromarray(spectrogram_image(wave, rate, title, floor_db)).save(path)


def spectrogram_image(wave, rate: int, title: str = "", floor_db: float = -80.0) -> np.ndarray:
    """uint8 [H, W, 3] (even sizes) of `write_spectrogram`'s picture."""
    db = np.clip(spectrogram(wave, rate), floor_db, 0.0)
    img = ((db - floor_db) / -floor_db * 255).round().astype(np.uint8)[::-1]  # low frequencies at the bottom
    rgb = np.stack([img, (img.astype(np.float32) * 0.6).astype(np.uint8), 255 - img], -1)  # bright = loud
    h, w = _even(max(128, rgb.shape[0] // 2)), _even(max(256, min(1024, rgb.shape[1] * 2)))
    rgb = _resize(rgb, w, h)
    if title:
        rgb = np.concatenate([_render_label(title, w, 24), rgb], 0)
    return rgb
