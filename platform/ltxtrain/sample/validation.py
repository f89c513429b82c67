"""Validation previews: inputs prepared once before training, sampled at intervals on the training workers.

Preparation (driver + one Ray task per entry): fetch each entry's media, fit it to the validation geometry exactly
like training data (same crop rule, frame-rate resampling, reference scaling, mask grid), encode it with the VAEs
and store the conditions in the latent cache. The tasks may run on other nodes: they get the media from the
driver through the object store and return the conditions, which the driver writes. Prompts are encoded with the
training captions.

Sampling (every worker, so FSDP collectives line up; rank 0 decodes): `sample_latents` with the recipe's
conditions, CFG with the negative prompt and STG at `stg_scale`, then the VAE / audio VAE + vocoder.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ..api.errors import ErrorItem, RequestError
from ..encode.cache import LatentCache, stable_id
from ..encode.shared_media import SharedMedia, local_media
from ..intake.fetch import fetch
from ..intake.limits import IntakeLimits
from ..storage import node_local_copy, runtime_env_for

VALIDATION_STEPS = 20  # Euler steps per preview
GUIDANCE_SCALE = 3.0  # CFG scale for previews (the LTX-2 pipelines' default)


@dataclass
class ValidationItem:
    """Everything a worker needs to render one preview (plain data: it travels in the train config)."""

    index: int
    prompt: str
    text_id: str
    negative_text_id: str
    width: int
    height: int
    num_frames: int
    fps: float
    conditions_id: str | None = None  # cache file with first_frame / reference / latents+mask / ref_audio
    ref_spatial: int = 1
    ref_temporal: int = 1
    audio: bool = False  # generate audio with the preview
    audio_steps: int = 0  # audio latent length matching the preview's duration (as training encodes it)
    stg_scale: float = 1.0
    seed: int = 42

    @property
    def grid(self) -> tuple[int, int, int]:
        return (self.num_frames - 1) // 8 + 1, self.height // 32, self.width // 32

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ValidationPlan:
    items: list[ValidationItem] = field(default_factory=list)
    texts: dict[str, str] = field(default_factory=dict)  # text_id -> prompt, to encode with the captions


def _fetch_entry_media(entry, index: int, work_dir: str, limits: IntakeLimits) -> dict[str, str]:
    """Download every *_url field of a validation entry; errors name ("body", "validation", i, field)."""
    paths = {}
    for name, url in entry.model_dump().items():
        if not name.endswith("_url") or not url:
            continue
        suffix = os.path.splitext(url.split("?")[0])[1][:8] or ".bin"
        dest = os.path.join(work_dir, "validation", f"{index}_{name}{suffix}")
        try:
            paths[name] = fetch(url, dest, limits, field=name)
        except RequestError as exc:
            raise RequestError([ErrorItem(("body", "validation", index, name), e.msg) for e in exc.errors]) from None
    return paths


def plan_validation(recipe, request, audio: bool, model_dir: str, cache_dir: str, work_dir: str,
                    limits: IntakeLimits, use_gpu: bool = False, worker_model_dir: str | None = None
                    ) -> ValidationPlan:
    """Fetch, fit and encode the request's validation entries. `worker_model_dir` is where the encoding tasks load
    the model from (a storage URI on clusters without a shared disk; default `model_dir`)."""
    from ..products.base import AudioReference, FirstFrame, ReferenceVideo, VideoMask

    plan = ValidationPlan()
    if not request.validation:
        return plan
    negative = request.validation_negative_prompt
    neg_id = stable_id("text", negative, model_dir)
    plan.texts[neg_id] = negative
    width, height = request.validation_size
    spatial, temporal = recipe.reference_factors(request) or (1, 1)
    generate_audio = audio and getattr(request, "generate_audio_in_validation", True)
    jobs = []
    for i, entry in enumerate(request.validation):
        text_id = stable_id("text", entry.prompt, model_dir)
        plan.texts[text_id] = entry.prompt
        media = _fetch_entry_media(entry, i, work_dir, limits)
        item = ValidationItem(index=i, prompt=entry.prompt, text_id=text_id, negative_text_id=neg_id, width=width,
                              height=height, num_frames=request.validation_number_of_frames,
                              fps=float(request.validation_frame_rate), ref_spatial=spatial, ref_temporal=temporal,
                              audio=generate_audio or recipe.has(AudioReference), stg_scale=request.stg_scale,
                              audio_steps=_audio_steps(model_dir, request.validation_number_of_frames /
                                                       request.validation_frame_rate))
        wants = {
            "first_frame": recipe.has(FirstFrame) and "image_url" in media,
            "reference": recipe.has(ReferenceVideo),
            "mask": recipe.has(VideoMask),
            "ref_audio": recipe.has(AudioReference),
        }
        if any(wants.values()):
            item.conditions_id = f"val-{stable_id(i, sorted(media.items()), width, height, item.num_frames, item.fps, spatial, temporal, model_dir)}"
            jobs.append((item, media, wants))
        plan.items.append(item)
    if jobs:
        import ray

        from ..encode.cache import atomic_save, from_bytes

        task_model_dir = worker_model_dir or model_dir
        task = ray.remote(num_cpus=0 if use_gpu else 1, num_gpus=1 if use_gpu else 0,
                          runtime_env=runtime_env_for(task_model_dir))(encode_validation_conditions)
        cache = LatentCache(cache_dir)
        with SharedMedia(p for _, media, _ in jobs for p in media.values()) as shared:
            refs = [task.remote(task_model_dir, item.to_dict(), media, wants, shared)
                    for item, media, wants in jobs]
            try:
                for (item, _, _), ref in zip(jobs, refs):  # the driver writes: its cache is the one training reads
                    atomic_save(from_bytes(ray.get(ref)), cache.video_path(item.conditions_id))
            except Exception as exc:  # surface input problems (e.g. a mask URL that is no image) as named 422s
                cause = getattr(exc, "cause", exc)
                if isinstance(cause, RequestError):
                    raise cause from None
                raise
    return plan


def _audio_steps(model_dir: str, seconds: float) -> int:
    import json

    from ..encode.audio_encoder import audio_latent_steps

    with open(os.path.join(model_dir, "audio_vae", "config.json")) as fh:
        cfg = json.load(fh)
    return audio_latent_steps(seconds, int(cfg["sample_rate"]), int(cfg.get("mel_hop_length", 160)))


def encode_validation_conditions(model_dir: str, item: dict, media: dict[str, str], wants: dict[str, bool],
                                 shared: SharedMedia | None = None) -> bytes:
    """Ray task: fit and encode one entry's conditioning media (field -> path on the driver's node, read through
    `shared` on any other) at the validation geometry; returns the conditions' cache file content."""
    with local_media(shared, *media.values()) as paths:
        return _encode_conditions(node_local_copy(model_dir), ValidationItem(**item), dict(zip(media, paths)), wants)


