"""Restart state: what a run needs to carry on exactly where it stopped, written by every rank in parallel.

A checkpoint is one directory made of every rank's files: torch.distributed.checkpoint (DCP) writes each rank's
own shards of the trainable weights and their AdamW state (`__<rank>_0.distcp`, plus `.metadata` from rank 0), so
nothing is gathered to one process — for a 22B full fine-tune that is the difference between seconds and an
out-of-memory. Ray Train gives all ranks of one report the same checkpoint folder in run storage and registers
it only after every rank's upload has finished, so a registered checkpoint is never partial. Rank 0 adds the step
counters (`trainer_state.json`) and the validation previews rendered so far, which the final reel needs.

What is not here, on purpose: RNG state (every step's draws come from `step_generator(seed, step, rank)`), the
data position (the sampler is a pure function of the step) and the LR schedule (a pure function of the step).
"""

from __future__ import annotations

import json
import os
import pickle

STATE_FILE = "trainer_state.json"
PREVIEWS_DIR = "previews"


def _options(strict: bool = True):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    # Frozen base weights are the model file's, not ours. Loading is not strict because the state dict holds only
    # the trainable weights; their completeness is what dcp.load checks.
    return StateDictOptions(ignore_frozen_params=True, strict=strict)


def save(directory: str, model, optimizer, rank: int, meta: dict, previews: list) -> None:
    """Collective: every rank writes its shards into its own `directory` (Ray merges them in run storage)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    weights, optim = get_state_dict(model, optimizer, options=_options())
    dcp.save({"model": weights, "optimizer": optim}, checkpoint_id=directory)
    if rank == 0:
        os.makedirs(os.path.join(directory, PREVIEWS_DIR), exist_ok=True)
        for i, preview in enumerate(previews):
            with open(os.path.join(directory, PREVIEWS_DIR, f"{i:04d}.pkl"), "wb") as fh:
                pickle.dump(preview, fh)
        with open(os.path.join(directory, STATE_FILE), "w") as fh:  # written last: its presence marks a whole one
            json.dump(meta, fh)


def read_meta(directory: str | None) -> dict | None:
    path = os.path.join(directory, STATE_FILE) if directory else None
    if not path or not os.path.exists(path):
        return None
    with open(path) as fh:
        return json.load(fh)


def restore(directory: str, model, optimizer) -> None:
    """Collective: load this rank's shards of the trainable weights and optimizer state into the sharded model.
    DCP refuses a checkpoint that lacks any trainable weight, so a changed LoRA config cannot half-load."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    weights, optim = get_state_dict(model, optimizer, options=_options())
    state = {"model": weights, "optimizer": optim}
    try:
        dcp.load(state, checkpoint_id=directory)
    except (CheckpointException, ValueError, KeyError) as exc:  # a BaseException with each rank's reason
        raise ValueError(f"the checkpoint in {directory} does not match this run's trainable weights (were the "
                         f"LoRA rank, targets or training mode changed?): {exc}") from exc
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"],
                   options=_options(strict=False))


def read_previews(directory: str | None) -> list:
    folder = os.path.join(directory, PREVIEWS_DIR) if directory else None
    if not folder or not os.path.isdir(folder):
        return []
    out = []
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), "rb") as fh:
            out.append(pickle.load(fh))
    return out
