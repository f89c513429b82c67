"""The validation reel, the debug dataset archive and the loss-curve PNG (fast: synthetic arrays, no model)."""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import pytest

from ltxtrain.export.debug_archive import mask_frames, write_debug_archive
from ltxtrain.export.plots import loss_curve_png, nice_ticks
from ltxtrain.export.reel import Preview, read_reel, write_reel

TOL = 14  # H.264 yuv420p at crf 18: flat colours come back within a few levels


def solid(color, n=9, h=64, w=64) -> np.ndarray:
    a = np.empty((n, h, w, 3), np.uint8)
    a[:] = color
    return a


def tone(freq: float, seconds: float, rate: int, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    x = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.stack([x, x])


def close(pixel, color, tol=TOL) -> bool:
    return bool(np.all(np.abs(pixel.astype(int) - np.asarray(color)) <= tol))


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)))) if x.size else 0.0


def peak_freq(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spec)])


COLORS = {(100, "sunset over the sea"): (220, 40, 40), (100, "a dog running"): (40, 170, 60),
          (200, "sunset over the sea"): (40, 70, 220), (200, "a dog running"): (240, 220, 40)}


def test_reel_order_size_colours_and_labels(tmp_path):
    # Given out of order; prompt index = first appearance ("sunset" first), so the reel is
    # (100, sunset), (100, dog), (200, sunset), (200, dog). The (200, dog) preview is wider (96x64).
    previews = [
        Preview(200, "sunset over the sea", solid(COLORS[(200, "sunset over the sea")]), 25.0),
        Preview(100, "a dog running", solid(COLORS[(100, "a dog running")]), 25.0),
        Preview(200, "a dog running", solid(COLORS[(200, "a dog running")], w=96), 25.0),
        Preview(100, "sunset over the sea", solid(COLORS[(100, "sunset over the sea")]), 25.0),
    ]
    path = str(tmp_path / "reel.mp4")
    summary = write_reel(path, previews, label_height=32)
    order = [(100, "sunset over the sea"), (100, "a dog running"), (200, "sunset over the sea"),
             (200, "a dog running")]
    assert [(s["step"], s["prompt"]) for s in summary["segments"]] == order
    assert [s["start_frame"] for s in summary["segments"]] == [0, 9, 18, 27]
    assert summary["frames"] == 36 and (summary["width"], summary["height"]) == (96, 96)
    assert summary["fps"] == 25.0 and summary["has_audio"] is False
    assert not [f for f in os.listdir(tmp_path) if f != "reel.mp4"]  # no temp file left behind

    reel = read_reel(path)
    frames = reel["frames"]
    assert frames.shape == (36, 96, 96, 3)
    assert reel["fps"] == pytest.approx(25.0) and reel["audio"] is None
    band_images = []
    for seg, key in zip(summary["segments"], order):
        for i in (seg["start_frame"], seg["start_frame"] + seg["num_frames"] - 1):
            f = frames[i]
            assert close(f[32 + 32, 48], COLORS[key]), (key, i, f[64, 48])  # picture centre
            band = f[:32]
            assert (band.max(axis=2) > 128).sum() > 40, "no label text in the band"
            assert close(band[:, -2], (0, 0, 0), 30)  # the band's background at its right edge
        band_images.append(frames[seg["start_frame"], :32].astype(int))
        if key[0] == 100 or key[1] == "sunset over the sea":  # 64 wide on a 96 canvas: letterboxed
            assert close(frames[seg["start_frame"] + 4, 64, 4], (0, 0, 0), 20)
    # Each segment has its own label: the step differs between the groups.
    for a, b in ((0, 2), (1, 3)):
        assert np.abs(band_images[a] - band_images[b]).mean() > 1


def test_reel_label_is_truncated_and_survives_unicode(tmp_path):
    long_prompt = "an extremely long prompt — with an em dash, accents (café) and 日本語 " * 6
    path = str(tmp_path / "reel.mp4")
    summary = write_reel(path, [Preview(3, long_prompt, solid((128, 128, 128), n=2), 24.0)])
    assert summary["segments"][0]["prompt"] == long_prompt
    frame = read_reel(path)["frames"][0]
    assert (frame[:32].max(axis=2) > 128).sum() > 40


