"""The training loop run by every Ray Train worker. It knows the objective, not how the model is sharded."""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Callable, Iterable

import torch

from .. import metrics_file
from ..conditioning.timesteps import sample_sigmas
from ..conditioning.kinds import ConditionSet
from ..conditioning.tokens import TextContext, assemble, masked_mse, predict
from ..encode.cache import LatentCache
from ..sample.validation import ValidationItem, render_previews
from .config import TrainConfig
from .data import Batch, CacheBatches, CacheReader, StepSampler
from .stream_data import StreamedBatches
from . import checkpoint, optim
from .final import LORA_FILE, MODEL_DIR, REEL_FILE, write_final  # noqa: F401  (the run's output names)
from .model import load_transformer
from .parallel import all_mean, is_distributed



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
    """The random part of one step: noise levels, noise and which samples each drawn condition applies to."""

    sigma: torch.Tensor  # [B] video
    noise: torch.Tensor  # [B, S, C]
    flags: dict = dataclasses.field(default_factory=dict)  # condition -> [B] bool (conditions with a probability)
    audio_sigma: torch.Tensor | None = None  # [B], drawn for the audio token count
    audio_noise: torch.Tensor | None = None  # [B, L, Ca]


def draw_step(batch: Batch, gen: torch.Generator, conditions: ConditionSet) -> Draw:
    b, c, f, h, w = batch.latents.shape
    sigma = sample_sigmas(b, f * h * w, generator=gen)  # the shift follows the target tokens only
    noise = torch.randn(b, f * h * w, c, generator=gen)
    draw = Draw(sigma, noise)
    for cond in conditions.items:
        p = cond.probability()
        if p is not None:
            draw.flags[cond] = torch.rand(b, generator=gen) < p
    if batch.audio is not None:
        draw.audio_sigma = sample_sigmas(b, batch.audio.shape[1], generator=gen)
        draw.audio_noise = torch.randn(batch.audio.shape, generator=gen)
    return draw


def step_tokens(transformer, batch: Batch, draw: Draw, device: torch.device, conditions: ConditionSet):
    """One step's transformer inputs: (video tokens, text, audio tokens or None), conditions pinned or appended."""
    cols = {k: v.to(device) for k, v in batch.cols.items()}
    video, audio = assemble(
        conditions.items, transformer.rope, transformer.audio_rope, cols, draw.sigma.to(device), batch.fps,
        flags=draw.flags, noise=draw.noise.to(device),
        audio_sigma=None if draw.audio_sigma is None else draw.audio_sigma.to(device),
        audio_noise=None if draw.audio_noise is None else draw.audio_noise.to(device), audio_role=conditions.audio,
        video_role=conditions.video)
    text = TextContext(batch.text_video.to(device), batch.text_audio.to(device), batch.text_mask.to(device))
    return video, text, audio


def velocities(transformer, batch: Batch, draw: Draw, device: torch.device,
               conditions: ConditionSet = ConditionSet()) -> dict[str, tuple]:
    """{modality: (predicted velocity, target, loss mask)} for every generated modality of one step."""
    video, text, audio = step_tokens(transformer, batch, draw, device, conditions)
    if audio is None:
        return {"video": (predict(transformer, video, text), video.target, video.loss_mask)}
    pred_video, pred_audio = predict(transformer, video, text, audio)
    out = {}
    if conditions.video == "generated":  # a frozen video (v2a) or the audio-only placeholder is never in the loss
        out["video"] = (pred_video, video.target, video.loss_mask)
    if conditions.audio != "frozen":
        out["audio"] = (pred_audio, audio.target, audio.loss_mask)
    return out


def flow_loss(transformer, batch: Batch, draw: Draw, device: torch.device,
              conditions: ConditionSet = ConditionSet()) -> dict[str, torch.Tensor]:
    """Rectified-flow velocity losses per sample ([B] each) for every generated modality; conditioning excluded."""
    return {m: masked_mse(pred, target, mask)
            for m, (pred, target, mask) in velocities(transformer, batch, draw, device, conditions).items()}


