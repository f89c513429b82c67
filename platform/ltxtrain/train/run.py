"""Driver side of training: start the Ray Train workers and collect what they report at the end."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass

from .. import metrics_file
from .config import TrainConfig
from .final import AUDIO_REEL_DIR, LORA_FILE, MODEL_DIR, REEL_FILE
from .loop import train_loop_per_worker


@dataclass
class TrainOutcome:
    adapter_path: str | None  # peft-keyed LoRA weights (float32 safetensors); None for full fine-tunes
    metrics: dict
    reel_path: str | None = None  # validation reel, when the request had validation entries
    model_dir: str | None = None  # full fine-tune: diffusers-layout safetensors (one file, or shards + index)
    audio_reel_dir: str | None = None  # sound-only previews: validation.wav, validation.json, spectrogram PNGs


def metrics_file_callback(path: str):
    """A Ray Train callback that appends each logged row to `path`. It runs in the Train controller, which Ray
    places on the driver's node, so metrics.jsonl lands beside the job's outputs even when rank 0 is on another
    machine. A row whose step is not past the file's last one means the run went back to a checkpoint (a worker
    restart, a crashed job run again) or started afresh: the rows from that step on are dropped first, so the
    file always reads as one run."""
    from ray.train import UserCallback

    class MetricsFile(UserCallback):
        last_step: int | None = None

        def after_report(self, run_context, metrics, checkpoint):
            row = metrics[0].get("row") if metrics else None
            if row is None:
                return
            if self.last_step is None:
                self.last_step = metrics_file.last_step(path)
            if row["step"] <= self.last_step:
                metrics_file.truncate_from(path, row["step"])
            metrics_file.append(path, row)
            self.last_step = row["step"]

    return MetricsFile()


# Ray Train's controller drains each worker's one-slot report queue when it polls them, every
# RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (2 s by default), and `ray.train.report` blocks while the slot is full. Every
# logged row and checkpoint is a report, so at the default a worker waited up to 2 s per report: a 100-step tiny
# run spent 15 s of its 17 s in those waits, and a row logged at a checkpoint step, or the final report after the
# last row, stalls GPU runs the same way. Polling 8 times a second costs the controller one small RPC per worker.
REPORT_POLL_ENV, REPORT_POLL_S = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.125"


def _worker_resources(use_gpu: bool, gpu_per_worker: float) -> dict | None:
    if not use_gpu:
        return {"CPU": 1}
    return None if gpu_per_worker >= 1 else {"CPU": 1, "GPU": gpu_per_worker}  # None: Ray Train's 1 CPU + 1 GPU


def run_training(cfg: TrainConfig, out_dir: str, num_workers: int, use_gpu: bool, storage_path: str,
                 name: str, max_failures: int = 2, datasets: dict | None = None, dataset_config=None,
                 gpu_per_worker: float = 1.0) -> TrainOutcome:
    """Run (or resume: same `storage_path`/`name` after a crash) the training; worker failures restart the
    worker group from the latest checkpoint up to `max_failures` times. `datasets`/`dataset_config`: the streaming
    mode's Ray Data stream (encode/stream.py); `gpu_per_worker` < 1 leaves GPU room for encoders sharing the GPUs."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from ..storage import is_remote, resolve, runtime_env_for

    # read by the controller, which Ray Train starts with this variable copied from the driver's environment
    os.environ.setdefault(REPORT_POLL_ENV, REPORT_POLL_S)
    filesystem, worker_env = None, runtime_env_for(storage_path)
    if is_remote(storage_path):
        # An explicit filesystem carries the endpoint and region to the Train controller, and the workers get the
        # AWS settings too (they read the latent cache and model from storage), even when this driver joined a
        # Ray cluster whose nodes were started without them (Serve, tests).
        filesystem, storage_path = resolve(storage_path)

    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={**cfg.to_dict(), "metrics_path": None},  # the driver-side callback writes them
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                     resources_per_worker=_worker_resources(use_gpu, gpu_per_worker)),
        datasets=datasets, dataset_config=dataset_config,
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=RunConfig(name=name, storage_path=storage_path, storage_filesystem=filesystem,
                             worker_runtime_env=worker_env,
                             failure_config=FailureConfig(max_failures=max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2),
                             callbacks=[metrics_file_callback(cfg.metrics_path)] if cfg.metrics_path else None),
    )
    result = trainer.fit()
    if result.error:
        raise result.error
    if result.checkpoint is None:
        raise RuntimeError("training finished without reporting its weights")
    os.makedirs(out_dir, exist_ok=True)
    with result.checkpoint.as_directory() as ckpt:
        if not os.path.exists(os.path.join(ckpt, "final_metrics.json")):
            raise RuntimeError("the last checkpoint is not the final one: training did not finish")
        with open(os.path.join(ckpt, "final_metrics.json")) as fh:
            metrics = json.load(fh)
        copied = {}
        for key, name_ in (("adapter", LORA_FILE), ("reel", REEL_FILE)):
            if os.path.exists(os.path.join(ckpt, name_)):
                copied[key] = os.path.join(out_dir, name_)
                _link_or_copy(os.path.join(ckpt, name_), copied[key])
        for key, name_ in (("audio_reel", AUDIO_REEL_DIR), ("model", MODEL_DIR)):  # previews; full fine-tunes
            if os.path.isdir(os.path.join(ckpt, name_)):
                copied[key] = os.path.join(out_dir, name_)
                shutil.rmtree(copied[key], ignore_errors=True)
                shutil.copytree(os.path.join(ckpt, name_), copied[key], copy_function=_link_or_copy)
    return TrainOutcome(copied.get("adapter"), metrics, copied.get("reel"), copied.get("model"),
                        copied.get("audio_reel"))


def _link_or_copy(src: str, dst: str) -> str:
    """A hard link where the checkpoint is on this filesystem (a full fine-tune's tens of GB are not copied; the
    checkpoint keeps its own link), else a copy (remote storage, other devices)."""
    if os.path.lexists(dst):
        os.remove(dst)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
    return dst
