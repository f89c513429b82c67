"""Quality of `decode_and_fit` (crop-first, planar-RGB swscale) against a float reference resize and the old fit.

Real-looking clips are encoded here: colour gradients, hard edges, fine stripes and text-like glyph rows that move,
at several sizes and aspects (odd sizes in 4:4:4, a rotated phone clip), fitted with both upscaling and
downscaling. The reference: the decoded frame at its stored size with chroma upsampled by lanczos, turned to RGB in
float64 (BT.601 limited range, what swscale assumes for untagged video), resized to the scale-to-fill size with
PIL's float lanczos (antialiased when shrinking), then `crop_box`'s window. The old fit is the previous
implementation: full-frame swscale to packed rgb24 (bicubic, full chroma interpolation), then crop.
"""

from __future__ import annotations

import os
import sys

import av
import numpy as np
import pytest
from av.video.reformatter import Interpolation as I

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "platform"))  # run without `pip install -e`

from ltxtrain.media.fit import FitSpec, crop_box, decode_and_fit  # noqa: E402

FPS = 25
FRAMES = 4
# Thresholds (dB), measured margins below them: new vs reference is 33-48 dB on these clips; new vs old >= 50 dB.
MIN_PSNR_VS_REFERENCE = 30.0
MAX_LOSS_VS_OLD = 0.3  # the new fit may be at most this much further from the reference than the old one
MIN_PSNR_NEW_VS_OLD = 45.0  # same geometry: a sub-pixel shift of the window would cost >10 dB on these edges


def _glyphs(rng, h: int, w: int) -> np.ndarray:
    """Rows of small dark 'letters' (random 1-3 px strokes in 5x7 cells) on a light band: text-like detail."""
    band = np.full((h, w), 235, np.uint8)
    for y in range(4, h - 10, 12):
        for x in range(4, w - 6, 7):
            cell = rng.random((7, 5)) < 0.35
            band[y:y + 7, x:x + 5][cell] = 20
    return band


