"""Preprocessing throughput: decode + fit (resample, swscale resize, center-crop) in clips/s.

Three ways on the same generated clips: Ray Data on all cores, a one-process loop, and PyAV decode-only (the
ceiling for any resize method). Example: PYTHONPATH=platform python bench/preprocess.py --clips 12
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
    ap.add_argument("--skip-ray", action="store_true")
    args = ap.parse_args()
    spec = FitSpec(args.size, args.size, args.frames, args.fps)

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        paths = make_clips(tmp, args.clips, args.seconds)
        print(f"generated {len(paths)} clips ({args.seconds:g} s, 320-854 px) in {time.perf_counter() - t:.1f} s; "
              f"fit -> {args.frames} x {args.size}x{args.size} @ {args.fps:g} fps; {os.cpu_count()} cores")

        t = time.perf_counter()
        frames = sum(decode_only(p) for p in paths)
        rate(f"(3) PyAV decode only ({frames} frames)", len(paths), time.perf_counter() - t)

        t = time.perf_counter()
        for p in paths:
            decode_and_fit(p, spec)
        rate("(2) one process: decode+fit", len(paths), time.perf_counter() - t)

        if not args.skip_ray:
            run_ray(paths, spec)


def run_ray(paths: list[str], spec: FitSpec) -> None:
    import ray

    # Workers inherit the environment of the raylet we start, so they find the checkout's package too
    # (a runtime_env would instead start a second set of workers: seconds of extra cold start).
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [PLATFORM, os.environ.get("PYTHONPATH")]))
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR")
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


if __name__ == "__main__":
    main()
