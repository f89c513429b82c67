"""Preprocessing on Ray Data: plan windows (scene cuts, length checks) → decode + fit on CPU tasks →
video VAE and text encoder in actor pools → latent cache.

Two passes keep the heavy stream simple: a cheap planning pass whose small rows come back to the driver (so every
skip is reported by name), then the decode/encode stream over the windows that will really be trained on. Samples
already in the cache are not recomputed, so a re-run resumes.

Nodes need not share a disk: tasks get the source media from the driver's node (`SharedMedia`), and the encoders
return their tensors to the driver, which alone writes the cache in cache mode (its copy is the one uploaded for
training). Streaming mode (`stream.py`) reuses the planning, caption and decode steps here, but hands the clip stream
to the Train workers and lets the encoders write the cache.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import numpy as np

from ..api.errors import Diagnostics, ErrorItem, RequestError
from ..intake.dataset import SampleSpec
from ..conditioning.kinds import ConditionInputError, FitContext, ReferenceAudio
from ..media.fit import FitSpec, TimeWindow, frames_available
from ..media.probe import probe
from ..media.scenes import split_windows
from ..storage import runtime_env_for
from .audio_encoder import audio_sample_rate  # noqa: F401  (re-exported: the job reads it here)
from .cache import CachedSample, LatentCache, Manifest, from_bytes, stable_id
from .shared_media import SharedMedia, local_media

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreprocessConfig:
    model_dir: str
    cache_dir: str
    width: int
    height: int
    num_frames: int
    frame_rate: float
    auto_scale: bool = False
    split_scenes: bool = True
    split_threshold: float = 30.0
    conditions: tuple = ()  # the bound recipe's condition kinds: their media, columns and skips
    audio: bool = False  # the target's audio is trained (generated or frozen): extract and encode each window's
    audio_sample_rate: int = 16000  # the audio VAE's rate (read from the model by the job)
    audio_normalize: bool = True
    audio_preserve_pitch: bool = True
    encoder_actors: int = 1
    encoder_resources: tuple = ()  # (name, amount) pairs: custom Ray resources an encoder actor needs (own nodes)
    gpus_per_actor: float = 0.0  # > 0 on GPU clusters: the VAE/text pools then run on GPUs
    cpus_per_actor: float | None = None  # None: 0 beside a GPU, else 1 (the decode map then fuses into the actors)
    worker_model_dir: str | None = None  # where the encoder actors load the model (a storage URI on clusters)
    progress: bool = True  # one tqdm bar per phase (captions, clips) instead of Ray Data's own bars and log blocks

    @property
    def actor_model_dir(self) -> str:
        return self.worker_model_dir or self.model_dir

    @property
    def needs_audio_vae(self) -> bool:
        return self.audio or any(isinstance(c, ReferenceAudio) for c in self.conditions)

    def fit_spec(self, kind: str) -> FitSpec:
        frames = 1 if kind == "image" else self.num_frames
        return FitSpec(self.width, self.height, frames, float(self.frame_rate))

    def context(self, media: dict[str, str], kind: str, window: TimeWindow, auto_scale: bool | None = None,
                validation: bool = False) -> FitContext:
        return FitContext(media=media, window=window, spec=self.fit_spec(kind),
                          auto_scale=self.auto_scale if auto_scale is None else auto_scale,
                          audio_rate=self.audio_sample_rate, audio_normalize=self.audio_normalize,
                          audio_preserve_pitch=self.audio_preserve_pitch, validation=validation)


def _scene_name(name: str, index: int, window: TimeWindow) -> str:
    return f"{name} [scene {index + 1}: {window.start:.2f}-{window.end:.2f} s]"


def media_of(row: dict) -> dict[str, str]:
    """role -> path of a planner row: the target (`path`) and every condition file (`media`, JSON: Arrow-friendly)."""
    return {"target": row["path"], **json.loads(row.get("media") or "{}")}


def plan_sample(row: dict, cfg: PreprocessConfig, shared: SharedMedia | None = None) -> list[dict]:
    """CPU task: one sample -> its training windows (scene split when long), each either kept or skipped.

    Scenes are detected once, on the target, and the same windows cut every other file of the sample, so pairs
    never desync. Each condition may skip a window (e.g. a mask with nothing to regenerate).
    """
    base = {k: row.get(k, "") for k in ("name", "path", "kind", "caption", "text_id", "media")}
    if row["kind"] == "image":
        return [{**base, "start": 0.0, "end": 0.0, "skip": ""}]
    media = media_of(row)
    with local_media(shared, *media.values()) as paths:
        local = dict(zip(media, paths))
        windows = split_windows(probe(local["target"]), cfg.split_scenes, cfg.split_threshold)
        rows = []
        for i, w in enumerate(windows):
            name = _scene_name(row["name"], i, w) if len(windows) > 1 else row["name"]
            have = frames_available(w.end - w.start, cfg.frame_rate)
            skip = ""
            if not cfg.auto_scale and have < cfg.num_frames:
                skip = (f"too short: {have} frames at {cfg.frame_rate:g} fps ({w.end - w.start:.2f} s), "
                        f"need {cfg.num_frames} (enable auto_scale_input to fit it)")
            ctx = cfg.context(local, row["kind"], w)
            for c in cfg.conditions:
                skip = skip or _named(c.plan_skip, ctx, row)
            rows.append({**base, "name": name, "start": float(w.start), "end": float(w.end), "skip": skip})
    return rows


def _named(fn, ctx: FitContext, row: dict):
    """Run a condition hook; an unusable input becomes a RequestError naming the file inside the archive."""
    try:
        return fn(ctx)
    except ConditionInputError as exc:
        names = json.loads(row.get("names") or "{}")
        raise RequestError.file(names.get(exc.role, row["name"]), exc.message) from None


def fit_sample(cfg: PreprocessConfig, ctx: FitContext, kind: str, with_target: bool = True) -> dict:
    """The sample's fitted media as typed columns (`video:`, `audio:`, `raw:`): the target (and its audio when
    trained), then each condition's. Training windows and validation entries both come through here."""
    out = {}
    own_audio = cfg.audio and not any(c.supplies_audio() for c in cfg.conditions)
    if kind == "audio":  # --- audio-only: the track is the target; the video stream is a one-token placeholder
        out["none:latents"] = 0
        if with_target:
            out["audio:audio"] = ctx.audio("target")
    elif with_target:
        if kind == "image":
            ctx.target = ctx.fit_image("target")
        else:
            ctx.target = ctx.fit_video("target")
        out["video:latents"] = ctx.target
        if own_audio:  # the audio of exactly the kept frames: same window, same resampling/auto-scale timeline
            out["audio:audio"] = ctx.audio("target")
    for c in cfg.conditions:
        out.update(c.fit(ctx))
    return out