def scene(w: int, h: int, t: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.empty((h, w, 3), np.float32)
    img[..., 0] = 255 * xx / max(1, w - 1)  # gradients
    img[..., 1] = 255 * yy / max(1, h - 1)
    img[..., 2] = 128 + 100 * np.sin((xx + 2 * yy + 3 * t) / 17)
    # fine stripes of several frequencies (2-6 px period) in the top third: aliasing shows when shrinking
    top = h // 3
    period = 2 + (xx[:top] // max(1, w // 5)) % 5
    img[:top, :, :] = np.where(((xx[:top] + t) // (period / 2)) % 2 == 0, 230, 25)[..., None]
    # a hard-edged block that moves, and a text band
    bx = (w // 4 + 5 * t) % max(1, w - w // 4)
    img[h // 2:h // 2 + h // 5, bx:bx + w // 4] = (250, 30, 40)
    band_h = max(20, h // 6)
    img[h - band_h - 2:h - 2, 2:w - 2] = _glyphs(rng, band_h, w - 4)[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


def encode(path, w: int, h: int, seed: int, rotation: int | None = None) -> str:
    pix_fmt = "yuv420p" if w % 2 == 0 and h % 2 == 0 else "yuv444p"  # 4:2:0 needs even sizes
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=FPS)
        s.width, s.height, s.pix_fmt = w, h, pix_fmt
        s.options = {"crf": "8", "preset": "veryfast"}
        if rotation is not None:
            s.set_display_rotation(rotation)
        for t in range(FRAMES + 2):
            f = av.VideoFrame.from_ndarray(scene(w, h, t, seed), format="rgb24")
            f.pts = t
            for pkt in s.encode(f):
                out.mux(pkt)
        for pkt in s.encode():
            out.mux(pkt)
    return str(path)


def decoded(path: str) -> list[av.VideoFrame]:
    with av.open(path) as c:
        return [f for _, f in zip(range(FRAMES), c.decode(video=0))]


def _layout(f: av.VideoFrame, spec: FitSpec):
    rot = int(round((f.rotation or 0) / 90)) % 4
    disp = (f.height, f.width) if rot % 2 else (f.width, f.height)
    sw, sh, x0, y0 = crop_box(*disp, spec.width, spec.height)
    return rot, ((sh, sw) if rot % 2 else (sw, sh)), x0, y0


def reference_fit(f: av.VideoFrame, spec: FitSpec) -> np.ndarray:
    from PIL import Image

    rot, (rw, rh), x0, y0 = _layout(f, spec)
    # Luma untouched; only chroma is interpolated (lanczos, swscale knows the chroma siting).
    yuv = f.reformat(format="yuv444p", interpolation=I.LANCZOS | I.ACCURATE_RND | I.FULL_CHR_H_INP, threads=1)
    y, u, v = (np.frombuffer(p, np.uint8).reshape(f.height, p.line_size)[:, :f.width].astype(np.float64)
               for p in yuv.planes)
    y, u, v = (y - 16) * (255 / 219), (u - 128) * (255 / 224), (v - 128) * (255 / 224)
    rgb = np.stack([y + 1.402 * v, y - 0.344136 * u - 0.714136 * v, y + 1.772 * u], axis=-1)
    big = np.stack([np.asarray(Image.fromarray(rgb[..., c].astype(np.float32)).resize((rw, rh), Image.LANCZOS))
                    for c in range(3)], axis=-1)
    big = np.rot90(big, rot)
    return np.clip(big[y0:y0 + spec.height, x0:x0 + spec.width], 0, 255)


def old_fit(f: av.VideoFrame, spec: FitSpec) -> np.ndarray:
    rot, (rw, rh), x0, y0 = _layout(f, spec)
    img = f.reformat(width=rw, height=rh, format="rgb24", interpolation=I.BICUBIC | I.FULL_CHR_H_INT,
                     threads=1).to_ndarray()
    return np.rot90(img, rot)[y0:y0 + spec.height, x0:x0 + spec.width]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-12)))


CASES = [  # (source w, h, rotation, target w, h): downscale, upscale, portrait, odd sizes, crops on both axes
    (854, 480, None, 512, 512),
    (1280, 720, None, 256, 256),
    (320, 240, None, 512, 512),
    (480, 854, None, 512, 288),
    (426, 240, None, 768, 448),
    (641, 359, None, 256, 192),  # odd sizes, 4:4:4
    (333, 501, None, 320, 512),  # odd sizes, upscale
    (640, 360, -90, 288, 512),   # phone clip shown portrait
    (720, 404, None, 704, 416),  # barely any scaling
]


@pytest.mark.parametrize("w,h,rotation,tw,th", CASES)
def test_fit_matches_reference_and_old_fit(tmp_path, w, h, rotation, tw, th):
    path = encode(tmp_path / "clip.mp4", w, h, seed=w + h, rotation=rotation)
    spec = FitSpec(tw, th, FRAMES, FPS)
    new = decode_and_fit(path, spec)
    assert new.shape == (FRAMES, th, tw, 3) and new.dtype == np.uint8
    frames = decoded(path)
    ref = np.stack([reference_fit(f, spec) for f in frames])
    old = np.stack([old_fit(f, spec) for f in frames])
    p_new, p_old, p_same = psnr(new, ref), psnr(old, ref), psnr(new, old)
    print(f"{w}x{h} rot={rotation} -> {tw}x{th}: new {p_new:.2f} dB, old {p_old:.2f} dB vs reference; "
          f"new vs old {p_same:.2f} dB")
    assert p_new >= MIN_PSNR_VS_REFERENCE
    assert p_new >= p_old - MAX_LOSS_VS_OLD
    assert p_same >= MIN_PSNR_NEW_VS_OLD


def test_reference_catches_a_one_pixel_shift(tmp_path):
    """The check has teeth: the old fit's window moved by one scaled pixel loses clearly against the reference."""
    path = encode(tmp_path / "clip.mp4", 854, 480, seed=1)
    spec = FitSpec(512, 512, FRAMES, FPS)
    frames = decoded(path)
    ref = np.stack([reference_fit(f, spec) for f in frames])
    good = np.stack([old_fit(f, spec) for f in frames])
    wide = FitSpec(514, 512, FRAMES, FPS)  # same scale (height-bound), window 1 px further left
    shifted = np.stack([old_fit(f, wide)[:, 2:] for f in frames])
    assert psnr(shifted, ref) < psnr(good, ref) - 3 and psnr(shifted, good) < MIN_PSNR_NEW_VS_OLD
