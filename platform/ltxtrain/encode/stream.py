"""Streaming mode, driver side: the clips are decoded and encoded while the Train workers already train on them.

In cache mode (the default for small datasets) a job encodes every window into the latent cache before the workers
start, and GPUs idle through the whole pass. In streaming mode the driver plans all windows, encodes the captions,
writes the plan, and hands the windows to `TorchTrainer(datasets={"clips": ...})`: decode + fit (CPU tasks) → the video encoder pool, whose actors persist
each window's file to the cache and pass its bytes on to a training worker (`train/stream_data.py`). A restarted
worker group streams only the windows not yet in the cache.

Memory is bounded by Ray Data's streaming backpressure under `object_store_bytes` (Ray Data's budget for the whole
stream: decoded clips waiting for an encoder and encoded windows waiting for a worker; the training workers' own
prefetch of one batch each comes on top). A decoded 768x448x89 clip is ~92 MB, so the default 2 GiB holds ~20 of
them in flight: enough to keep the encoders busy, far below a node's object store.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..storage import exists, join
from .cache import LatentCache

STREAM_DATASET = "clips"  # the name workers ask `ray.train.get_dataset_shard` for
MODES = ("auto", "cache", "stream")
# auto: stream when at least this many windows still need encoding. On one H100 the VAE encodes a 768x448x89 clip in
# roughly a second, so below this count the GPUs idle for minutes at most; above it, for tens of minutes or more.
AUTO_MIN_WINDOWS = 256
DEFAULT_OBJECT_STORE_BYTES = 2 << 30
# Shared placement on GPU clusters: each encoder actor takes this share of a GPU and each training worker the rest, so
# both fit on the training GPUs (the VAE encoder needs a few GB). Own placement: encoder actors go to nodes started
# with the custom resource below (`ray start --resources='{"ltx_encoder": N}'`), each taking one unit and a GPU.
ENCODER_GPU_SHARE = 0.25
ENCODER_NODE_RESOURCE = "ltx_encoder"


@dataclass(frozen=True)
class StreamSettings:
    mode: str = "auto"  # "auto" | "cache" | "stream"
    auto_min_windows: int = AUTO_MIN_WINDOWS
    object_store_bytes: int = DEFAULT_OBJECT_STORE_BYTES
    encoder_nodes: bool = False  # encoders on their own nodes (ENCODER_NODE_RESOURCE) instead of the training GPUs
    encoder_cpus: float | None = None  # CPUs per encoder actor (None: 0 beside a GPU, else 1: the decode fuses into it)

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"data mode must be one of {MODES}, got {self.mode!r}")
        if self.object_store_bytes < 1 << 20:
            raise ValueError("the stream's object-store budget must be at least 1 MiB")

    def placement(self, use_gpu: bool) -> tuple[float, tuple, float]:
        """A streaming job's (GPU share per encoder actor, the actors' custom resources, GPU per training worker)."""
        if self.encoder_nodes:
            return (1.0 if use_gpu else 0.0), ((ENCODER_NODE_RESOURCE, 1.0),), 1.0
        if use_gpu:
            return ENCODER_GPU_SHARE, (), 1.0 - ENCODER_GPU_SHARE
        return 0.0, (), 1.0

    def data_cpus(self, encoder_actors: int) -> float:
        """CPUs the stream holds on a CPU-only cluster: the encoder actors' (the decode runs inside them), or at
        least one for the decode tasks when the actors hold none."""
        per_actor = 1.0 if self.encoder_cpus is None else self.encoder_cpus
        return max(1.0, encoder_actors * per_actor)

    def streams(self, to_encode: int) -> bool:
        """Whether a job with `to_encode` windows not yet in the cache streams them (one window: nothing to overlap)."""
        if self.mode == "auto":
            return to_encode >= self.auto_min_windows
        return self.mode == "stream" and to_encode > 1


class ClipStream:
    """`TorchTrainer(datasets={STREAM_DATASET: ClipStream(...)})`: Ray Train calls it each time it starts the worker
    group, so a group restarted after a failure streams only the windows not yet in the cache. The cache check runs
    there, on the driver's node, rather than as a filter in the stream: a filter task would not fuse into the encoder
    actors, and on a node whose other CPUs the training workers hold it would wait for a CPU forever."""

    def __init__(self, rows: list[dict], cfg, shared, cache_dir: str):
        """`rows`: planner rows with ids; `cache_dir`: a folder every node reaches, or a storage URI."""
        self.rows, self.cfg, self.shared, self.cache_dir = rows, cfg, shared, cache_dir

    def missing(self) -> list[dict]:
        return [r for r in self.rows if not exists(join(self.cache_dir, LatentCache.video_file(r["id"])))]

    def __call__(self):
        """The lazy stream -> {"id", "tensors"}: each window's cache file, persisted by the encoder that made it."""
        from .pipeline import clip_stream

        return clip_stream(self.missing(), self.cfg, self.shared, persist_to=self.cache_dir)


def data_config(object_store_bytes: int):
    """Ray Train's ingest options for the stream: Train's defaults (which leave the workers' own CPUs/GPUs out of
    Ray Data's budget) with the object-store budget capped."""
    from ray.train import DataConfig

    options = DataConfig.default_ingest_options()
    options.resource_limits = options.resource_limits.copy(object_store_memory=object_store_bytes)
    return DataConfig(execution_options={STREAM_DATASET: options})
