"""ltxtrain.media.mp4: the one mp4 writer, read back with PyAV."""

import io
import os
from fractions import Fraction

import av
import numpy as np
import pytest

from ltxtrain.media.mp4 import write_mp4

AAC_FRAME = 1024  # samples: how far the decoded track may differ from what was written (encoder padding)


def _frames(n: int, h: int, w: int) -> np.ndarray:
    """A bright square moving right over dark grey: frames differ, so a dropped or repeated frame shows."""
    out = np.full((n, h, w, 3), 40, np.uint8)
    for i in range(n):
        x = 2 * i % (w - 8)
        out[i, 8:16, x:x + 8] = (250, 200, 30)
    return out


def _tone(channels: int, rate: int, seconds: float) -> np.ndarray:
    t = np.arange(int(round(rate * seconds))) / rate
    return np.tile(0.3 * np.sin(2 * np.pi * 440 * t), (channels, 1)).astype(np.float32)


def _read(src) -> dict:
    def opened():
        return av.open(src if isinstance(src, str) else io.BytesIO(src.getvalue()))

    with opened() as c:
        vs = c.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(vs)]
        info = {"frames": np.stack(frames), "rate": vs.average_rate, "pix_fmt": vs.codec_context.pix_fmt,
                "audio": None}
    with opened() as c:
        if c.streams.audio:
            a = c.streams.audio[0]
            chunks = [f.to_ndarray() for f in c.decode(a)]
            info["audio"] = {"rate": a.codec_context.sample_rate, "channels": a.codec_context.channels,
                             "codec": a.codec_context.name, "samples": sum(x.shape[-1] for x in chunks),
                             "wave": np.concatenate(chunks, axis=-1)}
    return info


def test_frames_and_stereo_audio_round_trip(tmp_path):
    path = str(tmp_path / "clip.mp4")
    frames = _frames(12, 48, 64)
    wave = _tone(2, 48000, 0.5)
    info = write_mp4(path, frames, 24, wave, 48000)
    assert info == {"frames": 12, "width": 64, "height": 48, "fps": 24.0, "audio_rate": 48000,
                    "audio_samples": 24000}
    assert os.listdir(tmp_path) == ["clip.mp4"]  # the temp name was renamed, nothing left beside it

    back = _read(path)
    assert back["frames"].shape == (12, 48, 64, 3)
    assert back["rate"] == 24
    assert back["pix_fmt"] == "yuv420p"
    assert np.abs(back["frames"].astype(int) - frames.astype(int)).mean() < 4  # the same pictures, lossy
    a = back["audio"]
    assert (a["codec"], a["rate"], a["channels"]) == ("aac", 48000, 2)
    assert abs(a["samples"] - 24000) <= AAC_FRAME  # 0.5 s of sound
    assert 0.15 < np.sqrt(np.mean(a["wave"] ** 2)) < 0.26  # the tone, not silence (RMS of 0.3 sin = 0.21)


def test_mono_audio_fractional_fps_into_a_file_object():
    buf = io.BytesIO()
    info = write_mp4(buf, iter(_frames(10, 32, 32)), Fraction(30000, 1001), _tone(1, 44100, 0.25), 44100)
    assert info["frames"] == 10 and info["audio_samples"] == 11025
    back = _read(buf)
    assert back["frames"].shape == (10, 32, 32, 3)
    assert back["rate"] == Fraction(30000, 1001)
    a = back["audio"]
    assert (a["rate"], a["channels"]) == (44100, 1)
    assert abs(a["samples"] - 11025) <= AAC_FRAME


def test_video_only(tmp_path):
    path = str(tmp_path / "v.mp4")
    write_mp4(path, _frames(5, 16, 16), 25)
    back = _read(path)
    assert back["frames"].shape == (5, 16, 16, 3) and back["audio"] is None


def test_a_failed_write_leaves_neither_the_target_nor_a_temp_file(tmp_path):
    frames = list(_frames(4, 16, 16)) + [np.zeros((16, 18, 3), np.uint8)]
    with pytest.raises(ValueError, match="frame of shape"):
        write_mp4(str(tmp_path / "bad.mp4"), frames, 25)
    with pytest.raises(ValueError, match="even"):
        write_mp4(str(tmp_path / "odd.mp4"), _frames(2, 15, 16), 25)
    assert os.listdir(tmp_path) == []
