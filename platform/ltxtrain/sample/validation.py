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
    conditions_id: str | None = None  # cache file with the entry's condition columns (fitted like training's)
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
    from ..conditioning.kinds import ABSENT
    from ..encode.audio_encoder import model_audio_steps

    plan = ValidationPlan()
    if not request.validation:
        return plan
    conditions = recipe.bind(request, audio)
    roles = recipe.validation_roles()  # entry field -> role, declared by the condition kinds
    negative = request.validation_negative_prompt
    neg_id = stable_id("text", negative, model_dir)
    plan.texts[neg_id] = negative
    width, height = request.validation_size
    generate_audio = conditions.audio != ABSENT and getattr(request, "generate_audio_in_validation", True)
    jobs = []
    for i, entry in enumerate(request.validation):
        text_id = stable_id("text", entry.prompt, model_dir)
        plan.texts[text_id] = entry.prompt
        fetched = _fetch_entry_media(entry, i, work_dir, limits)
        media = {roles[name]: path for name, path in fetched.items() if name in roles}
        item = ValidationItem(index=i, prompt=entry.prompt, text_id=text_id, negative_text_id=neg_id, width=width,
                              height=height, num_frames=request.validation_number_of_frames,
                              fps=float(request.validation_frame_rate), audio=generate_audio,
                              stg_scale=request.stg_scale,
                              audio_steps=model_audio_steps(model_dir, request.validation_number_of_frames /
                                                            request.validation_frame_rate))
        if media:
            item.conditions_id = f"val-{stable_id(i, sorted(media.items()), width, height, item.num_frames, item.fps, conditions.to_json(), model_dir)}"
            jobs.append((item, media))
        plan.items.append(item)
    if jobs:
        import ray

        from ..encode.cache import atomic_save, from_bytes

        fields = {role: name for name, role in roles.items()}
        task_model_dir = worker_model_dir or model_dir
        task = ray.remote(num_cpus=0 if use_gpu else 1, num_gpus=1 if use_gpu else 0,
                          runtime_env=runtime_env_for(task_model_dir))(encode_validation_conditions)
        cache = LatentCache(cache_dir)
        with SharedMedia(p for _, media in jobs for p in media.values()) as shared:
            refs = [task.remote(task_model_dir, item.to_dict(), media, conditions.to_json(), fields, shared)
                    for item, media in jobs]
            try:
                for (item, _), ref in zip(jobs, refs):  # the driver writes: its cache is the one training reads
                    atomic_save(from_bytes(ray.get(ref)), cache.video_path(item.conditions_id))
            except Exception as exc:  # surface input problems (e.g. a mask URL that is no image) as named 422s
                cause = getattr(exc, "cause", exc)
                if isinstance(cause, RequestError):
                    raise cause from None
                raise
    return plan


def encode_validation_conditions(model_dir: str, item: dict, media: dict[str, str], conditions: dict,
                                 fields: dict[str, str], shared: SharedMedia | None = None) -> bytes:
    """Ray task: fit and encode one entry's conditioning media (role -> path on the driver's node, read through
    `shared` on any other) at the validation geometry; returns the conditions' cache file content."""
    from ..conditioning.kinds import ConditionSet

    with local_media(shared, *media.values()) as paths:
        return encode_entry(node_local_copy(model_dir), ValidationItem(**item), dict(zip(media, paths)),
                            ConditionSet.from_json(conditions), fields)


