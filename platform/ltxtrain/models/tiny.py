"""Tiny, randomly initialised LTX-2.0 / LTX-2.3 components (CPU friendly, no downloads).

The tiny preset keeps every *structural* property of the real models that the platform depends on, while being
small enough to train on 2 CPU cores in seconds:

* real compression factors: video VAE 8 (time) x 32 x 32 (space); audio VAE 4 x 4 (time x mel bins)
* the real block layout of each family's video VAE (LTX-2.0: 4 down / 3 up blocks; LTX-2.3: 4 down / 4 up blocks
  with temporal-only and spatial-only upsamplers), so the single-file key mapping is exercised exactly as for the
  real checkpoints
* LTX-2.3 transformer flags (gated attention, cross-attention modulation, prompt AdaLN, ``perturbed_attn=True`` so STG
  works, ``use_prompt_embeddings=False``) and per-modality connectors; LTX-2.0 caption projections
* learnable connector registers (the real value is 128 with a 1024 token text length; here 8 with 32 tokens), so the
  text length must be a multiple of ``CONNECTOR_REGISTERS``
* LTX-2.3 uses the bandwidth-extension vocoder (``LTX2VocoderWithBWE``), LTX-2.0 the plain ``LTX2Vocoder``

Shape rules that tie the components together (see the diffusers-tiny REPORT section 1.1):

    transformer.in_channels == vae.latent_channels
    transformer.cross_attention_dim == heads * head_dim                (video inner dim)
    transformer.audio_cross_attention_dim == audio_heads * audio_head_dim
    transformer.audio_in_channels == audio_vae.latent_channels * mel_bins // 4 == audio_vae.base_channels
    vocoder.in_channels == audio_vae.output_channels * audio_vae.mel_bins
    2.0: connectors.caption_channels == text hidden == connector heads*head_dim == transformer.caption_channels
    2.3: connectors.video_hidden_dim == transformer.cross_attention_dim, audio_hidden_dim == audio cross dim
"""

from __future__ import annotations

import math
from typing import Any

import torch

from . import cross_modal

# ----------------------------------------------------------------------------------------------------------------
# sizes
# ----------------------------------------------------------------------------------------------------------------
TEXT_HIDDEN = 32  # tiny Gemma3 hidden size (== LTX-2.0 caption_channels)
TEXT_LAYERS = 2  # -> text_proj_in_factor = 3 (all hidden states incl. embeddings are stacked)
VIDEO_HEADS, VIDEO_HEAD_DIM = 2, 16  # video inner dim 32
AUDIO_HEADS, AUDIO_HEAD_DIM = 2, 8  # audio inner dim 16
NUM_LAYERS = 2
VAE_LATENT_CHANNELS = 8
VAE_CH = 8  # base channel count of the tiny video VAE
AUDIO_LATENT_CHANNELS = 2
AUDIO_MEL_BINS = 16  # latent mel bins 4 -> audio tokens have 2 * 4 = 8 channels
CONNECTOR_REGISTERS = 8
MAX_SEQUENCE_LENGTH = 32  # text tokens; must be a multiple of CONNECTOR_REGISTERS

FAMILIES = ("ltx-2.0", "ltx-2.3")

SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]

