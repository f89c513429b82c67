"""An official single file's ``config`` metadata -> diffusers component configs.

Official LTX-2 / LTX-2.3 checkpoints carry their architecture as JSON in the safetensors metadata ``config``
(sections ``transformer``, ``vae``, ``audio_vae``, ``vocoder``); Lightricks' ltx-core builds every model from it
(``LTXModelConfigurator.from_config`` and friends), with its own defaults for keys that are absent. We read the same
keys with the same defaults and write them into the diffusers config of the family's packaged config
(``models/configs/<family>``), which supplies what ltx-core hard-codes (VAE scale factors, audio hop length,
STG support...). A component whose section is absent keeps the packaged config; :class:`ComponentConfig` records
which it was, so a size mismatch can say where the config came from.

The text connectors are described by the ``transformer`` section, as in ltx-core.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

# ltx-core's LTXModel / Embeddings1DConnector defaults, used when a key is absent (as ltx-core does)
_TRANSFORMER_SAME_NAME = {  # diffusers field == official key
    "num_attention_heads": 32, "attention_head_dim": 128, "in_channels": 128, "out_channels": 128,
    "num_layers": 48, "cross_attention_dim": 4096, "norm_eps": 1e-6, "timestep_scale_multiplier": 1000,
    "audio_num_attention_heads": 32, "audio_attention_head_dim": 64, "audio_in_channels": 128,
    "audio_out_channels": 128, "audio_cross_attention_dim": 2048,
}


@dataclass
class ComponentConfig:
    config: dict  # diffusers config (with _class_name)
    source: str  # where the architecture came from, for error messages

    def describe(self, name: str) -> str:
        return f"{name} config from {self.source}"


def read_metadata_config(metadata: dict[str, str] | None) -> dict:
    """The parsed ``config`` metadata (``{}`` when absent or not JSON)."""
    raw = (metadata or {}).get("config")
    if not raw:
        return {}
    try:
        cfg = json.loads(raw)
    except json.JSONDecodeError:
        return {}
    return cfg if isinstance(cfg, dict) else {}


def transformer_config(meta: dict, packaged: dict) -> dict:
    """diffusers ``LTX2VideoTransformer3DModel`` config from the official ``transformer`` section."""
    t = meta["transformer"]
    if not t.get("use_middle_indices_grid", True):
        raise ValueError("checkpoint metadata: use_middle_indices_grid=False is not supported (diffusers' RoPE "
                         "uses the middle of each patch)")
    cfg = dict(packaged)
    cfg.update({k: t.get(k, default) for k, default in _TRANSFORMER_SAME_NAME.items()})
    video_max_pos = list(t.get("positional_embedding_max_pos", [20, 2048, 2048]))
    cfg.update(
        pos_embed_max_pos=video_max_pos[0], base_height=video_max_pos[1], base_width=video_max_pos[2],
        audio_pos_embed_max_pos=list(t.get("audio_positional_embedding_max_pos", [20]))[0],
        rope_theta=float(t.get("positional_embedding_theta", 10000.0)),
        rope_type=t.get("rope_type", "interleaved"),
        rope_double_precision=t.get("frequencies_precision", False) == "float64",
        # ltx-core's av_ca_timestep_scale_multiplier (default 1) is diffusers' cross_attn_timestep_scale_multiplier
        cross_attn_timestep_scale_multiplier=t.get("av_ca_timestep_scale_multiplier", 1),
    )
    gated = bool(t.get("apply_gated_attention", False))
    adaln = bool(t.get("cross_attention_adaln", False))
    cfg.update(gated_attn=gated, audio_gated_attn=gated, cross_attn_mod=adaln, audio_cross_attn_mod=adaln,
               use_prompt_adaln_single=adaln)
    # LTX-2.3 projects captions before the connectors; LTX-2.0 inside the transformer, from caption_channels
    before = bool(t.get("caption_proj_before_connector", False))
    cfg["use_prompt_embeddings"] = not before
    if not before:
        cfg["caption_channels"] = t.get("caption_channels", cfg.get("caption_channels", 3840))
    return cfg


def connectors_config(meta: dict, packaged: dict, projection_in_features: int | None) -> dict:
    """diffusers ``LTX2TextConnectors`` config from the official ``transformer`` section (ltx-core's
    ``Embeddings1DConnectorConfigurator`` / ``AudioEmbeddings1DConnectorConfigurator`` read the same keys).

    ltx-core fixes the text encoder (Gemma 3 12B: 3840 wide, 49 hidden states); we keep the packaged values unless
    ``caption_channels`` says otherwise, and take the number of stacked hidden states from the width of the
    checkpoint's input projection (``projection_in_features``)."""
    t = meta["transformer"]
    cfg = dict(packaged)
    heads = t.get("connector_num_attention_heads", 30)
    head_dim = t.get("connector_attention_head_dim", 128)
    layers = t.get("connector_num_layers", 2)
    registers = t.get("connector_num_learnable_registers", 128)
    gated = bool(t.get("connector_apply_gated_attention", False))
    before = bool(t.get("caption_proj_before_connector", False))
    caption_channels = t.get("caption_channels", cfg.get("caption_channels", 3840))
    cfg.update(
        caption_channels=caption_channels,
        video_connector_num_attention_heads=heads, video_connector_attention_head_dim=head_dim,
        video_connector_num_layers=layers, video_connector_num_learnable_registers=registers,
        audio_connector_num_attention_heads=t.get("audio_connector_num_attention_heads", heads),
        audio_connector_attention_head_dim=t.get("audio_connector_attention_head_dim", head_dim),
        audio_connector_num_layers=t.get("audio_connector_num_layers", layers),
        audio_connector_num_learnable_registers=registers,
        video_gated_attn=gated, audio_gated_attn=gated,
        connector_rope_base_seq_len=list(t.get("connector_positional_embedding_max_pos", [1]))[0],
        rope_theta=10000.0,  # ltx-core's connector default; the configurator passes no theta
        rope_type=t.get("rope_type", "interleaved"),
        rope_double_precision=t.get("frequencies_precision", False) == "float64",
        causal_temporal_positioning=False,
        per_modality_projections=before, proj_bias=before,
        video_hidden_dim=t.get("num_attention_heads", 32) * t.get("attention_head_dim", 128),
        audio_hidden_dim=t.get("audio_num_attention_heads", 32) * t.get("audio_attention_head_dim", 64),
    )
    if projection_in_features is not None and projection_in_features % caption_channels == 0:
        cfg["text_proj_in_factor"] = projection_in_features // caption_channels
    return cfg


