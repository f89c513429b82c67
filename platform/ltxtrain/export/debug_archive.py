"""The `debug_dataset` archive: what training actually saw, one folder per preprocessed sample.

    index.json                         {"count": N, "samples": [{"index", "folder", "name", "caption", "tokens",
                                        "frames", "width", "height", "fps", "files"}]}
    000_<safe name>/target.mp4         the fitted clip (with its fitted audio, if any)
    000_<safe name>/reference.mp4      the IC-LoRA reference as trained (after reference scaling), if any
    000_<safe name>/mask.mp4           the inpainting mask over the clip: WHITE = regenerate, black = keep
    000_<safe name>/caption.txt        the final caption (trigger phrase included)
    000_<safe name>/info.json          name, caption, tokens, frames, size, fps, and what else is there

Samples are encoded one at a time into a scratch folder and added to the zip, so memory holds one sample whatever the
dataset's size (pass a generator to avoid holding them all). The zip is written under a temporary name beside the
target and renamed when complete.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import zipfile
from typing import Iterable

import numpy as np

from .reel import write_clip

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(name: str, limit: int = 60) -> str:
    s = _SAFE.sub("_", str(name)).strip("._-")[:limit].rstrip("._-")
    return s or "sample"


def _frames(x, what: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 4 or a.shape[-1] != 3 or a.shape[0] == 0 or a.dtype != np.uint8:
        raise ValueError(f"{what}: expected uint8 [F, H, W, 3], got {a.dtype} {a.shape}")
    return a


def _time_index(n_out: int, n_in: int) -> np.ndarray:
    """Which of n_in frames covers each of n_out frames.

    A causal-latent-style length (n_in - 1 dividing n_out - 1: frame 0 alone, then groups of t) maps frame i to
    ceil(i / t), like the VAE's time grid; any other length is stretched evenly.
    """
    i = np.arange(n_out)
    if n_in == n_out:
        return i
    if n_in > 1 and n_out > 1 and (n_out - 1) % (n_in - 1) == 0:
        t = (n_out - 1) // (n_in - 1)
        return np.minimum(n_in - 1, (i + t - 1) // t)
    return np.minimum(n_in - 1, (i * n_in) // n_out)


def mask_frames(mask, num_frames: int, height: int, width: int) -> np.ndarray:
    """Mask float/bool [F', H', W'] (1 = regenerate) -> uint8 gray [num_frames, height, width] (255 = regenerate).

    A mask on another grid (e.g. the latent grid) is mapped nearest-neighbour onto the clip's pixels and frames.
    """
    m = np.asarray(mask)
    if m.ndim == 4 and m.shape[-1] == 1:
        m = m[..., 0]
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3 or 0 in m.shape:
        raise ValueError(f"mask: expected [F, H, W], got shape {m.shape}")
    m = m[_time_index(num_frames, m.shape[0])]
    if m.shape[1:] != (height, width):
        ys = (np.arange(height) * m.shape[1]) // height
        xs = (np.arange(width) * m.shape[2]) // width
        m = m[:, ys][:, :, xs]
    if m.dtype == np.bool_:
        return m.astype(np.uint8) * 255
    if m.dtype == np.uint8:  # already 0..255
        return np.ascontiguousarray(m)
    return np.round(np.clip(np.nan_to_num(m.astype(np.float32)), 0.0, 1.0) * 255).astype(np.uint8)


def _gray_to_rgb(frames: np.ndarray):
    for f in frames:
        yield np.repeat(f[:, :, None], 3, axis=2)


def _write_sample(tmp: str, sample: dict, i: int) -> tuple[str, dict, list[tuple[str, str]]]:
    name = str(sample.get("name") or f"sample_{i}")
    caption = str(sample.get("caption") or "")
    folder = f"{i:03d}_{safe_name(name)}"
    frames = _frames(sample["frames"], f"sample {name!r} frames")
    fps = float(sample["fps"])
    n, h, w = frames.shape[:3]
    files: list[tuple[str, str]] = []  # (arcname, local path)

    audio, rate = sample.get("audio"), sample.get("audio_rate")
    target = os.path.join(tmp, "target.mp4")
    clip = write_clip(target, frames, fps, audio=audio, audio_rate=rate)
    files.append((f"{folder}/target.mp4", target))
    info = {"name": name, "caption": caption, "tokens": sample.get("tokens") or {}, "frames": n,
            "width": w, "height": h, "size": [w, h], "fps": fps}
    if (clip["width"], clip["height"]) != (w, h):
        info["encoded_size"] = [clip["width"], clip["height"]]  # odd sizes are edge-padded to even
    info["audio"] = None if audio is None else {
        "rate": int(rate), "samples": int(np.asarray(audio).shape[-1]),
        "seconds": float(np.asarray(audio).shape[-1]) / float(rate), "encoded_rate": clip["audio_rate"]}

    ref = sample.get("reference")
    info["reference"] = None
    if ref is not None:
        ref = _frames(ref, f"sample {name!r} reference")
        # A temporally scaled reference spans the clip's duration with fewer frames.
        ref_fps = float(sample.get("reference_fps") or (fps if len(ref) == n else fps * len(ref) / n))
        path = os.path.join(tmp, "reference.mp4")
        rclip = write_clip(path, ref, ref_fps)
        files.append((f"{folder}/reference.mp4", path))
        info["reference"] = {"frames": int(ref.shape[0]), "width": int(ref.shape[2]), "height": int(ref.shape[1]),
                             "fps": ref_fps}
        if (rclip["width"], rclip["height"]) != (ref.shape[2], ref.shape[1]):
            info["reference"]["encoded_size"] = [rclip["width"], rclip["height"]]
        del ref

    mask = sample.get("mask")
    info["mask"] = None
    if mask is not None:
        gray = mask_frames(mask, n, h, w)
        path = os.path.join(tmp, "mask.mp4")
        write_clip(path, _gray_to_rgb(gray), fps)
        files.append((f"{folder}/mask.mp4", path))
        info["mask"] = {"regenerate_fraction": round(float((gray >= 128).mean()), 6),
                        "convention": "white = regenerate, black = keep"}
        del gray
    info["files"] = [a.split("/", 1)[1] for a, _ in files] + ["caption.txt", "info.json"]
    return folder, info, files


def write_debug_archive(zip_path: str, samples: Iterable[dict]) -> None:
    """Write the debug dataset zip (layout in the module docstring); atomic, one sample in memory at a time."""
    zip_path = str(zip_path)
    out_dir = os.path.dirname(os.path.abspath(zip_path))
    os.makedirs(out_dir, exist_ok=True)
    tmp_zip = os.path.join(out_dir, f".{os.path.basename(zip_path)}.{os.getpid()}.tmp")
    scratch = tempfile.mkdtemp(prefix=".debug_archive.", dir=out_dir)
    index = []
    try:
        with zipfile.ZipFile(tmp_zip, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
            for i, sample in enumerate(samples):
                sample_dir = os.path.join(scratch, str(i))
                os.makedirs(sample_dir)
                folder, info, files = _write_sample(sample_dir, sample, i)
                for arcname, path in files:  # mp4 is compressed already
                    zf.write(path, arcname, compress_type=zipfile.ZIP_STORED)
                zf.writestr(f"{folder}/caption.txt", info["caption"])
                zf.writestr(f"{folder}/info.json", json.dumps(info, indent=2, ensure_ascii=False))
                shutil.rmtree(sample_dir)
                index.append({"index": i, "folder": folder, "name": info["name"], "caption": info["caption"],
                              "tokens": info["tokens"], "frames": info["frames"], "width": info["width"],
                              "height": info["height"], "fps": info["fps"], "files": info["files"]})
            zf.writestr("index.json", json.dumps({"count": len(index), "samples": index}, indent=2,
                                                 ensure_ascii=False))
        os.replace(tmp_zip, zip_path)
    except BaseException:
        try:
            os.remove(tmp_zip)
        except FileNotFoundError:
            pass
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
