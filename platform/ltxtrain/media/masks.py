"""Inpainting masks for masked video-to-video IC-LoRA: fit a user mask onto a fitted clip, then onto the latent grid.

Convention (user facing and internal): WHITE = regenerate, BLACK = keep. `fit_mask` returns float values in [0, 1]
(1 = regenerate), gray = mean of R, G, B / 255; thresholding happens in `mask_to_latent`.

Geometry mirrors `fit.decode_and_fit` exactly. The mask is treated as drawn over the clip's whole *display* picture
(`clip_size`), so a mask of another size is first stretched to the clip's size; then it gets the clip's own
scale-to-fill + center-crop window (`fit.crop_box` on the clip's size). Both steps are one coordinate map, applied in
a single resampling step (no double blur). A video mask's own SAR is irrelevant (it is stretched to the clip anyway);
its rotation (display matrix) and an image mask's EXIF orientation are honoured, like the clip's.

Resampling is conservative: each output pixel takes the MAX over every mask pixel its footprint touches (its
footprint is its square in the mask's continuous coordinates). Thresholding therefore commutes with the resize:
`fit_mask(...) > t` is exactly "some mask pixel under this output pixel is > t", whatever t is, so no white mask pixel
is lost to downscaling or blur, and `mask_to_latent`'s ANY-pixel rule carries that to the latent cells: every token
whose pixels contain something white is regenerated, and kept tokens are truly kept.

Time also mirrors `decode_and_fit`: a video mask shares the clip's timeline (0 = the stream's start) and output frame
i is the mask frame on screen at the clip's output timestamp `times[i]` (the same `frame_times` the clip used, with the
same rounding slack). Timestamps past the mask's end freeze-hold its last frame; mask frames past the clip's last
timestamp are never decoded. For equal-rate mask and clip this is the spec's "shorter mask holds its last frame,
longer mask is trimmed"; for different rates it keeps the mask in sync with the picture instead of by frame index.

Latent grid (video VAE): 32x32 pixels per cell; causal time: latent frame 0 = pixel frame 0, latent frame k >= 1 =
pixel frames 8k-7 .. 8k. (The official trainer groups {0..7},{8..15},... and stretches masks without the crop; both
are fixed here.)
"""

from __future__ import annotations

import logging
import os

import av
import numpy as np

from .fit import FitSpec, crop_box, fill_shown_frames, hold_last
from .probe import IMAGE_EXTENSIONS, MediaError, open_container

log = logging.getLogger(__name__)

MASK_IMAGE_EXTENSIONS = IMAGE_EXTENSIONS  # .png .jpg .jpeg .bmp .webp: one mask for every frame


class MaskError(MediaError):
    """A mask that cannot be used (missing, unreadable, no frames, nothing to regenerate). Names the mask file.

    Subclass of MediaError, so code that already skips/reports bad media catches masks too.
    """


def is_image_mask(path: str) -> bool:
    return str(path).lower().endswith(MASK_IMAGE_EXTENSIONS)


# ---------------------------------------------------------------------------------------------------------------
# geometry