def decode_row(row: dict, cfg: PreprocessConfig, shared: SharedMedia | None = None) -> dict:
    """CPU task: decode and fit one window and its conditions' media to the bucket geometry."""
    media = media_of(row)
    with local_media(shared, *media.values()) as paths:
        ctx = cfg.context(dict(zip(media, paths)), row["kind"], TimeWindow(row["start"], row["end"]))
        columns = _named(lambda c: fit_sample(cfg, c, row["kind"]), ctx, row)
    return {"id": row["id"], **columns}


def _sample_id(row: dict, cfg: PreprocessConfig) -> str:
    return stable_id(row["name"], row["start"], row["end"], cfg.width, cfg.height, cfg.fit_spec(row["kind"]).num_frames,
                     cfg.frame_rate, cfg.auto_scale, cfg.model_dir, row.get("media", ""),
                     cfg.audio and (cfg.audio_sample_rate, cfg.audio_normalize, cfg.audio_preserve_pitch),
                     json.dumps([c.to_json() for c in cfg.conditions], sort_keys=True))


def preprocess(samples: list[SampleSpec], cfg: PreprocessConfig, diag: Diagnostics,
               extra_texts: dict[str, str] | None = None) -> Manifest:
    """Plan, decode, encode and cache every sample; `extra_texts` (text_id -> prompt, e.g. validation prompts)
    are encoded in the same text pass."""
    with SharedMedia(media_paths(samples)) as shared:
        keep = plan(samples, cfg, diag, shared)
        encode_captions(keep, cfg, extra_texts)
        encode_clips(keep, cfg, shared)
    return write_manifest(keep, cfg, diag)


