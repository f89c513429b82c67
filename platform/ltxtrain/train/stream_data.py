"""Streaming mode on a worker: train on windows as the encoders finish them, then on the complete cache.

Phase 1 (the streamed pass): each step takes the next `batch_size` rows of this rank's share of the Ray Data stream
(`ray.train.get_dataset_shard`): a window's cache-file bytes, already persisted to the cache by the encoder that
made them. Ranks agree every step that each has a full batch; once any has not, the pass ends on every rank at the
same step (`stream_end`), the rest of the stream is drained (the encoders persist what they still hold, so the cache
ends complete) and phase 2 begins.

Phase 2: seeded epochs over the whole cache, exactly as in cache mode with the step counted from `stream_end`.

The probe (the fixed-noise loss scored before and after training) takes rank 0's first streamed window; its id is
in every checkpoint, so a resumed run scores the same window.

What is deterministic: the noise, σ and condition draws of every step (`step_generator(seed, step, rank)`) and all
of phase 2 given `stream_end`. What is not: which window a phase-1 step trains on (the order encoders finish in). A
resumed run's stream carries only the windows not yet in the cache, so windows encoded before a crash but not yet
trained on are met in phase 2 instead; `stream_end` is in the checkpoint, so a run resumed in phase 2 repeats the
same draws as the uninterrupted one.
"""

from __future__ import annotations

from itertools import islice
from typing import Callable, Iterable

from ..encode.cache import LatentCache, from_bytes
from .data import Batch, CacheBatches, CacheReader, StepSampler, collate
from .parallel import all_true


class StreamedBatches:
    def __init__(self, rows: Iterable[dict] | None, plan: list[dict], cache: LatentCache, world_size: int, rank: int,
                 batch_size: int = 1, seed: int = 0, stream_end: int | None = None,
                 sync: Callable[[], None] = lambda: None):
        """`rows`: this rank's stream ({"id", "tensors"}); `plan`: every window to train on (`planned_sample`
        dicts); `stream_end`: set when resuming after the streamed pass; `sync()` brings the worker's copy of the
        cache up to date (a storage-backed cache is copied per node)."""
        # one iterator for the whole pass: each iter() of a Ray Data shard would start another epoch of the stream
        self.rows = iter(rows) if rows is not None else None
        self.cache, self.sync = cache, sync
        self.plan = plan
        self.by_id = {p["id"]: p for p in plan}
        self.world, self.rank, self.batch_size, self.seed = world_size, rank, batch_size, seed
        self.stream_end = stream_end
        self.probe_id: str | None = None
        self._held: list[dict] | None = None  # the first batch, pulled early for the probe
        self._texts = CacheReader(cache, [])
        self._epochs: CacheBatches | None = None

    def first(self, probe_id: str | None = None) -> Batch:
        """The one window the probe scores before and after training. At a fresh start: this rank's first streamed
        window (its batch is kept for the first step), so no window has to be encoded before the workers start.
        After a restart: `probe_id`, the window rank 0 recorded (in the cache by then)."""
        if probe_id is None and self.stream_end is None:
            self._held = self._pull()
            if self._held:
                self.probe_id = self._held[0]["id"]
                return self._collate(self._held[:1])
        self.sync()  # an empty share: the stream is over and every window is in the cache
        self.probe_id = probe_id or self.plan[0]["id"]
        return CacheReader(self.cache, [self.cache.entry(self.by_id[self.probe_id])]).batch([0])

    def batch(self, step: int) -> Batch:
        if self.stream_end is None:
            rows, self._held = (self._held if self._held is not None else self._pull()), None
            if all_true(len(rows) == self.batch_size):
                return self._collate(rows)
            self.stream_end = step
            self.finish()
        if self._epochs is None:
            self.sync()
            missing = [p["name"] for p in self.plan if not self.cache.has_video(p["id"])]
            if missing:  # the drained stream persisted every window: a gap is a bug, not a state to train through
                raise RuntimeError(f"the streamed cache lacks {len(missing)} window(s) after the stream ended, "
                                   f"e.g. {missing[:3]}")
            samples = [self.cache.entry(p) for p in self.plan]
            sampler = StepSampler(len(samples), self.world, self.rank, self.batch_size, seed=self.seed)
            self._epochs = CacheBatches(CacheReader(self.cache, samples), sampler, self.stream_end)
        return self._epochs.batch(step)

    def state(self) -> dict:
        """What a checkpoint keeps (rank 0's: every rank resumes with the same)."""
        return {"stream_end": self.stream_end, "probe_id": self.probe_id}

    def finish(self) -> None:
        """Drain this rank's stream, so the encoders finish and persist every window (the run may end mid-pass)."""
        if self.rows is not None:
            for _ in self.rows:
                pass
            self.rows = None

    def _pull(self) -> list[dict]:
        return list(islice(self.rows, self.batch_size)) if self.rows is not None else []

    def _collate(self, rows: list[dict]) -> Batch:
        planned = [self.by_id[r["id"]] for r in rows]
        return collate([from_bytes(r["tensors"]) for r in rows], [self._texts.text(p["text_id"]) for p in planned],
                       planned[0]["fps"], [p["name"] for p in planned])

