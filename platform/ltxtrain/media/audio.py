"""Audio that belongs to a fitted clip: decode, downmix to stereo, resample, time-fit, normalise, log-mel.

Times are seconds on the same *source timeline* as ``fit.py``: 0 is the video stream's start (the audio stream's
own start for a file without video), so ``load_audio(path, t0, t1, sr)`` is the sound heard while the frames at
``t0 .. t1`` are on screen. Samples are placed by their decoded timestamps, so an audio stream that starts late
or has gaps gets silence there instead of shifting out of sync.

librosa is imported lazily: workers that only decode video never pay for it.
"""

from __future__ import annotations

import math
import os
import warnings

import av
import numpy as np

from .fit import FitSpec, TimeWindow
from .probe import MediaError, open_container, probe

_MARGIN = 0.05  # seconds decoded either side of the span, so the resampler's edges fall outside it
_SEEK_PREROLL = 0.5  # seek this far before the span: AAC and friends need the previous frame to decode cleanly
_STRETCH_TOLERANCE = 0.002  # seconds: length differences up to this are trimmed/padded, never phase-vocoded
_MIN_STRETCH_SAMPLES = 64  # below this a phase vocoder has nothing to work with

_SQRT_HALF = math.sqrt(0.5)  # -3 dB
# Standard (ITU-R BS.775 style) 5.1 / 7.1 -> stereo coefficients, (to left, to right); LFE is dropped.
_DOWNMIX = {
    "FL": (1.0, 0.0), "FR": (0.0, 1.0), "FC": (_SQRT_HALF, _SQRT_HALF), "LFE": (0.0, 0.0),
    "BL": (_SQRT_HALF, 0.0), "BR": (0.0, _SQRT_HALF), "SL": (_SQRT_HALF, 0.0), "SR": (0.0, _SQRT_HALF),
    "FLC": (1.0, 0.0), "FRC": (0.0, 1.0), "BC": (0.5, 0.5), "LFE2": (0.0, 0.0),
}


class AudioMissing(Exception):
    """The file has no audio stream. The message names the file."""

    def __init__(self, path: str):
        self.path = str(path)
        super().__init__(f"{os.path.basename(self.path)}: no audio stream")


# ---------------------------------------------------------------------------------------------------------------------
# decoding
# ---------------------------------------------------------------------------------------------------------------------
def _origin(stream) -> float:
    return float(stream.start_time * stream.time_base) if stream.start_time is not None and stream.time_base else 0.0


def _channel_names(frame) -> list[str]:
    return [c.name for c in frame.layout.channels]


def _to_float(frame) -> np.ndarray:
    """Any PyAV sample format -> float32 [channels, samples] in [-1, 1]."""
    arr = frame.to_ndarray()
    channels = frame.layout.nb_channels
    fmt = frame.format
    if not fmt.is_planar:
        arr = arr.reshape(-1, channels).T  # packed: one row of interleaved samples
    name = fmt.name.rstrip("p")
    if name == "u8":
        return (arr.astype(np.float32) - 128.0) / 128.0
    if name in ("s16", "s32", "s64"):
        return (arr.astype(np.float64) / float(2 ** (int(name[1:]) - 1))).astype(np.float32)
    return arr.astype(np.float32, copy=False)


def _downmix_matrix(names: list[str]) -> np.ndarray:
    """[2, C] matrix taking the decoded channels to stereo.

    mono -> duplicated; stereo -> as is; 5.1 / 7.1 -> standard downmix, each output row normalised so its
    coefficients sum to 1 (a full-scale signal on every channel cannot clip); anything else -> mean into both.
    """
    c = len(names)
    if c == 1:
        return np.ones((2, 1), np.float32)
    if c == 2:
        return np.eye(2, dtype=np.float32)
    if c in (6, 8) and {"FL", "FR", "FC"} <= set(names) and all(n in _DOWNMIX for n in names):
        m = np.array([_DOWNMIX[n] for n in names], np.float64).T  # [2, C]
        return (m / m.sum(axis=1, keepdims=True)).astype(np.float32)
    return np.full((2, c), 1.0 / c, np.float32)