def media_paths(samples: list[SampleSpec]) -> list[str]:
    return [p for s in samples for p in s.media.values()]


def configure_ray_data(cfg: PreprocessConfig) -> None:
    import ray

    # Without this Ray Data reserves half the CPUs per operator and runs ~1 decode task at a time on small nodes.
    context = ray.data.DataContext.get_current()
    context.op_resource_reservation_enabled = False
    if cfg.progress:  # our bars say what a user needs; Ray Data's per-operator bars and plans are for debugging
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)


def plan(samples: list[SampleSpec], cfg: PreprocessConfig, diag: Diagnostics, shared: SharedMedia) -> list[dict]:
    """The training windows kept (planner rows with their cache `id`, in name order); every skip is reported to
    `diag` by name. A RequestError when nothing is left."""
    import ray

    configure_ray_data(cfg)
    items = [{"name": s.name, "path": s.media["target"],
              "media": json.dumps({r: p for r, p in s.media.items() if r != "target"}, sort_keys=True),
              "names": json.dumps(s.archive_paths), "kind": s.kind, "caption": s.caption,
              "text_id": stable_id(s.caption, cfg.model_dir)} for s in samples]
    planned = ray.data.from_items(items).flat_map(plan_sample, fn_kwargs={"cfg": cfg, "shared": shared}).take_all()
    keep = []
    for row in sorted(planned, key=lambda r: (r["name"], r["start"])):
        if row["skip"]:
            diag.skip(row["name"], row["skip"])
        else:
            keep.append({**row, "id": _sample_id(row, cfg)})
    if not keep:
        raise RequestError(ErrorItem(("body", "training_data_url"), "no usable samples left after preprocessing"),
                           skipped=diag.skipped)
    return keep


def encoder_options(cfg: PreprocessConfig) -> dict:
    """Ray Data options of the encoder actor pools: their size, GPU share, CPUs and the storage settings the actors
    need to fetch a model kept in storage (see run_training)."""
    import ray

    opts = {"compute": ray.data.ActorPoolStrategy(size=cfg.encoder_actors),
            "num_gpus": cfg.gpus_per_actor or None,
            "num_cpus": cfg.cpus_per_actor if cfg.cpus_per_actor is not None else (0 if cfg.gpus_per_actor else 1),
            "resources": dict(cfg.encoder_resources) or None,
            "runtime_env": runtime_env_for(cfg.actor_model_dir)}
    return {k: v for k, v in opts.items() if v is not None}


def encode_captions(keep: list[dict], cfg: PreprocessConfig, extra_texts: dict[str, str] | None = None) -> None:
    """Every caption (and `extra_texts`) not yet in the cache, through the text encoder pool; the driver writes each
    file as it streams in."""
    import ray

    cache = LatentCache(cfg.cache_dir)
    texts = {r["text_id"]: r["caption"] for r in keep}
    texts.update(extra_texts or {})
    texts = {k: v for k, v in texts.items() if not cache.has_text(k)}
    if not texts:
        return
    log.info("encoding %d captions", len(texts))
    rows = [{"text_id": k, "caption": v} for k, v in texts.items()]
    encoded = ray.data.from_items(rows).map_batches(
        _text_actor(), fn_constructor_args=(cfg.actor_model_dir,), batch_size=8, **encoder_options(cfg))
    with _bar(cfg, len(rows), "captions") as bar:
        for row in encoded.iter_rows():
            cache.write_text(row["text_id"], **from_bytes(row["tensors"]))
            bar.update(1)


def encode_clips(keep: list[dict], cfg: PreprocessConfig, shared: SharedMedia) -> None:
    """Decode, fit and encode every kept window not yet in the cache. The encoders return their tensors and the
    driver writes each file as it streams in (iter_rows, not materialize: memory stays bounded, and a crash keeps
    every file written so far for the re-run to skip)."""
    cache = LatentCache(cfg.cache_dir)
    todo = [r for r in keep if not cache.has_video(r["id"])]
    if not todo:
        return
    log.info("decoding and encoding %d clips (%d already cached)", len(todo), len(keep) - len(todo))
    encoded = clip_stream(todo, cfg, shared)
    try:
        with _bar(cfg, len(todo), "clips") as bar:
            for row in encoded.iter_rows():
                cache.write_video(row["id"], **from_bytes(row["tensors"]))
                bar.update(1)
    except Exception as exc:  # a clip that probed fine but fails to decode: name it
        raise named_failure(exc, todo) from exc


