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
    order = [3, 0, 1, 4, 2]  # the order the encoders finish in
    source = StreamedBatches(_stream(cache, order), _plan(), cache, world_size=1, rank=0, seed=7)
    assert _value(source.first()) == 3 and source.probe_id == "w3"  # the first window to arrive is the probe's
    assert [_value(source.batch(step)) for step in range(5)] == order  # ... and still the first step's
    assert source.stream_end is None
    after = [_value(source.batch(step)) for step in range(5, 15)]
    assert source.stream_end == 5 and source.state() == {"stream_end": 5, "probe_id": "w3"}
    # from stream_end on: cache mode's draws, counted from that step
    reader = CacheReader(cache, [cache.entry(p) for p in _plan()])
    expected = CacheBatches(reader, StepSampler(N, 1, 0, seed=7), start=5)
    assert after == [_value(expected.batch(step)) for step in range(5, 15)]
    assert sorted(after[:N]) == list(range(N))  # an epoch is a permutation of all windows


def test_a_run_resumed_after_the_streamed_pass_repeats_the_uninterrupted_draws_and_probe(cache):
    first = StreamedBatches(_stream(cache, [2, 1, 0, 3, 4]), _plan(), cache, 1, 0, seed=3)
    probe = first.first()
    uninterrupted = [_value(first.batch(step)) for step in range(12)]
    state = first.state()
    resumed = StreamedBatches(None, _plan(), cache, 1, 0, seed=3, stream_end=state["stream_end"])
    assert torch.equal(resumed.first(state["probe_id"]).latents, probe.latents)  # the same window, from the cache
    assert [_value(resumed.batch(step)) for step in range(8, 12)] == uninterrupted[8:]


def test_a_restart_inside_the_streamed_pass_scores_the_recorded_probe_and_streams_the_rest(cache):
    first = StreamedBatches(_stream(cache, [2, 1]), _plan(), cache, 1, 0)
    first.first(), first.batch(0)
    resumed = StreamedBatches(_stream(cache, [0, 3, 4]), _plan(), cache, 1, 0)  # what was not yet encoded
    assert _value(resumed.first(first.state()["probe_id"])) == 2
    assert [_value(resumed.batch(step)) for step in range(1, 4)] == [0, 3, 4]


def test_a_run_that_ends_inside_the_streamed_pass_drains_the_stream_so_the_cache_completes(cache):
    source = StreamedBatches(_stream(cache, [1, 2, 3, 4, 0]), _plan(), cache, 1, 0)
    source.batch(0)
    assert not cache.has_video("w4")
    source.finish()
    assert all(cache.has_video(p["id"]) for p in _plan()) and source.stream_end is None


def test_a_gap_in_the_cache_after_the_stream_is_an_error_naming_the_windows(cache):
    source = StreamedBatches(_stream(cache, [0, 1, 2]), _plan(), cache, 1, 0)
    source.batch(0), source.batch(1), source.batch(2)
    with pytest.raises(RuntimeError, match=r"lacks 2 window.*clip3\.mp4"):
        source.batch(3)


def test_batches_of_two_end_the_pass_at_the_first_short_batch(cache):
    source = StreamedBatches(_stream(cache, [1, 2, 3, 4, 0]), _plan(), cache, 1, 0, batch_size=2)
    assert source.first().latents.shape[0] == 1  # the probe scores one window
    assert [int(v) for v in source.batch(0).latents[:, 0, 0, 0, 0]] == [1, 2]
    assert [int(v) for v in source.batch(1).latents[:, 0, 0, 0, 0]] == [3, 4]
    source.batch(2)
    assert source.stream_end == 2
