"""Cache-then-train against streaming (issue 18): time to the first training step and total wall time of one job.

Each mode runs the whole t2v job through `ltxtrain.jobs.run_job` on local Ray with the tiny model, on the same
generated clips, each time into a fresh output folder (so a fresh latent cache): planning, caption encoding, then
either every clip decoded + VAE-encoded before the Train worker starts (`--data-mode cache`), or the first clip only
and the rest streamed into the running worker (`--data-mode stream`, encode/stream.py). A one-clip job first starts
Ray's worker processes (cold start, not reported).

Printed per mode: time to the first training step (job start -> the worker's step loop starting, read from the first
metrics row: its wall time minus its elapsed time), total wall time, the step the streamed pass ended at, the peak
object-store use during the job (cluster-wide plasma bytes, polled every 50 ms) and the probe loss start -> end. A
last `RESULT {json}` line holds all of it.

On a CPU-only machine the stream's encoder and the training worker share the cores, so the overlap saves less total
time than on a GPU cluster, where the VAE and the training steps run on different hardware units; the time to the
first step is the figure that carries over.

Example: PYTHONPATH=platform python bench/stream.py --clips 16
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import threading
import time

PLATFORM = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "platform"))
sys.path.insert(0, PLATFORM)  # run from a checkout without `pip install -e`


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=16, help="generated clips (one training window each)")
    ap.add_argument("--seconds", type=float, default=1.2, help="length of each generated clip")
    ap.add_argument("--frames", type=int, default=17, help="number_of_frames of the request (at 512x288)")
    ap.add_argument("--steps", type=int, default=100, help="number_of_steps of the request (>= 100)")
    ap.add_argument("--workers", type=int, default=1, help="Ray Train workers (CPU: leave a core for the stream)")
    ap.add_argument("--object-store-mb", type=int, default=256, help="the stream's object-store budget")
    ap.add_argument("--modes", default="cache,stream")
    return ap.parse_args(argv)


class StorePeak(threading.Thread):
    def __init__(self):
        import ray
        from ray._private.internal_api import get_memory_info_reply, get_state_from_address

        super().__init__(daemon=True)
        self.state = get_state_from_address(ray.get_runtime_context().gcs_address)
        self.reply, self.peak, self.stop = get_memory_info_reply, 0, threading.Event()

    def run(self):
        while not self.stop.wait(0.05):
            self.peak = max(self.peak, int(self.reply(self.state).store_stats.object_store_bytes_used))


def run_mode(mode: str, data: str, args, root: str) -> dict:
    from ltxtrain.encode.stream import StreamSettings
    from ltxtrain.jobs import JobOptions, run_job

    request = {"training_data_url": data, "resolution": "low", "aspect_ratio": "16:9", "rank": 8,
               "number_of_frames": args.frames, "number_of_steps": args.steps, "learning_rate": 2e-3}
    opts = JobOptions(model="tiny", num_workers=args.workers, use_gpu=False,
                      stream=StreamSettings(mode=mode, object_store_bytes=args.object_store_mb << 20))
    out = os.path.join(root, mode)
    peak = StorePeak()
    peak.start()
    t0 = time.time()
    result = run_job("t2v", request, out, opts)
    wall = time.time() - t0
    peak.stop.set()
    with open(os.path.join(out, "metrics.jsonl")) as fh:
        first = json.loads(fh.readline())
    m = result.metrics
    return {"mode": mode, "first_step_s": round(first["time"] - first["elapsed"] - t0, 1), "wall_s": round(wall, 1),
            "train_time_s": round(m["train_time_s"], 1), "stream_end": m.get("stream_end"),
            "object_store_peak_mb": round(peak.peak / 2**20, 1),
            "probe_loss": [round(m["probe_loss_start"], 4), round(m["probe_loss_end"], 4)]}


def main(argv=None) -> None:
    args = parse_args(argv)
    # the job's phases with timestamps (planning, captions, clips, training start) on stderr
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
    root = tempfile.mkdtemp(prefix="ltxtrain-bench-stream-")
    os.environ.setdefault("LTXTRAIN_HOME", os.path.join(root, "home"))
    import ray

    from ltxtrain.sampledata import make_dataset_zip

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    data = make_dataset_zip(os.path.join(root, "clips.zip"), kind="video", n=args.clips, seconds=args.seconds,
                            fps=25, width=640, height=360)
    cold = make_dataset_zip(os.path.join(root, "cold.zip"), kind="video", n=1, seconds=args.seconds, fps=25,
                            width=640, height=360)
    run_mode("cache", cold, args, os.path.join(root, "cold"))  # starts Ray's workers and builds the tiny model
    rows = [run_mode(mode, data, args, root) for mode in args.modes.split(",")]
    print(f"{args.clips} clips -> {args.frames} x 512x288, {args.steps} steps, {args.workers} worker(s), "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    print(f"{'mode':8} {'first step s':>12} {'wall s':>8} {'train s':>8} {'stream_end':>10} {'store peak MB':>14}")
    for r in rows:
        print(f"{r['mode']:8} {r['first_step_s']:>12} {r['wall_s']:>8} {r['train_time_s']:>8} "
              f"{str(r['stream_end']):>10} {r['object_store_peak_mb']:>14}")
    print("RESULT " + json.dumps({"clips": args.clips, "frames": args.frames, "steps": args.steps, "runs": rows}))


if __name__ == "__main__":
    main()
