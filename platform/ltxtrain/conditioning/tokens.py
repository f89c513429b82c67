"""The one place that turns latents + conditions into what the transformer consumes.

Training calls `video_tokens(..., sigma=sampled, noise=randn)`; the sampler calls it with `noisy=` (its current
state) and the scheduler's sigma. Both get the same clean-token pinning, per-token timesteps and RoPE coordinates,
so training and inference place conditioning tokens identically by construction.

Conventions (rectified flow): x_t = (1 - sigma) x0 + sigma * noise; the model predicts v = noise - x0;
the transformer wants timesteps and sigma multiplied by 1000.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

TIMESTEP_SCALE = 1000.0


def pack_video(latents: torch.Tensor) -> torch.Tensor:
    """[B, C, F, H, W] -> [B, F*H*W, C] in (f, h, w) order (transformer patch size 1)."""
    b, c, f, h, w = latents.shape
    return latents.reshape(b, c, f * h * w).transpose(1, 2)


def unpack_video(tokens: torch.Tensor, f: int, h: int, w: int) -> torch.Tensor:
    b, n, c = tokens.shape
    return tokens.transpose(1, 2).reshape(b, c, f, h, w)


@dataclass
class VideoTokens:
    """Video sequence for one forward pass. `cond` = 1 marks clean conditioning tokens (no noise, t=0, no loss)."""

    hidden: torch.Tensor  # [B, S, C] model input (noisy target tokens with clean ones pinned)
    sigma_tok: torch.Tensor  # [B, S] per-token noise level in [0, 1]
    coords: torch.Tensor  # [B, 3, S, 2] RoPE [start, end) per (t seconds, y px, x px)
    cond: torch.Tensor  # [B, S] float in {0, 1}
    clean: torch.Tensor  # [B, S, C] clean latents of the target tokens
    target: torch.Tensor | None  # [B, S, C] velocity target (training only)
    sigma: torch.Tensor  # [B] the sample's noise level (drives prompt AdaLN / cross-modal gates)
    grid: tuple[int, int, int]  # latent (F, H, W) of the target
    fps: float
    num_target: int  # target tokens come first; appended reference tokens follow
    # audio-only work: one clean zero token that only exists because the transformer always runs both streams;
    # `predict` isolates it from audio (no cross-attention), and no loss ever reads it
    placeholder: bool = False

    @property
    def loss_mask(self) -> torch.Tensor:
        return 1.0 - self.cond

    @property
    def timesteps(self) -> torch.Tensor:
        return self.sigma_tok * TIMESTEP_SCALE


def kept_mask(regenerate: torch.Tensor) -> torch.Tensor:
    """Latent regenerate-mask [B, F, H, W] (1 = WHITE = regenerate) -> conditioning mask [B, S]: kept tokens = 1."""
    return 1.0 - regenerate.flatten(1).float()


def first_frame_mask(batch_flags: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """[B] bool -> [B, S] float: the first latent frame (= pixel frame 0 of the causal VAE) for flagged samples."""
    f, h, w = grid
    mask = torch.zeros(batch_flags.shape[0], f * h * w)
    mask[:, : h * w] = batch_flags.float()[:, None]
    return mask


@dataclass(frozen=True)
class Reference:
    """IC-LoRA reference latents and how they were scaled from the target geometry."""

    latents: torch.Tensor  # normalised [B, C, Fr, Hr, Wr]
    spatial: int = 1  # the reference was downscaled by this factor in width and height
    temporal: int = 1  # ... and keeps pixel frames [0] + range(1, F, temporal)


def reference_coords(rope, ref: Reference, fps: float, device) -> torch.Tensor:
    """RoPE coordinates that lay the reference over the target's space-time extent.

    Spatial: a latent cell of a 1/s-size reference spans s times the pixels. Temporal: reference pixel frame i >= 1
    stands for target frames [1 + S(i-1), 1 + S i), i.e. it runs at fps/S, shifted so its patch ends line up with
    the target's (the rule the official LTX-2 IC-LoRA pipeline applies from the LoRA's scale metadata).
    """
    b, _, f, h, w = ref.latents.shape
    coords = rope.prepare_video_coords(b, f, h, w, device, fps=fps / ref.temporal)
    if ref.temporal != 1:
        coords[:, 0] = (coords[:, 0] - (ref.temporal - 1) / fps).clamp(min=0.0)
    if ref.spatial != 1:
        coords[:, 1:] = coords[:, 1:] * ref.spatial
    return coords


def _noised(x0: torch.Tensor, sigma: torch.Tensor, noise, noisy, who: str):
    """(x_t, velocity target): training builds x_t = (1 - s) x0 + s noise and v = noise - x0; sampling passes
    its current state as `noisy` and has no target."""
    if noisy is not None:
        return noisy.float(), None
    if noise is None:
        raise ValueError(f"{who} needs `noise` (training) or `noisy` (sampling)")
    return (1.0 - sigma[:, None, None]) * x0 + sigma[:, None, None] * noise, noise - x0


def _append_clean(seq: dict, ref: torch.Tensor, ref_coords: torch.Tensor) -> dict:
    """Append clean conditioning tokens (reference video or audio): sigma 0, conditioning mask 1, zero target."""
    b, n_ref = ref.shape[:2]
    device = ref.device
    return {
        "hidden": torch.cat([seq["hidden"], ref], 1),
        "sigma_tok": torch.cat([seq["sigma_tok"], torch.zeros(b, n_ref, device=device)], 1),
        "coords": torch.cat([seq["coords"], ref_coords], 2),
        "cond": torch.cat([seq["cond"], torch.ones(b, n_ref, device=device)], 1),
        "clean": torch.cat([seq["clean"], ref], 1),
        "target": None if seq["target"] is None else torch.cat([seq["target"], torch.zeros_like(ref)], 1),
    }


def video_tokens(
    rope,
    clean_latents: torch.Tensor,
    sigma: torch.Tensor,
    fps: float,
    cond: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    noisy: torch.Tensor | None = None,
    reference: Reference | None = None,
    appended: list | tuple = (),
) -> VideoTokens:
    """Assemble the video sequence.

    clean_latents: normalised [B, C, F, H, W]; sigma: [B]; cond: [B, S] conditioning mask (None = none).
    Training passes `noise` ([B, S, C]) and gets x_t and the velocity target; sampling passes `noisy`, the current
    state of the target tokens. Conditioning tokens are replaced by their clean values and get sigma 0 either way.
    A reference, then each `appended` (tokens [B, N, C], coords [B, 3, N, 2]) pair, follow the target: clean,
    sigma 0, never in the loss.
    """
    b, _, f, h, w = clean_latents.shape
    x0 = pack_video(clean_latents).float()
    s = x0.shape[1]
    cond = torch.zeros(b, s) if cond is None else cond.float()
    cond = cond.to(x0.device)
    sigma = sigma.float().to(x0.device)
    noisy, target = _noised(x0, sigma, noise, noisy, "video_tokens")
    keep = cond[..., None]
    seq = {"hidden": keep * x0 + (1.0 - keep) * noisy, "sigma_tok": sigma[:, None] * (1.0 - cond),
           "coords": rope.prepare_video_coords(b, f, h, w, x0.device, fps=fps), "cond": cond, "clean": x0,
           "target": target}
    if reference is not None:
        seq = _append_clean(seq, pack_video(reference.latents).float().to(x0.device),
                            reference_coords(rope, reference, fps, x0.device))
    for tokens, coords in appended:
        seq = _append_clean(seq, tokens.float().to(x0.device), coords.to(x0.device))
    return VideoTokens(seq["hidden"], seq["sigma_tok"], seq["coords"], seq["cond"], seq["clean"], seq["target"],
                       sigma, (f, h, w), fps, num_target=s)


@dataclass
class TextContext:
    video: torch.Tensor  # [B, T, Dv] connector output for the video stream
    audio: torch.Tensor  # [B, T, Da] connector output for the audio stream
    mask: torch.Tensor  # [B, T] 1 = attend


@dataclass
class AudioTokens:
    """Audio sequence: packed normalised latents [B, L, C*M] of the target, optionally followed by clean reference
    audio tokens (av2av) that start at t = 0 like the target, so both overlap in time."""

    hidden: torch.Tensor  # [B, L (+Lr), Ca]
    sigma: torch.Tensor  # [B]
    sigma_tok: torch.Tensor  # [B, L (+Lr)]
    coords: torch.Tensor  # [B, 1, L (+Lr), 2] seconds
    cond: torch.Tensor  # [B, L (+Lr)] 1 = clean conditioning token
    clean: torch.Tensor
    target: torch.Tensor | None
    num_target: int

    @property
    def timesteps(self) -> torch.Tensor:
        return self.sigma_tok * TIMESTEP_SCALE

    @property
    def loss_mask(self) -> torch.Tensor:
        return 1.0 - self.cond


def audio_tokens(rope, clean: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor | None = None,
                 noisy: torch.Tensor | None = None, reference: torch.Tensor | None = None,
                 cond: torch.Tensor | None = None, appended: list | tuple = ()) -> AudioTokens:
    """Same rule as `video_tokens` for the audio stream (training passes `noise`, sampling `noisy`); `cond` [B, L]
    pins target audio steps clean (1 = clean)."""
    x0 = clean.float()
    b, n = x0.shape[:2]
    device = x0.device
    sigma = sigma.float().to(device)
    noisy, target = _noised(x0, sigma, noise, noisy, "audio_tokens")
    cond = torch.zeros(b, n, device=device) if cond is None else cond.float().to(device)
    keep = cond[..., None]
    seq = {"hidden": keep * x0 + (1.0 - keep) * noisy, "sigma_tok": sigma[:, None] * (1.0 - cond),
           "coords": rope.prepare_audio_coords(b, n, device), "cond": cond, "clean": x0, "target": target}
    if reference is not None:  # reference audio starts at t = 0, overlapping the target in time
        appended = [(reference, rope.prepare_audio_coords(b, reference.shape[1], device)), *appended]
    for tokens, coords in appended:
        seq = _append_clean(seq, tokens.float().to(device), coords.to(device))
    return AudioTokens(seq["hidden"], sigma, seq["sigma_tok"], seq["coords"], seq["cond"], seq["clean"],
                       seq["target"], n)


class TokenBuilder:
    """What a condition kind's `tokens(t)` works on, before any noise: the target's clean latents (which a kind may
    overwrite, e.g. a given first frame), the conditioning masks, and the clean tokens to append.

    Training and sampling build it the same way (`assemble`); only `sampling` and the per-sample flags differ.
    """

    def __init__(self, cols: dict, grid, fps: float, rope, audio_rope, flags: dict | None, sampling: bool,
                 audio_clean: torch.Tensor | None):
        self.cols, self.grid, self.fps, self.rope, self.audio_rope = cols, tuple(grid), fps, rope, audio_rope
        self.sampling = sampling
        self.clean = cols["latents"].float().clone()
        self.batch = self.clean.shape[0]
        device = self.clean.device
        self.cond = torch.zeros(self.batch, int(torch.tensor(self.grid).prod()), device=device)
        self.appended: list = []
        self.audio_clean = None if audio_clean is None else audio_clean.float()
        self.audio_cond = None if audio_clean is None else torch.zeros(audio_clean.shape[:2], device=device)
        self.audio_appended: list = []
        self._flags = flags or {}

    def flag(self, condition) -> torch.Tensor:
        """[B] bool: whether this condition is drawn for each sample (always on in sampling)."""
        if self.sampling or condition not in self._flags:
            return torch.ones(self.batch, dtype=torch.bool)
        return self._flags[condition]

    def pin_video(self, mask: torch.Tensor) -> None:
        self.cond = torch.maximum(self.cond, mask.to(self.cond))

    def pin_video_frames(self, start: int, stop: int, on: torch.Tensor | None = None) -> None:
        """Latent frames [start, stop) clean for the samples flagged in `on` (default all)."""
        f, h, w = self.grid
        mask = torch.zeros(self.batch, f, h * w)
        mask[:, start:stop] = 1.0
        if on is not None:
            mask = mask * on.float()[:, None, None]
        self.pin_video(mask.flatten(1))

    def pin_audio_steps(self, start: int, stop: int) -> None:
        self.audio_cond[:, start:stop] = 1.0

    def append_video(self, tokens: torch.Tensor, coords: torch.Tensor) -> None:
        self.appended.append((tokens, coords))

    def append_audio(self, tokens: torch.Tensor, coords: torch.Tensor) -> None:
        self.audio_appended.append((tokens, coords))


def assemble(conditions, rope, audio_rope, cols: dict, sigma: torch.Tensor, fps: float, *, flags: dict | None = None,
             noise=None, noisy=None, audio_sigma=None, audio_noise=None, audio_noisy=None,
             audio_role: str = "generated", video_role: str = "generated") -> tuple[VideoTokens, AudioTokens | None]:
    """THE token assembly for a product: every condition's `tokens` applied to `cols` (the cache columns:
    "latents", "audio", "reference", "mask", ...), then `video_tokens` / `audio_tokens`. Training passes
    `noise`/`audio_noise` and the drawn `flags` ({condition: [B] bool}); the sampler passes its states
    `noisy`/`audio_noisy`. Audio is built when `cols` has it (the cache holds audio only when it is trained); a
    frozen modality (video or audio) is clean everywhere, at sigma 0, out of the loss; an absent video is the
    one-token placeholder the cache holds for audio-only samples (`video_role` "absent"), clean and isolated."""
    audio_clean = cols.get("audio")
    t = TokenBuilder(cols, cols["latents"].shape[2:], fps, rope, audio_rope, flags, noisy is not None, audio_clean)
    for c in conditions:
        c.tokens(t)
    audio_sigma = sigma if audio_sigma is None else audio_sigma  # sampling: one shared schedule
    if video_role != "generated":  # frozen (v2a) or the audio-only placeholder: clean, sigma 0
        t.cond[:] = 1.0
        sigma = torch.zeros_like(sigma)
    video = video_tokens(rope, t.clean, sigma, fps, cond=t.cond, noise=noise, noisy=noisy, appended=t.appended)
    video.placeholder = video_role == "absent"
    if t.audio_clean is None:
        if video.placeholder:
            raise ValueError("an audio-only sample needs its audio latents (cache column 'audio')")
        return video, None
    if audio_role == "frozen":
        t.audio_cond[:] = 1.0
        audio_sigma = torch.zeros_like(audio_sigma)
    audio = audio_tokens(audio_rope, t.audio_clean, audio_sigma,
                         noise=audio_noise, noisy=audio_noisy, cond=t.audio_cond, appended=t.audio_appended)
    return video, audio


def predict(transformer, video: VideoTokens, text: TextContext, audio: AudioTokens | None = None, **forward_kwargs):
    """One forward pass. Returns the video velocity [B, S, C] (float32), or (video, audio) velocities with audio.

    diffusers' LTX-2 transformer always runs an audio stream; for video-only work we feed a single silent audio
    token and isolate the modalities, so no audio signal reaches the video tokens (like the official trainer's
    audio=None path, which skips the audio<->video cross-attention). The mirror image for audio-only work: the
    video stream is a one-token placeholder (`video.placeholder`), isolated the same way; its velocity is unused.

    Timesteps and sigmas go in as float32 whatever the model's dtype, as in Lightricks' runtime (bf16 would round
    737.3 to 736); the time embeddings cast their sinusoids to the model dtype themselves. The cross-modal AdaLN
    routing is the family's (``models.cross_modal``), installed on first use for transformers built elsewhere.
    """
    from ..models import cross_modal

    cross_modal.ensure(transformer)
    # FSDP-sharded models record the dtype they gather their weights in (train/parallel.set_compute_dtype)
    dt = transformer.__dict__.get("compute_dtype") or transformer.dtype
    b = video.hidden.shape[0]
    device = video.hidden.device
    cfg = transformer.config
    if audio is None:
        zero = torch.zeros(b, device=device)
        audio_hidden = torch.zeros(b, 1, cfg.audio_in_channels, device=device)
        audio_coords = transformer.audio_rope.prepare_audio_coords(b, 1, device)
        audio_t, audio_sigma = zero, zero
    else:
        audio_hidden, audio_coords = audio.hidden, audio.coords
        audio_t, audio_sigma = audio.timesteps, audio.sigma * TIMESTEP_SCALE
    f32 = torch.float32
    out_video, out_audio = transformer(
        hidden_states=video.hidden.to(dt),
        audio_hidden_states=audio_hidden.to(dt),
        encoder_hidden_states=text.video.to(dt),
        audio_encoder_hidden_states=text.audio.to(dt),
        timestep=video.timesteps.to(f32),
        audio_timestep=audio_t.to(f32),
        sigma=(video.sigma * TIMESTEP_SCALE).to(f32),
        audio_sigma=audio_sigma.to(f32),
        encoder_attention_mask=text.mask,
        audio_encoder_attention_mask=text.mask,
        video_coords=video.coords,
        audio_coords=audio_coords,
        isolate_modalities=audio is None or video.placeholder,
        fps=video.fps,
        return_dict=False,
        **forward_kwargs,  # e.g. spatio_temporal_guidance_blocks for STG passes
    )
    if audio is None:
        return out_video.float()
    return out_video.float(), out_audio.float()


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sample mean squared error over the unmasked tokens: [B]. A sample with no trainable token gives 0."""
    per_token = ((pred - target) ** 2).mean(-1)
    return (per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