def test_reel_audio_is_placed_per_segment(tmp_path):
    # Three 1 s segments at 25 fps: silence, a 440 Hz tone (24 kHz), an 880 Hz tone (16 kHz, resampled).
    previews = [
        Preview(0, "a", solid((200, 30, 30), n=25), 25.0),
        Preview(0, "b", solid((30, 200, 30), n=25), 25.0, audio=tone(440, 1.0, 24000), audio_rate=24000),
        Preview(0, "c", solid((30, 30, 200), n=25), 25.0, audio=tone(880, 1.3, 16000), audio_rate=16000),
    ]
    path = str(tmp_path / "reel.mp4")
    summary = write_reel(path, previews)
    assert summary["has_audio"] and summary["audio_rate"] == 24000
    reel = read_reel(path)
    assert reel["frames"].shape[0] == 75
    audio, rate = reel["audio"], reel["audio_rate"]
    assert rate == 24000 and audio.shape[0] == 2
    assert audio.shape[1] / rate == pytest.approx(75 / 25.0, abs=0.05)  # track length = video duration
    seg = lambda k: audio[0, k * rate + 1200:(k + 1) * rate - 1200]  # noqa: E731 - inner part of segment k
    assert rms(seg(0)) < 0.01
    assert rms(seg(1)) == pytest.approx(0.3 / np.sqrt(2), rel=0.15)
    assert peak_freq(seg(1), rate) == pytest.approx(440, abs=5)
    assert rms(seg(2)) == pytest.approx(0.3 / np.sqrt(2), rel=0.15)
    assert peak_freq(seg(2), rate) == pytest.approx(880, abs=5)  # and cut at the segment's end (1.3 s given)


def test_ic_lora_reference_beside_preview(tmp_path):
    # A half-size reference with 2 frames (green, then blue) beside an 8-frame red preview.
    ref = solid((40, 170, 60), n=2, h=32, w=32)
    ref[1] = (40, 70, 220)
    preview = Preview(50, "ic lora", solid((220, 40, 40), n=8), 24.0, reference=ref)
    path = str(tmp_path / "reel.mp4")
    summary = write_reel(path, [preview])
    assert summary["width"] > 64 and summary["width"] % 2 == 0
    frames = read_reel(path)["frames"]
    assert frames.shape == (8, 32 + 64, summary["width"], 3)
    for i, ref_color in ((0, (40, 170, 60)), (3, (40, 170, 60)), (4, (40, 70, 220)), (7, (40, 70, 220))):
        f = frames[i]
        assert close(f[64, 32], ref_color), (i, f[64, 32])  # left: the reference (stretched over time)
        assert close(f[64, summary["width"] - 32], (220, 40, 40))  # right: the preview


