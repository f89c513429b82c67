"""Preprocessing throughput in clips/s: decode + fit, then the whole pipeline users run.

Decode + fit (resample, crop-first swscale resize to planar YUV, window to RGB): three ways on the same generated clips:
Ray Data on all cores, a one-process loop, and PyAV decode-only (the ceiling for any resize method).

End to end (`--e2e-clips N`, 0 skips): `ltxtrain.encode.pipeline.preprocess` on local Ray with the tiny model
(planning/probe, caption encoding, decode + fit, video VAE encode, latent cache write; the driver writes the cache),
first on one clip (cold: Ray workers and actors start), then on N clips with 1 encoder actor (what jobs use) and with
one actor per core; against the same stages called in one process (`plan_sample`, `TextEncoderActor`,
`decode_row`, `VideoEncoderActor`, `LatentCache.write_video`), with a per-stage time split.

Example: PYTHONPATH=platform python bench/preprocess.py --clips 16 --e2e-clips 6
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

PLATFORM = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "platform"))
sys.path.insert(0, PLATFORM)  # run from a checkout without `pip install -e`

import av  # noqa: E402

from ltxtrain import sampledata  # noqa: E402
from ltxtrain.media.fit import FitSpec, decode_and_fit  # noqa: E402

# Mixed source sizes (landscape, square, portrait) and rates, as a real upload would have.
SIZES = [(320, 240), (854, 480), (640, 360), (480, 480), (426, 240), (480, 854), (720, 404), (640, 480)]
RATES = [25, 30, 24, 25]


def make_clips(folder: str, n: int, seconds: float) -> list[str]:
    paths = []
    for i in range(n):
        w, h = SIZES[i % len(SIZES)]
        p = os.path.join(folder, f"clip_{i:03d}.mp4")
        sampledata.write_video(p, seconds, RATES[i % len(RATES)], w, h, seed=i)
        paths.append(p)
    return paths


def decode_only(path: str) -> int:
    with av.open(path) as c:
        vs = c.streams.video[0]
        vs.thread_type = "AUTO"
        return sum(1 for _ in c.decode(vs))


def rate(label: str, n: int, seconds: float) -> None:
    print(f"{label:<62} {n / seconds:7.2f} clips/s  ({seconds:6.2f} s for {n} clips)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--clips", type=int, default=12)
    ap.add_argument("--frames", type=int, default=89)
    ap.add_argument("--size", type=int, default=512, help="square output side (px)")
    ap.add_argument("--fps", type=float, default=25.0, help="target frame rate")
    ap.add_argument("--seconds", type=float, default=4.0, help="length of each generated clip")
    ap.add_argument("--repeat", type=int, default=5, help="decode-only / decode+fit pairs (alternating)")
    ap.add_argument("--skip-ray", action="store_true", help="no Ray runs (decode+fit map and end to end)")
    ap.add_argument("--e2e-clips", type=int, default=4, help="clips for the end-to-end runs (0: skip them)")
    # The tiny VAE costs ~4 s per 89x512x512 clip on a CPU core, so the end-to-end default is lighter.
    ap.add_argument("--e2e-size", default="512x288", help="end-to-end output WxH (multiples of 32)")
    ap.add_argument("--e2e-frames", type=int, default=25, help="end-to-end frames (8k+1)")
    ap.add_argument("--model", default="tiny", help="model for the end-to-end runs (tiny or a diffusers folder)")
    args = ap.parse_args()
    spec = FitSpec(args.size, args.size, args.frames, args.fps)

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        paths = make_clips(tmp, args.clips, args.seconds)
        print(f"generated {len(paths)} clips ({args.seconds:g} s, 320-854 px) in {time.perf_counter() - t:.1f} s; "
              f"fit -> {args.frames} x {args.size}x{args.size} @ {args.fps:g} fps; {os.cpu_count()} cores")

        # Decode-only and decode+fit alternate, so load from other processes hits both alike; each pair gives a ratio.
        decode_s, fit_s = [], []
        for _ in range(args.repeat):
            t = time.perf_counter()
            frames = sum(decode_only(p) for p in paths)
            decode_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            for p in paths:
                decode_and_fit(p, spec)
            fit_s.append(time.perf_counter() - t)
        rate(f"(3) PyAV decode only ({frames} frames), best of {args.repeat}", len(paths), min(decode_s))
        rate(f"(2) one process: decode+fit, best of {args.repeat}", len(paths), min(fit_s))
        ratios = sorted(d / f for d, f in zip(decode_s, fit_s))
        print(f"decode+fit / decode-only rate, per pair: {' '.join(f'{r:.3f}' for r in ratios)} "
              f"(median {ratios[len(ratios) // 2]:.3f}; best-of ratio {min(decode_s) / min(fit_s):.3f})")

        if not args.skip_ray:
            run_ray(paths, spec)
        if args.e2e_clips > 0:
            run_end_to_end(tmp, args)


def run_ray(paths: list[str], spec: FitSpec) -> None:
    import ray

    # Workers inherit the environment of the raylet we start, so they find the checkout's package too
    # (a runtime_env would instead start a second set of workers: seconds of extra cold start).
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [PLATFORM, os.environ.get("PYTHONPATH")]))
    import logging

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # per-dataset INFO lines
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False

    def fit_fn(row: dict) -> dict:
        # Return a summary, not the frames: a 89x512x512 clip is 70 MB and the real pipeline encodes in place.
        out = decode_and_fit(row["path"], spec)
        return {"path": row["path"], "shape": list(out.shape), "mean": float(out.mean())}

    def once(label: str) -> None:
        t = time.perf_counter()
        ds = ray.data.from_items([{"path": p} for p in paths], override_num_blocks=len(paths)).map(fit_fn)
        assert len(ds.take_all()) == len(paths)
        rate(f"(1) Ray Data map, {os.cpu_count()} CPUs ({label})", len(paths), time.perf_counter() - t)

    once("cold: worker start-up included")
    once("warm, default DataContext")
    # Ray Data reserves part of the cluster for each operator's outputs (op_resource_reservation_ratio 0.5):
    # on a 2-CPU node that held the map to ~1 task at a time (workers ~65% busy). A one-stage map needs none.
    ctx.op_resource_reservation_enabled = False
    once("warm, op_resource_reservation_enabled=False")
    ray.shutdown()


def _samples(folder: str, n: int, seconds: float):
    from ltxtrain.intake.dataset import SampleSpec
    from ltxtrain.media.probe import probe

    os.makedirs(folder, exist_ok=True)
    out = []
    for i, path in enumerate(make_clips(folder, n, seconds)):
        name = os.path.basename(path)
        out.append(SampleSpec(name=name, kind="video", caption=sampledata.caption_for(i), media={"target": path},
                              info={"target": probe(path)}, archive_paths={"target": name}))
    return out


def _config(args, model_dir: str, cache_dir: str, actors: int):
    from ltxtrain.encode.pipeline import PreprocessConfig

    w, h = (int(v) for v in args.e2e_size.lower().split("x"))
    return PreprocessConfig(model_dir=model_dir, cache_dir=cache_dir, width=w, height=h,
                            num_frames=args.e2e_frames, frame_rate=args.fps, encoder_actors=actors)


def one_process_pipeline(samples, cfg) -> dict:
    """The pipeline's stages, called in this process in its order: plan, captions, then decode+fit, VAE, write."""
    from ltxtrain.encode import pipeline as P
    from ltxtrain.encode.cache import LatentCache, from_bytes, stable_id
    from ltxtrain.encode.encoders import TextEncoderActor, VideoEncoderActor

    split = dict.fromkeys(["load", "plan", "text", "decode+fit", "vae", "write"], 0.0)

    def timed(stage, fn, *a, **kw):
        t = time.perf_counter()
        out = fn(*a, **kw)
        split[stage] += time.perf_counter() - t
        return out

    cache = LatentCache(cfg.cache_dir)
    text_enc = timed("load", TextEncoderActor, cfg.model_dir)
    video_enc = timed("load", VideoEncoderActor, cfg.model_dir)
    rows = []
    for s in samples:
        item = {"name": s.name, "path": s.media["target"], "ref_path": "", "mask_path": "", "mask_name": "",
                "kind": s.kind, "caption": s.caption, "text_id": stable_id(s.caption, cfg.model_dir)}
        rows += [r for r in timed("plan", P.plan_sample, item, cfg) if not r["skip"]]
    texts = {r["text_id"]: r["caption"] for r in rows}
    enc = timed("text", text_enc, {"text_id": list(texts), "caption": list(texts.values())})
    for tid, data in zip(enc["text_id"], enc["tensors"]):
        timed("write", cache.write_text, str(tid), **from_bytes(data))
    for r in rows:
        r["id"] = P._sample_id(r, cfg)
        fitted = timed("decode+fit", P.decode_row, r, cfg)
        enc = timed("vae", video_enc, {"id": [r["id"]], "frames": [fitted["frames"]]})
        timed("write", cache.write_video, r["id"], **from_bytes(enc["tensors"][0]))
    if len(rows) != len(samples):
        raise RuntimeError(f"kept {len(rows)} of {len(samples)} clips")
    return split


