"""Quality of `decode_and_fit` (crop-first, planar-RGB swscale) against a float reference resize and the old fit.

Real-looking clips are encoded here: colour gradients, hard edges, fine stripes and text-like glyph rows that move,
at several sizes and aspects (odd sizes in 4:4:4, a rotated phone clip), fitted with both upscaling and
downscaling, untagged (BT.601 limited range, what swscale assumes) or tagged BT.709 full range. The reference: the
decoded frame at its stored size with chroma upsampled by lanczos, turned to RGB in float64 by the frame's tags,
resized to the scale-to-fill size with
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
# Thresholds, measured margins below them: new vs reference is 34-50 dB on these clips; new vs old >= 47 dB.
MIN_PSNR_VS_REFERENCE = 30.0
# The new fit may be at most 0.3 dB further from the reference than the old one, or add at most 0.35 levels^2 of
# squared error: it rounds the scaled YUV to 8 bits before the matrix, which adds (1.164^2 + 1.6^2) / 12 ~ 0.3 to
# R's squared error - nothing on ordinary clips (measured +0.1..0.6 at 35-37 dB, i.e. 0.03-0.18 dB), but 2 dB on a
# near-lossless one (0.40 -> 0.66 levels^2, 52 -> 50 dB; an RMS error of 0.8 of a level).
MAX_LOSS_VS_OLD = 0.3
MAX_EXTRA_SQUARED_ERROR = 0.35
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


def encode(path, w: int, h: int, seed: int, rotation: int | None = None, bt709_full: bool = False) -> str:
    pix_fmt = "yuv420p" if w % 2 == 0 and h % 2 == 0 else "yuv444p"  # 4:2:0 needs even sizes
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=FPS)
        s.width, s.height, s.pix_fmt = w, h, pix_fmt
        if bt709_full:  # tags only (decoders hand back yuvj420p, colorspace 1): both fits must honour them
            s.codec_context.colorspace, s.codec_context.color_range = 1, 2
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
    if f.color_range == 2:  # full range
        u, v = u - 128, v - 128
    else:
        y, u, v = (y - 16) * (255 / 219), (u - 128) * (255 / 224), (v - 128) * (255 / 224)
    kr, kb = (0.2126, 0.0722) if f.colorspace == 1 else (0.299, 0.114)  # BT.709 tag, else BT.601
    kg = 1 - kr - kb
    rgb = np.stack([y + 2 * (1 - kr) * v, y - (2 * kb * (1 - kb) * u + 2 * kr * (1 - kr) * v) / kg,
                    y + 2 * (1 - kb) * u], axis=-1)
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


CASES = [  # (source w, h, rotation, target w, h, BT.709 full range): downscale, upscale, portrait, odd sizes, crops
    (854, 480, None, 512, 512, False),
    (1280, 720, None, 256, 256, False),
    (1280, 720, None, 512, 288, True),   # HD clip tagged BT.709, full range
    (320, 240, None, 512, 512, False),
    (480, 854, None, 512, 288, False),
    (426, 240, None, 768, 448, False),
    (641, 359, None, 256, 192, False),  # odd sizes, 4:4:4
    (333, 501, None, 320, 512, True),   # odd sizes, upscale, tagged
    (640, 360, -90, 288, 512, False),   # phone clip shown portrait
    (720, 404, None, 704, 416, False),  # barely any scaling
]


@pytest.mark.parametrize("w,h,rotation,tw,th,bt709_full", CASES)
def test_fit_matches_reference_and_old_fit(tmp_path, w, h, rotation, tw, th, bt709_full):
    path = encode(tmp_path / "clip.mp4", w, h, seed=w + h, rotation=rotation, bt709_full=bt709_full)
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
    mse_new, mse_old = (255.0 ** 2 / 10 ** (p / 10) for p in (p_new, p_old))
    assert p_new >= p_old - MAX_LOSS_VS_OLD or mse_new <= mse_old + MAX_EXTRA_SQUARED_ERROR, (mse_new, mse_old)
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
