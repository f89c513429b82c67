"""Preprocessing on Ray Data: plan windows (scene cuts, length checks) → decode + fit on CPU tasks →
video VAE and text encoder in actor pools → latent cache.

Two passes keep the heavy stream simple: a cheap planning pass whose small rows come back to the driver (so every
skip is reported by name), then the decode/encode stream over the windows that will really be trained on. Samples
already in the cache are not recomputed, so a re-run resumes.

Nodes need not share a disk: tasks get the source media from the driver's node (`SharedMedia`), and the encoders
return their tensors to the driver, which alone writes the cache (its copy is the one uploaded for training).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ..api.errors import Diagnostics, ErrorItem, RequestError
from ..intake.dataset import SampleSpec
from ..media.fit import FitSpec, TimeWindow, decode_and_fit, fit_image, frame_times, frames_available
from ..media.masks import clip_display_size, fit_mask, mask_to_latent
from ..media.probe import probe
from ..media.audio import audio_for_clip
from ..media.reference import scale_reference
from ..media.scenes import split_windows
from ..storage import runtime_env_for
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
    reference_spatial: int = 1  # IC-LoRA: reference downscale factor
    reference_temporal: int = 1  # IC-LoRA: reference temporal subsampling factor
    audio: bool = False  # joint audio: extract each window's audio and encode it with the audio VAE
    audio_sample_rate: int = 16000  # the audio VAE's rate (read from the model by the job)
    audio_normalize: bool = True
    audio_preserve_pitch: bool = True
    reference_audio: bool = False  # av2av: the reference clip's audio becomes clean audio conditioning tokens
    encoder_actors: int = 1
    gpus_per_actor: float = 0.0  # > 0 on GPU clusters: the VAE/text pools then run on GPUs
    worker_model_dir: str | None = None  # where the encoder actors load the model (a storage URI on clusters)

    @property
    def actor_model_dir(self) -> str:
        return self.worker_model_dir or self.model_dir

    def fit_spec(self, kind: str) -> FitSpec:
        frames = 1 if kind == "image" else self.num_frames
        return FitSpec(self.width, self.height, frames, float(self.frame_rate))


def _scene_name(name: str, index: int, window: TimeWindow) -> str:
    return f"{name} [scene {index + 1}: {window.start:.2f}-{window.end:.2f} s]"


def plan_sample(row: dict, cfg: PreprocessConfig, shared: SharedMedia | None = None) -> list[dict]:
    """CPU task: one sample -> its training windows (scene split when long), each either kept or skipped.

    Scenes are detected once, on the target, and the same windows cut the reference, so pairs never desync.
    """
    base = {k: row[k] for k in ("name", "path", "kind", "caption", "text_id")}
    base.update(ref_path=row.get("ref_path", ""), mask_path=row.get("mask_path", ""))
    if row["kind"] == "image":
        return [{**base, "start": 0.0, "end": 0.0, "skip": "", "mask": b"", "mask_shape": []}]
    with local_media(shared, row["path"], base["mask_path"]) as (path, mask_path):
        info = probe(path)
        windows = split_windows(info, cfg.split_scenes, cfg.split_threshold)
        rows = []
        for i, w in enumerate(windows):
            name = _scene_name(row["name"], i, w) if len(windows) > 1 else row["name"]
            have = frames_available(w.end - w.start, cfg.frame_rate)
            skip = ""
            if not cfg.auto_scale and have < cfg.num_frames:
                skip = (f"too short: {have} frames at {cfg.frame_rate:g} fps ({w.end - w.start:.2f} s), "
                        f"need {cfg.num_frames} (enable auto_scale_input to fit it)")
            mask = None
            if mask_path and not skip:
                mask = latent_mask({**base, "path": path, "mask_path": mask_path}, w, cfg)
                if not mask.any():
                    skip = (f"mask '{row['mask_name']}' is all black after fitting to the clip: nothing to "
                            "regenerate (WHITE = regenerate, BLACK = keep)")
            # the latent mask travels as bytes + shape: rows stay Arrow-friendly whether or not a sample has one
            rows.append({**base, "name": name, "start": float(w.start), "end": float(w.end), "skip": skip,
                         "mask": b"" if mask is None else mask.astype(np.uint8).tobytes(),
                         "mask_shape": [] if mask is None else list(mask.shape)})
    return rows


def latent_mask(row: dict, window: TimeWindow, cfg: PreprocessConfig) -> np.ndarray:
    """The mask as training sees it: bool [F', H', W'], True = regenerate. Same crop and timestamps as the clip,
    then the VAE's causal temporal grouping."""
    spec = cfg.fit_spec(row["kind"])
    times = frame_times(window, spec, cfg.auto_scale)
    pixels = fit_mask(row["mask_path"], clip_display_size(row["path"]), spec, times=times)
    return mask_to_latent(pixels)


def _fit(path: str, row: dict, cfg: PreprocessConfig):
    spec = cfg.fit_spec(row["kind"])
    if row["kind"] == "image":
        return fit_image(path, spec.width, spec.height)
    return decode_and_fit(path, spec, TimeWindow(row["start"], row["end"]), auto_scale=cfg.auto_scale)


def decode_row(row: dict, cfg: PreprocessConfig, shared: SharedMedia | None = None) -> dict:
    """CPU task: decode and fit one window to the bucket geometry (a reference identically, then scaled)."""
    window, spec = TimeWindow(row["start"], row["end"]), cfg.fit_spec(row["kind"])
    with local_media(shared, row["path"], row.get("ref_path", "")) as (path, ref_path):
        out = {"id": row["id"], "frames": _fit(path, row, cfg)}
        if cfg.audio:
            # the audio of exactly the kept frames: same window, same resampling/auto-scale timeline
            out["audio"] = audio_for_clip(path, window, spec, cfg.auto_scale, cfg.audio_sample_rate,
                                          cfg.audio_normalize, cfg.audio_preserve_pitch)
        if ref_path:
            out["reference"] = scale_reference(_fit(ref_path, row, cfg), cfg.reference_spatial,
                                               cfg.reference_temporal)
            if cfg.reference_audio:  # the reference clip's own audio over the same window: the audio reference
                out["ref_audio"] = audio_for_clip(ref_path, window, spec, cfg.auto_scale, cfg.audio_sample_rate,
                                                  cfg.audio_normalize, cfg.audio_preserve_pitch)
    if row.get("mask_shape"):
        out["mask"] = np.frombuffer(row["mask"], dtype=np.uint8).reshape(row["mask_shape"])
    return out


def _sample_id(row: dict, cfg: PreprocessConfig) -> str:
    return stable_id(row["name"], row["start"], row["end"], cfg.width, cfg.height, cfg.fit_spec(row["kind"]).num_frames,
                     cfg.frame_rate, cfg.auto_scale, cfg.model_dir, row["ref_path"] and
                     (cfg.reference_spatial, cfg.reference_temporal),
                     cfg.audio and (cfg.audio_sample_rate, cfg.audio_normalize, cfg.audio_preserve_pitch),
                     row["mask_path"], cfg.reference_audio)


def preprocess(samples: list[SampleSpec], cfg: PreprocessConfig, diag: Diagnostics,
               extra_texts: dict[str, str] | None = None) -> Manifest:
    """Plan, decode, encode and cache every sample; `extra_texts` (text_id -> prompt, e.g. validation prompts)
    are encoded in the same text pass."""
    import ray

    # Without this Ray Data reserves half the CPUs per operator and runs ~1 decode task at a time on small nodes.
    ray.data.DataContext.get_current().op_resource_reservation_enabled = False
    cache = LatentCache(cfg.cache_dir)
    items = [{"name": s.name, "path": s.media["target"], "ref_path": s.media.get("reference", ""),
              "mask_path": s.media.get("mask", ""), "mask_name": s.archive_paths.get("mask", ""),
              "kind": s.kind, "caption": s.caption,
              "text_id": stable_id(s.caption, cfg.model_dir)} for s in samples]

    with SharedMedia(p for s in samples for p in s.media.values()) as shared:
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

        # a model in storage: the actors need this driver's storage settings to fetch it (see run_training)
        actor_opts = {"compute": ray.data.ActorPoolStrategy(size=cfg.encoder_actors),
                      "num_gpus": cfg.gpus_per_actor or None,
                      "num_cpus": 0 if cfg.gpus_per_actor else 1,
                      "runtime_env": runtime_env_for(cfg.actor_model_dir)}
        actor_opts = {k: v for k, v in actor_opts.items() if v is not None}

        # The encoders return their tensors and the driver writes each file as it streams in (iter_rows, not
        # materialize: memory stays bounded, and a crash keeps every file written so far for the re-run to skip).
        texts = {r["text_id"]: r["caption"] for r in keep}
        texts.update(extra_texts or {})
        texts = {k: v for k, v in texts.items() if not cache.has_text(k)}
        if texts:
            log.info("encoding %d captions", len(texts))
            rows = [{"text_id": k, "caption": v} for k, v in texts.items()]
            encoded = ray.data.from_items(rows).map_batches(
                _text_actor(), fn_constructor_args=(cfg.actor_model_dir,), batch_size=8, **actor_opts)
            for row in encoded.iter_rows():
                cache.write_text(row["text_id"], **from_bytes(row["tensors"]))

        todo = [r for r in keep if not cache.has_video(r["id"])]
        if todo:
            log.info("decoding and encoding %d clips (%d already cached)", len(todo), len(keep) - len(todo))
            encoded = ray.data.from_items(todo).map(decode_row, fn_kwargs={"cfg": cfg, "shared": shared}).map_batches(
                _video_actor(), fn_constructor_args=(cfg.actor_model_dir, cfg.audio or cfg.reference_audio),
                batch_size=1, **actor_opts)
            try:
                for row in encoded.iter_rows():
                    cache.write_video(row["id"], **from_bytes(row["tensors"]))
            except Exception as exc:  # a clip that probed fine but fails to decode: name it
                raise _named_failure(exc, todo) from exc

    manifest = Manifest(cfg.model_dir, cfg.width, cfg.height, cfg.num_frames, float(cfg.frame_rate),
                        reference_spatial=cfg.reference_spatial, reference_temporal=cfg.reference_temporal,
                        audio=cfg.audio, reference_audio=cfg.reference_audio,
                        skipped=[s.to_json() for s in diag.skipped])
    for r in keep:
        shapes = cache.video_shapes(r["id"])  # header only: the latents stay on disk
        mask_fraction = None
        if "mask" in shapes:
            mask_fraction = float(cache.load_video(r["id"])["mask"].float().mean())
        manifest.samples.append(CachedSample(
            id=r["id"], name=r["name"], caption=r["caption"], text_id=r["text_id"],
            latent_shape=shapes["latents"], num_frames=cfg.fit_spec(r["kind"]).num_frames,
            fps=float(cfg.frame_rate), reference_shape=shapes.get("reference"), audio_shape=shapes.get("audio"),
            regenerate_fraction=mask_fraction,
            source={k: r[k] for k in ("path", "ref_path", "mask_path", "kind", "start", "end")},
        ))
    cache.write_manifest(manifest)
    return manifest


def audio_sample_rate(model_dir: str) -> int:
    import json
    import os

    with open(os.path.join(model_dir, "audio_vae", "config.json")) as fh:
        return int(json.load(fh)["sample_rate"])


def _video_actor():
    from .encoders import VideoEncoderActor

    return VideoEncoderActor


def _text_actor():
    from .encoders import TextEncoderActor

    return TextEncoderActor


def _named_failure(exc: Exception, rows: list[dict]) -> Exception:
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
        out = decode_row({**s.source, "id": s.id, "mask": b"", "mask_shape": []}, cfg)
        tensors = cache.load_video(s.id)
        tokens = {"video": s.tokens}
        if s.reference_shape:
            tokens["reference"] = int(np.prod(s.reference_shape[1:]))
        if s.audio_shape:
            tokens["audio"] = int(s.audio_shape[0])
        yield {"name": s.name, "caption": s.caption, "frames": out["frames"], "fps": s.fps,
               "reference": out.get("reference"),
               "mask": tensors["mask"].numpy().astype(bool) if "mask" in tensors else None,
               "audio": out.get("audio"), "audio_rate": cfg.audio_sample_rate if "audio" in out else None,
               "tokens": tokens}