# Simple English vocabulary for prompts in tests / demos. Anything else maps to <unk>.
_WORDS = """
a an the this that these those it its is are was were be been being has have had do does did of in on at to from
by with without for into onto over under above below near behind between through across around along up down out
off and or but not no very more most less slowly quickly slow fast gently softly suddenly while then again still
one two three four five many few some all each every other another big small large tiny huge little long short tall
wide narrow thin thick round square flat bright dark light heavy soft hard smooth rough old new young warm cold hot
wet dry clean dirty empty full high low deep open closed happy sad calm angry quiet loud beautiful ugly
red orange yellow green blue purple pink brown black white gray grey gold golden silver colorful colored color colors
circle circles square squares triangle triangles rectangle star stars line lines dot dots ball balls cube cubes
sphere spheres box boxes shape shapes pattern patterns stripe stripes grid wave waves spiral
moving moves move rotating rotates rotate spinning spins spin bouncing bounces bounce falling falls fall rising rises
rise flying flies fly floating floats float sliding slides slide rolling rolls roll walking walks walk running runs
run jumping jumps jump dancing dances dance swimming swims swim turning turns turn growing grows grow shrinking
shrinks shrink flickering flickers flicker glowing glows glow shaking shakes shake drifting drifts drift zooming zooms
zoom panning pans pan tracking tilting tilts tilt orbiting orbits orbit fading fades fade
left right center top bottom middle side corner edge front back foreground background
video clip scene shot frame frames image picture style styled cinematic realistic cartoon anime painting drawing
sketch watercolor oil pixel retro vintage film noir documentary animation animated render 3d 2d abstract minimalist
camera closeup close wide angle view aerial drone handheld static lens focus blur blurry sharp motion timelapse
person man woman child boy girl people crowd face hand hands eyes hair dog cat bird fish horse cow car cars bus train
plane boat ship bike robot tree trees flower flowers grass leaf leaves forest mountain mountains hill river lake sea
ocean beach sand rock rocks sky cloud clouds sun moon rain snow fog wind fire smoke water ice city street road
building buildings house room window door table chair wall floor light lights lamp night day morning evening sunset
sunrise space planet earth
sound audio music song voice speech speaking talking singing sings sing says say said noise silence quiet ambient
drum drums guitar piano bell bells birdsong footsteps applause laughter thunder rain
""".split()


def tiny_vocab() -> dict[str, int]:
    words = []
    seen = set(SPECIAL_TOKENS)
    for w in _WORDS:
        if w not in seen:
            seen.add(w)
            words.append(w)
    return {t: i for i, t in enumerate(SPECIAL_TOKENS + words)}


def build_tokenizer(model_max_length: int = 1024):
    """Word-level tokenizer wrapped in PreTrainedTokenizerFast (round-trips through save/load, unlike
    GemmaTokenizer(tokenizer_object=...)). Lower-cases, splits on whitespace/punctuation, prepends <bos> like Gemma,
    pads on the left like the LTX pipelines."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = tiny_vocab()
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.normalizer = normalizers.Lowercase()
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", vocab["<bos>"])]
    )
    tk.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(
        tokenizer_object=tk,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
        model_max_length=model_max_length,
        padding_side="left",
    )


def build_text_encoder(vocab_size: int):
    """Tiny Gemma3ForConditionalGeneration (the class LTX2Pipeline type-hints; only hidden states are used)."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    text_cfg = dict(
        vocab_size=vocab_size,
        hidden_size=TEXT_HIDDEN,
        intermediate_size=2 * TEXT_HIDDEN,
        num_hidden_layers=TEXT_LAYERS,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=TEXT_HIDDEN // 2,
        max_position_embeddings=1024,
        sliding_window=64,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
    )
    vis_cfg = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=28,
                   patch_size=14, num_channels=3)
    cfg = Gemma3Config(text_config=text_cfg, vision_config=vis_cfg, mm_tokens_per_image=4)
    return Gemma3ForConditionalGeneration(cfg).eval()


