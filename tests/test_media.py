"""Media layer on real encoded files: probing, temporal resampling, fill+crop, scene splitting, sample data."""

from __future__ import annotations

import os
import sys
import zipfile

import av
import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "platform"))  # run without `pip install -e`

from ltxtrain import sampledata as sd  # noqa: E402
from ltxtrain.media.fit import (  # noqa: E402
    ClipTooShort, FitSpec, TimeWindow, crop_box, decode_and_fit, fit_image, frame_times, frames_available,
    frames_to_video_tensor,
)
from ltxtrain.media.probe import MediaError, probe  # noqa: E402
from ltxtrain.media.scenes import detect_scenes, split_windows  # noqa: E402

STEP = 4  # gray level per source frame in index-encoded clips


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    return tmp_path_factory.mktemp("media")


def index_clip(path, n: int, fps: float, w: int = 96, h: int = 64):
    """Frame i is flat gray STEP*i, so the decoded brightness tells which source frame was picked."""
    sd.write_frames(path, (np.full((h, w, 3), STEP * i, np.uint8) for i in range(n)), fps)
    return str(path)


def picked(frames: np.ndarray) -> np.ndarray:
    return np.round(frames.reshape(len(frames), -1).mean(1) / STEP).astype(int)


# ---------- probe ----------

@pytest.mark.parametrize("audio,sr,ch", [(None, None, None), ("stereo48k", 48000, 2), ("mono44k", 44100, 1),
                                         ("silent", 48000, 2)])
def test_probe_video(d, audio, sr, ch):
    p = str(d / f"probe_{audio}.mp4")
    sd.write_video(p, 2.0, 30, 96, 64, seed=1, audio=audio)
    info = probe(p)
    assert (info.kind, info.width, info.height) == ("video", 96, 64)
    assert info.fps == pytest.approx(30, abs=0.01)
    assert abs(info.num_frames - 60) <= 1
    assert info.duration == pytest.approx(2.0, abs=0.05)
    assert info.has_audio is (audio is not None)
    assert (info.audio_sample_rate, info.audio_channels) == (sr, ch)


def test_audio_tracks_hold_tone_or_silence(d):
    peaks = {}
    for kind in ("stereo48k", "silent"):
        p = str(d / f"tone_{kind}.mp4")
        sd.write_video(p, 1.0, 25, 64, 64, audio=kind)
        with av.open(p) as c:
            peaks[kind] = max(np.abs(f.to_ndarray()).max() for f in c.decode(audio=0))
    assert peaks["stereo48k"] > 0.1 and peaks["silent"] == 0


def test_probe_image(d):
    p = str(d / "img.png")
    sd.write_image(p, 101, 77, seed=2)
    info = probe(p)
    assert (info.kind, info.width, info.height, info.fps, info.num_frames, info.duration, info.has_audio) == (
        "image", 101, 77, None, 1, 0.0, False)


