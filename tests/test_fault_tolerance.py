"""Checkpoints, resuming after a worker dies, deterministic resumption, and full fine-tuning."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import RESUME_OPTIONS, RESUME_REQUEST
from ltxtrain.jobs import JobOptions, run_job

SMALL = RESUME_REQUEST  # the request of the session's clean reference run (conftest.clean_resume_run)


@pytest.fixture(scope="module")
def dataset(resume_dataset):
    return resume_dataset


def _rows(out):
    return {r["step"]: r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())}


def test_a_killed_worker_resumes_from_its_checkpoint_and_matches_an_uninterrupted_run(ray_cluster, dataset,
                                                                                     clean_resume_run, tmp_path):
    from safetensors.torch import load_file

    clean_out, clean = clean_resume_run  # the same job run without a failure (shared with test_multinode.py)
    crashed = run_job("t2v", {"training_data_url": dataset, **SMALL}, str(tmp_path / "crashed"),
                      JobOptions(**RESUME_OPTIONS, fail_at_step=60))
    # restarted from a checkpoint taken before the failure (the newest one Ray Train had registered by then)
    assert crashed.metrics["step"] == 100 and crashed.metrics["resumed_from_step"] in (25, 50)
    assert clean.metrics["resumed_from_step"] == 0
    a, b = _rows(clean_out), _rows(tmp_path / "crashed")
    steps = [json.loads(line)["step"] for line in (tmp_path / "crashed" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(10, 101, 10))  # replayed steps replace the rows logged before the failure
    for step in (60, 80, 100):  # after the resume: the same trajectory (same data, noise, optimizer state)
        assert abs(a[step]["loss"] - b[step]["loss"]) < 1e-3 * max(1.0, a[step]["loss"]), (step, a[step], b[step])
    lora_a = load_file(str(clean_out / clean.lora_file.file_name))
    lora_b = load_file(str(tmp_path / "crashed" / crashed.lora_file.file_name))
    assert lora_a.keys() == lora_b.keys()
    assert max((lora_a[k].float() - lora_b[k].float()).abs().max().item() for k in lora_a) < 1e-2


def test_full_fine_tune_trains_and_reloads_from_its_shards(ray_cluster, tiny_model, dataset, tmp_path):
    from diffusers import LTX2VideoTransformer3DModel

    out = tmp_path / "full"
    result = run_job("t2v", {"training_data_url": dataset, **SMALL, "training_mode": "full", "learning_rate": 1e-3},
                     str(out), JobOptions(model="tiny", num_workers=2, use_gpu=False, max_shard_bytes=200_000))
    assert result.lora_file is None and result.model_file is not None
    assert result.metrics["probe_loss_end"] < 0.8 * result.metrics["probe_loss_start"]
    config = json.loads((out / result.config_file.file_name).read_text())
    assert config["training_type"] == "full"
    # ~0.5 MB of fp32 weights in 200 kB shards: several files and an index, streamed from the sharded model
    assert len(result.model_shards) >= 2 and result.model_file.file_name.endswith(".index.json")
    folder = out / "t2v_transformer"
    index = json.loads((folder / result.model_file.file_name).read_text())
    assert sorted(set(index["weight_map"].values())) == [s.file_name for s in result.model_shards]
    tuned = LTX2VideoTransformer3DModel.from_pretrained(str(folder))  # diffusers reads shards + index as is
    base = LTX2VideoTransformer3DModel.from_pretrained(tiny_model, subfolder="transformer")
    tuned_sd, base_sd = tuned.state_dict(), base.state_dict()
    assert tuned_sd.keys() == base_sd.keys() == index["weight_map"].keys()  # every weight, nothing extra
    changed = [k for k in base_sd if not torch.equal(base_sd[k], tuned_sd[k])]
    assert len(changed) > 0.5 * len(base_sd)  # most tensors moved: every weight is trainable
