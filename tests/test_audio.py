"""Audio: decoding/downmix/resampling from real encoded files, time fitting, peak normalisation, log-mel, audio VAE."""

from __future__ import annotations

import math
import os
import sys
from fractions import Fraction

import av
import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "platform"))  # run without `pip install -e`

from ltxtrain import sampledata as sd  # noqa: E402
from ltxtrain.media.audio import (  # noqa: E402
    AudioMissing, audio_for_clip, fit_duration, load_audio, log_mel, normalize_peak,
)
from ltxtrain.media.fit import FitSpec, TimeWindow, decode_and_fit  # noqa: E402

SR = 16000
TONE = 440.0  # sampledata's tone, amplitude 0.2


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    return tmp_path_factory.mktemp("audio")


@pytest.fixture(scope="module")
def clips(d):
    """Two seconds at 30 fps in every audio flavour sampledata writes, plus one without audio."""
    out = {}
    for kind in ("stereo48k", "mono44k", "silent", None):
        p = str(d / f"clip_{kind}.mp4")
        sd.write_video(p, 2.0, 30, 64, 64, seed=3, audio=kind)
        out[kind] = p
    return out


def tone(seconds: float, freq: float = TONE, amp: float = 0.5, sr: int = SR) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return np.tile(amp * np.sin(2 * np.pi * freq * t), (2, 1)).astype(np.float32)


def dominant(x: np.ndarray, sr: int = SR) -> float:
    x = x - x.mean()
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x)), n=8 * len(x)))  # zero-padded: fine frequency grid
    return float(np.fft.rfftfreq(8 * len(x), 1 / sr)[np.argmax(spec)])


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


# ---------- duration fitting ----------

@pytest.mark.parametrize("factor", [1.25, 0.75])
def test_fit_duration_preserves_pitch(factor):
    wave = tone(1.0)
    out = fit_duration(wave, SR, factor, preserve_pitch=True)
    assert out.shape == (2, int(round(factor * SR))) and out.dtype == np.float32
    for ch in out:
        assert dominant(ch) == pytest.approx(TONE, rel=0.02)
    # stretched/compressed, not padded/trimmed: the tone runs to the end at about the same level
    tail = out[:, -int(0.1 * SR):]
    assert rms(tail) > 0.5 * rms(wave)
    np.testing.assert_allclose(out[0], out[1], atol=1e-5)


def test_fit_duration_without_pitch_pads_or_trims():
    wave = tone(1.0)
    longer = fit_duration(wave, SR, 1.25, preserve_pitch=False)
    assert longer.shape == (2, 20000)
    np.testing.assert_array_equal(longer[:, :SR], wave)
    assert not longer[:, SR:].any()  # silence after the original end
    shorter = fit_duration(wave, SR, 0.75, preserve_pitch=False)
    assert shorter.shape == (2, 12000)
    np.testing.assert_array_equal(shorter, wave[:, :12000])
    # a rounding-size difference is padded even with preservation on (no phase-vocoder artefacts)
    tiny = fit_duration(wave, SR, 1.0 + 10 / SR, preserve_pitch=True)
    np.testing.assert_array_equal(tiny[:, :SR], wave)


# ---------- normalisation ----------

def test_normalize_quiet_tone_reaches_full_scale():
    wave = tone(0.5, amp=0.05)
    out = normalize_peak(wave)
    assert 0.99 <= np.abs(out).max() <= 0.999 + 1e-6
    assert dominant(out[0]) == pytest.approx(TONE, rel=0.01)


def test_normalize_leaves_near_silence_alone():
    wave = tone(0.5, amp=1e-4)
    out = normalize_peak(wave)
    assert np.abs(out).max() == pytest.approx(1e-4, rel=1e-3)
    assert not normalize_peak(np.zeros((2, 100), np.float32)).any()


# ---------- decoding ----------

@pytest.mark.parametrize("kind", ["stereo48k", "mono44k"])
def test_load_audio_resamples_to_stereo_16k(clips, kind):
    start, end = 0.3, 1.3
    wave = load_audio(clips[kind], start, end, SR)
    assert wave.shape == (2, SR) and wave.dtype == np.float32
    np.testing.assert_allclose(wave[0], wave[1], atol=1e-6)  # the tone is the same on both sides / duplicated
    # in sync with the source timeline: matches the tone sampledata wrote at those times
    t = start + np.arange(wave.shape[1]) / SR
    np.testing.assert_allclose(wave[0], 0.2 * np.sin(2 * np.pi * TONE * t), atol=0.02)


