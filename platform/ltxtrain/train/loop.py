"""The training loop run by every Ray Train worker. It knows the objective, not how the model is sharded."""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Callable

import torch

from ..conditioning.timesteps import sample_sigmas
from ..conditioning.tokens import (
    Reference,
    TextContext,
    audio_tokens,
    first_frame_mask,
    kept_mask,
    masked_mse,
    predict,
    video_tokens,
)
from ..encode.cache import LatentCache
from ..sample.validation import ValidationItem, render_previews
from .config import TrainConfig
from .data import Batch, CacheReader, StepSampler
from .parallel import all_mean, full_state_dict, is_distributed, shard_transformer

LORA_FILE = "adapter.safetensors"
REEL_FILE = "validation_reel.mp4"


def lr_lambda(cfg: TrainConfig):
    """Linear warm-up, then linear decay to `final_lr_fraction`. Stepped once per optimizer step on every rank,
    so the schedule is the same for any worker count (the official trainer's runs N× too fast on N GPUs)."""
    warm = cfg.resolved_warmup

    def f(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        span = max(1, cfg.steps - warm)
        return 1.0 - (1.0 - cfg.final_lr_fraction) * min(1.0, (step - warm) / span)

    return f


@dataclass
class Draw:
    """The random part of one step: noise levels, noise and which samples get first-frame conditioning."""

    sigma: torch.Tensor  # [B] video
    noise: torch.Tensor  # [B, S, C]
    first_frame: torch.Tensor  # [B] bool
    audio_sigma: torch.Tensor | None = None  # [B], drawn for the audio token count
    audio_noise: torch.Tensor | None = None  # [B, L, Ca]


def draw_step(batch: Batch, gen: torch.Generator, first_frame_p: float) -> Draw:
    b, c, f, h, w = batch.latents.shape
    sigma = sample_sigmas(b, f * h * w, generator=gen)  # the shift follows the target tokens only
    noise = torch.randn(b, f * h * w, c, generator=gen)
    first_frame = torch.rand(b, generator=gen) < first_frame_p
    if f == 1:  # a single-frame sample conditioned on its only frame would have nothing left to learn
        first_frame[:] = False
    draw = Draw(sigma, noise, first_frame)
    if batch.audio is not None:
        draw.audio_sigma = sample_sigmas(b, batch.audio.shape[1], generator=gen)
        draw.audio_noise = torch.randn(batch.audio.shape, generator=gen)
    return draw


def flow_loss(transformer, batch: Batch, draw: Draw, device: torch.device) -> dict[str, torch.Tensor]:
    """Rectified-flow velocity losses per sample ([B] each) for every generated modality; conditioning excluded."""
    latents = batch.latents.to(device)
    cond = first_frame_mask(draw.first_frame, tuple(latents.shape[2:])).to(device)
    if batch.mask is not None:  # kept (black) region: clean, t=0, no loss
        cond = torch.maximum(cond, kept_mask(batch.mask).to(device))
    reference = None
    if batch.reference is not None:
        reference = Reference(batch.reference.to(device), batch.ref_spatial, batch.ref_temporal)
    tokens = video_tokens(transformer.rope, latents, draw.sigma.to(device), batch.fps, cond=cond,
                          noise=draw.noise.to(device), reference=reference)
    text = TextContext(batch.text_video.to(device), batch.text_audio.to(device), batch.text_mask.to(device))
    if batch.audio is None:
        return {"video": masked_mse(predict(transformer, tokens, text), tokens.target, tokens.loss_mask)}
    audio = audio_tokens(transformer.audio_rope, batch.audio.to(device), draw.audio_sigma.to(device),
                         noise=draw.audio_noise.to(device),
                         reference=batch.ref_audio.to(device) if batch.ref_audio is not None else None)
    pred_video, pred_audio = predict(transformer, tokens, text, audio)
    return {"video": masked_mse(pred_video, tokens.target, tokens.loss_mask),
            "audio": masked_mse(pred_audio, audio.target, audio.loss_mask)}


class ProbeLoss:
    """Loss on a fixed sample with fixed noise and sigmas: the same number before and after training, so a
    falling value means the model really fits the data (a training loss with fresh noise is too noisy for that)."""

    def __init__(self, batch: Batch, sigmas: list[float], seed: int):
        self.batch = batch
        g = torch.Generator().manual_seed(seed)
        c, f, h, w = batch.latents.shape[1:]
        no_ff = torch.zeros(1, dtype=torch.bool)
        self.draws = []
        for s in sigmas:
            d = Draw(torch.tensor([s]), torch.randn(1, f * h * w, c, generator=g), no_ff)
            if batch.audio is not None:
                d.audio_sigma, d.audio_noise = torch.tensor([s]), torch.randn(batch.audio.shape, generator=g)
            self.draws.append(d)

    @torch.no_grad()
    def __call__(self, transformer, device) -> dict[str, float]:
        totals: dict[str, float] = {}
        for d in self.draws:
            for k, v in flow_loss(transformer, self.batch, d, device).items():
                totals[k] = totals.get(k, 0.0) + v.item() / len(self.draws)
        return totals


@dataclass(frozen=True)
class WorkerContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0


def run_worker(cfg: TrainConfig, ctx: WorkerContext, report: Callable[[dict, str | None], None]) -> dict:
    """Train on this worker; at the end call `report(final_metrics, dir_with_adapter_or_None)` on every rank.

    Runs the same with or without Ray (tests call it in-process with the default single-rank context).
    """
    from ..models.bundle import load_components
    from ..models.lora import attach_lora

    rank, world = ctx.rank, ctx.world_size
    use_cuda = torch.cuda.is_available()
    device = torch.device("cuda", ctx.local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    bf16 = use_cuda if cfg.mixed_precision is None else cfg.mixed_precision
    grad_ckpt = use_cuda if cfg.gradient_checkpointing is None else cfg.gradient_checkpointing
    torch.manual_seed(cfg.seed)  # identical LoRA init on every rank before sharding

    transformer = load_components(cfg.model_dir, ["transformer"])["transformer"]
    transformer.requires_grad_(False)
    attach_lora(transformer, cfg.rank, cfg.lora_targets)
    if grad_ckpt:
        transformer.enable_gradient_checkpointing()
    transformer.to(device).train()
    transformer = shard_transformer(transformer, bf16=bf16)
    params = [p for p in transformer.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))

    cache = LatentCache(cfg.cache_dir)
    manifest = cache.read_manifest()
    reader = CacheReader(cache, manifest.samples, ref_spatial=manifest.reference_spatial,
                         ref_temporal=manifest.reference_temporal)
    sampler = StepSampler(len(manifest.samples), world, rank, cfg.batch_size, seed=cfg.seed)
    probe = ProbeLoss(reader.batch([0]), cfg.probe_sigmas, seed=cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed * 7919 + rank)  # per-rank noise and sigmas

    probe_start = probe(transformer, device)
    metrics_file = open(cfg.metrics_path, "a") if (rank == 0 and cfg.metrics_path) else None
    items = [ValidationItem(**v) for v in cfg.validation]
    decoders = _load_decoders(cfg.model_dir, items, device) if (items and rank == 0) else None
    previews = []
    bar = _progress(cfg) if rank == 0 else None
    started = time.time()
    window: dict[str, float] = {}
    window_n = 0
    for step in range(cfg.steps):
        t0 = time.time()
        batch = reader.batch(sampler.indices(step))
        draw = draw_step(batch, gen, cfg.first_frame_p)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            parts = flow_loss(transformer, batch, draw, device)
            loss = sum(v.mean() for v in parts.values())  # plain sum over modalities, like the reference trainer
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm) if cfg.max_grad_norm > 0 else None
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        for k, v in {"loss": loss, **{f"loss_{m}": x.mean() for m, x in parts.items()}}.items():
            window[k] = window.get(k, 0.0) + v.item()
        window_n += 1
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            row = {"step": step + 1, **{k: all_mean(v / window_n) for k, v in window.items()},
                   "lr": schedule.get_last_lr()[0], "step_time": time.time() - t0, "grad_norm": _scalar(grad_norm),
                   "elapsed": time.time() - started}
            if not math.isfinite(row["loss"]):
                raise FloatingPointError(f"loss became {row['loss']} at step {step + 1}")
            window, window_n = {}, 0
            if metrics_file:
                metrics_file.write(json.dumps(row) + "\n")
                metrics_file.flush()
            if bar is not None:
                bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.2e}")
        if bar is not None:
            bar.update(1)
        if items and ((step + 1) % cfg.resolved_validation_every == 0 or step + 1 == cfg.steps):
            previews += render_previews(transformer, items, cache, step + 1, device, decoders)

    if bar is not None:
        bar.close()
    probe_end = probe(transformer, device)
    state = full_state_dict(transformer)
    final = {"step": cfg.steps, "world_size": world, "train_time_s": time.time() - started,
             "probe_loss_start": sum(probe_start.values()), "probe_loss_end": sum(probe_end.values()),
             **{f"probe_{m}_start": v for m, v in probe_start.items()},
             **{f"probe_{m}_end": v for m, v in probe_end.items()}}
    if metrics_file:
        metrics_file.close()
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = None
        if rank == 0:
            from peft.utils import get_peft_model_state_dict
            from safetensors.torch import save_file

            lora = get_peft_model_state_dict(_unwrap(transformer), state_dict=state)
            save_file({k: v.float().contiguous() for k, v in lora.items()}, os.path.join(tmp, LORA_FILE))
            with open(os.path.join(tmp, "final_metrics.json"), "w") as fh:
                json.dump(final, fh)
            if previews:
                from ..export.reel import write_reel

                write_reel(os.path.join(tmp, REEL_FILE), previews)
            out_dir = tmp
        report(final, out_dir)
    if is_distributed():
        torch.distributed.barrier()
    return final