def test_corrupt_files_raise_media_error_naming_the_file(d):
    good = str(d / "good.mp4")
    sd.write_video(good, 1.0, 25, 64, 64)
    data = open(good, "rb").read()
    cases = {"noise.mp4": np.random.default_rng(0).bytes(5000), "truncated.mp4": data[: len(data) // 3],
             "text.png": b"not an image at all", "empty.mov": b""}
    for name, blob in cases.items():
        (d / name).write_bytes(blob)
        with pytest.raises(MediaError, match=name.replace(".", r"\.")) as ei:
            probe(str(d / name))
        assert ei.value.path.endswith(name)
    with pytest.raises(MediaError, match="missing.mp4"):
        probe(str(d / "missing.mp4"))


def test_truncated_faststart_mp4_fails_at_decode(d):
    # moov first: metadata survives truncation, so only decoding can notice the missing half
    p = str(d / "faststart.mp4")
    with av.open(p, "w", options={"movflags": "faststart"}) as out:
        s = out.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=25)
        s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
        for i in range(50):
            f = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 4 * i, np.uint8), format="rgb24")
            f.pts = i
            for pkt in s.encode(f):
                out.mux(pkt)
        for pkt in s.encode():
            out.mux(pkt)
    data = open(p, "rb").read()
    cut = str(d / "cut.mp4")
    open(cut, "wb").write(data[: len(data) // 2])
    assert probe(cut).num_frames == 50
    with pytest.raises(MediaError, match="cut.mp4"):
        decode_and_fit(cut, FitSpec(32, 32, 49, 25))


def test_audio_only_file_has_no_video_stream(d):
    p = str(d / "audio_only.mp4")
    with av.open(p, "w") as out:
        s = out.add_stream("aac", rate=48000, layout="mono")
        f = av.AudioFrame.from_ndarray(np.zeros((1, 4800), np.float32), format="fltp", layout="mono")
        f.sample_rate, f.pts = 48000, 0
        for pkt in list(s.encode(f)) + list(s.encode()):
            out.mux(pkt)
    with pytest.raises(MediaError, match="no video stream"):
        probe(p)


# ---------- temporal fitting ----------

def test_frames_available_and_frame_times():
    assert frames_available(3.56, 25) == 89
    assert frames_available(3.55, 25) == 88
    spec = FitSpec(32, 32, 9, 25)
    np.testing.assert_allclose(frame_times(TimeWindow(1.0, 2.0), spec, False), 1.0 + np.arange(9) / 25)
    with pytest.raises(ClipTooShort, match="8 frames available at 25 fps.*9 needed"):
        frame_times(TimeWindow(0.0, 0.33), spec, False)
    t = frame_times(TimeWindow(2.0, 6.0), spec, True)  # long window compressed onto 9 frames
    assert len(t) == 9 and t[0] == 2.0 and 5.5 < t[-1] < 6.0


def test_resample_30_to_15_picks_every_other_frame(d):
    p = index_clip(d / "idx30.mp4", 60, 30)
    out = decode_and_fit(p, FitSpec(32, 32, 25, 15))
    assert out.shape == (25, 32, 32, 3) and out.dtype == np.uint8
    assert list(picked(out)) == list(range(0, 50, 2))


def test_resample_window_25_from_30(d):
    p = index_clip(d / "idx30w.mp4", 60, 30)
    out = decode_and_fit(p, FitSpec(32, 32, 9, 25), window=TimeWindow(1.2, 2.0))  # seeks past the start
    # frame shown at t: the last source frame starting at or before t
    assert list(picked(out)) == [int(np.floor(round((1.2 + i / 25) * 30, 6))) for i in range(9)]


def test_too_short_clip_raises(d):
    p = index_clip(d / "short.mp4", 50, 25)  # 2 s
    with pytest.raises(ClipTooShort, match="50 frames available at 25 fps.*89 needed"):
        decode_and_fit(p, FitSpec(32, 32, 89, 25))


def test_auto_scale_stretches_short_clip(d):
    p = index_clip(d / "short30.mp4", 60, 30)  # 2 s, 60 frames
    out = decode_and_fit(p, FitSpec(32, 32, 89, 25), auto_scale=True)
    idx = picked(out)
    assert len(idx) == 89 and idx[0] == 0 and idx[-1] == 59
    assert np.all(np.diff(idx) >= 0) and set(idx) == set(range(60))  # every frame kept, some duplicated


def test_auto_scale_compresses_long_clip(d):
    p = index_clip(d / "long30.mp4", 60, 30)
    out = decode_and_fit(p, FitSpec(32, 32, 9, 25), auto_scale=True)
    assert list(picked(out)) == [int(i * 60 / 9) for i in range(9)]


# ---------- spatial fitting ----------

def test_crop_box():
    assert crop_box(1920, 1080, 512, 512) == (910, 512, 199, 0)
    assert crop_box(480, 854, 512, 288) == (512, 911, 0, 311)
    assert crop_box(512, 512, 512, 512) == (512, 512, 0, 0)


def _halves_with_edge_bands(h=180, w=320):
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2] = (255, 0, 0)
    img[:, w // 2:] = (0, 0, 255)
    img[:, : w // 5] = img[:, -w // 5:] = (0, 255, 0)  # outside the centered 1:1 window
    return img


def test_fill_and_center_crop_keeps_centre(d):
    p = str(d / "wide.mp4")
    sd.write_frames(p, [_halves_with_edge_bands()] * 5, 25)
    out = decode_and_fit(p, FitSpec(64, 64, 1, 25)).astype(int)[0]
    left, right = out[:, 4:28].mean((0, 1)), out[:, 36:60].mean((0, 1))
    assert left[0] > 200 and left[2] < 40 and right[2] > 200 and right[0] < 40
    assert out[..., 1].max() < 60  # no green: the 16:9 source was cropped, not squeezed


def test_fit_image_same_rule(d):
    from PIL import Image

    p = str(d / "wide.png")
    Image.fromarray(_halves_with_edge_bands()).save(p)
    out = fit_image(p, 64, 64)
    assert out.shape == (1, 64, 64, 3) and out.dtype == np.uint8
    assert out[0, :, 4:28, 0].mean() > 200 and out[0, :, 36:60, 2].mean() > 200 and out[..., 1].max() < 60


def test_rotated_video_is_upright(d):
    p = str(d / "rot.mp4")
    img = np.zeros((32, 64, 3), np.uint8)
    img[:8] = (0, 255, 0)  # green top band of the stored landscape frame
    with av.open(p, "w") as out:
        s = out.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=25)
        s.width, s.height, s.pix_fmt = 64, 32, "yuv420p"
        s.set_display_rotation(-90)  # phone-style: display turned 90° clockwise
        f = av.VideoFrame.from_ndarray(img, format="rgb24")
        f.pts = 0
        for pkt in list(s.encode(f)) + list(s.encode()):
            out.mux(pkt)
    fr = decode_and_fit(p, FitSpec(32, 64, 1, 25))[0]
    assert fr.shape == (64, 32, 3)
    assert fr[:, -4:, 1].mean() > 200 and fr[:, :20, 1].mean() < 30  # top band now on the right


def test_non_square_pixels_use_display_aspect(d):
    from fractions import Fraction

    p = str(d / "sar.mp4")
    img = np.zeros((64, 64, 3), np.uint8)  # stored square, shown 128x64 (SAR 2:1)
    img[:, :32], img[:, 32:] = (255, 0, 0), (0, 0, 255)
    img[:, :12] = img[:, -12:] = (0, 255, 0)  # outside the centred square of the *displayed* picture
    with av.open(p, "w") as out:
        s = out.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=25)
        s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
        s.codec_context.sample_aspect_ratio = Fraction(2, 1)
        f = av.VideoFrame.from_ndarray(img, format="rgb24")
        f.pts = 0
        for pkt in list(s.encode(f)) + list(s.encode()):
            out.mux(pkt)
    fr = decode_and_fit(p, FitSpec(64, 64, 1, 25))[0].astype(int)
    assert fr[..., 1].max() < 60 and fr[:, :28, 0].mean() > 200 and fr[:, 36:, 2].mean() > 200


def test_video_tensor_layout():
    frames = np.zeros((2, 4, 6, 3), np.uint8)
    frames[1, :, :, 2] = 255
    t = frames_to_video_tensor(frames)
    assert tuple(t.shape) == (3, 2, 4, 6) and str(t.dtype) == "torch.float32" and t.is_contiguous()
    assert t.min().item() == -1.0 and t[2, 1].min().item() == 1.0 and t[0, 1].max().item() == -1.0


# ---------- scenes ----------

def test_detect_scenes_finds_hard_cuts(d):
    p = str(d / "cuts.mp4")
    cuts = (9.3, 20.1, 31.7)
    sd.write_video(p, 40.0, 25, 160, 120, seed=3, cuts=cuts)
    wins = detect_scenes(p)
    assert len(wins) == 4
    assert wins[0].start == 0.0 and wins[-1].end == pytest.approx(40.0, abs=0.05)
    for w, c in zip(wins[1:], cuts):
        assert abs(w.start - c) <= 0.2
    assert all(a.end == b.start for a, b in zip(wins, wins[1:]))
    info = probe(p)
    assert split_windows(info, True, 30.0) == wins
    assert split_windows(info, True, 60.0) == [TimeWindow(0.0, info.duration)]  # under the threshold: whole
    assert split_windows(info, False, 5.0) == [TimeWindow(0.0, info.duration)]


def test_no_cut_gives_one_window(d):
    p = str(d / "nocut.mp4")
    sd.write_video(p, 3.0, 25, 96, 64, seed=4)
    assert detect_scenes(p) == [TimeWindow(0.0, probe(p).duration)]


# ---------- sample data ----------

def test_video_zip_contents(d):
    z = sd.make_dataset_zip(d / "v.zip", n=3, seconds=1.0, fps=25, width=96, height=64, seed=5,
                            audio="stereo48k")
    with zipfile.ZipFile(z) as zf:
        names = sorted(zf.namelist())
        assert names == ["clip_000.mp4", "clip_000.txt", "clip_001.mp4", "clip_001.txt", "clip_002.mp4",
                         "clip_002.txt"]
        caption = zf.read("clip_000.txt").decode()
        zf.extract("clip_001.mp4", d / "vx")
    assert caption == sd.caption_for(5) and " moving on a " in caption and caption.endswith(" background")
    info = probe(str(d / "vx" / "clip_001.mp4"))
    assert (info.width, info.height, info.num_frames, info.has_audio) == (96, 64, 25, True)


def test_image_zip_without_captions(d):
    z = sd.make_dataset_zip(d / "i.zip", kind="image", n=2, width=80, height=60, captions=False)
    with zipfile.ZipFile(z) as zf:
        assert sorted(zf.namelist()) == ["img_000.png", "img_001.png"]
        zf.extractall(d / "ix")
    info = probe(str(d / "ix" / "img_001.png"))
    assert (info.kind, info.width, info.height) == ("image", 80, 60)


def test_zip_is_deterministic(d):
    a = sd.make_dataset_zip(d / "a.zip", n=1, seconds=0.4, width=64, height=64, seed=9)
    b = sd.make_dataset_zip(d / "b.zip", n=1, seconds=0.4, width=64, height=64, seed=9)
    assert open(a, "rb").read() == open(b, "rb").read()