def clip_stream(rows: list[dict], cfg: PreprocessConfig, shared: SharedMedia, persist_to: str | None = None):
    """The lazy Ray Data stream of `rows` (planner rows with ids): decode + fit, then the video encoder pool ->
    {"id", "tensors"}, each window's cache file content. With `persist_to` (streaming mode) each actor also writes
    the file into that cache."""
    import ray

    return ray.data.from_items(rows).map(decode_row, fn_kwargs={"cfg": cfg, "shared": shared}).map_batches(
        _video_actor(), fn_constructor_args=(cfg.actor_model_dir, cfg.needs_audio_vae, persist_to),
        batch_size=1, **encoder_options(cfg))


def planned_sample(row: dict, cfg: PreprocessConfig) -> dict:
    """A kept window's manifest entry, less what only its cache file tells (see `LatentCache.entry`)."""
    return {"id": row["id"], "name": row["name"], "caption": row["caption"], "text_id": row["text_id"],
            "num_frames": cfg.fit_spec(row["kind"]).num_frames, "fps": float(cfg.frame_rate),
            "source": {k: row[k] for k in ("path", "media", "kind", "start", "end")}}


def write_manifest(keep: list[dict], cfg: PreprocessConfig, diag: Diagnostics) -> Manifest:
    """The manifest of a complete cache (every kept window encoded), written last: its presence marks the cache whole."""
    cache = LatentCache(cfg.cache_dir)
    manifest = Manifest(cfg.model_dir, cfg.width, cfg.height, cfg.num_frames, float(cfg.frame_rate),
                        audio=cfg.audio, conditions=[c.to_json() for c in cfg.conditions],
                        skipped=[s.to_json() for s in diag.skipped])
    manifest.samples = [cache.entry(planned_sample(r, cfg)) for r in keep]
    cache.write_manifest(manifest)
    return manifest


def _bar(cfg: PreprocessConfig, total: int, what: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=f"encoding {what}", unit=what.rstrip("s"), disable=not cfg.progress,
                mininterval=2.0, dynamic_ncols=False)


def _video_actor():
    from .encoders import VideoEncoderActor

    return VideoEncoderActor


def _text_actor():
    from .encoders import TextEncoderActor

    return TextEncoderActor


def named_failure(exc: Exception, rows: list[dict]) -> Exception:
    text = str(exc)
    for r in rows:
        if r["path"] in text or r["name"] in text:
            if "ClipTooShort" in text:
                return RequestError.file(r["name"], "clip became too short while decoding")
            return RequestError.file(r["name"], f"could not decode: {text.splitlines()[-1][:300]}")
    return exc



def debug_samples(manifest: Manifest, cfg: PreprocessConfig):
    """Re-fit each cached sample (one at a time: bounded memory) into what the debug archive shows: the clip(s)
    as trained, the mask as training sees it (latent grid), the final caption and the token counts."""
    cache = LatentCache(cfg.cache_dir)
    for s in manifest.samples:
        out = decode_row({**s.source, "id": s.id, "name": s.name}, cfg)
        tensors = cache.load_video(s.id)
        tokens = {"video": s.tokens}
        if s.reference_shape:
            tokens["reference"] = int(np.prod(s.reference_shape[1:]))
        if s.audio_shape:
            tokens["audio"] = int(s.audio_shape[0])
        frames = out.get("video:latents")
        if frames is None:  # audio-only: the fitted sound shown over its spectrogram (one still frame)
            from ..export.reel import spectrogram_image

            frames = np.repeat(spectrogram_image(out["audio:audio"], cfg.audio_sample_rate)[None], s.num_frames, 0)
        yield {"name": s.name, "caption": s.caption, "frames": frames, "fps": s.fps,
               "reference": out.get("video:reference"),
               "mask": tensors["mask"].numpy().astype(bool) if "mask" in tensors else None,
               "audio": out.get("audio:audio"), "audio_rate": cfg.audio_sample_rate if "audio:audio" in out else None,
               "tokens": tokens}