_DOWNSAMPLE = {"compress_space_res": "spatial", "compress_time_res": "temporal", "compress_all_res": "spatiotemporal"}
_UPSAMPLE = {"compress_space": "spatial", "compress_time": "temporal", "compress_all": "spatiotemporal"}
_SPACE, _TIME = ("spatial", "spatiotemporal"), ("temporal", "spatiotemporal")


def _blocks(spec: list) -> list[tuple[str, dict]]:
    return [(name, {"num_layers": p} if isinstance(p, int) else dict(p)) for name, p in spec]


def _unsupported(what: str, blocks) -> ValueError:
    return ValueError(f"checkpoint metadata: video VAE {what} layout {blocks} is not one diffusers can build "
                      f"(expected res_x blocks alternating with compress blocks)")


def video_vae_config(meta: dict, packaged: dict) -> dict:
    """diffusers ``AutoencoderKLLTX2Video`` config from the official ``vae`` section (ltx-core's
    ``VideoEncoderConfigurator`` / ``VideoDecoderConfigurator``: ``encoder_blocks`` / ``decoder_blocks`` lists of
    ``[name, num_layers | params]``, the decoder's listed from the pixel side)."""
    v = meta["vae"]
    if v.get("dims", 3) != 3 or v.get("norm_layer", "pixel_norm") != "pixel_norm" \
            or v.get("latent_log_var", "uniform") != "uniform":
        raise ValueError("checkpoint metadata: only 3-d, pixel-norm, uniform-log-var video VAEs are supported")
    latent = v.get("latent_channels", 128)
    cfg = dict(packaged)
    # encoder: conv_in to latent_channels, then (res_x, compress_*_res) pairs and a last res_x (the mid block)
    enc = _blocks(v.get("encoder_blocks", []))
    names = [n for n, _ in enc]
    if len(enc) < 3 or len(enc) % 2 == 0 or any(n != "res_x" for n in names[::2]) \
            or any(n not in _DOWNSAMPLE for n in names[1::2]):
        raise _unsupported("encoder", names)
    channels, out_channels, down = latent, [], []
    for _, params in enc[1::2]:
        channels *= params.get("multiplier", 2)
        out_channels.append(channels)
    down = [_DOWNSAMPLE[n] for n in names[1::2]]
    # decoder: built from the latent side (reversed list): conv_in to decoder_base_channels * 8, a res_x (the mid
    # block), then (compress_*, res_x) pairs; each compress divides the channels by its multiplier
    dec = list(reversed(_blocks(v.get("decoder_blocks", []))))
    dnames = [n for n, _ in dec]
    if len(dec) < 3 or len(dec) % 2 == 0 or any(n != "res_x" for n in dnames[::2]) \
            or any(n not in _UPSAMPLE for n in dnames[1::2]):
        raise _unsupported("decoder", dnames)
    channels = v.get("decoder_base_channels", 128) * 8
    entering, factors, residual, up_types = [], [], [], []
    for name, params in dec[1::2]:
        entering.append(channels)
        factor = params.get("multiplier", 1)
        factors.append(factor)
        residual.append(bool(params.get("residual", False)) if name == "compress_all" else False)
        up_types.append(_UPSAMPLE[name])
        channels //= factor
    res = dec[::2]
    patch = v.get("patch_size", 4)
    cfg.update(
        in_channels=v.get("in_channels", 3), out_channels=v.get("out_channels", 3), latent_channels=latent,
        patch_size=patch, patch_size_t=1,
        block_out_channels=out_channels, down_block_types=["LTX2VideoDownBlock3D"] * len(down),
        downsample_type=down, spatio_temporal_scaling=[True] * len(down),
        layers_per_block=[p["num_layers"] for _, p in enc[::2]],
        # diffusers lists these in encoder order (it reverses them), except upsample_type (decoder order)
        decoder_block_out_channels=list(reversed(entering)),
        decoder_layers_per_block=list(reversed([p["num_layers"] for _, p in res])),
        decoder_inject_noise=list(reversed([bool(p.get("inject_noise", False)) for _, p in res])),
        decoder_spatio_temporal_scaling=[True] * len(entering),
        upsample_type=up_types, upsample_factor=list(reversed(factors)), upsample_residual=list(reversed(residual)),
        encoder_causal=True, decoder_causal=bool(v.get("causal_decoder", False)),
        # one key for both, with different defaults in ltx-core's two configurators
        encoder_spatial_padding_mode=v.get("spatial_padding_mode", "zeros"),
        decoder_spatial_padding_mode=v.get("spatial_padding_mode", "reflect"),
        timestep_conditioning=bool(v.get("timestep_conditioning", True)),
        spatial_compression_ratio=patch * 2 ** sum(t in _SPACE for t in down),
        temporal_compression_ratio=2 ** sum(t in _TIME for t in down),
    )
    return cfg