def load_audio(path, start: float, end: float, sample_rate: int) -> np.ndarray:
    """float32 [2, round((end - start) * sample_rate)]: the audio of [start, end) on the source timeline.

    Mono is duplicated, 5.1/7.1 downmixed, other multi-channel layouts averaged; resampled with soxr (librosa).
    Where the stream has no samples (ends early, starts late, gaps) the result is silence.
    Raises AudioMissing for a file without an audio stream, MediaError for an unreadable one.
    """
    path = str(path)
    if not end >= start:
        raise ValueError(f"end ({end}) must not be before start ({start})")
    n_out = int(round((end - start) * sample_rate))
    with open_container(path) as container:
        if not container.streams.audio:
            raise AudioMissing(path)
        stream = container.streams.audio[0]
        origin = _origin(container.streams.video[0]) if container.streams.video else _origin(stream)
        src_rate = stream.codec_context.sample_rate or stream.rate
        if not src_rate:
            raise MediaError(path, "audio stream has no sample rate")
        lo, hi = start - _MARGIN, end + _MARGIN
        first = int(math.floor(lo * src_rate))  # timeline sample index of buf[:, 0]
        buf = np.zeros((2, int(math.ceil(hi * src_rate)) - first), np.float32)
        if lo - _SEEK_PREROLL > 1.0 and stream.time_base:
            container.seek(int((lo - _SEEK_PREROLL + origin) / stream.time_base), stream=stream, backward=True)
        mix, mix_key, pos = None, None, None
        try:
            for frame in container.decode(stream):
                if frame.sample_rate != src_rate:
                    raise MediaError(path, f"audio sample rate changes mid-stream ({src_rate} -> "
                                           f"{frame.sample_rate} Hz)")
                if frame.time is not None:
                    pos = int(round((frame.time - origin) * src_rate))
                elif pos is None:
                    pos = 0
                off = pos - first
                pos += frame.samples
                if off >= buf.shape[1]:
                    break  # past the span
                if off + frame.samples <= 0:
                    continue  # before the span
                names = _channel_names(frame)
                if names != mix_key:
                    mix, mix_key = _downmix_matrix(names), names
                data = _to_float(frame)
                a, b = max(0, off), min(buf.shape[1], off + frame.samples)
                buf[:, a:b] = mix @ data[:, a - off:b - off]
        except av.FFmpegError as e:
            raise MediaError(path, f"audio decoding failed ({e})") from e

    if src_rate != sample_rate:
        import librosa

        buf = librosa.resample(buf, orig_sr=src_rate, target_sr=sample_rate, res_type="soxr_hq", axis=-1)
    k0 = int(round((start - first / src_rate) * sample_rate))  # where `start` falls in buf
    return _exact_length(buf[:, k0:k0 + n_out], n_out)


# ---------------------------------------------------------------------------------------------------------------------
# level and duration
# ---------------------------------------------------------------------------------------------------------------------
def normalize_peak(wave, target: float = 0.999, silence_floor: float = 1e-3) -> np.ndarray:
    """Scale so the absolute peak (over all channels) is `target`. Below `silence_floor` it is returned unchanged:
    silence and near-silence are not amplified into noise."""
    wave = np.asarray(wave, np.float32)
    peak = float(np.max(np.abs(wave))) if wave.size else 0.0
    if not np.isfinite(peak) or peak < silence_floor:
        return wave.copy()
    return (wave * np.float32(target / peak)).astype(np.float32)


def _exact_length(wave: np.ndarray, n: int) -> np.ndarray:
    if wave.shape[-1] >= n:
        return np.ascontiguousarray(wave[..., :n], dtype=np.float32)
    pad = np.zeros(wave.shape[:-1] + (n - wave.shape[-1],), np.float32)
    return np.concatenate([wave.astype(np.float32, copy=False), pad], axis=-1)