def test_load_audio_late_span_after_seek(d):
    p = str(d / "long.mp4")
    sd.write_video(p, 5.0, 24, 64, 64, seed=5, audio="stereo48k")
    wave = load_audio(p, 3.7, 4.2, SR)  # far enough in that the decoder seeks
    t = 3.7 + np.arange(wave.shape[1]) / SR
    assert wave.shape == (2, 8000)
    np.testing.assert_allclose(wave[1], 0.2 * np.sin(2 * np.pi * TONE * t), atol=0.02)


def test_load_audio_pads_past_stream_end(clips):
    wave = load_audio(clips["stereo48k"], 1.5, 2.5, SR)
    assert wave.shape == (2, SR)
    assert np.abs(wave[:, :int(0.4 * SR)]).max() > 0.15
    assert not wave[:, int(0.6 * SR):].any()


def test_load_audio_silent_and_missing(clips):
    silent = load_audio(clips["silent"], 0.0, 1.0, SR)
    assert silent.shape == (2, SR) and np.abs(silent).max() < 1e-6
    with pytest.raises(AudioMissing, match=os.path.basename(clips[None])):
        load_audio(clips[None], 0.0, 1.0, SR)


def _write_audio(path: str, layout: str, data: np.ndarray, sr: int = 48000) -> None:
    with av.open(path, "w") as out:
        stream = out.add_stream("aac", rate=sr, layout=layout)
        for i in range(0, data.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data[:, i:i + 1024], np.float32), format="fltp",
                                               layout=layout)
            frame.sample_rate, frame.pts, frame.time_base = sr, i, Fraction(1, sr)
            for pkt in stream.encode(frame):
                out.mux(pkt)
        for pkt in stream.encode():
            out.mux(pkt)


def test_load_audio_downmixes_5_1(d):
    """FL/FR go to their side, centre and surrounds at -3 dB relative to the fronts, LFE dropped."""
    t = np.arange(48000) / 48000
    freqs = (300, 500, 700, 50, 900, 1100)  # FL FR FC LFE BL BR
    p = str(d / "surround.m4a")
    _write_audio(p, "5.1", np.stack([0.5 * np.sin(2 * np.pi * f * t) for f in freqs]))
    wave = load_audio(p, 0.2, 0.8, SR)
    assert wave.shape == (2, int(0.6 * SR))
    fr = np.fft.rfftfreq(wave.shape[1], 1 / SR)
    for ch, (own, other, surround, other_surround) in enumerate([(300, 500, 900, 1100), (500, 300, 1100, 900)]):
        spec = np.abs(np.fft.rfft(wave[ch]))
        level = {f: spec[np.argmin(np.abs(fr - f))] / spec.max() for f in freqs}
        assert level[own] == pytest.approx(1.0)
        assert level[700] == pytest.approx(math.sqrt(0.5), abs=0.03)
        assert level[surround] == pytest.approx(math.sqrt(0.5), abs=0.03)
        assert level[other] < 0.01 and level[other_surround] < 0.01 and level[50] < 0.01
    assert np.abs(wave).max() <= 1.0


# ---------- per clip ----------

def test_audio_for_clip_covers_the_kept_frames(clips):
    spec = FitSpec(width=64, height=64, num_frames=25, frame_rate=24)
    window = TimeWindow(0.4, 2.0)
    n = int(round(25 / 24 * SR))
    wave = audio_for_clip(clips["stereo48k"], window, spec, auto_scale=False, sample_rate=SR, normalize=False,
                          preserve_pitch=True)
    assert wave.shape == (2, n)
    np.testing.assert_array_equal(wave, load_audio(clips["stereo48k"], 0.4, 0.4 + 25 / 24, SR))
    normed = audio_for_clip(clips["mono44k"], window, spec, auto_scale=False, sample_rate=SR, normalize=True,
                            preserve_pitch=True)
    assert normed.shape == (2, n) and np.abs(normed).max() == pytest.approx(0.999, abs=1e-4)
    silent = audio_for_clip(clips["silent"], window, spec, auto_scale=False, sample_rate=SR, normalize=True,
                            preserve_pitch=True)
    assert silent.shape == (2, n) and np.abs(silent).max() < 1e-6  # silence is not amplified