def audio_vae_config(meta: dict, packaged: dict) -> dict:
    """diffusers ``AutoencoderKLLTX2Audio`` config from the official ``audio_vae`` section (ltx-core's
    ``AudioEncoderConfigurator`` / ``AudioDecoderConfigurator``)."""
    a = meta["audio_vae"]
    params = a.get("model", {}).get("params", {})
    dd = params.get("ddconfig", {})
    pre = a.get("preprocessing", {})
    stft = pre.get("stft", {})
    mel_bins = dd.get("mel_bins") or pre.get("mel", {}).get("n_mel_channels") or a.get("variables", {}).get("mel_bins")
    if dd.get("attn_type", "vanilla") != "vanilla":
        raise ValueError(f"checkpoint metadata: audio VAE attn_type {dd.get('attn_type')!r} is not supported")
    attn = dd.get("attn_resolutions", [8, 16, 32])
    cfg = dict(packaged)
    cfg.update(
        base_channels=dd.get("ch", 128), output_channels=dd.get("out_ch", 2),
        ch_mult=list(dd.get("ch_mult", (1, 2, 4))),
        num_res_blocks=dd.get("num_res_blocks", 2), attn_resolutions=list(attn) if attn else None,
        in_channels=dd.get("in_channels", 2), resolution=dd.get("resolution", 256),
        latent_channels=dd.get("z_channels", 8), norm_type=dd.get("norm_type", "pixel"),
        causality_axis=dd.get("causality_axis", "height"), dropout=dd.get("dropout", 0.0),
        mid_block_add_attention=dd.get("mid_block_add_attention", True), double_z=dd.get("double_z", True),
        sample_rate=params.get("sampling_rate", 16000), mel_hop_length=stft.get("hop_length", 160),
        is_causal=stft.get("causal", True), mel_bins=mel_bins or cfg.get("mel_bins"),
    )
    return cfg


