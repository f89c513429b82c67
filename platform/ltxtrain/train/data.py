"""Per-step batches from the latent cache.

The sample drawn at (step, rank) is a pure function of the seed: every epoch is a seeded permutation split
across ranks. So a resumed run draws exactly what an uninterrupted one would, with no data-loader state to save.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..encode.cache import CachedSample, LatentCache


class StepSampler:
    def __init__(self, num_samples: int, world_size: int, rank: int, batch_size: int = 1, seed: int = 0):
        if num_samples < 1:
            raise ValueError("no samples to train on")
        self.n, self.world, self.rank, self.batch, self.seed = num_samples, world_size, rank, batch_size, seed
        self._perm_cache: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perm_cache:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm_cache = {epoch: torch.randperm(self.n, generator=g)}
        return self._perm_cache[epoch]

    def indices(self, step: int) -> list[int]:
        """Global draw positions step*world*batch + rank*batch + j, walked through consecutive permutations."""
        out = []
        for j in range(self.batch):
            pos = (step * self.world + self.rank) * self.batch + j
            epoch, offset = divmod(pos, self.n)
            out.append(int(self._perm(epoch)[offset]))
        return out


@dataclass
class Batch:
    cols: dict[str, torch.Tensor]  # the cache columns, stacked: "latents" [B, C, F, H, W], "audio" [B, L, Ca], ...
    text_video: torch.Tensor  # [B, T, Dv]
    text_audio: torch.Tensor  # [B, T, Da]
    text_mask: torch.Tensor  # [B, T]
    fps: float
    names: list[str]

    @property
    def latents(self) -> torch.Tensor:
        return self.cols["latents"]

    @property
    def audio(self) -> torch.Tensor | None:
        return self.cols.get("audio")


class CacheReader:
    """Loads samples by index; keeps text embeddings in memory since scenes share captions."""

    def __init__(self, cache: LatentCache, samples: list[CachedSample], keep_in_memory: int = 64):
        self.cache, self.samples = cache, samples
        self._text: dict[str, dict[str, torch.Tensor]] = {}
        self._video: dict[str, dict[str, torch.Tensor]] = {}
        self._keep = keep_in_memory

    def _load_video(self, s: CachedSample) -> dict[str, torch.Tensor]:
        if s.id not in self._video:
            if len(self._video) >= self._keep:
                self._video.pop(next(iter(self._video)))
            self._video[s.id] = self.cache.load_video(s.id)
        return self._video[s.id]

    def batch(self, indices: list[int]) -> Batch:
        picked = [self.samples[i] for i in indices]
        shapes = {tuple(s.latent_shape) for s in picked}
        if len(shapes) != 1:  # one bucket per job today; batches never mix geometries
            raise ValueError(f"samples in one batch have different latent shapes: {sorted(shapes)}")
        return collate([self._load_video(s) for s in picked], [self.text(s.text_id) for s in picked], picked[0].fps,
                       [s.name for s in picked])

    def text(self, text_id: str) -> dict[str, torch.Tensor]:
        if text_id not in self._text:
            self._text[text_id] = self.cache.load_text(text_id)
        return self._text[text_id]


def collate(videos: list[dict[str, torch.Tensor]], texts: list[dict[str, torch.Tensor]], fps: float,
            names: list[str]) -> Batch:
    """Per-sample cache tensors (from files or from the stream) -> one batch."""
    if len({frozenset(v) for v in videos}) != 1:
        raise ValueError(f"a batch mixes samples with different cache columns: {sorted({tuple(v) for v in videos})}")
    return Batch(
        cols={k: torch.stack([v[k] for v in videos]).float() for k in videos[0]},
        text_video=torch.stack([t["video"] for t in texts]).float(),
        text_audio=torch.stack([t["audio"] for t in texts]).float(),
        text_mask=torch.stack([t["mask"] for t in texts]).float(),
        fps=fps,
        names=names,
    )


class CacheBatches:
    """Cache mode: the batch of a step is the seeded sampler's draw from the complete cache, steps counted from
    `start` (streaming mode's epochs after the streamed pass)."""

    def __init__(self, reader: CacheReader, sampler: StepSampler, start: int = 0):
        self.reader, self.sampler, self.start = reader, sampler, start

    def batch(self, step: int) -> Batch:
        return self.reader.batch(self.sampler.indices(step - self.start))

    def state(self) -> dict:
        return {}

    def finish(self) -> None:
        pass
