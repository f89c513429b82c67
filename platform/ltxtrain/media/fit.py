"""Fit a clip to the training shape: resample to the target rate, keep N frames, scale to fill, center-crop.

Times are seconds on the *source timeline*: 0 is the video stream's start, the same origin scene detection uses.
Resizing uses swscale through PyAV, measured 6-7x faster than torch resizing; `_Fitter` scales only the source
window the crop keeps, in YUV, and converts only the output window to RGB with one float matrix: about 7x cheaper
than the old full-frame packed-RGB scale, as close to a float reference resize (tests/test_fit_quality.py).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import av
import cv2
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter

from .probe import MediaError, open_container, probe

# swscale bicubic widens its kernel when downscaling (no aliasing). FULL_CHR_H_INT: without it swscale's
# scaling path darkens by ~2 levels (measured on flat gray frames); same speed.
_INTERP = Interpolation.BICUBIC | Interpolation.FULL_CHR_H_INT
_CV2_ROTATE = {1: cv2.ROTATE_90_COUNTERCLOCKWISE, 2: cv2.ROTATE_180, 3: cv2.ROTATE_90_CLOCKWISE}  # np.rot90's k
# (Kr, Kb) by AVColorSpace, as swscale reads a frame's tag: BT.709, FCC, SMPTE 240M, BT.2020; anything else
# (untagged, BT.601/470BG/170M) is BT.601.
_LUMA_WEIGHTS = {1: (0.2126, 0.0722), 4: (0.30, 0.11), 7: (0.212, 0.087), 9: (0.2627, 0.0593), 10: (0.2627, 0.0593)}
_FULL_RANGE = 2  # AVCOL_RANGE_JPEG


def yuv_to_rgb_matrix(colorspace: int, full_range: bool) -> np.ndarray:
    """3x4 float matrix for cv2.transform: [R, G, B] = M[:, :3] @ [Y, U, V] + M[:, 3] on 8-bit samples."""
    kr, kb = _LUMA_WEIGHTS.get(int(colorspace or 0), (0.299, 0.114))
    kg = 1.0 - kr - kb
    ys, cs, y0 = (1.0, 1.0, 0.0) if full_range else (255 / 219, 255 / 224, 16.0)
    rows = np.array([[1.0, 0.0, 2 * (1 - kr)],
                     [1.0, -2 * kb * (1 - kb) / kg, -2 * kr * (1 - kr) / kg],
                     [1.0, 2 * (1 - kb), 0.0]]) * np.array([ys, cs, cs])
    offset = -rows @ np.array([y0, 128.0, 128.0])
    return np.hstack([rows, offset[:, None]]).astype(np.float32)


@dataclass(frozen=True)
class FitSpec:
    width: int
    height: int
    num_frames: int
    frame_rate: float


@dataclass(frozen=True)
class TimeWindow:
    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


class ClipTooShort(Exception):
    def __init__(self, available: int, needed: int, frame_rate: float, duration: float):
        self.available, self.needed = available, needed
        super().__init__(f"clip too short: {available} frames available at {frame_rate:g} fps "
                         f"({duration:.3f} s), {needed} needed")


def frames_available(duration: float, frame_rate: float) -> int:
    # The epsilon absorbs float error (3.56 * 25 = 88.99999...), far below one frame.
    return max(0, int(math.floor(duration * frame_rate + 1e-3)))


def frame_times(window: TimeWindow, spec: FitSpec, auto_scale: bool) -> np.ndarray:
    n = spec.num_frames
    if auto_scale:
        # Output frame i stands for the i-th of n equal slices of the window, so the whole window maps onto
        # exactly n frames; the stretch factor is window.duration / (n / frame_rate) (audio must match it).
        return window.start + np.arange(n) * (window.duration / n)
    avail = frames_available(window.duration, spec.frame_rate)
    if avail < n:
        raise ClipTooShort(avail, n, spec.frame_rate, window.duration)
    return window.start + np.arange(n) / spec.frame_rate


def crop_box(src_w: int, src_h: int, dst_w: int, dst_h: int) -> tuple[int, int, int, int]:
    """(scaled_w, scaled_h, x0, y0): scale to fill dst, then take the centred dst window.

    Pure function of the sizes, so equal-sized clips (IC-LoRA pairs) get the same window.
    """
    scale = max(dst_w / src_w, dst_h / src_h)
    sw = max(dst_w, int(round(src_w * scale)))
    sh = max(dst_h, int(round(src_h * scale)))
    return sw, sh, (sw - dst_w) // 2, (sh - dst_h) // 2


RATIO_CAP = 1 / 64


def _axis_plan(src_len: int, scaled_len: int, off: int, length: int):
    """Source crop [a, e) and its scaled size m, and where the wanted window starts in it: (a, e, m, c).

    swscale maps output pixel centre j to source (j + 0.5) * src_len / scaled_len - 0.5. Scaling only [a, e) to m
    pixels keeps that map exactly when a and e land on whole scaled pixels (a * scaled_len / src_len integer), so
    the window comes out as the full-frame scale would give it, at a fraction of the work. a and e are even
    (4:2:0 chroma stays aligned), leave the scaler's kernel its full support inside the picture, and are found by
    search; a whole-pixel error under `ratio_cap` scaled pixels (swscale's own fixed-point error is ~1/100) counts.
    """
    r = src_len / scaled_len
    margin = 3 * max(1.0, r) + 2  # bicubic support: 2 source px, widened by the ratio when shrinking
    lo = int(math.floor(off * r - margin))
    hi = int(math.ceil((off + length) * r + margin))

    def on_grid(x: int) -> bool:
        rem = (x * scaled_len) % src_len
        return min(rem, src_len - rem) <= RATIO_CAP * src_len

    a = next((x for x in range(lo - lo % 2, 0, -2) if on_grid(x)), 0) if lo > 0 else 0
    e = next((x for x in range(hi + hi % 2, src_len, 2) if on_grid(x)), src_len) if hi < src_len else src_len
    a_s, e_s = round(a * scaled_len / src_len), round(e * scaled_len / src_len)
    return a, e, e_s - a_s, off - a_s


class _Fitter:
    """Converts decoded frames to cropped RGB arrays; the layout follows the frame's size, SAR and rotation.

    Per frame: crop the source to the part the output window needs (a zero-copy libavfilter `crop`), scale it in
    one swscale pass, then write the window into the caller's output slot. YUV sources are scaled to planar 4:4:4
    YUV (no colour conversion inside swscale, ~2.3x cheaper than scaling to planar RGB) and only the window is
    turned to RGB, by one float matrix from the frame's colorspace and range tags (cv2.transform, rounded once).
    RGB, grey and palette sources are scaled to planar RGB (gbrp: swscale's fast RGB path, ~5x faster than packed
    rgb24). The sws context, filter graph and scratch buffers are kept per layout.
    """

    def __init__(self, spec: FitSpec, sar, threads: int = 1):
        self.spec, self.sar, self.threads = spec, sar, threads
        self.key, self.plan, self.graph = None, None, None
        self.sws = VideoReformatter()

    def _make_plan(self, frame: av.VideoFrame, rot: int) -> None:
        disp_w = frame.width * (float(self.sar) if self.sar else 1.0)  # non-square pixels
        disp = (int(round(disp_w)), frame.height)
        if rot % 2:
            disp = disp[::-1]
        sw, sh, x0, y0 = crop_box(*disp, self.spec.width, self.spec.height)
        rw, rh = (sh, sw) if rot % 2 else (sw, sh)  # scaled size in the frame's stored orientation
        # The display window [y0:y0+H, x0:x0+W] of rot90(scaled, rot), as a rectangle of the stored picture.
        corners = np.rot90(np.arange(rw * rh).reshape(rh, rw), rot)[[y0, y0, y0 + self.spec.height - 1],
                                                                    [x0, x0 + self.spec.width - 1, x0]]
        rows, cols = corners // rw, corners % rw
        wy, wx = int(rows.min()), int(cols.min())
        wh, ww = int(rows.max()) - wy + 1, int(cols.max()) - wx + 1
        ax, ex, mw, cx = _axis_plan(frame.width, rw, wx, ww)
        ay, ey, mh, cy = _axis_plan(frame.height, rh, wy, wh)
        self.graph = None
        if (ax, ay, ex, ey) != (0, 0, frame.width, frame.height):
            g = av.filter.Graph()
            src = g.add_buffer(template=frame)
            crop = g.add("crop", f"w={ex - ax}:h={ey - ay}:x={ax}:y={ay}:exact=1")
            sink = g.add("buffersink")
            src.link_to(crop)
            crop.link_to(sink)
            g.configure()
            self.graph = g
        name = frame.format.name
        if name.startswith(("yuv", "nv")):
            full = frame.color_range == _FULL_RANGE or name.startswith("yuvj")
            self.matrix = yuv_to_rgb_matrix(frame.colorspace, full)
            self.scaled_format = "yuv444p"
        else:
            self.matrix, self.scaled_format = None, "gbrp"
        self.window = np.empty((wh, ww, 3), np.uint8)  # the window's samples interleaved, before conversion
        self.upright = np.empty((wh, ww, 3), np.uint8) if rot else None  # RGB before the display rotation
        self.plan = (rot, mw, mh, slice(cy, cy + wh), slice(cx, cx + ww))

    def __call__(self, frame: av.VideoFrame, dst: np.ndarray) -> None:
        rot = int(round((frame.rotation or 0) / 90)) % 4  # quarter turns counter-clockwise
        key = (frame.width, frame.height, frame.format.name, rot, frame.colorspace, frame.color_range)
        if key != self.key:
            self._make_plan(frame, rot)
            self.key = key
        rot, mw, mh, ys, xs = self.plan
        if self.graph is not None:
            self.graph.push(frame)
            frame = self.graph.pull()
        # threads=1 by default: Ray runs one task per core; more only when the task was given more cores.
        scaled = self.sws.reformat(frame, width=mw, height=mh, format=self.scaled_format, interpolation=_INTERP,
                                   threads=self.threads)
        planes = [np.frombuffer(p, np.uint8).reshape(mh, p.line_size)[ys, xs] for p in scaled.planes]
        out = self.upright if rot else dst  # unrotated: straight into the output slot, no copy
        if self.matrix is not None:
            cv2.transform(cv2.merge(planes, dst=self.window), self.matrix, dst=out)
        else:
            cv2.merge(planes[2:] + planes[:2], dst=out)  # gbrp planes are G, B, R; cv2 interleaves 3x faster
        if rot:
            cv2.rotate(out, _CV2_ROTATE[rot], dst=dst)


def _origin(vs) -> float:
    return float(vs.start_time * vs.time_base) if vs.start_time is not None and vs.time_base else 0.0


def fill_shown_frames(container, vs, times: np.ndarray, out: np.ndarray, fit, fallback_fps: float):
    """Decode `vs` once and fit(frame on screen at times[i], out[i]) for every timestamp reached.

    Frame-rate resampling by duplication/dropping: the frame shown at t is the last one starting at or before t.
    `fit` writes into the slot it is given; a frame shown at several timestamps is fitted once, into the first, and
    copied to the others; frames shown at none are never fitted. Decoding stops as soon as the last timestamp is
    covered. Returns (filled, last_frame, last_time, last_slot), last_slot being the slot that holds last_frame's
    fit (None if it has none yet), so callers decide what a stream that ends early means (error for clips,
    freeze-hold for masks; `hold_last` fills the rest). Raises av.FFmpegError for the caller to name the file.
    """
    n = len(times)
    src_fps = float(vs.average_rate or vs.guessed_rate or 0) or None
    eps = min(1e-3, 0.1 / src_fps) if src_fps else 1e-3  # timestamp rounding (e.g. 1 ms time bases)
    origin = _origin(vs)
    if times[0] > 1.0 and vs.time_base:
        try:  # jump to the keyframe before the first wanted timestamp instead of decoding from the start
            container.seek(int((times[0] + origin) / vs.time_base), stream=vs, backward=True)
        except av.FFmpegError:
            container.seek(0, stream=vs, backward=True)
    idx, prev, shown, prev_t, last_t = 0, None, None, None, None
    for frame in container.decode(vs):
        t = frame.time - origin if frame.time is not None else (
            last_t + 1 / (src_fps or fallback_fps) if last_t is not None else 0.0)
        last_t = t
        # Every wanted timestamp before this frame's start is shown by the previous frame.
        while idx < n and t > times[idx] + eps:
            if shown is None:
                fit(prev if prev is not None else frame, out[idx])
                shown = out[idx]
            else:
                out[idx] = shown
            idx += 1
        if idx == n:
            break  # the last needed frame is known: stop decoding
        prev, shown, prev_t = frame, None, t
    return idx, prev, prev_t, shown


def hold_last(out: np.ndarray, filled: int, last_frame, last_slot, fit) -> None:
    """out[filled:] = the last frame, fitted now if it was not yet: it stays on screen after the stream ends."""
    if last_slot is None:
        fit(last_frame, out[filled])
        last_slot, filled = out[filled], filled + 1
    out[filled:] = last_slot


def scale_threads() -> int:
    """swscale threads for this process: the cores Ray gave the task (Ray sets OMP_NUM_THREADS to its num_cpus),
    else 1: in one process the decoder's frame threads already use the other cores, and 2 slice threads measured no
    faster (median decode+fit / decode-only 0.33 either way, bench/README)."""
    try:
        return max(1, min(8, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    except ValueError:
        return 1


def decode_and_fit(path: str, spec: FitSpec, window: TimeWindow | None = None,
                   auto_scale: bool = False, threads: int | None = None) -> np.ndarray:
    path = str(path)
    if window is None:
        window = TimeWindow(0.0, probe(path).duration)
    times = frame_times(window, spec, auto_scale)  # raises ClipTooShort before any decoding
    n = len(times)
    out = np.empty((n, spec.height, spec.width, 3), np.uint8)
    with open_container(path) as container:
        if not container.streams.video:
            raise MediaError(path, "no video stream")
        vs = container.streams.video[0]
        vs.thread_type = "AUTO"  # frame+slice threads: decoding is the other half of the cost
        src_fps = float(vs.average_rate or vs.guessed_rate or 0) or None
        fit = _Fitter(spec, vs.sample_aspect_ratio, scale_threads() if threads is None else threads)
        try:
            idx, prev, prev_t, shown = fill_shown_frames(container, vs, times, out, fit, spec.frame_rate)
        except av.FFmpegError as e:
            raise MediaError(path, f"decoding failed ({e})") from e
        if idx < n:  # stream ended: the last frame stays on screen until its end
            if prev is None:
                raise MediaError(path, "no decodable video frames")
            period = 1 / (src_fps or spec.frame_rate)
            if times[-1] > prev_t + 2 * period:
                # Container metadata promised more than the stream holds; holding the last frame for the gap
                # would train on a frozen picture. One frame of slack for rounding.
                raise MediaError(path, f"video stream ends at {prev_t + period:.3f} s but frames up to "
                                       f"{times[-1]:.3f} s are needed (truncated file or wrong duration metadata)")
            hold_last(out, idx, prev, shown, fit)
    return out


def fit_image(path: str, width: int, height: int) -> np.ndarray:
    from PIL import Image, ImageOps

    path = str(path)
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)  # phone photos store rotation in EXIF
            if "A" in im.getbands() or "transparency" in im.info:
                # Transparent pixels become black, not whatever colour the file happens to store under them.
                im = Image.alpha_composite(Image.new("RGBA", im.size, (0, 0, 0, 255)), im.convert("RGBA"))
            im = im.convert("RGB")
            sw, sh, x0, y0 = crop_box(im.width, im.height, width, height)
            im = im.resize((sw, sh), Image.BICUBIC).crop((x0, y0, x0 + width, y0 + height))
            arr = np.asarray(im, dtype=np.uint8)
    except Exception as e:  # PIL raises many kinds (UnidentifiedImageError, OSError, DecompressionBombError...)
        raise MediaError(path, f"unreadable image ({e})") from e
    return arr[None].copy()


def frames_to_video_tensor(frames: np.ndarray):
    """uint8 [F, H, W, 3] -> float32 [3, F, H, W] in [-1, 1], the VAE's input layout."""
    import torch  # lazy: decode workers need no torch

    t = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2)
    return t.to(torch.float32, memory_format=torch.contiguous_format).div_(127.5).sub_(1.0)