def measure_lora_effect(transformer, batch: Batch, device: torch.device, seed: int,
                        conditions: ConditionSet = ConditionSet()) -> dict:
    """The quality gate's measured effect: the probe's fixed draw at EFFECT_SIGMA on the first sample, conditions
    drawn with a probability off, run with and without the adapters (every rank calls it under FSDP)."""
    from ..export.quality_gate import EFFECT_SIGMA, lora_effect

    first = Batch({k: v[:1] for k, v in batch.cols.items()}, batch.text_video[:1], batch.text_audio[:1],
                  batch.text_mask[:1], batch.fps, batch.names[:1])
    draw = ProbeLoss(first, [EFFECT_SIGMA], seed, conditions).draws[0]

    def step():
        return {m: (v, mask) for m, (v, _, mask) in velocities(transformer, first, draw, device, conditions).items()}

    return lora_effect(transformer, step, EFFECT_SIGMA)


class ProbeLoss:
    """Loss on a fixed sample with fixed noise and sigmas: the same number before and after training, so a
    falling value means the model really fits the data (a training loss with fresh noise is too noisy for that).
    Conditions drawn with a probability are off."""

    def __init__(self, batch: Batch, sigmas: list[float], seed: int, conditions: ConditionSet = ConditionSet()):
        self.batch, self.conditions = batch, conditions
        g = torch.Generator().manual_seed(seed)
        c, f, h, w = batch.latents.shape[1:]
        off = {cond: torch.zeros(1, dtype=torch.bool) for cond in conditions.items if cond.probability() is not None}
        self.draws = []
        for s in sigmas:
            d = Draw(torch.tensor([s]), torch.randn(1, f * h * w, c, generator=g), dict(off))
            if batch.audio is not None:
                d.audio_sigma, d.audio_noise = torch.tensor([s]), torch.randn(batch.audio.shape, generator=g)
            self.draws.append(d)

    @torch.no_grad()
    def __call__(self, transformer, device) -> dict[str, float]:
        totals: dict[str, float] = {}
        for d in self.draws:
            for k, v in flow_loss(transformer, self.batch, d, device, self.conditions).items():
                totals[k] = totals.get(k, 0.0) + v.item() / len(self.draws)
        return totals


@dataclass(frozen=True)
class WorkerContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    """Noise, sigmas and condition draws of (step, rank) depend on nothing else, so a resumed run draws exactly
    what an uninterrupted one would — no RNG state to checkpoint."""
    return torch.Generator().manual_seed(((seed * 1_000_003 + step) * 1024 + rank) % (2**63 - 1))


