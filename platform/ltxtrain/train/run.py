"""Driver side of training: start the Ray Train workers and collect what they report at the end."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass

from .config import TrainConfig
from .loop import LORA_FILE, MODEL_FILE, REEL_FILE, train_loop_per_worker


@dataclass
class TrainOutcome:
    adapter_path: str | None  # peft-keyed LoRA weights (float32 safetensors); None for full fine-tunes
    metrics: dict
    reel_path: str | None = None  # validation reel, when the request had validation entries
    model_path: str | None = None  # full fine-tune: all transformer weights (diffusers key names)


def run_training(cfg: TrainConfig, out_dir: str, num_workers: int, use_gpu: bool, storage_path: str,
                 name: str, max_failures: int = 2) -> TrainOutcome:
    """Run (or resume: same `storage_path`/`name` after a crash) the training; worker failures restart the
    worker group from the latest checkpoint up to `max_failures` times."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=cfg.to_dict(),
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                     resources_per_worker=None if use_gpu else {"CPU": 1}),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=RunConfig(name=name, storage_path=storage_path,
                             failure_config=FailureConfig(max_failures=max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)),
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
        for key, name_ in (("adapter", LORA_FILE), ("model", MODEL_FILE), ("reel", REEL_FILE)):
            if os.path.exists(os.path.join(ckpt, name_)):
                copied[key] = os.path.join(out_dir, name_)
                shutil.copyfile(os.path.join(ckpt, name_), copied[key])
    return TrainOutcome(copied.get("adapter"), metrics, copied.get("reel"), copied.get("model"))
