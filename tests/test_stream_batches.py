"""Streaming mode on a worker, in-process: the streamed pass, the switch to seeded epochs over the cache, resume."""

from __future__ import annotations

import pytest
import torch

from ltxtrain.encode.cache import LatentCache, to_bytes
from ltxtrain.train.data import CacheBatches, CacheReader, StepSampler
from ltxtrain.train.stream_data import StreamedBatches

N = 5


def _tensors(i: int) -> dict[str, torch.Tensor]:
    return {"latents": torch.full((4, 2, 3, 3), float(i))}


@pytest.fixture()
def cache(tmp_path):
    cache = LatentCache(tmp_path / "cache")
    cache.write_text("t", video=torch.zeros(6, 8), audio=torch.zeros(6, 8), mask=torch.ones(6))
    return cache


def _plan() -> list[dict]:
    return [{"id": f"w{i}", "name": f"clip{i}.mp4", "caption": "c", "text_id": "t", "num_frames": 9, "fps": 25.0,
             "source": {}} for i in range(N)]


def _stream(cache: LatentCache, ids: list[int]):
    """What the encoder pool does: persist each window, then hand its bytes on."""
    for i in ids:
        cache.write_video(f"w{i}", **_tensors(i))
        yield {"id": f"w{i}", "tensors": to_bytes(_tensors(i))}


def _value(batch) -> int:
    return int(batch.latents[0, 0, 0, 0, 0])


def test_the_streamed_pass_trains_in_arrival_order_then_epochs_follow_the_seeded_sampler(cache):
    cache.write_video("w0", **_tensors(0))  # the probe window: the driver encodes it before training
    order = [3, 1, 4, 2]  # the order the encoders finish in
    source = StreamedBatches(_stream(cache, order), _plan(), cache, world_size=1, rank=0, seed=7)
    assert [_value(source.batch(step)) for step in range(4)] == order
    assert source.stream_end is None
    after = [_value(source.batch(step)) for step in range(4, 14)]
    assert source.stream_end == 4 and source.state() == {"stream_end": 4}
    # from stream_end on: cache mode's draws, counted from that step (every window, the probe's too)
    reader = CacheReader(cache, [cache.entry(p) for p in _plan()])
    expected = CacheBatches(reader, StepSampler(N, 1, 0, seed=7), start=4)
    assert after == [_value(expected.batch(step)) for step in range(4, 14)]
    assert sorted(after[:N]) == list(range(N))  # an epoch is a permutation of all windows


def test_a_run_resumed_after_the_streamed_pass_repeats_the_uninterrupted_draws(cache):
    cache.write_video("w0", **_tensors(0))
    first = StreamedBatches(_stream(cache, [1, 2, 3, 4]), _plan(), cache, 1, 0, seed=3)
    uninterrupted = [_value(first.batch(step)) for step in range(12)]
    resumed = StreamedBatches(None, _plan(), cache, 1, 0, seed=3, stream_end=first.stream_end)
    assert [_value(resumed.batch(step)) for step in range(8, 12)] == uninterrupted[8:]


def test_a_run_that_ends_inside_the_streamed_pass_drains_the_stream_so_the_cache_completes(cache):
    cache.write_video("w0", **_tensors(0))
    source = StreamedBatches(_stream(cache, [1, 2, 3, 4]), _plan(), cache, 1, 0)
    source.batch(0)
    assert not cache.has_video("w4")
    source.finish()
    assert all(cache.has_video(p["id"]) for p in _plan()) and source.stream_end is None


def test_a_gap_in_the_cache_after_the_stream_is_an_error_naming_the_windows(cache):
    cache.write_video("w0", **_tensors(0))
    source = StreamedBatches(_stream(cache, [1, 2]), _plan(), cache, 1, 0)
    source.batch(0), source.batch(1)
    with pytest.raises(RuntimeError, match=r"lacks 2 window.*clip3\.mp4"):
        source.batch(2)


def test_batches_of_two_end_the_pass_at_the_first_short_batch(cache):
    cache.write_video("w0", **_tensors(0))
    source = StreamedBatches(_stream(cache, [1, 2, 3, 4]), _plan(), cache, 1, 0, batch_size=2)
    assert [int(v) for v in source.batch(0).latents[:, 0, 0, 0, 0]] == [1, 2]
    assert [int(v) for v in source.batch(1).latents[:, 0, 0, 0, 0]] == [3, 4]
    source.batch(2)
    assert source.stream_end == 2