def _generator_fields(g: dict, prefix: str = "") -> dict:
    """One ltx-core ``Vocoder`` (HiFi-GAN "1" or BigVGAN "AMP1" resblocks) as diffusers vocoder fields."""
    amp = g.get("resblock", "1") == "AMP1"
    return {
        f"{prefix}hidden_channels": g.get("upsample_initial_channel", 1024),
        f"{prefix}upsample_factors": list(g.get("upsample_rates", [6, 5, 2, 2, 2])),
        f"{prefix}upsample_kernel_sizes": list(g.get("upsample_kernel_sizes", [16, 15, 8, 4, 4])),
        f"{prefix}resnet_kernel_sizes": list(g.get("resblock_kernel_sizes", [3, 7, 11])),
        f"{prefix}resnet_dilations": [list(d) for d in g.get("resblock_dilation_sizes", [[1, 3, 5]] * 3)],
        f"{prefix}act_fn": g.get("activation", "snake") if amp else "leaky_relu",
        f"{prefix}antialias": amp,
        f"{prefix}final_bias": bool(g.get("use_bias_at_final", True)),
        f"{prefix}out_channels": 2,  # ltx-core: every vocoder is stereo
    }


def _final_activation(g: dict) -> str:
    # ltx-core ends a (non-extension) vocoder with tanh, or a clamp to [-1, 1] when use_tanh_at_final is off
    return "tanh" if g.get("use_tanh_at_final", True) else "clamp"


def vocoder_config(meta: dict, packaged: dict) -> dict:
    """diffusers ``LTX2Vocoder`` / ``LTX2VocoderWithBWE`` config from the official ``vocoder`` section (ltx-core's
    ``VocoderConfigurator``: a flat generator config, or ``vocoder`` + ``bwe`` for LTX-2.3's bandwidth extension).
    ltx-core fixes the input at 128 = 2 stereo channels x 64 mel bins; we take the mel bins from the ``audio_vae``
    section when it is there."""
    voc = meta["vocoder"]
    cfg = dict(packaged)
    if "bwe" not in voc:
        cfg.update(_class_name="LTX2Vocoder", **_generator_fields(voc),
                   final_act_fn=_final_activation(voc),
                   output_sampling_rate=voc.get("output_sampling_rate", 24000))
    else:
        main, bwe = voc.get("vocoder", {}), voc["bwe"]
        cfg.update(_class_name="LTX2VocoderWithBWE", **_generator_fields(main), **_generator_fields(bwe, "bwe_"),
                   final_act_fn=_final_activation(main),
                   bwe_final_act_fn=None,  # ltx-core applies no final activation to the extension
                   input_sampling_rate=bwe["input_sampling_rate"], output_sampling_rate=bwe["output_sampling_rate"],
                   filter_length=bwe["n_fft"], window_length=bwe["n_fft"], hop_length=bwe["hop_length"],
                   num_mel_channels=bwe["num_mels"], bwe_in_channels=2 * bwe["num_mels"])
    if isinstance(meta.get("audio_vae"), dict) and meta["audio_vae"]:
        cfg["in_channels"] = 2 * audio_vae_config(meta, {})["mel_bins"]
    return cfg


def component_config(name: str, meta: dict, packaged: dict, packaged_source: str,
                     projection_in_features: int | None = None) -> ComponentConfig:
    """The diffusers config of component ``name``: from the metadata when it describes it, else the packaged one."""
    section = "transformer" if name == "connectors" else name
    if isinstance(meta.get(section), dict) and meta[section]:
        if name == "transformer":
            cfg = transformer_config(meta, packaged)
        elif name == "connectors":
            cfg = connectors_config(meta, packaged, projection_in_features)
        elif name == "vae":
            cfg = video_vae_config(meta, packaged)
        elif name == "audio_vae":
            cfg = audio_vae_config(meta, packaged)
        else:
            cfg = vocoder_config(meta, packaged)
        return ComponentConfig(cfg, f"the checkpoint's config metadata (section {section!r})")
    return ComponentConfig(dict(packaged), f"the packaged fallback {packaged_source}")
