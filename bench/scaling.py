"""Preprocessing and training throughput for 1, 2, ... workers, through the library's own Ray paths.

Preprocessing: `ltxtrain.encode.pipeline.preprocess` (Ray Data: plan -> decode+fit tasks -> text and video VAE actor
pools -> latent cache) on generated clips with the tiny model, into a fresh cache for each worker count; "workers"
is the size of the encoder actor pools (`encoder_actors`; one GPU each on a GPU machine). Every run is timed whole
(planning/probing, caption encoding, decode+fit, VAE encoding, cache writes): the actors' model loading is part of
what a job pays. A one-clip run first starts Ray's worker processes (cold). On CPU, Ray Data fuses the decode map into
the encoder actor operator (both ask for 1 CPU), so clips are decoded inside the actors: decode parallelism equals
the actor count there; on GPU (actors ask for a GPU and 0 CPUs) decode runs in separate CPU tasks.

Training: `ltxtrain.train.run.run_training` (Ray Train TorchTrainer, `train_loop_per_worker`: FSDP2 `fully_shard` per
block when there are 2+ workers, LoRA, `flow_loss`, AdamW) on the latent cache from the first preprocessing run, with
rows logged every `--log-every` steps (10, as jobs log: each row is a `ray.train.report`, which waits for Ray Train's
controller to poll the worker, so logging every step would time the poll). Steady-state steps/s is measured between
the first row at or after step --warmup and the last step; samples/s = steps/s x workers x batch size (each worker draws its own samples). The
whole `fit()` (worker start, model load, probe losses, adapter export) is printed too.

Local Ray: `ray.init(num_cpus=os.cpu_count())`, or the running cluster at $RAY_ADDRESS when that is set. On CPU each
training worker gets 1 CPU (as in `run_training`); on a GPU machine workers = GPUs.

Example: PYTHONPATH=platform python bench/scaling.py --workers 1,2 --clips 8 --steps 30
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time

PLATFORM = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "platform"))
sys.path.insert(0, PLATFORM)  # run from a checkout without `pip install -e`

# Mixed source sizes and rates, as a real upload would have (same set as bench/preprocess.py).
SIZES = [(320, 240), (854, 480), (640, 360), (480, 480), (426, 240), (480, 854), (720, 404), (640, 480)]
RATES = [25, 30, 24, 25]


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    ap.add_argument("--clips", type=int, default=8, help="generated clips to preprocess")
    ap.add_argument("--seconds", type=float, default=2.0, help="length of each generated clip")
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--height", type=int, default=288)
    ap.add_argument("--frames", type=int, default=25)
    ap.add_argument("--fps", type=float, default=25.0)
    ap.add_argument("--steps", type=int, default=30, help="training steps per worker count")
    ap.add_argument("--warmup", type=int, default=5, help="steps left out of the steady-state rate")
    ap.add_argument("--log-every", type=int, default=10, help="steps per logged row (as jobs)")
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=1, help="per worker")
    ap.add_argument("--model", default="tiny", help="tiny (or a diffusers folder that has the VAE and text encoder)")
    ap.add_argument("--skip-preprocess", action="store_true",
                    help="only build one cache (no cold-start run), time training")
    ap.add_argument("--skip-train", action="store_true")
    args = ap.parse_args(argv)
    args.worker_counts = [int(w) for w in args.workers.split(",") if w.strip()]
    if args.steps <= args.warmup or args.steps % args.log_every or args.steps - args.warmup < args.log_every:
        ap.error("--steps must be a multiple of --log-every, at least one row past --warmup")
    return args


def make_samples(folder: str, n: int, seconds: float):
    from ltxtrain import sampledata
    from ltxtrain.intake.dataset import SampleSpec
    from ltxtrain.media.probe import probe

    os.makedirs(folder, exist_ok=True)
    samples = []
    for i in range(n):
        w, h = SIZES[i % len(SIZES)]
        name = f"clip_{i:03d}.mp4"
        path = os.path.join(folder, name)
        sampledata.write_video(path, seconds, RATES[i % len(RATES)], w, h, seed=i)
        samples.append(SampleSpec(name=name, kind="video", caption=sampledata.caption_for(i), media={"target": path},
                                  info={"target": probe(path)}, archive_paths={"target": name}))
    return samples


def run_preprocess(samples, args, model_dir: str, cache_dir: str, actors: int, use_gpu: bool) -> float:
    from ltxtrain.api.errors import Diagnostics
    from ltxtrain.encode.pipeline import PreprocessConfig, preprocess

    cfg = PreprocessConfig(model_dir=model_dir, cache_dir=cache_dir, width=args.width, height=args.height,
                           num_frames=args.frames, frame_rate=args.fps, split_scenes=False, encoder_actors=actors,
                           gpus_per_actor=1.0 if use_gpu else 0.0)
    t = time.perf_counter()
    manifest = preprocess(samples, cfg, Diagnostics())
    elapsed = time.perf_counter() - t
    if len(manifest.samples) != len(samples):
        raise RuntimeError(f"preprocessing kept {len(manifest.samples)} of {len(samples)} clips")
    return elapsed


def run_train(args, model_dir: str, cache_dir: str, workers: int, use_gpu: bool, work: str) -> dict:
    from ltxtrain import metrics_file
    from ltxtrain.models.lora import VIDEO_TARGETS
    from ltxtrain.train.config import TrainConfig
    from ltxtrain.train.run import run_training

    metrics = os.path.join(work, f"metrics_{workers}.jsonl")
    cfg = TrainConfig(model_dir=model_dir, cache_dir=cache_dir, steps=args.steps, learning_rate=1e-4,
                      rank=args.rank, lora_targets=list(VIDEO_TARGETS), batch_size=args.batch_size, log_every=args.log_every,
                      metrics_path=metrics)
    t = time.perf_counter()
    outcome = run_training(cfg, os.path.join(work, f"out_{workers}"), workers, use_gpu,
                           storage_path=os.path.join(work, "ray_results"), name=f"bench-scaling-{workers}")
    fit_s = time.perf_counter() - t
    by_step = {r["step"]: r for r in metrics_file.read_rows(metrics)}
    first, last = by_step[min(s for s in by_step if s >= args.warmup)], by_step[args.steps]
    steps_per_s = (last["step"] - first["step"]) / (last["elapsed"] - first["elapsed"])
    return {"workers": workers, "steps_per_s": steps_per_s, "from_step": first["step"],
            "samples_per_s": steps_per_s * workers * args.batch_size, "fit_s": fit_s,
            "train_time_s": outcome.metrics["train_time_s"], "world_size": outcome.metrics["world_size"]}


def main(argv=None) -> None:
    args = parse_args(argv)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [PLATFORM, os.environ.get("PYTHONPATH")]))
    for k, v in {"HF_HUB_OFFLINE": "1", "RAY_DISABLE_USAGE_STATS": "1", "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
                 "TOKENIZERS_PARALLELISM": "false"}.items():
        os.environ.setdefault(k, v)
    import ray

    from ltxtrain.jobs import default_home
    from ltxtrain.models.bundle import resolve_model

    model_dir = resolve_model(args.model, str(default_home() / "models"))
    load_before = os.getloadavg()[0]  # other processes' load, before our own Ray workers add to it
    # RAY_ADDRESS set: join that running cluster (its workers must import ltxtrain: `ray start` with PYTHONPATH set,
    # as the test suite's head node is) rather than start a local one; e.g. bench/gpu.sh --dry-run under pytest
    address = os.environ.get("RAY_ADDRESS")
    local = {} if address else {"num_cpus": os.cpu_count(), "include_dashboard": False}
    ray.init(address=address or None, logging_level="ERROR", log_to_driver=False, **local)
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # per-dataset INFO lines
    use_gpu = ray.cluster_resources().get("GPU", 0) > 0
    gpus = int(ray.cluster_resources().get("GPU", 0))
    hw = f"{gpus} GPU(s), {os.cpu_count()} CPUs" if use_gpu else f"CPU only, {os.cpu_count()} cores"
    work = tempfile.mkdtemp(prefix="bench-scaling-")
    results = {"hardware": hw, "args": {k: v for k, v in vars(args).items() if k != "worker_counts"},
               "preprocess": [], "train": []}
    try:
        t = time.perf_counter()
        samples = make_samples(os.path.join(work, "clips"), args.clips, args.seconds)
        print(f"{hw}; model {args.model}; {len(samples)} generated clips ({args.seconds:g} s, 320-854 px, 24-30 fps) "
              f"in {time.perf_counter() - t:.1f} s -> {args.width}x{args.height}x{args.frames} @ {args.fps:g} fps")
        if not args.skip_preprocess:  # warms Ray's workers before the timed runs; training needs only the cache
            cold = run_preprocess(samples[:1], args, model_dir, os.path.join(work, "cache_cold"), 1, use_gpu)
            print(f"preprocess cold start (1 clip, Ray workers starting): {cold:.1f} s")
        train_cache = None
        counts = args.worker_counts if not args.skip_preprocess else args.worker_counts[:1]
        for n in counts:
            if use_gpu and n > gpus:
                print(f"preprocess  {n} encoder actors: skipped, only {gpus} GPU(s)")
                continue
            cache = os.path.join(work, f"cache_{n}")
            elapsed = run_preprocess(samples, args, model_dir, cache, n, use_gpu)
            train_cache = train_cache or cache
            row = {"workers": n, "clips_per_s": len(samples) / elapsed, "seconds": elapsed}
            if not args.skip_preprocess:
                results["preprocess"].append(row)
                print(f"preprocess  {n} encoder actor(s){' (1 GPU each)' if use_gpu else ''}: "
                      f"{row['clips_per_s']:6.2f} clips/s ({elapsed:.1f} s for {len(samples)} clips, "
                      f"actor start included)")
            else:
                print(f"preprocess  cache for training: {len(samples)} clips in {elapsed:.1f} s (cold, not a figure)")
        if train_cache is None:
            train_cache = os.path.join(work, "cache_train")
            run_preprocess(samples, args, model_dir, train_cache, 1, use_gpu)
        if not args.skip_train:
            for n in args.worker_counts:
                if use_gpu and n > gpus:
                    print(f"train       {n} workers: skipped, only {gpus} GPU(s)")
                    continue
                r = run_train(args, model_dir, train_cache, n, use_gpu, work)
                results["train"].append(r)
                how = "FSDP2" if n > 1 else "1 worker, unsharded"
                print(f"train       {n} worker(s) ({how}): {r['steps_per_s']:6.2f} steps/s, {r['samples_per_s']:6.2f} "
                      f"samples/s (steps {r['from_step'] + 1}-{args.steps}); fit() {r['fit_s']:.1f} s whole")
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    results["loadavg_1m_before"] = load_before
    if not use_gpu and load_before > 1.0:
        print(f"note        1-min load average {load_before:.1f} on {os.cpu_count()} cores before Ray started: other "
              f"processes were running, CPU figures are contended")
    print("RESULT " + json.dumps(results))


if __name__ == "__main__":
    main()