def _encode_conditions(model_dir: str, it: ValidationItem, media: dict[str, str], wants: dict[str, bool]) -> bytes:
    """The conditions (first_frame / reference / latents + mask / ref_audio) as one cache file's content."""
    from ..encode.audio_encoder import encode_audio
    from ..encode.cache import to_bytes
    from ..encode.encoders import device_for_actor, encode_video
    from ..media.audio import AudioMissing, audio_for_clip
    from ..media.fit import ClipTooShort, FitSpec, TimeWindow, decode_and_fit, fit_image, frame_times, frames_available
    from ..media.masks import clip_display_size, fit_mask, mask_to_latent
    from ..media.probe import MediaError, probe
    from ..media.reference import scale_reference
    from ..models.bundle import load_components

    spec = FitSpec(it.width, it.height, it.num_frames, it.fps)
    needed = ["vae"] + (["audio_vae"] if wants.get("ref_audio") else [])
    parts = load_components(model_dir, needed, device=device_for_actor())
    tensors: dict[str, torch.Tensor] = {}

    def fit_video(field_name: str) -> tuple[np.ndarray, TimeWindow, bool]:
        """(frames, window, auto_scaled): short inputs are stretched onto the frame count rather than refused."""
        path = media[field_name]
        try:
            window = TimeWindow(0.0, probe(path).duration)
            try:
                return decode_and_fit(path, spec, window), window, False
            except ClipTooShort:
                return decode_and_fit(path, spec, window, auto_scale=True), window, True
        except MediaError as exc:
            raise RequestError(ErrorItem(("body", "validation", it.index, field_name), f"unreadable media: {exc}"))

    if wants.get("first_frame"):
        try:
            image = fit_image(media["image_url"], it.width, it.height)
        except MediaError as exc:
            raise RequestError(ErrorItem(("body", "validation", it.index, "image_url"), f"unreadable image: {exc}"))
        tensors["first_frame"] = encode_video(parts["vae"], image)  # [C, 1, H, W]
    if wants.get("reference"):
        frames, _, _ = fit_video("reference_video_url")
        tensors["reference"] = encode_video(parts["vae"], scale_reference(frames, it.ref_spatial, it.ref_temporal))
    if wants.get("mask"):
        frames, window, auto = fit_video("video_url")
        tensors["latents"] = encode_video(parts["vae"], frames)
        times = frame_times(window, spec, auto)  # the mask follows the source's own timestamps
        try:
            pixels = fit_mask(media["mask_url"], clip_display_size(media["video_url"]), spec, times=times)
        except MediaError as exc:
            raise RequestError(ErrorItem(("body", "validation", it.index, "mask_url"), f"unreadable mask: {exc}"))
        tensors["mask"] = torch.from_numpy(mask_to_latent(pixels).astype(np.uint8))
    if wants.get("ref_audio"):
        source_field = "reference_audio_url" if "reference_audio_url" in media else "reference_video_url"
        path = media[source_field]
        try:
            info = probe(path)
            window = TimeWindow(0.0, info.duration)
            auto = info.kind == "video" and frames_available(info.duration, it.fps) < it.num_frames
            if info.kind != "video":  # an audio-only file: stretch it over the preview's duration
                auto = True
            wave = audio_for_clip(path, window, spec, auto, parts["audio_vae"].config.sample_rate, True, True)
        except (AudioMissing, MediaError) as exc:
            raise RequestError(ErrorItem(("body", "validation", it.index, source_field),
                                         f"no usable audio reference: {exc} (add reference_audio_url)"))
        tensors["ref_audio"] = encode_audio(parts["audio_vae"], wave)
    return to_bytes(tensors)