def _footprint_index(out_len: int, offset: int, scaled_len: int, src_len: int) -> np.ndarray:
    """[out_len, K] source indices whose pixels output pixels 0..out_len-1 touch (rows padded with their last index).

    Output pixel x covers [x + offset, x + offset + 1) of the scaled picture (scaled_len wide), i.e.
    [(x + offset) * src_len / scaled_len, (x + offset + 1) * src_len / scaled_len) of the source: integer math, exact.
    """
    x = np.arange(out_len, dtype=np.int64) + offset
    lo = (x * src_len) // scaled_len
    hi = -((-(x + 1) * src_len) // scaled_len)  # ceil
    lo = np.clip(lo, 0, src_len - 1)
    hi = np.clip(hi, lo + 1, src_len)
    k = int((hi - lo).max())
    idx = lo[:, None] + np.arange(k)[None, :]
    return np.minimum(idx, hi[:, None] - 1)


class _Geometry:
    """Maps a (src_w, src_h) mask picture onto the fitted clip frame: stretch to clip_size, then the clip's crop."""

    def __init__(self, src_w: int, src_h: int, clip_size: tuple[int, int], spec: FitSpec):
        cw, ch = clip_size
        sw, sh, x0, y0 = crop_box(cw, ch, spec.width, spec.height)
        # mask -> clip is a stretch by (cw/src_w, ch/src_h); clip -> scaled by (sw/cw, sh/ch): together src -> sw x sh.
        self.cols = _footprint_index(spec.width, x0, sw, src_w)
        self.rows = _footprint_index(spec.height, y0, sh, src_h)

    def __call__(self, gray: np.ndarray) -> np.ndarray:
        g = gray[:, self.cols].max(axis=2)  # [src_h, W]
        return g[self.rows].max(axis=1)  # [H, W]


def _check_aspect(path: str, w: int, h: int, clip_size: tuple[int, int]) -> None:
    cw, ch = clip_size
    if abs((w / h) / (cw / ch) - 1) > 0.02:
        log.warning("%s: mask is %dx%d but its clip is %dx%d; the mask is stretched to the clip's shape",
                    os.path.basename(str(path)), w, h, cw, ch)


# ---------------------------------------------------------------------------------------------------------------
# reading


def _image_gray(path: str) -> np.ndarray:
    """float32 [h, w] in [0, 1]: mean of RGB / 255, upright (EXIF), transparent = black (keep)."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode.startswith("I;16") or im.mode in ("I", "F"):  # 16-bit / int / float grayscale
                a = np.asarray(im, dtype=np.float32)
                if im.mode.startswith("I;16"):
                    scale = 65535.0
                elif im.mode == "F" and float(a.max(initial=0.0)) <= 1.0:
                    scale = 1.0
                else:
                    scale = 65535.0 if float(a.max(initial=0.0)) > 255 else 255.0
                return np.clip(a / scale, 0.0, 1.0)
            if "A" in im.getbands() or "transparency" in im.info:
                im = Image.alpha_composite(Image.new("RGBA", im.size, (0, 0, 0, 255)), im.convert("RGBA"))
            rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except Exception as e:  # PIL raises many kinds (UnidentifiedImageError, OSError, DecompressionBombError...)
        raise MaskError(path, f"unreadable mask image ({e})") from e
    return rgb.sum(axis=2, dtype=np.uint16).astype(np.float32) * np.float32(1 / 765)


def _frame_gray(frame: av.VideoFrame) -> np.ndarray:
    """uint16 [h, w] sum of R+G+B (0..765) at the frame's stored size, turned upright like fit._Fitter."""
    rgb = frame.reformat(format="rgb24", threads=1).to_ndarray()
    g = rgb[..., 0].astype(np.uint16)  # (4x faster than rgb.sum(axis=2, dtype=uint16))
    g += rgb[..., 1]
    g += rgb[..., 2]
    rot = int(round((frame.rotation or 0) / 90)) % 4
    return np.rot90(g, rot) if rot else g


def _fit_video_mask(path: str, clip_size, spec: FitSpec, times: np.ndarray) -> np.ndarray:
    n = len(times)
    out = np.empty((n, spec.height, spec.width), np.float32)
    with open_container(path, MaskError, "mask video") as container:
        if not container.streams.video:
            raise MaskError(path, "mask has no video stream")
        vs = container.streams.video[0]
        vs.thread_type = "AUTO"
        geom_key, geom, warned = None, None, False

        def fit(frame: av.VideoFrame, dst: np.ndarray) -> None:
            nonlocal geom_key, geom, warned
            g = _frame_gray(frame)
            key = g.shape
            if key != geom_key:
                geom_key, geom = key, _Geometry(g.shape[1], g.shape[0], clip_size, spec)
                if not warned:
                    _check_aspect(path, g.shape[1], g.shape[0], clip_size)
                    warned = True
            np.multiply(geom(g), np.float32(1 / 765), out=dst)

        try:
            idx, prev, _, shown = fill_shown_frames(container, vs, times, out, fit, spec.frame_rate)
        except av.FFmpegError as e:
            raise MaskError(path, f"decoding the mask failed ({e})") from e
        if idx < n:  # shorter mask: freeze-hold the last frame
            if prev is None:
                raise MaskError(path, "mask video has no decodable frames")
            hold_last(out, idx, prev, shown, fit)
    return out


# ---------------------------------------------------------------------------------------------------------------
# public API


def fit_mask(path: str, clip_size: tuple[int, int], spec: FitSpec, times: np.ndarray | None = None,
             window_start: float = 0.0) -> np.ndarray:
    """The mask over the fitted clip: float32 [F, spec.height, spec.width] in [0, 1], 1 = WHITE = regenerate.

    clip_size: (w, h) of the clip's display picture, the size decode_and_fit crops from (SAR and rotation applied;
        `clip_display_size` computes it).
    times: the clip's output timestamps (seconds on the clip's source timeline, from `frame_times`); F = len(times).
        None: `window_start + arange(spec.num_frames) / spec.frame_rate` (the non-auto-scaled rule).
    Image masks give the same frame at every timestamp; the result is then a read-only broadcast view (no copy).
    """
    path = str(path)
    if times is None:
        times = window_start + np.arange(spec.num_frames) / spec.frame_rate
    times = np.asarray(times, dtype=np.float64).reshape(-1)
    if len(times) == 0:
        raise ValueError("fit_mask: no timestamps")
    if np.any(np.diff(times) < 0):
        raise ValueError("fit_mask: timestamps must be non-decreasing")
    cw, ch = (int(v) for v in clip_size)
    if cw <= 0 or ch <= 0:
        raise ValueError(f"fit_mask: bad clip size {clip_size}")
    if not os.path.isfile(path):
        raise MaskError(path, "mask file not found")
    if is_image_mask(path):
        gray = _image_gray(path)
        _check_aspect(path, gray.shape[1], gray.shape[0], (cw, ch))
        img = _Geometry(gray.shape[1], gray.shape[0], (cw, ch), spec)(gray).astype(np.float32)
        out = np.broadcast_to(img, (len(times),) + img.shape)
        return out
    return _fit_video_mask(path, (cw, ch), spec, times)


def mask_to_latent(mask: np.ndarray, temporal: int = 8, spatial: int = 32, threshold: float = 0.5) -> np.ndarray:
    """[F, H, W] pixel mask -> bool [F', H', W'], F' = (F-1)//temporal + 1, H' = H//spatial, W' = W//spatial.

    A cell is True (regenerate) if ANY pixel of it, over its causal frame group ({0}, {1..8}, {9..16}, ...),
    is > threshold. Frames past the last full group and pixels past the last full cell are ignored.
    """
    m = np.asarray(mask)
    if m.ndim != 3:
        raise ValueError(f"mask_to_latent: expected [F, H, W], got shape {m.shape}")
    f, h, w = m.shape
    if f < 1 or h < spatial or w < spatial:
        raise ValueError(f"mask_to_latent: mask {m.shape} smaller than one latent cell")
    fl, hl, wl = (f - 1) // temporal + 1, h // spatial, w // spatial

    def cells(frame: np.ndarray) -> np.ndarray:
        return (frame[:hl * spatial, :wl * spatial] > threshold).reshape(hl, spatial, wl, spatial).any(axis=(1, 3))

    if m.strides[0] == 0:  # broadcast image mask: every frame is the same
        return np.broadcast_to(cells(m[0]), (fl, hl, wl)).copy()
    out = np.zeros((fl, hl, wl), bool)
    for i in range(1 + (fl - 1) * temporal):
        out[(i + temporal - 1) // temporal] |= cells(m[i])  # causal: 0 -> 0, 1..8 -> 1, 9..16 -> 2, ...
    return out


def latent_mask_tokens(latent_mask: np.ndarray) -> np.ndarray:
    """[F', H', W'] -> [F'*H'*W'] bool in (f, h, w) order, the video patchifier's token order (patch size 1)."""
    lm = np.asarray(latent_mask)
    if lm.ndim != 3:
        raise ValueError(f"latent_mask_tokens: expected [F', H', W'], got shape {lm.shape}")
    return np.ascontiguousarray(lm, dtype=bool).reshape(-1)


def regenerate_fraction(latent_mask: np.ndarray) -> float:
    """Share of latent cells to regenerate: 0.0 = all black (nothing to learn), 1.0 = all white (no kept tokens)."""
    lm = np.asarray(latent_mask, dtype=bool)
    return float(lm.mean()) if lm.size else 0.0


def require_regenerate(latent_mask: np.ndarray, path: str) -> float:
    """Raise MaskError naming `path` if the mask regenerates nothing; return the regenerated fraction otherwise.

    (An all-white mask is allowed: it is plain video-to-video with no kept tokens; callers may still warn.)
    """
    frac = regenerate_fraction(latent_mask)
    if frac == 0.0:
        raise MaskError(path, "mask is all black after fitting to the clip (nothing to regenerate; WHITE = "
                              "regenerate, BLACK = keep)")
    return frac


def clip_display_size(path: str) -> tuple[int, int]:
    """(w, h) of the picture decode_and_fit / fit_image crop from: SAR and rotation (video), EXIF (image) applied."""
    path = str(path)
    if is_image_mask(path):
        from PIL import Image, ImageOps

        try:
            with Image.open(path) as im:
                return ImageOps.exif_transpose(im).size
        except Exception as e:
            raise MediaError(path, f"unreadable image ({e})") from e
    with open_container(path) as container:
        if not container.streams.video:
            raise MediaError(path, "no video stream")
        vs = container.streams.video[0]
        try:
            frame = next(container.decode(vs), None)
        except av.FFmpegError as e:
            raise MediaError(path, f"decoding failed ({e})") from e
        if frame is None:
            raise MediaError(path, "no decodable video frames")
        sar = vs.sample_aspect_ratio
        disp = (int(round(frame.width * (float(sar) if sar else 1.0))), frame.height)
        rot = int(round((frame.rotation or 0) / 90)) % 4
        return disp[::-1] if rot % 2 else disp