def test_debug_archive(tmp_path):
    h, w, n = 64, 96, 9
    target = solid((200, 60, 60), n=n, h=h, w=w)
    mask = np.zeros((n, h, w), np.float32)
    mask[:, :, : w // 2] = 1.0  # left half regenerated
    samples = [
        {"name": "clips/a b.mp4 [0.0-2.0]", "caption": "TOK a red scene", "frames": target, "fps": 24.0,
         "reference": solid((60, 200, 60), n=n, h=h // 2, w=w // 2), "mask": mask,
         "audio": tone(440, n / 24.0, 16000), "audio_rate": 16000,
         "tokens": {"video": 12, "reference": 3, "audio": 25}},
        {"name": "b.png", "caption": "TOK a blue scene", "frames": solid((60, 60, 200), n=1, h=h, w=w), "fps": 24.0,
         "reference": None, "mask": None, "audio": None, "audio_rate": None, "tokens": {"video": 6}},
    ]
    zpath = str(tmp_path / "out" / "debug.zip")
    write_debug_archive(zpath, iter(samples))  # a generator works: one sample at a time
    assert os.listdir(tmp_path / "out") == ["debug.zip"]  # nothing temporary left

    with zipfile.ZipFile(zpath) as zf:
        names = set(zf.namelist())
        index = json.loads(zf.read("index.json"))
        assert index["count"] == 2
        f0, f1 = index["samples"][0]["folder"], index["samples"][1]["folder"]
        assert f0.startswith("000_") and f1 == "001_b.png" and "/" not in f0
        assert {f"{f0}/{x}" for x in ("target.mp4", "reference.mp4", "mask.mp4", "caption.txt", "info.json")} <= names
        assert {f"{f1}/target.mp4", f"{f1}/caption.txt", f"{f1}/info.json"} <= names
        assert f"{f1}/mask.mp4" not in names and f"{f1}/reference.mp4" not in names
        for i, s in enumerate(samples):
            folder = index["samples"][i]["folder"]
            assert zf.read(f"{folder}/caption.txt").decode() == s["caption"]
            info = json.loads(zf.read(f"{folder}/info.json"))
            assert info["name"] == s["name"] and info["caption"] == s["caption"]
            assert info["tokens"] == s["tokens"]
            assert (info["frames"], info["width"], info["height"], info["fps"]) == (len(s["frames"]), w, h, 24.0)
        zf.extractall(tmp_path / "x")

    d0 = tmp_path / "x" / f0
    clip = read_reel(str(d0 / "target.mp4"))
    assert clip["frames"].shape == (n, h, w, 3) and close(clip["frames"][4, 32, 48], (200, 60, 60))
    assert clip["audio"] is not None and clip["audio_rate"] == 16000
    assert rms(clip["audio"][0, 800:-800]) == pytest.approx(0.3 / np.sqrt(2), rel=0.15)
    ref = read_reel(str(d0 / "reference.mp4"))
    assert ref["frames"].shape == (n, h // 2, w // 2, 3) and close(ref["frames"][0, 16, 24], (60, 200, 60))
    m = read_reel(str(d0 / "mask.mp4"))["frames"]
    assert m.shape == (n, h, w, 3)
    assert (m[:, :, : w // 2 - 2] >= 235).all(), "regenerated area must be white"
    assert (m[:, :, w // 2 + 2:] <= 20).all(), "kept area must be black"
    still = read_reel(str(tmp_path / "x" / f1 / "target.mp4"))
    assert still["frames"].shape == (1, h, w, 3) and still["audio"] is None


def test_mask_frames_maps_latent_grid_masks():
    # A latent-grid mask (F' = (F-1)/8 + 1, 32 px cells) is drawn on the pixel grid with the causal time mapping.
    lat = np.zeros((3, 2, 3), bool)
    lat[1, 0, 0] = True
    out = mask_frames(lat, 17, 64, 96)
    assert out.shape == (17, 64, 96) and out.dtype == np.uint8
    assert out[0].max() == 0 and out[9:].max() == 0
    assert (out[1:9, :32, :32] == 255).all() and out[1:9, 32:].max() == 0 and out[1:9, :, 32:].max() == 0


def test_loss_curve_png(tmp_path):
    from PIL import Image

    metrics = tmp_path / "metrics.jsonl"
    rng = np.random.default_rng(0)
    with open(metrics, "w") as fh:
        for step in range(1, 201):
            base = 1.0 / (1 + step / 40)
            fh.write(json.dumps({"step": step, "loss": base + 0.05 * rng.random(), "loss_video": 0.8 * base,
                                 "loss_audio": 0.2 * base, "lr": 1e-4, "step_time": 0.5}) + "\n")
        fh.write('{"step": 201, "lo')  # a half-written last line is ignored
    png = tmp_path / "plots" / "loss.png"
    loss_curve_png(str(metrics), str(png))
    img = Image.open(png)
    assert img.size == (800, 400) and img.format == "PNG"
    a = np.asarray(img.convert("RGB")).astype(int)
    assert a.std() > 5
    # The three series colours are drawn.
    for color in ((31, 119, 180), (255, 127, 14), (44, 160, 44)):
        assert (np.abs(a - color).max(axis=2) <= 10).sum() > 100, color
    # No data at all still gives a valid (framed) picture.
    empty = tmp_path / "empty.png"
    loss_curve_png(str(tmp_path / "missing.jsonl"), str(empty))
    assert Image.open(empty).size == (800, 400)
    assert nice_ticks(0, 1) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