def train_loop_per_worker(config: dict) -> None:
    """Ray Train entry: the adapter travels back to the driver as a Ray Train checkpoint (local or S3 storage)."""
    import ray.train

    ctx = ray.train.get_context()

    def report(metrics: dict, directory: str | None) -> None:
        checkpoint = ray.train.Checkpoint.from_directory(directory) if directory else None
        ray.train.report(metrics, checkpoint=checkpoint)

    run_worker(TrainConfig.from_dict(config),
               WorkerContext(ctx.get_world_rank(), ctx.get_world_size(), ctx.get_local_rank()), report)


def _load_decoders(model_dir: str, items, device) -> dict:
    from ..models.bundle import load_components

    names = ["vae"] + (["audio_vae", "vocoder"] if any(it.audio for it in items) else [])
    return {k: v.eval() for k, v in load_components(model_dir, names, device=device).items()}


def _progress(cfg: TrainConfig):
    if not cfg.progress:
        return None
    from tqdm import tqdm

    return tqdm(total=cfg.steps, desc="training", unit="step", mininterval=5.0, dynamic_ncols=False)


def _scalar(value) -> float | None:
    if value is None:
        return None
    return float(value.full_tensor() if hasattr(value, "full_tensor") else value)


def _unwrap(model):
    return getattr(model, "module", model)