def _stretch_n_fft(sample_rate: int, length: int) -> int:
    # ~50 ms analysis window (2048 at 44.1/48 kHz, 1024 at 16 kHz), smaller if the signal is shorter.
    n_fft = 2 ** int(round(math.log2(max(sample_rate * 0.05, 64))))
    while n_fft > length and n_fft > 64:
        n_fft //= 2
    return n_fft


def fit_duration(wave, sample_rate: int, seconds: float, preserve_pitch: bool) -> np.ndarray:
    """float32 [..., round(seconds * sample_rate)].

    preserve_pitch: phase-vocoder time stretch (librosa, per channel) onto the target length, then an exact
    trim/pad of the rounding remainder. Otherwise: trim if longer, pad with silence if shorter.
    Differences up to 2 ms are always just trimmed/padded.
    """
    wave = np.asarray(wave, np.float32)
    n = int(round(seconds * sample_rate))
    length = wave.shape[-1]
    if (preserve_pitch and length >= _MIN_STRETCH_SAMPLES and n > 0
            and abs(length - n) > _STRETCH_TOLERANCE * sample_rate and np.any(wave)):
        import librosa

        n_fft = _stretch_n_fft(sample_rate, length)
        wave = librosa.effects.time_stretch(wave, rate=length / n, n_fft=n_fft, hop_length=n_fft // 4)
    return _exact_length(wave, n)


# ---------------------------------------------------------------------------------------------------------------------
# per clip
# ---------------------------------------------------------------------------------------------------------------------
def audio_for_clip(path, window: TimeWindow | None, spec: FitSpec, auto_scale: bool, sample_rate: int,
                   normalize: bool, preserve_pitch: bool) -> np.ndarray:
    """float32 [2, round(F / rate * sample_rate)]: the audio of the frames `decode_and_fit` keeps.

    The kept frames play for F / rate seconds. Without auto_scale they are the source's
    [window.start, window.start + F / rate), so that span is taken as is. With auto_scale the whole window is
    squeezed/stretched onto F / rate seconds, so the window's audio is time-fitted to that length
    (phase vocoder when preserve_pitch, else trimmed/padded). Peak-normalised last when `normalize`.
    """
    path = str(path)
    if window is None:
        window = TimeWindow(0.0, probe(path).duration)
    seconds = spec.num_frames / spec.frame_rate
    n = int(round(seconds * sample_rate))
    if auto_scale:
        wave = fit_duration(load_audio(path, window.start, window.end, sample_rate), sample_rate, seconds,
                            preserve_pitch)
    else:
        wave = _exact_length(load_audio(path, window.start, window.start + seconds, sample_rate), n)
    return normalize_peak(wave) if normalize else wave


# ---------------------------------------------------------------------------------------------------------------------
# features
# ---------------------------------------------------------------------------------------------------------------------
def log_mel(wave, sample_rate: int, n_mels: int, n_fft: int = 1024, hop: int = 160) -> np.ndarray:
    """float32 [2, T, n_mels], T = N // hop + 1: the LTX-2 audio VAE's input.

    Same recipe as the LTX trainer's torchaudio MelSpectrogram: periodic Hann window of n_fft, center=True with
    reflect padding, magnitude (power 1), Slaney mel scale and Slaney area norm over 0 .. sr/2, then
    log(max(x, 1e-5)).
    """
    import librosa

    wave = np.asarray(wave, np.float32)
    if wave.ndim == 1:
        wave = np.stack([wave, wave])
    with warnings.catch_warnings():
        # "n_fft too large for input signal": expected for clips under n_fft samples; reflect padding copes.
        warnings.filterwarnings("ignore", message="n_fft=.*is too large", category=UserWarning)
        mel = librosa.feature.melspectrogram(
            y=wave, sr=sample_rate, n_fft=n_fft, hop_length=hop, win_length=n_fft, window="hann", center=True,
            pad_mode="reflect", power=1.0, n_mels=n_mels, fmin=0.0, fmax=sample_rate / 2.0, htk=False,
            norm="slaney")
    return np.log(np.maximum(mel, 1e-5)).astype(np.float32).swapaxes(-1, -2).copy()
