"""Streaming mode's driver-side choices: when a job streams, where the encoders go, what a restart re-streams."""

from __future__ import annotations

import pytest

from ltxtrain.encode.cache import LatentCache
from ltxtrain.encode.stream import AUTO_MIN_WINDOWS, ClipStream, StreamSettings
from ltxtrain.jobs import JobOptions, _cpu_workers_beside_encoders


def test_a_job_streams_by_mode_and_by_the_windows_left_to_encode():
    assert not StreamSettings().streams(AUTO_MIN_WINDOWS - 1) and StreamSettings().streams(AUTO_MIN_WINDOWS)
    assert StreamSettings(mode="stream").streams(2) and not StreamSettings(mode="stream").streams(1)
    assert not StreamSettings(mode="cache").streams(10**6)
    with pytest.raises(ValueError, match="data mode"):
        StreamSettings(mode="fast")
    with pytest.raises(ValueError, match="object-store budget"):
        StreamSettings(object_store_bytes=1000)


def test_encoders_share_the_training_gpus_or_take_their_own_nodes():
    share, resources, per_worker = StreamSettings().placement(use_gpu=True)
    assert resources == () and share + per_worker == 1.0 and 0 < share < 0.5
    assert StreamSettings(encoder_nodes=True).placement(True) == (1.0, (("ltx_encoder", 1.0),), 1.0)
    assert StreamSettings().placement(use_gpu=False) == (0.0, (), 1.0)


def test_cpu_workers_leave_the_stream_its_cpus():
    opts = JobOptions(stream=StreamSettings(mode="stream"))
    assert _cpu_workers_beside_encoders(2, opts, cpus=2) == 1  # the default shrinks: one CPU for the encoder
    assert _cpu_workers_beside_encoders(2, opts, cpus=8) == 2
    zero = JobOptions(stream=StreamSettings(mode="stream", encoder_cpus=0), encoder_actors=3)
    assert _cpu_workers_beside_encoders(2, zero, cpus=2) == 1  # the decode tasks still need a CPU
    explicit = JobOptions(num_workers=2, stream=StreamSettings(mode="stream"))
    with pytest.raises(ValueError, match="--workers"):
        _cpu_workers_beside_encoders(2, explicit, cpus=2)


def test_a_restarted_stream_carries_only_the_windows_not_yet_in_the_cache(tmp_path):
    import torch

    cache = LatentCache(tmp_path / "cache")
    rows = [{"id": f"w{i}"} for i in range(4)]
    stream = ClipStream(rows, cfg=None, shared=None, cache_dir=str(cache.root))
    assert stream.missing() == rows
    cache.write_video("w1", latents=torch.zeros(1))
    cache.write_video("w3", latents=torch.zeros(1))
    assert stream.missing() == [rows[0], rows[2]]