def run_end_to_end(tmp: str, args) -> None:
    import logging

    import ray
    import torch

    from ltxtrain.api.errors import Diagnostics
    from ltxtrain.encode.pipeline import preprocess
    from ltxtrain.jobs import default_home
    from ltxtrain.models.bundle import resolve_model

    for k, v in {"HF_HUB_OFFLINE": "1", "RAY_DISABLE_USAGE_STATS": "1", "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
                 "TOKENIZERS_PARALLELISM": "false"}.items():
        os.environ.setdefault(k, v)
    model_dir = resolve_model(args.model, str(default_home() / "models"))
    samples = _samples(os.path.join(tmp, "e2e"), args.e2e_clips, args.seconds)
    n, cores = len(samples), os.cpu_count()
    print(f"end to end: {n} clips ({args.seconds:g} s) -> {args.e2e_frames} x {args.e2e_size} @ {args.fps:g} fps, "
          f"model {os.path.basename(model_dir)}")

    t = time.perf_counter()
    split = one_process_pipeline(samples, _config(args, model_dir, os.path.join(tmp, "cache_1p"), 1))
    rate(f"(5) one process, torch {torch.get_num_threads()} threads", n, time.perf_counter() - t)
    print("    split: " + ", ".join(f"{k} {v:.2f} s" for k, v in split.items()))

    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [PLATFORM, os.environ.get("PYTHONPATH")]))
    ray.init(num_cpus=cores, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    t = time.perf_counter()
    preprocess(samples[:1], _config(args, model_dir, os.path.join(tmp, "cache_cold"), 1), Diagnostics())
    print(f"(4) Ray pipeline cold start: {time.perf_counter() - t:.1f} s for 1 clip (workers and actors start)")
    for actors in sorted({1, cores}):
        cfg = _config(args, model_dir, os.path.join(tmp, f"cache_ray{actors}"), actors)
        t = time.perf_counter()
        manifest = preprocess(samples, cfg, Diagnostics())
        assert len(manifest.samples) == n, manifest.skipped
        rate(f"(4) Ray pipeline.preprocess, {actors} encoder actor(s), {cores} CPUs", n, time.perf_counter() - t)
    ray.shutdown()


if __name__ == "__main__":
    main()
