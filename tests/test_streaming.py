"""Streaming mode end to end on local Ray: clips decoded and encoded while training runs, a worker killed in the
streamed pass, and the object store held under the stream's budget. One job serves every test here."""

from __future__ import annotations

import json
import threading
import time

import pytest
import torch

from ltxtrain.encode.cache import LatentCache
from ltxtrain.encode.stream import StreamSettings
from ltxtrain.jobs import JobOptions, run_job
from ltxtrain.sampledata import make_dataset_zip

CLIPS = 12
BUDGET = 8 << 20  # each decoded window is 9 x 288 x 512 x 3 bytes = 4 MB: the stream's 48 MB never fit at once
WINDOW_BYTES = 9 * 288 * 512 * 3
REQUEST = {"resolution": "low", "aspect_ratio": "16:9", "number_of_frames": 9, "rank": 8, "learning_rate": 2e-3,
           "number_of_steps": 100}


class ObjectStorePeak:
    """Polls the cluster's object-store use (every raylet's plasma bytes) in a thread."""

    def __init__(self, address: str):
        from ray._private.internal_api import get_memory_info_reply, get_state_from_address

        self._state, self._reply = get_state_from_address(address), get_memory_info_reply
        self.baseline = self.used()
        self.peak, self._stop = self.baseline, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def used(self) -> int:
        return int(self._reply(self._state).store_stats.object_store_bytes_used)

    def _run(self):
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self.used())

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="module")
def streamed(ray_cluster, tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    data = make_dataset_zip(str(root / "clips.zip"), kind="video", n=CLIPS, seconds=0.6, fps=25, width=160, height=96)
    opts = JobOptions(model="tiny", num_workers=1, use_gpu=False, checkpoint_every=2, fail_at_step=6, keep_work=True,
                      # encoders holding no CPU, as beside a GPU: the decode runs in its own tasks and every decoded
                      # window passes through the object store on its way to an encoder
                      stream=StreamSettings(mode="stream", object_store_bytes=BUDGET, encoder_cpus=0))
    with ObjectStorePeak(ray_cluster["address"]) as store:
        result = run_job("t2v", {"training_data_url": data, **REQUEST}, str(root / "out"), opts)
    return {"result": result, "out": root / "out", "store": store}


def test_a_streaming_job_trains_on_windows_as_they_are_encoded_and_exports(streamed):
    result, out = streamed["result"], streamed["out"]
    m = result.metrics
    assert m["step"] == 100 and result.samples == CLIPS
    # the steps before stream_end trained on windows straight from the encoders (the rest on the cache)
    assert 1 <= m["stream_end"] < 100 and m["streamed_windows"] >= 1
    assert m["probe_loss_end"] < 0.9 * m["probe_loss_start"]
    assert (out / result.lora_file.file_name).stat().st_size > 0 and m["lora_effect"]["video"] > 0


def test_a_worker_killed_in_the_streamed_pass_resumes_and_the_cache_ends_complete(streamed, tiny_model):
    result, out = streamed["result"], streamed["out"]
    m = result.metrics
    # killed at step 6, inside the streamed pass (11 windows to stream: one step each), back from a checkpoint taken
    # before it (the newest one Ray Train had registered); the resumed stream carried what was not yet encoded
    assert m["resumed_from_step"] in (2, 4) and m["stream_end"] >= m["resumed_from_step"]
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(10, 101, 10))
    cache = LatentCache(out / "work" / "cache")
    manifest = cache.read_manifest()
    assert len(manifest.samples) == CLIPS and all(cache.has_video(s.id) for s in manifest.samples)
    assert len(list((out / "work" / "cache" / "video").glob("*.safetensors"))) == CLIPS  # nothing encoded twice over
    # a streamed window's file holds what cache mode computes for it
    from ltxtrain.encode.encoders import encode_columns
    from ltxtrain.encode.pipeline import PreprocessConfig, decode_row
    from ltxtrain.models.bundle import load_components

    s = manifest.samples[-1]
    cfg = PreprocessConfig(model_dir=tiny_model, cache_dir=str(cache.root), width=512, height=288, num_frames=9,
                           frame_rate=25)
    fitted = decode_row({**s.source, "id": s.id, "name": s.name}, cfg)
    vae = load_components(tiny_model, ["vae"])["vae"].eval()
    expected = encode_columns(vae, None, {k: v for k, v in fitted.items() if k != "id"})
    assert torch.allclose(cache.load_video(s.id)["latents"], expected["latents"], atol=1e-5)


def test_the_stream_keeps_the_object_store_under_its_budget(streamed):
    store = streamed["store"]
    grew = store.peak - store.baseline
    print(f"object store grew by {grew / 2**20:.1f} MiB at most (budget {BUDGET / 2**20:.0f} MiB)")
    # the budget, plus what sits outside Ray Data's accounting: one decoded window in the running decode task and
    # one encoded window in the worker's prefetch (a few kB at this size)
    assert grew <= BUDGET + 2 * WINDOW_BYTES, (grew, store.baseline, store.peak)
    assert grew > WINDOW_BYTES  # it did measure the stream: at least one decoded window was in the store