def encode_entry(model_dir: str, it: ValidationItem, media: dict[str, str], conditions, fields: dict[str, str],
                 encoders: dict | None = None) -> bytes:
    """One entry through the training samples' own code (`fit_sample`, `encode_columns`) at the preview geometry:
    the whole of each input, stretched onto the frame count when short. Unusable inputs are 422s naming the field.
    `encoders` ({"vae", "audio_vae"}, float32 as the training cache encodes) are loaded here when not given."""
    from ..conditioning.kinds import FROZEN, ConditionInputError
    from ..encode.cache import to_bytes
    from ..encode.encoders import device_for_actor, encode_columns
    from ..encode.pipeline import PreprocessConfig, fit_sample
    from ..media.fit import TimeWindow, frames_available
    from ..media.probe import MediaError, probe
    from ..models.bundle import load_components

    def named(role: str, msg: str) -> RequestError:
        return RequestError(ErrorItem(("body", "validation", it.index, fields.get(role, role)), msg))

    # the input whose length times the preview: the target, else a reference clip or a given audio file
    timing = "target" if "target" in media else next(
        (r for r in ("reference", "reference_audio", "given_audio") if r in media), None)
    window, auto, kind = TimeWindow(0.0, 0.0), False, "video"
    if timing:
        try:
            info = probe(media[timing])
        except MediaError as exc:
            raise named(timing, f"unreadable media: {exc}") from None
        kind = info.kind if timing == "target" else "video"
        window = TimeWindow(0.0, info.duration)
        auto = info.kind == "video" and frames_available(info.duration, it.fps) < it.num_frames
    target_audio = "target" in media and (conditions.audio == FROZEN or any(c.pins_audio() for c in conditions.items))
    with_audio_vae = target_audio or kind == "audio" or any(c.kind == "reference_audio" or c.supplies_audio()
                                                            for c in conditions.items)
    parts = encoders or load_components(model_dir, ["vae"] + (["audio_vae"] if with_audio_vae else []),
                                        device=device_for_actor())
    cfg = PreprocessConfig(model_dir=model_dir, cache_dir="", width=it.width, height=it.height,
                           num_frames=it.num_frames, frame_rate=it.fps, conditions=conditions.items,
                           audio=target_audio, audio_sample_rate=(parts["audio_vae"].config.sample_rate
                                                                  if with_audio_vae else 16000))
    ctx = cfg.context(media, kind, window, auto_scale=auto, validation=True)
    try:
        fitted = fit_sample(cfg, ctx, kind, with_target="target" in media)
    except ConditionInputError as exc:
        raise named(exc.role, exc.message) from None
    return to_bytes(encode_columns(parts["vae"], parts.get("audio_vae"), fitted))


# ---------------------------------------------------------------------------------------------------------------------
# sampling on the workers
# ---------------------------------------------------------------------------------------------------------------------
def render_previews(transformer, items: list[ValidationItem], cache: LatentCache, step: int, device,
                    decoders: dict | None, conditions=None) -> list:
    """Sample every item on this worker with the run's conditions; return `Preview`s when `decoders` (rank 0)."""
    from ..conditioning.kinds import ConditionSet
    from ..export.reel import Preview
    from .decode import decode_audio, decode_video
    from .sampler import Guidance, default_stg_blocks, sample_latents

    conditions = conditions or ConditionSet()
    previews = []
    was_training = transformer.training
    transformer.eval()
    audio_out = conditions.video != "generated"  # v2a and audio-only products preview sound alone
    for it in items:
        f, h, w = it.grid if conditions.video != "absent" else (1, 1, 1)  # audio-only: the one-token placeholder
        cols = ({k: v[None].float() for k, v in cache.load_video(it.conditions_id).items()}
                if it.conditions_id else {})
        text = _text(cache, it.text_id, device)
        negative = _text(cache, it.negative_text_id, device)
        guidance = Guidance(cfg=GUIDANCE_SCALE, stg=it.stg_scale, stg_blocks=default_stg_blocks(transformer))
        video, audio = sample_latents(
            transformer, text, (f, h, w), it.fps, steps=VALIDATION_STEPS, conditions=conditions.items, cols=cols,
            audio_steps=it.audio_steps if it.audio else None, negative=negative, guidance=guidance,
            generator=torch.Generator().manual_seed(it.seed + it.index), audio_role=conditions.audio,
            video_role=conditions.video)
        if decoders is None:
            continue
        frames = None if audio_out else decode_video(decoders["vae"], video)
        wave, rate = (decode_audio(decoders["audio_vae"], decoders["vocoder"], audio)
                      if audio is not None else (None, None))
        ref_frames = decode_video(decoders["vae"], cols["reference"]) if "reference" in cols else None
        previews.append(Preview(step=step, prompt=it.prompt, frames=frames, fps=it.fps, audio=wave,
                                audio_rate=rate, reference=ref_frames))
    transformer.train(was_training)
    return previews


def _text(cache: LatentCache, text_id: str, device):
    from ..conditioning.tokens import TextContext

    t = cache.load_text(text_id)
    return TextContext(t["video"][None].float().to(device), t["audio"][None].float().to(device),
                       t["mask"][None].float().to(device))