def run_worker(cfg: TrainConfig, ctx: WorkerContext, report: Callable[[dict, str | None], None],
               resume_from: str | None = None, log: Callable[[dict], None] | None = None,
               stream: Iterable[dict] | None = None, sync_cache: Callable[[], None] = lambda: None) -> dict:
    """Train on this worker. `report(metrics, directory)` is called on every rank for each checkpoint (each rank
    with the directory of its own shards) and once at the end (rank 0 with the adapter or full weights, the
    reel and the final metrics). `log(row)` gets each logged step's metrics on every rank (the same row: losses
    are averaged over ranks); by default rank 0 appends them to `cfg.metrics_path`.

    With `cfg.stream`, `stream` is this rank's share of the encoded windows as they are made and `sync_cache()`
    updates the worker's copy of the cache (see train/stream_data.py).

    Runs the same with or without Ray (tests call it in-process with the default single-rank context).
    """
    rank, world = ctx.rank, ctx.world_size
    use_cuda = torch.cuda.is_available()
    device = torch.device("cuda", ctx.local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    bf16 = use_cuda if cfg.mixed_precision is None else cfg.mixed_precision
    grad_ckpt = use_cuda if cfg.gradient_checkpointing is None else cfg.gradient_checkpointing
    full = cfg.training_mode == "full"

    # Frozen base weights in bf16 whenever compute is bf16 (the adapters stay fp32: peft makes them so, and FSDP2
    # only needs the trainable ones to share a dtype). Full fine-tunes keep fp32 masters, sharded 1/world per rank.
    load_dtype = torch.bfloat16 if (bf16 and not full) else torch.float32
    transformer = load_transformer(cfg, ctx, device, load_dtype, bf16, grad_ckpt)
    params = [p for p in transformer.parameters() if p.requires_grad]
    optimizer = optim.make_optimizer(params, cfg.optimizer, cfg.learning_rate, cfg.weight_decay,  # train/optim.py
                                     master_weights=cfg.lora_dtype == "bf16" and not full)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    meta = checkpoint.read_meta(resume_from)
    start_step = 0
    previews = []
    if meta:
        checkpoint.restore(resume_from, transformer, optimizer)
        start_step = meta["step"]
        schedule.last_epoch = start_step  # LambdaLR is a pure function of the step count
        for group, lr in zip(optimizer.param_groups, schedule.get_lr()):
            group["lr"] = lr
        schedule._last_lr = [g["lr"] for g in optimizer.param_groups]
        previews = checkpoint.read_previews(resume_from) if rank == 0 else []

    cache = LatentCache(cfg.cache_dir)
    conditions = ConditionSet.from_json(cfg.conditions)
    source, first = _batches(cfg, cache, rank, world, meta, stream, sync_cache)
    probe = ProbeLoss(first, cfg.probe_sigmas, seed=cfg.seed, conditions=conditions)

    probe_start = meta["probe_start"] if meta else probe(transformer, device)
    if log is None:
        to_file = rank == 0 and cfg.metrics_path
        log = functools.partial(metrics_file.append, cfg.metrics_path) if to_file else (lambda row: None)
    items = [ValidationItem(**v) for v in cfg.validation]
    decoders = _load_decoders(cfg.model_dir, items, device) if (items and rank == 0) else None
    bar = _progress(cfg, start_step) if rank == 0 else None
    started = time.time()
    window: dict[str, float] = {}
    window_n = 0
    for step in range(start_step, cfg.steps):
        if cfg.fail_at_step == step and not meta and rank == world - 1:
            os._exit(1)  # test hook: a worker process dies mid-run
        t0 = time.time()
        batch = source.batch(step)
        draw = draw_step(batch, step_generator(cfg.seed, step, rank), conditions)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            parts = flow_loss(transformer, batch, draw, device, conditions)
            loss = sum(v.mean() for v in parts.values())  # plain sum over modalities, like the reference trainer
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm) if cfg.max_grad_norm > 0 else None
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        for k, v in {"loss": loss, **{f"loss_{m}": x.mean() for m, x in parts.items()}}.items():
            window[k] = window.get(k, 0.0) + v.item()
        window_n += 1
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            row = {"step": done, **{k: all_mean(v / window_n) for k, v in window.items()},
                   "lr": schedule.get_last_lr()[0], "step_time": time.time() - t0, "grad_norm": _scalar(grad_norm),
                   "elapsed": time.time() - started, "time": time.time()}  # time: unix seconds, for wall-clock plots
            if not math.isfinite(row["loss"]):
                raise FloatingPointError(f"loss became {row['loss']} at step {done}")
            window, window_n = {}, 0
            log(row)
            if bar is not None:
                bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.2e}")
        if bar is not None:
            bar.update(1)
        if items and (done % cfg.resolved_validation_every == 0 or done == cfg.steps):
            previews += render_previews(transformer, items, cache, done, device, decoders, conditions)
        if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < cfg.steps:
            with tempfile.TemporaryDirectory() as tmp:
                checkpoint.save(tmp, transformer, optimizer, rank,
                                {"step": done, "probe_start": probe_start, **source.state()}, previews)
                report({"step": done, "checkpoint": True}, tmp)

    if bar is not None:
        bar.close()
    source.finish()
    probe_end = probe(transformer, device)
    effect = None if full else measure_lora_effect(transformer, probe.batch, device, cfg.seed, conditions)
    final = {"step": cfg.steps, "world_size": world, "train_time_s": time.time() - started,
             "resumed_from_step": start_step, **_stream_metrics(cfg, source, world),
             "probe_loss_start": sum(probe_start.values()), "probe_loss_end": sum(probe_end.values()),
             **{f"probe_{m}_start": v for m, v in probe_start.items()},
             **{f"probe_{m}_end": v for m, v in probe_end.items()},
             **({"lora_effect": effect} if effect else {})}
    write_final(cfg, transformer, rank, bf16, final, previews, report)
    if is_distributed():
        torch.distributed.barrier()
    return final


