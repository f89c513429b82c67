"""Driver side of training: start the Ray Train workers and collect the adapter they report."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass

from .config import TrainConfig
from .loop import LORA_FILE, REEL_FILE, train_loop_per_worker


@dataclass
class TrainOutcome:
    adapter_path: str  # peft-keyed LoRA weights (float32 safetensors)
    metrics: dict
    reel_path: str | None = None  # validation reel, when the request had validation entries


def run_training(cfg: TrainConfig, out_dir: str, num_workers: int, use_gpu: bool, storage_path: str,
                 name: str) -> TrainOutcome:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=cfg.to_dict(),
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                     resources_per_worker=None if use_gpu else {"CPU": 1}),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=RunConfig(name=name, storage_path=storage_path),
    )
    result = trainer.fit()
    if result.error:
        raise result.error
    if result.checkpoint is None:
        raise RuntimeError("training finished without reporting the adapter")
    os.makedirs(out_dir, exist_ok=True)
    with result.checkpoint.as_directory() as ckpt:
        adapter = os.path.join(out_dir, LORA_FILE)
        shutil.copyfile(os.path.join(ckpt, LORA_FILE), adapter)
        with open(os.path.join(ckpt, "final_metrics.json")) as fh:
            metrics = json.load(fh)
        reel = None
        if os.path.exists(os.path.join(ckpt, REEL_FILE)):
            reel = os.path.join(out_dir, REEL_FILE)
            shutil.copyfile(os.path.join(ckpt, REEL_FILE), reel)
    return TrainOutcome(adapter, metrics, reel)