# ---------------------------------------------------------------------------------------------------------------------
# sampling on the workers
# ---------------------------------------------------------------------------------------------------------------------
def render_previews(transformer, items: list[ValidationItem], cache: LatentCache, step: int, device,
                    decoders: dict | None) -> list:
    """Sample every item on this worker; return `Preview`s when `decoders` (rank 0), else []."""
    from ..conditioning.tokens import Reference, first_frame_mask, kept_mask
    from ..export.reel import Preview
    from .decode import decode_audio, decode_video
    from .sampler import Guidance, default_stg_blocks, sample_latents

    previews = []
    was_training = transformer.training
    transformer.eval()
    for it in items:
        f, h, w = it.grid
        c = transformer.config.in_channels
        clean = torch.zeros(1, c, f, h, w)
        cond = None
        reference = audio_reference = None
        conds = cache.load_video(it.conditions_id) if it.conditions_id else {}
        if "first_frame" in conds:
            clean[:, :, :1] = conds["first_frame"][None, :, :1]
            cond = first_frame_mask(torch.tensor([True]), (f, h, w))
        if "latents" in conds:  # masked products: the source video, kept where the mask is black
            clean = conds["latents"][None].float()
            cond = kept_mask(conds["mask"][None])
        if "reference" in conds:
            reference = Reference(conds["reference"][None].float(), it.ref_spatial, it.ref_temporal)
        if "ref_audio" in conds:
            audio_reference = conds["ref_audio"][None].float()
        text = _text(cache, it.text_id, device)
        negative = _text(cache, it.negative_text_id, device)
        guidance = Guidance(cfg=GUIDANCE_SCALE, stg=it.stg_scale, stg_blocks=default_stg_blocks(transformer))
        video, audio = sample_latents(
            transformer, text, (f, h, w), it.fps, steps=VALIDATION_STEPS, reference=reference, clean=clean,
            cond=cond, audio_steps=it.audio_steps if it.audio else None,
            audio_reference=audio_reference, negative=negative, guidance=guidance,
            generator=torch.Generator().manual_seed(it.seed + it.index))
        if decoders is None:
            continue
        frames = decode_video(decoders["vae"], video)
        wave, rate = (decode_audio(decoders["audio_vae"], decoders["vocoder"], audio)
                      if audio is not None else (None, None))
        ref_frames = decode_video(decoders["vae"], reference.latents) if reference is not None else None
        previews.append(Preview(step=step, prompt=it.prompt, frames=frames, fps=it.fps, audio=wave,
                                audio_rate=rate, reference=ref_frames))
    transformer.train(was_training)
    return previews


def _text(cache: LatentCache, text_id: str, device):
    from ..conditioning.tokens import TextContext

    t = cache.load_text(text_id)
    return TextContext(t["video"][None].float().to(device), t["audio"][None].float().to(device),
                       t["mask"][None].float().to(device))