def _batches(cfg: TrainConfig, cache: LatentCache, rank: int, world: int, meta: dict | None, stream, sync_cache):
    """(where each step's batch comes from: the complete cache, or the stream and then the cache; the window the
    probe scores: the first planned one, or the first streamed one)."""
    if not cfg.stream:
        reader = CacheReader(cache, cache.read_manifest().samples)
        sampler = StepSampler(len(reader.samples), world, rank, cfg.batch_size, seed=cfg.seed)
        return CacheBatches(reader, sampler), reader.batch([0])
    meta = meta or {}
    source = StreamedBatches(stream, cache.read_stream_plan(), cache, world, rank, cfg.batch_size, cfg.seed,
                             stream_end=meta.get("stream_end"), sync=sync_cache)
    return source, source.first(meta.get("probe_id"))


def _stream_metrics(cfg: TrainConfig, source, world: int) -> dict:
    """stream_end: the step the streamed pass ended at (None: the run ended inside it). Every step before it took
    one batch per rank off the stream, across restarts too (a resumed pass goes on where it stopped)."""
    if not cfg.stream:
        return {}
    streamed_steps = cfg.steps if source.stream_end is None else source.stream_end
    return {"stream_end": source.stream_end, "streamed_windows": streamed_steps * cfg.batch_size * world}


def train_loop_per_worker(config: dict) -> None:
    """Ray Train entry: checkpoints and the final adapter travel through Ray Train's run storage (local or S3);
    logged rows go to the driver's node as metrics-only reports (see run.MetricsFile)."""
    import ray.train

    from ..storage import node_local_copy

    ctx = ray.train.get_context()

    def report(metrics: dict, directory: str | None) -> None:
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory) if directory else None)

    def log(row: dict) -> None:
        ray.train.report({"row": row})

    worker = WorkerContext(ctx.get_world_rank(), ctx.get_world_size(), ctx.get_local_rank())
    cfg = TrainConfig.from_dict(config)
    cache_uri = cfg.cache_dir
    # multi-node runs keep the latent cache and model in shared storage: one copy per node, fetched once (and, when
    # streaming, again after the streamed pass for what the encoders persisted meanwhile)
    cfg = dataclasses.replace(cfg, cache_dir=node_local_copy(cache_uri), model_dir=node_local_copy(cfg.model_dir))
    data = {}
    if cfg.stream:
        from ..encode.stream import STREAM_DATASET

        data = {"stream": ray.train.get_dataset_shard(STREAM_DATASET).iter_rows(),
                "sync_cache": lambda: node_local_copy(cache_uri)}
    restart = ray.train.get_checkpoint()  # set after a worker failure, or when a crashed run is started again
    if restart is None:
        run_worker(cfg, worker, report, log=log, **data)
        return
    with restart.as_directory() as directory:
        run_worker(cfg, worker, report, resume_from=directory, log=log, **data)


def _load_decoders(model_dir: str, items, device) -> dict:
    from ..models.bundle import load_components

    names = ["vae"] + (["audio_vae", "vocoder"] if any(it.audio for it in items) else [])
    return {k: v.eval() for k, v in load_components(model_dir, names, device=device).items()}


def _progress(cfg: TrainConfig, start: int = 0):
    if not cfg.progress:
        return None
    from tqdm import tqdm

    return tqdm(total=cfg.steps, initial=start, desc="training", unit="step", mininterval=5.0, dynamic_ncols=False)


def _scalar(value) -> float | None:
    if value is None:
        return None
    return float(value.full_tensor() if hasattr(value, "full_tensor") else value)
