"""The end of a run: the trained weights (LoRA adapters or the full transformer), the reel and the final metrics,
handed to `report` in one directory by rank 0. Every rank calls it (full fine-tunes gather collectively)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Callable

import torch

from ..export.model_file import write_sharded
from .config import TrainConfig
from .model import unwrap
from .parallel import iter_full_state, trainable_state_dict

LORA_FILE = "adapter.safetensors"
REEL_FILE = "validation_reel.mp4"
AUDIO_REEL_DIR = "validation_audio"  # sound-only previews (v2a, audio-only products): .wav reel, labels, spectrograms
MODEL_DIR = "transformer"  # full fine-tunes: diffusers-layout safetensors (sharded when large)


def write_final(cfg: TrainConfig, transformer, rank: int, bf16: bool, final: dict, previews: list,
                report: Callable[[dict, str | None], None]) -> None:
    full = cfg.training_mode == "full"
    with tempfile.TemporaryDirectory() as tmp:
        if full:  # streamed: every rank takes part in each gather, rank 0 writes shard by shard
            tensors = iter_full_state(transformer)
            if rank == 0:
                write_sharded(tensors, os.path.join(tmp, MODEL_DIR), dtype=torch.bfloat16 if bf16 else None,
                              max_shard_bytes=cfg.max_shard_bytes)
                # with its config the folder loads as is: LTX2VideoTransformer3DModel.from_pretrained(folder)
                shutil.copy(os.path.join(cfg.model_dir, "transformer", "config.json"), os.path.join(tmp, MODEL_DIR))
            else:
                for _ in tensors:
                    pass
        else:
            weights = trainable_state_dict(transformer)
            if rank == 0:
                from peft.utils import get_peft_model_state_dict
                from safetensors.torch import save_file

                lora = get_peft_model_state_dict(unwrap(transformer), state_dict=weights)
                save_file({k: v.float().contiguous() for k, v in lora.items()}, os.path.join(tmp, LORA_FILE))
        out_dir = None
        if rank == 0:
            with open(os.path.join(tmp, "final_metrics.json"), "w") as fh:
                json.dump(final, fh)
            if previews and previews[0].frames is None:  # --- audio previews (issue 15)
                from ..export.reel import write_audio_reel

                os.makedirs(os.path.join(tmp, AUDIO_REEL_DIR), exist_ok=True)
                write_audio_reel(os.path.join(tmp, AUDIO_REEL_DIR, "validation.wav"), previews)
            elif previews:
                from ..export.reel import write_reel

                write_reel(os.path.join(tmp, REEL_FILE), previews)
            out_dir = tmp
        report(final, out_dir)