def test_audio_for_clip_auto_scale_stretches_short_clip(d):
    p = str(d / "short.mp4")
    sd.write_video(p, 0.5, 30, 64, 64, seed=4, audio="stereo48k")
    spec = FitSpec(width=64, height=64, num_frames=25, frame_rate=24)
    window = TimeWindow(0.0, 0.5)
    assert decode_and_fit(p, spec, window, auto_scale=True).shape[0] == 25  # the video side of the same clip
    n = int(round(25 / 24 * SR))
    wave = audio_for_clip(p, window, spec, auto_scale=True, sample_rate=SR, normalize=True, preserve_pitch=True)
    assert wave.shape == (2, n)
    assert dominant(wave[0]) == pytest.approx(TONE, rel=0.02)
    assert rms(wave[:, -int(0.2 * SR):]) > 0.3  # stretched over the whole 25/24 s, not padded
    padded = audio_for_clip(p, window, spec, auto_scale=True, sample_rate=SR, normalize=False,
                            preserve_pitch=False)
    assert padded.shape == (2, n)
    assert np.abs(padded[:, int(0.45 * SR)]).max() <= 0.21 and not padded[:, int(0.55 * SR):].any()


# ---------- features and latents ----------

def _torchaudio_recipe(wave: np.ndarray, sr: int, n_mels: int) -> np.ndarray:
    """torch.stft + torchaudio's slaney melscale_fbanks formula (torchaudio itself is not installed)."""
    import torch

    lin, logstep = 1000 / (200 / 3), math.log(6.4) / 27

    def hz2mel(f):
        return np.where(f >= 1000, lin + np.log(np.maximum(f, 1e-10) / 1000) / logstep, f / (200 / 3))

    def mel2hz(m):
        return np.where(m >= lin, 1000 * np.exp(logstep * (m - lin)), m * (200 / 3))

    all_f = np.linspace(0, sr // 2, 513)
    f_pts = mel2hz(np.linspace(hz2mel(np.float64(0)), hz2mel(np.float64(sr / 2)), n_mels + 2))
    f_diff, slopes = np.diff(f_pts), f_pts[None, :] - all_f[:, None]
    fb = np.maximum(0, np.minimum(-slopes[:, :-2] / f_diff[:-1], slopes[:, 2:] / f_diff[1:]))
    fb *= 2.0 / (f_pts[2:n_mels + 2] - f_pts[:n_mels])
    spec = torch.stft(torch.from_numpy(wave), 1024, 160, 1024, torch.hann_window(1024), center=True,
                      pad_mode="reflect", return_complex=True).abs().double().numpy()
    return np.log(np.maximum(np.einsum("cft,fm->ctm", spec, fb), 1e-5))


def test_log_mel_matches_ltx_recipe():
    wave = (np.random.default_rng(0).standard_normal((2, 16667)) * 0.3).astype(np.float32)
    mel = log_mel(wave, SR, 64)
    assert mel.shape == (2, 16667 // 160 + 1, 64) and mel.dtype == np.float32
    np.testing.assert_allclose(mel, _torchaudio_recipe(wave, SR, 64), atol=1e-4)
    assert log_mel(np.zeros((2, 1600), np.float32), SR, 16).min() == pytest.approx(math.log(1e-5))


def test_encode_audio_latent_length(tiny_model, clips):
    import torch

    from ltxtrain.encode.audio_encoder import audio_latent_steps, encode_audio
    from ltxtrain.models.bundle import load_components

    vae = load_components(tiny_model, ["audio_vae"])["audio_vae"].eval()
    cfg = vae.config
    assert (cfg.sample_rate, cfg.mel_hop_length) == (SR, 160)
    channels = cfg.latent_channels * (cfg.mel_bins // 4)
    spec = FitSpec(width=64, height=64, num_frames=25, frame_rate=24)
    wave = audio_for_clip(clips["stereo48k"], TimeWindow(0.0, 2.0), spec, auto_scale=False, sample_rate=SR,
                          normalize=True, preserve_pitch=True)
    lat = encode_audio(vae, wave)
    steps = audio_latent_steps(25 / 24)
    assert steps in (26, 27)
    assert lat.shape == (steps, channels) and lat.dtype == torch.float32 and torch.isfinite(lat).all()
    for seconds in (0.04, 0.5, 1.0, 33 / 24, 89 / 24):
        n = audio_latent_steps(seconds)
        assert abs(n - 25 * seconds) <= 1
        noise = (np.random.default_rng(1).standard_normal((2, int(round(seconds * SR)))) * 0.1).astype(np.float32)
        assert encode_audio(vae, noise).shape == (n, channels)
    assert audio_latent_steps(89 / 24) == 93  # the LTX trainer's worked example
