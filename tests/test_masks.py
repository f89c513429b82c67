"""Inpainting masks: clip-aligned fitting (crop, resize, time) and causal pixel -> latent grouping."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

from ltxtrain import sampledata as sd  # noqa: E402
from ltxtrain.media.fit import FitSpec, TimeWindow, crop_box, frame_times  # noqa: E402
from ltxtrain.media.masks import (  # noqa: E402
    MaskError, clip_display_size, fit_mask, latent_mask_tokens, mask_to_latent, regenerate_fraction,
    require_regenerate,
)
from ltxtrain.media.probe import MediaError  # noqa: E402

CELL = 32
CLIP = (640, 360)  # landscape source ...
SPEC = FitSpec(512, 512, 9, 24)  # ... into a square bucket: 199 px cut off on each side


def png(path, w, h, rects=(), value=255, mode="L"):
    a = np.zeros((h, w), np.uint8)
    for x0, y0, x1, y1 in rects:
        a[y0:y1, x0:x1] = value
    Image.fromarray(a, "L").convert(mode).save(path)
    return str(path)


def rect_frame(w, h, rect):
    a = np.zeros((h, w, 3), np.uint8)
    if rect is not None:
        x0, y0, x1, y1 = rect
        a[y0:y1, x0:x1] = 255
    return a


def expected_cells(rects, clip_w, clip_h, spec, margin=2.0):
    """Latent cells the source-space rectangles cover after the clip's scale-to-fill + center crop.

    Computed from the crop_box numbers and the 32 px grid only. Asserts every scaled edge is `margin` px away from
    a cell boundary, so resampling details at the edge cannot change the answer.
    """
    sw, sh, cx, cy = crop_box(clip_w, clip_h, spec.width, spec.height)
    out = np.zeros((spec.height // CELL, spec.width // CELL), bool)
    for x0, y0, x1, y1 in rects:
        spans = []
        for a, b, scale, off, size in ((x0, x1, sw / clip_w, cx, spec.width), (y0, y1, sh / clip_h, cy, spec.height)):
            lo, hi = a * scale - off, b * scale - off  # scaled, cropped coordinates of the edges
            for e in (lo, hi):
                if 0 < e < size:
                    d = e / CELL - round(e / CELL)
                    assert abs(d) * CELL >= margin, f"edge {e:.2f} too close to a cell boundary"
            lo, hi = max(lo, 0.0), min(hi, float(size))
            spans.append(None if hi <= lo else (math.floor(lo / CELL), math.ceil(hi / CELL)))
        if None not in spans:
            (c0, c1), (r0, r1) = spans
            out[r0:r1, c0:c1] = True
    return out


# rectangles on the 640x360 clip: inside the crop, straddling its left edge, and entirely cut off on the right
RECTS = [(300, 100, 420, 200), (100, 250, 200, 330), (560, 40, 630, 300)]


# ---------- spatial ----------

def test_image_mask_marks_exactly_the_cells_under_the_rectangles_after_the_crop(tmp_path):
    exp = expected_cells(RECTS, *CLIP, SPEC)
    assert exp.any() and not exp.all()
    sw, sh, cx, cy = crop_box(*CLIP, SPEC.width, SPEC.height)
    assert (cx, cy) == (199, 0)  # the crop matters
    m = fit_mask(png(tmp_path / "m.png", *CLIP, RECTS), CLIP, SPEC)
    assert m.shape == (9, 512, 512) and m.dtype == np.float32 and 0.0 <= m.min() and m.max() <= 1.0
    lat = mask_to_latent(m)
    assert lat.shape == (2, 16, 16) and lat.dtype == bool
    for f in range(2):
        np.testing.assert_array_equal(lat[f], exp)
    # pixel level: the first rectangle's centre is white, a spot far from all rectangles is black
    assert m[0, int(150 * sh / 360), int(360 * sw / 640) - cx] == 1.0 and m[0, 10, 500] == 0.0
    # the third rectangle is cut off: nothing white on the right
    assert m[:, :, 420:].max() == 0.0


@pytest.mark.parametrize("factor", [0.5, 2.0])
def test_mask_of_another_size_maps_to_the_same_cells(tmp_path, factor):
    full = fit_mask(png(tmp_path / "full.png", *CLIP, RECTS), CLIP, SPEC)
    w, h = int(CLIP[0] * factor), int(CLIP[1] * factor)
    rects = [tuple(int(v * factor) for v in r) for r in RECTS]
    other = fit_mask(png(tmp_path / "other.png", w, h, rects), CLIP, SPEC)
    np.testing.assert_array_equal(mask_to_latent(other), mask_to_latent(full))
    np.testing.assert_array_equal(other, full)  # max-footprint resampling: even the pixels agree


def test_lossy_rgb_and_transparent_masks(tmp_path):
    exp = expected_cells(RECTS, *CLIP, SPEC)
    jpg = tmp_path / "m.jpg"
    Image.open(png(tmp_path / "m.png", *CLIP, RECTS, mode="RGB")).save(jpg, quality=80)
    np.testing.assert_array_equal(mask_to_latent(fit_mask(str(jpg), CLIP, SPEC))[0], exp)
    # white shapes on a transparent canvas: transparent = black = keep
    a = np.zeros((CLIP[1], CLIP[0], 4), np.uint8)
    a[..., :3] = 255  # colour under the transparent pixels is white: must not count
    for x0, y0, x1, y1 in RECTS:
        a[y0:y1, x0:x1, 3] = 255
    Image.fromarray(a, "RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(mask_to_latent(fit_mask(str(tmp_path / "a.png"), CLIP, SPEC))[0], exp)


def test_gray_is_mean_of_rgb(tmp_path):
    a = np.zeros((64, 64, 3), np.uint8)
    a[:, :32, 0] = 255  # pure red: mean 1/3 -> keep
    a[:, 32:] = (255, 255, 0)  # yellow: mean 2/3 -> regenerate
    Image.fromarray(a).save(tmp_path / "c.png")
    m = fit_mask(str(tmp_path / "c.png"), (64, 64), FitSpec(64, 64, 1, 24))
    assert m.shape == (1, 64, 64)
    np.testing.assert_allclose(m[0, 0, [0, 63]], [1 / 3, 2 / 3], atol=1e-6)
    np.testing.assert_array_equal(mask_to_latent(m)[0], [[False, True], [False, True]])


@pytest.mark.parametrize("value,expected", [(0, False), (255, True)])
def test_all_black_and_all_white(tmp_path, value, expected):
    p = png(tmp_path / "flat.png", *CLIP, [(0, 0, CLIP[0], CLIP[1])], value=value)
    lat = mask_to_latent(fit_mask(p, CLIP, FitSpec(512, 512, 17, 24)))
    assert lat.shape == (3, 16, 16)
    assert (lat == expected).all()
    assert regenerate_fraction(lat) == float(expected)
    if expected:
        assert require_regenerate(lat, p) == 1.0
    else:
        with pytest.raises(MaskError, match="flat.png.*nothing to regenerate"):
            require_regenerate(lat, p)


# ---------- video masks: time ----------

W = H = 256  # 8x8 cells; frame i of a test mask video has a white square inside cell (i // 8, i % 8)


def cell_rect(i):
    r, c = divmod(i, 8)
    return (c * CELL + 6, r * CELL + 6, c * CELL + 26, r * CELL + 26)


def shown(m):
    """Index of the mask frame each fitted frame shows (which single cell is white), -1 if none."""
    lat = np.stack([mask_to_latent(fr[None])[0] for fr in m])  # per pixel frame
    out = []
    for cells in lat:
        assert cells.sum() <= 1
        out.append(int(np.flatnonzero(cells.reshape(-1))[0]) if cells.any() else -1)
    return out


def mask_video(path, n, fps):
    sd.write_frames(path, (rect_frame(W, H, cell_rect(i)) for i in range(n)), fps)
    return str(path)


def test_short_video_mask_holds_its_last_frame(tmp_path):
    p = mask_video(tmp_path / "short.mp4", 5, 24)
    m = fit_mask(p, (W, H), FitSpec(W, H, 17, 24))
    assert m.shape == (17, H, W)
    assert shown(m) == [0, 1, 2, 3, 4] + [4] * 12


def test_long_video_mask_is_trimmed(tmp_path):
    p = mask_video(tmp_path / "long.mp4", 30, 24)
    m = fit_mask(p, (W, H), FitSpec(W, H, 17, 24))
    assert shown(m) == list(range(17))


def test_video_mask_follows_the_clip_timestamps(tmp_path):
    p = mask_video(tmp_path / "m12.mp4", 12, 12)  # half the clip's rate: each mask frame covers two clip frames
    spec = FitSpec(W, H, 9, 24)
    assert shown(fit_mask(p, (W, H), spec)) == [0, 0, 1, 1, 2, 2, 3, 3, 4]
    times = frame_times(TimeWindow(0.25, 1.0), spec, auto_scale=False)  # window starting at mask frame 3
    assert shown(fit_mask(p, (W, H), spec, times)) == [3, 3, 4, 4, 5, 5, 6, 6, 7]
    assert shown(fit_mask(p, (W, H), spec, window_start=0.25)) == [3, 3, 4, 4, 5, 5, 6, 6, 7]
    # auto-scale: 9 timestamps spread over the whole 1 s mask
    times = frame_times(TimeWindow(0.0, 1.0), spec, auto_scale=True)
    assert shown(fit_mask(p, (W, H), spec, times)) == [int(t * 12 + 1e-9) for t in times]


def test_image_mask_repeats_for_every_timestamp(tmp_path):
    p = png(tmp_path / "one.png", W, H, [cell_rect(10)])
    m = fit_mask(p, (W, H), FitSpec(W, H, 17, 24), times=np.arange(25) / 24)
    assert m.shape == (25, H, W) and shown(m) == [10] * 25


# ---------- causal grouping ----------

@pytest.mark.parametrize("frame,latent", [(0, 0), (1, 1), (8, 1), (9, 2), (16, 2)])
def test_causal_grouping_end_to_end(tmp_path, frame, latent):
    p = str(tmp_path / f"only{frame}.mp4")
    sd.write_frames(p, (rect_frame(64, 64, (10, 40, 20, 50) if i == frame else None) for i in range(17)), 24)
    lat = mask_to_latent(fit_mask(p, (64, 64), FitSpec(64, 64, 17, 24)))
    assert lat.shape == (3, 2, 2)
    want = np.zeros((3, 2, 2), bool)
    want[latent, 1, 0] = True
    np.testing.assert_array_equal(lat, want)


def test_mask_to_latent_any_pixel_and_threshold():
    m = np.zeros((17, 64, 96), np.float32)
    m[5, 33, 70] = 0.6  # one pixel of cell (1, 2) in group {1..8}
    m[12, 0, 0] = 0.5  # exactly the threshold: not above it
    lat = mask_to_latent(m)
    want = np.zeros((3, 2, 3), bool)
    want[1, 1, 2] = True
    np.testing.assert_array_equal(lat, want)
    assert mask_to_latent(m, threshold=0.4)[2, 0, 0]
    # frames past the last full group and pixels past the last full cell are ignored
    m2 = np.zeros((18, 70, 64), np.float32)
    m2[17] = 1.0
    m2[:, 64:] = 1.0
    assert mask_to_latent(m2).shape == (3, 2, 2) and not mask_to_latent(m2).any()
    # other VAE factors
    assert mask_to_latent(np.ones((9, 16, 16)), temporal=4, spatial=8).shape == (3, 2, 2)
    with pytest.raises(ValueError):
        mask_to_latent(np.zeros((9, 16, 64)))


def test_latent_mask_tokens_order():
    rng = np.random.default_rng(0)
    lat = rng.random((3, 4, 5)) > 0.5
    tok = latent_mask_tokens(lat)
    assert tok.shape == (60,) and tok.dtype == bool
    for f, h, w in [(0, 0, 0), (1, 2, 3), (2, 3, 4), (0, 3, 1)]:
        assert tok[f * 20 + h * 5 + w] == lat[f, h, w]


# ---------- errors, sizes ----------

def test_bad_masks_raise_mask_error_naming_the_file(tmp_path):
    bad_img = tmp_path / "broken_mask.png"
    bad_img.write_bytes(b"not a png")
    bad_vid = tmp_path / "broken_mask.mp4"
    bad_vid.write_bytes(b"\x00" * 64)
    for p in (bad_img, bad_vid, tmp_path / "missing_mask.webp"):
        with pytest.raises(MaskError, match=p.name) as ei:
            fit_mask(str(p), CLIP, SPEC)
        assert isinstance(ei.value, MediaError)


def test_clip_display_size_applies_rotation(tmp_path):
    p = str(tmp_path / "rot.mp4")
    with av.open(p, "w") as out:
        s = out.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=25)
        s.width, s.height, s.pix_fmt = 64, 32, "yuv420p"
        s.set_display_rotation(-90)
        f = av.VideoFrame.from_ndarray(np.zeros((32, 64, 3), np.uint8), format="rgb24")
        f.pts = 0
        for pkt in list(s.encode(f)) + list(s.encode()):
            out.mux(pkt)
    assert clip_display_size(p) == (32, 64)
    assert clip_display_size(png(tmp_path / "i.png", 40, 30)) == (40, 30)


# ---------- the mask lands on the clip pixels it was drawn on ----------

def _encode(path, img, rotation=None, sar=None):
    from fractions import Fraction

    h, w = img.shape[:2]
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=24)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        if rotation is not None:
            s.set_display_rotation(rotation)
        if sar is not None:
            s.codec_context.sample_aspect_ratio = Fraction(sar)
        for i in range(3):
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts = i
            for pkt in s.encode(f):
                out.mux(pkt)
        for pkt in s.encode():
            out.mux(pkt)
    return str(path)


@pytest.mark.parametrize("rotation,sar", [(None, None), (-90, None), (None, 2)])
def test_mask_matches_the_fitted_clip_pixels(tmp_path, rotation, sar):
    """Encode the mask picture itself as the clip: the fitted clip's white pixels and the fitted mask agree."""
    from ltxtrain.media.fit import decode_and_fit

    img = rect_frame(320, 180, (150, 50, 210, 100))
    img[130:170, 40:100] = 255
    clip = _encode(tmp_path / "clip.mp4", img, rotation, sar)
    spec = FitSpec(128, 192, 3, 24)
    size = clip_display_size(clip)
    assert size == {(None, None): (320, 180), (-90, None): (180, 320), (None, 2): (640, 180)}[(rotation, sar)]
    clip_white = decode_and_fit(clip, spec).mean(axis=3)[0] > 127.5
    # a mask video with the same stored layout, and an upright PNG at another size
    vid = fit_mask(_encode(tmp_path / "mask.mp4", img, rotation, sar), size, spec)[0] > 0.5
    up = np.rot90(img, -1) if rotation == -90 else img  # display rotation -90: shown turned clockwise
    up = Image.fromarray(np.ascontiguousarray(up)).resize((size[0] // 2, size[1] // 2), Image.NEAREST)
    up.save(tmp_path / "mask.png")
    png_m = fit_mask(str(tmp_path / "mask.png"), size, spec)[0] > 0.5
    assert clip_white.sum() > 200
    for m in (vid, png_m):
        assert not (clip_white & ~m).any()  # conservative: every white clip pixel is white in the mask
        assert (m & ~clip_white).sum() <= 0.25 * clip_white.sum()  # and only a thin rim more
        np.testing.assert_array_equal(mask_to_latent(m[None].astype(np.float32), spatial=32),
                                      mask_to_latent(clip_white[None].astype(np.float32), spatial=32))
