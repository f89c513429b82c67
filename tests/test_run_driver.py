"""`train.run.run_training`, driver side, with Ray Train's trainer replaced by a stand-in (no cluster): the report
poll it gives the Train controller, and how the final checkpoint's files reach the job folder."""

from __future__ import annotations

import contextlib
import json
import os

import pytest

from ltxtrain.train import run
from ltxtrain.train.config import TrainConfig


class _Checkpoint:
    def __init__(self, path):
        self.path = str(path)

    @contextlib.contextmanager
    def as_directory(self):
        yield self.path


def _fake_trainer(checkpoint_dir, seen: dict):
    class FakeTrainer:
        def __init__(self, *args, **kwargs):
            pass

        def fit(self):
            seen["poll"] = os.environ.get(run.REPORT_POLL_ENV)  # what the controller would be started with
            return type("Result", (), {"error": None, "checkpoint": _Checkpoint(checkpoint_dir)})()

    return FakeTrainer


@pytest.fixture(autouse=True)
def no_poll_setting(monkeypatch):
    """Each test starts without the variable, and what run_training sets in this process is undone after it."""
    monkeypatch.setenv(run.REPORT_POLL_ENV, "recorded")
    monkeypatch.delenv(run.REPORT_POLL_ENV)


@pytest.fixture
def final_checkpoint(tmp_path):
    ckpt = tmp_path / "ckpt"
    (ckpt / run.MODEL_DIR).mkdir(parents=True)
    (ckpt / "final_metrics.json").write_text(json.dumps({"step": 100}))
    (ckpt / run.LORA_FILE).write_bytes(b"adapter")
    (ckpt / run.MODEL_DIR / "model.safetensors").write_bytes(b"weights")
    return ckpt


def _run(tmp_path, ckpt, monkeypatch) -> tuple[run.TrainOutcome, dict]:
    import ray.train.torch

    seen = {}
    monkeypatch.setattr(ray.train.torch, "TorchTrainer", _fake_trainer(ckpt, seen))
    cfg = TrainConfig(model_dir="unused", cache_dir="unused", steps=100, learning_rate=1e-4, rank=4, lora_targets=[])
    outcome = run.run_training(cfg, str(tmp_path / "out"), 1, False, storage_path=str(tmp_path / "results"),
                               name="t")
    return outcome, seen


def test_the_controller_polls_workers_often_unless_the_user_set_it(tmp_path, final_checkpoint, monkeypatch):
    # ray.train.report blocks until the controller's next poll: at Ray's 2 s default every logged row stalled a step
    _, seen = _run(tmp_path, final_checkpoint, monkeypatch)
    assert float(seen["poll"]) <= 0.25
    monkeypatch.setenv(run.REPORT_POLL_ENV, "1.5")
    _, seen = _run(tmp_path, final_checkpoint, monkeypatch)
    assert seen["poll"] == "1.5"


def test_final_files_are_hard_links_of_the_checkpoint_on_one_filesystem(tmp_path, final_checkpoint, monkeypatch):
    outcome, _ = _run(tmp_path, final_checkpoint, monkeypatch)
    assert outcome.metrics == {"step": 100}
    adapter, weights = outcome.adapter_path, os.path.join(outcome.model_dir, "model.safetensors")
    assert open(adapter, "rb").read() == b"adapter" and open(weights, "rb").read() == b"weights"
    assert os.path.samefile(adapter, final_checkpoint / run.LORA_FILE)  # not a copy: a full fine-tune is tens of GB
    assert os.path.samefile(weights, final_checkpoint / run.MODEL_DIR / "model.safetensors")
    # moving the output (as the export does) leaves the checkpoint whole
    os.replace(adapter, tmp_path / "moved.safetensors")
    assert (final_checkpoint / run.LORA_FILE).read_bytes() == b"adapter"