def transformer_config(family: str) -> dict:
    _check_family(family)
    cfg = dict(
        in_channels=VAE_LATENT_CHANNELS,
        out_channels=VAE_LATENT_CHANNELS,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=VIDEO_HEADS,
        attention_head_dim=VIDEO_HEAD_DIM,
        cross_attention_dim=VIDEO_HEADS * VIDEO_HEAD_DIM,
        vae_scale_factors=(8, 32, 32),
        audio_in_channels=AUDIO_LATENT_CHANNELS * (AUDIO_MEL_BINS // 4),
        audio_out_channels=AUDIO_LATENT_CHANNELS * (AUDIO_MEL_BINS // 4),
        audio_num_attention_heads=AUDIO_HEADS,
        audio_attention_head_dim=AUDIO_HEAD_DIM,
        audio_cross_attention_dim=AUDIO_HEADS * AUDIO_HEAD_DIM,
        num_layers=NUM_LAYERS,
        caption_channels=TEXT_HIDDEN,
        rope_type="split",
        rope_double_precision=False,  # float64 RoPE is slow on CPU and pointless for tests
        timestep_scale_multiplier=1000,
        cross_attn_timestep_scale_multiplier=1000,
    )
    if family == "ltx-2.3":
        cfg.update(gated_attn=True, cross_attn_mod=True, audio_gated_attn=True, audio_cross_attn_mod=True,
                   use_prompt_embeddings=False, perturbed_attn=True)
    else:
        cfg.update(gated_attn=False, cross_attn_mod=False, audio_gated_attn=False, audio_cross_attn_mod=False,
                   use_prompt_embeddings=True, perturbed_attn=False)
    return cfg


def connectors_config(family: str) -> dict:
    _check_family(family)
    cfg = dict(
        caption_channels=TEXT_HIDDEN,
        text_proj_in_factor=TEXT_LAYERS + 1,
        video_connector_num_layers=1,
        audio_connector_num_layers=1,
        video_connector_num_learnable_registers=CONNECTOR_REGISTERS,
        audio_connector_num_learnable_registers=CONNECTOR_REGISTERS,
        connector_rope_base_seq_len=MAX_SEQUENCE_LENGTH,
        rope_theta=10000.0,
        rope_double_precision=False,
        causal_temporal_positioning=False,
        rope_type="split",
    )
    if family == "ltx-2.0":
        # text_proj_in maps to caption_channels, so the connector inner dim must equal caption_channels
        cfg.update(video_connector_num_attention_heads=2, video_connector_attention_head_dim=TEXT_HIDDEN // 2,
                   audio_connector_num_attention_heads=2, audio_connector_attention_head_dim=TEXT_HIDDEN // 2,
                   video_gated_attn=False, audio_gated_attn=False, per_modality_projections=False, proj_bias=False)
    else:
        cfg.update(video_connector_num_attention_heads=VIDEO_HEADS, video_connector_attention_head_dim=VIDEO_HEAD_DIM,
                   audio_connector_num_attention_heads=AUDIO_HEADS, audio_connector_attention_head_dim=AUDIO_HEAD_DIM,
                   video_gated_attn=True, audio_gated_attn=True, per_modality_projections=True,
                   video_hidden_dim=VIDEO_HEADS * VIDEO_HEAD_DIM, audio_hidden_dim=AUDIO_HEADS * AUDIO_HEAD_DIM,
                   proj_bias=True)
    return cfg


def video_vae_config(family: str) -> dict:
    """Real compression (8 x 32 x 32) with the real block layout of the family, at 1/32 of the channels."""
    _check_family(family)
    c = VAE_CH
    cfg = dict(
        in_channels=3,
        out_channels=3,
        latent_channels=VAE_LATENT_CHANNELS,
        down_block_types=("LTX2VideoDownBlock3D",) * 4,
        downsample_type=("spatial", "temporal", "spatiotemporal", "spatiotemporal"),
        spatio_temporal_scaling=(True,) * 4,
        layers_per_block=(1,) * 5,
        timestep_conditioning=False,
        patch_size=4,
        patch_size_t=1,
        resnet_norm_eps=1e-6,
        encoder_causal=True,
        decoder_causal=False,
        encoder_spatial_padding_mode="zeros",
        # "reflect" (the real 2.0 value) cannot decode 1x1 latents (32 px videos); "zeros" is the 2.3 value
        decoder_spatial_padding_mode="zeros",
        # mixed spatial-only / temporal-only blocks: the ratios must be given explicitly
        spatial_compression_ratio=32,
        temporal_compression_ratio=8,
    )
    if family == "ltx-2.0":
        cfg.update(block_out_channels=(c, 2 * c, 4 * c, 8 * c), decoder_block_out_channels=(c, 2 * c, 4 * c),
                   decoder_layers_per_block=(1,) * 4, decoder_spatio_temporal_scaling=(True,) * 3,
                   decoder_inject_noise=(False,) * 4, upsample_type=("spatiotemporal",) * 3,
                   upsample_residual=(True,) * 3, upsample_factor=(2, 2, 2))
    else:
        cfg.update(block_out_channels=(c, 2 * c, 4 * c, 4 * c), decoder_block_out_channels=(c, 2 * c, 2 * c, 4 * c),
                   decoder_layers_per_block=(1,) * 5, decoder_spatio_temporal_scaling=(True,) * 4,
                   decoder_inject_noise=(False,) * 5,
                   upsample_type=("spatiotemporal", "spatiotemporal", "temporal", "spatial"),
                   upsample_residual=(False,) * 4, upsample_factor=(2, 2, 1, 2))
    return cfg


def audio_vae_config(family: str) -> dict:
    _check_family(family)
    return dict(
        base_channels=AUDIO_LATENT_CHANNELS * (AUDIO_MEL_BINS // 4),  # == transformer.audio_in_channels
        output_channels=2,
        ch_mult=(1, 1, 1),  # 3 levels -> 2 downsamples -> the hard-coded 4x time / mel compression
        num_res_blocks=1,
        attn_resolutions=None,
        in_channels=2,
        resolution=32,
        latent_channels=AUDIO_LATENT_CHANNELS,
        norm_type="pixel",
        causality_axis="height",
        dropout=0.0,
        mid_block_add_attention=False,
        sample_rate=16000,
        mel_hop_length=160,
        is_causal=True,
        mel_bins=AUDIO_MEL_BINS,
        double_z=True,
    )


def vocoder_config(family: str) -> dict:
    """Mel frames (16 kHz / hop 160) -> waveform; upsampling products match the real rates."""
    _check_family(family)
    if family == "ltx-2.0":
        # 6*5*8 = 240 samples per mel frame -> 24 kHz, like the real LTX-2.0 vocoder
        return dict(in_channels=2 * AUDIO_MEL_BINS, hidden_channels=32, out_channels=2, upsample_kernel_sizes=[12, 15, 16],
                    upsample_factors=[6, 5, 8], resnet_kernel_sizes=[3], resnet_dilations=[[1, 3, 5]],
                    act_fn="leaky_relu", leaky_relu_negative_slope=0.1, antialias=False, final_act_fn="tanh",
                    final_bias=True, output_sampling_rate=24000)
    # stage 1: 5*4*8 = 160 -> 16 kHz; BWE: hop 80, 6*5*8 = 240 = 80 * (48k / 16k) -> 48 kHz, like the real LTX-2.3
    return dict(in_channels=2 * AUDIO_MEL_BINS, hidden_channels=32, out_channels=2, upsample_kernel_sizes=[11, 8, 16],
                upsample_factors=[5, 4, 8], resnet_kernel_sizes=[3], resnet_dilations=[[1, 3, 5]], act_fn="snakebeta",
                leaky_relu_negative_slope=0.1, antialias=True, antialias_ratio=2, antialias_kernel_size=12,
                final_act_fn=None, final_bias=False, bwe_in_channels=2 * AUDIO_MEL_BINS, bwe_hidden_channels=16,
                bwe_out_channels=2, bwe_upsample_kernel_sizes=[12, 15, 16], bwe_upsample_factors=[6, 5, 8],
                bwe_resnet_kernel_sizes=[3], bwe_resnet_dilations=[[1, 3, 5]], bwe_act_fn="snakebeta",
                bwe_leaky_relu_negative_slope=0.1, bwe_antialias=True, bwe_antialias_ratio=2,
                bwe_antialias_kernel_size=12, bwe_final_act_fn=None, bwe_final_bias=False, filter_length=128,
                hop_length=80, window_length=128, num_mel_channels=AUDIO_MEL_BINS, input_sampling_rate=16000,
                output_sampling_rate=48000)


def scheduler_config() -> dict:
    """The non-distilled LTX-2 scheduler settings of diffusers' conversion script (same for tiny and real)."""
    return dict(use_dynamic_shifting=True, base_shift=0.95, max_shift=2.05, base_image_seq_len=1024,
                max_image_seq_len=4096, shift_terminal=0.1)


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; expected one of {FAMILIES}")


def _fill_stft_buffers(vocoder, generator: torch.Generator) -> None:
    """The BWE vocoder's STFT / mel buffers are zeros until loaded from a checkpoint. Give the tiny one a Hann-windowed
    DFT basis and triangular mel filters so it computes something meaningful (and round-trip tests see real values)."""
    stft = vocoder.mel_stft.stft_fn
    n_fft = stft.forward_basis.shape[-1]
    n_freqs = stft.forward_basis.shape[0] // 2
    n = torch.arange(n_fft, dtype=torch.float64)
    k = torch.arange(n_freqs, dtype=torch.float64)[:, None]
    window = torch.hann_window(stft.window_length, periodic=True, dtype=torch.float64)
    window = torch.nn.functional.pad(window, (0, n_fft - window.numel()))
    ang = 2 * math.pi * k * n / n_fft
    basis = torch.cat([torch.cos(ang), -torch.sin(ang)], 0) * window
    stft.forward_basis.copy_(basis[:, None, :].float())
    stft.inverse_basis.copy_((basis / n_fft)[:, None, :].float())
    mel = vocoder.mel_stft.mel_basis
    n_mels = mel.shape[0]
    edges = torch.linspace(0, n_freqs - 1, n_mels + 2)
    f = torch.arange(n_freqs, dtype=torch.float32)
    for m in range(n_mels):
        lo, c, hi = edges[m], edges[m + 1], edges[m + 2]
        up = (f - lo) / (c - lo)
        down = (hi - f) / (hi - c)
        mel[m] = torch.clamp(torch.minimum(up, down), min=0.0)


def build_tiny_components(family: str = "ltx-2.3", seed: int = 0) -> dict[str, Any]:
    """All 8 LTX2Pipeline components with consistent shapes, randomly initialised with a fixed seed."""
    from diffusers import (AutoencoderKLLTX2Audio, AutoencoderKLLTX2Video, FlowMatchEulerDiscreteScheduler,
                           LTX2VideoTransformer3DModel)
    from diffusers.pipelines.ltx2 import LTX2TextConnectors, LTX2Vocoder, LTX2VocoderWithBWE

    family = {"2.0": "ltx-2.0", "2.3": "ltx-2.3"}.get(family, family)
    _check_family(family)
    gen = torch.Generator().manual_seed(seed + 12345)

    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    text_encoder = build_text_encoder(vocab_size=len(tokenizer))
    torch.manual_seed(seed + 1)
    transformer = LTX2VideoTransformer3DModel(**transformer_config(family))
    cross_modal.install_for_family(transformer, family)
    torch.manual_seed(seed + 2)
    connectors = LTX2TextConnectors(**connectors_config(family))
    torch.manual_seed(seed + 3)
    vae = AutoencoderKLLTX2Video(**video_vae_config(family))
    torch.manual_seed(seed + 4)
    audio_vae = AutoencoderKLLTX2Audio(**audio_vae_config(family))
    torch.manual_seed(seed + 5)
    voc_cls = LTX2Vocoder if family == "ltx-2.0" else LTX2VocoderWithBWE
    vocoder = voc_cls(**vocoder_config(family))
    scheduler = FlowMatchEulerDiscreteScheduler(**scheduler_config())

    with torch.no_grad():
        # non-trivial latent statistics (real checkpoints carry them; zeros/ones would hide mapping bugs)
        vae.latents_mean.copy_(torch.randn(vae.latents_mean.shape, generator=gen) * 0.1)
        vae.latents_std.copy_(torch.rand(vae.latents_std.shape, generator=gen) * 0.5 + 0.75)
        audio_vae.latents_mean.copy_(torch.randn(audio_vae.latents_mean.shape, generator=gen) * 0.1)
        audio_vae.latents_std.copy_(torch.rand(audio_vae.latents_std.shape, generator=gen) * 0.5 + 0.75)
        if family == "ltx-2.3":
            _fill_stft_buffers(vocoder, gen)

    for m in (transformer, connectors, vae, audio_vae, vocoder, text_encoder):
        m.eval()
    return dict(transformer=transformer, vae=vae, audio_vae=audio_vae, connectors=connectors,
                text_encoder=text_encoder, tokenizer=tokenizer, vocoder=vocoder, scheduler=scheduler)
